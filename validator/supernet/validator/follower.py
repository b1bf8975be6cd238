"""Following the TaskManager's events from the deploy block, durably.

Each step reads the logs of ``[cursor, min(head - confirmations, cursor + max_range - 1)]`` and
stores the batches and challenges found together with the new cursor in one SQLite transaction
(`Database.record_events`). A crash before the commit re-reads the same range (inserts are
idempotent); a crash after it starts from the next block: no batch is skipped or recorded twice.
The range is read in narrower ones where the RPC refuses it (hosted RPCs cap a query's blocks,
at 2,000, 500 or fewer: `LogRanges.scan`); a block that cannot be read at all ends the step there,
the cursor moved to the last block read, and the next step goes on from it.

Reorgs: the hashes of each range's last block and of blocks below it at distances 1, 2, 4, ...
(`marks`) are kept with the cursor (checkpoints), and before each scan
`supernet.sdk.chain.forks.fork_point` asks which of them the chain still holds. Past a fork, what
the orphaned blocks brought is undone in one transaction (`Database.undo_after`) and read again
from the fork on; a fork below every checkpoint kept is scanned again from the start block. A
database that kept no checkpoint yet (one from before the fork check) first keeps the blocks below
its cursor the same way, so a shallow reorg right after the upgrade is not taken for a deep one.
A check's challenge (this validator's, or one found on its leaf) is looked up on chain at the head
before it is trusted (`Database.anchor_challenges`): one orphaned before the follower read its
block is found missing there, and sent again.

>>> f = Follower(chain, db, start_block=dep.deploy_block)   # doctest: +SKIP
>>> f.step()                                                # doctest: +SKIP
3
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from supernet.sdk.chain.errors import ContractError
from supernet.sdk.chain.forks import UNKNOWN_FORK, Checkpoint, block_hash, fork_point
from supernet.sdk.chain.logs import LogRanges
from supernet.validator.chain import BatchCommitted, ChainEvent, ChallengeOpened, TaskManagerClient
from supernet.validator.db import Database

log = logging.getLogger(__name__)


@dataclass
class Follower:
    """Scans block ranges into the database.

    Args:
        chain: the TaskManager client.
        db: the validator's database.
        start_block: first block to scan on a fresh database (the deploy block).
        confirmations: blocks to stay behind the head (0 on a dev chain).
        max_range: most blocks a step reads (in one ``eth_getLogs`` where the RPC takes it, else
            in narrower ranges: `LogRanges`).
        history_until: batches committed before this block are recorded as ``history``: never
            sampled or checked here, but in the receipt index (a task's memory may come from any
            earlier committed task, so the origin check needs every batch from the deploy block
            on: with gaps it would take a writer it never saw for one never committed); challenges
            opened before it are not followed.
        on_undo: called with the batches a reorg undid (after the database and the chain
            client's header cache forgot them), for what else keeps them in memory.
        w3: where block hashes are read for the fork check (default: the chain client's); None
            (a stand-in chain without blocks): no fork check.
    """

    chain: TaskManagerClient
    db: Database
    start_block: int
    confirmations: int = 0
    max_range: int = 2_000
    history_until: int = 0
    on_undo: Callable[[list[int]], None] | None = None
    w3: Any = None
    ranges: LogRanges = field(init=False)
    """The width of a query the RPC took, as learned (halved where refused, grown back)."""

    def __post_init__(self) -> None:
        if self.w3 is None:
            self.w3 = getattr(self.chain, "w3", None)
        self.ranges = LogRanges(self.max_range)

    def step(self) -> int:
        """Undo what a reorg orphaned (if the chain was reorganised), then scan one range (if any
        block is new); returns the number of events recorded."""
        head = self.chain.head()
        checkpoints: list[Checkpoint] = []
        if self.w3 is not None:
            if not self._undo_fork(head):
                return 0
            self._anchor_challenges(head)
        start = self.db.cursor(default=self.start_block)
        end = min(head - self.confirmations, start + self.max_range - 1)
        if end < start:
            return 0
        if self.w3 is not None:
            try:  # the range's last block first: the one compared once the range is read
                checkpoints = [Checkpoint.of(self.w3, n) for n in marks(start, end)]
            except LookupError:  # the chain shrank under us: read again next step
                return 0
        last, events = self.ranges.scan(self.chain.events, start, end)
        last, events = self._complete(start, last, events)
        if last < start:
            return 0  # its first block unreadable (logged), or an answer cut short: read again
        if checkpoints:
            checked = checkpoints[0]
            if last < end:  # read up to `last` only: its blocks are kept, taken before `end` is compared
                try:
                    checkpoints = [Checkpoint.of(self.w3, n) for n in marks(start, last)]
                except LookupError:
                    return 0
            if block_hash(self.w3, end) != checked.hash:
                log.info("block %d changed while it was read (a reorg): read again next step", end)
                return 0
        before = self.history_until
        history = {e.batch_id for e in events if isinstance(e, BatchCommitted) and e.block < before}
        events = [e for e in events if isinstance(e, BatchCommitted) or e.block >= before]
        self.db.record_events(events, last + 1, history=history, checkpoints=checkpoints)
        for ev in events:
            if isinstance(ev, BatchCommitted):
                log.info(
                    "batch %d committed by %s: %d receipts (manifest %s)",
                    ev.batch_id,
                    ev.node,
                    ev.count,
                    ev.manifest_cid,
                )
            elif isinstance(ev, ChallengeOpened):
                log.info("challenge %d opened on batch %d by %s", ev.challenge_id, ev.batch_id, ev.challenger)
        return len(events)

    def _complete(self, start: int, last: int, events: list[ChainEvent]) -> tuple[int, list[ChainEvent]]:
        """The events read, up to where none is missing: batch and challenge ids are sequential on
        chain, so an id past the next one expected (after the highest recorded, then each one read)
        means the RPC's answer was cut short (some providers truncate a log answer silently, with no
        error). The scan then keeps only the blocks before the last event read of that kind (the
        missing ones are after it, maybe in its own block), reads narrower ranges, and reads the
        rest again next step: the cursor never moves past a batch it did not see
        (tests/unit/test_review_session_changes25.py)."""
        if not self._counted(start, last, events):
            log.warning(
                "the RPC's logs of blocks %d-%d miss events the contract counts (a truncated answer): "
                "read again, narrower",
                start,
                last,
            )
            self.ranges.width = max(1, self.ranges.width // 2)
            return start - 1, []
        batch, challenge = self.db.last_ids()
        expected: dict[type, int | None] = {BatchCommitted: batch, ChallengeOpened: challenge}
        before: dict[type, int] = {}  # the block of the last event read of each kind
        for ev in events:
            if not isinstance(ev, (BatchCommitted, ChallengeOpened)):
                continue
            kind = type(ev)
            number = ev.batch_id if isinstance(ev, BatchCommitted) else ev.challenge_id
            prev = expected[kind]
            if prev is not None and number > prev + 1:
                cut = before.get(kind, start) - 1
                log.warning(
                    "the RPC's logs of blocks %d-%d miss %s %d (a truncated answer): read again from %d",
                    start,
                    last,
                    kind.__name__,
                    prev + 1,
                    cut + 1,
                )
                self.ranges.width = max(1, self.ranges.width // 2)
                return cut, [e for e in events if e.block <= cut]
            expected[kind] = max(number, prev if prev is not None else number)
            before[kind] = ev.block
        return last, events

    def _counted(self, start: int, last: int, events: list[ChainEvent]) -> bool:
        """Whether the events read from ``start`` to ``last`` are all the batches and challenges the
        contract counts there (its counters at ``start - 1`` and at ``last``): an answer emptied or
        cut short with no error is caught even when no later event shows a gap. True where the
        RPC cannot tell (a pruned state: the id check of `_complete` still applies)."""
        counts_at = getattr(self.chain, "counts_at", None)
        if counts_at is None:  # a stand-in chain without counters
            return True
        before, after = counts_at(start - 1), counts_at(last)
        if before is None or after is None:
            return True
        batches = sum(isinstance(e, BatchCommitted) for e in events)
        challenges = sum(isinstance(e, ChallengeOpened) for e in events)
        return (batches, challenges) == (after[0] - before[0], after[1] - before[1])

    def _undo_fork(self, head: int) -> bool:
        """Undo what blocks orphaned by a reorg brought (`Database.undo_after`); False while the
        chain's head is below a block already read (an RPC behind, or a shorter branch not yet
        past it: nothing can be told, nothing is scanned)."""
        checkpoints = self.db.checkpoints()
        if not checkpoints:
            self._keep_read_blocks()
            return True
        newest = checkpoints[-1].number
        if head < newest:
            log.warning("the chain's head %d is below block %d, read already: waiting", head, newest)
            return False
        fork = fork_point(self.w3, checkpoints)
        if fork is None:
            return True
        if fork == UNKNOWN_FORK:
            fork = self.start_block - 1
            log.error(
                "REORG below block %d, the oldest kept (or a new chain): following again from block %d "
                "(the secrets of sealed votes are kept)",
                checkpoints[0].number,
                self.start_block,
            )
        # a batch whose seed block is orphaned samples again (its seed changes with the block)
        undone = self.db.undo_after(fork, seed_delay=self.chain.params().seed_delay_blocks)
        log.warning(
            "REORG: the blocks after %d are orphaned; %d batches undone (%s), following again from block %d",
            fork,
            len(undone),
            ", ".join(map(str, undone[:20])) or "none",
            fork + 1,
        )
        self.chain.forget_batches(undone)
        if self.on_undo is not None:
            self.on_undo(undone)
        return True

    def _keep_read_blocks(self) -> None:
        """A database without checkpoints that has read blocks already (one from before the fork
        check): keep blocks below its cursor as checkpoints (`marks`), taken as read, so that a
        reorg of its last blocks finds its fork there, not below every checkpoint (which would
        undo everything from the start block)."""
        cursor = self.db.cursor(default=self.start_block)
        if cursor <= self.start_block:
            return
        try:
            kept = [Checkpoint.of(self.w3, n) for n in marks(self.start_block, cursor - 1)]
        except LookupError:  # the chain is below the cursor: nothing can be told yet
            return
        self.db.add_checkpoints(kept)
        log.info("keeping %d blocks below block %d for the fork check", len(kept), cursor)

    def _anchor_challenges(self, head: int) -> None:
        """Look up on chain, at the head, the checks' challenges not yet known to be in a block
        (`Database.anchor_challenges`): one there is kept (and undone with the head's block, should
        that be orphaned); one missing, or whose id names another leaf, was orphaned: the check is
        "not challenged" again and its challenge is sent again."""
        pending = self.db.unanchored_challenges()
        if not pending:
            return
        try:
            at = Checkpoint.of(self.w3, head)
        except LookupError:
            return
        found, lost = [], []
        for batch_id, index, challenge_id, leaf in pending:
            try:
                view = self.chain.challenge(challenge_id, block=at.number)
            except ContractError as exc:
                if exc.error_name != "UnknownChallenge":
                    raise
                view = None
            if view is not None and view.batch_id == batch_id and leaf in (None, view.leaf):
                found.append((batch_id, index, challenge_id))
            else:
                log.warning(
                    "batch %d #%d: its challenge %d is not on chain (orphaned by a reorg): sent again",
                    batch_id,
                    index,
                    challenge_id,
                )
                lost.append((batch_id, index, challenge_id))
        self.db.anchor_challenges(at, found, lost)

    def backfill_history(self) -> int:
        """Record as ``history`` the batches committed between the deploy block (``start_block``)
        and the block this database first scanned from, for a database that began following later
        (one made before every batch was followed, with a later start block). Run before any batch
        is checked: the origin check's receipt index needs every earlier batch. Resumable (its
        own cursor, ``backfilled_to``); returns the batches recorded."""
        began = self.db.meta("began_at")
        if began is None:  # this database's first scan started at its cursor (or starts now)
            began = str(self.db.cursor(default=self.start_block))
            self.db.set_meta("began_at", began)
        end = int(began)
        total = 0
        start = int(self.db.meta("backfilled_to") or self.start_block)
        while start < end:
            stop = min(end, start + self.max_range)
            found = [e for e in self.chain.events(start, stop - 1) if isinstance(e, BatchCommitted)]
            self.db.record_history(found, stop)
            total += len(found)
            start = stop
        if total:
            log.info("recorded %d earlier batches as history (blocks %d to %d)", total, self.start_block, end)
        return total

    def catch_up(self) -> int:
        """Scan until the cursor reaches the head; returns the events recorded."""
        total = 0
        while True:
            before = self.db.cursor(default=self.start_block)
            total += self.step()
            if self.db.cursor(default=self.start_block) == before:
                return total


def marks(low: int, high: int) -> list[int]:
    """The blocks of ``[low, high]`` kept as checkpoints when it is read: ``high``, then those below
    it at distances 1, 2, 4, ... (a handful of hashes for any range), so that the fork of a reorg
    that reaches into it is found close to where the branches part.

    >>> marks(0, 20)
    [20, 19, 18, 16, 12, 4]
    """
    out, step = [high], 1
    while high - step >= low:
        out.append(high - step)
        step *= 2
    return out
