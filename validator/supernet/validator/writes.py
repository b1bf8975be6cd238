"""Every committed trace is read while its batch can still be challenged, and the memory and file
writes it records are kept (docs/validator.md, "Where a task's roots come from").

The origin check follows a root back to the committed task that wrote it, through that task's
trace. It used to read a writer's trace only when a reader needed it, which may be long after the
writer's batch left its challenge window: a node could withhold the trace of an old, unsampled
task, name that task as the writer of a made-up root, and leave the reader unverifiable (an
availability challenge is refused once the window is over). So every committed entry's trace is
read in its window, sampled or not (`WriteLog.step`): each write it records is checked as the walk
would check it (the new root is its previous one with the write's one change, by this task; the
trace carries the request its user signed) and kept in the ``writes`` table, which the walk reads
first (`supernet.validator.origin_check`). A trace that cannot be read is retried with back-off
and then goes to the availability path like a sampled one (the node posts it on chain, where it is
read, or is slashed, and an entry slashed for its trace wrote nothing: `origin_check`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from supernet.sdk.formats.trace import ROOT_WRITES, Trace, VerifiedWitness
from supernet.sdk.store.cids import canonical_cid, encode_dag
from supernet.validator.chain import TaskManagerClient
from supernet.validator.db import Database, ReceiptRow, WriteRow
from supernet.validator.origin_check import ReceiptIndex, next_root, signed_by
from supernet.validator.search_check import entry_texts_of
from supernet.validator.trace_view import parse_trace_block

if TYPE_CHECKING:
    from supernet.validator.availability import Availability
    from supernet.validator.replay_check import ReplayOutcome
    from supernet.validator.verifier import DagStore

log = logging.getLogger(__name__)

RETRY_MAX_S = 300.0
"""Longest wait between two reads of an unreadable trace."""
READS_IN_FLIGHT = 8
"""Traces the write log reads at once (then handles in order): a node whose store drip-feeds each
block just inside the timeout held a step for hours when they were read one at a time."""
READ_DEADLINE_S = 60.0
"""The whole read of one trace block: a slower read counts as a failure (toward the availability
claim), however steadily its bytes trickle in."""


class WriteLog:
    """Reads every indexed entry's trace in its window and keeps the writes it records.

    Args:
        chain: the TaskManager client (batch headers, parameters).
        db: the validator's database (indexed receipts, ``writes``, ``ingested``).
        store: the content store the traces are read from.
        index: the receipt index (the deployment's domain; the chain's word on manifests).
        availability: where a trace not served goes (retries, then the availability challenge).
        retries: failed reads before the availability path (sooner near the window's end).
        backoff_s: first wait between reads; it doubles, to `RETRY_MAX_S`.
        replay: replays a trace's agent (`Verifier.replay`): every trace that writes memory or
            files is replayed when read, sampled or not (a write outlives its task: what a
            reader later finds must be what the writer's agent wrote). None: not replayed.
        diverged: called with ``(batch, index)`` of an entry whose replay diverged: the entry is
            then verified in full and challenged like a sampled one (`Validator.check_entry`).
    """

    def __init__(
        self,
        chain: TaskManagerClient,
        db: Database,
        store: DagStore,
        index: ReceiptIndex,
        availability: Availability,
        *,
        retries: int = 4,
        backoff_s: float = 2.0,
        replay: Callable[[Trace], Awaitable[ReplayOutcome]] | None = None,
        diverged: Callable[[int, int], Awaitable[None]] | None = None,
    ) -> None:
        self.chain, self.db, self.store, self.index = chain, db, store, index
        self.availability = availability
        self.retries, self.backoff_s = retries, backoff_s
        self.replay, self.diverged = replay, diverged
        self._floor = 0  # entries of batches below it are read or past every window

    async def step(self, chain_now: int) -> None:
        """Read the traces that are due; send the ones still unread near their window's end on."""
        window = self.chain.params().challenge_window
        self._floor = self.db.first_unread_batch() or self._floor
        due: list[tuple[ReceiptRow, int, Any]] = []
        headers: dict[int, Any] = {}
        for row, failures in self.db.unread_traces(self._floor, time.time()):
            try:  # an entry past its window is closed before any read (nothing found can be used)
                if row.batch_id not in headers:
                    headers[row.batch_id] = await asyncio.to_thread(self.chain.batch, row.batch_id)
                header = headers[row.batch_id]
            except Exception as exc:  # one entry's trouble (RPC) never stops the others
                log.warning("batch %d #%d: reading its header failed: %s", row.batch_id, row.index, exc)
                self.db.retry_read(row.batch_id, row.index, failures, time.time() + RETRY_MAX_S)
                continue
            if chain_now >= header.committed_at + window:
                self.db.record_writes(row.batch_id, row.index, [], "expired")
            else:
                due.append((row, failures, header))
        for start in range(0, len(due), READS_IN_FLIGHT):  # read together, handled in order
            chunk = due[start : start + READS_IN_FLIGHT]
            blocks = await asyncio.gather(
                *(self._read(row.trace_cid) for row, _, _ in chunk), return_exceptions=True
            )
            for (row, failures, header), block in zip(chunk, blocks, strict=True):
                try:
                    await self._one(row, failures, chain_now, window, header, block)
                except Exception as exc:  # one entry's trouble (store, replay) never stops the others
                    log.warning("batch %d #%d: reading its writes failed: %s", row.batch_id, row.index, exc)
                    self.db.retry_read(row.batch_id, row.index, failures, time.time() + RETRY_MAX_S)

    async def _read(self, cid: str) -> bytes:
        """One trace block, within `READ_DEADLINE_S` in all."""
        return await asyncio.wait_for(self.store.get_block(cid), READ_DEADLINE_S)

    async def _one(
        self,
        row: ReceiptRow,
        failures: int,
        chain_now: int,
        window: int,
        header: Any,
        block: bytes | BaseException,
    ) -> None:
        """Handle one entry's trace block, read for its writes (or count a failure)."""
        try:
            if isinstance(block, BaseException):
                raise block
            trace = parse_trace_block(block).doc
        except Exception as exc:  # not served (yet), or not a trace: the availability path
            failures += 1
            closing = chain_now >= header.committed_at + window - max(2 * self.backoff_s, window // 10)
            if failures >= self.retries or closing:
                batch = self.db.batch(row.batch_id)
                assert batch is not None
                self.availability.note(batch, row.index, f"its trace, read for its writes: {exc}")
                self.db.record_writes(row.batch_id, row.index, [], "unreadable")
                return
            delay = min(self.backoff_s * 2**failures, RETRY_MAX_S)
            self.db.retry_read(row.batch_id, row.index, failures, time.time() + delay)
            return
        writes, status = self.writes_of(row, trace)
        self.db.record_writes(row.batch_id, row.index, writes, status)
        await self._replay_writer(row, trace)

    async def _replay_writer(self, row: ReceiptRow, trace: Trace) -> None:
        """Replay a trace that writes memory or files; an entry that diverges is marked and checked
        in full (`Database.diverged_pending`: a failed check is retried by the validator's step)."""
        writes = tuple(k for kinds in ROOT_WRITES.values() for k in kinds)
        if self.replay is None or self.diverged is None:
            return
        if not any(isinstance(ev, writes) for ev in trace.events):
            return
        try:
            outcome = await self.replay(trace)
            if outcome.findings:
                log.warning("batch %d #%d: its writer's replay diverges", row.batch_id, row.index)
                self.db.mark_diverged(row.batch_id, row.index)  # retried until settled, if this fails
                await self.diverged(row.batch_id, row.index)
        except Exception as exc:
            log.warning("batch %d #%d: replaying its writes failed: %s", row.batch_id, row.index, exc)

    def writes_of(self, row: ReceiptRow, trace: Trace) -> tuple[list[WriteRow], str]:
        """The sound writes of entry ``row``'s trace, and the entry's status (``read``, or why it
        wrote nothing: a root naming it is then a finding, `origin_check`). The block of a write's
        previous root, when no write read here produced it, is kept: the walk may need it once
        the writer's trace is gone."""
        if trace.task_id.lower() != row.request_hash or trace.user.lower() != row.user:
            return [], "another task's trace"
        if not signed_by(trace, row.request_hash, row.user, row.node, self.index.domain):
            return [], "no signed request"
        try:
            witness = VerifiedWitness(trace.witness)
        except Exception:
            return [], "unreadable witness"
        out: list[WriteRow] = []
        for area, kinds in ROOT_WRITES.items():
            for ev in trace.events:
                if isinstance(ev, kinds):
                    write = self._write(row, trace, witness, area, ev, {w.root for w in out})
                    if write is not None:
                        out.append(write)
        # the entries' texts, for the searches of later tasks (`search_check`); this trace may be
        # gone by then
        self.db.keep_entry_texts(entry_texts_of(trace, witness))
        return out, "read"

    def _write(
        self, row: ReceiptRow, trace: Trace, witness: VerifiedWitness, area: str, ev: object, own: set[str]
    ) -> WriteRow | None:
        """One write event as a sound `WriteRow` (None: not sound, or a block not carried; a
        malformed block is the node's and never stops the trace's other writes)."""
        root, prev = str(getattr(ev, "root", "")), getattr(ev, "prev_root", None)
        prev = None if prev is None else str(prev)
        namespace = str(getattr(ev, "namespace", ""))
        try:
            block = witness.block(root)
            prev_block = {} if prev is None else witness.block(prev)
            if not isinstance(block, Mapping) or not isinstance(prev_block, Mapping):
                return None
            if dict(block) != next_root(area, namespace, prev_block, prev, ev, trace.task_id):
                return None  # not a sound write (the replay of this entry diverges too)
        except Exception:
            return None
        if prev is not None and self.db.write_of(row.node, prev) is None:
            self.db.keep_root_block(row.node, prev, encode_dag(prev_block))
        return WriteRow(
            row.node,
            canonical_cid(root),
            prev,
            area,
            namespace,
            row.request_hash,
            row.user,
            row.batch_id,
            row.index,
        )
