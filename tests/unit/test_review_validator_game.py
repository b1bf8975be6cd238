"""Review: the validator's own economics in the challenge / vote game (real Anvil, real contracts,
the real embedded store, the real `Disputes`, `Follower`, `Verifier` and `Database`).

A rational cheater does not fight the checks head on: it makes an honest validator lose its bond,
or pays nothing where it should. These tests play that game against the validator's dispute code.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from chain_fixtures import Actors, cast_votes, commit_vote
from eth_account.signers.local import LocalAccount
from supernet.sdk.chain import Contracts, ReceiptTree
from supernet.sdk.chain.anvil import advance_to, increase_time, mine
from supernet.sdk.chain.eip712 import TaskRequest, hash_task_request, sign_task_request
from supernet.sdk.chain.errors import ContractError
from supernet.sdk.chain.receipts import Receipt, input_hash, output_hash, sign_receipt, trace_hash
from supernet.sdk.formats.manifest import BatchManifest, ManifestEntry
from supernet.sdk.store import BlockNotFoundError, StoreClient
from supernet.sdk.store.cids import compute_cid, encode_dag
from supernet.sdk.store.embedded import serve_in_thread
from supernet.validator.availability import Availability
from supernet.validator.chain import ChallengeStatus, TaskManagerClient
from supernet.validator.challenger import Disputes
from supernet.validator.db import BatchRow, CheckRow, Database
from supernet.validator.evidence import Check, Finding, Verdict
from supernet.validator.follower import Follower
from supernet.validator.tool_check import RegistryRunner
from supernet.validator.verifier import Verifier

pytestmark = pytest.mark.asyncio(loop_scope="session")

ETHER = 10**18


@dataclass
class Party:
    """One validator's real dispute stack: chain client, database, follower, verifier, disputes."""

    account: LocalAccount
    client: TaskManagerClient
    db: Database
    follower: Follower
    disputes: Disputes


@dataclass
class Game:
    chain: Contracts
    actors: Actors
    tmp: Path
    stores: dict[str, StoreClient]

    def party(self, account: LocalAccount, store: StoreClient, name: str) -> Party:
        dep = self.chain.deployment
        client = TaskManagerClient(
            self.chain.w3,
            dep.address("TaskManager"),
            account,
            omission_address=dep.address("OmissionManager"),
        )
        db = Database(self.tmp / f"{name}.sqlite")
        follower = Follower(client, db, dep.deploy_block)
        verifier = Verifier(store, None, RegistryRunner(store), self.chain.domain, account.address)
        disputes = Disputes(client, db, verifier, store, account.address)
        return Party(account, client, db, follower, disputes)


@pytest_asyncio.fixture(loop_scope="session")
async def game(network: Contracts, actors: Actors, tmp_path: Path) -> AsyncIterator[Game]:
    """``network`` plus two content stores: ``full`` (what the node serves to the validator it
    wants to bait) and ``partial`` (what the rest of the validators can read)."""
    stops, stores = [], {}
    for name in ("full", "partial"):
        url, stop = serve_in_thread(tmp_path / f"store-{name}")
        stops.append(stop)
        stores[name] = StoreClient(url)
    try:
        yield Game(network, actors, tmp_path, stores)
    finally:
        for s in stores.values():
            await s.aclose()
        for stop in stops:
            stop()


async def _commit(g: Game) -> tuple[int, list[Receipt], str]:
    """The node commits a batch of two well-signed receipts; the manifest is served on both
    stores, the trace of entry 0 only on ``full``. Returns (batch id, receipts, trace CID)."""
    node, users, c = g.actors.node, g.actors.users, g.chain
    trace_block = encode_dag({"kind": "a trace only the baited validator is shown", "n": 1})
    entries, receipts = [], []
    for i in range(2):
        user = users[i % len(users)]
        block = trace_block if i == 0 else encode_dag({"kind": "another trace", "n": i})
        tcid = compute_cid(block, "dag-cbor")
        await g.stores["full"].put_block(block, "dag-cbor")
        req = TaskRequest(
            user=user.address,
            node=node.address,
            model_id=bytes(32),
            agent_hash=bytes(32),
            input_hash=input_hash(f"q{i}"),
            max_fee=10**14,  # = the receipt's fee: a node charges the signed maxFee
            nonce=1_000 + i,
            deadline=2**40,
        )
        receipt = Receipt(
            request_hash=hash_task_request(req, c.domain),
            user=user.address,
            model_id=bytes(32),
            input_hash=req.input_hash,
            output_hash=output_hash(f"a{i}"),
            trace_hash=trace_hash(tcid),
            fee=10**14,
        )
        receipts.append(receipt)
        entries.append(
            ManifestEntry(
                receipt=receipt,
                leaf=receipt.leaf(),
                signature=sign_receipt(receipt, node),
                trace_cid=tcid,
                agent="probe",
                request=req,
                request_signature=sign_task_request(req, c.domain, user),
            )
        )
    manifest = BatchManifest.seal(node.address, entries)
    for store in g.stores.values():
        cid = await store.put_dag(manifest.to_dag(), pin=True)
    tree = ReceiptTree(receipts)
    tm = c.as_account(node).task_manager
    batch_id = tm.commit_batch(tree.root, len(receipts), cid).value.batch_id
    mine(c.w3, 2)
    return batch_id, receipts, compute_cid(trace_block, "dag-cbor")


def _faulty(batch_id: int, index: int, leaf: bytes, who: str) -> Verdict:
    """What a validator's own check concluded: the receipt is faulty."""
    return Verdict(
        batch_id, index, leaf, findings=(Finding(Check.TRACE, "output is not the trace's"),), validator=who
    )


def _open(p: Party, batch_id: int, receipts: list[Receipt], index: int = 0) -> int:
    proof = ReceiptTree(receipts).proof_at(index)
    return p.client.open_challenge(batch_id, index, receipts[index], proof, "bafy-evidence")


async def _challenged(g: Game) -> tuple[int, list[Receipt], Party, int, Party]:
    """The node's batch (`_commit`), validator 0's challenge on entry 0, and validator 1 reading
    the full store, caught up with the chain. Returns (batch id, receipts, challenger, challenge
    id, voter)."""
    batch_id, receipts, _ = await _commit(g)
    challenger = g.party(g.actors.validators[0], g.stores["full"], "c")
    cid = _open(challenger, batch_id, receipts)
    voter = g.party(g.actors.validators[1], g.stores["full"], "v1")
    voter.follower.catch_up()
    return batch_id, receipts, challenger, cid, voter


def _past_vote_window(c: Contracts) -> None:
    increase_time(c.w3, 31)
    mine(c.w3, 1)


async def test_defence_a_trace_withheld_from_voters_ends_in_an_availability_slash(game: Game) -> None:
    """Attack: the node serves entry 0's trace to the validator that sampled it (which finds the
    fault and challenges, bond posted) and to nobody else. The other validators, who are not
    sampled for that receipt, can read the manifest but not the trace when they come to vote:
    `Disputes._vote_one` gets a `missing` verdict, looks for an availability answer on chain,
    finds none and abstains, and it opens no availability challenge although the batch's
    challenge window is still open (`challengeAvailability` would force the trace on chain).
    With the challenger below QUORUM_BPS by itself the challenge ends with no verdict.

    Who profits: the cheating node (never slashed for a real fault). Who pays: the honest
    challenger, whose CHALLENGE_BOND burns. Repeated, it teaches validators to stop challenging.

    Defence: a voter that cannot read a challenged entry's data hands it to the availability path
    (`Disputes.on_missing` = `Availability.note`): retried, then `challengeAvailability`, so the
    node posts the trace on chain for everyone (then every voter checks it; an entry answered
    late gets a fresh fraud window, and a challenge that ended with no verdict may be re-opened)
    or is slashed. And the contract (`TaskManager._extendVote`, `VoteExtended`) keeps the fraud
    vote open until a vote window after the answer is due, so voters judge a posted trace in time;
    left unanswered, the challenger's bond is refunded instead of burned (contracts/test/Review5.t.sol
    pins both on the contract alone). Withholding from voters no longer saves the node nor costs
    the honest challenger.
    """
    g = game
    c, a = g.chain, g.actors
    # one more (passive) validator: the challenger alone is now under the 30 % quorum, while the
    # challenger and the two other validators together would be far above it
    c.as_account(a.outsider).service_manager.register_validator(8 * ETHER)
    increase_time(c.w3, 1)
    batch_id, receipts, trace = await _commit(g)
    with pytest.raises(BlockNotFoundError):
        await g.stores["partial"].get_block(trace)  # the voters' view: no trace

    challenger = g.party(a.validators[0], g.stores["full"], "challenger")
    challenge_id = _open(challenger, batch_id, receipts)
    burned_before = int(c.task_manager.call("totalBurned"))

    voters = [g.party(v, g.stores["partial"], f"voter{i}") for i, v in enumerate(a.validators[1:])]
    settled: list[int] = []

    async def settle(batch: BatchRow, index: int, verdict: Verdict) -> None:
        settled.append(index)

    for v in voters:
        v.disputes.on_missing = Availability(
            v.client, v.db, v.disputes, v.disputes.verifier, settle, retries=1, backoff_s=0.01
        ).note
        v.follower.catch_up()
        await v.disputes.vote_open(v.client.timestamp())
        assert not v.client.has_voted(challenge_id, v.account.address), "the voter cannot check: no vote"
        assert [(r.batch_id, r.index) for r in v.db.missing("retrying")] == [(batch_id, 0)]
    # the first voter's availability path: one retry, then the bonded availability challenge
    first_voter = voters[0]
    availability = Availability(
        first_voter.client, first_voter.db, first_voter.disputes, first_voter.disputes.verifier, settle,
        retries=1, backoff_s=0.01,
    )  # fmt: skip
    await asyncio.sleep(0.02)
    await availability.step(first_voter.client.timestamp())
    aid = first_voter.client.entry_availability(batch_id, 0)
    assert aid != 0, "the voter forced the question: serve the trace on chain, or be slashed"
    params = challenger.client.params()
    total = 14 * ETHER
    assert 2 * ETHER * 10_000 < total * params.quorum_bps, "the challenger alone is no quorum"
    assert 6 * ETHER * 10_000 >= total * params.quorum_bps, "with the two voters it would be"

    # the vote now waits for the answer: the voters' databases follow the extension
    extended = challenger.client.challenge(challenge_id).vote_deadline
    for v in voters:
        v.follower.catch_up()
        [row] = [r for r in v.db.challenges("open") if r.challenge_id == challenge_id]
        assert row.vote_deadline == extended
    _past_vote_window(c)  # the original vote window is over: the vote is not
    with pytest.raises(ContractError, match="VoteWindowOpen"):
        challenger.client.resolve(challenge_id)
    # the node never posts the trace: slashed when the answer window ends
    slashes_before = c.service_manager.get_node(a.node.address).slash_count
    _past_vote_window(c)
    await availability.step(first_voter.client.timestamp())
    assert [r.status for r in first_voter.db.missing("slashed")] == ["slashed"]
    assert c.service_manager.get_node(a.node.address).slash_count == slashes_before + 1
    assert settled == []  # nothing judged on data nobody could read
    # the fraud vote ends with no verdict, and the honest challenger's bond comes back
    increase_time(c.w3, max(0, extended - challenger.client.timestamp()) + 1)
    mine(c.w3, 1)
    burned_before = int(c.task_manager.call("totalBurned"))  # the slash's burned share is in already
    assert challenger.client.resolve(challenge_id) is False
    assert challenger.client.challenge(challenge_id).status == ChallengeStatus.NOT_FRAUD
    assert challenger.client.claimable(a.validators[0].address) == params.challenge_bond
    assert int(c.task_manager.call("totalBurned")) == burned_before, "the bond is not burned"
    assert challenger.client.claimable(a.node.address) == 0


async def test_defence_a_leaf_cleared_by_a_quorum_is_not_challenged_again(
    game: Game,
) -> None:
    """Attack (votes split by design): a node commits a receipt that a minority of validators
    flags and the majority does not (a tool whose result depends on the validator's setup, a
    near-tie at a tolerance edge). One flagging validator challenges; the majority votes it "not
    fraud" and the node is paid the bond. Another validator that flags the same leaf then runs
    `Disputes.challenge`: it sees the prior challenge is NOT_FRAUD and opens a new one (the code
    treats "cleared by a quorum" the same as "no verdict"), and the same majority clears it
    again: a second bond to the node. Every minority validator pays the node once per leaf.

    Who profits: the node (CHALLENGE_BOND less the voter pool per re-challenge). Who pays: the
    validators whose check disagrees with the majority, each of which re-litigates a settled
    question instead of recording the verdict the chain already reached.

    Defence: `Disputes.challenge` does not re-open a challenge a majority of the validators'
    stake cleared (`ChallengeView.settled`: `TaskManager.resolve`'s clearing rule, by more than half
    of the stake; a minority at the quorum could be a cartel voting while the honest majority could
    not judge, test_review_session_fixes.py): it is recorded as the check's challenge and nothing
    is sent. Control: a challenge that ended with
    no verdict (below the quorum) is re-opened.
    """
    g = game
    c, a = g.chain, g.actors
    # the two voters then hold 4 of 7 ETH: a majority of the stake, not only the quorum
    c.as_account(a.outsider).service_manager.register_validator(1 * ETHER)
    increase_time(c.w3, 1)
    batch_id, receipts, _ = await _commit(g)
    first = g.party(a.validators[0], g.stores["full"], "first")
    cid1 = _open(first, batch_id, receipts)
    cast_votes(c, cid1, [(v, False) for v in a.validators[1:]])
    _past_vote_window(c)
    assert first.client.resolve(cid1) is False
    bond = first.client.params().challenge_bond
    pool = bond * first.client.params().voter_reward_bps // 10_000
    assert first.client.claimable(a.node.address) == bond - pool, "cleared by a quorum: node paid"

    second = g.party(a.outsider, g.stores["full"], "second")
    second.follower.catch_up()
    batch = second.db.batch(batch_id)
    assert batch is not None
    verdict = _faulty(batch_id, 0, receipts[0].leaf(), a.outsider.address)
    second.db.record_check(CheckRow(batch_id, 0, False, "trace", "e", None))  # its own verdict, stored
    assert second.client.challenge(cid1).settled(second.client.params().quorum_bps)
    assert await second.disputes.challenge(batch, verdict, "e") is None
    assert first.client.leaf_challenge(batch_id, receipts[0].leaf()) == cid1, "no second challenge"
    assert [r.challenge_id for r in second.db.checks(batch_id)] == [cid1]  # not retried later
    assert first.client.claimable(a.node.address) == bond - pool, "the node took one bond only"

    # control: entry 1, challenged without anyone voting, ends with no verdict and is re-opened
    cid3 = _open(first, batch_id, receipts, index=1)
    _past_vote_window(c)
    assert first.client.resolve(cid3) is False
    assert not first.client.challenge(cid3).cleared(first.client.params().quorum_bps)
    verdict1 = _faulty(batch_id, 1, receipts[1].leaf(), a.outsider.address)
    cid4 = await second.disputes.challenge(batch, verdict1, "e")
    assert cid4 is not None and cid4 != cid3


async def test_defence_a_challenge_resent_after_a_crash_posts_one_bond(game: Game) -> None:
    """Crash between the challenge transaction and the database write: on restart the validator
    sends the challenge again (`Validator._retry_challenge` -> `Disputes.challenge`). It reads
    `leafChallenge` first and adopts the open challenge: no second bond, no revert."""
    g = game
    c, a = g.chain, g.actors
    batch_id, receipts, _ = await _commit(g)
    v = g.party(a.validators[0], g.stores["full"], "v0")
    v.follower.catch_up()
    batch = v.db.batch(batch_id)
    assert batch is not None
    verdict = _faulty(batch_id, 0, receipts[0].leaf(), a.validators[0].address)
    first = await v.disputes.challenge(batch, verdict, "e1")
    again = await v.disputes.challenge(batch, verdict, "e2")  # the restart's re-send
    assert first is not None and again == first
    assert int(c.task_manager.call("challengeCount")) == 1, "one challenge, one bond"


class Crash(Exception):
    """The validator's process dies here."""


def _claimed(c: Contracts, challenge_id: int, voter: str) -> list[int]:
    """The amounts ``voter`` claimed on a challenge (``VoteRewardClaimed``)."""
    logs = c.task_manager.contract.events.VoteRewardClaimed().get_logs(from_block=0)
    return [
        int(e["args"]["amount"])
        for e in logs
        if e["args"]["challengeId"] == challenge_id and e["args"]["validator"] == voter
    ]


def skew_wall_clock(monkeypatch: pytest.MonkeyPatch, seconds: int) -> None:
    """Move the wall clock the vote client reads by ``seconds`` (the chain's stays where it is)."""
    import supernet.validator.challenger as challenger_module

    real_time = challenger_module.time.time
    wall = type("Wall", (), {"time": staticmethod(lambda: real_time() + seconds)})
    monkeypatch.setattr(challenger_module, "time", wall)


@pytest.mark.parametrize("wall_ahead_s", [0, 3600], ids=["clocks-agree", "chain-an-hour-behind"])
async def test_defence_a_sealed_vote_survives_a_crash_between_commit_and_reveal(
    game: Game, monkeypatch: pytest.MonkeyPatch, wall_ahead_s: int
) -> None:
    """A vote is sealed (commit) and opened later (reveal) from a secret salt: a validator that lost
    the salt in a crash could never reveal, and its vote bond would be lost. The voter writes its
    side, salt and evidence to its database before it sends the commit; killed right after the
    commit is mined (before recording it), the restarted validator finds its vote sealed on chain,
    does not send it again, and reveals it from the database in the reveal phase. After the fraud
    verdict it voted with, it claims its bond back with its share of the voter pool.

    Also with a chain whose clock lags the wall's by an hour (a test chain moved back; CI's shared
    Anvil late in a run): the phases are the chain's, so a validator that took the wall clock for
    the chain's thought sealing long over and never voted."""
    skew_wall_clock(monkeypatch, wall_ahead_s)
    g = game
    c, a = g.chain, g.actors
    batch_id, receipts, challenger, cid, voter = await _challenged(g)
    leaf = receipts[0].leaf()

    async def faulty(*args: object, **kwargs: object) -> Verdict:  # its own check: a fault
        return _faulty(batch_id, 0, leaf, a.validators[1].address)

    voter.disputes.verifier.verify = faulty  # type: ignore[method-assign]
    on_disk: list[tuple[bool | None, bytes | None]] = []
    send = voter.client.commit_vote

    def commit_then_crash(challenge_id: int, commitment: bytes) -> None:
        [row] = [r for r in Database(g.tmp / "v1.sqlite").challenges() if r.challenge_id == challenge_id]
        on_disk.append((row.my_vote, row.salt))  # what a restart would read, before the send
        send(challenge_id, commitment)
        raise Crash

    voter.client.commit_vote = commit_then_crash  # type: ignore[method-assign]
    with pytest.raises(Crash):
        await voter.disputes.vote_open(voter.client.timestamp())
    assert on_disk and on_disk[0][0] is True and on_disk[0][1] is not None and len(on_disk[0][1]) == 32
    assert c.task_manager.get_vote(cid, a.validators[1].address).weight != 0  # sealed on chain
    voter.db.close()

    restarted = g.party(a.validators[1], g.stores["full"], "v1")
    restarted.follower.catch_up()
    await restarted.disputes.vote_open(restarted.client.timestamp())  # commit phase still: nothing sent
    [row] = [r for r in restarted.db.challenges() if r.challenge_id == cid]
    assert (row.status, row.reveal, row.salt) == ("voted", "pending", on_disk[0][1])
    assert c.task_manager.get_challenge(cid).committed == 1, "one commit, one bond"
    assert not c.task_manager.get_vote(cid, a.validators[1].address).revealed

    advance_to(c.w3, c.task_manager.reveals_at(cid))
    await restarted.disputes.vote_open(restarted.client.timestamp())
    vote = c.task_manager.get_vote(cid, a.validators[1].address)
    assert vote.revealed and vote.fraud
    assert next(r for r in restarted.db.challenges() if r.challenge_id == cid).reveal == "done"

    _past_vote_window(c)
    challenger.follower.catch_up()
    await challenger.disputes.settle(challenger.client.timestamp() + 1)
    assert c.task_manager.get_challenge(cid).status == ChallengeStatus.FRAUD
    await restarted.disputes.settle(restarted.client.timestamp() + 1)
    await restarted.disputes.settle(restarted.client.timestamp() + 1)  # claimed once
    ch, bond = c.task_manager.get_challenge(cid), challenger.client.params().challenge_bond
    assert _claimed(c, cid, a.validators[1].address) == [
        bond + ch.reward_pool * vote.weight // ch.fraud_stake
    ]
    assert c.task_manager.get_vote(cid, a.validators[1].address).reward_claimed


async def test_defence_a_vote_sealed_by_another_program_is_not_sealed_twice(
    game: Game, caplog: pytest.LogCaptureFixture
) -> None:
    """A vote sealed with this validator's key but not by it (its database lost, or another program):
    on restart `vote_open` reads the on-chain vote first and records it without re-checking or
    sending it again (an `AlreadyVoted` revert would otherwise fail every step). Without the salt it
    cannot reveal: it says so loudly, and after the resolution it claims nothing (the contract would
    refuse: an unrevealed vote lost its bond)."""
    g = game
    c, a = g.chain, g.actors
    batch_id, receipts, _ = await _commit(g)
    challenger = g.party(a.validators[0], g.stores["full"], "c")
    cid = _open(challenger, batch_id, receipts)
    voter = g.party(a.validators[1], g.stores["partial"], "v1")
    commit_vote(c, cid, a.validators[1], True)  # sent, then the database lost
    voter.follower.catch_up()
    await voter.disputes.vote_open(voter.client.timestamp())
    row = next(r for r in voter.db.challenges() if r.challenge_id == cid)
    assert row.status == "voted" and row.reveal == "lost"
    assert "cannot be revealed" in caplog.text
    advance_to(c.w3, c.task_manager.reveals_at(cid))
    await voter.disputes.vote_open(voter.client.timestamp())  # nothing to reveal from
    assert not c.task_manager.get_vote(cid, a.validators[1].address).revealed
    _past_vote_window(c)
    await voter.disputes.settle(voter.client.timestamp() + 1)
    await voter.disputes.settle(voter.client.timestamp() + 1)  # restart
    assert _claimed(c, cid, a.validators[1].address) == []


async def test_a_check_that_ends_after_the_commit_phase_casts_no_vote(game: Game) -> None:
    """A vote can only be sealed before the vote's last REVEAL_WINDOW seconds: a voter whose check
    finishes later does not vote (nothing persisted, nothing sent, no bond at stake)."""
    g = game
    c, a = g.chain, g.actors
    batch_id, receipts, _challenger, cid, voter = await _challenged(g)
    leaf = receipts[0].leaf()

    async def slow_faulty(*args: object, **kwargs: object) -> Verdict:  # the check outlasts the phase
        advance_to(c.w3, c.task_manager.reveals_at(cid))
        return _faulty(batch_id, 0, leaf, a.validators[1].address)

    voter.disputes.verifier.verify = slow_faulty  # type: ignore[method-assign]
    await voter.disputes.vote_open(voter.client.timestamp())
    row = next(r for r in voter.db.challenges() if r.challenge_id == cid)
    assert (row.status, row.my_vote, row.salt) == ("open", None, None)
    assert c.task_manager.get_vote(cid, a.validators[1].address).weight == 0


async def test_defence_a_voter_without_ether_for_its_bond_keeps_stepping(
    game: Game, caplog: pytest.LogCaptureFixture
) -> None:
    """Attack (liveness): every vote now posts a bond of CHALLENGE_BOND, and bonds come back only
    when challenges resolve (`Disputes.settle`, at the end of a validator's step). A validator whose
    balance a burst of challenges emptied got "insufficient funds" from its commit, the exception
    ended the step before `settle`, and so the bonds that would refill it never came back: it
    stalled for good. Now the vote is kept (sealed in the database, not on chain), the step goes on,
    and once ether is back the same vote is sealed without a second check."""
    g = game
    c, a = g.chain, g.actors
    batch_id, receipts, _challenger, cid, voter = await _challenged(g)
    leaf = receipts[0].leaf()
    checks: list[int] = []

    async def faulty(*args: object, **kwargs: object) -> Verdict:
        checks.append(1)
        return _faulty(batch_id, 0, leaf, a.validators[1].address)

    voter.disputes.verifier.verify = faulty  # type: ignore[method-assign]
    address = a.validators[1].address
    funded = c.w3.eth.get_balance(address)
    c.w3.provider.make_request("anvil_setBalance", [address, hex(10**16)])  # gas, but no 0.1 ether bond
    try:
        await voter.disputes.vote_open(voter.client.timestamp())  # no exception: the step goes on
        assert "no ether for its bond" in caplog.text
        assert c.task_manager.get_vote(cid, address).weight == 0
        row = next(r for r in voter.db.challenges() if r.challenge_id == cid)
        assert row.status == "open" and row.salt is not None  # kept for the next step
    finally:
        c.w3.provider.make_request("anvil_setBalance", [address, hex(funded)])
    await voter.disputes.vote_open(voter.client.timestamp())
    assert c.task_manager.get_vote(cid, address).weight != 0, "sealed once ether is back"
    assert len(checks) == 1, "the same vote, not a second check"
