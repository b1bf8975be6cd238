"""Re-checks of local failures: back-off, restarts, the entry's own window, what ends unchecked.

A verdict that only says checking failed on this validator (`Verdict.local_failure`: memory, a
bug) is no verdict: the entry is checked again in full (`Validator._check_diverged`). It was
checked again *every step* while its *batch's* window was open, so (1) a check that fails here
every time (a crafted trace that runs validators out of memory) cost a full check each step, and
(2) an entry whose data came by an availability answer, which gives it a full window from the
answer, was dropped at its batch's window: a cheat found on re-check went unchallenged. Now a
re-check waits ``2**attempts`` rounds (one round a step, counted in the database), is tried once
more at the entry's last call, runs to the entry's own deadline, and an entry whose window closes
while its check still fails here is logged and recorded ``unchecked``.

Real parts: Anvil with the contracts, the embedded store, SmolLM2 (`vnet`, `validator_factory`),
the real `Validator.step`; the scorer is the real one, run through a switch that fails its passes
as an allocator does while memory is short (`scoring_through`).
"""

from __future__ import annotations

import asyncio
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
from supernet.validator.cli import app as validator_app
from supernet.validator.db import _MIGRATIONS, _SCHEMA, Database, DivergedRow
from supernet.validator.service import LAST_CALL_PART
from typer.testing import CliRunner
from validator_fixtures import VNet

from tests.unit.test_review_validator_budgets import scoring_through


class Memory:
    """The validator's scoring as its memory allows: each pass raises an allocation error while
    ``short``. ``step`` is set by the test before each validator step; the steps in which a pass
    was tried are recorded (one check may try several passes: the group, then each alone)."""

    def __init__(self) -> None:
        self.short, self.step = True, 0
        self.tried: set[int] = set()

    def __call__(self, real_score: Callable[[Any], Any], requests: Any) -> Any:
        self.tried.add(self.step)
        if self.short:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory")
        return real_score(requests)


async def steps(v: Any, memory: Memory, numbers: range) -> None:
    for n in numbers:
        memory.step = n
        await v.step()


def test_the_back_off_is_kept_in_the_database_and_old_files_are_migrated(tmp_path: Path) -> None:
    """A file of schema version 1 (a diverged writer pending) gains the back-off columns; each
    local failure doubles the wait (``2**attempts`` rounds); the attempts, the due round, the
    round count, the last call and the ``unchecked`` outcome survive closing the file."""
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
    assert db.schema_version() == len(_MIGRATIONS) == 2
    assert db.diverged_rows() == [DivergedRow(3, 1)]  # a writer from before: due each round
    assert db.mark_recheck(4, 0, round_=0) == 1
    db.end_recheck_round()
    db.end_recheck_round()
    assert db.mark_recheck(4, 0, round_=db.recheck_round()) == 2
    db.mark_last_call(4, 0)
    db.close()
    again = Database(path)
    assert again.recheck_round() == 2
    assert again.diverged_rows() == [DivergedRow(3, 1), DivergedRow(4, 0, 2, 2 + 4, True)]
    again.settle_diverged(4, 0, outcome="unchecked")
    again.settle_diverged(3, 1)
    again.close()
    third = Database(path)
    assert third.diverged_pending() == [] and third.unchecked() == [(4, 0)]
    assert third.mark_recheck(4, 0, round_=10) == 3  # failed again later: pending again, counted on
    assert third.diverged_rows() == [DivergedRow(4, 0, 3, 10 + 8, True)] and third.unchecked() == []


@pytest.mark.anvil
@pytest.mark.model
async def test_rechecks_back_off_and_a_cheat_found_on_recheck_is_challenged(
    vnet: VNet, validator_factory: Any
) -> None:
    """The node cheats on its tokens; this validator's scoring fails (memory) until step 4. The
    entry is checked at step 1 and again at steps 3 and 7 (after 2, then 4 rounds), not at each
    step (it was: 1, 1 again in the same step, 2, 3, ...); memory back at step 5, the check at
    step 7 finds the cheat, records it and challenges it."""
    cheat, _ = await vnet.run_batch(["Say hi."], max_new_tokens=4, fault_plan=[{"tokens": 1.0}])
    memory, events = Memory(), list[Any]()
    v = scoring_through(vnet, validator_factory, memory, events=events)
    async with v:
        await steps(v, memory, range(1, 5))
        assert sorted(memory.tried) == [1, 3]
        assert v.db.diverged_rows() == [DivergedRow(cheat, 0, 2, 2 + 4)]  # failed at round 2: due at 6
        memory.short = False
        await steps(v, memory, range(5, 7))
        assert sorted(memory.tried) == [1, 3] and v.db.checks(cheat) == []  # backing off
        assert not [e for e in events if e.kind == "verdict"]
        await steps(v, memory, range(7, 8))
        assert sorted(memory.tried) == [1, 3, 7]
        [check] = v.db.checks(cheat)
        assert not check.ok and "llm.token" in check.kinds and check.challenge_id is not None
        assert v.db.diverged_pending() == [] and v.db.unchecked() == []
        assert [e.data["index"] for e in events if e.kind == "challenge"] == [0]


@pytest.mark.anvil
@pytest.mark.model
async def test_the_back_off_survives_a_restart(vnet: VNet, validator_factory: Any) -> None:
    """Four steps (checks at 1 and 3), a restart on the same database file, four more: the next
    check is at step 7, where it was due, not at the restart's first step."""
    batch_id, _ = await vnet.run_batch(["Say hi."], max_new_tokens=4)
    memory = Memory()
    v = scoring_through(vnet, validator_factory, memory, challenge=False)
    async with v:
        await steps(v, memory, range(1, 5))
        db_path = v.settings.db_path
    assert sorted(memory.tried) == [1, 3]
    restarted = scoring_through(vnet, validator_factory, memory, challenge=False)
    assert restarted.settings.db_path == db_path  # a new Database on the same file
    async with restarted:
        assert restarted.db.recheck_round() == 4
        assert restarted.db.diverged_rows() == [DivergedRow(batch_id, 0, 2, 6)]
        await steps(restarted, memory, range(5, 9))
        assert sorted(memory.tried) == [1, 3, 7]
        assert restarted.db.diverged_rows() == [DivergedRow(batch_id, 0, 3, 6 + 8)]
        assert restarted.db.checks(batch_id) == []


@pytest.mark.anvil
@pytest.mark.model
async def test_the_last_attempt_is_inside_the_window_and_an_entry_left_unchecked_is_reported(
    vnet: VNet, validator_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Scoring fails here for good. Checked at steps 1 and 3 (due next at step 7); in the last
    part of the window (`LAST_CALL_PART`) it is checked once more at once (step 5), not again at
    step 6; once the window closed it is not checked, and it ends *unchecked*: a log line, the
    database (`Database.unchecked`, no verdict recorded) and the ``unverifiable`` receipts counter."""
    batch_id, _ = await vnet.run_batch(["Say hi."], max_new_tokens=4, fault_plan=[{"tokens": 1.0}])
    memory, events = Memory(), list[Any]()
    v = scoring_through(vnet, validator_factory, memory, events=events)
    w3 = vnet.contracts.w3
    window = vnet.contracts.task_manager.challenge_window()
    async with v:
        await steps(v, memory, range(1, 5))
        assert sorted(memory.tried) == [1, 3]
        end = v.chain.batch(batch_id).committed_at + window
        advance_to(w3, end - window // LAST_CALL_PART + 5)  # the last call: inside, before the end
        await steps(v, memory, range(5, 7))
        assert sorted(memory.tried) == [1, 3, 5]
        assert v.chain.timestamp() < end  # the last attempt was inside the entry's window
        [row] = v.db.diverged_rows()
        assert row.attempts == 3 and row.last_call
        advance_to(w3, end)
        caplog.set_level(logging.ERROR, logger="supernet.validator.service")
        await steps(v, memory, range(7, 9))
        assert sorted(memory.tried) == [1, 3, 5]  # past the window: nothing tried
        assert v.db.diverged_pending() == [] and v.db.unchecked() == [(batch_id, 0)]
        assert v.db.checks(batch_id) == []  # no verdict of this validator's: none was reached
        status = CliRunner().invoke(validator_app, ["status", "--db", str(v.settings.db_path)])
        assert status.exit_code == 0, status.output
        assert json.loads(status.output)["unchecked"] == [{"batch": batch_id, "index": 0}]
        [line] = [r.getMessage() for r in caplog.records if "UNCHECKED" in r.getMessage()]
        assert f"batch {batch_id} #0" in line and "3 times" in line
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
        memory.step = 1
        await v.step()  # the posted entry is checked: scoring fails here
        assert memory.tried == {1} and v.db.missing()[0].status == "answered"
        assert [(r.batch_id, r.attempts) for r in v.db.diverged_rows()] == [(batch_id, 1)]
        advance_to(w3, end + 60)  # past the batch's window, inside the entry's (answered + window)
        memory.short = False
        for n in range(2, 6):
            memory.step = n
            await v.step()
            if v.db.checks(batch_id):
                break
        [check] = v.db.checks(batch_id)
        assert not check.ok and check.challenge_id is not None  # found and challenged on chain
        assert end < v.chain.timestamp() < answered + window
        assert v.db.diverged_pending() == [] and v.db.unchecked() == []
