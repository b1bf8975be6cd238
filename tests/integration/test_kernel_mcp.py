"""MCP tools on the real kernel: an agent calls tools of a real MCP server (tests/mcp_test_server.py,
launched over stdio by the node's client); results and the specs the agent saw are in the trace;
the replay answers the calls from the trace; validators re-run none of them; a task reaches only
the MCP tools its capabilities allow."""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from supernet.node.agents.base import Agent
from supernet.node.agents.context import AgentContext
from supernet.node.agents.registry import AgentRegistry
from supernet.node.kernel.errors import AccessDeniedError, ToolError
from supernet.node.kernel.mcp_tools import MCPServerConfig, MCPTools
from supernet.node.kernel.replay import context_of, replay
from supernet.node.kernel.syscalls import TaskSpec
from supernet.sdk.formats.trace import Trace
from supernet.validator.tool_check import RegistryRunner, check_tools
from supernet.validator.trace_view import ToolCall, parse_trace

from tests.integration.test_kernel_agents import ALICE

pytestmark = [pytest.mark.model, pytest.mark.timeout(600)]

SERVER = str(Path(__file__).resolve().parents[1] / "mcp_test_server.py")


class McpAgent(Agent):
    """Test agent: two MCP calls, one that times out (caught), one that may be refused."""

    agent_id = "mcp"

    async def run(self, ctx: AgentContext, input: Any) -> str:
        total = await ctx.tools.call("test.add", {"a": input["a"], "b": input["b"]})
        echo = await ctx.tools.call("test.echo", {"text": "hello"})
        try:
            await ctx.tools.call("test.slow", {"seconds": 10})
            slow = "done"
        except ToolError as exc:
            slow = type(exc).__name__
        return f"{total['result']} {echo} {slow}"


@pytest.fixture
async def mcp_tools() -> AsyncIterator[MCPTools]:
    cfg = MCPServerConfig(
        "test",
        command=sys.executable,
        args=(SERVER, "stdio"),
        timeout_s=2.0,
        deterministic=frozenset({"add"}),
        allow=frozenset({"add", "echo", "slow"}),
    )
    tools = MCPTools([cfg])
    await tools.start()
    yield tools
    await tools.close()


async def test_an_agent_calls_mcp_tools_through_the_kernel(
    make_kernel: Any, store_client: Any, mcp_tools: MCPTools
) -> None:
    agents = AgentRegistry()
    agents.register(McpAgent)
    kernel = await make_kernel(agents=agents)
    assert mcp_tools.register(kernel.tools) == ["test.add", "test.echo", "test.slow"]

    outcome = await kernel.run_task(TaskSpec("0x" + "f1" * 32, "mcp", {"a": 40, "b": 2}, user=ALICE))
    assert outcome.status == "ok", outcome.error
    assert outcome.output == "42 hello ToolTimeoutError"
    doc: dict[str, Any] = await store_client.get_dag(outcome.trace_cid)
    assert Trace.from_dag(doc).to_dag() == doc  # the one trace format, unchanged
    tools = [e for e in doc["events"] if e["kind"] == "tool"]
    assert [(e["name"], e["result"], e["deterministic"]) for e in tools] == [
        ("test.add", {"result": 42}, True),  # declared deterministic by the operator
        ("test.echo", "hello", False),
        ("test.slow", None, False),
    ]
    assert tools[2]["error"].startswith("ToolTimeoutError: ")
    seen = {t["name"]: t for t in doc["tools"]}
    assert seen["test.add"]["parameters"]["required"] == ["a", "b"]
    assert {"calculator", "test.add", "test.echo", "test.slow"} <= set(seen)

    # the replay answers every MCP call from the trace (no server needed)
    result = await replay(doc, McpAgent, kernel.engine.tokenizer)
    assert result.divergences == [] and result.output == doc["output"]

    # a validator that cannot reach the operator's servers re-runs no MCP call, holds none against it
    # (the timeout of test.slow is in the node's words at the tool's recorded limit)
    offered = {spec.name: spec for spec in context_of(doc)[2]}
    findings, rerun, unverifiable = await check_tools(
        parse_trace(doc).tool_calls, RegistryRunner(store_client), None, offered
    )
    assert findings == [] and rerun == 0 and unverifiable is None

    # one configured with the same server (the trace describes it as the validator's does) re-runs
    # the call recorded (and declared) deterministic
    runner = RegistryRunner(store_client)
    runner.add_mcp(mcp_tools)
    findings, rerun, unverifiable = await check_tools(parse_trace(doc).tool_calls, runner, None, offered)
    assert findings == [] and rerun == 1 and unverifiable is None
    # with another server's description of the tools nothing is re-run, nothing accused
    others = {
        name: dataclasses.replace(spec, description="another server's") for name, spec in offered.items()
    }
    assert await check_tools(parse_trace(doc).tool_calls, runner, None, others) == ([], 0, None)

    # ... so a node that fabricates that result is caught
    forged = {**doc, "events": [dict(e) for e in doc["events"]]}
    add = next(e for e in forged["events"] if e["kind"] == "tool" and e["name"] == "test.add")
    add["result"] = {"result": 43}
    findings, rerun, _ = await check_tools(parse_trace(forged).tool_calls, runner, None, offered)
    assert rerun == 1 and [f.message for f in findings] == ["tool test.add returned another result on re-run"]


async def test_an_mcp_tool_is_deterministic_only_by_its_operators_word(store_client: Any) -> None:
    """A validator that declares ``echo`` deterministic does not accuse a node whose operator did
    not (the node recorded the call as non-deterministic): nothing is re-run, nothing found."""
    cfg = MCPServerConfig(
        "test",
        command=sys.executable,
        args=(SERVER, "stdio"),
        timeout_s=2.0,
        deterministic=frozenset({"add", "echo"}),
        allow=frozenset({"add", "echo"}),
    )
    tools = MCPTools([cfg])
    await tools.start()
    try:
        runner = RegistryRunner(store_client)
        assert runner.add_mcp(tools) == ["test.add", "test.echo"]
        call = ToolCall(0, "test.echo", {"text": "hi"}, "other", None, deterministic=False)
        assert await check_tools((call,), runner) == ([], 0, None)
    finally:
        await tools.close()


async def test_a_task_reaches_only_the_mcp_tools_it_may_use(
    make_kernel: Any, store_client: Any, mcp_tools: MCPTools
) -> None:
    agents = AgentRegistry()
    agents.register(McpAgent)
    kernel = await make_kernel(agents=agents)
    mcp_tools.register(kernel.tools)
    spec = TaskSpec("0x" + "f2" * 32, "mcp", {"a": 1, "b": 2}, user=ALICE, tools=frozenset({"calculator"}))
    outcome = await kernel.run_task(spec)
    assert outcome.status == "error" and "test.add" in (outcome.error or "")
    assert outcome.error.startswith(AccessDeniedError.__name__), outcome.error
    assert any(not e.allowed and e.target == "test.add" for e in kernel.audit_log(spec.task_id))


async def test_a_node_built_from_its_config_offers_the_tools_of_the_servers_that_are_up(
    tmp_path: Path,
) -> None:
    from supernet.node.service.config import NodeSettings
    from supernet.node.service.kernel_executor import KernelExecutor
    from supernet.sdk.store.embedded import in_process_client

    servers = [
        {"name": "test", "command": sys.executable, "args": [SERVER, "stdio"], "allow": ["add"]},
        {"name": "gone", "command": "/nonexistent/mcp-server", "connect_timeout_s": 5},
    ]
    settings = NodeSettings.load(None, data_dir=tmp_path / "node", mcp={"servers": servers})
    store = in_process_client(tmp_path / "store")
    executor = await KernelExecutor.create(settings, store, None)
    try:
        names = executor.kernel.tools.names()
        assert "test.add" in names and "calculator" in names
        assert not [n for n in names if n.startswith("gone.") or n == "test.echo"]
        assert await executor.kernel.tools.call("test.add", {"a": 1, "b": 2}) == {"result": 3}
    finally:
        await executor.close()
        await store.aclose()


async def test_a_receipts_mcp_reruns_share_one_time_budget(store_client: Any) -> None:
    """A node's trace chooses how many MCP calls it records, and a validator re-runs each (where it
    serves the same server and both declare the tool deterministic) up to the server's timeout:
    a trace of many slow calls held the validator on one receipt for as long as the node liked.
    The re-runs of one receipt now share a budget (`mcp_budget_s`); calls past it are skipped,
    never accused, like those of a server the validator lacks. A made-up result inside the budget
    is still caught."""
    cfg = MCPServerConfig(
        "test",
        command=sys.executable,
        args=(SERVER, "stdio"),
        timeout_s=5.0,
        deterministic=frozenset({"slow"}),
        allow=frozenset({"slow"}),
    )
    tools = MCPTools([cfg])
    await tools.start()
    try:
        runner = RegistryRunner(store_client)
        assert runner.add_mcp(tools) == ["test.slow"]
        spec = runner.spec("test.slow")
        assert spec is not None
        offered = {"test.slow": spec}  # the trace describes the tool as this validator's server does
        calls = tuple(
            ToolCall(i, "test.slow", {"seconds": 0.5}, "done", None, deterministic=True) for i in range(40)
        )
        started = time.monotonic()
        findings, rerun, unverifiable = await check_tools(calls, runner, None, offered, mcp_budget_s=1.2)
        elapsed = time.monotonic() - started
        assert findings == [] and unverifiable is None
        assert 2 <= rerun <= 4, rerun  # ~1.2 s of 0.5 s calls (a call started within it finishes)
        assert elapsed < 5.0, f"{elapsed:.1f} s: the budget did not hold (40 calls are 20 s)"

        lie = (ToolCall(0, "test.slow", {"seconds": 0.1}, "not done", None, deterministic=True),)
        # within the budget (0.1 + 2 x 0.5 s), whatever order the validator draws
        findings, rerun, _ = await check_tools(lie + calls[:2], runner, None, offered, mcp_budget_s=1.2)
        assert [f.message for f in findings] == ["tool test.slow returned another result on re-run"]
    finally:
        await tools.close()
