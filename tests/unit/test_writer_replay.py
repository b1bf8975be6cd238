"""Every trace that writes is replayed in its window, sampled or not (`WriteLog.replay`).

A memory or file write outlives its task: what the user's later tasks find is what the writer
wrote. A node that makes a write up in a task the validators did not sample (an entry the agent
never added, a note it never put) used to risk only that task's sampling; every later reader
replays clean, since the write is a sound root of the user's own history. Now the write log, which
reads every committed trace in its window anyway, replays the agent of each trace that writes
(no model, no tool re-run: the cheap part of a check), and an entry whose replay diverges is
verified in full and challenged like a sampled one (`Validator.check_entry`, on the devnet in
`tests/integration/test_validator_e2e.py`).

Real parts: the node's kernel records the honest trace, the validator's database, WriteLog and
Verifier; the chain is the stand-in of the other WriteLog tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from supernet.sdk.store.cids import encode_dag
from supernet.validator.tool_check import RegistryRunner
from supernet.validator.trace_view import parse_trace_block
from supernet.validator.verifier import Verifier
from supernet.validator.writes import WriteLog

from tests.unit.test_review_manifests import memory_write
from tests.unit.test_review_writes import Setup, signed
from tests.unit.test_validator_attacks import (
    DOMAIN,
    NODE,
    USER,
    StandInScorer,
    commit_entry,
    registry,
    trace_doc,
)
from tests.unit.test_validator_attacks3 import AGENTS, Notes, node_task, node_trace


def replaying(s: Setup) -> list[tuple[int, int]]:
    """Give ``s`` a write log that replays writers with the real verifier; the entries it sends on."""
    verifier = Verifier(
        s.store, StandInScorer(), RegistryRunner(s.store), DOMAIN, "0x" + "44" * 20, agents=registry(AGENTS)
    )  # type: ignore[arg-type]
    diverged: list[tuple[int, int]] = []

    async def record(batch_id: int, index: int) -> None:
        diverged.append((batch_id, index))

    s.log = WriteLog(
        s.chain, s.view.db, s.store, s.index, s.avail, backoff_s=0.0,  # type: ignore[arg-type]
        replay=verifier.replay, diverged=record,
    )  # fmt: skip
    return diverged


async def test_a_made_up_write_in_an_unsampled_task_is_sent_to_a_full_check(tmp_path: Path) -> None:
    """The node's `Notes` task writes the user's note; in a second task of the same agent it records
    a memory entry the agent never added (a made-up "fact" for the user's later tasks), with a
    sound root. The honest writer is not sent on; the made-up write is."""
    s = Setup()
    diverged = replaying(s)
    task_input = {"text": "buy milk"}
    req, task = node_task(Notes, task_input)
    honest = signed(await node_trace(tmp_path, Notes, task_input, task), req)
    assert [e["kind"] for e in honest["events"]] == ["storage.put", "storage.get"]
    b1 = await s.commit(commit_entry(s.store, req, task, honest))

    # the cheat: task 2 as the node's kernel ran it, plus a memory entry the agent never added
    second = {"text": "call mum"}
    req2, task2 = node_task(Notes, second)
    made_up = signed(await node_trace(tmp_path, Notes, second, task2), req2)
    blocks, write = memory_write(task2)
    made_up["events"].append(write)
    made_up["witness"]["blocks"] = [*made_up["witness"]["blocks"], *blocks]
    b2 = await s.commit(commit_entry(s.store, req2, task2, made_up))

    await s.log.step(chain_now=10)
    assert s.status(b1, 0) == s.status(b2, 0) == "read"
    assert diverged == [(b2, 0)]
    verifier = Verifier(
        s.store, StandInScorer(), RegistryRunner(s.store), DOMAIN, "0x" + "44" * 20, agents=registry(AGENTS)
    )  # type: ignore[arg-type]
    found = await verifier.replay(parse_trace_block(encode_dag(made_up)).doc)
    assert [f.message for f in found.findings] == ["syscall 2 (memory.add) is one the agent does not make"], (
        found.findings
    )


async def test_traces_that_write_nothing_are_left_to_sampling(tmp_path: Path) -> None:
    """Only writers are replayed here: a diverging trace that writes nothing changes no later
    task, and is the sampled check's (the replay's cost stays with the writes)."""
    s = Setup()
    diverged = replaying(s)
    req, task = node_task(Notes, {"text": "buy milk"})
    no_writes = signed(trace_doc(Notes, task, USER.address, {"text": "buy milk"}, [], "made up"), req)
    b1 = await s.commit(commit_entry(s.store, req, task, no_writes))
    await s.log.step(chain_now=10)
    assert s.status(b1, 0) == "read" and diverged == []


async def test_a_replay_that_fails_here_stops_nothing(tmp_path: Path) -> None:
    """A writer's replay that raises on this validator is logged: the entry's writes are recorded
    all the same, and the next entry is read."""
    s = Setup()
    replaying(s)

    async def broken(trace: Any) -> Any:
        raise RuntimeError("replay unavailable")

    s.log.replay = broken
    entries, roots = [], []
    for text in ("x", "y"):
        req, task = node_task(Notes, {"text": text})
        blocks, write = memory_write(task)
        doc = signed(trace_doc(Notes, task, USER.address, {"text": text}, [write], text, blocks=blocks), req)
        entries.append(commit_entry(s.store, req, task, doc))
        roots.append(str(write["root"]))
    b1 = await s.commit(*entries)
    await s.log.step(chain_now=10)
    assert s.status(b1, 0) == s.status(b1, 1) == "read"
    assert all(s.view.db.write_of(NODE.address, r) is not None for r in roots)
