"""Every committed batch's manifest is read while it can still be challenged; one a node does not
serve goes to the bonded manifest challenge (docs/protocol.md, "Manifests").

A check that must find a receipt by its task (the writer a memory or file root names,
`supernet.validator.origin_check`) needs the node's manifests: which receipt sits where. An entry
can be challenged for availability only by its index, so a node that withheld a manifest used to
keep every reader whose writer might be in it pending for good. Now the validator reads each
batch's manifest as the batch is followed (`ReceiptIndex.read`), retries one it cannot read with
back-off, and opens ``challengeManifest`` near the end of the first half of the batch's window
(the contract's limit: the answer is due by three quarters of it, so the entries it lists can
still be claimed for availability): the node posts the batch's receipts on chain (the contract
recomputes the root), which the index reads like a manifest, or is slashed, and the batch then
holds no writer for any validator (`ReceiptIndex`). Claiming late rather than at the first
failure leaves an honest node with a passing outage alone, and costs a node that serves no
manifest the same claims (docs/validator.md, "Known limits"). Another validator's claim on the
same batch is followed, not duplicated.

Every refusal on chain (a manifest or availability claim resolved unanswered, by anyone) makes
the validator forget the roots of that node it had found sound: a root walked through a writer
the node showed this validator and refused to show on chain is judged again, as every other
validator judges it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from supernet.sdk.chain.errors import ContractError
from supernet.sdk.chain.logs import LogRanges
from supernet.sdk.chain.omission import ManifestStatus
from supernet.validator.chain import TaskManagerClient
from supernet.validator.db import BatchRow, Database
from supernet.validator.origin_check import ReceiptIndex

log = logging.getLogger(__name__)

RETRY_MAX_S = 300.0
"""Longest wait between two reads of an unreadable manifest."""
REFUSALS_RANGE = 2_000
"""Most blocks whose refusals one step reads (in one ``eth_getLogs`` each where the RPC takes it,
else in narrower ranges, as the follower's: `LogRanges`)."""


class ManifestWatch:
    """Reads every batch's manifest in its window; challenges, follows and resolves the unread.

    Args:
        chain: the TaskManager client (with the OmissionManager) bound to the validator's key.
        db: the validator's database (the followed batches and the receipt index).
        index: the receipt index that reads manifests.
        backoff_s: first wait between reads; it doubles, to `RETRY_MAX_S`.
        start_block: where the refusals on chain are followed from (the deploy block).
        challenge: whether to open claims (reading, following and resolving always run).
        on_event: called with ``(kind, data)`` for ``manifest`` and ``manifest_slash`` events.
    """

    def __init__(
        self,
        chain: TaskManagerClient,
        db: Database,
        index: ReceiptIndex,
        *,
        backoff_s: float = 2.0,
        challenge: bool = True,
        start_block: int = 0,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.chain, self.db, self.index = chain, db, index
        self.backoff_s, self.enabled, self._start_block = backoff_s, challenge, start_block
        self._emit = on_event or (lambda kind, data: None)
        self._floor = 0  # batches below it are indexed or past every window
        self._schedule: dict[int, tuple[float, int]] = {}  # batch -> (next read, failed reads)
        self._done: set[int] = set()  # unindexed for good: window closed unclaimed
        self._refusal_ranges = LogRanges(REFUSALS_RANGE)  # narrowed where the RPC refuses a range

    async def _call(self, fn: Any, *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    def forget(self, batch_ids: Iterable[int]) -> None:
        """Batches a reorg undid (`Follower.on_undo`): their ids are read again as new batches."""
        for batch_id in batch_ids:
            self._schedule.pop(batch_id, None)
            self._done.discard(batch_id)
            self._floor = min(self._floor, batch_id)

    async def step(self, chain_now: int) -> None:
        """Read the manifests that are due; claim, follow and resolve the unread ones; forget the
        sound roots of nodes that refused data on chain since the last step."""
        if self.chain.omission is None:
            return
        await self._follow_refusals()
        closed_prefix = True
        for batch in self.db.unindexed_since(self._floor):
            if batch.status == "history" or batch.batch_id in self._done:
                open_ = False
            else:
                try:
                    open_ = await self._one(batch, chain_now)
                except Exception as exc:  # one batch's trouble (RPC, funds) never stops the others
                    log.warning("batch %d: manifest watch failed, retrying: %s", batch.batch_id, exc)
                    _, failures = self._schedule.get(batch.batch_id, (0.0, 0))
                    self._schedule[batch.batch_id] = (time.time() + RETRY_MAX_S, failures)
                    open_ = True
            if closed_prefix and not open_:
                self._floor = batch.batch_id + 1
            closed_prefix = closed_prefix and not open_

    async def _one(self, batch: BatchRow, chain_now: int) -> bool:
        """Handle one unindexed batch; whether it still needs watching."""
        next_try, failures = self._schedule.get(batch.batch_id, (0.0, 0))
        if time.time() < next_try:
            return True
        header = await self._call(self.chain.batch, batch.batch_id)
        window = self.chain.params().challenge_window
        claim_until = header.committed_at + window // 2
        claim = await self._call(self.chain.batch_manifest, batch.batch_id)
        if claim is None and chain_now >= claim_until:
            if not await self.index.read(batch, force=True):  # a last try before giving up
                log.error("batch %d: manifest never served and never claimed in time", batch.batch_id)
            self._done.add(batch.batch_id)
            self._schedule.pop(batch.batch_id, None)
            return False
        if await self.index.read(batch, force=True):
            self._schedule.pop(batch.batch_id, None)
            return False
        failures += 1
        if claim is None:
            closing = chain_now >= claim_until - max(2 * self.backoff_s, window // 10)
            if self.enabled and closing:
                await self._claim(batch)
        elif claim.status == ManifestStatus.OPEN and chain_now > claim.deadline:
            await self._resolve(batch, claim.manifest_id)
        delay = min(self.backoff_s * 2**failures, RETRY_MAX_S)
        if claim is None and not self.enabled:
            delay = max(delay, RETRY_MAX_S)  # nothing to do but read: no need to hurry
        self._schedule[batch.batch_id] = (time.time() + delay, failures)
        return True

    async def _follow_refusals(self) -> None:
        head = await self._call(lambda: self.chain.head())
        start = int(self.db.meta("refusals_to") or self._start_block - 1) + 1
        if head < start:
            return
        end = min(head, start + REFUSALS_RANGE - 1)  # a validator far behind catches up in steps
        # a block whose refusals cannot be read ends the step there (logged): read again next step
        last, refusals = await self._call(self._refusal_ranges.scan, self.chain.refusals, start, end)
        if last < start:
            return
        self.db.record_refusals((batch_id, index) for _, batch_id, index in refusals)
        for node in {node for node, _, _ in refusals}:
            dropped = self.db.forget_verified_roots(node)
            log.warning("node %s refused data on chain: %d roots found sound are judged again", node, dropped)
        self.db.set_meta("refusals_to", str(last))

    async def _claim(self, batch: BatchRow) -> None:
        try:
            mid = await self._call(self.chain.challenge_manifest, batch.batch_id)
        except ContractError as exc:
            if exc.error_name in ("ManifestAlreadyChallenged", "ManifestWindowClosed"):
                return  # another validator's claim (followed), or too late
            raise
        log.warning("MANIFEST challenge %d: batch %d of %s not served", mid, batch.batch_id, batch.node)
        self._emit("manifest", {"batch_id": batch.batch_id, "manifest_id": mid})

    async def _resolve(self, batch: BatchRow, manifest_id: int) -> None:
        try:
            slashed = await self._call(self.chain.resolve_manifest, manifest_id)
        except ContractError as exc:
            if exc.error_name not in ("ManifestChallengeNotOpen", "AnswerWindowOpen"):
                raise
            return  # someone else resolved it, or the chain's clock is behind ours
        log.warning(
            "SLASHED node %s: manifest challenge %d unanswered (%d wei)", batch.node, manifest_id, slashed
        )
        self._emit("manifest_slash", {"batch_id": batch.batch_id, "manifest_id": manifest_id})
