"""Batches signed receipts into Merkle trees and commits one root per batch on chain.

A batch is cut when ``max_size`` receipts wait or the oldest has waited ``max_age_s``. Each
step is persisted before the next one, so a restart picks up where the node stopped:

1. *sealed*: the manifest is in the content store and the receipts carry their batch index;
2. *sent*: the signed ``commitBatch`` transaction is stored *before* it is broadcast; it is
   re-broadcast (same bytes, same nonce), and replaced only by the same call at the same nonce with
   higher fees once the base fee has priced it out (`ChainPort.repriced`; the replacement is stored
   before it is sent): one nonce, so one of them lands;
3. *committed*: the on-chain batch id, every receipt's Merkle proof and the commit's block
   (number and hash) are stored.

The reorg watch (``[chain] reorg_watch`` blocks, 0: off): before a new batch is cut, and every
`REORG_POLL_S` while a commit is that recent, the node asks whether the blocks of its recent
commits are still the chain's (`supernet.sdk.chain.forks`). A commit in an orphaned block is looked
up again by root: found (re-included, under the same batch id or another when another node's
commit came first), its new id and block are stored; missing, the batch goes back to *sent* and is
committed again (the stored transaction re-broadcast, or a new one signed if it can never land)
before any newer batch, its receipts in their order.

Commits at risk: a failed round (commit, manifest or reorg watch) is recorded (`CommitHealth`:
since when rounds fail, the last error) until a round succeeds. While they fail and either the
wallet cannot pay for a commit (`InsufficientFundsError`: it does not mend itself) or the oldest
receipt not committed has waited longer than ``at_risk_after_s`` (the runner's
``batch.commit_margin_s``, 2 * max_age_s + 60: how late an honest batch reaches the chain),
`commit_risk` names the trouble: ``/healthz`` answers 503 with it and new paid tasks are refused
with it (a node that cannot commit must not sign more promises), and each failed round logs it as
an ERROR ("DUTY AT RISK"). Both end with the first round that succeeds. Errors are logged and shown
without URL paths (`described`: an RPC's path may hold its API key).

Manifest (dag-cbor): ``{"type": "supernet/batch", "version": 1, "node", "root", "receipts":
[{"receipt": {...}, "leaf", "signature", "traceCid", "request": {...}, "requestSignature"}]}``
in commit order; receipt ``i`` of the batch is entry ``i``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol

from supernet.node.service.config import commit_margin
from supernet.node.service.db import Database
from supernet.node.service.metrics import METRICS
from supernet.node.service.models import BatchRow, ReceiptRow
from supernet.node.service.ports import ChainPort, CommitBlocks, SignedCommit, SignedVoucher
from supernet.sdk.chain.errors import InsufficientFundsError
from supernet.sdk.chain.forks import Checkpoint
from supernet.sdk.chain.merkle import ReceiptTree
from supernet.sdk.chain.receipts import Receipt
from supernet.sdk.formats.manifest import BatchManifest, ManifestEntry
from supernet.sdk.redact import described

log = logging.getLogger(__name__)

RETRY_S = 5.0

REORG_POLL_S = 5.0
"""How often the reorg watch looks at the chain while a commit is within ``reorg_watch`` blocks of
the head (it also looks before every new batch is cut)."""

Due = tuple[SignedVoucher, int]
"""A voucher due for redemption, with what its channel had redeemed when it was read."""


class Settlement(Protocol):
    """What is due to be redeemed, settled in the commit's transaction (the node's `Redeemer`)."""

    lock: asyncio.Lock

    async def for_commit(self) -> list[Due]:
        """Due vouchers with what their channels had redeemed (at most one call's worth)."""
        ...

    async def settled(self, chunk: list[Due], tx: str) -> None:
        """Record a transaction that redeemed ``chunk``."""
        ...


class DagStore(Protocol):
    """The part of the content-store client the batcher uses."""

    async def put_dag(self, obj: Any, *, pin: bool = False) -> str:
        """Store a dag-cbor object; returns its CID."""
        ...


def _b(hex_str: str) -> bytes:
    return bytes.fromhex(hex_str[2:])


@dataclass
class CommitHealth:
    """The batcher's failing rounds since its last good one (all None/False: none failing)."""

    failing_since: float | None = None
    """Wall time of the first failed round in a row."""
    last_error: str | None = None
    """The last failed round's error (`described`)."""
    cannot_pay: bool = False
    """The last failure was the wallet's: it cannot pay for a commit."""
    oldest_at: float | None = None
    """When the oldest receipt not committed was stored (as of the last failure)."""
    oldest_due: int | None = None
    """The earliest ``commitBy`` promised among receipts not committed (as of the last failure)."""


class Batcher:
    """The receipt batcher service (``setup / run_forever / stop``)."""

    def __init__(
        self,
        db: Database,
        store: DagStore,
        chain: ChainPort | None,
        node_address: str,
        max_size: int,
        max_age_s: float,
        reorg_watch: int = 0,
        at_risk_after_s: float | None = None,
    ) -> None:
        self.db = db
        self.store = store
        self.chain = chain
        self.node_address = node_address
        self.max_size = max_size
        self.max_age_s = max_age_s
        self.reorg_watch = reorg_watch
        """Blocks a commit is re-checked for after it lands (``[chain] reorg_watch``; 0: never).
        Only with a chain port that tells blocks apart (`CommitBlocks`)."""
        self._watched_at = -float("inf")  # monotonic time of the last look
        self._watching = False  # a commit is still within the watch: look again in REORG_POLL_S
        self.settlement: Settlement | None = None
        """Set by the runner: vouchers due are redeemed in each commit's transaction."""
        self.at_risk_after_s = commit_margin(max_age_s) if at_risk_after_s is None else at_risk_after_s
        """How long a receipt may wait uncommitted while commits fail before its promise counts as
        at risk (`commit_risk`): the runner passes ``batch.commit_margin_s``."""
        self.health = CommitHealth()
        self._wake = asyncio.Event()
        self._stopping = False

    def notify(self) -> None:
        """A receipt was stored: re-evaluate the batch."""
        self._wake.set()

    def stop(self) -> None:
        """Ask :meth:`run_forever` to return."""
        self._stopping = True
        self._wake.set()

    async def run_forever(self) -> None:
        """Finish batches left by a previous run, then cut and commit batches as receipts come."""
        while not self._stopping:
            try:
                for batch in self.db.unfinished_batches():
                    await self.commit(batch)
                timeout = await self._maybe_flush()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # chain or store down: keep the receipts, try again later
                self._failed(exc)
                timeout = RETRY_S
            else:
                self._recovered()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def commit_risk(self, now: float | None = None) -> str | None:
        """Why the receipts' commit promises are at risk, or None: rounds are failing, and the
        wallet cannot pay or a receipt has waited more than ``at_risk_after_s`` uncommitted
        (what ``/healthz`` answers and new paid tasks are refused with)."""
        h = self.health
        if h.failing_since is None or h.oldest_at is None:
            return None
        now = time.time() if now is None else now
        waited = now - h.oldest_at
        if not h.cannot_pay and waited <= self.at_risk_after_s:
            return None
        due = (
            ""
            if h.oldest_due is None
            else f", promised on chain by {h.oldest_due} (in {h.oldest_due - now:.0f} s)"
        )
        return (
            f"batch commits have failed for {now - h.failing_since:.0f} s (last: {h.last_error}); "
            f"the oldest uncommitted receipt has waited {waited:.0f} s{due}: "
            + ("fund the node's wallet" if h.cannot_pay else "check the chain RPC and the store")
        )

    def _failed(self, exc: Exception) -> None:
        """Record a failed round and log it (an ERROR once the promises are at risk)."""
        h, now = self.health, time.time()
        if h.failing_since is None:
            h.failing_since = now
        h.last_error, h.cannot_pay = described(exc), isinstance(exc, InsufficientFundsError)
        try:
            oldest = self.db.oldest_uncommitted()
        except Exception:  # the database is the node's own: as of the last failure then
            oldest = (h.oldest_at, h.oldest_due) if h.oldest_at is not None else None
        h.oldest_at, h.oldest_due = oldest if oldest is not None else (None, None)
        risk = self.commit_risk(now)
        if risk is not None:
            log.error("DUTY AT RISK: %s; new tasks are refused until a commit lands", risk)
        else:
            log.warning("batch commit failed, retrying in %.0f s: %s", RETRY_S, h.last_error)

    def _recovered(self) -> None:
        """A round succeeded: whatever was failing is over."""
        h = self.health
        if h.failing_since is None:
            return
        log.warning("batch commits work again after %.0f s of failures", time.time() - h.failing_since)
        self.health = CommitHealth()

    async def _maybe_flush(self) -> float | None:
        """Re-check recent commits (the reorg watch), then cut batches while one is due; returns
        how long to wait for the next round (None: nothing to do until a receipt comes)."""
        looked = await self._watch_reorgs()
        while True:
            pending = self.db.pending_receipts(self.max_size)
            METRICS.pending_receipts.set(len(pending))
            if not pending:
                return self._next_look(None)
            age = time.time() - pending[0].created_at
            if len(pending) < self.max_size and age < self.max_age_s:
                return self._next_look(self.max_age_s - age)
            if not looked:  # an orphaned commit is committed again before any newer batch
                await self._watch_reorgs(now=True)
            looked = False
            await self.flush(pending)

    def _next_look(self, timeout: float | None) -> float | None:
        """``timeout``, or sooner while a commit is within the reorg watch."""
        if not self._watching:
            return timeout
        return REORG_POLL_S if timeout is None else min(timeout, REORG_POLL_S)

    def _blocks(self) -> CommitBlocks | None:
        """The chain port, when the reorg watch is on and the port can tell blocks apart."""
        chain = self.chain
        return chain if self.reorg_watch > 0 and isinstance(chain, CommitBlocks) else None

    async def _watch_reorgs(self, *, now: bool = False) -> bool:
        """The reorg watch: whether the blocks of the commits within ``reorg_watch`` blocks of the
        head are still the chain's; an orphaned commit is looked up by root again, and its batch
        moved to where it is now or, when it is nowhere, committed again (in local id order, so
        receipts keep their order). What it found is stored in one transaction before anything is
        sent (a crash resumes from it: a reopened batch is an unfinished one). Looks at most every
        `REORG_POLL_S` unless ``now``; returns whether it looked."""
        blocks = self._blocks()
        if blocks is None or (not now and time.monotonic() - self._watched_at < REORG_POLL_S):
            return False
        head = await blocks.head()
        watched = [
            (b, b.commit_block)
            for b in self.db.watched_batches(max(head - self.reorg_watch, 0))
            if b.commit_block is not None
        ]
        self._watched_at, self._watching = time.monotonic(), bool(watched)
        if not watched:
            return True
        fork = await blocks.fork_point([was for _, was in watched])
        if fork is None:
            return True
        moved: dict[int, tuple[int, Checkpoint]] = {}
        gone: list[int] = []
        for batch, was in watched:
            if was.number <= fork:  # still canonical (UNKNOWN_FORK is below every block)
                continue
            found = await blocks.locate_commit(_b(batch.root), fork + 1)
            if found is not None:
                moved[batch.id] = found
                log.warning(
                    "reorg: the commit of batch %d (chain batch %s in block %d) is now chain batch %d "
                    "in block %d",
                    batch.id,
                    batch.chain_batch_id,
                    was.number,
                    found[0],
                    found[1].number,
                )
            else:
                gone.append(batch.id)
                log.warning(
                    "reorg: the commit of batch %d (chain batch %s in block %d) is no longer on chain; "
                    "committing it again",
                    batch.id,
                    batch.chain_batch_id,
                    was.number,
                )
        self.db.after_reorg(moved, gone)  # at once: no two batches ever share a chain id
        if gone:
            for b in self.db.unfinished_batches():
                await self.commit(b)
        return True

    async def _commit_block(self, root: bytes, chain_id: int) -> Checkpoint | None:
        """The block of the commit just seen (for the reorg watch; None when not watched or when
        the commit is deeper than the watch already, e.g. one found after a restart).

        Raises:
            RuntimeError: the commit is on chain no more (a reorg right after it landed): the
                batch stays unfinished and is committed again by the next round.
        """
        blocks = self._blocks()
        if blocks is None:
            return None
        head = await blocks.head()
        found = await blocks.locate_commit(root, max(head - self.reorg_watch, 0))
        if found is not None:
            return found[1] if found[0] == chain_id else None
        if await blocks.locate_commit(root, 0) is not None:
            return None  # landed before the watch's window: as final as the node cares for
        raise RuntimeError(f"commit of root 0x{root.hex()} as chain batch {chain_id} is no longer on chain")

    async def flush(self, receipts: list[ReceiptRow] | None = None) -> BatchRow | None:
        """Seal the given (or all pending, up to ``max_size``) receipts into a batch and commit it."""
        receipts = receipts if receipts is not None else self.db.pending_receipts(self.max_size)
        if not receipts:
            return None
        manifest = BatchManifest.seal(self.node_address, [self._entry(r) for r in receipts])
        cid = await self.store.put_dag(manifest.to_dag(), pin=True)
        batch_id = self.db.seal_batch("0x" + manifest.root.hex(), cid, [r.task_id for r in receipts])
        batch = self.db.batch(batch_id)
        assert batch is not None
        return await self.commit(batch)

    def _entry(self, r: ReceiptRow) -> ManifestEntry:
        task = self.db.task(r.task_id)
        assert task is not None and task.trace_cid is not None
        return ManifestEntry(
            receipt=Receipt.from_json(r.receipt_json),
            leaf=_b(r.leaf),
            signature=_b(r.signature),
            trace_cid=task.trace_cid,
            agent=task.agent,
            request=task.task_request(self.node_address),
            request_signature=_b(task.signature) if task.signature else None,
        )

    async def _commit_on_chain(self, batch: BatchRow) -> int:
        """`_commit_once`, holding the settlement's lock so that no voucher of the commit goes out
        in a redemption of its own meanwhile."""
        if self.settlement is None:
            return await self._commit_once(batch)
        async with self.settlement.lock:
            return await self._commit_once(batch)

    async def _commit_once(self, batch: BatchRow) -> int:
        """One ``commitBatch`` per batch, whatever crashes or timeouts happen: a commit that may have
        landed is looked up before anything is signed; a signed transaction is persisted before it is
        broadcast and re-broadcast (the same bytes, the same nonce) until it lands or is known
        dead; only then is a new one signed.

        Raises:
            CommitPending: the transaction is still pending (try again later, nothing new is sent).
            RuntimeError: it can never land (reverted, or its nonce went to another transaction);
                the next attempt signs a new one.
        """
        assert self.chain is not None
        root = _b(batch.root)
        stored = self.db.commit_tx(batch.id)
        # A commit can only have landed if one was signed before (or sent by an older version,
        # which recorded just its hash): only then is this node's log scanned for the root.
        if stored is not None or batch.tx_hash:
            found = await self.chain.find_commit(root)
            if found is not None:
                return found
        due: list[Due] = []
        if stored is None:
            commit, due = await self._sign(root, batch)
            self.db.record_commit_tx(batch.id, commit.tx_hash, commit.raw, commit.nonce)
        else:
            commit = SignedCommit(*stored)
            replacement = await self.chain.repriced(commit)
            if replacement is not None:  # priced out by the base fee: the same call, dearer, same nonce
                log.warning(
                    "commit %s of batch %d is priced out by the base fee: replaced by %s",
                    commit.tx_hash,
                    batch.id,
                    replacement.tx_hash,
                )
                self.db.record_commit_tx(batch.id, replacement.tx_hash, replacement.raw, replacement.nonce)
                commit = replacement
        log.info("broadcasting the commit of batch %d (tx %s)", batch.id, commit.tx_hash)
        await self.chain.broadcast(commit)
        chain_id = await self.chain.wait_commit(commit)
        if chain_id is None:
            found = await self.chain.find_commit(root)  # another transaction of ours landed it
            if found is not None:
                return found
            self.db.drop_commit_tx(batch.id)
            raise RuntimeError(f"commit transaction {commit.tx_hash} of batch {batch.id} can never land")
        if due and self.settlement is not None:
            await self.settlement.settled(due, commit.tx_hash)
        return chain_id

    async def _sign(self, root: bytes, batch: BatchRow) -> tuple[SignedCommit, list[Due]]:
        """The signed commit, settling what is due; without vouchers if signing with them fails
        (a voucher that cannot be redeemed must never hold a batch back)."""
        assert self.chain is not None
        due = await self.settlement.for_commit() if self.settlement is not None else []
        if due:
            vouchers = [v for v, _ in due]
            try:
                return await self.chain.sign_commit(root, batch.count, batch.manifest_cid, vouchers), due
            except Exception as exc:  # e.g. a voucher redeemed meanwhile: the gas estimate reverts
                # (or a wallet short of the vouchers' gas: the commit alone costs less)
                log.warning(
                    "committing batch %d without its %d vouchers: %s", batch.id, len(due), described(exc)
                )
        return await self.chain.sign_commit(root, batch.count, batch.manifest_cid), []

    async def commit(self, batch: BatchRow) -> BatchRow:
        """Drive one batch to *committed* (idempotent: resumes from its stored status)."""
        chain_id: int | None
        block: Checkpoint | None = None
        if self.chain is None:
            chain_id = batch.id  # dev mode: no chain, the local id stands in
        else:
            chain_id = await self._commit_on_chain(batch)
            block = await self._commit_block(_b(batch.root), chain_id)
        receipts = self.db.batch_receipts(batch.id)
        tree = ReceiptTree(_b(r.leaf) for r in receipts)
        proofs = {
            r.task_id: json.dumps(["0x" + p.hex() for p in tree.proof_at(i)]) for i, r in enumerate(receipts)
        }
        self.db.mark_batch_committed(batch.id, chain_id, proofs, block)
        self._watching = self._watching or block is not None
        if self.chain is not None:  # a commit landed: the wallet pays and the chain answers
            self._recovered()
        METRICS.batches_committed.inc()
        METRICS.receipts_committed.inc(len(receipts))
        log.info(
            "batch %d committed on chain as %d: %d receipts, root %s",
            batch.id,
            chain_id,
            len(receipts),
            batch.root,
        )
        committed = self.db.batch(batch.id)
        assert committed is not None
        return committed
