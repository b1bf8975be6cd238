"""`ClientState` shared by concurrent processes: every save merges into the file under its lock;
the state directory is the user's alone (tests/integration/test_review_task_cli.py, findings 4-5)."""

from __future__ import annotations

import multiprocessing
import os
import stat
import threading
from pathlib import Path

import pytest
from supernet.sdk.client.state import ClientState, StateDirError

REQUEST = {"r": "signed"}
PROMISE = {"leaf": "0x01", "commitBy": 5, "signature": "0x02", "receipt": {}}


def _task_id(writer: int, n: int) -> str:
    return "0x" + f"{writer:02x}{n:062x}"


def _writer(state_dir: str, writer: int, count: int, start: threading.Barrier | None = None) -> None:
    """One run: opens the state once, then records ``count`` tasks (one save each) and raises its
    account's nonce and total with each."""
    st = ClientState.open(Path(state_dir))
    if start is not None:
        start.wait()
    for n in range(count):
        acct = st.account("31337:0xpay", "0xuser", f"0xnode{writer}")
        acct.nonce += 1
        acct.cumulative += 10
        st.record_sent(_task_id(writer, n), "0xnode", "http://n", f"input {n}", "0x00", 10, REQUEST)


def _process(state_dir: str, writer: int, count: int) -> None:
    _writer(state_dir, writer, count)


def test_interleaved_saves_of_two_processes_lose_no_record(tmp_path: Path) -> None:
    """Two processes, each with the state it loaded at its start, save task after task: every
    record and each one's account survive (before: the last writer's whole state replaced the
    other's)."""
    ClientState.open(tmp_path).save()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_process, args=(str(tmp_path), w, 40)) for w in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    st = ClientState.open(tmp_path)
    assert set(st.tasks) == {_task_id(w, n) for w in (1, 2) for n in range(40)}
    for w in (1, 2):
        acct = st.account("31337:0xpay", "0xuser", f"0xnode{w}")
        assert (acct.nonce, acct.cumulative) == (40, 400)


def test_interleaved_saves_of_threads_lose_no_record(tmp_path: Path) -> None:
    """The same with four threads of one process (each its own `ClientState`, as the CLI and the
    OpenAI gateway in one process may hold): the lock excludes threads too."""
    start = threading.Barrier(4)
    threads = [threading.Thread(target=_writer, args=(str(tmp_path), w, 25, start)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert set(ClientState.open(tmp_path).tasks) == {_task_id(w, n) for w in range(4) for n in range(25)}


def test_a_change_only_one_side_made_wins_and_both_sides_merge_by_progress(tmp_path: Path) -> None:
    """A total taken back (a failed task's fee) and a deleted record stay so when the other run did
    not touch them; a task both runs changed keeps the record that got further (and the promise);
    the caller's objects are updated in place."""
    seed = ClientState.open(tmp_path)
    seed.account("d", "0xu", "0xn").cumulative = 100
    for task_id in ("0xgone", "0xboth"):
        seed.record_sent(task_id, "0xn", "http://n", "in", "0x00", 10, REQUEST)
    a, b = ClientState.open(tmp_path), ClientState.open(tmp_path)
    a.account("d", "0xu", "0xn").cumulative -= 10  # a's failed task: its fee taken back
    del a.tasks["0xgone"]  # the node refused it: nothing stored
    a.tasks["0xboth"].status = "running"
    a.save()
    held = b.tasks["0xboth"]
    held.status, held.output, held.promise = "done", "answer", PROMISE
    b.record_sent("0xnew", "0xn", "http://n", "in", "0x00", 10, REQUEST)
    assert b.account("d", "0xu", "0xn").cumulative == 90, "b did not touch the total: a's stands"
    assert "0xgone" not in b.tasks, "a's deletion is not undone by b's older copy"
    assert b.tasks["0xboth"] is held and held.status == "done" and held.promise == PROMISE
    a.tasks["0xboth"].output = "other"  # a changes it again after b: b's done record got further
    a.save()
    merged = ClientState.open(tmp_path)
    assert merged.tasks["0xboth"].status == "done" and merged.tasks["0xboth"].promise == PROMISE
    assert set(merged.tasks) == {"0xboth", "0xnew"}
    assert merged.clock >= 3


def test_state_dir_is_made_0700_and_one_writable_by_others_is_tightened_or_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Created 0700 under ``umask 0`` (its lock file 0600); a directory of this user's that others
    may write to is tightened to 0700; one this user does not own and others may write to is
    refused with the reason, before anything is read or written."""
    old = os.umask(0)
    try:
        ClientState.open(tmp_path / "a" / "state").save()
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "a" / "state").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(tmp_path / "a" / "state" / "client-state.lock").st_mode) == 0o600
    loose = tmp_path / "loose"
    loose.mkdir()
    os.chmod(loose, 0o777)
    ClientState.open(loose)
    assert stat.S_IMODE(os.stat(loose).st_mode) == 0o700
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    monkeypatch.setattr(os, "getuid", lambda: os.stat(shared).st_uid + 1)  # as another user would
    with pytest.raises(StateDirError, match="can be written by another user"):
        ClientState.open(shared)
    with pytest.raises(StateDirError):
        ClientState(shared / "client-state.json").save()
    assert list(shared.iterdir()) == []
