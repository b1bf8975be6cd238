"""The access manager end to end: a real Anvil, ``supernet node run`` in a subprocess with the real
model (SmolLM2-135M), the embedded store, the operator's MCP server (tests/mcp_test_server.py over
stdio, its ``echo`` tool declared irreversible) and privilege groups, driven by the user's SDK
``Client`` (``prepare``/``send``, ``stream_events``, ``confirm``, ``audit``, ``trace``).

The agent that reaches the irreversible action is a packaged agent (``payer``), written at run time
into a folder on the node's ``PYTHONPATH`` with its ``supernet.agents`` entry point, and allowed by
the node's ``[agents] allow`` at its code hash like any installed package; it makes tool calls only,
so what it does is exact. The installed example package ``calc-explain`` is the other agent: a
group leaves it without its calculator.

- a call of ``test.echo`` pauses the task, the SDK's event stream shows ``confirmation_required``,
  the user's ``Client.confirm`` (EIP-712 ``Confirmation``) resumes it, the output is the tool's
  result, the trace carries the signature, and ``Client.audit`` returns the persisted decisions;
- a confirmation signed by another account is refused (403, naming the signer) and changes
  nothing; another user can read neither the task nor its audit;
- a privilege group forbids the calculator: the call is refused (the agent goes on, or the task
  fails) and the refusal is in the audit.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from node_fixtures import NodeProcess, node_on_anvil
from supernet.node.agents.packages import installed_entry_points
from supernet.sdk.agents import bundle_hash, package_bundle
from supernet.sdk.chain import Contracts
from supernet.sdk.chain.anvil import Anvil, dev_account
from supernet.sdk.client import Client
from supernet.sdk.client.confirm import confirmation_body
from supernet.sdk.client.types import ClientError
from supernet.sdk.formats.trace import ToolEvent

pytestmark = [pytest.mark.anvil, pytest.mark.model, pytest.mark.slow]

NODE_KEY_INDEX = 11
USER_INDEXES = (12, 13, 14)  # the tasks' user, another account, the group test's user
SERVER = str(Path(__file__).resolve().parents[1] / "mcp_test_server.py")
AGENT_PACKAGE = "supernet_e2e_access_agent"
STEP_S = 120.0  # bound of one task's wait (the node answers in seconds)

AGENT_SOURCE = '''"""Test agent package: ``payer`` makes tool calls only.

Input ``{"expression": ...}``: a calculator call (its refusal is caught and reported);
``{"send": text}``: a call of the irreversible ``test.echo`` (the action), whose result is the answer.
"""

from supernet.sdk.agents import AccessDeniedError, Agent


class PayerAgent(Agent):
    agent_id = "payer"
    description = "Test agent: a calculator call and an irreversible action."
    input_schema = {
        "type": "object",
        "properties": {"expression": {"type": "string"}, "send": {"type": "string"}},
        "additionalProperties": False,
    }
    bundle_package = "supernet_e2e_access_agent"

    async def run(self, ctx, input):
        parts = []
        if "expression" in input:
            try:
                value = await ctx.tools.call("calculator", {"expression": input["expression"]})
                parts.append(f"calculator: {value}")
            except AccessDeniedError as exc:
                parts.append(f"calculator refused: {exc}")
        if "send" in input:
            sent = await ctx.tools.call("test.echo", {"text": input["send"]})
            parts.append(f"sent: {sent}")
        return "; ".join(parts)
'''


def write_agent_package(root: Path) -> str:
    """Write the ``payer`` package and its distribution metadata (entry point) under ``root``;
    returns its code hash as the node computes it (every file of the package)."""
    package = root / AGENT_PACKAGE
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(AGENT_SOURCE)
    dist = root / f"{AGENT_PACKAGE}-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {AGENT_PACKAGE}\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text(f"[supernet.agents]\npayer = {AGENT_PACKAGE}:PayerAgent\n")
    sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    try:
        return bundle_hash(package_bundle(AGENT_PACKAGE))
    finally:
        sys.path.remove(str(root))
        importlib.invalidate_caches()


def node_config(payer_hash: str, calc_hash: str) -> str:
    """The operator's config: the two packaged agents, the MCP server, the groups."""
    return f"""
[engine]
agents = ["chat"]
max_new_tokens = 16

[agents]
allow = [
  {{ id = "payer", code_hash = "{payer_hash}" }},
  {{ id = "calc-explain", code_hash = "{calc_hash}" }},
]

[[mcp.servers]]
name = "test"
transport = "stdio"
command = {json.dumps(sys.executable)}
args = [{json.dumps(SERVER)}, "stdio"]
allow = ["echo", "add"]
irreversible = ["echo"]

[access]
confirmation_timeout_s = 90

[[access.groups]]
name = "payers"
agents = ["payer"]
tools = ["test.*"]

[[access.groups]]
name = "no-calculator"
agents = ["calc-explain"]
tools = ["text"]
"""


@dataclass
class Net:
    anvil: Anvil
    contracts: Contracts
    deployment: Path
    node: NodeProcess
    tmp: Path

    def client(self, user_index: int, name: str) -> Client:
        key = "0x" + bytes(dev_account(user_index).key).hex()
        return Client.connect(self.anvil.url, self.deployment, key, state_dir=self.tmp / f"user-{name}")


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    tmp = tmp_path_factory.mktemp("access")
    packages = tmp / "agent-packages"
    payer_hash = write_agent_package(packages)
    eps = [ep for ep in installed_entry_points() if ep.name == "calc-explain"]
    assert eps, "examples/agents/supernet-example-agent is not installed (make setup installs it)"
    calc_hash = eps[0].load().code_hash()
    with pytest.MonkeyPatch.context() as mp:  # the node process finds the package on its path
        mp.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(packages), os.environ.get("PYTHONPATH")])))
        with node_on_anvil(tmp, NODE_KEY_INDEX, extra=node_config(payer_hash, calc_hash)) as (
            anvil,
            contracts,
            dep,
            node,
        ):
            yield Net(anvil, contracts, dep, node, tmp)


async def until_confirmation(client: Client, net: Net, task_id: str) -> tuple[list[str], dict[str, Any]]:
    """Follow the task's SDK event stream up to its first ``confirmation_required``."""
    seen: list[str] = []
    async with asyncio.timeout(STEP_S):
        async for event, data in client.stream_events(net.node.url, task_id):
            seen.append(event)
            if event == "confirmation_required":
                return seen, data
            assert event == "token", (event, data, net.node.log_tail())
    raise AssertionError(f"the stream ended without confirmation_required: {seen}\n{net.node.log_tail()}")


async def until_end(client: Client, net: Net, task_id: str) -> tuple[list[str], dict[str, Any]]:
    """Follow the task's SDK event stream to its ``done`` (or ``error``) event."""
    seen: list[str] = []
    async with asyncio.timeout(STEP_S):
        async for event, data in client.stream_events(net.node.url, task_id):
            seen.append(event)
            if event in ("done", "error", "pending"):
                return seen, data
    raise AssertionError(f"the stream ended without done: {seen}\n{net.node.log_tail()}")


def decisions(audit: list[Any]) -> list[tuple[str, str, bool]]:
    return [(a.action, a.target, a.allowed) for a in audit]


async def test_a_paused_action_is_confirmed_through_the_sdk_and_audited(net: Net) -> None:
    user = net.client(USER_INDEXES[0], "owner")
    try:
        p = await user.prepare({"send": "pay 5 to bob"}, agent="payer", node_url=net.node.url, deposit=10**17)
        await user.send(p)
        events, pending = await until_confirmation(user, net, p.task_id)
        assert events == ["confirmation_required"]
        assert pending["taskId"] == p.task_id
        assert (pending["tool"], pending["args"]) == ("test.echo", {"text": "pay 5 to bob"})
        typed = pending["typedData"]
        assert typed["primaryType"] == "Confirmation"
        assert typed["types"]["Confirmation"] == [
            {"name": "requestHash", "type": "bytes32"},
            {"name": "actionHash", "type": "bytes32"},
        ]
        assert typed["domain"]["chainId"] == net.contracts.domain.chain_id
        assert typed["domain"]["verifyingContract"].lower() == net.contracts.domain.verifying_contract.lower()
        assert typed["message"] == {"requestHash": p.task_id, "actionHash": pending["actionHash"]}
        assert (await user.task(p.task_id)).status == "running"  # paused, not failed

        accepted = await user.confirm(p.task_id, pending)  # signs the EIP-712 Confirmation
        assert (accepted.taskId, accepted.actionHash, accepted.resumed) == (
            p.task_id,
            pending["actionHash"],
            True,
        )
        events, final = await until_end(user, net, p.task_id)
        assert events[-1] == "done", (events, final, net.node.log_tail())
        assert final["status"] == "done" and final["output"] == "sent: pay 5 to bob"
        user.finished(p, final["status"], final["output"])
        # the stream replays from the start: the pause, then the end
        events, _ = await until_end(user, net, p.task_id)
        assert [e for e in events if e != "token"] == ["confirmation_required", "done"]
        with pytest.raises(ClientError) as late:  # after the task nothing waits any more
            await user.confirm(p.task_id, pending)
        assert late.value.status == 404, late.value

        audit = await user.audit(p.task_id)
        assert decisions(audit) == [("confirmation.wait", "test.echo", True), ("tool", "test.echo", True)]
        assert all(a.agent == "payer" for a in audit)
        assert audit[0].reason == f"action {pending['actionHash']}"

        # the trace records the user's signature that allowed the call (what a validator checks)
        trace = await user.trace(p.task_id)
        [call] = [e for e in trace.events if isinstance(e, ToolEvent)]
        signed = confirmation_body(p.task_id, pending, net.contracts.domain, user.account)["signature"]
        assert call.name == "test.echo" and call.result == "pay 5 to bob"
        assert call.confirmation is not None and "0x" + call.confirmation.hex() == signed
    finally:
        await user.aclose()


async def test_another_accounts_confirmation_is_refused_and_changes_nothing(net: Net) -> None:
    user = net.client(USER_INDEXES[0], "owner-b")
    other = net.client(USER_INDEXES[1], "other")
    try:
        p = await user.prepare(
            {"send": "pay 7 to mallory"}, agent="payer", node_url=net.node.url, deposit=10**17
        )
        await user.send(p)
        _, pending = await until_confirmation(user, net, p.task_id)

        with pytest.raises(ClientError) as refused:
            await other.confirm(p.task_id, pending, node_url=net.node.url)
        assert refused.value.status == 403, refused.value
        assert refused.value.error["code"] == "forbidden"
        assert refused.value.error["message"] == (
            f"confirmation signed by {other.account.address}, not the task's user"
        )
        # nothing changed: the call still waits, and the user's own confirmation resumes it
        await asyncio.sleep(0.5)
        assert (await user.task(p.task_id)).status == "running"
        assert (await user.confirm(p.task_id, pending)).resumed is True
        _, final = await until_end(user, net, p.task_id)
        assert final["status"] == "done" and final["output"] == "sent: pay 7 to mallory", final
        user.finished(p, final["status"], final["output"])
        audit = await user.audit(p.task_id)
        assert decisions(audit) == [("confirmation.wait", "test.echo", True), ("tool", "test.echo", True)]

        # another user reads neither the task's audit nor the task
        for read in (other.audit, other.task):
            with pytest.raises(ClientError) as denied:
                await read(p.task_id, net.node.url)
            assert denied.value.status == 403, denied.value
    finally:
        await user.aclose()
        await other.aclose()


async def test_a_group_forbids_a_tool_and_the_refusal_is_audited(net: Net) -> None:
    user = net.client(USER_INDEXES[2], "groups")
    try:
        # `payer` is in the group "payers" (tools test.*): its calculator call is refused, it goes on
        result = await user.submit_task(
            {"expression": "6 * 7"}, agent="payer", node_url=net.node.url, deposit=10**17
        )
        assert result.output == "calculator refused: tool calculator: not in this task's capabilities"
        audit = await user.audit(result.task_id)
        assert decisions(audit) == [("tool", "calculator", False)]
        assert audit[0].agent == "payer" and audit[0].reason == "not in this task's capabilities"

        # `calc-explain` (the example package) is in "no-calculator": its one call is refused and
        # the task fails (not charged), with the refusal in its audit
        p = await user.prepare("6 * 7", agent="calc-explain", node_url=net.node.url)
        await user.send(p)
        _, final = await until_end(user, net, p.task_id)
        assert final["status"] == "failed", final
        assert "AccessDeniedError" in final["error"] and "calculator" in final["error"], final
        user.finished(p, final["status"], final["output"])
        audit = await user.audit(p.task_id)
        assert decisions(audit) == [("tool", "calculator", False)]
        assert audit[0].agent == "calc-explain"
    finally:
        await user.aclose()
