"""Disputes: open bonded challenges, vote on others' after checking independently, resolve, get paid.

Rules this module keeps:

* **Challenge** only a receipt this validator found faulty itself, with the receipt's Merkle proof
  and the CID of its evidence; never a leaf that already has an open (or fraud) challenge.
* **Vote** only after re-checking the challenged receipt with `Verifier` — the challenger's
  evidence is read for the record but never trusted. An unverifiable receipt gets no vote. A vote
  is sealed (``commitVote``, bonded) before the vote's last REVEAL_WINDOW seconds and opened
  (``revealVote``) in them; its side and salt are in the database before the commit is sent.
* **Resolve** any challenge whose vote window has passed (anyone may), then claim what this
  validator's vote earned where the contract pays it, and withdraw what is claimable: the
  TaskManager's balance and the OmissionManager's (manifest claims), what is already claimable
  first, so that a resolve or claim that fails holds none of it back. A vote the wallet cannot pay
  (commit or reveal) is kept and retried, not raised out of `vote_open`, so the step goes on
  to the withdrawal that may pay for it.

Every step is idempotent against the chain (the contract's state is read before acting), so a
restart after a transaction but before the database write does not send it twice. A reorg that
orphans a step (`Database.undo_after`) makes it due again: a vote sealed here is revealed from the
secret kept apart from its challenge's row (`Database.kept_votes`, put back on the row when the
challenge is read again) if a commit of it is on the new branch, sent again with it if not; a
settlement seen after the fork is settled again from what the chain holds now.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any

from supernet.sdk.chain.errors import ContractError, InsufficientFundsError
from supernet.sdk.chain.merkle import ReceiptTree
from supernet.sdk.chain.merkle import verify as merkle_verify
from supernet.sdk.chain.receipts import Receipt
from supernet.sdk.chain.tasks import vote_commitment
from supernet.sdk.formats.fields import FormatError
from supernet.sdk.formats.manifest import ManifestEntry
from supernet.sdk.formats.trace import Trace, check_trace_size
from supernet.sdk.store.cids import cid_of_digest, decode_dag
from supernet.validator.chain import ChallengeStatus, TaskManagerClient, seen_by
from supernet.validator.db import BatchRow, ChallengeRow, Database
from supernet.validator.evidence import Verdict, publish
from supernet.validator.verifier import Manifest, ManifestError, Verifier, load_manifest

log = logging.getLogger(__name__)

MANIFEST_CACHE = 64
"""Manifests kept in memory (each at most 1 MiB as a block; the least recently used go)."""
FALLBACK_TTL_S = 300.0
"""Seconds a manifest read from what was posted on chain (`Disputes.manifest`'s fallback, while the
manifest itself is not served and the answers posted do not cover every entry) is reused: a batch
opened for one group each turn reads it once per step's turns (`service.STEP_TURNS_S`), not once a
turn (each read a store timeout per withheld trace). Entries that become readable later are the
availability path's, which retries what is missing."""
TRACE_READS = 8
"""Traces of a manifest answer read at a time (`Disputes.claimed`)."""

EXPECTED_RACES = {
    "LeafAlreadyChallenged",
    "ChallengeNotOpen",
    "AlreadyVoted",
    "RewardAlreadyClaimed",
    "NothingToWithdraw",
    "VoteWindowClosed",
    "VoteWindowOpen",
    "NotWinningVoter",
    "StakeTooRecent",  # our stake grew after the challenge opened: it cannot vote there
    "WrongVotePhase",  # the chain's clock was not where this validator's estimate put it
}
"""Reverts that mean another validator (or an earlier run) got there first: logged at info."""

SEALING_OVER = {"WrongVotePhase", "VoteWindowClosed", "ChallengeNotOpen"}
"""Reverts of a commit that say no vote can be sealed on the challenge any more."""

FRAUD_VOTE_RESERVE_BONDS = 1
"""Vote bonds a validator keeps in its wallet for fraud votes: it seals a 'not fraud' vote only
with that much more (and `VOTE_GAS_ALLOWANCE_WEI`) left after it (`Disputes._bond_to_spare`)."""
VOTE_GAS_ALLOWANCE_WEI = 10**16
"""Ether beside the bonds for the seal's and the reveal's gas (0.01: ~200k gas at 50 gwei)."""


class Disputes:
    """The validator's side of challenges.

    Args:
        chain: TaskManager client bound to the validator's key.
        db: the validator's database.
        verifier: checks receipts.
        store: content store (evidence is written there).
        address: the validator's address.
        challenge: whether to open challenges (voting and resolving always run).
        auto_withdraw: withdraw claimable wei after claiming.
    """

    def __init__(
        self,
        chain: TaskManagerClient,
        db: Database,
        verifier: Verifier,
        store: Any,
        address: str,
        challenge: bool = True,
        auto_withdraw: bool = True,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.chain = chain
        self.db = db
        self.verifier = verifier
        self.store = store
        self.address = address
        self.enabled = challenge
        self.auto_withdraw = auto_withdraw
        # the last manifests read, most recent last: the receipt index reads every batch of a
        # node once, which must not keep them all in memory
        self._manifests: OrderedDict[int, Manifest] = OrderedDict()
        self._claimed: dict[int, list[Receipt]] = {}  # receipts posted by manifest answers (final)
        self._fallbacks: dict[int, tuple[float, Manifest]] = {}  # incomplete ones, until FALLBACK_TTL_S
        self._emit = on_event or (lambda kind, data: None)
        self._revealing = asyncio.Lock()  # one reveal pass at a time (the service runs one beside its steps)
        # challengers' turns at vote checks (`next_vote`): the count of the last check each had
        self._served: dict[str, int] = {}
        self._turns = itertools.count(1)
        # where a challenged entry whose data this voter cannot read goes: the availability path
        # (`Availability.note`, set by the service), so a node cannot show the trace to the
        # challenger alone and let the vote fail for want of voters who can check it
        self.on_missing: Callable[[BatchRow, int, str], None] | None = None

    async def _call(self, fn: Any, *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    def forget(self, batch_ids: Iterable[int]) -> None:
        """Drop what is kept in memory of batches a reorg undid (`Follower.on_undo`): their ids
        may now hold other batches, with other manifests."""
        for batch_id in batch_ids:
            self._manifests.pop(batch_id, None)
            self._claimed.pop(batch_id, None)
            self._fallbacks.pop(batch_id, None)

    async def _gone(self, row: ChallengeRow, exc: ContractError) -> bool:
        """Whether ``exc`` says the chain holds no challenge with the row's id: then the challenge
        was orphaned by a reorg the follower has not undone yet, and its row is dropped (once the
        chain's head has reached the row's block: an RPC behind it has not seen the challenge yet,
        and the row is only skipped this time)."""
        if exc.error_name != "UnknownChallenge":
            return False
        if row.block <= await self._call(self.chain.head):
            log.warning("challenge %d is not on chain (orphaned by a reorg): forgotten", row.challenge_id)
            self.db.drop_challenge(row.challenge_id)
        else:
            log.info("challenge %d: not on this RPC's chain yet, skipped", row.challenge_id)
        return True

    async def _on_chain(self, row: ChallengeRow) -> bool:
        """Whether the chain's challenge ``row.challenge_id`` is the one recorded (its batch and
        leaf): after a reorg the id may name another challenge (ids are sequential), and a vote
        commitment names the id alone. One that is not is dropped (the follower reads the chain's
        again when it undoes the reorg), never voted on."""
        try:
            view = await self._call(self.chain.challenge, row.challenge_id)
        except ContractError as exc:
            if await self._gone(row, exc):
                return False
            raise
        if (view.batch_id, view.leaf) != (row.batch_id, row.leaf):
            log.error(
                "challenge %d: the chain's is on batch %d leaf %s, not the recorded batch %d leaf %s (a "
                "reorg): forgotten, not voted on",
                row.challenge_id,
                view.batch_id,
                view.leaf.hex(),
                row.batch_id,
                row.leaf.hex(),
            )
            self.db.drop_challenge(row.challenge_id)
            return False
        return True

    async def manifest(self, batch: BatchRow, reuse: bool = False) -> Manifest:
        """The batch's manifest, checked against its root (cached); when it cannot be read, the
        receipts a manifest answer posted on chain with the traces they commit that can be read
        (`claimed`), else the entries posted by availability answers (raises `ManifestError` if
        there are none). Such an incomplete one is read afresh each time unless ``reuse`` (the
        batch turns, which then read it at most once per ``FALLBACK_TTL_S``): the availability
        path and voters must see data as soon as it is served (an entry served after it was read
        would otherwise be claimed for availability from an honest node, or go unvoted)."""
        if batch.batch_id not in self._manifests:
            kept = self._fallbacks.get(batch.batch_id)
            if reuse and kept is not None and time.monotonic() < kept[0]:
                return kept[1]
            try:
                self._manifests[batch.batch_id] = await load_manifest(
                    self.store, batch.manifest_cid, batch.root, batch.count, batch.commit_block
                )
            except ManifestError:
                posted = await self.posted(batch)  # imports their traces into the store too
                claimed = await self.claimed(batch)
                if claimed is not None:
                    if len(claimed.entries) + len(claimed.malformed) == batch.count:
                        self._manifests[batch.batch_id] = claimed
                    else:
                        self._keep_fallback(batch.batch_id, claimed)
                    return claimed
                if not posted.entries and not posted.malformed:
                    raise
                self._keep_fallback(batch.batch_id, posted)
                return posted
            self._fallbacks.pop(batch.batch_id, None)
            while len(self._manifests) > MANIFEST_CACHE:
                self._manifests.popitem(last=False)
        self._manifests.move_to_end(batch.batch_id)
        return self._manifests[batch.batch_id]

    def _keep_fallback(self, batch_id: int, manifest: Manifest) -> None:
        """Reuse an incomplete manifest for ``FALLBACK_TTL_S`` (at most ``MANIFEST_CACHE`` of them)."""
        now = time.monotonic()
        for stale in [b for b, (until, _) in self._fallbacks.items() if until <= now]:
            del self._fallbacks[stale]
        self._fallbacks[batch_id] = (now + FALLBACK_TTL_S, manifest)
        while len(self._fallbacks) > MANIFEST_CACHE:
            del self._fallbacks[next(iter(self._fallbacks))]

    async def claimed(self, batch: BatchRow) -> Manifest | None:
        """The batch as a manifest answer posted it (None: not answered): its receipts build the
        tree, and each entry whose trace (the CID its ``traceHash`` names) can be read is
        readable, its signed request taken from the trace (as for an availability answer)."""
        receipts = self._claimed.get(batch.batch_id)
        if receipts is None:
            receipts = await self._call(self.chain.manifest_receipts, batch.batch_id)
            if receipts is None:
                return None
            self._claimed[batch.batch_id] = receipts
        tree = ReceiptTree([r.leaf() for r in receipts])
        if tree.root != batch.root:  # the contract checked it; a log from elsewhere would not be
            return None
        entries: dict[int, ManifestEntry] = {}
        malformed: dict[int, tuple[bytes, str]] = {}
        bad_receipts: dict[int, Receipt] = {}
        cids = [cid_of_digest(r.trace_hash, "dag-cbor") for r in receipts]
        reads = asyncio.Semaphore(TRACE_READS)  # a withheld trace costs a store timeout: not in turn

        async def read(cid: str) -> bytes | None:
            async with reads:
                try:
                    return await self.store.get_block(cid)
                except Exception:
                    return None  # not served: unreadable, the availability path claims it by its index

        blocks = await asyncio.gather(*(read(cid) for cid in cids))
        for i, (receipt, cid, raw) in enumerate(zip(receipts, cids, blocks, strict=True)):
            if raw is None:
                continue
            try:
                check_trace_size(len(raw))
                trace = Trace.from_dag(decode_dag(raw))
            except Exception as exc:
                malformed[i], bad_receipts[i] = (receipt.leaf(), f"not a well-formed trace: {exc}"), receipt
                continue
            if trace.request is None:
                malformed[i], bad_receipts[i] = (receipt.leaf(), "it lacks the signed request"), receipt
                continue
            entries[i] = ManifestEntry(
                receipt=receipt,
                leaf=receipt.leaf(),
                signature=None,
                trace_cid=cid,
                agent=trace.agent.id,
                request=trace.request,
                request_signature=trace.request_signature,
            )
        return Manifest(
            entries, tree, malformed=malformed, receipts=bad_receipts, commit_block=batch.commit_block
        )

    async def posted(self, batch: BatchRow) -> Manifest:
        """The batch's entries posted on chain by availability answers; their traces are put into
        this validator's store (same bytes, same CID), so the verifier reads them like any other."""
        answers = await self._call(self.chain.availability_answers, batch.batch_id, batch.commit_block)
        entries: dict[int, ManifestEntry] = {}
        malformed: dict[int, tuple[bytes, str]] = {}
        bad_receipts: dict[int, Receipt] = {}
        proofs: dict[int, tuple[bytes, ...]] = {}
        for a in answers:
            leaf = a.receipt.leaf()
            if not merkle_verify(list(a.proof), batch.root, leaf, a.index, batch.count):
                continue  # the contract checked it; a log from another contract would not be
            try:
                cid = await self.store.put_block(a.trace, "dag-cbor")
                doc = decode_dag(a.trace)
            except Exception as exc:  # over the block limit, not dag-cbor: leave it unreadable
                log.warning("batch %d #%d: posted trace not storable: %s", batch.batch_id, a.index, exc)
                continue
            proofs[a.index] = a.proof
            try:
                check_trace_size(len(a.trace))  # over MAX_TRACE_BYTES: the node's fault too
                trace = Trace.from_dag(doc)
            except FormatError as exc:
                malformed[a.index], bad_receipts[a.index] = (
                    (leaf, f"not a well-formed trace: {exc}"),
                    a.receipt,
                )
                continue
            if trace.request is None:
                malformed[a.index], bad_receipts[a.index] = (leaf, "it lacks the signed request"), a.receipt
                continue
            entries[a.index] = ManifestEntry(
                receipt=a.receipt,
                leaf=leaf,
                signature=None,
                trace_cid=cid,
                agent=trace.agent.id,
                request=trace.request,
                request_signature=trace.request_signature,
            )
        return Manifest(
            entries,
            proofs=proofs,
            malformed=malformed,
            receipts=bad_receipts,
            commit_block=batch.commit_block,
        )

    # -- challenge -------------------------------------------------------------------------------

    async def challenge(self, batch: BatchRow, verdict: Verdict, evidence_cid: str) -> int | None:
        """Open a bonded challenge on a faulty receipt; returns its id (None if not opened)."""
        if not self.enabled or verdict.ok or verdict.unverifiable:
            return None
        manifest = await self.manifest(batch)
        if verdict.index in manifest.entries:
            receipt = self.verifier.entry(manifest, verdict.index).receipt
        elif verdict.index in manifest.receipts:  # a malformed trace posted on chain
            receipt = manifest.receipts[verdict.index]
        else:
            log.warning("batch %d #%d: its receipt is not readable here", batch.batch_id, verdict.index)
            return None
        leaf = receipt.leaf()
        if manifest.leaf(verdict.index) != leaf:
            log.warning(
                "batch %d #%d: receipt hash not in the tree, cannot prove it", batch.batch_id, verdict.index
            )
            return None
        prior = await self._call(self.chain.leaf_challenge, batch.batch_id, leaf)
        if prior:
            view = await self._call(self.chain.challenge, prior)
            if view.status != ChallengeStatus.NOT_FRAUD:
                log.info("batch %d #%d already challenged (%d)", batch.batch_id, verdict.index, prior)
                self.db.set_check_challenge(batch.batch_id, verdict.index, prior, leaf)
                return prior
            if view.settled(self.chain.params().quorum_bps):
                # a majority of the validators' stake judged this leaf and cleared it: a second
                # challenge asks the same validators again and pays the node another bond (a node
                # that makes its receipts split the validators would collect one per dissenting
                # checker). A challenge that ended with no verdict, or cleared by a minority that
                # merely reached the quorum, is worth re-opening.
                log.warning(
                    "batch %d #%d: found faulty here, but cleared on chain by a majority (challenge %d)",
                    batch.batch_id,
                    verdict.index,
                    prior,
                )
                self.db.set_check_challenge(batch.batch_id, verdict.index, prior, leaf)
                return None
        log.info("opening a challenge on batch %d #%d", batch.batch_id, verdict.index)
        try:
            cid = await self._call(
                self.chain.open_challenge,
                batch.batch_id,
                verdict.index,
                receipt,
                manifest.proof(verdict.index),
                evidence_cid,
            )
        except ContractError as exc:
            if exc.error_name in EXPECTED_RACES:
                log.info("challenge of batch %d #%d not opened: %s", batch.batch_id, verdict.index, exc)
                return None
            if exc.error_name == "ChallengeWindowClosed":  # found too late: the verdict stays recorded
                self.db.mark_unchallenged(batch.batch_id, verdict.index)
                log.error(
                    "batch %d #%d UNCHALLENGED: a fault was found (%s) after its challenge window closed",
                    batch.batch_id,
                    verdict.index,
                    ", ".join(sorted(verdict.checks)),
                )
                return None
            raise
        self.db.set_check_challenge(batch.batch_id, verdict.index, cid, leaf)
        log.warning(
            "CHALLENGE %d: batch %d receipt #%d (node %s): %s; evidence %s",
            cid,
            batch.batch_id,
            verdict.index,
            batch.node,
            ", ".join(sorted(verdict.checks)),
            evidence_cid,
        )
        return cid

    # -- vote ------------------------------------------------------------------------------------

    async def vote_open(self, now: int, until: float | None = None) -> None:
        """Seal a vote on every open challenge not voted yet (after an independent check), and
        reveal this validator's sealed votes once their reveal phase has come.

        Checks are taken in turns by challenger (`next_vote`): a node's ally flooding challenges
        on the node's honest receipts delays an honest challenger's by one check per flooding
        address, never by the whole flood, which would otherwise outlast the honest challenge's
        sealing phase and leave a real fraud without its voters
        (tests/unit/test_review_validator_liveness.py). ``until`` (a `time.monotonic` instant): no
        new check starts after it; the rest wait for the next call, the step's other duties come
        first (the service passes the end of the step's share, as its batch turns have)."""
        await self.reveal_due()
        early = min(now, (await self._clock())[0])
        due: list[ChallengeRow] = []
        for row in self.db.challenges("open"):
            if row.challenger.lower() == self.address.lower():
                self.db.set_vote(row.challenge_id, True, row.evidence_cid)  # opening counts as a fraud vote
                continue
            if row.reveal == "late" or row.vote_deadline <= early:
                continue  # the contract refused to seal a vote here, or the vote is over
            if row.salt is None and early >= self._reveals_at(row):
                continue  # no vote sealed here and too late to seal one
            due.append(row)
        # the served turns are kept whoever has a challenge due now: a challenger that had none for a
        # step came back as one never served, ahead of those served, so two ally addresses taking
        # turns to flood starved a second fraud's vote (tests/unit/test_review_session_changes21.py).
        # One entry per validator address ever served (each a validator's stake): bounded by them.
        while (turn := self.next_vote(due)) is not None:
            due.remove(turn)
            if not await self._on_chain(turn):  # a reorg gave its id to another challenge
                continue
            self._served[turn.challenger.lower()] = next(self._turns)
            await self._vote_one(turn)
            await self.reveal_due()  # a check takes seconds: another vote's phase may have come
            if due and until is not None and time.monotonic() >= until:
                log.info("%d challenges' checks go on next step", len(due))
                break

    def next_vote(self, due: Sequence[ChallengeRow]) -> ChallengeRow | None:
        """The challenge of ``due`` to check next: of the challenger served longest ago (one not
        served yet first), its oldest."""

        def waited(row: ChallengeRow) -> tuple[int, int]:
            return self._served.get(row.challenger.lower(), 0), row.challenge_id

        return min(due, key=waited, default=None)

    async def reveal_due(self) -> None:
        """Open this validator's sealed votes whose reveal phase is on (cheap, and due within a
        window of a third of the vote: the service also runs it in a loop beside its steps)."""
        async with self._revealing:
            rows = [r for r in self.db.challenges("voted") if r.reveal == "pending"]
            if not rows:
                return
            early, late = await self._clock()
            for row in rows:
                if self._reveals_at(row) <= late and early < row.vote_deadline:
                    await self._reveal_one(row)  # too early after all: WrongVotePhase, retried

    def _reveals_at(self, row: ChallengeRow) -> int:
        return row.vote_deadline - self.chain.params().reveal_window

    async def _clock(self) -> tuple[int, int]:
        """The earliest and the latest the next transaction's block time can be, as far as can be
        told: the last block's time and the wall clock, whichever is less or more. The chain runs
        ahead of the wall on a test chain moved forward, and behind it on one that mines only on
        demand or was moved back. Decisions lean hopeful (a phase is over only when both clocks
        say so; it has begun once either does): the contract judges, and a revert in the wrong
        phase is an expected race, retried or dropped."""
        wall, chain = int(time.time()), int(await self._call(self.chain.timestamp))
        return min(wall, chain), max(wall, chain)

    async def _vote_one(self, row: ChallengeRow) -> None:
        record = await self._call(self.chain.binding.get_vote, row.challenge_id, self.address)
        if record.weight or record.revealed:  # on chain already (a crash before the db write, a reorg)
            await self._adopt(row, record)
            return
        if row.salt is not None and row.my_vote is not None:  # sealed here, the commit not on chain
            if (await self._clock())[0] < self._reveals_at(row):
                await self._commit(row, row.my_vote, row.salt, row.my_evidence or "", ())
            return
        if (await self._clock())[0] >= self._reveals_at(row):
            return  # the commit phase is over: a late vote cannot be sealed
        batch = self.db.batch(row.batch_id)
        if batch is None or batch.node.lower() == self.address.lower():
            return
        try:
            manifest = await self.manifest(batch)
        except ManifestError as exc:
            log.warning("challenge %d: cannot read the batch manifest, not voting: %s", row.challenge_id, exc)
            return
        index = manifest.index_of(row.leaf)
        if index is None:
            log.warning("challenge %d: leaf not in the manifest, not voting", row.challenge_id)
            return
        if not manifest.readable(index):  # perhaps posted on chain by an availability answer
            manifest = await self.posted(batch)
        if not manifest.readable(index):
            if self.on_missing is not None:  # as below: the node serves it to some and not to others
                self.on_missing(batch, index, f"challenged in {row.challenge_id}, unreadable to this voter")
            return
        # every call the screen accepts re-scored by the arbiter too, not a random draw: a draw that
        # missed the one cheated call the challenger's draw hit would vote a real fault down
        verdict = await self.verifier.verify(batch.batch_id, batch.node, index, manifest, recheck_all=True)
        if verdict.missing:  # perhaps posted on chain since: import it and check again
            await self.posted(batch)
            verdict = await self.verifier.verify(
                batch.batch_id, batch.node, index, manifest, recheck_all=True
            )
        if verdict.missing and self.on_missing is not None:
            # a bonded challenger read this data: the node serves it to some and not to others.
            # Make it serve everyone (its trace posted on chain) or be slashed for it; once posted,
            # this voter checks it like any entry (and votes, while the vote is open).
            self.on_missing(batch, index, f"challenged in {row.challenge_id}, unreadable to this voter")
        if verdict.origin_pending and self.on_missing is not None:
            # the same for the writers whose traces the check needs (the roots' origins)
            for writer_batch, writer_index in verdict.withheld:
                writer = self.db.batch(writer_batch)
                if writer is not None:
                    why = f"a writer of the roots of challenge {row.challenge_id}'s entry, unreadable here"
                    self.on_missing(writer, writer_index, why)
        if verdict.unverifiable:
            log.info("challenge %d: cannot check (%s), not voting", row.challenge_id, verdict.unverifiable)
            return
        evidence = await publish(self.store, verdict)
        if (await self._clock())[0] >= self._reveals_at(row):
            log.info("challenge %d: checked after its commit phase ended, not voting", row.challenge_id)
            return
        if verdict.ok and not await self._bond_to_spare():
            log.warning(
                "challenge %d: not sealing a 'not fraud' vote: the balance left would not cover a fraud "
                "vote's bond (kept for one; retried while sealing lasts)",
                row.challenge_id,
            )
            return
        salt = os.urandom(32)
        # on disk before the commit is sent: a validator restarted after it still reveals
        self.db.seal_vote(row.challenge_id, not verdict.ok, salt, evidence)
        await self._commit(row, not verdict.ok, salt, evidence, sorted(verdict.checks))

    async def _bond_to_spare(self) -> bool:
        """Whether the wallet holds a vote's bond beyond `FRAUD_VOTE_RESERVE_BONDS` more (and gas).
        A 'not fraud' vote protects an honest node from a verdict that needs a quorum of fraud
        votes anyway, while a missing fraud vote can leave a real fraud unslashed and its honest
        challenger's bond burned; a node's ally opening challenges on its honest receipts would
        otherwise lock a validator's ether in 'not fraud' bonds just before the real fraud comes
        (tests/unit/test_review_validator_funds.py)."""
        bond = self.chain.params().challenge_bond
        balance = int(await self._call(self.chain.balance))
        return balance >= bond * (1 + FRAUD_VOTE_RESERVE_BONDS) + VOTE_GAS_ALLOWANCE_WEI

    async def _commit(
        self, row: ChallengeRow, fraud: bool, salt: bytes, evidence: str, checks: Sequence[str]
    ) -> None:
        """Send the sealed vote persisted by `Database.seal_vote`."""
        commitment = vote_commitment(row.challenge_id, self.address, fraud, salt)
        try:
            await self._call(self.chain.commit_vote, row.challenge_id, commitment)
        except ContractError as exc:
            if await self._gone(row, exc):
                return
            if exc.error_name not in EXPECTED_RACES:
                raise
            if exc.error_name in SEALING_OVER:  # final (time only moves on): never tried again
                self.db.drop_sealed(row.challenge_id)
            log.info("challenge %d: vote not sealed: %s", row.challenge_id, exc)
            return
        except InsufficientFundsError as exc:
            # bonds come back when challenges resolve (`settle`, later in the step): an empty
            # balance must not stop the step that returns them. Kept, and retried while sealing lasts.
            log.warning("challenge %d: vote not sealed, no ether for its bond: %s", row.challenge_id, exc)
            return
        self.db.mark_committed(row.challenge_id)
        self._emit(
            "vote", {"challenge_id": row.challenge_id, "fraud": fraud, "evidence": evidence, "checks": checks}
        )
        log.info(
            "VOTE challenge %d sealed: %s (own check: %s)",
            row.challenge_id,
            "fraud" if fraud else "honest",
            ", ".join(checks) or "ok",
        )

    async def _adopt(self, row: ChallengeRow, record: Any) -> None:
        """Record a vote found on chain: revealed (its side known), or sealed, revealed later from
        the salt in the database: the row's, or one kept from before a reorg removed or re-made
        the row (`Database.kept_votes`), the one whose commitment the chain holds; with none there
        (the database lost, or a vote sent by another program with this key) it cannot be
        revealed and its bond is lost."""
        if record.revealed:
            self.db.set_vote(row.challenge_id, bool(record.fraud), None)
            return
        commitment = await self._committed(row)
        mine = None if row.salt is None or row.my_vote is None else (row.my_vote, row.salt)
        if commitment is not None and mine is not None and self._seals(row, *mine) == commitment:
            self.db.mark_committed(row.challenge_id)
            return
        kept = self._kept_vote(row, commitment)  # commitment unknown: the latest kept
        if kept is not None and kept[:2] != mine:
            log.warning(
                "challenge %d: this validator's vote sealed on chain is one sealed before a reorg: "
                "revealed from its kept salt",
                row.challenge_id,
            )
            self.db.adopt_sealed(row.challenge_id, *kept)
        elif mine is not None:
            self.db.mark_committed(row.challenge_id)  # the reveal tells (`NotTheCommittedVote`)
        else:
            log.error(
                "challenge %d: this validator's vote is sealed on chain but its salt is not in the "
                "database: it cannot be revealed, and its vote bond will be lost",
                row.challenge_id,
            )
            self.db.mark_committed(row.challenge_id, reveal="lost")

    def _seals(self, row: ChallengeRow, fraud: bool, salt: bytes) -> bytes:
        """The commitment of this validator's vote ``fraud`` with ``salt`` on the row's challenge."""
        return vote_commitment(row.challenge_id, self.address, fraud, salt)

    async def _committed(self, row: ChallengeRow) -> bytes | None:
        """The commitment of this validator's vote on the row's challenge, as the chain holds it
        (`TaskManagerClient.committed_vote`); None where it cannot be told (a provider refusing the
        log query, a commit sent through another contract: the reveal tells)."""
        try:
            found = await self._call(self.chain.committed_vote, row.challenge_id, self.address, row.block)
        except Exception as exc:
            log.info("challenge %d: this validator's commitment not read: %s", row.challenge_id, exc)
            return None
        return None if found is None else bytes(found)

    def _kept_vote(
        self, row: ChallengeRow, commitment: bytes | None
    ) -> tuple[bool, bytes, str | None] | None:
        """A vote this validator sealed on the row's challenge (its id, batch and leaf), kept apart
        from the row (`Database.kept_votes`): the one whose commitment is ``commitment`` (None:
        the latest)."""
        for fraud, salt, evidence in self.db.kept_votes(row.challenge_id, row.batch_id, row.leaf):
            if commitment is None or self._seals(row, fraud, salt) == commitment:
                return fraud, salt, evidence
        return None

    async def _reveal_one(self, row: ChallengeRow) -> None:
        """Open the sealed vote from the side and salt persisted before its commit."""
        if row.salt is None or row.my_vote is None:
            return
        record = await self._call(self.chain.binding.get_vote, row.challenge_id, self.address)
        if record.revealed:  # a crash after the reveal, before the database write
            self.db.mark_revealed(row.challenge_id)
            return
        try:
            await self._call(self.chain.reveal_vote, row.challenge_id, row.my_vote, row.salt)
        except ContractError as exc:
            if exc.error_name == "NotTheCommittedVote":
                if (await self._call(self.chain.binding.get_vote, row.challenge_id, self.address)).revealed:
                    self.db.mark_revealed(row.challenge_id)  # opened meanwhile (another pass)
                    return
                commitment = await self._committed(row)
                kept = None if commitment is None else self._kept_vote(row, commitment)
                if kept is not None and kept[:2] != (row.my_vote, row.salt):
                    # the commit on chain is one sealed here before a reorg: opened from its salt
                    self.db.adopt_sealed(row.challenge_id, *kept)
                    await self._reveal_one(replace(row, my_vote=kept[0], salt=kept[1], my_evidence=kept[2]))
                    return
                log.error(
                    "challenge %d: the sealed vote on chain is not the one in the database: it cannot "
                    "be revealed, and its vote bond will be lost",
                    row.challenge_id,
                )
                self.db.mark_revealed(row.challenge_id, "lost")
                return
            if await self._gone(row, exc):
                return
            if exc.error_name not in EXPECTED_RACES:
                raise
            log.info("challenge %d: vote not revealed (yet): %s", row.challenge_id, exc)
            return
        except InsufficientFundsError as exc:
            # as a commit: the step goes on to `settle`, whose withdrawal may pay for it. Kept, and
            # retried while the reveal phase lasts (the message names the balance).
            log.warning("challenge %d: vote not revealed, no ether for its gas: %s", row.challenge_id, exc)
            return
        self.db.mark_revealed(row.challenge_id)
        self._emit("reveal", {"challenge_id": row.challenge_id, "fraud": row.my_vote})
        log.info("VOTE challenge %d revealed: %s", row.challenge_id, "fraud" if row.my_vote else "honest")

    # -- resolve, claim, withdraw ----------------------------------------------------------------

    async def _deliver_refund(self, row: ChallengeRow) -> None:
        """The challenger of a fraud verdict shows the receipt's signed request (from the manifest)
        so the refund reaches the user who signed it without the user having to be online. The
        contract pays ``request.user`` whoever sends it; a user who claimed first, or a manifest
        that is gone, only costs this courtesy."""
        batch = self.db.batch(row.batch_id)
        if batch is None:
            return
        try:
            manifest = await self.manifest(batch)
        except ManifestError as exc:
            log.info(
                "challenge %d: no manifest, the user claims its refund itself: %s", row.challenge_id, exc
            )
            return
        index = manifest.index_of(row.leaf)
        if index is None or index not in manifest.entries:
            return
        entry = manifest.entries[index]
        try:
            amount = await self._call(self.chain.claim_refund, row.challenge_id, entry.receipt, entry.request)
        except ContractError as exc:  # a courtesy: never let it hold up this validator's own claims
            expected = exc.error_name in EXPECTED_RACES | {"NotTheRequest"}
            (log.info if expected else log.warning)(
                "challenge %d: refund not delivered: %s", row.challenge_id, exc
            )
            return
        log.info(
            "challenge %d: refund of %d wei delivered to %s", row.challenge_id, amount, entry.request.user
        )

    async def settle(self, now: int) -> None:
        """Withdraw what is claimable already (`_withdraw`: first, so that a resolve or a claim
        that fails cannot hold back the refunds that pay this validator's next transactions),
        resolve expired challenges, claim vote rewards, and withdraw what the claims credited."""
        if self.auto_withdraw:
            await self._withdraw()
        if await self._resolve_and_claim(now) and self.auto_withdraw:
            await self._withdraw(omission=False)  # nothing here credits the OmissionManager

    async def _resolve_and_claim(self, now: int) -> bool:
        """Resolve expired challenges and claim what this validator's votes earned; returns
        whether anything was claimed."""
        for row in self.db.challenges("open", "voted"):
            if row.vote_deadline >= now:
                continue
            try:
                fraud = await self._call(self.chain.resolve, row.challenge_id)
                log.warning(
                    "RESOLVED challenge %d: %s",
                    row.challenge_id,
                    "FRAUD, node slashed" if fraud else "not fraud",
                )
            except ContractError as exc:
                if await self._gone(row, exc):
                    continue
                if exc.error_name not in EXPECTED_RACES:
                    raise
                view = await self._call(self.chain.challenge, row.challenge_id)
                if view.status == ChallengeStatus.OPEN:
                    continue
                fraud = view.status == ChallengeStatus.FRAUD
                if view.status == ChallengeStatus.DECOY:
                    # The node showed the receipt was one of its decoys: the challenger's bond came
                    # back with the bounty (when it was sampled); nobody was slashed.
                    log.warning("challenge %d: a decoy of node %s, bounty paid", row.challenge_id, view.node)
            # with the block it was seen by: a reorg past it makes it unsettled again (`undo_after`)
            at = await self._call(seen_by, self.chain)
            self.db.set_challenge_status(row.challenge_id, "resolved", fraud, at=at)
            self._emit("resolved", {"challenge_id": row.challenge_id, "fraud": fraud})
        claimed = False
        for row in self.db.challenges("resolved"):
            # the refund goes with the claim, not the resolve: a crash after recording the verdict,
            # or a verdict another validator resolved (the follower records it), still delivers it
            # (a second delivery is a NothingToWithdraw race)
            if row.fraud and row.challenger.lower() == self.address.lower():
                await self._deliver_refund(row)
            try:
                claimed = await self._claim(row) or claimed
            except ContractError as exc:
                if await self._gone(row, exc):
                    continue
                raise
            at = await self._call(seen_by, self.chain)
            self.db.set_challenge_status(row.challenge_id, "claimed", at=at)
        return claimed

    async def _withdraw(self, omission: bool = True) -> None:
        """Pull this validator's balances into its wallet, each only when it is not zero: the
        TaskManager's ``claimable`` (vote bonds and rewards, challenge bonds, availability claims'
        refunds, deposits and rewards) and, with ``omission`` where the validator has an
        OmissionManager client, the OmissionManager's (manifest claims' refunds, deposits and
        rewards: `ManifestWatch` claims there). One that fails does not hold up the other; a wallet
        that cannot pay a withdrawal's gas is logged and tried again next step."""
        pulls: list[tuple[str, Callable[[str], int], Callable[[], None]]] = [
            ("TaskManager", self.chain.claimable, self.chain.withdraw)
        ]
        if omission and getattr(self.chain, "omission", None) is not None:
            pulls.append(("OmissionManager", self.chain.omission_claimable, self.chain.withdraw_omission))
        failed: ContractError | None = None
        for name, read, pull in pulls:
            if not await self._call(read, self.address):
                continue
            try:
                await self._call(pull)
            except ContractError as exc:
                if exc.error_name not in EXPECTED_RACES:
                    failed = failed or exc
                continue
            except InsufficientFundsError as exc:
                log.warning("%s balance not withdrawn, no ether for the gas: %s", name, exc)
                continue
            log.info("withdrew this validator's %s balance", name)
        if failed is not None:
            raise failed

    async def _claim(self, row: ChallengeRow) -> bool:
        """Claim what this validator's vote on a resolved challenge earned, wherever the contract
        pays it (`ChallengeView.vote_pays`, read from the chain: a vote sealed before a crash counts
        too); returns whether anything was claimed."""
        record = await self._call(self.chain.binding.get_vote, row.challenge_id, self.address)
        if (not record.weight and not record.revealed) or record.reward_claimed:
            return False  # no vote, or claimed already (the chain's word, not the row's)
        view = await self._call(self.chain.challenge, row.challenge_id)
        if not view.vote_pays(record, self.address, self.chain.params().quorum_bps):
            if not record.revealed and view.status != ChallengeStatus.DECOY:
                log.warning(
                    "challenge %d: this validator's vote was never revealed, its bond is lost",
                    row.challenge_id,
                )
            return False
        try:
            amount = await self._call(self.chain.claim_vote_reward, row.challenge_id)
        except ContractError as exc:
            if exc.error_name not in EXPECTED_RACES:
                raise
            return False
        log.info("claimed %d wei (vote bond and reward) on challenge %d", amount, row.challenge_id)
        return True
