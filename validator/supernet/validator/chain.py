"""The validator's view of ``TaskManager``: events, seeds, sampling, challenges, votes, payouts.

A thin, synchronous adapter over the SDK's `supernet.sdk.chain.tasks.TaskManager` wrapper (the
service calls it from a worker thread). Reverts arrive as the SDK's typed `ContractError`; this
module adds the validator's vocabulary: decoded events in chain order and parameters. Every log
is read in block ranges the RPC accepts (`supernet.sdk.chain.logs.LogRanges`: hosted RPCs cap a
query's range), never from block 0; a batch's header is read in its commit block, which the
validator's database holds (`TaskManagerClient.commit_block_of`).

>>> tm = TaskManagerClient.connect(rpc_url, dep, account)              # doctest: +SKIP
>>> tm.params().sample_rate_ppm                                        # doctest: +SKIP
1000000
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from eth_account.signers.local import LocalAccount
from supernet.sdk.chain.bindings import DAEMON_MAX_PRIORITY_FEE, reverts_as
from supernet.sdk.chain.contracts import Contracts
from supernet.sdk.chain.deployment import Deployment
from supernet.sdk.chain.eip712 import TaskRequest
from supernet.sdk.chain.errors import ContractError
from supernet.sdk.chain.forks import Checkpoint
from supernet.sdk.chain.logs import block_logs
from supernet.sdk.chain.omission import ManifestChallenge, OmissionManager
from supernet.sdk.chain.receipts import Receipt
from supernet.sdk.chain.tasks import (
    AvailabilityAnswer,
    AvailabilityChallenge,
    AvailabilityStatus,
    Batch,
    ChallengeStatus,
    TaskManager,
    Vote,
)
from web3 import Web3
from web3.types import LogReceipt

log = logging.getLogger(__name__)

BATCH_CACHE = 4096
"""Batch headers a validator keeps in memory (a batch is checked soon after its commit)."""

EXPIRED_SEED = b""
"""`TaskManagerClient.batch_seed` of a batch whose seed expired unsealed: every entry is sampled."""


@dataclass(frozen=True)
class TaskParams:
    """The deployed TaskManager's immutables (what sampling and disputes depend on)."""

    seed_delay_blocks: int
    sample_rate_ppm: int
    challenge_window: int
    vote_window: int
    challenge_bond: int
    quorum_bps: int
    slash_amount: int
    challenger_reward_bps: int
    voter_reward_bps: int
    reveal_window: int  # the last seconds of a vote, when sealed votes are opened


@dataclass(frozen=True)
class BatchCommitted:
    """A ``BatchCommitted`` event."""

    batch_id: int
    node: str
    root: bytes
    count: int
    commit_block: int
    manifest_cid: str
    block: int
    log_index: int


@dataclass(frozen=True)
class ChallengeOpened:
    """A ``ChallengeOpened`` event."""

    challenge_id: int
    batch_id: int
    challenger: str
    node: str
    leaf: bytes
    request_hash: bytes
    vote_deadline: int
    evidence_cid: str
    block: int
    log_index: int


@dataclass(frozen=True)
class ChallengeResolved:
    """A ``ChallengeResolved`` event (the payout split)."""

    challenge_id: int
    fraud: bool
    slashed: int
    refund: int
    block: int
    log_index: int


@dataclass(frozen=True)
class VoteExtended:
    """A ``VoteExtended`` event: an availability claim on the challenged entry moved the vote's end."""

    challenge_id: int
    vote_deadline: int
    block: int
    log_index: int


ChainEvent = BatchCommitted | ChallengeOpened | ChallengeResolved | VoteExtended


@dataclass(frozen=True)
class ChallengeView:
    """The on-chain state of one challenge (``TaskManager.challenges``)."""

    challenge_id: int
    batch_id: int
    challenger: str
    vote_deadline: int
    status: ChallengeStatus
    node: str
    leaf: bytes
    fraud_stake: int = 0
    honest_stake: int = 0
    quorum_base: int = 0  # the validators' total stake when the challenge opened

    def cleared(self, quorum_bps: int) -> bool:
        """Whether the validators cleared the receipt: resolved "not fraud" with a quorum of "not
        fraud" stake by itself, at least the fraud side's (`TaskManager.resolve`'s rule, the one
        that pays the node the bond), as opposed to a challenge that ended with no verdict."""
        return (
            self.status == ChallengeStatus.NOT_FRAUD
            and self.honest_stake >= self.fraud_stake
            and self.honest_stake * 10_000 >= self.quorum_base * quorum_bps
        )

    def settled(self, quorum_bps: int) -> bool:
        """Whether the clearing is final for this validator: `cleared`, by "not fraud" stake above
        half of all validator stake when the challenge opened. A quorum alone (30 %) is not
        enough: a node's friends holding it could clear a fault while the honest majority could
        not judge it (its data withheld during the vote), and the fault would then be immune to
        the honest majority's challenge once the data is served."""
        return self.cleared(quorum_bps) and self.honest_stake * 2 > self.quorum_base

    def vote_pays(self, vote: Vote, voter: str, quorum_bps: int) -> bool:
        """Whether `TaskManager.claimVoteReward` pays ``voter`` for ``vote`` now (where it would
        revert ``NotWinningVoter`` it is not sent): on a decoy, any sealed vote but the
        challenger's (its bond back); else a revealed vote on the side of a verdict (fraud, or
        `cleared`), or, without a verdict, a revealed vote but the challenger's (its bond back).
        A vote never revealed, or on the losing side of a verdict, lost its bond. (A revealed vote
        may weigh 0: the contract counts only the stake still staked when it is opened.)"""
        if (vote.weight == 0 and not vote.revealed) or vote.reward_claimed:
            return False
        bonded = voter.lower() != self.challenger.lower()  # the challenger's vote is its challenge
        if self.status == ChallengeStatus.DECOY:
            return bonded
        if not vote.revealed:
            return False
        if self.status == ChallengeStatus.FRAUD:
            return vote.fraud
        if self.status == ChallengeStatus.NOT_FRAUD:
            return not vote.fraud if self.cleared(quorum_bps) else bonded
        return False


class TaskManagerClient:
    """Read and write the TaskManager as one validator account.

    Args:
        w3: a connected client.
        address: the TaskManager's address.
        account: the validator's key (None: read-only).
        omission_address: the OmissionManager's (manifest challenges); None: none are read.
    """

    def __init__(
        self,
        w3: Web3,
        address: str,
        account: LocalAccount | None = None,
        omission_address: str | None = None,
    ) -> None:
        self.w3 = w3
        self.binding = TaskManager(w3, address, account)
        self.omission = None if omission_address is None else OmissionManager(w3, omission_address, account)
        self.account = account
        # Batch headers (what the contract takes back) by id, from the events this client read;
        # the most recent BATCH_CACHE of them (an older one is looked up by its event again).
        self._batches: OrderedDict[int, Batch] = OrderedDict()
        self.commit_block_of: Callable[[int], int | None] | None = None
        """Where a batch's ``BatchCommitted`` event is (its ``commitBlock``, as the validator's
        database recorded it; None: not recorded): a header not cached is read there in one
        single-block query (`batch`). Set by whoever holds the database (the service)."""
        self.deploy_block = 0
        """The deployment's first block: where a search for a header goes back to at most."""

    @classmethod
    def connect(
        cls,
        rpc: str | Web3,
        deployment: Deployment,
        account: LocalAccount,
        *,
        tip_ceiling: int = DAEMON_MAX_PRIORITY_FEE,
    ) -> TaskManagerClient:
        """The validator's client, connected as every client is (`Contracts.connect`): the RPC's
        chain id compared with the deployment's and pinned (every claim and vote is signed for
        it, whatever the RPC answers later), every contract's code checked, the answer floor the
        deployment file's; its transactions are duties within ``tip_ceiling`` (the validator's
        ``[chain] max_priority_fee_gwei``), a refused one logged as an error.

        Raises:
            DeploymentError: the RPC is on another chain, or a contract has no code.
        """
        return cls.of(Contracts.connect(rpc, deployment, account, tip_ceiling=tip_ceiling, duty=True))

    @classmethod
    def of(cls, contracts: Contracts) -> TaskManagerClient:
        """The client on ``contracts``' TaskManager and OmissionManager bindings (their account,
        tip ceiling and pinned answer floor)."""
        tm, om = contracts.task_manager, contracts.omission_manager
        client = cls(contracts.w3, tm.address, contracts.account, omission_address=om.address)
        client.binding, client.omission = tm, om
        client.deploy_block = contracts.deployment.deploy_block
        return client

    @property
    def address(self) -> str:
        """The TaskManager's address."""
        return self.binding.address

    @cached_property
    def _params(self) -> TaskParams:
        c = self.binding
        return TaskParams(
            *(
                int(c.call(n))
                for n in (
                    "SEED_DELAY_BLOCKS",
                    "SAMPLE_RATE_PPM",
                    "CHALLENGE_WINDOW",
                    "VOTE_WINDOW",
                    "CHALLENGE_BOND",
                    "QUORUM_BPS",
                    "SLASH_AMOUNT",
                    "CHALLENGER_REWARD_BPS",
                    "VOTER_REWARD_BPS",
                    "REVEAL_WINDOW",
                )
            )
        )

    def params(self) -> TaskParams:
        """The deployed parameters (read once)."""
        return self._params

    # -- chain state -----------------------------------------------------------------------------

    def head(self) -> int:
        """The latest block number."""
        return int(self.w3.eth.block_number)

    def counts_at(self, block: int) -> tuple[int, int] | None:
        """(batches, challenges) ever opened as of ``block`` (``batchCount``, ``challengeCount`` read
        at it); None where the RPC no longer holds that block's state (a pruned node, far behind
        the head): what a read of logs up to it must have found (`Follower`)."""
        if block < self.deploy_block:  # before the contracts: nothing opened yet
            return 0, 0
        try:
            batches = int(self.binding.call("batchCount", block=block))
            challenges = int(self.binding.call("challengeCount", block=block))
        except Exception as exc:  # a pruned state ("missing trie node"), a block before the deployment
            log.debug("counts at block %d not read: %s", block, exc)
            return None
        return batches, challenges

    def timestamp(self) -> int:
        """The latest block's timestamp."""
        return int(self.w3.eth.get_block("latest")["timestamp"])

    def events(self, from_block: int, to_block: int) -> list[ChainEvent]:
        """Batch and challenge events (vote extensions included) in ``[from_block, to_block]``, in
        chain order, read in ranges the RPC accepts (`LogRanges.read`; `Follower` scans for
        partial progress).

        Raises:
            LogsUnreadable: a single block's logs could not be read.
        """
        address = self.binding.address

        def one_block(block: int) -> Sequence[LogReceipt]:  # refused alone: read from its receipts
            return block_logs(self.w3, block, [address], self._decoders)

        return self._decode(self.binding.log_ranges.read(self._logs, from_block, to_block, one_block))

    @cached_property
    def _decoders(self) -> dict[bytes, Any]:
        """The followed events' decoders by topic: only these are asked for (a query for every
        TaskManager log counted the ``SlotsReserved`` anyone may emit for 4,800 gas toward a
        provider's cap of logs per answer: tests/unit/test_review_session_changes25.py)."""
        events = self.binding.contract.events
        return {
            bytes.fromhex(str(e.topic).removeprefix("0x")): e
            for e in (
                events.BatchCommitted(),
                events.ChallengeOpened(),
                events.ChallengeResolved(),
                events.VoteExtended(),
            )
        }

    def _logs(self, first: int, last: int) -> Sequence[LogReceipt]:
        """The followed TaskManager logs of blocks ``first`` to ``last``: one ``eth_getLogs``."""
        address = Web3.to_checksum_address(self.binding.address)
        topics = [["0x" + t.hex() for t in self._decoders]]
        return self.w3.eth.get_logs(
            {"address": address, "fromBlock": first, "toBlock": last, "topics": topics}
        )

    def _decode(self, logs: Sequence[LogReceipt]) -> list[ChainEvent]:
        """The followed events among ``logs`` (the headers of batches remembered), in chain order."""
        decoders = self._decoders
        out: list[ChainEvent] = []
        for entry in logs:
            decoder = decoders.get(bytes(entry["topics"][0])) if entry["topics"] else None
            if decoder is None:
                continue
            ev = decoder.process_log(entry)
            a, blk, idx = ev["args"], int(ev["blockNumber"]), int(ev["logIndex"])
            if ev["event"] == "BatchCommitted":
                self._remember(Batch.from_event(a))
                out.append(
                    BatchCommitted(
                        int(a["batchId"]),
                        a["node"],
                        bytes(a["root"]),
                        int(a["count"]),
                        int(a["commitBlock"]),
                        a["manifestCid"],
                        blk,
                        idx,
                    )
                )
            elif ev["event"] == "ChallengeOpened":
                out.append(
                    ChallengeOpened(
                        int(a["challengeId"]),
                        int(a["batchId"]),
                        a["challenger"],
                        a["node"],
                        bytes(a["leaf"]),
                        bytes(a["requestHash"]),
                        int(a["voteDeadline"]),
                        a["evidenceCid"],
                        blk,
                        idx,
                    )
                )
            elif ev["event"] == "VoteExtended":
                out.append(VoteExtended(int(a["challengeId"]), int(a["voteDeadline"]), blk, idx))
            else:
                out.append(
                    ChallengeResolved(
                        int(a["challengeId"]), bool(a["fraud"]), int(a["slashed"]), int(a["refund"]), blk, idx
                    )
                )
        out.sort(key=lambda e: (e.block, e.log_index))
        return out

    def batch_seed(self, batch_id: int) -> bytes | None:
        """The batch's sampling seed, or None while its seed block is not mined yet, or
        `EXPIRED_SEED` once its block hash is gone and nobody sealed it (then every validator
        checks every entry: ``TaskManager.isSampled``). A mined seed block nobody sealed yet gives
        the seed it will give once sealed, computed from its header (`TaskManager.header_seed`):
        sampling costs no transaction; a challenge seals the block first (its reward needs it).

        Raises:
            ContractError: ``UnknownBatch``.
            HeaderError: the RPC's seed block does not rebuild to its hash.
        """
        batch = self.batch(batch_id)
        try:
            seed = bytes(self.binding.call("batchSeed", batch.as_tuple()))
        except ContractError as exc:
            if exc.error_name != "SeedNotReady":
                raise
            return self.binding.header_seed(batch)
        return EXPIRED_SEED if seed == bytes(32) else seed  # the contract's zero: expired unsealed

    def seal_seed(self, batch_id: int) -> bool:
        """Seal the batch's seed block if nobody has (`TaskManager.seal_seed_block`): what keeps
        this validator's pick, and the reward or bounty it earns, past the seed's horizon."""
        return self.binding.seal_seed_block(self.batch(batch_id))

    def is_sampled(self, batch_id: int, validator: str, index: int) -> bool:
        """The contract's own sampling decision (the cross-check of `supernet.validator.sampler`)."""
        ref = self.batch(batch_id).as_tuple()
        return bool(self.binding.call("isSampled", ref, Web3.to_checksum_address(validator), index))

    def batch(self, batch_id: int) -> Batch:
        """A batch's header (from the events already read, else looked up by its event: `_look_up`).

        Raises:
            LookupError: no batch with this id was committed.
            LogsUnreadable: the RPC refused or failed the query of a single block.
        """
        batch = self._batches.get(batch_id)
        if batch is None:
            batch = self._look_up(batch_id)
            self._remember(batch)
        return batch

    def _look_up(self, batch_id: int) -> Batch:
        """A header not cached (this process restarted, or newer commits pushed it out of the cache:
        a node can flood commits to do that): read in its commit block, as the database recorded
        it, in one single-block query that no RPC's range cap refuses; else searched back from the
        head in ranges the RPC accepts (`TaskManager.batch`)."""
        block = None if self.commit_block_of is None else self.commit_block_of(batch_id)
        if block is not None:
            try:
                return self.binding.batch(batch_id, block, block)
            except LookupError:  # moved by a reorg the follower has not undone yet
                log.warning("batch %d: no commit in block %d, as recorded: searching back", batch_id, block)
        return self.binding.batch(batch_id, self.deploy_block)

    def _remember(self, batch: Batch) -> None:
        self._batches[batch.batch_id] = batch
        while len(self._batches) > BATCH_CACHE:
            self._batches.popitem(last=False)

    def forget_batches(self, batch_ids: Iterable[int]) -> None:
        """Drop the cached headers of batches a reorg undid (`Follower.step`): one re-included
        has another ``commitBlock``, and its id may now hold another node's batch."""
        for batch_id in batch_ids:
            self._batches.pop(batch_id, None)

    def leaf_challenge(self, batch_id: int, leaf: bytes) -> int:
        """The latest challenge id on this leaf of the batch (0: none)."""
        key = Web3.keccak(self.w3.codec.encode(["uint256", "bytes32"], [batch_id, leaf]))
        return int(self.binding.call("leafChallenge", key))

    def challenge(self, challenge_id: int, block: int | None = None) -> ChallengeView:
        """The on-chain state of a challenge (at ``block``; None: the latest).

        Raises:
            ContractError: ``UnknownChallenge`` (none has this id: never opened, or orphaned).
        """
        if block is None:
            c = self.binding.call("challenges", challenge_id)
        else:
            with reverts_as(self.binding.name):
                c = self.binding.contract.functions.challenges(challenge_id).call(block_identifier=block)
        return ChallengeView(
            challenge_id,
            int(c[0]),
            c[1],
            int(c[3]),
            ChallengeStatus(int(c[4])),
            c[5],
            bytes(c[9]),
            fraud_stake=int(c[10]),
            honest_stake=int(c[11]),
            quorum_base=int(c[15]),
        )

    def committed_vote(self, challenge_id: int, voter: str, from_block: int = 0) -> bytes | None:
        """The sealed vote ``voter`` committed on a challenge, as its ``commitVote`` transaction sent
        it (the contract keeps commitments private; its ``VoteCommitted`` event names the
        transaction), looked for from ``from_block``. None: no commit found, or one sent through
        another contract (its input is not a ``commitVote`` call)."""
        voter = Web3.to_checksum_address(voter)
        logs = self.binding.logs(
            "VoteCommitted", from_block, "latest", {"challengeId": challenge_id, "validator": voter}
        )
        for event in reversed(logs):  # a commit is sent once: the last one is it
            tx = self.w3.eth.get_transaction(event["transactionHash"])
            if str(tx.get("to") or "").lower() != self.binding.address.lower():
                continue
            try:
                fn, args = self.binding.contract.decode_function_input(tx["input"])
            except ValueError:
                continue
            if fn.fn_name == "commitVote" and int(args["challengeId"]) == challenge_id:
                return bytes(args["commitment"])
        return None

    def has_voted(self, challenge_id: int, validator: str) -> bool:
        """Whether ``validator`` voted (or opened) this challenge."""
        return int(self.binding.call("getVote", challenge_id, Web3.to_checksum_address(validator))[0]) != 0

    def balance(self) -> int:
        """Wei in this validator's wallet (what bonds and gas are paid from); 0 without an account."""
        return 0 if self.account is None else int(self.w3.eth.get_balance(self.account.address))

    def claimable(self, account: str) -> int:
        """Wei ``account`` can withdraw from the TaskManager (`withdraw`)."""
        return int(self.binding.call("claimable", Web3.to_checksum_address(account)))

    def omission_claimable(self, account: str) -> int:
        """Wei ``account`` can withdraw from the OmissionManager (`withdraw_omission`: what its
        manifest claims earned, a refund, a deposit back, a reward); 0 without one."""
        if self.omission is None:
            return 0
        return self.omission.claimable(Web3.to_checksum_address(account))

    # -- transactions ----------------------------------------------------------------------------

    def open_challenge(
        self, batch_id: int, index: int, receipt: Receipt, proof: Sequence[bytes], evidence_cid: str
    ) -> int:
        """Post a bonded challenge on entry ``index``; returns the new challenge id."""
        return int(
            self.binding.challenge(
                self.batch(batch_id), index, receipt, proof, evidence_cid, bond=self.params().challenge_bond
            ).value
        )

    def challenge_availability(self, batch_id: int, index: int) -> int:
        """Claim entry ``index`` of a batch unavailable (the bond plus the costliest answer at the
        fee cap, `Binding.claim`); returns the availability id."""
        return int(self.binding.challenge_availability(self.batch(batch_id), index).value)

    def availability(self, availability_id: int) -> AvailabilityChallenge:
        """The on-chain state of an availability challenge.

        Raises:
            ContractError: ``UnknownAvailabilityChallenge`` (never opened, or orphaned).
        """
        return self.binding.get_availability(availability_id)

    def _entry(self, batch_id: int, index: int) -> bytes:
        """The contract's key of entry ``index`` of a batch: ``keccak256(abi.encode(batchId, index))``."""
        return bytes(Web3.keccak(self.w3.codec.encode(["uint256", "uint256"], [batch_id, index])))

    def entry_availability(self, batch_id: int, index: int) -> int:
        """The latest availability challenge of entry ``index`` of a batch (0: none)."""
        return int(self.binding.call("entryAvailability", self._entry(batch_id, index)))

    def answered_at(self, batch_id: int, index: int) -> int:
        """When entry ``index`` of a batch was posted on chain by an availability answer (0: never):
        its fraud window runs a full ``CHALLENGE_WINDOW`` from then."""
        return int(self.binding.call("answeredAt", self._entry(batch_id, index)))

    def reopened_at(self, batch_id: int, index: int) -> int:
        """When the first fraud challenge of entry ``index`` of a batch that closed without a fraud
        verdict ended its vote (0: none): the entry's fraud window runs a full ``CHALLENGE_WINDOW``
        from then, once (`TaskManager.reopenedAt`)."""
        return int(self.binding.call("reopenedAt", self._entry(batch_id, index)))

    def entry_refused(self, batch_id: int, index: int) -> bool:
        """Whether an availability challenge on entry ``index`` of a batch went unanswered."""
        aid = self.entry_availability(batch_id, index)
        return bool(aid) and self.availability(aid).status == AvailabilityStatus.UNANSWERED

    def refusals(self, from_block: int, to_block: int) -> list[tuple[str, int, int]]:
        """``(node, batch, index)`` of the data nodes were slashed for never showing when claimed
        in the block range (an availability or manifest challenge resolved unanswered; ``index``
        -1 for a whole manifest), read in ranges the RPC accepts (`ManifestWatch` scans for
        partial progress).

        Raises:
            LogsUnreadable: a single block's logs could not be read.
        """
        logs = self.binding.logs("AvailabilityResolved", from_block, to_block)
        out = []
        for e in logs:
            claim = self.availability(int(e["args"]["availabilityId"]))
            out.append((self.batch(claim.batch_id).node, claim.batch_id, claim.index))
        if self.omission is not None:
            for e in self.omission.logs("ManifestResolved", from_block, to_block):
                _, _, _, node, batch_id, _ = self.omission.call(
                    "manifestChallenges", int(e["args"]["manifestId"])
                )
                out.append((node, int(batch_id), -1))
        return out

    def resolve_availability(self, availability_id: int) -> int:
        """Slash the node of an unanswered availability challenge; returns the wei slashed."""
        return int(self.binding.resolve_availability(availability_id).value["slashed"])

    def availability_answers(self, batch_id: int, from_block: int) -> list[AvailabilityAnswer]:
        """Entries of ``batch_id`` posted on chain (availability answers) since ``from_block``."""
        return self.binding.availability_answers(batch_id, from_block)

    def batch_manifest(self, batch_id: int) -> ManifestChallenge | None:
        """The manifest challenge of a batch (None: never challenged, or no OmissionManager)."""
        return None if self.omission is None else self.omission.batch_manifest(batch_id)

    def manifest_receipts(self, batch_id: int) -> list[Receipt] | None:
        """A batch's receipts as a manifest answer posted them (None: not answered)."""
        if self.omission is None:
            return None
        return self.omission.manifest_receipts(batch_id, self.batch(batch_id).commit_block)

    def challenge_manifest(self, batch_id: int) -> int:
        """Claim a batch's manifest cannot be fetched (bonded); returns the manifest challenge id."""
        assert self.omission is not None, "no OmissionManager configured"
        return int(self.omission.challenge_manifest(self.batch(batch_id)).value)

    def resolve_manifest(self, manifest_id: int) -> int:
        """Slash the node of an unanswered manifest challenge; returns the wei slashed."""
        assert self.omission is not None, "no OmissionManager configured"
        return int(self.omission.resolve_manifest(manifest_id).value["slashed"])

    def commit_vote(self, challenge_id: int, commitment: bytes) -> None:
        """Seal this validator's vote on an open challenge (`vote_commitment`), with the vote bond."""
        self.binding.commit_vote(challenge_id, commitment, value=self.params().challenge_bond)

    def reveal_vote(self, challenge_id: int, fraud: bool, salt: bytes) -> None:
        """Open this validator's sealed vote (in the vote's last REVEAL_WINDOW seconds)."""
        self.binding.reveal_vote(challenge_id, fraud, salt)

    def resolve(self, challenge_id: int) -> bool:
        """Resolve a challenge after its vote window; returns the verdict (fraud or not)."""
        return bool(self.binding.resolve(challenge_id).value["fraud"])

    def claim_vote_reward(self, challenge_id: int) -> int:
        """Credit what this validator's vote on a resolved challenge earned (its bond back, with its
        share of the voter pool on the winning side of a verdict); returns the wei."""
        return int(self.binding.claim_vote_reward(challenge_id).value)

    def claim_refund(self, challenge_id: int, receipt: Receipt, request: TaskRequest) -> int:
        """Credit a fraud verdict's refund to ``request.user`` (anyone may send it); returns the wei."""
        return int(self.binding.claim_refund(challenge_id, receipt, request).value)

    def withdraw(self) -> None:
        """Pull everything claimable from the TaskManager (bonds back, rewards)."""
        self.binding.withdraw()

    def withdraw_omission(self) -> None:
        """Pull everything claimable from the OmissionManager (manifest claims' refunds, deposits
        and rewards)."""
        assert self.omission is not None, "no OmissionManager configured"
        self.omission.withdraw()


def seen_by(chain: Any) -> Checkpoint | None:
    """The chain's head now, as a checkpoint: a block that a transaction just sent or a state just
    read is in or below (what `Database.set_challenge_status` and `Database.update_missing` keep,
    so that a reorg past it is found and what was done there is done again). None: a chain
    without blocks (a stand-in), or one that shrank meanwhile."""
    w3 = getattr(chain, "w3", None)
    if w3 is None:
        return None
    try:
        return Checkpoint.of(w3, int(w3.eth.block_number))
    except LookupError:
        return None
