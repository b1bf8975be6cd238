"""The indexer: follows the protocol's events from the deploy block into the database, reorg-safe.

Like the validator's follower (`supernet.validator.follower`), each step reads the logs of
``[cursor, min(head - confirmations, cursor + max_range - 1)]`` (in ranges the RPC accepts: a hosted
RPC caps a query's blocks; `ChainReader.scan`) and writes the events, the block hashes seen and the
new cursor, past the last block read, in one transaction: a crash re-reads a range, never skips one.
Unlike the validator, the explorer also watches for reorgs: before each step it compares the hash
of the last block it recorded with the chain's; on a mismatch it walks back to the newest block
both agree on, deletes the orphaned events and rebuilds the derived tables by replaying the rest
(`supernet.explorer.apply.project`), keeping the receipts of the batches committed before the fork
(a reorg at the head costs what it orphaned, not a re-read of every manifest). Batch manifests are
read from the content store after their commit is indexed; a manifest the store does not have yet
is retried with backoff: batches never tried come first, then those whose retry is due, within a
time budget per step, so manifests that never resolve cannot hold back the batches after them.

>>> ix = Indexer(engine, ChainReader(w3, dep), ContentReader(store_url), start_block=dep.deploy_block)
>>> ix.step()                                                     # doctest: +SKIP
12
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from sqlalchemy import Engine, delete, exists, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from supernet.explorer.apply import attach_manifest, count_receipts, ingest, project
from supernet.explorer.chain import ChainReader
from supernet.explorer.content import ContentReader, ContentUnavailable
from supernet.explorer.db.models import (
    Batch,
    Block,
    Challenge,
    Event,
    Meta,
    Operator,
    Receipt,
    StakePoint,
    Total,
    Vote,
)
from supernet.sdk.formats.fields import FormatError
from supernet.sdk.formats.manifest import BatchManifest
from web3.exceptions import BlockNotFound

log = logging.getLogger(__name__)

DERIVED = (Operator, Batch, Challenge, Vote, Total, StakePoint)
"""Tables rebuilt from ``events`` after a reorg (receipts are kept where their batch is)."""

MAX_RETRY_S = 3600.0
"""Longest wait between two reads of a manifest the store does not have."""


def get_cursor(session: Session, default: int) -> int:
    """The next block to scan."""
    row = session.get(Meta, "cursor")
    return int(row.value) if row is not None else default


def set_cursor(session: Session, value: int) -> None:
    """Store the next block to scan (in the caller's transaction)."""
    session.merge(Meta(key="cursor", value=str(value)))


@dataclass
class Indexer:
    """Scans block ranges into the index and attaches batch manifests.

    Args:
        engine: the index database.
        reader: the chain.
        content: the content store (None: receipts are not indexed, only on-chain facts).
        start_block: first block on a fresh index (the deploy block).
        confirmations: blocks to stay behind the head.
        max_range: most blocks one step reads (one database transaction); the RPC is asked in
            ranges it accepts, as narrow as it needs (`ChainReader.scan`).
        retry_s: first delay before re-reading a manifest the store did not have (doubles, at
            most `MAX_RETRY_S`).
        manifest_budget_s: time one step spends reading manifests (at least one is read).
    """

    engine: Engine
    reader: ChainReader
    content: ContentReader | None
    start_block: int
    confirmations: int = 0
    max_range: int = 2_000
    retry_s: float = 1.0
    manifest_budget_s: float = 5.0
    _retry: dict[int, tuple[float, float]] = field(default_factory=dict)

    def step(self) -> int:
        """One range (after a reorg check) and pending manifests; returns the events recorded."""
        # first: an RPC of another chain has nothing in common with the index, which the reorg
        # check would take for a reorg and wipe (tests/unit/test_review_session_changes16.py)
        self.reader.check_chain()
        if self.check_reorg():
            return 0
        with Session(self.engine) as s:
            start = get_cursor(s, self.start_block)
        end = min(self.reader.head() - self.confirmations, start + self.max_range - 1)
        n = 0
        if end >= start:
            n = self._scan(start, end)
        self.attach_manifests()
        return n

    def catch_up(self) -> int:
        """Steps until the cursor reaches the head; returns the events recorded."""
        total = 0
        while True:
            with Session(self.engine) as s:
                before = get_cursor(s, self.start_block)
            total += self.step()
            with Session(self.engine) as s:
                if get_cursor(s, self.start_block) == before:
                    return total

    def _scan(self, start: int, end: int) -> int:
        with Session(self.engine) as s:
            before = select(Block).where(Block.number < start).order_by(Block.number.desc())
            anchor = s.scalar(before.limit(1))
        pinned = self.reader.block(end)[0]
        # in ranges the RPC accepts; a block it cannot read ends the range there (logged), and the
        # cursor moves only over blocks read: the next step goes on from the first one not read
        last, logs = self.reader.scan(start, end)
        if last < start:
            return 0
        blocks = {b: self.reader.block(b) for b in {*(lg.block for lg in logs), last}}
        # The chain may reorganise between these calls, or since the reorg check: record a range
        # only when every log is of the blocks whose hashes are recorded, the block pinned before
        # the read (whose hash covers every block before it) did not change while it was read, and
        # the newest block recorded before it is still the chain's (the range continues the index);
        # else read it again next step (whose reorg check then undoes what changed).
        now = blocks[end][0] if end == last else self.reader.block(end)[0]
        moved = now != pinned or any(lg.block_hash != blocks[lg.block][0] for lg in logs)
        moved = moved or (anchor is not None and self._hash(anchor.number) != anchor.hash)
        if moved:
            log.warning("blocks %d..%d changed while they were read; reading them again", start, end)
            return 0
        gas = {lg.tx_hash: self.reader.gas_used(lg.tx_hash) for lg in logs if lg.name == "BatchCommitted"}
        with Session(self.engine) as s, s.begin():
            for lg in logs:
                ingest(s, lg, blocks[lg.block][1], gas.get(lg.tx_hash, 0))
            for number, (h, ts) in blocks.items():
                s.merge(Block(number=number, hash=h, timestamp=ts))
            # Hashes of event-less range ends older than 256 blocks are of no further use for reorg
            # detection; only a recent window is looked at, so a step's cost does not grow with history.
            has_events = exists(select(Event.id).where(Event.block == Block.number))
            s.execute(delete(Block).where(Block.number.between(start - 512, last - 256), ~has_events))
            set_cursor(s, last + 1)
        if logs:
            log.info("indexed %d events in blocks %d..%d", len(logs), start, last)
        return len(logs)

    def check_reorg(self) -> bool:
        """Undo orphaned blocks if the chain changed under the index; True when it did."""
        with Session(self.engine) as s:
            recorded = list(s.scalars(select(Block).order_by(Block.number.desc()).limit(512)))
        if not recorded or self._hash(recorded[0].number) == recorded[0].hash:
            return False
        fork = self.start_block - 1  # nothing in common (a restarted dev chain): rebuild from scratch
        for b in recorded[1:]:
            if self._hash(b.number) == b.hash:
                fork = b.number
                break
        log.warning("reorg: blocks after %d changed; rebuilding the index from its events", fork)
        with Session(self.engine) as s, s.begin():
            # batches committed up to the fork keep their manifests' verdicts and receipts; batch
            # ids grow with the chain, so the orphaned ones are those above the last kept
            kept = {
                b.batch_id: (b.manifest_status, b.manifest_error)
                for b in s.scalars(select(Batch).where(Batch.block <= fork))
            }
            s.execute(delete(Receipt).where(Receipt.batch_id > max(kept, default=0)))
            s.execute(delete(Event).where(Event.block > fork))
            s.execute(delete(Block).where(Block.number > fork))
            for table in DERIVED:
                s.execute(delete(table))
            for ev in s.scalars(select(Event).order_by(Event.block, Event.log_index)):
                project(s, ev)
            s.flush()
            self._restore_manifests(s, kept)
            set_cursor(s, fork + 1)
        self._retry = {b: r for b, r in self._retry.items() if b in kept}
        return True

    @staticmethod
    def _restore_manifests(s: Session, kept: dict[int, tuple[str, str | None]]) -> None:
        """Give the replayed batches their manifests' verdicts back and count their receipts."""
        counted: dict[int, list[tuple[bool, int]]] = {}
        for batch_id, signed, fee in s.execute(select(Receipt.batch_id, Receipt.signed, Receipt.fee)):
            counted.setdefault(batch_id, []).append((signed, fee))
        last = max(kept, default=0)  # every batch up to it is kept (ids grow with the chain)
        for batch in s.scalars(select(Batch).where(Batch.batch_id <= last)):
            batch.manifest_status, batch.manifest_error = kept[batch.batch_id]
            if batch.manifest_status == "ok":
                count_receipts(s, batch, counted.get(batch.batch_id, []))

    def _hash(self, number: int) -> str | None:
        """The chain's hash of block ``number`` (None: the chain is shorter now)."""
        try:
            return self.reader.block(number)[0]
        except BlockNotFound:
            return None

    def attach_manifests(self, limit: int = 32) -> int:
        """Read due pending batches' manifests from the store (at most ``limit``, within
        ``manifest_budget_s``); returns how many were settled."""
        if self.content is None:
            return 0
        with Session(self.engine) as s:
            pending = s.execute(
                select(Batch.batch_id, Batch.manifest_cid)
                .where(Batch.manifest_status == "pending")
                .order_by(Batch.batch_id)
            ).all()
        now = time.monotonic()
        # never tried first, then retries by due time: none waits behind batches that never resolve
        due = sorted(
            (self._retry.get(batch_id, (0.0, 0.0))[0], batch_id, cid)
            for batch_id, cid in pending
            if self._retry.get(batch_id, (0.0, 0.0))[0] <= now
        )[:limit]
        done = 0
        deadline = now + self.manifest_budget_s
        for _, batch_id, cid in due:
            if time.monotonic() > deadline:
                break
            if self._attach_one(batch_id, cid):
                done += 1
        return done

    def _attach_one(self, batch_id: int, cid: str) -> bool:
        """Read one batch's manifest and record it; False when it is to be read again later."""
        assert self.content is not None
        now = time.monotonic()
        _, delay = self._retry.get(batch_id, (0.0, self.retry_s))
        manifest, error = None, ""
        try:
            manifest = BatchManifest.from_dag(self.content.dag(cid))
        except ContentUnavailable as exc:
            if not exc.permanent:
                self._retry[batch_id] = (now + delay, min(delay * 2, MAX_RETRY_S))
                return False
            error = f"manifest unreadable: {exc}"
        except FormatError as exc:
            error = f"malformed manifest: {exc}"
        domain = self.reader.deployment.domain
        try:
            with Session(self.engine) as s, s.begin():
                batch = s.get(Batch, batch_id)
                if batch is None or batch.manifest_status != "pending":
                    return False
                attach_manifest(s, batch, manifest, error, domain=domain)
        except SQLAlchemyError as exc:  # a value the database refuses: this batch, not the indexer
            log.warning("batch %d: manifest not recorded (%s)", batch_id, exc)
            with Session(self.engine) as s, s.begin():
                batch = s.get(Batch, batch_id)
                if batch is not None:
                    attach_manifest(
                        s, batch, None, f"manifest not recordable: {type(exc).__name__}", domain=domain
                    )
        self._retry.pop(batch_id, None)
        return True

    def run_forever(self, stop: threading.Event, poll_s: float = 1.0) -> None:
        """Step until ``stop`` is set; errors are logged and retried (the RPC may be restarting)."""
        while not stop.is_set():
            try:
                self.catch_up()
            except Exception:  # keep serving pages when the chain or store hiccups
                log.exception("indexer step failed; retrying in %.1f s", poll_s)
            stop.wait(poll_s)
