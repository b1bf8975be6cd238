"""Access manager: capabilities from the signed task and the node policy, confirmations, audit."""

from __future__ import annotations

import pytest
from eth_account import Account
from supernet.node.kernel.access import AccessManager, NodePolicy, action_hash, namespace_of
from supernet.node.kernel.errors import AccessDeniedError, BudgetExceededError, ConfirmationRequiredError
from supernet.node.kernel.syscalls import TaskSpec
from supernet.node.kernel.tools import ToolSpec
from supernet.sdk.chain.eip712 import Confirmation, Domain, sign_confirmation

OWNER = Account.from_key("0x" + "11" * 32)
OTHER = Account.from_key("0x" + "22" * 32)
DOMAIN = Domain(chain_id=31337, verifying_contract="0x" + "33" * 20)
TASK_ID = "0x" + "ab" * 32
SEND = ToolSpec("send_funds", "irreversible", {"type": "object"}, irreversible=True)
CALC = ToolSpec("calculator", "", {"type": "object"})
REGISTERED = frozenset({"calculator", "text", "send_funds"})


def spec(**kw: object) -> TaskSpec:
    fields: dict[str, object] = {"task_id": TASK_ID, "agent_id": "react", "input": "q", "user": OWNER.address}
    fields.update(kw)
    return TaskSpec(**fields)  # type: ignore[arg-type]


def confirm(signer: object, args: dict[str, object]) -> dict[str, bytes]:
    ah = action_hash("send_funds", args)
    sig = sign_confirmation(Confirmation(bytes.fromhex(TASK_ID[2:]), ah), DOMAIN, signer)  # type: ignore[arg-type]
    return {"0x" + ah.hex(): sig}


def test_capabilities_intersect_task_request_and_policy() -> None:
    access = AccessManager(NodePolicy(allowed_tools=frozenset({"calculator", "text"})))
    caps = access.capabilities(spec(tools=frozenset({"calculator", "send_funds"})), REGISTERED)
    assert caps.tools == {"calculator"}
    assert caps.namespace == namespace_of(OWNER.address, "react")
    assert access.capabilities(spec(), REGISTERED).tools == {"calculator", "text"}


def test_namespace_differs_per_agent_and_per_user() -> None:
    assert namespace_of(OWNER.address, "a") != namespace_of(OWNER.address, "b")
    assert namespace_of(OWNER.address, "a") != namespace_of(OTHER.address, "a")
    assert namespace_of(OWNER.address, "a") == namespace_of(OWNER.address.lower(), "a")


def test_tool_outside_capabilities_is_denied_and_audited() -> None:
    access = AccessManager(NodePolicy(allowed_tools=frozenset({"text"})))
    s = spec()
    with pytest.raises(AccessDeniedError):
        access.check_tool(s, access.capabilities(s, REGISTERED), CALC, {})
    [entry] = access.audit_log(TASK_ID)
    assert not entry.allowed and entry.target == "calculator"


def test_irreversible_tool_needs_the_owners_confirmation() -> None:
    access = AccessManager(NodePolicy(), DOMAIN)
    args = {"to": "0x" + "44" * 20, "amount": 5}
    caps = access.capabilities(spec(), REGISTERED)
    with pytest.raises(ConfirmationRequiredError, match="no confirmation"):
        access.check_tool(spec(), caps, SEND, args)
    with pytest.raises(ConfirmationRequiredError, match="not the task owner"):
        access.check_tool(spec(confirmations=confirm(OTHER, args)), caps, SEND, args)
    with pytest.raises(ConfirmationRequiredError, match="no confirmation"):  # signed for other args
        access.check_tool(spec(confirmations=confirm(OWNER, {**args, "amount": 6})), caps, SEND, args)
    access.check_tool(spec(confirmations=confirm(OWNER, args)), caps, SEND, args)
    assert [e.allowed for e in access.audit_log(TASK_ID)] == [False, False, False, True]


def test_without_a_domain_irreversible_tools_are_refused() -> None:
    access = AccessManager(NodePolicy())
    args = {"amount": 1}
    with pytest.raises(ConfirmationRequiredError):
        access.check_tool(
            spec(confirmations=confirm(OWNER, args)), access.capabilities(spec(), REGISTERED), SEND, args
        )


def test_budgets_and_areas() -> None:
    access = AccessManager(NodePolicy(allow_storage=False, max_llm_calls=2))
    s = spec()
    caps = access.capabilities(s, REGISTERED)
    access.check_budget(s, "LLM calls", 1, caps.max_llm_calls)
    with pytest.raises(BudgetExceededError):
        access.check_budget(s, "LLM calls", 2, caps.max_llm_calls)
    access.check_area(s, caps, "memory", write=True)
    with pytest.raises(AccessDeniedError, match="no storage"):
        access.check_area(s, caps, "storage", write=False)
