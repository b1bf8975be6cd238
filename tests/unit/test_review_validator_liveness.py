"""Review: the validator as a long-running service (real Anvil, the real compiled contracts, the real
embedded content store; the real `Disputes`, `Availability`, `Follower`, `TaskManagerClient` and
`Database`). The validator's own re-execution is replaced by a stand-in verdict, as in
tests/unit/test_review_validator_game.py and test_review_validator_funds.py: the checks are not under
review here, the service's order of work, restarts and state are. Where a check needs minutes or hours
of validator time, the stand-in advances the chain's clock inside the call that would take them
(as tests/unit/test_review_validator_budgets.py does), never the code under test.

Scope: the service loop (`Validator.step`: turns, then votes, then settlement), votes on other
validators' challenges (`Disputes.vote_open`), availability claims across a restart, and the
attacks a node (with an ally validator: `TaskManager.challenge` needs an active validator, whose
stake is locked for the vote, never lost) can make on an honest voter's time.

Found:

- MEDIUM, FIXED (test_defence_a_flood_of_challenges_does_not_starve_the_vote_on_a_real_fraud,
  test_defence_vote_checks_yield_to_the_steps_other_duties). Vote checks have no budget
  and no fairness: `Disputes.vote_open` (validator/supernet/validator/challenger.py:404-420) walks every
  open challenge in challenge-id order and runs a full `recheck_all` check of each, inline, before the next
  (`_vote_one`, challenger.py:447); `Validator.step` (service.py:519) gives it no time limit. The batch path
  was made fair (turns by node, `TurnOrder`, `STEP_TURNS_S`), the vote path was not. Attack: the node's ally
  (one staked validator, 0.1 ether a challenge) challenges K of the node's own honest receipts, then the
  node's real fraud is challenged by an honest validator a block later. Every honest voter checks the ally's
  K challenges first; once K checks outlast the real challenge's sealing phase (the vote's first two thirds:
  16 h by default), no honest vote can be sealed on the real fraud, the fraud vote can miss its quorum (the
  honest voters' stake is absent), the node is not slashed and the honest challenger's bond burns (no
  verdict). The ally's K challenges are cleared (the voters had time for them): the node gets back 80 % of
  each bond, so the coalition pays 0.02 ether and a transaction a challenge, on receipts the node served its
  paying users anyway (no extra model work: a challenge makes every validator re-check at 100 % what
  sampling checks at 10 %, with every call re-scored by the arbiter). Meanwhile the step also runs no batch
  turns, availability claims or settlement (all after or before `vote_open` in the same step), so other
  nodes' cheats wait too. Fix by design: give the vote checks the batch path's fairness, in turns by
  challenger (the challenger served longest ago first; one the seed picked for the receipt,
  `Challenge.sampled`, ahead of one it did not), interleaved with the batch turns under the
  step's time limit, so that one party's flood delays another's challenge by one check, not by the flood.
  The fix: `Disputes.vote_open` takes the checks in turns by challenger (`Disputes.next_vote`: the
  challenger served longest ago, one not served yet first; a flood from k addresses, each holding a
  validator's stake, delays another challenger's check by at most k checks), and the step gives
  them the batch turns' share (`until`, `STEP_TURNS_S`), the rest next step. The seed's pick
  (`Challenge.sampled`) was left out of the order: an ally picked for 10 % of a node's receipts per
  address floods as well with those.

Checked and holding:

- A crash after `challengeAvailability` was mined, before the database recorded it: the restarted
  validator adopts the claim on chain (`Availability._open` reads `entryAvailability` first) and posts
  no second deposit (test_defence_a_crash_after_an_availability_claim_is_mined_claims_once).
- (read, not tested here; each is tested elsewhere) a restart between a vote's seal and its commit,
  or between commit and reveal (the salt is on disk before the commit is sent: `Database.seal_vote`,
  test_review_sealed_votes.py / test_review_validator_game.py); reorgs of challenges, votes and claims
  (`Database.undo_after` keeps sealed votes' secrets by challenge id, batch and leaf, and
  `Disputes._on_chain` skips a challenge id a reorg gave to another leaf); reveals run in a loop of
  their own beside the steps, so a long step does not cost a sealed vote its bond.
"""

from __future__ import annotations

import asyncio

import pytest
from supernet.sdk.chain.anvil import advance_to, increase_time, mine
from supernet.validator.availability import Availability
from supernet.validator.evidence import Check, Finding, Verdict

from tests.unit import test_review_validator_game as vgame
from tests.unit.test_review_validator_funds import _balance, _commit, _no_settle
from tests.unit.test_review_validator_game import ETHER, Game, _open

game = vgame.game  # the fixture: real Anvil, contracts (staked network) and two embedded stores

pytestmark = pytest.mark.asyncio(loop_scope="session")


class Crash(Exception):
    """The validator's process dies here."""


async def test_defence_a_flood_of_challenges_does_not_starve_the_vote_on_a_real_fraud(game: Game) -> None:
    """Attack (a node and an ally validator, validator 2): the node commits a batch of six receipts, five
    honest and one faulty (entry 5). The ally challenges the five honest ones (a bond each); one block
    later the honest challenger (validator 0) challenges the real fraud. The honest voter (validator 1)
    runs `Disputes.vote_open` as its step does: every check takes it 5 s of chain time here (on the
    devnet's 30 s vote, 20 s of sealing), the stand-in for minutes of re-execution against a day's vote (K
    ~ 16 h / a check's time). It checks the ally's challenges first, in id order, and when it reaches the
    real fraud the sealing phase is over: no vote on it.

    Fixed: `Disputes.vote_open` takes the checks in turns by challenger (`Disputes.next_vote`), so the
    honest challenger's comes second. Safe behaviour (asserted, failed before the fix): the voter seals
    its fraud vote on the honest challenger's challenge; a flood by one challenger may delay another
    challenger's check by one check, not by the flood."""
    g = game
    c, a = g.chain, g.actors
    batch_id, receipts = await _commit(g, a.node, 6, "vote-flood")
    ally = g.party(a.validators[2], g.stores["full"], "ally")
    honest = g.party(a.validators[0], g.stores["full"], "honest")
    voter = g.party(a.validators[1], g.stores["full"], "voter")
    flood = [_open(ally, batch_id, receipts, i) for i in range(5)]
    real = _open(honest, batch_id, receipts, 5)
    voter.follower.catch_up()
    params = voter.client.params()
    sealing = params.vote_window - params.reveal_window
    per_check = 5
    assert per_check * len(flood) > sealing, "the flood's checks outlast the real challenge's sealing"
    checked: list[int] = []

    async def verify(batch: int, node: str, index: int, manifest: object, **kw: object) -> Verdict:
        checked.append(index)
        increase_time(c.w3, per_check)  # the re-execution's time, on the chain's clock
        mine(c.w3, 1)
        await asyncio.sleep(0)
        leaf = manifest.leaf(index)  # type: ignore[attr-defined]
        found = (Finding(Check.TRACE, "output is not the trace's"),) if index == 5 else ()
        return Verdict(batch, index, leaf, findings=found, validator=a.validators[1].address)

    voter.disputes.verifier.verify = verify  # type: ignore[method-assign]
    now = voter.client.timestamp()
    assert now < c.task_manager.reveals_at(real), "the real challenge's sealing phase is on"
    await voter.disputes.vote_open(now)
    sealed_flood = [cid for cid in flood if c.task_manager.get_vote(cid, a.validators[1].address).weight]
    vote = c.task_manager.get_vote(real, a.validators[1].address)
    assert vote.weight != 0, (
        f"no vote sealed on the real fraud (challenge {real}): the voter checked {checked} in id order "
        f"and sealed 'not fraud' on the ally's {sealed_flood} first; its sealing phase ended meanwhile"
    )


async def test_defence_a_crash_after_an_availability_claim_is_mined_claims_once(game: Game) -> None:
    """Crash point: `challengeAvailability` is mined (bond and deposit paid), then the validator dies
    before `update_missing` records the claim. At restart (a new `Database` on the same file) the
    entry is still ``retrying``: `Availability._open` reads the entry's claim on chain first and
    adopts it, so no second deposit is posted, and the adopted claim is followed to its slash."""
    g = game
    c, a = g.chain, g.actors
    me = a.validators[2]
    batch_id, _ = await _commit(g, a.node2, 2, "claim-crash", withheld={0: b"\xa1akdkept"})
    v = g.party(me, g.stores["partial"], "claim-crash")
    v.follower.catch_up()
    batch = v.db.batch(batch_id)
    assert batch is not None
    av = Availability(v.client, v.db, v.disputes, v.disputes.verifier, _no_settle, retries=1, backoff_s=0.01)
    av.note(batch, 0, "trace withheld")
    await asyncio.sleep(0.02)
    real_update = v.db.update_missing

    def dies(*args: object, **kw: object) -> None:
        if kw.get("status") == "challenged":
            raise Crash("killed after the claim was mined")
        real_update(*args, **kw)  # type: ignore[arg-type]

    v.db.update_missing = dies  # type: ignore[method-assign]
    before = _balance(c, me)
    await av.step(v.client.timestamp())  # the crash is caught as one entry's failure; then "restart"
    aid = v.client.entry_availability(batch_id, 0)
    assert aid, "the claim is on chain"
    assert v.db.missing("challenged") == [], "the database never recorded it"
    paid_once = before - _balance(c, me)
    assert paid_once > v.client.params().challenge_bond, "bond and deposit paid"
    v.db.close()
    v2 = g.party(me, g.stores["partial"], "claim-crash")  # the restarted process, the same file
    db = v2.db
    av2 = Availability(
        v2.client, db, v2.disputes, v2.disputes.verifier, _no_settle, retries=1, backoff_s=0.01
    )
    mid = _balance(c, me)
    await asyncio.sleep(0.02)
    await av2.step(v2.client.timestamp())
    rows = db.missing("challenged")
    assert [(r.batch_id, r.index, r.availability_id) for r in rows] == [(batch_id, 0, aid)], "adopted"
    assert mid - _balance(c, me) < ETHER // 100, "no second deposit, gas at most"
    assert v2.client.entry_availability(batch_id, 0) == aid
    deadline = v2.client.availability(aid).deadline
    advance_to(c.w3, deadline + 1)
    mine(c.w3, 1)
    await av2.step(v2.client.timestamp())
    assert [r.status for r in db.missing()] == ["slashed"], "the adopted claim followed to its slash"


async def test_defence_vote_checks_yield_to_the_steps_other_duties(game: Game) -> None:
    """The flood's other effect: while the voter checked it, its step ran no batch turns, claims or
    settlement. With the step's share spent (``until`` in the past), `vote_open` starts one check and
    leaves the rest to the next call, which goes on in turns: the honest challenger's next, then the
    ally's."""
    import time

    g = game
    c, a = g.chain, g.actors
    batch_id, receipts = await _commit(g, a.node, 4, "vote-share")
    ally = g.party(a.validators[2], g.stores["full"], "ally")
    honest = g.party(a.validators[0], g.stores["full"], "honest")
    voter = g.party(a.validators[1], g.stores["full"], "voter")
    flood = [_open(ally, batch_id, receipts, i) for i in range(3)]
    real = _open(honest, batch_id, receipts, 3)
    voter.follower.catch_up()
    checked: list[int] = []

    async def verify(batch: int, node: str, index: int, manifest: object, **kw: object) -> Verdict:
        checked.append(index)
        leaf = manifest.leaf(index)  # type: ignore[attr-defined]
        found = (Finding(Check.TRACE, "output is not the trace's"),) if index == 3 else ()
        return Verdict(batch, index, leaf, findings=found, validator=a.validators[1].address)

    voter.disputes.verifier.verify = verify  # type: ignore[method-assign]
    await voter.disputes.vote_open(voter.client.timestamp(), until=time.monotonic() - 1)
    assert checked == [0], f"one check per spent share, then the step's other duties: {checked}"
    await voter.disputes.vote_open(voter.client.timestamp(), until=time.monotonic() - 1)
    assert checked == [0, 3], f"the honest challenger's turn came next: {checked}"
    await voter.disputes.vote_open(voter.client.timestamp())
    assert checked == [0, 3, 1, 2], f"the rest with no limit: {checked}"
    assert c.task_manager.get_vote(real, a.validators[1].address).weight != 0
    assert all(c.task_manager.get_vote(cid, a.validators[1].address).weight for cid in flood)
