"""Noticing that the chain was reorganised under what a party has already read.

Every off-chain party acts on blocks that may not be final yet (a dev chain, an L1's last blocks,
a rollup's unsafe head). What it derived from a block is only as good as that block staying
canonical, so each party keeps *checkpoints*, the hashes of blocks it has read, and before it
acts again asks `fork_point`: the newest checkpoint the chain still holds. Everything read after
it is undone and read again. One definition for the validator's follower, the node's batch
commits and the explorer's index, so a reorg means the same thing to all of them.

>>> cps = [Checkpoint.of(w3, n) for n in (10, 20)]   # doctest: +SKIP
>>> fork_point(w3, cps)    # None: block 20 is still the one read       # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from web3.exceptions import BlockNotFound

UNKNOWN_FORK = -1
"""`fork_point` when no checkpoint is canonical any more: the reorg is deeper than the checkpoints
kept (or the chain was restarted), so the caller starts again from its first block."""


@dataclass(frozen=True)
class Checkpoint:
    """A block a party has read: its number and its hash (32 bytes) at the time."""

    number: int
    hash: bytes

    @classmethod
    def of(cls, w3: Any, number: int) -> Checkpoint:
        """The chain's block ``number`` now.

        Raises:
            LookupError: the chain has no such block (yet).
        """
        found = block_hash(w3, number)
        if found is None:
            raise LookupError(f"block {number} is not on the chain")
        return cls(number, found)

    def canonical(self, w3: Any) -> bool:
        """Whether the chain still holds this block at its number."""
        return block_hash(w3, self.number) == self.hash


def block_hash(w3: Any, number: int) -> bytes | None:
    """The hash of the chain's block ``number`` (None past the head)."""
    try:
        block = w3.eth.get_block(number)
    except BlockNotFound:
        return None
    return None if block is None else bytes(block["hash"])


def fork_point(w3: Any, checkpoints: Iterable[Checkpoint]) -> int | None:
    """Where the chain and what was read part.

    Returns:
        None when the newest checkpoint is still canonical (nothing to undo); otherwise the number
        of the newest checkpoint that still is (everything read after that block is orphaned), or
        `UNKNOWN_FORK` when none is.
    """
    newest_first = sorted(checkpoints, key=lambda c: c.number, reverse=True)
    if not newest_first or newest_first[0].canonical(w3):
        return None
    for cp in newest_first[1:]:
        if cp.canonical(w3):
            return cp.number
    return UNKNOWN_FORK
