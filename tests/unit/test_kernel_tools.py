"""Tool manager and built-in tools: schemas, timeouts, concurrency, the safe calculator."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from typing import Any

import pytest
from supernet.node.kernel.builtin_tools import builtin_tools
from supernet.node.kernel.calculator import CalculatorError, evaluate
from supernet.node.kernel.errors import ToolArgumentsError, ToolError, ToolTimeoutError
from supernet.node.kernel.tools import Tool, ToolRegistry, ToolSpec

OBJ = {"type": "object"}


@pytest.fixture
def registry() -> ToolRegistry:
    reg = ToolRegistry()
    for tool in builtin_tools(store=None, rpc_url=None):
        reg.register(tool)
    return reg


@pytest.mark.parametrize(
    ("expr", "value"),
    [
        ("2 + 3 * 4", 14),
        ("(17 + 3) * 4", 80),
        ("2 ^ 10", 1024),
        ("-7 // 2", -4),
        ("sqrt(81)", 9.0),
        ("max(1, 5)", 5),
    ],
)
def test_calculator_evaluates_arithmetic(expr: str, value: float) -> None:
    assert evaluate(expr) == value


@pytest.mark.parametrize(
    "expr",
    [
        "__import__('os').system('true')",
        "open('x')",
        "(1).__class__",
        "10 ** 100000",
        "1 / 0",
        "[1, 2]",
        "x",
        "2 +",
    ],
)
def test_calculator_refuses_anything_else(expr: str) -> None:
    with pytest.raises(CalculatorError):
        evaluate(expr)


async def test_builtin_tools_run_through_the_registry(registry: ToolRegistry) -> None:
    assert await registry.call("calculator", {"expression": "6 * 7"}) == 42
    doc = json.dumps({"a": {"b": [10, 20, {"c": "deep"}]}})
    assert await registry.call("json_query", {"json": doc, "path": "a.b[2].c"}) == "deep"
    assert await registry.call("text", {"text": "Hello big world", "op": "words"}) == 3
    assert await registry.call("text", {"text": "abc", "op": "reverse"}) == "cba"
    assert registry.spec("chain_read").deterministic is False
    assert registry.spec("calculator").deterministic is True


async def test_bad_arguments_are_refused_by_schema(registry: ToolRegistry) -> None:
    with pytest.raises(ToolArgumentsError, match="expression"):
        await registry.call("calculator", {"expr": "1+1"})
    with pytest.raises(ToolArgumentsError):
        await registry.call("text", {"text": "x", "op": "explode"})
    with pytest.raises(ToolError, match="unknown tool"):
        await registry.call("rm_rf", {})


async def test_tool_failures_are_tool_errors(registry: ToolRegistry) -> None:
    with pytest.raises(ToolError, match="division by zero"):
        await registry.call("calculator", {"expression": "1/0"})
    with pytest.raises(ToolError, match="no chain RPC"):
        await registry.call("chain_read", {"method": "block_number"})
    with pytest.raises(ToolError, match="not JSON"):
        await registry.call("json_query", {"json": "{", "path": "a"})


async def test_timeout_and_concurrency_limit() -> None:
    reg = ToolRegistry()
    running = 0
    peak = 0

    async def slow(args: Mapping[str, Any]) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(float(args.get("s", 0.05)))
        running -= 1
        return 1

    reg.register(Tool(ToolSpec("slow", "sleeps", OBJ, timeout_s=0.2, max_concurrency=2), slow))
    await asyncio.gather(*(reg.call("slow", {}) for _ in range(6)))
    assert peak == 2
    with pytest.raises(ToolTimeoutError):
        await reg.call("slow", {"s": 5})


async def test_sync_tools_run_off_the_event_loop() -> None:
    reg = ToolRegistry()
    reg.register(Tool(ToolSpec("block", "blocks", OBJ, timeout_s=5), lambda args: time.sleep(0.2) or "done"))
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        for _ in range(5):
            await asyncio.sleep(0.02)
            ticks += 1

    result, _ = await asyncio.gather(reg.call("block", {}), ticker())
    assert result == "done" and ticks == 5


def test_register_checks_name_and_schema() -> None:
    reg = ToolRegistry()
    reg.register(Tool(ToolSpec("a", "", OBJ), lambda a: 1))
    with pytest.raises(ValueError, match="already"):
        reg.register(Tool(ToolSpec("a", "", OBJ), lambda a: 1))
    with pytest.raises(Exception, match="is not valid"):
        reg.register(Tool(ToolSpec("b", "", {"type": "no-such-type"}), lambda a: 1))
