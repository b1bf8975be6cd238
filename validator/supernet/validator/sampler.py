"""Which receipts of a batch this validator must check: the contract's rule, defined once in
`supernet.sdk.chain.sampling` (the explorer computes every validator's sample with it too)."""

from supernet.sdk.chain.sampling import PPM, draw, is_sampled, sample

__all__ = ["PPM", "draw", "is_sampled", "sample"]
