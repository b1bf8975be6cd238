"""Supernet SDK: everything users, nodes and validators must agree on.

Contract bindings, EIP-712 signing, receipts and their Merkle proofs, the content-store
client and the user's client. It never imports torch.
"""

__version__ = "0.1.0"
