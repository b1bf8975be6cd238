"""Typed wrapper of ``TaskManager``: batch commits, sampling seed, challenges, votes, resolution.

>>> tm = TaskManager(w3, dep.address("TaskManager"), node)              # doctest: +SKIP
>>> tree = ReceiptTree.from_receipts(receipts)
>>> batch = tm.commit_batch(0, tree.root, len(tree), manifest_cid).value  # doctest: +SKIP
>>> v = tm.with_account(validator)                                      # doctest: +SKIP
>>> cid = v.challenge(batch, 0, receipts[0], tree.proof_at(0), evidence_cid).value

A batch is stored on chain as one word in a slot of its node's (docs/protocol.md "Batches"); what
acts on it later passes its header, a `Batch`, read from the ``BatchCommitted`` event. Methods that
take a batch accept a `Batch` or a batch id (then the event is looked up).

Votes are sealed, then opened (commit-reveal): `commit_vote` with `vote_commitment` (and the vote
bond) before the vote's last `reveal_window` seconds, `reveal_vote` with the same side and salt in
them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from functools import cached_property
from typing import Any

from eth_abi import encode as abi_encode
from supernet.sdk.chain.beacon import SeedBeacon, Source
from supernet.sdk.chain.bindings import Binding, SignedTx, TxResult
from supernet.sdk.chain.eip712 import TaskRequest
from supernet.sdk.chain.errors import ChainError, ContractError, TransactionFailed
from supernet.sdk.chain.receipts import Receipt
from supernet.sdk.chain.sampling import batch_seed
from web3 import Web3

log = logging.getLogger(__name__)


class ChallengeStatus(IntEnum):
    """Lifecycle of a challenge."""

    NONE = 0
    OPEN = 1
    FRAUD = 2
    NOT_FRAUD = 3
    DECOY = 4  # its node showed the receipt was a decoy it planted: bounty, no slash


class AvailabilityStatus(IntEnum):
    """Lifecycle of an availability challenge."""

    NONE = 0
    OPEN = 1
    ANSWERED = 2
    UNANSWERED = 3


@dataclass(frozen=True)
class AvailabilityChallenge:
    """A claim that one entry of a batch cannot be fetched."""

    batch_id: int
    challenger: str
    index: int
    deadline: int
    status: AvailabilityStatus
    sampled: bool = False  # the seed picked the challenger for the entry (its reward needs it)
    deposit: int = 0  # what the claimant posted: the bond and the answer's cover (ClaimBond)


@dataclass(frozen=True)
class AvailabilityOpened:
    """An ``AvailabilityChallenged`` event: entry ``index`` of a batch claimed unavailable."""

    availability_id: int
    batch_id: int
    challenger: str
    node: str
    index: int
    deadline: int
    block: int


@dataclass(frozen=True)
class AvailabilityAnswer:
    """An ``AvailabilityAnswered`` event: the entry's receipt, its proof and the trace, on chain."""

    availability_id: int
    batch_id: int
    index: int
    receipt: Receipt
    proof: tuple[bytes, ...]
    trace: bytes
    block: int


@dataclass(frozen=True)
class Batch:
    """One committed batch: its header (``TaskManager.BatchRef``) and manifest CID."""

    batch_id: int
    node: str
    slot: int
    count: int
    commit_block: int
    committed_at: int
    root: bytes
    manifest_cid: str = ""

    def as_tuple(self) -> tuple[int, str, int, int, int, int, bytes]:
        """The ``BatchRef`` tuple the contract takes."""
        return (
            self.batch_id,
            self.node,
            self.slot,
            self.count,
            self.commit_block,
            self.committed_at,
            self.root,
        )

    @classmethod
    def from_event(cls, args: Any) -> Batch:
        """From a ``BatchCommitted`` event's args."""
        return cls(
            int(args["batchId"]),
            args["node"],
            int(args["slot"]),
            int(args["count"]),
            int(args["commitBlock"]),
            int(args["committedAt"]),
            bytes(args["root"]),
            str(args["manifestCid"]),
        )


BatchLike = Batch | int


class Pick(IntEnum):
    """Whether the seed picked a challenger for its entry (``TaskManager.Pick``): ``EVERYONE`` once
    the seed expired unsealed (fraud rewards, never a decoy bounty)."""

    NONE = 0
    BY_SEED = 1
    EVERYONE = 2


@dataclass(frozen=True)
class Challenge:
    """One challenge on one receipt leaf."""

    batch_id: int
    challenger: str
    opened_at: int
    vote_deadline: int
    status: ChallengeStatus
    node: str
    sampled: Pick  # whether the seed picked the challenger (truthy: its reward; BY_SEED: a decoy bounty)
    user: str  # the receipt's ``user`` field (node-written: shown, never paid)
    fee: int
    leaf: bytes
    fraud_stake: int
    honest_stake: int
    slashed: int
    reward_pool: int
    reward_claimed: int
    quorum_base: int  # settledValidatorStake when the challenge opened
    refund_due: int = 0  # fraud: held for the request's signer until `TaskManager.claim_refund`
    committed: int = 0  # sealed votes (each with its bond), the challenger's not counted
    fraud_voters: int = 0  # revealed "fraud" votes, the challenger's not counted
    honest_voters: int = 0  # revealed "not fraud" votes


@dataclass(frozen=True)
class Vote:
    """One validator's vote on one challenge: weight 0, it did not vote; weight set and not
    ``revealed``, sealed (``fraud`` is meaningful once revealed)."""

    weight: int
    fraud: bool
    reward_claimed: bool
    revealed: bool = False


def vote_commitment(challenge_id: int, voter: str, fraud: bool, salt: bytes) -> bytes:
    """The sealed vote `TaskManager.commit_vote` takes: ``keccak256(abi.encode(challengeId, voter,
    fraud, salt))``; ``salt`` is 32 secret bytes, kept until `TaskManager.reveal_vote`."""
    if len(salt) != 32:
        raise ValueError("a vote's salt is 32 bytes")
    voter = Web3.to_checksum_address(voter)
    return bytes(
        Web3.keccak(abi_encode(["uint256", "address", "bool", "bytes32"], [challenge_id, voter, fraud, salt]))
    )


class TaskManager(Binding):
    """Batch commitments, the sampling seed and disputes."""

    NAME = "TaskManager"

    # -- node ----------------------------------------------------------------------------------

    def commit_batch(
        self,
        root: bytes,
        count: int,
        manifest_cid: str,
        vouchers: bytes = b"",
        *,
        slot: int | None = None,
    ) -> TxResult:
        """Commit a batch root into one of the bound node's slots, settling ``vouchers`` (packed,
        see `supernet.sdk.chain.payments.pack_vouchers`) in the same transaction; ``value`` of the
        result is the new `Batch`.

        Args:
            slot: the slot; by default the lowest one free now (`free_slot`). A node that commits
                often keeps track of its slots instead (the node service does).
        """
        if slot is None:
            slot = self.free_slot()
        tx = self.transact("commitBatch", slot, root, count, manifest_cid, vouchers)
        return TxResult(tx.receipt, Batch.from_event(self.events(tx, "BatchCommitted")[0]["args"]))

    def reserve_slots(self, first: int, count: int) -> TxResult:
        """Write the bound node's empty batch slots ``first .. first+count-1`` once (at set-up), so
        that commits into them rewrite a word instead of creating one."""
        return self.transact("reserveSlots", first, count)

    # -- validators ----------------------------------------------------------------------------

    def challenge(
        self,
        batch: BatchLike,
        index: int,
        receipt: Receipt,
        proof: Sequence[bytes],
        evidence_cid: str,
        bond: int | None = None,
    ) -> TxResult:
        """Challenge one receipt with its Merkle proof; ``value`` is the new challenge id.

        Args:
            batch: the batch holding the receipt (or its id).
            index: the receipt's position in the batch.
            receipt: the receipt (its leaf must be at ``index`` of the batch's tree).
            proof: the leaf's Merkle proof (`ReceiptTree.proof_at`).
            evidence_cid: CID of the evidence on the content store.
            bond: wei sent; the contract's ``CHALLENGE_BOND`` by default.
        """
        value = self.challenge_bond() if bond is None else bond
        ref = self._sealed_ref(batch)
        args = (ref, index, receipt.as_tuple(), list(proof), evidence_cid)
        tx = self.transact("challenge", *args, value=value)
        return TxResult(tx.receipt, int(self.events(tx, "ChallengeOpened")[0]["args"]["challengeId"]))

    # -- availability (docs/protocol.md "Availability") -----------------------------------------

    def challenge_availability(self, batch: BatchLike, index: int, bond: int | None = None) -> TxResult:
        """Claim entry ``index`` of a batch cannot be fetched; ``value`` is the availability id.

        Args:
            bond: wei sent; by default the bond plus the costliest answer at the fee cap
                (`Binding.claim`), the part the answer does not cost coming back.
        """
        ref = self._sealed_ref(batch)
        if bond is None:
            tx = self.claim(
                "challengeAvailability",
                ref,
                index,
                bond=self.challenge_bond(),
                worst_gas=int(self.call("AVAILABILITY_WORST_GAS")),
            )
        else:
            tx = self.transact("challengeAvailability", ref, index, value=bond)
        return TxResult(
            tx.receipt, int(self.events(tx, "AvailabilityChallenged")[0]["args"]["availabilityId"])
        )

    def answer_availability(
        self,
        availability_id: int,
        receipt: Receipt,
        proof: Sequence[bytes],
        trace: bytes,
        batch: Batch | None = None,
    ) -> TxResult:
        """Post the entry's receipt (with its proof) and the trace block it commits to; ``value`` is
        the bond's split, the ``AvailabilitySettled`` args (``answerCost`` to the node, ``refunded``
        to the claimant, ``burned``). ``batch``: the entry's batch, when the caller has it (else it
        is read from its event)."""
        args = self._availability_answer(availability_id, receipt, proof, trace, batch)
        tx = self.answer("answerAvailability", *args)
        return TxResult(tx.receipt, dict(self.events(tx, "AvailabilitySettled")[0]["args"]))

    def sign_answer_availability(
        self, availability_id: int, receipt: Receipt, proof: Sequence[bytes], trace: bytes, batch: Batch
    ) -> SignedTx:
        """`answer_availability`'s transaction signed, not sent (`Binding.sign_answer`)."""
        args = self._availability_answer(availability_id, receipt, proof, trace, batch)
        return self.sign_answer("answerAvailability", *args)

    def _availability_answer(
        self,
        availability_id: int,
        receipt: Receipt,
        proof: Sequence[bytes],
        trace: bytes,
        batch: Batch | None,
    ) -> tuple[Any, ...]:
        ref = self._ref(batch if batch is not None else self.get_availability(availability_id).batch_id)
        return availability_id, ref, receipt.as_tuple(), list(proof), trace

    def resolve_availability(self, availability_id: int) -> TxResult:
        """Slash the node of an unanswered availability challenge; ``value`` is the event's args."""
        tx = self.transact("resolveAvailability", availability_id)
        return TxResult(tx.receipt, dict(self.events(tx, "AvailabilityResolved")[0]["args"]))

    def availability_opened(
        self, from_block: int, to_block: int | str = "latest"
    ) -> list[AvailabilityOpened]:
        """``AvailabilityChallenged`` events in a block range, in chain order."""
        logs = self.logs("AvailabilityChallenged", from_block, to_block)
        return [
            AvailabilityOpened(
                int(e["args"]["availabilityId"]),
                int(e["args"]["batchId"]),
                e["args"]["challenger"],
                e["args"]["node"],
                int(e["args"]["index"]),
                int(e["args"]["deadline"]),
                int(e["blockNumber"]),
            )
            for e in logs
        ]

    def availability_answers(
        self, batch_id: int, from_block: int = 0, to_block: int | str = "latest"
    ) -> list[AvailabilityAnswer]:
        """The entries of ``batch_id`` posted on chain by availability answers (read from the
        batch's commit block: ``from_block``)."""
        logs = self.logs("AvailabilityAnswered", from_block, to_block, {"batchId": batch_id})
        return [
            AvailabilityAnswer(
                int(e["args"]["availabilityId"]),
                int(e["args"]["batchId"]),
                int(e["args"]["index"]),
                Receipt.from_tuple(_struct(e["args"]["receipt"])),
                tuple(bytes(p) for p in e["args"]["proof"]),
                bytes(e["args"]["trace"]),
                int(e["blockNumber"]),
            )
            for e in logs
        ]

    def get_availability(self, availability_id: int) -> AvailabilityChallenge:
        """An availability challenge (raises ``UnknownAvailabilityChallenge``)."""
        batch_id, challenger, index, deadline, status, _node, sampled, deposit = self.call(
            "availabilityChallenges", availability_id
        )
        return AvailabilityChallenge(
            int(batch_id),
            challenger,
            int(index),
            int(deadline),
            AvailabilityStatus(int(status)),
            bool(sampled),
            int(deposit),
        )

    def commit_vote(self, challenge_id: int, commitment: bytes, value: int | None = None) -> TxResult:
        """Seal the bound validator's vote on an open challenge (`vote_commitment`), weighted by
        its stake, before the vote's last `reveal_window` seconds.

        Args:
            value: the vote bond sent; the contract's ``CHALLENGE_BOND`` by default.
        """
        bond = self.challenge_bond() if value is None else value
        return self.transact("commitVote", challenge_id, commitment, value=bond)

    def reveal_vote(self, challenge_id: int, fraud: bool, salt: bytes) -> TxResult:
        """Open the bound validator's sealed vote, in the vote's last `reveal_window` seconds."""
        return self.transact("revealVote", challenge_id, fraud, salt)

    def resolve(self, challenge_id: int) -> TxResult:
        """Resolve after the vote window; ``value`` is the ``ChallengeResolved`` event's args."""
        tx = self.transact("resolve", challenge_id)
        return TxResult(tx.receipt, dict(self.events(tx, "ChallengeResolved")[0]["args"]))

    def claim_vote_reward(self, challenge_id: int) -> TxResult:
        """Credit what the bound voter's vote earned (its bond back on the winning side of a verdict,
        a revealed vote without a verdict or any sealed vote on a decoy, plus its pool share on the
        winning side); ``value`` is the amount."""
        tx = self.transact("claimVoteReward", challenge_id)
        return TxResult(tx.receipt, int(self.events(tx, "VoteRewardClaimed")[0]["args"]["amount"]))

    def reveal_decoy(
        self, challenge_id: int, receipt: Receipt, request: TaskRequest, signature: bytes
    ) -> TxResult:
        """The challenged node shows that a receipt was a decoy it planted: the receipt's request
        (its EIP-712 digest must be the receipt's ``requestHash``) and that request's user's
        ``Decoy(node, requestHash)`` signature (see `Payments.hash_decoy`). Only the node may."""
        return self.transact(
            "revealDecoy", challenge_id, receipt.as_tuple(), tuple(request.message().values()), signature
        )

    def claim_refund(self, challenge_id: int, receipt: Receipt, request: TaskRequest) -> TxResult:
        """Credit a fraud verdict's refund to ``request.user``, whoever sends it: ``request`` must
        be the one whose EIP-712 digest is the challenged receipt's ``requestHash`` (the node-written
        ``user`` field plays no part). ``value`` is the amount credited."""
        tx = self.transact("claimRefund", challenge_id, receipt.as_tuple(), tuple(request.message().values()))
        return TxResult(tx.receipt, int(self.events(tx, "RefundClaimed")[0]["args"]["amount"]))

    def challenged_receipts(
        self, request_hashes: set[bytes], from_block: int = 0, to_block: int | str = "latest"
    ) -> list[tuple[int, Receipt]]:
        """(challenge id, receipt) of every challenge opened on a receipt of one of
        ``request_hashes``, read from the chain alone: the receipt is decoded from the challenge
        transaction's calldata, so a user needs nothing from the (possibly gone) node."""
        return self.receipts_challenged(self.logs("ChallengeOpened", from_block, to_block), request_hashes)

    def receipts_challenged(
        self, opened: Sequence[Any], request_hashes: set[bytes]
    ) -> list[tuple[int, Receipt]]:
        """`challenged_receipts` of ``ChallengeOpened`` logs already read."""
        out: list[tuple[int, Receipt]] = []
        for e in opened:
            if bytes(e["args"]["requestHash"]) not in request_hashes:
                continue
            tx = self.w3.eth.get_transaction(e["transactionHash"])
            _fn, params = self.contract.decode_function_input(tx["input"])
            out.append((int(e["args"]["challengeId"]), Receipt.from_tuple(_struct(params["receipt"]))))
        return out

    def withdraw(self) -> TxResult:
        """Pull the bound account's ``claimable`` balance (bonds, rewards, refunds)."""
        return self.transact("withdraw")

    # -- views ---------------------------------------------------------------------------------

    def batch(self, batch_id: int, from_block: int = 0, to_block: int | str = "latest") -> Batch:
        """A committed batch, from its ``BatchCommitted`` event (the event stays on chain after
        the batch's slot is reused), searched back from ``to_block`` in ranges the RPC accepts
        (`Binding.last_logs`). A caller that knows the commit's block names it as both bounds: one
        query (a batch committed long ago is many ranges back).

        Raises:
            LookupError: no batch with this id was committed (from ``from_block`` to ``to_block``).
            LogsUnreadable: a single block's query was refused or failed.
        """
        if from_block != to_block and not 1 <= batch_id <= self.batch_count():
            raise LookupError(f"no batch {batch_id} on chain")  # a search back to block 0 for nothing
        logs = self.last_logs("BatchCommitted", from_block, to_block, {"batchId": batch_id})
        if not logs:
            raise LookupError(f"no batch {batch_id} on chain")
        return Batch.from_event(logs[0]["args"])

    def batches_committed(self, from_block: int, to_block: int | str = "latest") -> list[Batch]:
        """Every ``BatchCommitted`` in a block range, in chain order."""
        logs = self.logs("BatchCommitted", from_block, to_block)
        return [Batch.from_event(e["args"]) for e in logs]

    def is_committed(self, batch: Batch) -> bool:
        """Whether the batch's node's slot still holds this exact header."""
        return bool(self.call("isCommitted", batch.as_tuple()))

    def batch_slot(self, node: str, slot: int) -> tuple[int, bytes]:
        """What a node's slot holds: (commit time, 0 if never used; top 216 bits of the digest)."""
        committed_at, digest = self.call("batchSlot", node, slot)
        return int(committed_at), bytes(digest)

    def free_slot(self) -> int:
        """The bound node's lowest slot that a commit can use now (one read per slot tried)."""
        assert self.account is not None, "a free slot is the bound node's"
        retention = self.batch_retention()
        now = int(self.w3.eth.get_block("latest")["timestamp"])
        slot = 0
        while True:
            committed_at, _ = self.batch_slot(self.account.address, slot)
            if committed_at == 0 or committed_at + retention <= now:
                return slot
            slot += 1

    def batch_retention(self) -> int:
        """Seconds after a commit until its slot can hold another batch."""
        return int(self.call("BATCH_RETENTION"))

    def _ref(self, batch: BatchLike) -> tuple[int, str, int, int, int, int, bytes]:
        return (batch if isinstance(batch, Batch) else self.batch(batch)).as_tuple()

    def _sealed_ref(self, batch: BatchLike) -> tuple[int, str, int, int, int, int, bytes]:
        """The batch's header, its seed block sealed first where it is mined and nobody has: a
        challenger's reward and bounties need the seed to pick it, and an unsealed seed picks
        nobody. The seal serves only the reward: whatever stops it (a header the RPC cannot
        rebuild, a seal that fails) is logged and the dispute goes on without it."""
        whole = batch if isinstance(batch, Batch) else self.batch(batch)
        try:
            self.seal_seed_block(whole)
        except ChainError as exc:
            log.warning("batch %d: seed block not sealed (%s): no reward", whole.batch_id, exc)
        return whole.as_tuple()

    def get_challenge(self, challenge_id: int) -> Challenge:
        """A challenge (raises ``UnknownChallenge``)."""
        f = list(self.call("challenges", challenge_id))
        f[4] = ChallengeStatus(f[4])
        f[6] = Pick(f[6])
        f[9] = bytes(f[9])
        return Challenge(*f)

    def get_vote(self, challenge_id: int, validator: str) -> Vote:
        """How ``validator`` voted on a challenge."""
        return Vote(*_struct(self.call("getVote", challenge_id, validator)))

    def batch_seed(self, batch: BatchLike) -> bytes:
        """The batch's sampling seed (raises ``SeedNotReady`` while the seed block's value is
        unknown: not mined, or not sealed yet: `seal_seed_block`; 32 zero bytes once it expired
        unsealed: then every validator is sampled for every entry)."""
        return bytes(self.call("batchSeed", self._ref(batch)))

    @cached_property
    def seed_beacon(self) -> SeedBeacon:
        """The SeedBeacon the seeds come from (``SEED_BEACON``), signing with this binding's account."""
        address = str(self.call("SEED_BEACON"))
        return SeedBeacon(self.w3, address, self.account, tip_ceiling=self.tip_ceiling, duty=self.duty)

    @cached_property
    def _seed_delay(self) -> int:
        return int(self.call("SEED_DELAY_BLOCKS"))  # immutable: read once

    def seed_block(self, batch: Batch) -> int:
        """The block whose beacon value makes the batch's seed: ``commitBlock + SEED_DELAY_BLOCKS``."""
        return batch.commit_block + self._seed_delay

    def header_seed(self, batch: Batch) -> bytes | None:
        """The batch's seed as the contract will have it once its seed block is sealed, computed
        from the RPC's header of that block (`SeedBeacon.value_from_header`); None while the block
        is not mined. Validators sample by it without paying for a seal; the seal is needed on
        chain only for a challenger's reward (`challenge` seals first).

        Raises:
            HeaderError: the RPC's block does not rebuild to its hash.
        """
        value = self.seed_beacon.value_from_header(self.seed_block(batch))
        return None if value is None else batch_seed(value, batch.batch_id)

    def seal_seed_block(self, batch: Batch) -> bool:
        """Seal the beacon value of the batch's seed block if nobody has (what a challenger does
        before it challenges, and a validator as soon as it cannot read an entry it was sampled
        for: a node that serves the data late must not outwait the seed); True once the value is
        on chain, False while the block is not mined (or this binding has no account to seal
        with) or once its hash is gone unsealed (then the seed expired: every entry is sampled).
        Under `Source.BLOCKHASH` the value is readable unsealed while `blockhash` reaches the
        block, and sealed too: only a seal keeps it past that. A seal that fails because another
        got there first is no failure: the value is on chain.

        Raises:
            HeaderError: the RPC's block does not rebuild to its hash.
            ContractError, TransactionFailed: the seal failed and the value is still unknown.
        """
        number = self.seed_block(batch)
        beacon = self.seed_beacon
        value, known = beacon.randomness(number)
        if known and not any(value):
            return False  # gone unsealed: the seed expired
        if not known or (beacon.source is Source.BLOCKHASH and not beacon.sealed(number)):
            if int(self.w3.eth.block_number) <= number or self.account is None:
                return known  # not mined yet, or a read-only binding (nothing to sign the seal with)
            try:
                beacon.seal(number)
            except (ContractError, TransactionFailed):
                # another seal got there first (a rival challenger's, the node's: refused at
                # estimate or mined and reverted), or the hash expired meanwhile: what counts is
                # the chain now
                value, known = beacon.randomness(number)
                if not (beacon.sealed(number) or (known and not any(value))):
                    raise
            value, known = beacon.randomness(number)
        return known and any(value)

    def is_sampled(self, batch: BatchLike, validator: str, index: int) -> bool:
        """True iff ``validator`` must check receipt ``index`` of the batch."""
        return bool(self.call("isSampled", self._ref(batch), validator, index))

    def hash_receipt(self, receipt: Receipt) -> bytes:
        """The contract's Merkle leaf of a receipt."""
        return bytes(self.call("hashReceipt", receipt.as_tuple()))

    def claimable(self, address: str) -> int:
        """Wei ``address`` can pull with `withdraw`."""
        return int(self.call("claimable", address))

    def batch_count(self) -> int:
        """Number of committed batches (= last batch id)."""
        return int(self.call("batchCount"))

    def challenge_count(self) -> int:
        """Number of challenges (= last challenge id)."""
        return int(self.call("challengeCount"))

    def challenge_count_at(self, block: int) -> int | None:
        """``challengeCount`` as of ``block`` (None where the RPC no longer holds its state: a
        pruned node): what a read of ``ChallengeOpened`` logs up to it must have found."""
        try:
            return int(self.call("challengeCount", block=block))
        except Exception:  # a pruned state, a block before the deployment
            return None

    def total_burned(self) -> int:
        """Wei burned by slashes so far."""
        return int(self.call("totalBurned"))

    def challenge_bond(self) -> int:
        """Exact wei a challenger posts."""
        return int(self.call("CHALLENGE_BOND"))

    def vote_window(self) -> int:
        """Seconds after a challenge opens during which validators vote."""
        return int(self.call("VOTE_WINDOW"))

    def reveal_window(self) -> int:
        """The last seconds of a vote, when sealed votes are revealed (commits come before)."""
        return int(self.call("REVEAL_WINDOW"))

    def reveals_at(self, challenge_id: int) -> int:
        """When a challenge's reveal phase starts (its vote deadline less `reveal_window`)."""
        return self.get_challenge(challenge_id).vote_deadline - self.reveal_window()

    def challenge_window(self) -> int:
        """Seconds after a commit during which its receipts can be challenged."""
        return int(self.call("CHALLENGE_WINDOW"))


def _struct(value: Any) -> tuple[Any, ...]:
    """A decoded Solidity struct's values in field order (web3 gives a mapping or a tuple)."""
    return tuple(value.values()) if hasattr(value, "values") else tuple(value)
