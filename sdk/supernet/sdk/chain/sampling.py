"""Which receipts of a batch a validator must check (docs/protocol.md, "Sampling"): the
contract's ``isSampled`` rule, computed locally (the validator for its own sample, the explorer
for every validator's, without one ``eth_call`` per receipt).

Validator ``v`` checks receipt ``i`` of a batch iff
``uint256(keccak256(abi.encode(seed, v, i))) % 1_000_000 < SAMPLE_RATE_PPM``, where ``seed`` is
``TaskManager.batchSeed(batchId)`` = `batch_seed` (``value``, ``batchId``): ``value`` is the SeedBeacon's
value of the block ``SEED_DELAY_BLOCKS`` after the commit (its RANDAO mix by default), so the node
could not know at execution time which receipts would be checked, nor pick them by building that block.

>>> seed = b"\\x01" * 32
>>> v = "0x" + "ab" * 20
>>> sample(seed, v, 10, 1_000_000)
[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
>>> sample(seed, v, 10, 0)
[]
"""

from __future__ import annotations

from eth_abi import encode
from eth_utils import keccak, to_checksum_address

PPM = 1_000_000


def batch_seed(value: bytes, batch_id: int) -> bytes:
    """``keccak256(abi.encode(value, batchId))``: a batch's seed from its seed block's beacon value."""
    return keccak(encode(["bytes32", "uint256"], [value, batch_id]))


def draw(seed: bytes, validator: str, index: int) -> int:
    """``uint256(keccak256(abi.encode(seed, validator, index))) % 1_000_000``."""
    data = encode(["bytes32", "address", "uint256"], [seed, to_checksum_address(validator), index])
    return int.from_bytes(keccak(data), "big") % PPM


def is_sampled(seed: bytes, validator: str, index: int, rate_ppm: int) -> bool:
    """Whether ``validator`` must check receipt ``index`` of the batch with this ``seed``."""
    return draw(seed, validator, index) < rate_ppm


def sample(seed: bytes, validator: str, count: int, rate_ppm: int) -> list[int]:
    """The indexes (ascending) of the receipts ``validator`` checks in a batch of ``count``."""
    return [i for i in range(count) if is_sampled(seed, validator, i, rate_ppm)]
