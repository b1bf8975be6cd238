"""Event logs read in block ranges an RPC accepts: the one reader of every log query of the project.

Hosted RPCs cap an ``eth_getLogs``: its block range (10,000 blocks on many L1 providers; 2,000,
1,000, 500 or fewer elsewhere and on free tiers) and the number of logs in one answer. A query over
a wider range is refused, whatever the age of the events it looks for, so a query from block 0 or
from a deployment older than the cap is refused on every public chain: a validator could not look
up the batch it had to challenge, a voter could not read the entry a node posted late, a user could
not claim a refund (tests/unit/test_review_capped_rpc.py). `LogRanges` reads any range as a run of
narrower ones: it halves the width at a refusal and grows it back after a few ranges read, and
raises `LogsUnreadable` (a `ChainError`) only when a single block cannot be read.

>>> ranges = LogRanges()
>>> ranges.read(lambda first, last: [], 0, 10_000)
[]
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any, TypeVar

from supernet.sdk.chain.errors import ChainError

log = logging.getLogger(__name__)

T = TypeVar("T")

LOG_RANGE = 2_000
"""Blocks per query at most (the width a refused query is halved from)."""

REGROW_AFTER = 4
"""Ranges read in a row after which the width doubles again (up to the widest): a width halved by a
passing failure must not stay narrow for good, and one that doubled after every range would be
refused every other query on an RPC whose cap is just under it."""


class LogsUnreadable(ChainError):
    """The RPC refused (or failed) a log query over a single block."""


Fetch = Callable[[int, int], Sequence[T]]
"""Reads the logs of blocks ``first`` to ``last``, both included (raises when refused)."""

OneBlock = Callable[[int], Sequence[T]]
"""Reads the logs of one block another way (from its receipts, `block_logs`): for a block whose
log query is refused even alone. A provider caps the logs of one answer too, and anyone who can
emit many cheap events in one block (a permissionless call) would otherwise stop every follower
at that block for good (tests/unit/test_review_session_changes25.py)."""


class LogRanges:
    """Reads logs over any block range in ranges the RPC accepts; keeps the width it learned.

    Args:
        widest: the widest range it asks for (`LOG_RANGE`).
    """

    def __init__(self, widest: int = LOG_RANGE) -> None:
        if widest < 1:
            raise ValueError(f"a log range is at least 1 block, not {widest}")
        self.widest = widest
        self.width = widest
        self._in_row = 0

    def read(self, fetch: Fetch[T], first: int, last: int, one_block: OneBlock[T] | None = None) -> list[T]:
        """Every log of blocks ``first`` to ``last``, in block order; ``one_block`` reads a block
        whose query is refused alone.

        Raises:
            LogsUnreadable: a single block's query was refused or failed (and ``one_block`` too).
        """
        out: list[T] = []
        while first <= last:
            end, logs = self._range(fetch, first, last, one_block)
            out.extend(logs)
            first = end + 1
        return out

    def scan(
        self, fetch: Fetch[T], first: int, last: int, one_block: OneBlock[T] | None = None
    ) -> tuple[int, list[T]]:
        """As `read`, but a block that cannot be read ends the scan there: (the last block read,
        ``first - 1`` if none; the logs up to it). For a follower, which goes on from there at its
        next step; the failure is logged."""
        out: list[T] = []
        while first <= last:
            try:
                end, logs = self._range(fetch, first, last, one_block)
            except LogsUnreadable as exc:
                log.warning("%s: the scan stops at block %d and goes on from there later", exc, first)
                break
            out.extend(logs)
            first = end + 1
        return first - 1, out

    def find_back(self, fetch: Fetch[T], first: int, last: int) -> list[T]:
        """The logs of the latest range, going back from ``last`` to ``first``, that holds any: a
        search for an event near the head (an empty list: none in the whole range).

        Raises:
            LogsUnreadable: a single block's query was refused or failed.
        """
        while last >= first:
            start, logs = self._range_back(fetch, first, last)
            if logs:
                return list(logs)
            last = start - 1
        return []

    def _range(
        self, fetch: Fetch[T], first: int, last: int, one_block: OneBlock[T] | None = None
    ) -> tuple[int, Sequence[T]]:
        """The logs of the widest range from ``first`` on that the RPC answers: (its end, logs)."""
        while True:
            end = min(first + self.width - 1, last)
            logs = self._try(fetch, first, end, one_block)
            if logs is not None:
                return end, logs

    def _range_back(self, fetch: Fetch[T], first: int, last: int) -> tuple[int, Sequence[T]]:
        """As `_range`, the range ending at ``last``: (its start, logs)."""
        while True:
            start = max(last - self.width + 1, first)
            logs = self._try(fetch, start, last)
            if logs is not None:
                return start, logs

    def _try(
        self, fetch: Fetch[T], first: int, last: int, one_block: OneBlock[T] | None = None
    ) -> Sequence[T] | None:
        """One query: its logs, or None when refused over more than one block (the width halved)."""
        try:
            logs = fetch(first, last)
        except Exception as exc:  # a range refused (too wide, too many logs), a timeout, the RPC down
            if last == first:
                return self._one_block(one_block, first, exc)
            self.width = max(1, (last - first + 1) // 2)
            self._in_row = 0
            return None
        self._in_row += 1
        if self._in_row >= REGROW_AFTER and self.width < self.widest:
            self.width = min(self.widest, 2 * self.width)
            self._in_row = 0
        return logs

    @staticmethod
    def _one_block(one_block: OneBlock[T] | None, block: int, refused: Exception) -> Sequence[T]:
        """The logs of ``block``, whose query was refused alone, read by ``one_block``.

        Raises:
            LogsUnreadable: no ``one_block``, or it failed too.
        """
        if one_block is None:
            raise LogsUnreadable(f"the logs of block {block} cannot be read: {refused}") from refused
        try:
            logs = one_block(block)
        except Exception as exc:
            raise LogsUnreadable(
                f"the logs of block {block} cannot be read ({refused}), nor its receipts ({exc})"
            ) from exc
        log.warning("block %d: its log query refused (%s), read from its receipts", block, refused)
        return logs


def block_logs(
    w3: Any, block: int, addresses: Iterable[str], topics: Collection[bytes] | None = None
) -> list[Any]:
    """The logs of ``block`` emitted by ``addresses`` (and, given ``topics``, whose first topic is
    one of them), from the block's receipts (``eth_getBlockReceipts``): a `OneBlock` for a block
    whose log query a provider refuses for its number of logs. In log order."""
    wanted = {a.lower() for a in addresses}
    out = []
    for receipt in w3.eth.get_block_receipts(block):
        for entry in receipt["logs"]:
            if str(entry["address"]).lower() not in wanted or not entry["topics"]:
                continue
            if topics is None or bytes(entry["topics"][0]) in topics:
                out.append(entry)
    return out
