"""Access manager: operator privilege groups, and tool calls that pause for their user's confirmation."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from eth_account import Account
from supernet.node.kernel.access import (
    AccessManager,
    ConfirmationRejectedError,
    NodePolicy,
    PendingConfirmation,
    PrivilegeGroup,
    UnknownActionError,
    action_hash,
)
from supernet.node.kernel.errors import AccessDeniedError, ConfirmationRequiredError
from supernet.node.kernel.syscalls import TaskSpec
from supernet.node.kernel.tools import ToolSpec
from supernet.sdk.chain.eip712 import Confirmation, Domain, hash_typed, sign_confirmation
from supernet.sdk.client.confirm import action_hash as sdk_action_hash
from supernet.sdk.client.confirm import confirmation_body

OWNER = Account.from_key("0x" + "11" * 32)
OTHER = Account.from_key("0x" + "22" * 32)
DOMAIN = Domain(chain_id=31337, verifying_contract="0x" + "33" * 20)
TASK_ID = "0x" + "ab" * 32
SEND = ToolSpec("send_funds", "irreversible", {"type": "object"}, irreversible=True)
REGISTERED = frozenset({"calculator", "text", "send_funds", "mcp_files.read", "mcp_files.write"})
GROUPS = (
    PrivilegeGroup("readers", frozenset({"reader"}), ("calculator", "mcp_files.*"), memory=True),
    PrivilegeGroup("writers", frozenset({"reader", "writer"}), ("text",), storage=True),
)


def spec(agent: str = "react", **kw: Any) -> TaskSpec:
    return TaskSpec(task_id=TASK_ID, agent_id=agent, input="q", user=OWNER.address, **kw)


def test_groups_narrow_tools_memory_and_files() -> None:
    access = AccessManager(NodePolicy(groups=GROUPS))
    caps = access.capabilities(spec("reader"), REGISTERED)
    assert caps.tools == {"calculator", "text", "mcp_files.read", "mcp_files.write"}  # union of both groups
    assert (caps.memory, caps.storage) == (True, True)
    writer = access.capabilities(spec("writer"), REGISTERED)
    assert writer.tools == {"text"} and (writer.memory, writer.storage) == (False, True)
    # an agent in no group keeps the node policy's defaults
    free = access.capabilities(spec("react"), REGISTERED)
    assert free.tools == REGISTERED and (free.memory, free.storage) == (True, True)


def test_groups_never_widen_the_policy_or_the_request() -> None:
    policy = NodePolicy(groups=GROUPS, allowed_tools=frozenset({"calculator"}), allow_memory=False)
    caps = AccessManager(policy).capabilities(
        spec("reader", tools=frozenset({"calculator", "text"})), REGISTERED
    )
    assert caps.tools == {"calculator"} and caps.memory is False


def test_group_denial_is_access_denied_and_audited() -> None:
    access = AccessManager(NodePolicy(groups=GROUPS))
    s = spec("writer")
    caps = access.capabilities(s, REGISTERED)
    with pytest.raises(AccessDeniedError):
        access.check_tool(s, caps, ToolSpec("calculator", "", {"type": "object"}), {})
    with pytest.raises(AccessDeniedError):
        access.check_area(s, caps, "memory", write=False)
    access.check_tool(s, caps, ToolSpec("text", "", {"type": "object"}), {})
    assert [(e.action, e.target, e.allowed) for e in access.audit_log(TASK_ID)] == [
        ("tool", "calculator", False),
        ("memory.read", caps.namespace, False),
        ("tool", "text", True),
    ]
    assert access.audit_log(TASK_ID)[0].to_json()["agent_id"] == "writer"


def _pausing(timeout: float = 5.0) -> tuple[AccessManager, list[PendingConfirmation]]:
    access = AccessManager(NodePolicy(confirmation_timeout_s=timeout), DOMAIN)
    seen: list[PendingConfirmation] = []
    access.watch(spec(), seen.append)
    return access, seen


def _sign(signer: Any, action: str, task_id: str = TASK_ID) -> bytes:
    conf = Confirmation(bytes.fromhex(task_id[2:]), bytes.fromhex(action[2:]))
    return sign_confirmation(conf, DOMAIN, signer)


async def test_call_pauses_until_the_user_confirms() -> None:
    access, seen = _pausing()
    s = spec()
    caps = access.capabilities(s, REGISTERED)
    args = {"to": "0xabc", "amount": 5}
    call = asyncio.create_task(access.authorize_tool(s, caps, SEND, args))
    for _ in range(50):
        if seen:
            break
        await asyncio.sleep(0.01)
    [pending] = seen
    key = "0x" + action_hash("send_funds", args).hex()
    assert pending.action_hash == key and access.pending(TASK_ID) == [pending]
    event = pending.to_json()
    assert event["tool"] == "send_funds" and event["args"] == args
    assert event["typedData"]["primaryType"] == "Confirmation"
    assert event["typedData"]["message"] == {"requestHash": TASK_ID, "actionHash": key}
    # the SDK hashes what the event shows, and signs the same digest the node checks
    assert "0x" + sdk_action_hash("send_funds", args).hex() == key
    assert confirmation_body(TASK_ID, event, DOMAIN, OWNER)["actionHash"] == key
    assert hash_typed(Confirmation(bytes.fromhex(TASK_ID[2:]), bytes.fromhex(key[2:])), DOMAIN)

    with pytest.raises(ConfirmationRejectedError):  # another user's signature changes nothing
        access.confirm(TASK_ID, key, _sign(OTHER, key))
    with pytest.raises(ConfirmationRejectedError):  # a signature for another task neither
        access.confirm(TASK_ID, key, _sign(OWNER, key, "0x" + "cd" * 32))
    with pytest.raises(UnknownActionError):
        access.confirm(TASK_ID, "0x" + "00" * 32, _sign(OWNER, "0x" + "00" * 32))
    with pytest.raises(UnknownActionError):
        access.confirm("0x" + "cd" * 32, key, _sign(OWNER, key, "0x" + "cd" * 32))
    await asyncio.sleep(0.05)
    assert not call.done() and access.pending(TASK_ID) == [pending]

    assert access.confirm(TASK_ID, key, _sign(OWNER, key)) is True
    await asyncio.wait_for(call, 1)
    assert access.pending(TASK_ID) == []
    assert access.confirm(TASK_ID, key, _sign(OWNER, key)) is False  # a repeat: harmless
    # the same action again in this task needs no second pause
    await asyncio.wait_for(access.authorize_tool(s, caps, SEND, args), 1)
    assert len(seen) == 1
    actions = [(e.action, e.allowed) for e in access.audit_log(TASK_ID)]
    assert actions == [("confirmation.wait", True), ("tool", True), ("tool", True)]
    access.forget(TASK_ID)
    with pytest.raises(UnknownActionError):
        access.confirm(TASK_ID, key, _sign(OWNER, key))


async def test_unanswered_pause_fails_the_call_after_the_timeout() -> None:
    access, seen = _pausing(timeout=0.1)
    s = spec()
    with pytest.raises(ConfirmationRequiredError, match="no confirmation for action"):
        await access.authorize_tool(s, access.capabilities(s, REGISTERED), SEND, {"amount": 1})
    assert len(seen) == 1 and access.pending(TASK_ID) == []
    last = access.audit_log(TASK_ID)[-1]
    assert last.allowed is False and last.reason == "no confirmation within 0.1 s"


async def test_without_a_watcher_or_timeout_the_call_is_refused_at_once() -> None:
    for access in (
        AccessManager(NodePolicy(confirmation_timeout_s=5), DOMAIN),
        AccessManager(NodePolicy(), DOMAIN),
    ):
        if access.policy.confirmation_timeout_s is None:
            access.watch(spec(), lambda p: None)
        s = spec()
        with pytest.raises(ConfirmationRequiredError):
            await asyncio.wait_for(
                access.authorize_tool(s, access.capabilities(s, REGISTERED), SEND, {"amount": 1}), 1
            )


async def test_a_tool_outside_the_capabilities_is_denied_not_paused() -> None:
    access, seen = _pausing()
    s = spec(tools=frozenset({"calculator"}))
    with pytest.raises(AccessDeniedError):
        await access.authorize_tool(s, access.capabilities(s, REGISTERED), SEND, {"amount": 1})
    assert seen == []
