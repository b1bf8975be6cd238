"""Adversarial review of the validator's batch turns and chain-time re-checks (this session's
change): `Validator._check_batches` / `_open_batch` / `_group_checks` / `process_batch` (pending
batches checked in turns, up to ``ACTIVE_BATCHES`` at once, a group of ``RECEIPTS_PER_PASS``
receipts a turn, over `Verifier.verify_groups`), and `recheck_at` / `_check_diverged` /
`_settle` / `_closed` (a local failure backed off in chain time).

Real parts: the validator's `Database`, the real `Validator` methods named above (bound to a
stand-in that holds them, as tests/unit/test_review_session_changes5.py's ``Rechecks`` does),
the real `Verifier.verify_groups` pipeline (staging the next group while the batch is
suspended), the real `Verdict` / `publish` / `ChallengeWindowClosed`. A chain clock the test
moves while a group is "scored" stands in for Anvil and SmolLM2 (a window of groups runs in
milliseconds; each group's cost in chain time is what its real check would take at scale).

What was tried, and what was found:

1. FIXED (was FOUND; stall -> unchecked cheat): the turns only covered the batches pending when the step
   began. `_check_batches` reads `pending_batches` once and runs until every batch is done; a
   batch committed during that time, or whose seed was not ready when it was opened
   (`_open_batch` -> ``None``: dropped for the step), waits for the flood's *whole* check, as
   before the change. A node commits its flood, then its cheat a moment later (or both together:
   the cheat's seed block is not mined yet when the step opens it): the cheat is reached after
   its window, ``past_window``, unlooked at. Now the chain is followed again between rounds of
   turns and such a batch joins them.
2. FIXED (was FOUND, a known limit; stall -> unchecked cheat): ``ACTIVE_BATCHES`` of the node's own flood
   batches ahead of its cheat held the cheat out of the turns until one of them was done: the
   flood, split in 8 batches, delayed the cheat by its whole check again (8 batches of 3 groups
   held it 24 groups, one batch of 24 groups held it 1). Now every pending batch takes a turn
   before any takes a second (`TurnOrder`), those past the open ones a group at a
   time (`_turn`).
3. FIXED (was FOUND; step failure): a batch opened in its window whose faulty receipt is reached after the
   window (a long turn) records the fault, then `Disputes.challenge` raises
   ``ChallengeWindowClosed`` (not an expected race): the error ends `_check_batches` and
   `Validator.step` before manifests, writes, availability, votes and settlement; the other
   batches' turns of that step are lost, the fault is in no operator list (``unchallenged`` is
   only for re-checked entries), and a batch opened again next step counts ``batch`` twice.
   Also FIXED: a batch whose window passed mid-check kept its turns (groups nobody can act on).
   Now the window is checked before each group, each batch's turn is isolated, and the real
   `Disputes.challenge` logs a fault found after its window as UNCHALLENGED.
   Also seen: `verify_groups` cancels its staging future without awaiting it, so each batch closed
   mid-stage logged asyncio's "_GatheringFuture exception was never retrieved" ERROR (now retrieved).
4. FIXED (was FOUND, regression): an error while *opening* a batch (no ether for the bond of a challenge to
   re-send, `_retry_challenge`) now ends the turns before any batch got one: batches ahead of it
   in turn order, another node's included, are opened and closed every step, never checked,
   where the loop before checked them first. Now each batch is opened in isolation.
5. FIXED (was FOUND; stall -> unchecked cheat): a re-check due in the middle of `_check_batches` waits for
   the end of it (re-checks run only before and after the turns). A cheat whose first check fails
   here (memory the node makes short, once) is due again a minute later, but a flood's turns ran
   past its window: it ended *unchecked*. Now due re-checks are made between rounds of turns.
6. holds: an error mid-turn (no ether for a challenge's bond) closes that batch's checks: the
   staging tasks of `verify_groups` are cancelled (none left running), the batch stays pending,
   and the next step resumes it; no verdict is settled twice, every group is verified at most
   twice (the one staged when the error came); two batches' stagings never share a group.
7. holds: the chain-time back-off: a clock that stands still (an idle devnet) neither closes nor
   spends an entry; a ``next_at`` far in the past (a restart) is due at once; an entry whose window
   an availability answer extends after ``next_at`` was drawn is tried before the batch's own
   window ends and then backs off within the extended one.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from supernet.sdk.chain.contract_errors import ChallengeWindowClosed
from supernet.sdk.chain.errors import InsufficientFundsError
from supernet.validator.chain import BatchCommitted
from supernet.validator.db import CheckRow, Database
from supernet.validator.evidence import Check, Finding, Verdict
from supernet.validator.service import ACTIVE_BATCHES, RECEIPTS_PER_PASS, Validator, recheck_at
from supernet.validator.turns import TurnOrder
from supernet.validator.verifier import Verifier

ME = "0x" + "cc" * 20
NODE = "0x" + "aa" * 20
OTHER = "0x" + "bb" * 20
LEAF = b"\x11" * 32
WINDOW = 3_600


@dataclass
class Chain:
    """The chain as the validator reads it: a clock the test moves, batch headers, seeds."""

    now: int = 1_000
    window: int = WINDOW
    committed: dict[int, int] = field(default_factory=dict)
    seed_at: dict[int, int] = field(default_factory=dict)

    def timestamp(self) -> int:
        return self.now

    def params(self) -> SimpleNamespace:
        return SimpleNamespace(challenge_window=self.window)

    def batch(self, batch_id: int) -> SimpleNamespace:
        return SimpleNamespace(committed_at=self.committed[batch_id])

    def batch_seed(self, batch_id: int) -> bytes | None:
        return None if self.now < self.seed_at.get(batch_id, 0) else b"\x01" * 32


@dataclass
class Groups:
    """The validator's `Verifier` as far as the turns use it: the real `verify_groups` pipeline
    over a stage that records what it staged and a finish that moves the chain clock by what the
    group's check costs (``cost``), faulty where ``faulty`` says, a local failure of a group
    check where ``local`` says (a single re-check, `verify`, passes that)."""

    chain: Chain
    cost: Callable[[int], int] = lambda batch_id: 1
    faulty: set[tuple[int, int]] = field(default_factory=set)
    local: set[tuple[int, int]] = field(default_factory=set)
    staged: list[tuple[int, int]] = field(default_factory=list)
    finished: list[list[tuple[int, int]]] = field(default_factory=list)
    on_group: Callable[[int], None] | None = None
    in_flight: int = 0
    most_in_flight: int = 0

    verify_groups = Verifier.verify_groups

    async def _stage_safe(self, batch_id: int, node: str, index: int, manifest: Any) -> tuple[int, int]:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0)  # a store read: other batches' turns run meanwhile
            self.staged.append((batch_id, index))
            return batch_id, index
        finally:
            self.in_flight -= 1

    async def _finish(self, staged: list[tuple[int, int]]) -> list[Verdict]:
        batch_id = staged[0][0]
        self.chain.now += self.cost(batch_id)  # the group's scoring, in chain time
        self.finished.append(list(staged))
        if self.on_group is not None:
            self.on_group(batch_id)
        return [self.verdict(b, i, group=True) for b, i in staged]

    async def verify(
        self, batch_id: int, node: str, index: int, manifest: Any, recheck_all: bool = False
    ) -> Verdict:
        return self.verdict(batch_id, index, group=False)

    def verdict(self, batch_id: int, index: int, group: bool) -> Verdict:
        if group and (batch_id, index) in self.local:
            why = "checking failed on this validator: CUDA out of memory"
            return Verdict(batch_id, index, LEAF, unverifiable=why, validator=ME, local=True)
        bad = (batch_id, index) in self.faulty
        findings = (Finding(Check.LLM_TOKEN, "a greedy token that is not the argmax"),) if bad else ()
        return Verdict(batch_id, index, LEAF, findings=findings, validator=ME)


@dataclass
class Disputes:
    """`Disputes` as far as the turns use it; ``challenge`` reverts as TaskManager's
    `_checkChallengeable` does once the window is over (`Disputes.challenge` re-raises it: not in
    `EXPECTED_RACES`), or raises ``error``."""

    chain: Chain
    db: Database
    opened: list[tuple[int, int, int]] = field(default_factory=list)
    error: Exception | None = None
    ran: list[str] = field(default_factory=list)
    answered_at: dict[tuple[int, int], int] = field(default_factory=dict)
    enabled: bool = True

    async def manifest(self, batch: Any, reuse: bool = False) -> Any:
        return SimpleNamespace(readable=lambda i: True)

    async def challenge(self, batch: Any, verdict: Verdict, evidence_cid: str) -> int | None:
        if self.error is not None:
            raise self.error
        end = self.chain.committed[batch.batch_id] + self.chain.window
        answered = self.answered_at.get((batch.batch_id, verdict.index), 0)
        if self.chain.now >= end and (not answered or self.chain.now >= answered + self.chain.window):
            raise ChallengeWindowClosed(end)
        self.opened.append((batch.batch_id, verdict.index, self.chain.now))
        self.db.set_check_challenge(batch.batch_id, verdict.index, len(self.opened))
        return len(self.opened)

    async def vote_open(self, now: int, until: float | None = None) -> None:
        self.ran.append("vote")

    async def settle(self, now: int) -> None:
        self.ran.append("settle")


@dataclass
class Availability:
    chain: Chain
    answered_at: dict[tuple[int, int], int] = field(default_factory=dict)
    noted: list[tuple[int, int]] = field(default_factory=list)
    db: Database | None = None

    def note(self, batch: Any, index: int, reason: str) -> None:
        self.noted.append((batch.batch_id, index))
        if self.db is not None:  # as the real one: the entry is the availability path's from now
            self.db.add_missing(batch.batch_id, index, reason, 0.0)

    async def deadline(self, batch_id: int, index: int | None = None) -> int:
        """`Availability.deadline` as the contract's `_checkChallengeable` has it."""
        end = self.chain.committed[batch_id] + self.chain.window
        answered = 0 if index is None else self.answered_at.get((batch_id, index), 0)
        return max(end, answered + self.chain.window) if answered else end

    async def step(self, now: int) -> None:
        pass


class Store:
    def __init__(self) -> None:
        self.n = 0

    async def put_dag(self, doc: Any, pin: bool = False) -> str:
        self.n += 1
        return f"bafyevidence{self.n}"


@dataclass
class Turns:
    """A stand-in `Validator` holding the real batch turns, `_settle`, window checks and re-checks."""

    db: Database
    chain: Chain
    verifier: Groups
    disputes: Disputes
    availability: Availability
    address: str = ME
    store: Store = field(default_factory=Store)
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    follower: Any = field(default_factory=lambda: SimpleNamespace(step=lambda: False))
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    turn_order: TurnOrder = field(default_factory=TurnOrder)
    manifests: Any = field(default_factory=lambda: SimpleNamespace(step=_nothing))
    writes: Any = field(default_factory=lambda: SimpleNamespace(step=_nothing))

    step = Validator.step
    _check_batches = Validator._check_batches
    _turn = Validator._turn
    process_batch = Validator.process_batch
    _open_batch = Validator._open_batch
    _group_checks = Validator._group_checks
    _settle = Validator._settle
    _window_over = Validator._window_over
    _entry_window = Validator._entry_window
    _retry_challenge = Validator._retry_challenge
    _check_diverged = Validator._check_diverged
    check_entry = Validator.check_entry
    _closed = Validator._closed

    def sample(self, batch: Any, seed: bytes) -> list[int]:
        return list(range(batch.count))  # every receipt sampled: only the groups matter here

    def _emit(self, kind: str, **data: Any) -> None:
        self.events.append((kind, data))

    def commit(self, batch_id: int, node: str, count: int) -> None:
        ev = BatchCommitted(batch_id, node, b"\x00" * 32, count, batch_id, f"bafym{batch_id}", batch_id, 0)
        self.db.record_events([ev], batch_id + 1)
        self.chain.committed[batch_id] = self.chain.now

    def status(self, batch_id: int) -> str:
        row = self.db.batch(batch_id)
        assert row is not None
        return row.status

    def counted(self, kind: str, batch_id: int) -> int:
        return sum(1 for k, d in self.events if k == kind and d.get("batch_id") == batch_id)


async def _nothing(now: int) -> None:
    return None


def turns(tmp_path: Path, cost: Callable[[int], int] = lambda b: 1) -> Turns:
    db = Database(tmp_path / "v.sqlite")
    chain = Chain()
    disputes = Disputes(chain, db)
    return Turns(db, chain, Groups(chain, cost), disputes, Availability(chain, disputes.answered_at, db=db))


def groups_of(batch_id: int, receipts: int) -> int:
    return -(-receipts // RECEIPTS_PER_PASS)


# -- 1. batches the step did not see when it began ----------------------------------------------------


@pytest.mark.parametrize("late", ["committed_during_the_step", "seed_mined_during_the_step"])
async def test_defence_a_cheat_committed_or_seeded_during_the_step_joins_the_turns(
    tmp_path: Path, late: str
) -> None:
    """Attack (was FOUND): the node commits a flood batch of 40 honest receipts (5 groups; each
    group's check takes a quarter of a window at scale) and then its cheat, a moment after the
    validator's step began (or together with the flood: the cheat's seed block is not mined when
    the step opens it). `_check_batches` read `pending_batches` once and ran until every batch it
    opened was done: the cheat waited for the flood's whole check and ended ``past_window``.
    Defence (by design): between rounds of turns the chain is followed again, and a batch
    committed meanwhile, or whose seed came, joins the turns: the cheat is challenged in its
    window, after a group or two of the flood."""
    flood, cheat = 1, 2
    v = turns(tmp_path, cost=lambda b: WINDOW // 4 + 1)
    v.verifier.faulty.add((cheat, 0))
    v.commit(flood, NODE, 40)
    if late == "seed_mined_during_the_step":
        v.commit(cheat, NODE, 1)
        v.chain.seed_at[cheat] = v.chain.now + 1  # its seed block comes a second later
    else:
        v.verifier.on_group = lambda b: None if v.db.batch(cheat) else v.commit(cheat, NODE, 1)
    await v._check_batches()
    [(batch_id, index, at)] = v.disputes.opened
    assert (batch_id, index) == (cheat, 0) and at < v.chain.committed[cheat] + WINDOW
    assert v.status(cheat) == "done" and v.status(flood) in ("done", "past_window")


# -- 2. the node's own batches fill the turns ---------------------------------------------------------


async def test_defence_batches_of_its_own_hold_a_cheat_for_one_group_each(tmp_path: Path) -> None:
    """Attack (was a known limit): the node splits its flood into ``ACTIVE_BATCHES`` batches of 3
    groups each (24 receipts) and commits its cheat after them, all pending at the step's start;
    each group takes a sixteenth of a window to check. The turns held at most ``ACTIVE_BATCHES``
    batches, first come first: the flood's 8 took every turn and the cheat was opened only when
    one of them was done, here when their own windows closed (16 groups, a window): finished
    ``past_window``, unchecked. Defence (by design): every pending batch takes a turn before any
    takes a second (`TurnOrder`); past ``ACTIVE_BATCHES`` open ones, a batch's turn
    opens it for one group and closes it again (`_turn`). The cheat is checked after one group
    of each flood batch and challenged in its window; the same holds for 3x as many flood
    batches (a turn each, a memory bound: never more than ``ACTIVE_BATCHES`` open). Control: the
    same work in ONE flood batch of 24 groups delays the cheat by one group."""
    for flood_batches in (ACTIVE_BATCHES, 3 * ACTIVE_BATCHES):
        cheat = flood_batches + 1
        group_cost = WINDOW // (4 * flood_batches) + 1
        v = turns(tmp_path / str(flood_batches), cost=lambda b, c=group_cost: c)
        v.verifier.faulty.add((cheat, 0))
        for b in range(1, flood_batches + 1):
            v.commit(b, NODE, 3 * RECEIPTS_PER_PASS)
        v.commit(cheat, NODE, 1)
        await v._check_batches()
        [(batch_id, index, at)] = v.disputes.opened
        assert (batch_id, index) == (cheat, 0) and at < v.chain.committed[cheat] + WINDOW // 2
        order = [g[0][0] for g in v.verifier.finished]
        assert order.index(cheat) == flood_batches  # one group of each flood batch first
        assert all(v.status(b) == "done" for b in range(1, cheat + 1))
        assert max(Counter(v.verifier.staged).values()) == 1  # nothing staged twice by the reopening
        assert [v.counted("batch", b) for b in range(1, cheat + 1)] == [1] * cheat  # announced once

    control = turns(tmp_path / "control", cost=lambda b: WINDOW // 16 + 1)
    control.verifier.faulty.add((2, 0))
    control.commit(1, NODE, 3 * ACTIVE_BATCHES * RECEIPTS_PER_PASS)  # the same work in one batch
    control.commit(2, NODE, 1)
    await control._check_batches()
    [(batch_id, index, at)] = control.disputes.opened
    assert (batch_id, index) == (2, 0) and at <= control.chain.committed[2] + WINDOW // 8 + 2


# -- 3. a batch opened in its window and reached after it -------------------------------------------


async def test_defence_a_batch_reached_after_its_window_takes_no_turn_and_the_step_goes_on(
    tmp_path: Path,
) -> None:
    """(Was FOUND.) A batch is opened in its window; its faulty receipt is in its second group,
    reached a turn later, after the window (each group takes half a window; another node's batch
    takes turns too). Its window was checked only when it was opened: `_settle` recorded the fault,
    `Disputes.challenge` raised ``ChallengeWindowClosed``, and the error ended the step before
    votes and settlement. Defence (by design): the window is checked before each group (the batch
    is finished ``past_window``, no turn spent on what nobody can act on), each batch's turn is
    isolated (an error defers that batch only) and the real `Disputes.challenge` logs a fault
    found after its window as UNCHALLENGED instead of raising. The step goes on and the other
    batch is checked in full; each batch counts ``batch`` once."""
    cheat, other = 1, 2
    v = turns(tmp_path, cost=lambda b: WINDOW // 2 + 1)
    v.verifier.faulty.add((cheat, RECEIPTS_PER_PASS))  # the first receipt of its second group
    v.commit(cheat, NODE, 2 * RECEIPTS_PER_PASS)
    v.commit(other, OTHER, 4 * RECEIPTS_PER_PASS)
    v.chain.committed[other] = v.chain.now + 10 * WINDOW  # its window far off
    await v.step()
    assert v.disputes.ran == ["vote", "settle"]  # the step went on
    assert v.status(cheat) == "past_window" and len(v.db.checks(cheat)) == RECEIPTS_PER_PASS
    assert v.status(other) == "done" and len(v.db.checks(other)) == 4 * RECEIPTS_PER_PASS
    assert v.counted("batch", cheat) == 1 and v.counted("batch", other) == 1
    assert [k for k, n in Counter(v.verifier.staged).items() if n > 1] == []

    # a fault found in a group that began in the window and ended after it: that batch is
    # deferred (the stand-in raises what the contract reverts with), the other goes on
    late = turns(tmp_path / "late", cost=lambda b: WINDOW + 1 if b == cheat else 1)
    late.verifier.faulty.add((cheat, 0))
    late.commit(cheat, NODE, 1)
    late.commit(other, OTHER, 2 * RECEIPTS_PER_PASS)
    late.chain.committed[other] = late.chain.now + 10 * WINDOW
    await late.step()
    assert late.disputes.ran == ["vote", "settle"] and late.status(other) == "done"
    assert late.disputes.opened == [] and not late.db.checks(cheat)[0].ok


async def test_defence_a_batch_past_its_window_gives_up_its_turns(tmp_path: Path) -> None:
    """(Was FOUND.) A flood batch of 6 groups whose window passes after its second (a long group
    each): `_group_checks` never looked at the window again, and its last 4 groups were checked,
    turns nobody can act on, taken from another node's batch. Defence: the window is checked
    before each group; the batch is finished ``past_window`` after its second."""
    v = turns(tmp_path, cost=lambda b: WINDOW // 2 + 1 if b == 1 else 1)
    v.commit(1, NODE, 6 * RECEIPTS_PER_PASS)
    v.commit(2, OTHER, 6 * RECEIPTS_PER_PASS)
    v.chain.committed[2] = v.chain.now + 10 * WINDOW  # the other's window is far off
    await v._check_batches()
    assert len([g for g in v.verifier.finished if g[0][0] == 1]) == 2
    assert v.status(1) == "past_window" and v.status(2) == "done"


# -- 4. an error while opening a batch -------------------------------------------------------------


async def test_defence_an_error_opening_one_batch_defers_that_batch_only(tmp_path: Path) -> None:
    """(Was FOUND, a regression of the turns.) The validator's balance cannot pay a challenge bond
    for a while. Batch 2 (node X) holds a fault recorded before, its challenge not sent:
    `_open_batch` re-sends it (`_retry_challenge`) and raises ``InsufficientFundsError``. Batch 1
    (another node, ahead in turn order) was closed with the rest, unchecked, every step.
    Defence: each batch is opened and turned in isolation: batch 1 is checked, batch 2 stays
    pending (its fault re-sent once a bond can be paid), and the step goes on."""
    v = turns(tmp_path)
    v.commit(1, OTHER, RECEIPTS_PER_PASS)
    v.commit(2, NODE, 1)
    v.verifier.faulty.add((2, 0))
    v.disputes.error = InsufficientFundsError("account cannot pay for TaskManager.challenge")
    v.db.record_check(CheckRow(2, 0, False, "llm.token", "bafyx", None))  # its challenge not sent
    await v.step()
    assert v.disputes.ran == ["vote", "settle"]
    assert v.status(1) == "done" and len(v.db.checks(1)) == RECEIPTS_PER_PASS
    assert v.status(2) == "pending" and v.counted("batch", 1) == 1
    v.disputes.error = None  # the bonds came back
    await v.step()
    assert v.status(2) == "done" and [(b, i) for b, i, _ in v.disputes.opened] == [(2, 0)]


# -- 5. a re-check due in the middle of the turns -------------------------------------------------------


async def test_defence_a_recheck_due_during_the_turns_is_made_between_them(tmp_path: Path) -> None:
    """Attack (was FOUND): the node's flood (one batch, 12 groups, each a tenth of a window) and its
    cheat, both pending at the step's start. The cheat is checked after the flood's first group,
    but that check fails on this validator (memory the node makes short at that moment): `_settle`
    backs it off to a minute later. Re-checks ran only before and after the turns, which ran for
    1.2 windows: the cheat ended *unchecked*. Defence: the re-checks that fell due are made between
    rounds of turns; the cheat is found and challenged in its window."""
    flood, cheat = 1, 2
    v = turns(tmp_path, cost=lambda b: WINDOW // 10 + 1)
    v.commit(flood, NODE, 12 * RECEIPTS_PER_PASS)
    v.commit(cheat, OTHER, 1)
    v.verifier.faulty.add((cheat, 0))
    v.verifier.local.add((cheat, 0))  # its group check fails here; checked alone, it passes
    await v.step()
    [(batch_id, index, at)] = v.disputes.opened
    assert (batch_id, index) == (cheat, 0) and at < v.chain.committed[cheat] + WINDOW
    assert v.db.unchecked() == [] and v.db.diverged_pending() == []


# -- 6. errors mid-turn: nothing leaks, nothing settled twice -----------------------------------------


async def test_defence_an_error_mid_turn_closes_that_batch_and_the_next_step_resumes(tmp_path: Path) -> None:
    """Three nodes' batches of 3 groups in turns; the first group of batch 2 holds a fault whose
    challenge cannot be paid (``InsufficientFundsError``, raised in its turn). That batch's checks
    are closed (`verify_groups` staging tasks cancelled: no task of them left) and it stays
    pending; the other two are checked in full (each batch isolated). Next step (ether back):
    batch 2 is finished, every receipt has one verdict, no verdict was
    settled twice (the recorded fault is re-sent once: `_retry_challenge`), a group is verified at
    most twice (the one staged when the error came), and two batches' stagings never mixed."""
    v = turns(tmp_path)
    for b, node in ((1, NODE), (2, OTHER), (3, "0x" + "dd" * 20)):
        v.commit(b, node, 3 * RECEIPTS_PER_PASS)
    v.verifier.faulty.add((2, 3))
    v.disputes.error = InsufficientFundsError("account cannot pay for TaskManager.challenge")
    before = asyncio.all_tasks()
    await v.step()
    for _ in range(3):
        await asyncio.sleep(0)
    assert asyncio.all_tasks() <= before  # no staging task left behind
    assert [v.status(b) for b in (1, 2, 3)] == ["done", "pending", "done"]
    assert v.verifier.in_flight == 0
    v.disputes.error = None
    await v.step()
    assert [v.status(b) for b in (1, 2, 3)] == ["done"] * 3
    for b in (1, 2, 3):
        assert sorted(c.index for c in v.db.checks(b)) == list(range(3 * RECEIPTS_PER_PASS))
    verdicts = Counter((d["batch_id"], d["index"]) for k, d in v.events if k == "verdict")
    assert set(verdicts.values()) == {1}  # each receipt settled once
    assert [(b, i) for b, i, _ in v.disputes.opened] == [(2, 3)]
    assert max(Counter(v.verifier.staged).values()) <= 2
    assert all(len({b for b, _ in g}) == 1 for g in v.verifier.finished)  # a group is one batch's


# -- 7. the chain-time back-off ---------------------------------------------------------------------


async def test_defence_the_back_off_survives_a_still_clock_a_restart_and_an_extended_window(
    tmp_path: Path,
) -> None:
    """A clock that stands still (an idle devnet: no block, no time) neither closes the entry nor
    spends it (every try passes through `_check_diverged`, due or not); after a restart with
    ``next_at`` far in the past it is due at once; an availability answer posted late in the batch's
    window (a full window from then) lets it be tried after the batch's own end, and the back-off
    drawn after it stays within the extended window."""
    v = turns(tmp_path)
    v.commit(1, NODE, 1)
    t0 = v.chain.now
    v.verifier.faulty.add((1, 0))
    v.db.mark_recheck(1, 0, recheck_at(1, t0, t0 + WINDOW))
    tries: list[int] = []
    real_check = v.check_entry

    async def check_entry(batch_id: int, index: int) -> None:
        tries.append(v.chain.now)
        v.verifier.local.add((1, 0))
        await Validator._settle(v, v.db.batch(1), 0, v.verifier.verdict(1, 0, group=True))  # type: ignore[arg-type]

    v.check_entry = check_entry  # type: ignore[method-assign]
    for _ in range(1_000):  # the clock stands still
        await v._check_diverged(t0)
    assert tries == [] and v.db.diverged_pending() == [(1, 0)] and v.db.unchecked() == []
    v.db.mark_recheck(1, 0, 5)  # a restart: next_at long past
    v.chain.now = t0 + 1
    await v._check_diverged(v.chain.now)
    assert tries == [t0 + 1]
    # an answer posts the entry late in the batch's window: a full window from then
    v.availability.answered_at[(1, 0)] = t0 + WINDOW - 10
    extended = t0 + 2 * WINDOW - 10
    v.chain.now = t0 + WINDOW + 5  # past the batch's own end
    v.db.mark_recheck(1, 0, v.chain.now)
    await v._check_diverged(v.chain.now)
    assert tries[-1] == t0 + WINDOW + 5 and v.db.unchecked() == []
    [row] = v.db.diverged_rows()
    assert v.chain.now < row.next_at <= v.chain.now + (extended - v.chain.now) // 4
    v.check_entry = real_check  # type: ignore[method-assign]
    v.verifier.local.clear()
    v.chain.now = row.next_at
    await v._check_diverged(v.chain.now)  # checked alone, it passes: found and challenged in time
    assert [(b, i) for b, i, _ in v.disputes.opened] == [(1, 0)]


# -- 8. the whole-change review's findings ------------------------------------------------------------


async def test_defence_the_turns_end_at_the_step_limit_however_many_batches_arrive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(Was FOUND by the review of the whole change.) Batches admitted between rounds made the turns
    endless while they kept coming (a busy network, or a node committing one costly batch after
    another): the step never reached its votes and settlement. Now the turns end once
    ``STEP_TURNS_S`` has passed: the step's duties run, and the turns go on next step with the
    batches served longest ago: the first batch's next group (its node had a turn before the other
    node arrived, which joins the back), then the batch that arrived."""
    from supernet.validator import service

    monkeypatch.setattr(service, "STEP_TURNS_S", 0.0)  # the limit is reached after one round
    v = turns(tmp_path)
    v.commit(1, NODE, 3 * RECEIPTS_PER_PASS)
    v.verifier.on_group = lambda b: v.commit(max(v.chain.committed) + 1, OTHER, RECEIPTS_PER_PASS)
    await v.step()
    assert v.disputes.ran == ["vote", "settle"]  # the step ended and did its duties
    assert len(v.db.checks(1)) == RECEIPTS_PER_PASS and v.status(1) == "pending"  # one turn
    v.verifier.on_group = None
    await v.step()
    assert len(v.db.checks(1)) == 2 * RECEIPTS_PER_PASS and v.status(2) == "pending"  # where it was
    await v.step()
    assert v.status(2) == "done" and len(v.db.checks(1)) == 2 * RECEIPTS_PER_PASS  # then the other node
    assert v.disputes.ran == ["vote", "settle"] * 3


async def test_defence_a_batch_arriving_mid_step_takes_its_turn_by_node(tmp_path: Path) -> None:
    """(Was FOUND by the review of the whole change.) A batch admitted between rounds was put behind
    every batch already queued: another node's batch waited for a node's whole queue, what turns
    by node are there to prevent. Now turns go by node whenever a batch arrives (`TurnOrder`):
    the other node joins the back of the nodes' rotation, so its batch takes its turn after one
    more of node A's, before A's others."""
    v = turns(tmp_path)
    for b in range(1, ACTIVE_BATCHES + 4):  # more of node A's batches than the turns hold
        v.commit(b, NODE, RECEIPTS_PER_PASS)
    other = 100

    def arrive(batch_id: int) -> None:
        if v.db.batch(other) is None:
            v.commit(other, OTHER, 1)

    v.verifier.on_group = arrive
    await v._check_batches()
    order = [g[0][0] for g in v.verifier.finished]
    # node B's batch takes its turn by node: after A's next turn, before A's others
    assert order[:4] == [1, 2, other, 3], order


async def test_defence_reopening_a_batch_respects_a_recheck_back_off(tmp_path: Path) -> None:
    """(Was FOUND by the review of the whole change.) An entry whose check failed here waits for its
    back-off (`_check_diverged`); reopening its batch next step (after another entry's error
    deferred the batch) re-verified it at once, a crafted trace costing a full check each step."""
    v = turns(tmp_path)
    v.commit(1, NODE, 2)
    v.verifier.local.add((1, 0))  # its group check fails here
    v.disputes.error = InsufficientFundsError("no ether for the bond")
    v.verifier.faulty.add((1, 1))  # the other entry's challenge cannot be paid: the batch is deferred
    await v.step()
    assert v.status(1) == "pending" and v.db.recheck_attempts(1, 0) == 1
    before = sum(1 for g in v.verifier.finished for e in g if e == (1, 0))
    await v.step()  # reopened: entry 0 is not verified again before its back-off
    assert sum(1 for g in v.verifier.finished for e in g if e == (1, 0)) == before
