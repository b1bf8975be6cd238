"""A file a task does not find: the miss names the root it was judged under (``storage.missing``).

It used to be a bare recorded error, checked against the task's current root only, so on a task's
first access to its files (no root recorded yet) "no such file" was the node's word: a node could
hide a user's note from an agent and the trace replayed clean (a known limit). Now the miss
records its root, so the replay judges it on a first access too, the validator follows that root
back to the committed tasks that wrote it (the origin check, like any root a task reads), and the
user's client sees which root the task was shown ("latest memory and files").
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from supernet.node.kernel.access import namespace_of
from supernet.node.kernel.namespaces import root_object
from supernet.node.kernel.storage import ROOT_TYPE as FS_ROOT_TYPE
from supernet.sdk.client.freshness import SeenRoot, check_latest
from supernet.sdk.formats.trace import Trace
from supernet.sdk.store.cids import compute_cid, encode_dag

from tests.unit.test_review_root_origins import MY_AGENTS, Lingerer, my_task
from tests.unit.test_root_origins import Chain, commit_entry, origin_findings, spec
from tests.unit.test_validator_attacks import NODE, USER, DictStore, verify
from tests.unit.test_validator_attacks3 import AGENTS, Notes, Reader, clean, node_task, stand_in_kernel

NS = namespace_of(USER.address, "reader")
NOTE = {"text": "the vault code is 4711"}


async def miss_then_write(tmp_path: Path) -> tuple[tuple[Any, str, Any], tuple[Any, str, Any]]:
    """Two tasks of the user on the node's own kernel: A (``reader``) reads a note from an empty
    namespace (a miss), then B (``notes``) writes one in its own."""
    (req_a, a), (req_b, b) = node_task(Reader, {}), node_task(Notes, NOTE)
    async with stand_in_kernel(tmp_path / "store", AGENTS) as kernel:
        out_a = await kernel.run_task(spec(req_a, a, "reader", {}))
        out_b = await kernel.run_task(spec(req_b, b, "notes", NOTE))
    return (req_a, a, out_a.trace), (req_b, b, out_b.trace)


async def read_after_note(tmp_path: Path) -> tuple[Any, str, dict[str, Any]]:
    """The user's note written by one task and read by the next (whose first access it is), on
    the node's own kernel: the reading task's request, id and trace."""
    (req_w, w), (req_r, r) = my_task(Lingerer, NOTE), my_task(Lingerer, {})
    async with stand_in_kernel(tmp_path / "store", MY_AGENTS) as kernel:
        await kernel.run_task(spec(req_w, w, "lingerer", NOTE))
        honest = (await kernel.run_task(spec(req_r, r, "lingerer", {}))).trace
    return req_r, r, dict(honest)


def fault_messages(verdict: Any) -> list[str]:
    """The findings of a verdict that accuses the node (a fault, not "unverifiable")."""
    assert not verdict.ok and verdict.unverifiable is None, verdict
    return [f.message for f in verdict.findings]


async def test_an_honest_miss_on_an_empty_namespace_names_no_root_and_verifies(tmp_path: Path) -> None:
    (req, task_id, trace), _ = await miss_then_write(tmp_path)
    assert trace["output"] == "no notes (FileNotFoundError)"
    [miss] = trace["events"]
    assert (miss["kind"], miss["op"], miss["root"]) == ("storage.missing", "storage.get", None)
    assert clean(await verify(DictStore(), req, task_id, trace, agents=AGENTS))


async def test_hiding_a_file_on_a_tasks_first_access_is_caught(tmp_path: Path) -> None:
    """The user's note is there; the node runs the user's next task, whose first access reads it,
    and records the read as a miss (the agent answers "no notes"). On the root the node names (the
    user's real one) the file is there: a divergence, where before a first access had no root to
    judge by."""
    req_r, r, honest = await read_after_note(tmp_path)
    get = honest["events"][0]
    assert get["kind"] == "storage.get" and honest["output"] == NOTE["text"]
    assert clean(await verify(DictStore(), req_r, r, honest, agents=MY_AGENTS))  # control
    cheat = copy.deepcopy(honest)
    cheat["events"][0] = {
        "kind": "storage.missing",
        "namespace": get["namespace"],
        "op": "storage.get",
        "path": "notes.txt",
        "version": None,
        "root": get["root"],
        "error": "FileNotFoundError: no file 'notes.txt'",
    }
    cheat["output"] = "no notes (FileNotFoundError)"
    verdict = await verify(DictStore(), req_r, r, cheat, agents=MY_AGENTS)
    found = fault_messages(verdict)
    assert any("not missing" in m for m in found), found


async def test_a_miss_on_a_made_up_root_is_an_origin_finding(tmp_path: Path) -> None:
    """The node names a root of its own making (an empty file list, no writer) for the miss, to
    show the agent no note although the user has one: the root is the task's first root of the
    namespace, so the validator follows it back, and no committed task wrote it."""
    (req, task_id, honest), _ = await miss_then_write(tmp_path)
    made_up = root_object(FS_ROOT_TYPE, NS, {"files": {}}, None, None)
    raw = encode_dag(made_up)
    cheat = copy.deepcopy(honest)
    cheat["events"][0]["root"] = compute_cid(raw, "dag-cbor")
    cheat["witness"] = {"blocks": [raw], "files": []}
    verdict = await verify(
        DictStore(), req, task_id, cheat, agents=AGENTS, origins=Chain().index(), batch_id=1
    )
    assert any("names no writer task" in m for m in origin_findings(verdict)), verdict.findings


async def test_the_client_sees_a_miss_shown_an_older_root(tmp_path: Path) -> None:
    """A miss on the empty root (the honest answer before the user wrote anything) shown to a task
    sent after the client saw its note written: "latest memory and files" fails. Before, a miss
    named no root and the client could not tell."""
    (req_a, a, read_before), (req_b, b, wrote) = await miss_then_write(tmp_path)
    store = DictStore()
    for doc in (read_before, wrote):
        commit_entry(store, *((req_a, a) if doc is read_before else (req_b, b)), doc)
    seen: dict[str, SeenRoot] = {}
    ok = await check_latest(seen, NODE.address, b, 1.0, 2.0, Trace.from_dag(wrote), store.get_dag)
    assert ok is not None and ok[0]
    # a later task of the user on the same namespace, shown the empty root: the reader's miss
    stale = copy.deepcopy(wrote)
    stale["events"] = [{**read_before["events"][0], "namespace": wrote["events"][0]["namespace"]}]
    verdict = await check_latest(
        seen, NODE.address, "0x" + "77" * 32, 3.0, 4.0, Trace.from_dag(stale), store.get_dag
    )
    assert verdict is not None and verdict[0] is False, verdict
