"""Following the TaskManager's events from the deploy block, durably.

Each step reads the logs of ``[cursor, min(head - confirmations, cursor + max_range - 1)]`` and
stores the batches and challenges found together with the new cursor in one SQLite transaction
(`Database.record_events`). A crash before the commit re-reads the same range (inserts are
idempotent); a crash after it starts from the next block: no batch is skipped or recorded twice.

>>> f = Follower(chain, db, start_block=dep.deploy_block)   # doctest: +SKIP
>>> f.step()                                                # doctest: +SKIP
3
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from supernet.validator.chain import BatchCommitted, ChallengeOpened, TaskManagerClient
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
        max_range: most blocks per ``eth_getLogs`` query.
        history_until: batches committed before this block are recorded as ``history``: never
            sampled or checked here, but in the receipt index (a task's memory may come from any
            earlier committed task, so the origin check needs every batch from the deploy block
            on: with gaps it would take a writer it never saw for one never committed); challenges
            opened before it are not followed.
    """

    chain: TaskManagerClient
    db: Database
    start_block: int
    confirmations: int = 0
    max_range: int = 2_000
    history_until: int = 0

    def step(self) -> int:
        """Scan one range (if any block is new); returns the number of events recorded."""
        start = self.db.cursor(default=self.start_block)
        end = min(self.chain.head() - self.confirmations, start + self.max_range - 1)
        if end < start:
            return 0
        events = self.chain.events(start, end)
        before = self.history_until
        history = {e.batch_id for e in events if isinstance(e, BatchCommitted) and e.block < before}
        events = [e for e in events if isinstance(e, BatchCommitted) or e.block >= before]
        self.db.record_events(events, end + 1, history=history)
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
