"""Review: sealed (commit-reveal) votes against an honest validator's client (real Anvil, real
contracts, the real `Disputes`, `Follower` and `Database`; see test_review_validator_game.py).

Each test plays one attack by a cheating node, a rival validator or a griefer on the honest
voter's vote bond: ``test_defence_*`` where the client stops it, ``test_known_limit_*`` where the
hole exists (the test passes while it does).
"""

from __future__ import annotations

import asyncio
import sqlite3
from types import SimpleNamespace
from typing import Any

import pytest
from chain_fixtures import commit_vote, reveal_vote, to_reveal_phase
from supernet.sdk.chain.anvil import advance_to, increase_time, mine
from supernet.sdk.chain.errors import ContractError
from supernet.validator.chain import ChallengeStatus, ChallengeView, TaskManagerClient
from supernet.validator.db import _MIGRATIONS, _SCHEMA
from supernet.validator.evidence import Verdict
from supernet.validator.service import Validator

from tests.unit import test_review_validator_game as base
from tests.unit.test_review_validator_game import (
    ETHER,
    Crash,
    Game,
    Party,
    _challenged,
    _claimed,
    _commit,
    _faulty,
    _open,
    _past_vote_window,
    skew_wall_clock,
)

game = base.game  # the fixture: real Anvil, contracts and content stores

pytestmark = pytest.mark.asyncio(loop_scope="session")


def _row(p: Party, cid: int) -> Any:
    return next(r for r in p.db.challenges() if r.challenge_id == cid)


def _judges_faulty(
    p: Party, batch_id: int, leaf_of: dict[bytes, int], checks: list[int] | None = None
) -> None:
    """The voter's own check finds the challenged receipt faulty (the verifier stubbed)."""

    async def faulty(batch: int, node: str, index: int, *args: object, **kwargs: object) -> Verdict:
        if checks is not None:
            checks.append(index)
        leaf = next(k for k, v in leaf_of.items() if v == index)
        return _faulty(batch, index, leaf, p.account.address)

    p.disputes.verifier.verify = faulty  # type: ignore[method-assign]


def _claim_would_pay(g: Game, cid: int, voter: str) -> bool:
    """What the contract says: would ``claimVoteReward`` from ``voter`` succeed now (eth_call)?"""
    try:
        g.chain.task_manager.contract.functions.claimVoteReward(cid).call({"from": voter})
    except Exception:
        return False
    return True


def _pays(g: Game, client: TaskManagerClient, cid: int, voter: str) -> bool:
    view: ChallengeView = client.challenge(cid)
    record = client.binding.get_vote(cid, voter)
    return view.vote_pays(record, voter, client.params().quorum_bps)


async def _sealed_voter(g: Game) -> tuple[Party, Party, int, int]:
    """A node's batch, a challenge on entry 0 by validator 0, and validator 1 (its own check finds
    the fault) with its vote sealed. Returns (challenger, voter, batch id, challenge id)."""
    c, a = g.chain, g.actors
    batch_id, receipts, challenger, cid, voter = await _challenged(g)
    _judges_faulty(voter, batch_id, {r.leaf(): i for i, r in enumerate(receipts)})
    await voter.disputes.vote_open(voter.client.timestamp())
    assert c.task_manager.get_vote(cid, a.validators[1].address).weight != 0, "sealed"
    return challenger, voter, batch_id, cid


async def _finish_and_claim(g: Game, challenger: Party, voter: Party, cid: int) -> list[int]:
    """Past the vote: resolved, then the voter settles twice (a restart); its claims."""
    c = g.chain
    deadline = c.task_manager.get_challenge(cid).vote_deadline
    advance_to(c.w3, deadline + 1)
    mine(c.w3, 1)
    challenger.follower.catch_up()
    await challenger.disputes.settle(challenger.client.timestamp() + 1)
    voter.follower.catch_up()
    await voter.disputes.settle(voter.client.timestamp() + 1)
    await voter.disputes.settle(voter.client.timestamp() + 1)
    return _claimed(c, cid, voter.account.address)


def _won(g: Game, p: Party, cid: int) -> int:
    """A fraud-side vote's claim: its bond back plus its share of the voter pool."""
    ch = g.chain.task_manager.get_challenge(cid)
    vote = g.chain.task_manager.get_vote(cid, p.account.address)
    return p.client.params().challenge_bond + ch.reward_pool * vote.weight // ch.fraud_stake


async def test_defence_a_node_moving_the_reveal_phase_while_votes_are_sealed(game: Game) -> None:
    """Attack: the accused node opens an availability claim on its own challenged entry while the
    votes are sealed (`_extendVote`, ``VoteExtended``): the vote's deadline, and with it the reveal
    phase, moves later. A voter that kept the old schedule would try to reveal too early
    (``WrongVotePhase``), then think the vote over at the old deadline and never reveal: its bond
    burns and its fraud vote is missing (the node profits, the honest voter pays a bond).

    Defence: a reveal sent early is an expected race, retried; once the follower reads
    ``VoteExtended`` the database's deadline moves (`Database` takes the later one), the voter
    reveals in the moved phase and claims its bond and share after the fraud verdict. A settle
    on the old schedule is harmless (``VoteWindowOpen``, still open)."""
    g = game
    c, a = g.chain, g.actors
    challenger, voter, batch_id, cid = await _sealed_voter(g)
    old = c.task_manager.get_challenge(cid).vote_deadline
    old_reveal = c.task_manager.reveals_at(cid)
    node = TaskManagerClient(c.w3, c.deployment.address("TaskManager"), a.node)
    node.challenge_availability(batch_id, 0)  # the node's own claim: the vote moves
    new = c.task_manager.get_challenge(cid).vote_deadline
    assert new > old
    # the voter has not read VoteExtended yet: it tries on the old schedule
    advance_to(c.w3, old_reveal)
    await voter.disputes.reveal_due()
    assert not c.task_manager.get_vote(cid, a.validators[1].address).revealed
    assert _row(voter, cid).reveal == "pending"
    advance_to(c.w3, old + 1)
    await voter.disputes.vote_open(voter.client.timestamp())
    await voter.disputes.settle(voter.client.timestamp())  # old schedule: resolve refused, kept
    assert _row(voter, cid).status == "voted"
    voter.follower.catch_up()
    assert _row(voter, cid).vote_deadline == new
    advance_to(c.w3, c.task_manager.reveals_at(cid))
    await voter.disputes.vote_open(voter.client.timestamp())
    vote = c.task_manager.get_vote(cid, a.validators[1].address)
    assert vote.revealed and vote.fraud, "revealed in the moved phase"
    assert await _finish_and_claim(g, challenger, voter, cid) == [_won(g, voter, cid)]
    assert c.task_manager.get_challenge(cid).status == ChallengeStatus.FRAUD


async def test_defence_a_crash_after_seal_before_commit_seals_the_same_vote_once(game: Game) -> None:
    """Restart after `seal_vote` but before the commit is sent: the restarted validator sends the
    commit from the side and salt on disk (no second check, no second salt), one bond, and
    reveals that very commitment (a fresh salt would make the reveal fail and the bond burn)."""
    g = game
    c, a = g.chain, g.actors
    batch_id, receipts, challenger, cid, voter = await _challenged(g)
    leaves = {r.leaf(): i for i, r in enumerate(receipts)}
    _judges_faulty(voter, batch_id, leaves)

    def die(*args: object) -> None:
        raise Crash

    voter.client.commit_vote = die  # type: ignore[method-assign]
    with pytest.raises(Crash):
        await voter.disputes.vote_open(voter.client.timestamp())
    salt = _row(voter, cid).salt
    assert salt is not None and c.task_manager.get_vote(cid, a.validators[1].address).weight == 0
    voter.db.close()

    restarted = g.party(a.validators[1], g.stores["full"], "v1")
    restarted.follower.catch_up()
    checks: list[int] = []
    _judges_faulty(restarted, batch_id, leaves, checks)
    await restarted.disputes.vote_open(restarted.client.timestamp())
    await restarted.disputes.vote_open(restarted.client.timestamp())  # and again: nothing more
    assert checks == [], "the vote on disk is sent, not a new one"
    assert c.task_manager.get_challenge(cid).committed == 1
    assert (_row(restarted, cid).status, _row(restarted, cid).salt) == ("voted", salt)
    to_reveal_phase(c, cid)
    await restarted.disputes.vote_open(restarted.client.timestamp())
    assert c.task_manager.get_vote(cid, a.validators[1].address).revealed
    assert await _finish_and_claim(g, challenger, restarted, cid) == [_won(g, restarted, cid)]


async def test_defence_a_crash_after_the_reveal_before_its_record(game: Game) -> None:
    """Restart after `revealVote` was mined but before `mark_revealed`: the restarted validator
    reads the vote on chain as revealed and records it (a second reveal would revert
    ``NotTheCommittedVote`` and, taken at its word, mark the vote ``lost``), then claims."""
    g = game
    c, a = g.chain, g.actors
    challenger, voter, _, cid = await _sealed_voter(g)
    send = voter.client.reveal_vote

    def reveal_then_crash(challenge_id: int, fraud: bool, salt: bytes) -> None:
        send(challenge_id, fraud, salt)
        raise Crash

    voter.client.reveal_vote = reveal_then_crash  # type: ignore[method-assign]
    to_reveal_phase(c, cid)
    with pytest.raises(Crash):
        await voter.disputes.reveal_due()
    assert c.task_manager.get_vote(cid, a.validators[1].address).revealed
    assert _row(voter, cid).reveal == "pending"
    voter.db.close()
    restarted = g.party(a.validators[1], g.stores["full"], "v1")
    restarted.follower.catch_up()
    await restarted.disputes.vote_open(restarted.client.timestamp())
    assert _row(restarted, cid).reveal == "done"
    assert await _finish_and_claim(g, challenger, restarted, cid) == [_won(g, restarted, cid)]


async def test_defence_a_rival_copying_the_sealed_vote_cannot_ride_its_reveal(game: Game) -> None:
    """Attack: a rival validator that never checked copies the honest voter's commitment from its
    commit transaction (bond posted), then front-runs the honest reveal with the side and salt it
    reads from the reveal in the mempool, hoping to share the pool for no work (or to make the
    honest reveal revert). The commitment binds the voter's address: the rival's reveal reverts
    ``NotTheCommittedVote``, its bond burns unopened, the honest reveal goes through and the
    honest voter's share is computed without the rival's weight."""
    g = game
    c, a = g.chain, g.actors
    batch_id, receipts, challenger, cid, voter = await _challenged(g)
    _judges_faulty(voter, batch_id, {r.leaf(): i for i, r in enumerate(receipts)})
    seen: list[bytes] = []
    send = voter.client.commit_vote

    def watched(challenge_id: int, commitment: bytes) -> None:
        seen.append(commitment)
        send(challenge_id, commitment)

    voter.client.commit_vote = watched  # type: ignore[method-assign]
    await voter.disputes.vote_open(voter.client.timestamp())
    rival = c.as_account(a.validators[2]).task_manager
    rival.commit_vote(cid, seen[0], value=challenger.client.params().challenge_bond)
    to_reveal_phase(c, cid)
    row = _row(voter, cid)
    with pytest.raises(ContractError, match="NotTheCommittedVote"):
        rival.reveal_vote(cid, bool(row.my_vote), row.salt)
    await voter.disputes.reveal_due()
    assert c.task_manager.get_vote(cid, a.validators[1].address).revealed
    assert not c.task_manager.get_vote(cid, a.validators[2].address).revealed
    burned = int(c.task_manager.call("totalBurned"))
    claims = await _finish_and_claim(g, challenger, voter, cid)
    assert c.task_manager.get_challenge(cid).fraud_stake == 4 * ETHER, "the rival's weight counts nowhere"
    assert claims == [_won(g, voter, cid)]
    assert int(c.task_manager.call("totalBurned")) >= burned + challenger.client.params().challenge_bond


async def test_defence_a_vote_sealed_but_never_revealed_is_not_claimed_and_the_step_lives(
    game: Game, caplog: pytest.LogCaptureFixture
) -> None:
    """The voter sealed, then was down through the whole reveal phase; the challenge is resolved
    by someone else. Restarted, it neither reveals (too late) nor claims (the contract refuses an
    unrevealed vote): it logs the lost bond, moves the row on, and no call raises."""
    g = game
    c, a = g.chain, g.actors
    challenger, voter, _, cid = await _sealed_voter(g)
    _past_vote_window(c)
    assert challenger.client.resolve(cid) is True  # the challenger alone is a quorum here
    voter.follower.catch_up()
    await voter.disputes.reveal_due()
    await voter.disputes.vote_open(voter.client.timestamp())
    await voter.disputes.settle(voter.client.timestamp() + 1)
    await voter.disputes.settle(voter.client.timestamp() + 1)
    address = a.validators[1].address
    assert not c.task_manager.get_vote(cid, address).revealed
    assert _claimed(c, cid, address) == []
    assert not _claim_would_pay(g, cid, address), "the contract agrees: nothing to claim"
    assert "never revealed" in caplog.text
    assert _row(voter, cid).status == "claimed"


async def test_defence_a_slow_check_of_one_challenge_does_not_outlast_another_reveal_phase(
    game: Game,
) -> None:
    """Attack (a node with two faulty receipts challenged): the voter sealed its vote on
    challenge A; challenge B, opened a little later, needs a check, and the node makes that check
    slow (its data trickles, a tool call that hangs to its timeout). `Disputes.vote_open` checked
    B inline, calling `reveal_due` only between checks: while B's check ran, A's whole reveal phase
    (its last REVEAL_WINDOW seconds) passed, A was never revealed and the honest voter's bond on A
    burned (the accused node profited: one fraud vote fewer). Found by this review.

    Defence: the service opens due votes in a loop of its own beside the steps
    (`Validator._reveals`, every poll interval); a check's heavy work runs in worker threads, so
    the loop runs meanwhile. Here B's check lasts through A's reveal phase, and A is opened in it."""
    g = game
    c, a = g.chain, g.actors
    batch_id, receipts, _ = await _commit(g)
    challenger = g.party(a.validators[0], g.stores["full"], "c")
    cid_a = _open(challenger, batch_id, receipts, 0)
    voter = g.party(a.validators[1], g.stores["full"], "v1")
    voter.follower.catch_up()
    leaves = {r.leaf(): i for i, r in enumerate(receipts)}
    _judges_faulty(voter, batch_id, leaves)
    await voter.disputes.vote_open(voter.client.timestamp())
    assert c.task_manager.get_vote(cid_a, a.validators[1].address).weight != 0
    increase_time(c.w3, 15)
    mine(c.w3, 1)
    cid_b = _open(challenger, batch_id, receipts, 1)
    voter.follower.catch_up()
    deadline_a = c.task_manager.get_challenge(cid_a).vote_deadline
    assert c.task_manager.reveals_at(cid_b) > deadline_a + 1
    seen_open_in_time: list[bool] = []

    async def slow(batch: int, node: str, index: int, *args: object, **kwargs: object) -> Verdict:
        advance_to(c.w3, c.task_manager.reveals_at(cid_a))  # the check of B runs into A's reveal phase
        for _ in range(200):  # ... for long (in worker threads: the event loop runs meanwhile)
            if c.task_manager.get_vote(cid_a, a.validators[1].address).revealed:
                break
            await asyncio.sleep(0.05)
        seen_open_in_time.append(c.task_manager.get_vote(cid_a, a.validators[1].address).revealed)
        advance_to(c.w3, deadline_a + 1)  # ... and past A's end
        mine(c.w3, 1)
        leaf = next(k for k, v in leaves.items() if v == index)
        return _faulty(batch, index, leaf, a.validators[1].address)

    voter.disputes.verifier.verify = slow  # type: ignore[method-assign]
    assert voter.client.timestamp() < c.task_manager.reveals_at(cid_a), "A's reveal phase not yet on"
    stop = asyncio.Event()
    service = SimpleNamespace(
        _stop=stop, disputes=voter.disputes, settings=SimpleNamespace(poll_interval_s=0.05)
    )
    revealing = asyncio.create_task(Validator._reveals(service))  # type: ignore[arg-type]
    try:
        await voter.disputes.vote_open(voter.client.timestamp())
    finally:
        stop.set()
        await revealing
    assert c.task_manager.get_vote(cid_b, a.validators[1].address).weight != 0, "B sealed"
    assert seen_open_in_time == [True], "A opened in its reveal phase, during B's check"
    vote_a = c.task_manager.get_vote(cid_a, a.validators[1].address)
    assert vote_a.revealed and vote_a.fraud


async def test_defence_vote_pays_agrees_with_the_contract_in_every_outcome(game: Game) -> None:
    """`ChallengeView.vote_pays` decides whether a claim is sent; where it says no and the
    contract would pay, a bond is silently forfeited; where it says yes and the contract refuses,
    a transaction is wasted. Checked against ``claimVoteReward`` (eth_call) for the challenger,
    winning, losing, unrevealed and absent voters on a fraud verdict, a clearing and no verdict."""
    g = game
    c, a = g.chain, g.actors
    c.as_account(a.outsider).service_manager.register_validator(20 * ETHER)  # quorum 30 % of 26
    increase_time(c.w3, 1)
    challenger = g.party(a.validators[0], g.stores["full"], "c")
    v1, v2, big = a.validators[1], a.validators[2], a.outsider
    everyone = [a.validators[0], v1, v2, big]
    outcomes = {}
    plans = {
        ChallengeStatus.FRAUD: [(big, True, True), (v1, True, True), (v2, False, True)],
        "cleared": [(big, False, True), (v1, False, True), (v2, True, True)],
        "no verdict": [(v1, False, True), (v2, True, False)],
    }
    batches = [await _commit(g) for _ in plans]  # before any verdict slashes the node
    for (name, plan), (batch_id, receipts, _) in zip(plans.items(), batches, strict=True):
        cid = _open(challenger, batch_id, receipts)
        for who, fraud, _opened in plan:
            commit_vote(c, cid, who, fraud)
        to_reveal_phase(c, cid)
        for who, fraud, opened in plan:
            if opened:
                reveal_vote(c, cid, who, fraud)
        _past_vote_window(c)
        challenger.client.resolve(cid)
        outcomes[name] = cid
    quorum = challenger.client.params().quorum_bps
    assert challenger.client.challenge(outcomes[ChallengeStatus.FRAUD]).status == ChallengeStatus.FRAUD
    assert challenger.client.challenge(outcomes["cleared"]).cleared(quorum)
    nv = challenger.client.challenge(outcomes["no verdict"])
    assert nv.status == ChallengeStatus.NOT_FRAUD and not nv.cleared(quorum)
    paid = 0
    for name, cid in outcomes.items():
        for who in everyone:
            expected = _claim_would_pay(g, cid, who.address)
            assert _pays(g, challenger.client, cid, who.address) == expected, (name, who.address)
            paid += expected
    assert paid >= 6, "the table is not all refusals"


async def test_defence_a_database_from_before_sealed_votes_still_claims(game: Game) -> None:
    """A validator upgraded with a version-0 database in which a vote is recorded (votes then were
    open at once): the migration marks it revealed (``done``, no salt), so the new client never
    tries to reveal it, and after the verdict it claims its bond and share from the chain."""
    g = game
    c, a = g.chain, g.actors
    batch_id, receipts, _ = await _commit(g)
    challenger = g.party(a.validators[0], g.stores["full"], "c")
    cid = _open(challenger, batch_id, receipts)
    v1 = a.validators[1]
    commit_vote(c, cid, v1, True)
    to_reveal_phase(c, cid)
    reveal_vote(c, cid, v1, True)
    ch = c.task_manager.get_challenge(cid)
    old = sqlite3.connect(g.tmp / "old.sqlite")
    old.executescript(_SCHEMA)
    old.execute(
        "INSERT INTO challenges (challenge_id, batch_id, challenger, node, leaf, vote_deadline, "
        "evidence_cid, status, my_vote, my_evidence) VALUES (?, ?, ?, ?, ?, ?, ?, 'voted', 1, 'e')",
        (
            cid,
            batch_id,
            a.validators[0].address,
            a.node.address,
            receipts[0].leaf().hex(),
            ch.vote_deadline,
            "x",
        ),
    )
    old.commit()
    assert old.execute("PRAGMA user_version").fetchone()[0] == 0
    old.close()
    voter = g.party(v1, g.stores["full"], "old")
    assert voter.db.schema_version() == len(_MIGRATIONS)  # migrated to the current schema
    assert (_row(voter, cid).reveal, _row(voter, cid).salt, _row(voter, cid).my_vote) == ("done", None, True)
    voter.follower.catch_up()
    await voter.disputes.vote_open(voter.client.timestamp())
    assert _row(voter, cid).reveal == "done"
    assert await _finish_and_claim(g, challenger, voter, cid) == [_won(g, voter, cid)]


@pytest.mark.parametrize("wall_offset_s", [-3600, 3600], ids=["chain-an-hour-ahead", "chain-an-hour-behind"])
async def test_defence_clock_skew_between_wall_and_chain(
    game: Game, monkeypatch: pytest.MonkeyPatch, wall_offset_s: int
) -> None:
    """The wall clock an hour behind the chain (a test chain moved forward) or ahead of it: the
    voter still seals in the chain's commit phase, reveals in the chain's reveal phase (sends
    outside it are expected races, retried), and claims; calls after the deadline do not raise."""
    skew_wall_clock(monkeypatch, wall_offset_s)
    g = game
    c, a = g.chain, g.actors
    challenger, voter, _, cid = await _sealed_voter(g)
    await voter.disputes.vote_open(voter.client.timestamp())  # commit phase still
    assert not c.task_manager.get_vote(cid, a.validators[1].address).revealed
    to_reveal_phase(c, cid)
    await voter.disputes.vote_open(voter.client.timestamp())
    assert c.task_manager.get_vote(cid, a.validators[1].address).revealed
    assert await _finish_and_claim(g, challenger, voter, cid) == [_won(g, voter, cid)]
    await voter.disputes.vote_open(voter.client.timestamp())
    await voter.disputes.reveal_due()
