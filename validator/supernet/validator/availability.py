"""Data a node does not serve: retry with backoff, then the bonded availability challenge.

A sampled entry whose manifest or trace cannot be fetched is never skipped and never accused of
fraud on that ground alone (a store hiccup is not proof of anything). It is retried with
exponential backoff; once the retries are spent (or the batch's challenge window is about to
close) this validator opens ``challengeAvailability(batch, index)``. Then either

* the node (or anyone) posts the entry's receipt, proof and trace on chain: the validator imports
  the posted trace into its store and verifies the entry like any other, challenging it for fraud
  if it is faulty (the contract keeps the fraud window open after a late answer); or
* nobody answers by the deadline: the validator resolves it and the node is slashed.

Another validator's availability challenge on the same entry is followed, not duplicated. Every
state change is written to the database before the next step, so a restart resumes where it was.

Reorgs: each step of a claim (opened, answered, resolved) is recorded with a block it was seen by
(`supernet.validator.chain.seen_by`, kept as a checkpoint). A reorg past a claim's opening sends
its row back to ``retrying`` (`Database.undo_after`): claimed again, as this validator's own fraud
challenge is sent again (`_open` adopts the entry's claim if the new branch holds one); past its
answer or resolution, back to ``challenged``: followed again from what the chain holds. A followed
claim the chain does not know (orphaned, the follower not past the reorg yet) is claimed again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from supernet.sdk.chain.errors import ContractError
from supernet.sdk.chain.forks import Checkpoint
from supernet.sdk.chain.omission import ManifestStatus
from supernet.sdk.chain.tasks import AvailabilityStatus
from supernet.validator.chain import TaskManagerClient, seen_by
from supernet.validator.challenger import Disputes
from supernet.validator.db import BatchRow, Database, MissingRow
from supernet.validator.evidence import Verdict
from supernet.validator.verifier import Manifest, ManifestError, Verifier

log = logging.getLogger(__name__)

RECHECK_MAX_S = 300.0
"""Longest wait between two checks of an entry waiting for its roots' origins (the writer's
availability challenge takes a vote window to answer)."""

Settle = Callable[[BatchRow, int, Verdict], Awaitable[bool]]


class Availability:
    """The validator's side of missing data.

    Args:
        chain: TaskManager client bound to the validator's key.
        db: the validator's database.
        disputes: manifests (fetched or posted on chain).
        verifier: checks entries once their data is readable.
        settle: records a verdict and challenges it if faulty (the service's own path).
        retries: fetch attempts before challenging.
        backoff_s: first retry delay; it doubles after each failure.
        challenge: whether to open availability challenges (following and resolving always run).
        on_event: called with ``(kind, data)`` for ``availability`` and ``availability_slash`` events.
    """

    def __init__(
        self,
        chain: TaskManagerClient,
        db: Database,
        disputes: Disputes,
        verifier: Verifier,
        settle: Settle,
        *,
        retries: int = 4,
        backoff_s: float = 2.0,
        challenge: bool = True,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.chain, self.db, self.disputes, self.verifier = chain, db, disputes, verifier
        self._settle = settle
        self.retries, self.backoff_s, self.enabled = retries, backoff_s, challenge
        self._emit = on_event or (lambda kind, data: None)

    async def _call(self, fn: Any, *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    def note(self, batch: BatchRow, index: int, reason: str) -> None:
        """Entry ``index`` of ``batch`` could not be read: start retrying it."""
        log.info("batch %d #%d: data unavailable (%s); retrying", batch.batch_id, index, reason)
        self.db.add_missing(batch.batch_id, index, reason[:500], time.time() + self.backoff_s)

    def await_origins(self, batch: BatchRow, index: int, verdict: Verdict) -> None:
        """Entry ``index`` of ``batch`` cannot be judged yet: the origin of a root it started from
        is unreadable (`Verdict.origin_pending`). The writer entries whose traces are withheld
        go to the availability path (served, or the node is slashed); the entry itself is checked
        again with back-off until its batch's challenge window is about to close."""
        self._note_writers(batch, index, verdict)
        log.info("batch %d #%d: %s; checking again later", batch.batch_id, index, verdict.unverifiable)
        reason = (verdict.unverifiable or "origin unreadable")[:500]
        self.db.add_awaiting(batch.batch_id, index, reason, time.time() + self.backoff_s)

    async def step(self, chain_now: int) -> None:
        """Follow open claims to their end (first: that frees their bonds), retry what is due,
        challenge what stays missing, and check again the entries waiting for their roots'
        origins. Each entry is isolated: an error (a claim this validator cannot pay for yet, a
        transaction that fails) defers that entry to the next step, never the others."""
        now = time.time()
        work = [(self._follow, row) for row in self.db.missing("challenged")]
        work += [(self._retry, row) for row in self.db.missing("retrying") if row.next_try <= now]
        work += [(self._recheck, row) for row in self.db.missing("awaiting") if row.next_try <= now]
        for handle, row in work:
            try:
                await handle(row, chain_now)
            except Exception as exc:
                log.warning("batch %d #%d: availability step deferred: %s", row.batch_id, row.index, exc)

    async def _verdict(self, batch: BatchRow, index: int, posted: Manifest | None = None) -> Verdict | None:
        """The entry's verdict if its data is readable now (None: still missing). ``posted``: the
        batch's answers already read from the chain (`Disputes.posted`), so as not to read them twice."""
        try:
            manifest = await self.disputes.manifest(batch)
        except ManifestError:
            return None
        if not manifest.readable(index):
            # an availability answer posted it on chain, while the node's manifest does not show
            # it (e.g. an entry whose receipt is not its leaf, `load_manifest`)
            manifest = posted if posted is not None else await self.disputes.posted(batch)
            if not manifest.readable(index):
                return None
        verdict = await self.verifier.verify(batch.batch_id, batch.node, index, manifest)
        return None if verdict.missing else verdict

    async def _retry(self, row: MissingRow, chain_now: int) -> None:
        batch = self.db.batch(row.batch_id)
        assert batch is not None
        verdict = await self._verdict(batch, row.index)
        if verdict is not None:
            await self._conclude(batch, row.index, verdict, "fetched")
            return
        attempts = row.attempts + 1
        closing = await self._closing(row.batch_id, chain_now)
        spent = attempts >= self.retries or closing
        if spent and self.enabled:
            await self._seal(batch)  # what comes next (a claim, the manifest's) may outlast the seed
        if not spent or await self._manifest_pending(batch, chain_now):
            delay = min(self.backoff_s * 2**attempts, RECHECK_MAX_S)
            self.db.update_missing(row.batch_id, row.index, attempts=attempts, next_try=time.time() + delay)
            return
        if not self.enabled:
            self.db.update_missing(row.batch_id, row.index, attempts=attempts, status="expired")
            return
        await self._open(row, attempts)

    async def _seal(self, batch: BatchRow) -> None:
        """Seal the batch's seed block once the retries of an entry this validator was sampled for
        are spent and it still cannot read it (data served within the retries costs no seal:
        tests/unit/test_review_session_changes19.py). The node decides when its data is served:
        served after the seed's horizon (a manifest answered at its claim's deadline, a trace at
        its claim's), an unsealed seed has expired by the time the finder challenges, and the pick
        it earned (a decoy's bounty) is gone (contracts/test/Review17.t.sol). One seal per seed
        block (~55k gas), the first validator's (two retrying in the same block may both send:
        the second reverts, a known limit); a failure is logged and the retries go on."""
        try:
            await self._call(self.chain.seal_seed, batch.batch_id)
        except Exception as exc:
            log.warning("batch %d: seed block not sealed (%s); retrying the entry", batch.batch_id, exc)

    async def _manifest_pending(self, batch: BatchRow, chain_now: int) -> bool:
        """Whether the batch's manifest is what is missing and its claim (`ManifestWatch`) is
        still to come or unanswered yet: one claim posts every receipt, after which an entry's
        trace is read by the CID its receipt names, so each entry is not claimed on its own
        (its trace posted on chain) until then."""
        if self.chain.omission is None:
            return False
        try:
            if (await self.disputes.manifest(batch)).tree is not None:
                return False  # the receipts are known: what is missing is the entry's trace
        except ManifestError:
            pass
        claim = await self._call(self.chain.batch_manifest, batch.batch_id)
        if claim is not None:
            return claim.status == ManifestStatus.OPEN
        header = await self._call(self.chain.batch, batch.batch_id)
        return chain_now < header.committed_at + self.chain.params().challenge_window // 2

    async def deadline(self, batch_id: int, index: int | None = None) -> int:
        """When entry ``index`` of a batch stops being challengeable for fraud (chain time): at
        the end of its batch's window, or, for an entry posted on chain by an availability answer
        or reopened by a challenge that closed without a fraud verdict, a full window from then if
        later (the contract's `_checkChallengeable`); ``index`` None: the batch's."""
        info = await self._call(self.chain.batch, batch_id)  # cached: asked on every recheck
        window = self.chain.params().challenge_window
        end = info.committed_at + window
        if index is not None:
            for since in (self.chain.answered_at, self.chain.reopened_at):
                start = await self._call(since, batch_id, index)
                end = max(end, start + window) if start else end
        return end

    async def _closing(self, batch_id: int, chain_now: int, index: int | None = None) -> bool:
        """Whether the entry's challenge window (`deadline`) is about to close (the last tenth, at
        least two back-offs): time to act on what is known."""
        window = self.chain.params().challenge_window
        end = await self.deadline(batch_id, index)
        return chain_now >= end - max(2 * self.backoff_s, window // 10)

    async def _conclude(
        self, batch: BatchRow, index: int, verdict: Verdict, status: str, at: Checkpoint | None = None
    ) -> None:
        """An entry's data read at last: settle its verdict, then mark its row ``status`` (after:
        a settle that fails, e.g. its challenge's transaction, is tried again on the next step);
        a verdict whose origin is pending waits for it instead. ``at``: the block the answer that
        posted the data was seen by (`Database.update_missing`)."""
        if verdict.origin_pending:
            self._note_writers(batch, index, verdict)
            next_try = time.time() + self.backoff_s
            self.db.update_missing(batch.batch_id, index, status="awaiting", attempts=0, next_try=next_try)
            return
        await self._settle(batch, index, verdict)
        self.db.update_missing(batch.batch_id, index, at=at, status=status)

    def _writers_pursued(self, verdict: Verdict) -> bool:
        """Whether a writer the verdict waits for is still being made to serve its trace (retried
        or challenged for availability, not yet read nor slashed for)."""
        pursued = {(r.batch_id, r.index) for r in self.db.missing("retrying", "challenged")}
        return any(w in pursued for w in verdict.withheld)

    async def _manifests_pursued(self, verdict: Verdict, chain_now: int) -> bool:
        """Whether a manifest the verdict waits for is still being made to serve its receipts
        (its manifest challenge open, or its batch still claimable: `ManifestWatch` claims it)."""
        for batch_id in verdict.unread_manifests:
            claim = await self._call(self.chain.batch_manifest, batch_id)
            if claim is not None:
                if claim.status == ManifestStatus.OPEN:
                    return True
                continue
            header = await self._call(self.chain.batch, batch_id)
            if chain_now < header.committed_at + self.chain.params().challenge_window:
                return True
        return False

    def _note_writers(self, batch: BatchRow, index: int, verdict: Verdict) -> None:
        for writer_batch, writer_index in verdict.withheld:
            writer = self.db.batch(writer_batch)
            if writer is not None:
                reason = f"the trace of a writer of batch {batch.batch_id} #{index}'s roots"
                self.note(writer, writer_index, reason)

    async def _recheck(self, row: MissingRow, chain_now: int) -> None:
        batch = self.db.batch(row.batch_id)
        assert batch is not None
        verdict = await self._verdict(batch, row.index)
        if verdict is None:  # its own manifest or trace unreadable now: the availability path
            reason = "its own data, unreadable while its roots' origins were awaited"
            self.db.update_missing(row.batch_id, row.index, status="retrying", attempts=0, reason=reason)
            return
        if not verdict.origin_pending:
            await self._conclude(batch, row.index, verdict, "checked")
            return
        self._note_writers(batch, row.index, verdict)  # writers withheld since: served, or slashed
        attempts = row.attempts + 1
        if not await self._closing(row.batch_id, chain_now, row.index):
            delay = min(self.backoff_s * 2**attempts, RECHECK_MAX_S)
            self.db.update_missing(row.batch_id, row.index, attempts=attempts, next_try=time.time() + delay)
            return
        pursued = self._writers_pursued(verdict) or await self._manifests_pursued(verdict, chain_now)
        if self.enabled and row.availability_id is None and pursued:
            # A writer's trace (or a manifest where it may be) is still withheld, and its challenge
            # may be answered at the end of its answer window, after this window: challenge this
            # entry's availability too.
            # Once the node answers (it must, or be slashed), the contract gives the entry a full
            # window from the answer, by when the writer's own answer is due: checked then.
            log.warning("batch %d #%d: a writer withheld to its window's end", row.batch_id, row.index)
            await self._open(row, attempts)
            return
        log.warning(
            "batch %d #%d: its roots' origins stayed unreadable: unverifiable", row.batch_id, row.index
        )
        # recorded as checked, unverifiable (never an accusation), then the row closed
        await self._settle(batch, row.index, replace(verdict, origin_pending=False))
        self.db.update_missing(row.batch_id, row.index, attempts=attempts, status="expired")

    async def _open(self, row: MissingRow, attempts: int) -> None:
        prior = await self._call(self.chain.entry_availability, row.batch_id, row.index)
        try:
            aid = prior or await self._call(self.chain.challenge_availability, row.batch_id, row.index)
        except ContractError as exc:
            if exc.error_name in ("AvailabilityAlreadyOpen", "AlreadyAnswered"):
                aid = await self._call(self.chain.entry_availability, row.batch_id, row.index)
            elif exc.error_name == "ChallengeWindowClosed":
                log.error("batch %d #%d: data never served and the window closed", row.batch_id, row.index)
                self.db.update_missing(row.batch_id, row.index, attempts=attempts, status="expired")
                return
            else:
                raise
        self.db.update_missing(
            row.batch_id,
            row.index,
            at=await self._call(seen_by, self.chain),
            attempts=attempts,
            availability_id=aid,
            status="challenged",
        )
        log.warning(
            "AVAILABILITY challenge %d: batch %d #%d not served after %d attempts (%s)",
            aid,
            row.batch_id,
            row.index,
            attempts,
            row.reason,
        )
        self._emit("availability", {"batch_id": row.batch_id, "index": row.index, "availability_id": aid})

    async def _follow(self, row: MissingRow, chain_now: int) -> None:
        assert row.availability_id is not None
        batch = self.db.batch(row.batch_id)
        assert batch is not None
        try:
            state = await self._call(self.chain.availability, row.availability_id)
        except ContractError as exc:
            if exc.error_name != "UnknownAvailabilityChallenge":
                raise
            state = None
        if state is None:
            # orphaned by a reorg the follower has not undone yet (an id reused by another entry's
            # claim is the undo's: `Database.undo_after`): claimed again (`_open` adopts the
            # entry's claim on chain, should another be open)
            log.warning(
                "batch %d #%d: availability challenge %d is not on chain (a reorg): claimed again",
                row.batch_id,
                row.index,
                row.availability_id,
            )
            self.db.update_missing(
                row.batch_id, row.index, status="retrying", availability_id=None, next_try=0.0
            )
            return
        if state.status == AvailabilityStatus.ANSWERED:
            posted = await self.disputes.posted(batch)  # imports the posted trace into the store
            verdict = await self._verdict(batch, row.index, posted)
            if verdict is None:
                return  # posted but not readable yet here: try again next step
            at = await self._call(seen_by, self.chain)
            await self._conclude(batch, row.index, verdict, "answered", at)
            return
        if state.status == AvailabilityStatus.OPEN:
            if chain_now <= state.deadline:
                return
            try:
                slashed = await self._call(self.chain.resolve_availability, row.availability_id)
            except ContractError as exc:
                if exc.error_name not in ("AvailabilityNotOpen", "AnswerWindowOpen"):
                    raise
                return  # someone else resolved it, or the chain's clock is behind ours
            log.warning(
                "SLASHED node %s: availability challenge %d unanswered (%d wei)",
                batch.node,
                row.availability_id,
                slashed,
            )
        at = await self._call(seen_by, self.chain)
        self.db.update_missing(row.batch_id, row.index, at=at, status="slashed")
        self._emit(
            "availability_slash",
            {"batch_id": row.batch_id, "index": row.index, "availability_id": row.availability_id},
        )
