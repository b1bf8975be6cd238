"""The storage manager's rollback, delete (tombstone) and version list, as syscalls on real parts
(SmolLM2 tokenizer, embedded store): each works, survives a kernel restart, is recorded in the
trace with the blocks its replay reads, and replays with no divergence; a node that fakes a
result (a rollback or delete it did not make, another version number, another version list, a
deleted file's old content) records a trace that diverges at that syscall.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from supernet.node.agents.base import Agent
from supernet.node.agents.context import AgentContext
from supernet.node.agents.registry import AgentRegistry
from supernet.node.kernel.replay import ReplayResult, replay
from supernet.node.kernel.syscalls import TaskSpec
from supernet.sdk.formats.trace import Trace, witness_reads
from supernet.sdk.store.cids import link

from tests.integration.test_kernel_agents import ALICE, BOB, registry

pytestmark = [pytest.mark.model, pytest.mark.timeout(600)]


class FilesAgent(Agent):
    """Test agent: one file operation chosen by the input (``undo``: list, roll back, read)."""

    agent_id = "files"

    async def run(self, ctx: AgentContext, input: Any) -> str:
        try:
            return await self._op(ctx, input["op"], input.get("path", "f.txt"), input)
        except FileNotFoundError as exc:  # the storage manager's refusal, replayed as recorded
            return f"missing: {exc}"

    async def _op(self, ctx: AgentContext, op: str, path: str, input: Any) -> str:
        if op == "write":
            return await ctx.storage.put(path, input["text"])
        if op == "read":
            return (await ctx.storage.get(path, input.get("version"))).decode()
        if op == "versions":
            return json.dumps(await ctx.storage.versions(path))
        if op == "rollback":
            return str(await ctx.storage.rollback(path, input["version"]))
        if op == "delete":
            await ctx.storage.delete(path)
            return "deleted"
        if op == "list":
            return json.dumps(await ctx.storage.list(), sort_keys=True)
        if op == "undo":
            live = [v for v in await ctx.storage.versions(path) if v is not None]
            number = await ctx.storage.rollback(path, live[-2])
            return f"{number} {(await ctx.storage.get(path)).decode()}"
        raise ValueError(op)


def agents() -> AgentRegistry:
    reg = registry()
    reg.register(FilesAgent)
    return reg


class Files:
    """Runs ``files`` tasks on a kernel and keeps every trace."""

    def __init__(self, kernel: Any, store: Any, first_id: int) -> None:
        self.kernel, self.store, self.n = kernel, store, first_id
        self.docs: list[dict[str, Any]] = []

    async def __call__(self, user: str = ALICE, **input: Any) -> dict[str, Any]:
        self.n += 1
        spec = TaskSpec("0x" + f"{self.n:064x}", "files", input, user=user)
        outcome = await self.kernel.run_task(spec)
        doc: dict[str, Any] = await self.store.get_dag(outcome.trace_cid)
        assert doc["status"] == "ok", doc["error"]
        self.docs.append(doc)
        return doc


async def replayed(doc: dict[str, Any], kernel: Any) -> ReplayResult:
    return await replay(doc, FilesAgent, kernel.engine.tokenizer)


def kinds(doc: dict[str, Any]) -> list[str]:
    return [e["kind"] for e in doc["events"]]


async def test_rollback_delete_and_versions_work_are_traced_and_survive_a_restart(
    make_kernel: Any, store_client: Any
) -> None:
    kernel = await make_kernel(agents=agents())
    files = Files(kernel, store_client, 0x100)
    v1 = (await files(op="write", text="first"))["output"]
    v2 = (await files(op="write", text="second"))["output"]
    g1 = (await files(op="write", path="g.txt", text="other file"))["output"]
    assert json.loads((await files(op="versions"))["output"]) == [v1, v2]

    rolled = await files(op="rollback", version=v1)
    assert rolled["output"] == "3" and kinds(rolled) == ["storage.rollback"]
    ev = rolled["events"][0]
    assert (str(ev["cid"]), ev["version"]) == (v1, 3) and ev["prev_root"] != ev["root"]
    assert (await files(op="read"))["output"] == "first"

    deleted = await files(op="delete")
    assert deleted["output"] == "deleted" and kinds(deleted) == ["storage.delete"]
    assert deleted["events"][0]["version"] == 4
    gone = await files(op="read")
    assert gone["output"] == "missing: file 'f.txt' was deleted" and kinds(gone) == ["storage.missing"]
    assert gone["events"][0]["root"] == deleted["events"][0]["root"]  # the root it was looked up in
    assert json.loads((await files(op="list"))["output"]) == {"g.txt": g1}
    listed = await files(op="versions")
    assert kinds(listed) == ["storage.versions"]
    assert json.loads(listed["output"]) == [v1, v2, v1, None]
    assert [None if v is None else str(v) for v in listed["events"][0]["versions"]] == [v1, v2, v1, None]
    assert (await files(op="read", version=v2))["output"] == "second"  # old versions stay readable
    assert (await files(op="rollback", version=v2))["output"] == "5"  # and a rollback undeletes
    assert (await files(op="read"))["output"] == "second"
    assert (await files(op="delete"))["output"] == "deleted"

    # misses, recorded with the root they were judged under: what is not a version of the path,
    # what is gone, another user's
    refused = [
        await files(op="rollback", version=g1),
        await files(op="delete"),
        await files(op="delete", path="never.txt"),
        await files(op="rollback", version=v1, user=BOB),
    ]
    assert [d["output"] for d in refused] == [
        f"missing: {g1} is not a version of 'f.txt'",
        "missing: no file 'f.txt'",
        "missing: no file 'never.txt'",
        "missing: no file 'f.txt'",
    ]
    assert all(kinds(d) == ["storage.missing"] for d in refused)
    assert refused[3]["events"][0]["root"] is None  # Bob's namespace is empty
    assert json.loads((await files(op="versions", path="never.txt"))["output"]) == []

    for doc in files.docs:  # every trace replays, and carries exactly what its replay reads
        result = await replayed(doc, kernel)
        assert result.divergences == [], (doc["input"], [(d.index, d.message) for d in result.divergences])
        reads = witness_reads(Trace.from_dag(doc).events)
        assert len(doc["witness"]["blocks"]) + len(doc["witness"]["files"]) == len(reads)

    # a restart: a new kernel continues from the persisted roots
    roots = kernel.namespace_roots()
    await kernel.stop()
    restarted = await make_kernel(agents=agents())
    restarted.restore_namespace_roots(roots)
    files2 = Files(restarted, store_client, 0x200)
    assert json.loads((await files2(op="versions"))["output"]) == [v1, v2, v1, None, v2, None]
    assert (await files2(op="read"))["output"].startswith("missing:")
    assert (await files2(op="rollback", version=v1))["output"] == "7"
    assert (await files2(op="read"))["output"] == "first"
    undone = await files2(op="undo")  # versions, rollback and get in one task
    assert undone["output"] == "8 second"
    assert kinds(undone) == ["storage.versions", "storage.rollback", "storage.get"]
    assert json.loads((await files2(op="list"))["output"]) == {"f.txt": v2, "g.txt": g1}
    for doc in files2.docs:
        assert (await replayed(doc, restarted)).divergences == []


async def test_faked_rollback_delete_and_versions_results_diverge(
    make_kernel: Any, store_client: Any
) -> None:
    kernel = await make_kernel(agents=agents())
    files = Files(kernel, store_client, 0x300)
    v1 = (await files(op="write", text="first"))["output"]
    await files(op="write", text="second")
    rolled = await files(op="rollback", version=v1)
    deleted = await files(op="delete")
    listed = await files(op="versions")
    gone = await files(op="read")
    for doc in (rolled, deleted, listed, gone):
        assert (await replayed(doc, kernel)).divergences == []

    async def divergences(doc: dict[str, Any], change: Any) -> list[tuple[int | None, str]]:
        fake = copy.deepcopy(doc)
        change(fake["events"][0], fake)
        return [(d.index, d.message) for d in (await replayed(fake, kernel)).divergences]

    def not_made(ev: dict[str, Any], doc: dict[str, Any]) -> None:  # claims a change, keeps the old root
        ev["root"] = ev["prev_root"]

    def renumbered(ev: dict[str, Any], doc: dict[str, Any]) -> None:  # another result, told consistently
        ev["version"] = 2
        doc["output"] = "2"

    for doc, change in ((rolled, not_made), (rolled, renumbered), (deleted, not_made)):
        found = await divergences(doc, change)
        assert [i for i, _ in found][:1] == [0], (change.__name__, found)
        assert "not its previous root with this change" in found[0][1]

    def shorter(ev: dict[str, Any], doc: dict[str, Any]) -> None:  # a version list the root does not hold
        ev["versions"] = ev["versions"][:2]
        doc["output"] = json.dumps([str(v) for v in ev["versions"]])

    found = await divergences(listed, shorter)
    assert found and found[0][0] == 0 and "versions" in found[0][1]

    # a deleted file served anyway: the old version, read under the root that holds the tombstone
    root = deleted["events"][0]["root"]
    root_block, old = await store_client.get_block(str(root)), await store_client.cat(v1)

    def resurrected(ev: dict[str, Any], doc: dict[str, Any]) -> None:
        namespace = rolled["events"][0]["namespace"]
        doc["events"][0] = {
            "kind": "storage.get",
            "namespace": namespace,
            "path": "f.txt",
            "cid": link(v1),
            "root": root,
        }
        doc["witness"] = {"blocks": [root_block], "files": [old]}
        doc["output"] = "first"

    found = await divergences(gone, resurrected)
    assert found and found[0][0] == 0 and "not the version its root holds" in found[0][1]
