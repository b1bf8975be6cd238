"""Re-checks of local failures: back-off in chain time, restarts, the entry's own window, what
ends unchecked.

A verdict that only says checking failed on this validator (`Verdict.local_failure`: memory, a
bug) is no verdict: the entry is checked again in full (`Validator._check_diverged`). It was
checked again *every step* while its *batch's* window was open, so (1) a check that fails here
every time (a crafted trace that runs validators out of memory) cost a full check each step, and
(2) an entry whose data came by an availability answer, which gives it a full window from the
answer, was dropped at its batch's window: a cheat found on re-check went unchallenged. Now a
re-check waits ``RECHECK_BASE_S * 2**(attempts - 1)`` chain seconds, at most a quarter of the time
left in the entry's own window, drawn down to half at random (`service.recheck_at`); the due
re-checks run before a step's pending batches; an entry whose window closes while its check still
fails here is logged and recorded ``unchecked`` (tests/unit/test_review_session_changes5.py holds
the attacks on the step-counted first version: long steps, a known last call, an error spending it).

Real parts: Anvil with the contracts, the embedded store, SmolLM2 (`vnet`, `validator_factory`),
the real `Validator.step`; the scorer is the real one, run through a switch that fails its passes
as an allocator does while memory is short (`scoring_through`). The back-off's random draw is
pinned to its longest delay where a test steps to exact chain times (``exact_delays``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from supernet.sdk.chain.anvil import advance_to
from supernet.sdk.chain.merkle import ReceiptTree
from supernet.sdk.chain.receipts import trace_cid
from supernet.validator import service
from supernet.validator.cli import app as validator_app
from supernet.validator.db import _MIGRATIONS, _SCHEMA, Database, DivergedRow
from supernet.validator.service import RECHECK_BASE_S, RECHECK_SHARE, recheck_at
from typer.testing import CliRunner
from validator_fixtures import VNet

from tests.unit.test_review_validator_budgets import scoring_through


class Memory:
    """The validator's scoring as its memory allows: each pass raises an allocation error while
    ``short``. ``at`` is set by the test to the chain time of each validator step; the times at
    which a pass was tried are recorded (one check may try several passes: the group, then each
    alone)."""

    def __init__(self) -> None:
        self.short, self.at = True, 0
        self.tried: set[int] = set()

    def __call__(self, real_score: Callable[[Any], Any], requests: Any) -> Any:
        self.tried.add(self.at)
        if self.short:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory")
        return real_score(requests)


class Longest:
    """The back-off's random draw pinned to its longest delay."""

    def uniform(self, low: float, high: float) -> float:
        return high


@pytest.fixture
def exact_delays(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "_jitter", Longest())


async def step_at(v: Any, memory: Memory, w3: Any, t: int) -> None:
    """One validator step with the chain at time ``t`` (mined there)."""
    advance_to(w3, t)
    memory.at = t
    await v.step()


def test_recheck_delays_double_are_capped_by_the_time_left_and_drawn_at_random() -> None:
    end = 100_000
    assert recheck_at(1, 0, end) <= RECHECK_BASE_S and recheck_at(1, 0, end) >= RECHECK_BASE_S // 2
    assert RECHECK_BASE_S * 2 <= recheck_at(3, 0, end) <= RECHECK_BASE_S * 4
    # late in the window: at most a quarter of what is left, whatever the attempts
    assert recheck_at(30, end - 400, end) <= end - 400 + 400 // RECHECK_SHARE
    assert recheck_at(30, end - 3, end) == end - 2  # the last seconds: due again a second later
    assert recheck_at(30, end + 5, end) == end + 6  # past the end: nothing negative
    draws = {recheck_at(8, 0, end) for _ in range(50)}
    assert len(draws) > 10 and min(draws) >= RECHECK_BASE_S * 64 and max(draws) <= RECHECK_BASE_S * 128


def test_the_back_off_is_kept_in_the_database_and_old_files_are_migrated(tmp_path: Path) -> None:
    """A file of schema version 1 (a diverged writer pending) gains the back-off columns; the
    attempts, the chain time a re-check is due and the outcomes survive closing the file."""
    path = tmp_path / "v.sqlite"
    old = sqlite3.connect(path)
    old.executescript(_SCHEMA)
    for sql in _MIGRATIONS[0]:
        old.execute(sql)
    old.execute("INSERT INTO diverged (batch_id, idx) VALUES (3, 1)")
    old.execute("PRAGMA user_version = 1")
    old.commit()
    old.close()
    db = Database(path)
    assert db.schema_version() == len(_MIGRATIONS) == 4
    assert db.diverged_rows() == [DivergedRow(3, 1)]  # a writer from before: due each step
    assert db.recheck_attempts(4, 0) == 0
    db.mark_recheck(4, 0, next_at=1_000)
    db.mark_recheck(4, 0, next_at=2_000)
    db.close()
    again = Database(path)
    assert again.recheck_attempts(4, 0) == 2
    assert again.diverged_rows() == [DivergedRow(3, 1), DivergedRow(4, 0, 2, 2_000)]
    again.settle_diverged(4, 0, outcome="unchecked")
    again.settle_diverged(3, 1, outcome="unchallenged")
    again.close()
    third = Database(path)
    assert third.diverged_pending() == [] and third.unchecked() == [(4, 0)]
    assert third.unchallenged() == [(3, 1)]
    third.mark_recheck(4, 0, next_at=5_000)  # failed again later: pending again, counted on
    assert third.diverged_rows() == [DivergedRow(4, 0, 3, 5_000)] and third.unchecked() == []


@pytest.mark.anvil
@pytest.mark.model
async def test_rechecks_back_off_and_a_cheat_found_on_recheck_is_challenged(
    vnet: VNet, validator_factory: Any, exact_delays: None
) -> None:
    """The node cheats on its tokens; this validator's scoring fails (memory) at first. The entry
    is checked at once, then not before its back-off is over (a second before: nothing), then at
    it; memory back, the next due check finds the cheat, records it and challenges it."""
    cheat, _ = await vnet.run_batch(["Say hi."], max_new_tokens=4, fault_plan=[{"tokens": 1.0}])
    memory, events = Memory(), list[Any]()
    w3 = vnet.contracts.w3
    v = scoring_through(vnet, validator_factory, memory, events=events)
    async with v:
        t1 = v.chain.timestamp() + 1
        await step_at(v, memory, w3, t1)
        assert memory.tried == {t1}
        [row] = v.db.diverged_rows()
        assert row.attempts == 1 and t1 < row.next_at <= t1 + 1 + RECHECK_BASE_S
        await step_at(v, memory, w3, row.next_at - 1)
        assert memory.tried == {t1}  # backing off
        await step_at(v, memory, w3, row.next_at)
        assert memory.tried == {t1, row.next_at}
        [second] = v.db.diverged_rows()
        assert second.attempts == 2 and second.next_at - row.next_at > RECHECK_BASE_S  # doubled
        memory.short = False
        await step_at(v, memory, w3, second.next_at - 1)
        assert v.db.checks(cheat) == [] and not [e for e in events if e.kind == "verdict"]
        await step_at(v, memory, w3, second.next_at)
        [check] = v.db.checks(cheat)
        assert not check.ok and "llm.token" in check.kinds and check.challenge_id is not None
        assert v.db.diverged_pending() == [] and v.db.unchecked() == []
        assert [e.data["index"] for e in events if e.kind == "challenge"] == [0]


@pytest.mark.anvil
@pytest.mark.model
async def test_the_back_off_survives_a_restart(
    vnet: VNet, validator_factory: Any, exact_delays: None
) -> None:
    """A failed check, a restart on the same database file: the entry is due where it was, not
    at the restart's first step."""
    batch_id, _ = await vnet.run_batch(["Say hi."], max_new_tokens=4)
    memory = Memory()
    w3 = vnet.contracts.w3
    v = scoring_through(vnet, validator_factory, memory, challenge=False)
    async with v:
        t1 = v.chain.timestamp() + 1
        await step_at(v, memory, w3, t1)
        [row] = v.db.diverged_rows()
        db_path = v.settings.db_path
    restarted = scoring_through(vnet, validator_factory, memory, challenge=False)
    assert restarted.settings.db_path == db_path  # a new Database on the same file
    async with restarted:
        assert restarted.db.diverged_rows() == [row]
        await step_at(restarted, memory, w3, row.next_at - 1)
        assert memory.tried == {t1}
        await step_at(restarted, memory, w3, row.next_at)
        assert memory.tried == {t1, row.next_at}
        assert restarted.db.recheck_attempts(batch_id, 0) == 2 and restarted.db.checks(batch_id) == []


@pytest.mark.anvil
@pytest.mark.model
async def test_tries_thicken_toward_the_window_end_and_an_entry_left_unchecked_is_reported(
    vnet: VNet, validator_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Scoring fails here for good; the validator steps whenever the entry is due. The tries are
    few (about log(window)), their gaps shrink toward the window's end, the last ones seconds
    from it; once the window closed nothing is tried, and the entry ends *unchecked*: a log line,
    the database (`Database.unchecked`, no verdict recorded), ``validator status`` and the
    ``unverifiable`` receipts counter."""
    batch_id, _ = await vnet.run_batch(["Say hi."], max_new_tokens=4, fault_plan=[{"tokens": 1.0}])
    memory, events = Memory(), list[Any]()
    v = scoring_through(vnet, validator_factory, memory, events=events)
    w3 = vnet.contracts.w3
    window = vnet.contracts.task_manager.challenge_window()
    async with v:
        end = v.chain.batch(batch_id).committed_at + window
        t = v.chain.timestamp() + 1
        while t < end:
            await step_at(v, memory, w3, t)
            [row] = v.db.diverged_rows()
            t = max(row.next_at, t + 1)
        tries = sorted(memory.tried)
        assert v.db.recheck_attempts(batch_id, 0) == len(tries)  # one try a due time
        gaps = [b - a for a, b in itertools.pairwise(tries)]
        assert 5 <= len(tries) <= 60, tries  # a few a window, not one a step
        assert tries[-1] >= end - 4 and max(gaps[-5:]) < max(gaps), tries  # thickening at the end
        caplog.set_level(logging.ERROR, logger="supernet.validator.service")
        await step_at(v, memory, w3, end + 1)
        assert sorted(memory.tried) == tries  # past the window: nothing tried
        assert v.db.diverged_pending() == [] and v.db.unchecked() == [(batch_id, 0)]
        assert v.db.checks(batch_id) == []  # no verdict of this validator's: none was reached
        status = CliRunner().invoke(validator_app, ["status", "--db", str(v.settings.db_path)])
        assert status.exit_code == 0, status.output
        assert json.loads(status.output)["unchecked"] == [{"batch": batch_id, "index": 0}]
        [line] = [r.getMessage() for r in caplog.records if "UNCHECKED" in r.getMessage()]
        assert f"batch {batch_id} #0" in line and f"{len(tries)} times" in line
        [verdict] = [e.data for e in events if e.kind == "verdict"]
        assert verdict["unverifiable"].startswith("unchecked here") and verdict["evidence"] is None
        assert v.metrics.receipts.labels(result="unverifiable")._value.get() == 1
        assert not [e for e in events if e.kind == "challenge"]


@pytest.mark.anvil
@pytest.mark.model
async def test_an_entry_posted_by_an_availability_answer_is_rechecked_in_its_own_window(
    vnet: VNet, validator_factory: Any
) -> None:
    """The node withholds a cheat's trace; claimed late in the batch's window, it posts it on
    chain, which gives the entry a full window from the answer (the contract's). Checking the
    posted entry fails here; after the batch's window (inside the entry's) memory is back: the
    re-check finds the cheat and the contract takes the challenge. It used to be dropped at the
    batch's window, unchecked."""
    vnet.faults(withhold=1.0, tokens=1.0)
    try:
        batch_id, receipts = await vnet.run_batch(["Say hi."], max_new_tokens=4)
    finally:
        vnet.faults()
    memory = Memory()
    w3 = vnet.contracts.w3
    window = vnet.contracts.task_manager.challenge_window()
    fast = {"availability_retries": 2, "availability_backoff_s": 0.1}
    v = scoring_through(vnet, validator_factory, memory, **fast)
    async with v:
        end = v.chain.batch(batch_id).committed_at + window
        advance_to(w3, end - 40)  # the batch's window about to close: claimed at once
        for _ in range(10):
            await v.step()
            if v.db.missing("challenged"):
                break
            await asyncio.sleep(0.15)  # the availability retries' back-off
        [row] = v.db.missing("challenged")
        assert memory.tried == set()  # its data was missing: nothing scored yet
        node_tm = vnet.contracts.as_account(vnet.node).task_manager
        trace = vnet.traces[trace_cid(receipts[0].trace_hash)]
        proof = ReceiptTree(receipts).proof_at(0)
        node_tm.answer_availability(row.availability_id, receipts[0], proof, trace)
        answered = v.chain.answered_at(batch_id, 0)
        assert end - 40 <= answered < end
        memory.at = 1
        await v.step()  # the posted entry is checked: scoring fails here
        assert memory.tried == {1} and v.db.missing()[0].status == "answered"
        [row] = v.db.diverged_rows()
        assert row.batch_id == batch_id and row.attempts == 1
        memory.short = False
        # past the batch's window, inside the entry's (answered + window)
        await step_at(v, memory, w3, max(end + 60, row.next_at))
        [check] = v.db.checks(batch_id)
        assert not check.ok and check.challenge_id is not None  # found and challenged on chain
        assert end < v.chain.timestamp() < answered + window
        assert v.db.diverged_pending() == [] and v.db.unchecked() == []


def test_a_fault_found_too_late_stays_listed_as_unchallenged(tmp_path: Path) -> None:
    """`Disputes.challenge` records a fault whose challenge the contract refused (its window had
    closed) as ``unchallenged`` (`Database.mark_unchallenged`); the entry's settling afterwards
    keeps that outcome, and ``validator status`` lists it."""
    path = tmp_path / "v.sqlite"
    db = Database(path)
    db.mark_unchallenged(7, 2)  # a sampled entry: no diverged row before
    db.mark_recheck(8, 0, next_at=10)
    db.mark_unchallenged(8, 0)  # a re-checked one
    db.settle_diverged(8, 0)  # `check_entry` settles it afterwards, with no outcome of its own
    assert db.unchallenged() == [(7, 2), (8, 0)] and db.unchecked() == [] and db.diverged_pending() == []
    db.close()
    status = CliRunner().invoke(validator_app, ["status", "--db", str(path)])
    assert status.exit_code == 0, status.output
    assert json.loads(status.output)["unchallenged"] == [{"batch": 7, "index": 2}, {"batch": 8, "index": 0}]
