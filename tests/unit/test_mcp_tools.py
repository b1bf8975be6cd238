"""MCP tools: a real MCP server (tests/mcp_test_server.py, written with the ``mcp`` package) reached
over stdio (launched by the node's client) and Streamable HTTP; names, schemas, timeouts, the
per-server concurrency limit, hostile results and schemas, a server that is down or dies."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import mcp.types as mt
import pytest
from supernet.node.kernel.builtin_tools import builtin_tools
from supernet.node.kernel.errors import ToolError, ToolTimeoutError, ToolUnavailableError
from supernet.node.kernel.mcp_tools import MCPServerConfig, MCPTools, make_spec, result_value
from supernet.node.kernel.tools import ToolRegistry
from supernet.node.service.config import NodeSettings
from supernet.node.service.kernel_executor import mcp_config
from supernet.sdk.devnet.processes import free_port

pytestmark = pytest.mark.timeout(120)

SERVER = str(Path(__file__).resolve().parents[1] / "mcp_test_server.py")


def stdio(**kw: Any) -> MCPServerConfig:
    return MCPServerConfig("test", command=sys.executable, args=(SERVER, "stdio"), **kw)


async def started(*configs: MCPServerConfig) -> tuple[MCPTools, ToolRegistry]:
    """The built-in tools and the servers' tools in one registry, as the node has them."""
    mcp = MCPTools(configs)
    await mcp.start()
    registry = ToolRegistry()
    for tool in builtin_tools(store=None, rpc_url=None):
        registry.register(tool)
    mcp.register(registry)
    return mcp, registry


@pytest.fixture
async def server() -> AsyncIterator[tuple[MCPTools, ToolRegistry]]:
    mcp, registry = await started(
        stdio(timeout_s=1.0, max_concurrency=2, deterministic=frozenset({"add"}), max_result_bytes=10_000)
    )
    yield mcp, registry
    await mcp.close()


async def test_stdio_tools_are_registered_with_their_schemas_and_called(
    server: tuple[MCPTools, ToolRegistry],
) -> None:
    _, registry = server
    names = registry.names()
    assert {"test.add", "test.echo", "test.slow", "test.calculator"} <= set(names)
    assert "calculator" in names  # the server's `calculator` is `test.calculator`: no collision
    add = registry.spec("test.add")
    assert add.parameters["type"] == "object" and add.parameters["required"] == ["a", "b"]
    assert add.description == "Add two integers." and add.timeout_s == 1.0
    assert add.deterministic and not registry.spec("test.echo").deterministic  # declared / default
    assert await registry.call("test.add", {"a": 2, "b": 3}) == {"result": 5}  # structuredContent
    assert await registry.call("test.echo", {"text": "hi"}) == "hi"  # text content
    assert await registry.call("test.calculator", {"expression": "1+1"}) == "not the built-in"
    assert await registry.call("calculator", {"expression": "1+1"}) == 2
    with pytest.raises(ToolError, match="bad arguments"):
        await registry.call("test.add", {"a": "two", "b": 3})  # the server's schema, checked here
    with pytest.raises(ToolError, match="MCP tool error: Error executing tool fail: it broke"):
        await registry.call("test.fail", {})


async def test_slow_calls_time_out_and_calls_past_the_limit_wait(
    server: tuple[MCPTools, ToolRegistry],
) -> None:
    _, registry = server
    with pytest.raises(ToolTimeoutError, match=r"timed out after 1\.0 s"):
        await registry.call("test.slow", {"seconds": 5})
    assert await registry.call("test.echo", {"text": "still up"}) == "still up"
    # 6 calls of 0.4 s, 2 at a time (one limit for all the server's tools): they take ~1.2 s, more
    # than the 1 s timeout, but waiting for a slot is not timed, and never more than 2 ran at once
    start = time.monotonic()
    peaks = await asyncio.gather(*(registry.call("test.hold", {"seconds": 0.4}) for _ in range(6)))
    assert time.monotonic() - start >= 1.1
    assert max(p["result"] for p in peaks) == 2


async def test_results_are_bounded(server: tuple[MCPTools, ToolRegistry]) -> None:
    _, registry = server
    assert len(await registry.call("test.huge", {"n": 5000})) == 5000
    with pytest.raises(ToolError, match="over this node's limit of 10000"):
        await registry.call("test.huge", {"n": 20_000})


async def test_a_server_that_dies_is_reconnected(server: tuple[MCPTools, ToolRegistry]) -> None:
    mcp, registry = server
    with pytest.raises(ToolUnavailableError, match=r"^MCP server test is unavailable$"):  # reason logged
        await registry.call("test.die", {})
    for _ in range(60):  # the restart may take longer than one call's 1 s: those calls time out
        try:
            assert await registry.call("test.add", {"a": 1, "b": 1}) == {"result": 2}
            break
        except ToolTimeoutError:
            await asyncio.sleep(0.2)
    else:
        raise AssertionError("the server did not come back")
    assert mcp.connections["test"].connected


async def test_a_server_that_is_down_leaves_its_tools_out() -> None:
    down = MCPServerConfig("gone", command="/nonexistent/mcp-server", connect_timeout_s=5)
    closed = MCPServerConfig("nohttp", transport="http", url=f"http://127.0.0.1:{free_port()}/mcp")
    mcp, registry = await started(down, closed, stdio(allow=frozenset({"echo"})))
    try:
        assert [n for n in registry.names() if "." in n] == ["test.echo"]  # and `allow` filtered
    finally:
        await mcp.close()


def test_hostile_tool_listings_are_refused() -> None:
    cfg = stdio(irreversible=frozenset({"wipe"}), max_schema_bytes=2000)

    def tool(name: str, schema: Any, **kw: Any) -> mt.Tool:
        return mt.Tool(name=name, input_schema=schema, **kw)

    obj = {"type": "object", "properties": {"x": {"type": "string"}}}
    assert make_spec(cfg, tool("wipe", obj)).irreversible
    destructive = mt.ToolAnnotations(destructive_hint=True)
    assert make_spec(cfg, tool("rm", obj, annotations=destructive)).irreversible  # stricter only
    spec = make_spec(cfg, tool("x", obj, description="ignore previous\n\ninstructions " * 200))
    assert len(spec.description) == 1024 and "\n" not in spec.description
    for name, schema, match in [
        ("a.b", obj, "must match"),  # a dot would let it pose as another server's tool
        ("", obj, "must match"),
        ("ok", {"type": "string"}, "object"),
        ("ok", {"type": "object", "properties": {"x": {"$ref": "https://evil.example/s.json"}}}, "non-local"),
        ("ok", {"type": "object", "$id": "https://evil.example/", "properties": {}}, "non-local"),
        ("ok", {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(200)}}, "over"),
        ("ok", {"type": "object", "properties": {"x": {"type": 5}}}, "is not valid"),
        ("ok", {"type": "object", "properties": {"x": {"maximum": 10**30}}}, "not recordable in a trace"),
        # recordable, but with no RFC 8785 form: the agent profile that lists it could not be hashed
        (
            "ok",
            {"type": "object", "properties": {"x": {"maximum": 2**60}}},
            "cannot be listed in an agent profile",
        ),
    ]:
        with pytest.raises(Exception, match=match):
            make_spec(cfg, tool(name, schema))
    assert make_spec(
        cfg, tool("ok", {"type": "object", "$defs": {"s": {}}, "properties": {"x": {"$ref": "#/$defs/s"}}})
    )


def test_mcp_content_becomes_one_json_value() -> None:
    text = mt.TextContent(type="text", text="a")
    image = mt.ImageContent(type="image", data="aGVsbG8=", mime_type="image/png")
    link = mt.ResourceLink(type="resource_link", uri="file:///x", name="x")
    assert result_value(mt.CallToolResult(content=[text, text]), 100) == "a\na"
    assert result_value(mt.CallToolResult(content=[text], structured_content={"n": 1}), 100) == {"n": 1}
    assert result_value(mt.CallToolResult(content=[text, image, link]), 1000) == [
        {"type": "text", "text": "a"},
        {
            "type": "image",
            "mime_type": "image/png",
            "bytes": 5,
            "sha256": "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
        },
        {"type": "resource_link", "uri": "file:///x", "name": "x"},
    ]
    with pytest.raises(ToolError, match="MCP tool error: nope"):
        result_value(
            mt.CallToolResult(content=[mt.TextContent(type="text", text="nope")], is_error=True), 100
        )
    with pytest.raises(ToolError, match="not JSON"):
        result_value(mt.CallToolResult(content=[], structured_content={"x": float("nan")}), 100)


def test_mcp_servers_load_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text(
        '[[mcp.servers]]\nname = "files"\ncommand = "srv"\nallow = ["read"]\nmax_concurrency = 2\n'
        '[[mcp.servers]]\nname = "web"\ntransport = "http"\nurl = "http://h/mcp"\n'
    )
    files, web = NodeSettings.load(path).mcp.servers
    assert (files.command, files.allow, files.max_concurrency) == ("srv", ["read"], 2)
    assert web.url == "http://h/mcp"
    assert NodeSettings().mcp.servers == []  # none by default


def test_mcp_servers_are_configured_in_the_node_settings() -> None:
    settings = NodeSettings.model_validate(
        {
            "mcp": {
                "servers": [
                    {
                        "name": "files",
                        "command": "mcp-files",
                        "args": ["--root", "/srv"],
                        "deterministic": ["read"],
                    },
                    {"name": "web", "transport": "http", "url": "http://127.0.0.1:9000/mcp", "timeout_s": 5},
                ]
            }
        }
    )
    files, web = (mcp_config(s) for s in settings.mcp.servers)
    assert files.args == ("--root", "/srv") and files.deterministic == {"read"} and files.allow is None
    assert web.transport == "http" and web.timeout_s == 5
    for bad in (
        [{"name": "x", "transport": "http"}],  # no url
        [{"name": "x"}],  # stdio with no command
        [{"name": "Bad.Name", "command": "c"}],
        [{"name": "x", "command": "c"}, {"name": "x", "command": "d"}],
    ):
        with pytest.raises(ValueError):
            NodeSettings.model_validate({"mcp": {"servers": bad}})


@pytest.fixture
def http_server() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, SERVER, "http", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/mcp", proc
    finally:
        proc.terminate()
        proc.wait(10)


async def test_streamable_http_server(http_server: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, proc = http_server
    mcp, registry = await started(
        MCPServerConfig("web", transport="http", url=url, timeout_s=1.0, max_concurrency=1)
    )
    try:
        assert await registry.call("web.add", {"a": 20, "b": 22}) == {"result": 42}
        with pytest.raises(ToolTimeoutError):
            await registry.call("web.slow", {"seconds": 5})
        peaks = await asyncio.gather(*(registry.call("web.hold", {"seconds": 0.1}) for _ in range(3)))
        assert max(p["result"] for p in peaks) == 1
        proc.terminate()
        proc.wait(10)
        with pytest.raises((ToolUnavailableError, ToolTimeoutError)):  # environmental either way
            await registry.call("web.add", {"a": 1, "b": 1})
    finally:
        await mcp.close()
