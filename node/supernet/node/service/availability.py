"""Answers availability challenges against this node (docs/protocol.md "Availability").

Anyone may claim, with a bond, that an entry of one of our batches cannot be fetched. An honest
node answers within the contract's window by posting the entry's receipt, its Merkle proof at the
challenged position and the trace block the receipt commits to; the bond then pays for that
transaction. A node that cannot (or will not) post the data is slashed, which is what makes
withholding a trace a losing move.

The service follows ``AvailabilityChallenged`` events from the deployment block, in ranges the RPC
accepts (`CLAIM_LOG_RANGE`, halved when refused: hosted RPCs cap a query's range), each scan reading
`REORG_LOOKBACK` blocks behind where it got to (a claim in a block a reorg replaced is found in the
replacement), and keeps how far it got in the database (a restart goes on from there), so a challenge
is never missed while the node runs.

It answers omission claims the same way (``OmissionChallenged``, docs/protocol.md "Omission"): a
user claims a receipt the node promised to commit by ``commitBy`` is in none of its batches, and the
node shows it at its position in the batch it was committed in, with the proof.

And manifest claims (``ManifestChallenged``, docs/protocol.md "Manifests"): anyone claims a
batch's manifest cannot be fetched, and the node posts every receipt of the batch in order (the
contract recomputes the batch root from them).

Each answer is repaid as a credit in the contract (a pull payment), while it is sent from the
wallet: before an answer the wallet is topped up from those credits where it could not pay it
(`supernet.node.service.wallet_float`), so a run of claims cannot drain it into an unanswered one.

Answers are sent as the node's commits are (`supernet.node.service.answer_outbox`): signed,
persisted, broadcast, and never waited on; while a claim stays open, each scan sends its stored
answer again or reprices it at its nonce, and signs a new one only once the stored one can no
longer land. A restart or a base-fee rise neither duplicates an answer nor leaves one unmineable.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from supernet.node.service.answer_outbox import AnswerOutbox
from supernet.node.service.db import Database
from supernet.node.service.wallet_float import WalletFloat
from supernet.sdk.chain.contract_errors import ContractError
from supernet.sdk.chain.logs import LogRanges
from supernet.sdk.chain.omission import ManifestChallenge, ManifestStatus, OmissionStatus
from supernet.sdk.chain.receipts import Receipt
from supernet.sdk.chain.tasks import AvailabilityOpened, AvailabilityStatus

log = logging.getLogger(__name__)

CLAIM_LOG_RANGE = 2_000
"""Blocks per ``eth_getLogs`` of the claim scan at most: hosted RPCs cap a query's range (10,000,
2,000 or fewer blocks); a range refused is halved, down to one block, and the width doubles again,
up to this, after a few ranges read (`supernet.sdk.chain.logs.LogRanges`).
Before, one query from the deployment block to the head was refused on such an RPC once the
deployment was older than the cap, and no claim was ever answered (tests/unit/test_review_node_answers.py)."""

REORG_LOOKBACK = 64
"""Blocks behind its cursor each scan reads again: a claim first mined in a block that a reorg
replaced is in the replacement, at a height the scan had read (claims are kept by id and their
status read before an answer, so reading one twice is harmless)."""


_UNKNOWN_CLAIM = frozenset({"UnknownAvailabilityChallenge", "UnknownOmission"})
"""The contracts' errors for a claim id they do not hold (a reorg undid the claim)."""


def _key(kind: str, claim_id: int, item: Any) -> str:
    """A claim's identity: its kind, its id and what it claims (an availability claim's batch and
    entry, an omission claim's receipt leaf, a manifest claim's batch). The id alone is not one: a
    reorg that re-orders two claims gives each the other's id, and a node that took an id for the
    claim it answered never took up the claim now under it (tests/unit/
    test_review_session_changes24.py: both slashed)."""
    if kind == "a":
        return f"a:{claim_id}:{item.batch_id}:{item.index}"
    if kind == "o":
        return f"o:{claim_id}:{bytes(item).hex()}"
    return f"m:{claim_id}:{item.batch_id}"


class AvailabilityResponder:
    """The availability service (``run_forever / stop``, plus :meth:`answer_once`).

    Args:
        db: the node's database (batches, receipts, proofs, trace CIDs).
        store: the node's content store (trace blocks).
        task_manager: the ``TaskManager`` binding bound to the node's account.
        node: this node's address.
        start_block: first block to scan (the deployment block).
        interval_s: seconds between scans.
        wallet: what tops the wallet up before an answer (default: from the node's credits in the
            TaskManager and the OmissionManager).
    """

    def __init__(
        self,
        db: Database,
        store: Any,
        task_manager: Any,
        node: str,
        start_block: int,
        interval_s: float = 1.0,
        omission_manager: Any = None,
        wallet: WalletFloat | None = None,
    ) -> None:
        self.om = omission_manager
        credits = [task_manager] + ([omission_manager] if omission_manager is not None else [])
        self.wallet = wallet if wallet is not None else WalletFloat(task_manager.w3, node, credits)
        self._gas: dict[str, int] = {}  # the contracts' answer pricing constants, read once
        self._omissions: dict[int, bytes] = {}  # open omission claims against this node: id -> leaf
        self._uncommitted: set[int] = set()  # claims already reported as naming no committed receipt
        self._manifests: dict[int, ManifestChallenge] = {}  # open manifest claims against this node
        self.db = db
        self.outbox = AnswerOutbox(db)  # answers persisted, re-sent and repriced until settled
        self.store = store
        self.tm = task_manager
        self.node = node.lower()
        self.interval_s = interval_s
        self._start_block = start_block
        saved = db.claims_cursor()
        self._next_block = start_block if saved is None else max(start_block, saved + 1)
        self._ranges = LogRanges(CLAIM_LOG_RANGE)  # the claim scan's width, as the RPC allows
        self._open: dict[int, AvailabilityOpened] = {}
        # the first block of the range each open claim was read in: the cursor stored never
        # passes it (`_durable_cursor`), so a restart reads every claim still open again
        self._since: dict[tuple[str, int], int] = {}
        # claims no longer to answer (`_drop`): a scan reading their blocks again does not take
        # them up, nor report them, again
        self._done: set[str] = set()  # `_key`s: a reorg may give a dropped claim's id to another
        self._stop = asyncio.Event()

    def stop(self) -> None:
        """Ask :meth:`run_forever` to return."""
        self._stop.set()

    async def run_forever(self) -> None:
        """Scan and answer every ``interval_s`` until stopped; errors are logged and retried."""
        while not self._stop.is_set():
            try:
                await self.answer_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("availability answers failed, retrying: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval_s)

    async def answer_once(self) -> list[int]:
        """Read new challenges, answer the open ones against this node; returns the ids answered."""
        head = int(await asyncio.to_thread(lambda: self.tm.w3.eth.block_number))
        first = max(self._start_block, self._next_block - REORG_LOOKBACK)
        if head >= first:
            reached = await asyncio.to_thread(self._scan, first, head)
            if reached >= self._next_block:
                self._next_block = reached + 1
        answered = []
        now = await asyncio.to_thread(self._now)
        await self._fund_in_flight()
        # availability first; each claim on its own: one that cannot be answered (a deadline
        # passed while the node was down, a reverted transaction) never blocks the others
        for aid, ev in list(self._open.items()):
            try:
                if now >= ev.deadline:
                    self._drop("a", aid)  # too late (anyone may resolve it)
                    continue
                claim = await asyncio.to_thread(self._on_chain, self.tm.get_availability, "a", aid)
                if claim is None or (claim.batch_id, claim.index) != (ev.batch_id, ev.index):
                    self._forget("a", aid)  # a reorg undid or replaced it: a scan reads it again
                    continue
                if claim.status != AvailabilityStatus.OPEN:
                    self._drop("a", aid)  # settled
                    continue
                if await self._answer(ev):
                    answered.append(aid)
            except Exception as exc:
                log.warning("availability challenge %d: answer failed, retrying: %s", aid, exc)
        await self._answer_omissions(now)
        await self._answer_manifests(now)
        self.db.set_claims_cursor(self._durable_cursor())
        return answered

    def _now(self) -> int:
        """The latest block's timestamp (the contracts' clock for answer deadlines)."""
        return int(self.tm.w3.eth.get_block("latest")["timestamp"])

    def _durable_cursor(self) -> int:
        """The claims cursor to store: the last block read, but never at or past the first block
        of the range a claim still open was read in. A claim that cannot be answered for a while
        (the store down, a wallet it cannot fill, an answer priced out, a receipt not committed
        yet) is then read again after a restart, instead of being lost behind the cursor and
        slashing the node (tests/unit/test_review_node_answers.py). Claims leave by their
        deadline, so the range a restart reads again is bounded by the answer windows."""
        read = self._next_block - 1
        return min([read, *(first - 1 for first in self._since.values())])

    def _scan(self, first: int, last: int) -> int:
        """Read the claims against this node opened in blocks ``first`` to ``last``, in ranges the
        RPC accepts (`LogRanges.scan`); returns the last block read (``first - 1``: none). A block
        that cannot be read stops the scan there (the next scan tries it again); the claims
        already known are answered meanwhile."""

        def fetch(range_first: int, range_last: int) -> list[None]:
            self._read_claims(range_first, range_last)  # kept by id as each range is read
            return []

        reached, _ = self._ranges.scan(fetch, first, last)
        return reached

    def _drop(self, kind: str, claim_id: int) -> None:
        """Stop answering claim ``claim_id`` of ``kind`` ("a"vailability, "o"mission, "m"anifest),
        and do not take it up again when a scan reads its block once more (`REORG_LOOKBACK`)."""
        item = self._claims(kind).get(claim_id)
        if item is not None:
            key = _key(kind, claim_id, item)
            self._done.add(key)
            self.outbox.settled(key)
        self._forget(kind, claim_id)

    def _forget(self, kind: str, claim_id: int) -> None:
        """Leave the claim to the next scans: a reorg undid it, or gave its id to another claim
        (which a scan reading its block again takes up, as it is not `_done`)."""
        self._claims(kind).pop(claim_id, None)
        self._since.pop((kind, claim_id), None)

    def _claims(self, kind: str) -> dict[int, Any]:
        claims: dict[str, dict[int, Any]] = {"a": self._open, "o": self._omissions, "m": self._manifests}
        return claims[kind]

    def _on_chain(self, read: Any, kind: str, claim_id: int) -> Any:
        """The claim as the contract holds it (worker thread); None when the contract knows no such
        claim (a reorg undid it: it must not be retried, nor hold the stored cursor back)."""
        try:
            return read(claim_id)
        except ContractError as exc:
            if exc.error_name in _UNKNOWN_CLAIM:
                log.warning(
                    "claim %s:%d is unknown to the contract (a reorg): left to the scan", kind, claim_id
                )
                return None
            raise

    async def _fund_in_flight(self) -> None:
        """Top the wallet up for every answer sent and not known settled: one the pool dropped for
        want of funds is sent again only if the wallet can pay it (tests/unit/
        test_review_session_changes24.py: the credits were never pulled for a stored answer)."""
        try:
            in_flight = self.outbox.in_flight_wei()
            if in_flight:
                await self.wallet.cover(0, 0, "the answers in flight", in_flight=in_flight)
        except Exception as exc:  # the RPC: the answers are tried anyway
            log.warning("could not check the wallet for the answers in flight: %s", exc)

    def _read_claims(self, first: int, last: int) -> None:
        """The claims of the three kinds opened in blocks ``first`` to ``last`` (kept by id)."""
        availability = self.tm.availability_opened(first, last)
        omissions = self.om.omissions_opened(first, last) if self.om is not None else []
        manifests = self.om.manifests_opened(first, last) if self.om is not None else []
        mine = self.node
        done = self._done
        self._open.update(
            {
                e.availability_id: e
                for e in availability
                if e.node.lower() == mine and _key("a", e.availability_id, e) not in done
            }
        )
        self._omissions.update(
            {o: leaf for o, n, leaf in omissions if n.lower() == mine and _key("o", o, leaf) not in done}
        )
        self._manifests.update(
            {
                c.manifest_id: c
                for c in manifests
                if c.node.lower() == mine and _key("m", c.manifest_id, c) not in done
            }
        )
        for kind, claims in (("a", self._open), ("o", self._omissions), ("m", self._manifests)):
            for claim_id in claims:
                self._since.setdefault((kind, claim_id), first)

    async def _constant(self, contract: Any, name: str) -> int:
        if name not in self._gas:
            self._gas[name] = int(await asyncio.to_thread(contract.call, name))
        return self._gas[name]

    async def _answer_gas(self, trace_bytes: int = 0, receipts: int = 0) -> int:
        """The gas the contracts price an answer at (`ClaimBond.costOfAnswer`'s formula): the fixed
        part, the trace's bytes, a manifest's receipts."""
        gas = await self._constant(self.tm, "ANSWER_FIXED_GAS")
        if trace_bytes:
            gas += trace_bytes * await self._constant(self.tm, "ANSWER_GAS_PER_BYTE")
        if receipts:
            gas += receipts * await self._constant(self.om, "MANIFEST_RECEIPT_GAS")
        return gas

    async def _fund(
        self, sender: Any, fn_name: str, what: str, trace_bytes: int = 0, receipts: int = 0
    ) -> None:
        """Top the wallet up for ``sender``'s answer ``fn_name`` (`WalletFloat.cover`, at the fee
        cap the answer is signed with); a failure here (the RPC) is logged and never stops the
        answer itself from being tried."""
        try:
            cap = await asyncio.to_thread(sender.answer_fee_cap, fn_name)
            gas = await self._answer_gas(trace_bytes, receipts)
            await self.wallet.cover(gas, cap, what, in_flight=self.outbox.in_flight_wei())
        except Exception as exc:
            log.warning("could not check the wallet before %s: %s", what, exc)

    async def _answer_omissions(self, now: int) -> None:
        """Show every receipt an open omission claim says is missing, once it is committed."""
        for oid, leaf in list(self._omissions.items()):
            try:
                await self._answer_omission(oid, leaf, now)
            except Exception as exc:
                log.warning("omission claim %d: answer failed, retrying: %s", oid, exc)

    async def _answer_omission(self, oid: int, leaf: bytes, now: int) -> None:
        claim = await asyncio.to_thread(self._on_chain, self.om.get_omission, "o", oid)
        if claim is None or claim.leaf != leaf:
            self._forget("o", oid)  # a reorg undid or replaced it: a scan reads it again
            return
        if claim.status != OmissionStatus.OPEN or now >= claim.deadline:  # settled, or too late
            self._drop("o", oid)
            self._uncommitted.discard(oid)
            return
        row = self.db.receipt_by_leaf("0x" + leaf.hex())
        batch = self.db.batch(row.batch_id) if row is not None and row.batch_id is not None else None
        if row is None or row.proof is None or batch is None or batch.chain_batch_id is None:
            if oid not in self._uncommitted:  # once per claim, not at every scan
                self._uncommitted.add(oid)
                log.error("omission claim %d: receipt %s is not committed here", oid, "0x" + leaf.hex())
            return  # retried: it may be committed by the next scan
        assert row.batch_index is not None
        what = f"the answer to omission claim {oid}"
        key = _key("o", oid, leaf)
        if await asyncio.to_thread(self.outbox.resume, key, self.om, "answerOmission", what):
            return
        ref = await self._header(batch.chain_batch_id)
        proof = [bytes.fromhex(p[2:]) for p in json.loads(row.proof)]
        receipt = Receipt.from_json(row.receipt_json)
        await self._fund(self.om, "answerOmission", what)
        signed = await asyncio.to_thread(
            self.om.sign_answer_omission, oid, ref, row.batch_index, receipt, proof
        )
        await asyncio.to_thread(self.outbox.send, key, self.om, signed, what)
        log.warning("answered omission claim %d: batch %d #%d", oid, batch.chain_batch_id, row.batch_index)
        self._uncommitted.discard(oid)

    async def _answer_manifests(self, now: int) -> None:
        """Post the receipts of every batch an open manifest claim names, before its deadline."""
        for mid, claim in list(self._manifests.items()):
            try:
                await self._answer_manifest(mid, claim, now)
            except Exception as exc:
                log.warning("manifest claim %d: answer failed, retrying: %s", mid, exc)

    async def _answer_manifest(self, mid: int, claim: ManifestChallenge, now: int) -> None:
        state = await asyncio.to_thread(self.om.batch_manifest, claim.batch_id)
        if state is None or state.status != ManifestStatus.OPEN or now >= state.deadline:
            self._drop("m", mid)  # settled, or too late to answer (anyone may resolve it)
            return
        batch = self.db.batch_by_chain_id(claim.batch_id)
        rows = self.db.batch_receipts(batch.id) if batch is not None else []
        if batch is None or len(rows) != batch.count:
            log.error("manifest claim %d: batch %d is not one of ours in full", mid, claim.batch_id)
            self._drop("m", mid)  # nothing to post; it stays open for the claimant to resolve
            return
        what = f"the answer to manifest claim {mid}"
        key = _key("m", mid, claim)
        if await asyncio.to_thread(self.outbox.resume, key, self.om, "answerManifest", what):
            return
        ref = await self._header(claim.batch_id)
        receipts = [Receipt.from_json(r.receipt_json) for r in rows]
        await self._fund(self.om, "answerManifest", what, receipts=len(receipts))
        signed = await asyncio.to_thread(self.om.sign_answer_manifest, mid, ref, receipts)
        await asyncio.to_thread(self.outbox.send, key, self.om, signed, what)
        log.warning(
            "answered manifest claim %d: %d receipts of batch %d posted", mid, len(rows), claim.batch_id
        )

    async def _header(self, chain_batch_id: int) -> Any:
        """The batch's header, from its ``BatchCommitted`` event read in the block the node saw its
        commit in (one block: an RPC that caps a query's range refuses one from the deployment to
        the head), else, or if a reorg moved it, from the scan's first block on."""
        row = self.db.batch_by_chain_id(chain_batch_id)
        seen = row.commit_block.number if row is not None and row.commit_block is not None else None
        if seen is not None:
            with contextlib.suppress(LookupError):
                return await asyncio.to_thread(self.tm.batch, chain_batch_id, seen, seen)
        # searched back from the head in ranges the RPC accepts (a claim is on a batch committed
        # within a challenge window: near the head)
        return await asyncio.to_thread(self.tm.batch, chain_batch_id, self._start_block)

    async def _answer(self, ev: AvailabilityOpened) -> bool:
        """Answer an open availability claim: True when an answer was signed and sent now; False
        when the one sent before stands (`AnswerOutbox.resume`) or the entry is not here."""
        what = f"the answer to availability challenge {ev.availability_id}"
        claim = _key("a", ev.availability_id, ev)
        if await asyncio.to_thread(self.outbox.resume, claim, self.tm, "answerAvailability", what):
            return False
        row = self.db.receipt_at(ev.batch_id, ev.index)
        task = self.db.task(row.task_id) if row is not None else None
        if row is None or row.proof is None or task is None or task.trace_cid is None:
            log.error(
                "availability challenge %d: no entry %d of batch %d here",
                ev.availability_id,
                ev.index,
                ev.batch_id,
            )
            return False
        try:
            trace = await self.store.get_block(task.trace_cid)
        except Exception as exc:
            log.error(
                "availability challenge %d: trace %s of batch %d #%d cannot be read: %s",
                ev.availability_id,
                task.trace_cid,
                ev.batch_id,
                ev.index,
                exc,
            )
            return False
        receipt = Receipt.from_json(row.receipt_json)
        proof = [bytes.fromhex(p[2:]) for p in json.loads(row.proof)]
        await self._fund(self.tm, "answerAvailability", what, len(trace))
        header = await self._header(ev.batch_id)
        signed = await asyncio.to_thread(
            self.tm.sign_answer_availability, ev.availability_id, receipt, proof, trace, header
        )
        await asyncio.to_thread(self.outbox.send, claim, self.tm, signed, what)
        log.warning(
            "answered availability challenge %d: batch %d #%d posted on chain (%d trace bytes)",
            ev.availability_id,
            ev.batch_id,
            ev.index,
            len(trace),
        )
        return True
