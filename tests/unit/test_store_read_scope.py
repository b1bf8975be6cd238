"""``store_read`` reads only blocks the access manager grants the calling task's namespace.

Unit level, on a real embedded store: the ownership index (canonical CIDs, snapshot and restore),
the access manager's check (fail closed outside a task's call, refusals audited, one message for
a foreign block and for a block nobody has), and the built-in tool with and without the access
manager (a validator's re-run reads unscoped: the node already allowed the read). The whole flow
on the real kernel, a restart and the replay are in tests/integration/test_store_read_grants.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from supernet.node.kernel.access import NOT_READABLE, AccessManager, NodePolicy, OwnershipIndex
from supernet.node.kernel.builtin_tools import builtin_tools
from supernet.node.kernel.errors import ToolError, ToolUnavailableError
from supernet.node.kernel.syscalls import TaskSpec
from supernet.node.kernel.tools import ToolRegistry
from supernet.sdk.store.cids import compute_cid, parse_cid
from supernet.sdk.store.errors import InvalidCIDError

ALICE = "0x" + "a1" * 20
BOB = "0x" + "b0" * 20


def spec(user: str, agent: str = "notes") -> TaskSpec:
    return TaskSpec(task_id="0x" + "11" * 32, agent_id=agent, input="", user=user)


def registry(store: Any, access: AccessManager | None) -> ToolRegistry:
    reg = ToolRegistry()
    for tool in builtin_tools(store, None, access):
        reg.register(tool)
    return reg


async def read_as(access: AccessManager, reg: ToolRegistry, task: TaskSpec, cid: str) -> Any:
    caps = access.capabilities(task, frozenset(reg.names()))
    with access.acting_for(task, caps):
        return await reg.call("store_read", {"cid": cid})


def test_the_index_keeps_canonical_cids_per_namespace_and_round_trips() -> None:
    index = OwnershipIndex()
    cid = compute_cid(b"alice's note")
    base58 = str(parse_cid(cid).set(base="base58btc"))
    index.grant("0xa1/notes", [base58])  # any spelling in, the canonical one kept
    assert index.owns("0xa1/notes", cid) and index.owns("0xa1/notes", base58)
    assert not index.owns("0xa1/spy", cid) and not index.owns("0xb0/notes", cid)
    with pytest.raises(InvalidCIDError):
        index.owns("0xa1/notes", "z")
    again = OwnershipIndex()
    again.restore(index.snapshot())
    assert again.snapshot() == index.snapshot() == {"0xa1/notes": [cid]}


async def test_a_task_reads_its_own_blocks_and_nobody_elses(store_client: Any) -> None:
    access = AccessManager(NodePolicy())
    reg = registry(store_client, access)
    alice, bob = spec(ALICE), spec(BOB)
    mine = await store_client.add_file(b"alice's file")
    access.owned.grant(access.capabilities(alice, frozenset()).namespace, [mine])
    assert (await read_as(access, reg, alice, mine))["text"] == "alice's file"
    missing = compute_cid(b"never stored")
    errors = []
    for who, cid in ((bob, mine), (spec(ALICE, "spy"), mine), (bob, missing), (alice, missing)):
        with pytest.raises(ToolUnavailableError) as refused:
            await read_as(access, reg, who, cid)
        errors.append(str(refused.value).replace(cid, "<cid>"))
    # One message for another's block and for a block nobody has: a refusal leaks no existence.
    assert errors == [NOT_READABLE.format(cid="<cid>")] * 4
    reads = [(e.user, e.agent_id, e.allowed) for e in access.audit_log() if e.action == "store.read"]
    assert reads == [
        (ALICE, "notes", True),
        (BOB, "notes", False),
        (ALICE, "spy", False),
        (BOB, "notes", False),
        (ALICE, "notes", False),
    ]


async def test_outside_a_tasks_call_nothing_is_read(store_client: Any) -> None:
    access = AccessManager(NodePolicy())
    cid = await store_client.add_file(b"anything")
    access.owned.grant("0xa1/notes", [cid])
    with pytest.raises(ToolUnavailableError):  # fail closed: no task is calling
        await registry(store_client, access).call("store_read", {"cid": cid})
    with pytest.raises(ToolError):  # not a CID: an argument error, as before
        await read_as(access, registry(store_client, access), spec(ALICE), "not-a-cid")


async def test_without_an_access_manager_the_tool_reads_any_block(store_client: Any) -> None:
    """What a validator builds to re-run a read the node recorded as allowed."""
    cid = await store_client.add_file(b"public enough")
    assert (await registry(store_client, None).call("store_read", {"cid": cid}))["text"] == "public enough"
