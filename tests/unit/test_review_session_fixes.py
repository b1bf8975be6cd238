"""Adversarial review of the session's four defences: `Verifier._route`, the input normal form,
`ChallengeView.cleared` in `Disputes.challenge`, and `Disputes.on_missing` -> `Availability.note`.

``test_known_limit_*`` pass while the hole they describe exists; ``test_defence_*`` show an attack
the code defeats. Real parts only; the verifier's routing uses the stand-in scorers of
tests/unit/test_validator_attacks.py, as the existing routing tests do.
"""

from __future__ import annotations

import itertools
import json
import random
import time
from pathlib import Path

import pytest
from supernet.node.llm.sampling import MIN_TEMPERATURE, SamplingParams, is_greedy
from supernet.sdk.chain.receipts import (
    InputEncodingError,
    canonical_input,
    input_hash,
    is_normal_input,
    normal_input,
)
from supernet.sdk.formats.binding import input_hash_or_reason
from supernet.validator.chain import ChallengeStatus, ChallengeView
from supernet.validator.db import Database

# -- 1. Verifier._route ---------------------------------------------------------------------------


def _routing():
    from tests.unit.test_validator_attacks import (
        SCREEN_DRIFT,
        DriftScorer,
        flagged,
        llm_calls,
        screened_verifier,
        staged,
    )

    return SCREEN_DRIFT, DriftScorer, flagged, llm_calls, screened_verifier, staged


def _at_temperature(calls, temps: dict[int, float]):
    import dataclasses

    return tuple(dataclasses.replace(c, temperature=temps.get(c.call, c.temperature)) for c in calls)


def test_defence_greedy_boundary_is_the_nodes_own_rule() -> None:
    """Attack: a node (or the agent it runs) records a temperature at the greedy boundary so the
    validator routes the call as sampled (screened, maybe not drawn) while the node decoded it
    greedily in a cheaper format. Defeated: `_route` classifies with the node's own `is_greedy`,
    and the sampler (`SamplingParams.greedy`) uses the same threshold, so a call at exactly
    MIN_TEMPERATURE is sampled on both sides (and the replay pins the temperature to the agent's)."""
    _, DriftScorer, _, llm_calls, screened_verifier, staged = _routing()
    screen, arbiter = DriftScorer("bfloat16", 0.01), DriftScorer("float32", 0.0)
    v = screened_verifier(arbiter=arbiter)
    just_below = MIN_TEMPERATURE * (1 - 1e-9)
    calls = _at_temperature(llm_calls(4, bf16=set()), {0: just_below, 1: MIN_TEMPERATURE})
    direct, screened = v._route(staged(calls, screen, arbiter), False)
    assert [c.call for c in direct] == [0] and [c.call for c in screened] == [1, 2, 3]
    assert SamplingParams(temperature=just_below).greedy and is_greedy(just_below)
    assert not SamplingParams(temperature=MIN_TEMPERATURE).greedy and not is_greedy(MIN_TEMPERATURE)


async def test_defence_recheck_all_and_an_empty_draw_pool_go_to_the_arbiter() -> None:
    """Attack: make the draw pool empty or irrelevant: (a) a vote (``recheck_all``) must not let a
    screened, undrawn call pass on the screen's word; (b) every sampled call doubted by the screen
    leaves nothing to draw from. Defeated: with ``recheck_all`` the screen sees nothing and the
    arbiter scores every call; with every sampled call doubted, all of them go to the arbiter
    (`arbiter_draw([])` is empty, nothing is lost). A bf16 cheat in any call is flagged in both."""
    SCREEN_DRIFT, DriftScorer, flagged, llm_calls, screened_verifier, staged = _routing()
    screen, arbiter = DriftScorer("bfloat16", SCREEN_DRIFT), DriftScorer("float32", 0.0)
    v = screened_verifier(arbiter=arbiter, rng=random.Random(0))
    cheat = staged(llm_calls(5, bf16={3}, greedy=frozenset({0})), screen, arbiter)
    (judged,) = await v._judge([cheat], recheck_all=True)
    assert not isinstance(judged, str) and flagged(judged) == [3] and judged.rechecked == 5
    assert screen.passes == 0
    # (b) all four sampled calls far off: the screen doubts each, the arbiter decides each
    screen2, arbiter2 = DriftScorer("bfloat16", SCREEN_DRIFT), DriftScorer("float32", 0.0)
    v2 = screened_verifier(arbiter=arbiter2, rng=random.Random(0))
    off = staged(
        llm_calls(5, bf16=set(), off={i: 2.0 for i in (1, 2, 3, 4)}, greedy=frozenset({0})), screen2, arbiter2
    )
    (j2,) = await v2._judge([off])
    assert not isinstance(j2, str) and flagged(j2) == [1, 2, 3, 4] and j2.rechecked == 5


async def test_defence_a_bf16_cheat_on_greedy_calls_is_caught_whatever_the_draw() -> None:
    """Attack: compute every greedy call in bf16 (the screen accepts bf16 compute) and every
    sampled call honestly, betting on the draw. Defeated: greedy calls of a non-bf16 node never
    reach the screen; the arbiter flags every one of them on every receipt (40 receipts)."""
    SCREEN_DRIFT, DriftScorer, flagged, llm_calls, screened_verifier, staged = _routing()
    screen, arbiter = DriftScorer("bfloat16", SCREEN_DRIFT), DriftScorer("float32", 0.0)
    v = screened_verifier(arbiter=arbiter)
    batch = [
        staged(llm_calls(6, bf16={0, 1}, first_id=10 * k, greedy=frozenset({0, 1})), screen, arbiter, index=k)
        for k in range(1, 41)
    ]
    judged = await v._judge(batch)
    assert all(not isinstance(j, str) and flagged(j) == [0, 1] for j in judged)


# -- 2. the input normal form ---------------------------------------------------------------------


def test_defence_a_float_whose_normal_form_has_no_hash_is_refused() -> None:
    """Attack: a user signs an input holding a float in [2**53, 1e21), e.g. ``{"n": 1e16}``. RFC
    8785 spells it as the integer ``10000000000000000``, so it *has* a canonical form (admission's
    first check passes, the SDK computes its inputHash), but its normal form (`normal_input`: the
    canonical bytes read back) is an integer beyond 2**53 - 1, which has none: `normal_input` is
    not closed over the inputs it accepts. Admission (`admit_and_start`) replaces the input by
    that integer and `Auth._check_shape` then raises `InputEncodingError` from `input_hash`, not
    the route's `InputNotCanonicalError` (a ValueError outside the API's NodeError handlers, so an
    internal error instead of a 4xx); an agent-to-agent call
    (`dispatch._agent_call`, json.loads of the canonical bytes) hands the child that integer, and
    any binding of such a value (`input_hash_or_reason`) reports "no canonical form".

    Who profits: nobody is billed wrongly and no honest node is flagged (the task is refused before
    work; a child's input is not bound to a signed hash), so this is a robustness gap: a
    user-triggerable unhandled error on the public task route and the chat route.

    Impact: `normal_input`'s promise ("the value a hash names", "the same everywhere") fails for
    these inputs. Fix by design: have `canonical_input` (hence admission and the SDK) refuse a
    float whose JCS spelling is an integer outside the safe range, or have `normal_input` keep
    such numbers floats (parse with ``parse_int`` bounded to the safe range).

    Defence: `normal_input` is closed: it raises `InputEncodingError` when the normal form has no
    canonical form, so admission refuses such an input with its 400 `input_not_canonical` (the
    route's own check, tested through the API in `test_node_api`), an agent call is refused, and
    the binding reports "no canonical form" for the value and its would-be normal form alike."""
    for value in (1e16, 2.0**53, 1.2345678901234568e20, {"n": 1e16}):
        assert canonical_input(value)  # it has a JCS spelling: a user can sign its hash
        with pytest.raises(InputEncodingError):
            normal_input(value)  # but names no value every party can hash again: refused
        assert input_hash_or_reason(value).startswith("no canonical form")
        as_read = json.loads(canonical_input(value))  # the integer its spelling reads back as
        assert input_hash_or_reason(as_read).startswith("no canonical form")


def test_defence_one_value_per_hash_for_floats_and_keys() -> None:
    """Attack: a node runs the agent on another value than the user signed under the same hash
    (8 vs 8.0, -0.0 vs 0, 1e21 vs 1e+21 spellings, 0.1 + 0.2 round trips, big and tiny
    exponents), or a user signs a value that admission reads one way and the trace format another.
    Defeated: every value with a hashable normal form maps to exactly one typed value; the other
    spellings of the same hash are refused by the shared binding (`is_normal_input`), and the
    normal form is a fixed point (an honest node that records it is never flagged). Unicode keys
    are not normalised by JCS, so NFC and NFD keys are different inputs with different hashes."""
    values = [8, 8.0, -0.0, 0, 1e21, 1e-7, 0.1 + 0.2, 5e-324, 1.7976931348623157e308, 2.0**53 - 1, 0.5]
    for v in values:
        n = normal_input(v)
        assert is_normal_input(n) and normal_input(n) == n and input_hash(n) == input_hash(v)
        assert input_hash_or_reason(n) == "0x" + input_hash(v).hex()
    assert not is_normal_input({"budget": 8.0}) and is_normal_input({"budget": 8})
    assert input_hash_or_reason({"budget": 8.0}) != "0x" + input_hash({"budget": 8}).hex()
    assert input_hash({"\u00e9": 1}) != input_hash({"e\u0301": 1})  # NFC vs NFD: two inputs
    assert normal_input({"e\u0301": 1}) == {"e\u0301": 1}


# -- 3. ChallengeView.cleared -----------------------------------------------------------------------


def _contract_resolve(fraud: int, honest: int, base: int, quorum_bps: int) -> tuple[bool, bool]:
    """TaskManager.resolve's verdict and clearing rule, transcribed (contracts/src/TaskManager.sol)."""
    quorum = base * quorum_bps
    is_fraud = fraud * 10_000 >= quorum and fraud > honest
    cleared = not is_fraud and honest >= fraud and honest * 10_000 >= quorum
    return is_fraud, cleared


def test_defence_cleared_is_exactly_the_contracts_rule() -> None:
    """Attack: find a vote tally the validator reads as "cleared" (and so never challenges again)
    that the contract resolved with no verdict (the node was not paid, the leaf is open to a new
    challenge), or the reverse. Defeated: over a grid of tallies, quorums and bases (zero
    included) `ChallengeView.cleared` equals `TaskManager.resolve`'s ``cleared``; an open, fraud or
    decoy challenge is never "cleared"."""
    stakes = [0, 1, 2, 3, 5, 7, 10, 30, 100]
    for fraud, honest, base, q in itertools.product(
        stakes, stakes, [0, 1, 10, 14, 100], [0, 1, 3_000, 10_000]
    ):
        is_fraud, cleared = _contract_resolve(fraud, honest, base, q)
        status = ChallengeStatus.FRAUD if is_fraud else ChallengeStatus.NOT_FRAUD
        view = ChallengeView(1, 1, "0xc", 0, status, "0xn", b"\x00" * 32, fraud, honest, base)
        assert view.cleared(q) == cleared, (fraud, honest, base, q)
        for other in (ChallengeStatus.OPEN, ChallengeStatus.DECOY, ChallengeStatus.FRAUD):
            assert not ChallengeView(1, 1, "0xc", 0, other, "0xn", b"", fraud, honest, base).cleared(q)


def test_defence_a_quorum_minority_cannot_settle_a_leaf() -> None:
    """Attack (cartel of ~30 % of the stake, node + friends): the node commits a faulty receipt and
    makes the honest voters' own check *unverifiable* during the vote, in a way the availability
    path does not cover: `Disputes._vote_one` hands only ``verdict.missing`` to `on_missing`; a
    verdict that is unverifiable because a root's origin cannot be read yet (the writer's
    manifest or trace withheld: ``origin_pending``), or a searched entry is unread, makes the
    voter abstain with nothing forced on chain, and the contract extends the vote only for an
    availability claim on *this* entry. A friend (any stake) challenges, friends with
    QUORUM_BPS of the stake vote "not fraud", the honest majority abstains: resolved NOT_FRAUD with
    ``honest >= fraud`` and a quorum, i.e. cleared. The node is paid the friend's bond (less the
    pool its friends share): the cartel loses nothing but gas.

    What the session's change adds: once the withheld data is served, every honest validator that
    finds the fault runs `Disputes.challenge`, sees ``ChallengeView.cleared`` and stops; before,
    it re-challenged and the honest majority's votes slashed the node. So a stake of QUORUM_BPS
    (30 %), not a majority, buys a fault's immunity.

    Shown here on the tally alone (the contract's rule and the validator's reading of it): 31 %
    "not fraud", 1 % fraud (the friend's challenge), 68 % abstaining is cleared.

    Fix by design: treat a clearing as final only when the fault could have been judged by the
    voters (e.g. clear only with honest stake above half of the quorum base, or re-open when the
    local verdict's finding arose from data unreadable during the vote; on the voter side, send
    ``origin_pending``/unread writers to the availability path as `_vote_one` does for ``missing``,
    and have the contract extend the vote for an availability claim on any entry a challenged
    entry's verdict depends on).

    Defence: `Disputes.challenge` stops only at a clearing that is final, `ChallengeView.settled`:
    cleared by "not fraud" stake above half of the quorum base, so a cartel below a majority
    cannot buy immunity (the honest majority re-challenges once it can judge). And `_vote_one`
    sends the writers an ``origin_pending`` verdict waits for to the availability path too."""
    total = 100
    friend_challenger, friends_not_fraud = 1, 31
    view = ChallengeView(
        1, 1, "0xfriend", 0, ChallengeStatus.NOT_FRAUD, "0xnode", b"\x01" * 32,
        fraud_stake=friend_challenger, honest_stake=friends_not_fraud, quorum_base=total,
    )  # fmt: skip
    assert view.cleared(3_000)
    assert (friend_challenger + friends_not_fraud) * 2 < total, "the cartel is a minority"
    assert not view.settled(3_000), "a minority's clearing is not final: re-challenged"
    majority = ChallengeView(
        1, 1, "0xc", 0, ChallengeStatus.NOT_FRAUD, "0xnode", b"\x01" * 32,
        fraud_stake=10, honest_stake=51, quorum_base=total,
    )  # fmt: skip
    assert majority.settled(3_000), "a majority's clearing is final: not re-litigated"
    assert _contract_resolve(friend_challenger, friends_not_fraud, total, 3_000) == (False, True)
    # had the honest 68 % been able to judge, the same leaf would have been fraud
    assert _contract_resolve(friend_challenger + 68, friends_not_fraud, total, 3_000)[0]
    # and the voter's own path: only `missing` reaches the availability path
    import inspect

    from supernet.validator.challenger import Disputes

    src = inspect.getsource(Disputes._vote_one)
    assert "if verdict.missing and self.on_missing is not None" in src
    assert "if verdict.origin_pending and self.on_missing is not None" in src
    src = inspect.getsource(Disputes.challenge)
    assert "view.settled(" in src and "view.cleared(" not in src


# -- 4. Disputes.on_missing -> Availability.note ----------------------------------------------------


def test_defence_on_missing_every_step_keeps_one_course(tmp_path: Path) -> None:
    """Attack (node or griefing challenger): keep a challenged entry unreadable to the voters so
    that `_vote_one`, re-run on every step of a day-long vote, calls `on_missing` again and again:
    if each note restarted the retries, the availability challenge would never open (a loop that
    saves the node), and if each opened a new one, voters would post a bond per step.
    Defeated: `Database.add_missing` is idempotent for an entry being retried, challenged or
    slashed (attempts and schedule kept); `Availability._open` adopts an open or answered claim
    (`entry_availability`, `AvailabilityAlreadyOpen`/`AlreadyAnswered`), and the contract allows one
    availability claim per entry, so all voters together risk one bond per entry."""
    db = Database(tmp_path / "v.sqlite")
    db.add_missing(7, 0, "challenged in 1, unreadable to this voter", time.time() + 100)
    db.update_missing(7, 0, attempts=3, next_try=time.time() + 50)
    for _ in range(5):  # the next steps' notes
        db.add_missing(7, 0, "challenged in 1, unreadable to this voter", time.time())
    (row,) = db.missing("retrying")
    assert row.attempts == 3 and row.next_try > time.time() + 40
    db.update_missing(7, 0, attempts=4, availability_id=9, status="challenged")
    db.add_missing(7, 0, "again", time.time())
    (row,) = db.missing("challenged")
    assert row.availability_id == 9 and row.attempts == 4 and db.missing("retrying") == []
