"""``store_read`` on the real kernel reads only what the access manager grants the task's namespace.

Real parts: the kernel with the SmolLM2 engine, the all-MiniLM memory and an embedded content
store. Alice's agent writes a memory entry and a file; every block those writes made (the entry,
the memory roots, the file's root and chunk, the file-tree roots) is hers. Bob, who learns the
CIDs from Alice's public trace, gets each refused through ``store_read`` (and so does Alice's
other agent), in the very words of a block nobody has; Alice's own task reads them. The grants are
persisted with the namespace roots and hold after a restart (a new kernel over the same data
dir). A trace with refused reads replays with no divergence, and a validator neither re-runs nor
accuses the refusals, while it still re-runs the allowed reads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from supernet.node.agents.base import Agent
from supernet.node.agents.context import AgentContext
from supernet.node.agents.registry import AgentRegistry
from supernet.node.kernel.access import NOT_READABLE
from supernet.node.kernel.errors import ToolError
from supernet.node.kernel.replay import replay
from supernet.node.kernel.syscalls import TaskSpec
from supernet.node.service.db import Database
from supernet.node.service.kernel_executor import KernelExecutor
from supernet.node.service.ports import Job
from supernet.sdk.store.cids import compute_cid
from supernet.validator.tool_check import RegistryRunner, check_tools
from supernet.validator.trace_view import parse_trace

pytestmark = [pytest.mark.model, pytest.mark.timeout(600)]

ALICE = "0x" + "a1" * 20
BOB = "0x" + "b0" * 20
NOTE = "Alice's vault code is 4711."


class VaultAgent(Agent):
    """Test agent: writes a memory entry and a file, or reads CIDs with ``store_read``."""

    agent_id = "vault"

    async def run(self, ctx: AgentContext, input: Any) -> str:
        if input["op"] == "write":
            text = input.get("text", NOTE)
            entry = await ctx.memory.add(text)
            file = await ctx.storage.put("vault.txt", text)
            return json.dumps({"entry": entry, "file": file})
        out: dict[str, Any] = {}
        for cid in input["cids"]:
            try:
                out[cid] = {"text": (await ctx.tools.call("store_read", {"cid": cid}))["text"]}
            except ToolError as exc:
                out[cid] = {"error": f"{type(exc).__name__}: {exc}"}
        return json.dumps(out, sort_keys=True)


class OtherAgent(VaultAgent):
    """Alice's other agent: another namespace, so none of the vault agent's blocks."""

    agent_id = "other"


def agents() -> AgentRegistry:
    reg = AgentRegistry()
    for cls in (VaultAgent, OtherAgent):
        reg.register(cls)
    return reg


def job(executor: KernelExecutor, n: int, user: str, agent: str, task_input: Any) -> Job:
    model_id = executor.model_ids()[0]  # the task runs on the core of the model it names
    return Job(task_id="0x" + f"{n:02x}" * 32, user=user, agent=agent, model_id=model_id, input=task_input)


async def written_blocks(store: Any, trace_cid: str) -> dict[str, str]:
    """Every block Alice's write made, as Bob reads them from her public trace (and the store)."""
    trace = await store.get_dag(trace_cid)
    add, put = (e for e in trace["events"] if e["kind"] in ("memory.add", "storage.put"))
    file_root = await store.get_dag(str(put["cid"]))
    return {
        "entry": str(add["entry"]),
        "memory root": str(add["root"]),
        "file": str(put["cid"]),
        "chunk (linked from the file)": str(file_root["chunks"][0]),
        "file-tree root": str(put["root"]),
    }


async def read(executor: KernelExecutor, n: int, user: str, agent: str, cids: list[str]) -> Any:
    result = await executor.run(job(executor, n, user, agent, {"op": "read", "cids": cids}), lambda _t: None)
    return json.loads(result.output), result.trace_cid


async def test_store_read_is_scoped_to_the_namespace_and_survives_a_restart(
    make_kernel: Any, store_client: Any, tmp_path: Path
) -> None:
    db_file = tmp_path / "node" / "node.sqlite3"
    first = KernelExecutor(await make_kernel(agents=agents()), "m", 1, Database.open(db_file))
    wrote = await first.run(job(first, 1, ALICE, "vault", {"op": "write"}), lambda _t: None)
    blocks = await written_blocks(store_client, wrote.trace_cid)
    cids = list(blocks.values())
    nobody = compute_cid(b"a block nobody has")

    # Alice's own task reads every block her writes made, the chunk under her file root included.
    own, _ = await read(first, 2, ALICE, "vault", cids)
    assert all("text" in own[c] for c in cids), own
    assert own[blocks["file"]]["text"] == own[blocks["chunk (linked from the file)"]]["text"] == NOTE
    assert NOTE in own[blocks["entry"]]["text"]

    # Bob (and Alice's other agent) get every one refused, in the words of a block nobody has.
    for n, (user, agent) in enumerate(((BOB, "vault"), (ALICE, "other")), start=3):
        theirs, trace_cid = await read(first, n, user, agent, [*cids, nobody])
        refusals = {c: theirs[c].get("error") for c in [*cids, nobody]}
        assert refusals == {c: "ToolUnavailableError: " + NOT_READABLE.format(cid=c) for c in refusals}
        assert NOTE not in json.dumps(theirs)
        denied = [e for e in first.kernel.audit_log("0x" + f"{n:02x}" * 32) if e.action == "store.read"]
        assert [e.allowed for e in denied] == [False] * len(refusals)
    bob_trace = await store_client.get_dag(trace_cid)

    # The grants were persisted with the roots before the tasks were acknowledged.
    saved = Database.open(db_file).load_roots()
    assert saved is not None and set(cids) <= set(saved.roots["grants"][f"{ALICE}/vault"])
    await first.kernel.stop()

    # A new kernel over the same data dir: Alice still reads hers, Bob still reads none.
    second = KernelExecutor(await make_kernel(agents=agents()), "m", 1, Database.open(db_file))
    own, alice_trace_cid = await read(second, 5, ALICE, "vault", cids)
    assert all(own[c].get("text") for c in cids), own
    theirs, _ = await read(second, 6, BOB, "vault", cids)
    assert all(theirs[c].get("error") for c in cids), theirs

    # Replay: a trace with refused reads, and one with allowed reads, replay with no divergence.
    tokenizer = second.kernel.engine.tokenizer
    alice_trace = await store_client.get_dag(alice_trace_cid)
    for doc, agent in ((bob_trace, OtherAgent), (alice_trace, VaultAgent)):
        result = await replay(doc, agent, tokenizer)
        assert result.divergences == [] and result.output == doc["output"], result.divergences

    # A validator: the refusals are "not available" (never re-run, never accused); the allowed
    # reads are re-run against the store and agree.
    runner = RegistryRunner(store_client)
    findings, rerun, unverifiable = await check_tools(parse_trace(bob_trace).tool_calls, runner)
    assert (findings, rerun, unverifiable) == ([], 0, None)
    findings, rerun, unverifiable = await check_tools(parse_trace(alice_trace).tool_calls, runner)
    assert (findings, rerun, unverifiable) == ([], len(cids), None)


async def test_a_cid_named_in_the_input_grants_nothing(make_kernel: Any, store_client: Any) -> None:
    """Naming a CID is no proof of owning it: Bob's input may name Alice's blocks, and the task's
    own later writes do not widen what it reads."""
    kernel = await make_kernel(agents=agents())
    alice = await kernel.run_task(TaskSpec("0x" + "21" * 32, "vault", {"op": "write"}, user=ALICE))
    blocks = await written_blocks(store_client, alice.trace_cid)
    await kernel.run_task(TaskSpec("0x" + "22" * 32, "vault", {"op": "write", "text": "Bob's"}, user=BOB))
    bob = await kernel.run_task(
        TaskSpec("0x" + "23" * 32, "vault", {"op": "read", "cids": [blocks["entry"]]}, user=BOB)
    )
    assert json.loads(bob.output)[blocks["entry"]] == {
        "error": "ToolUnavailableError: " + NOT_READABLE.format(cid=blocks["entry"])
    }
