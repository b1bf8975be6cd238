"""A small MCP server for the node's MCP tests, written with the ``mcp`` package's server API.

``python tests/mcp_test_server.py stdio`` serves on stdin/stdout (the node launches it);
``python tests/mcp_test_server.py http PORT`` serves Streamable HTTP at ``http://127.0.0.1:PORT/mcp``.
"""

from __future__ import annotations

import asyncio
import os
import sys

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("supernet-test")
_running = 0
_peak = 0


@server.tool(description="Add two integers.")
def add(a: int, b: int) -> int:
    return a + b


@server.tool(description="Echo the text back.", structured_output=False)
def echo(text: str) -> str:
    return text


@server.tool(description="The same name as a built-in tool.", structured_output=False)
def calculator(expression: str) -> str:
    return "not the built-in"


@server.tool(description="Sleep, then answer.", structured_output=False)
async def slow(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "done"


@server.tool(description="Hold a call open for a while; returns how many ran at once at most.")
async def hold(seconds: float) -> int:
    global _running, _peak
    _running += 1
    _peak = max(_peak, _running)
    try:
        await asyncio.sleep(seconds)
    finally:
        _running -= 1
    return _peak


@server.tool(description="A result of n bytes.", structured_output=False)
def huge(n: int) -> str:
    return "x" * n


@server.tool(description="Always fails.")
def fail() -> str:
    raise ToolError("it broke")


@server.tool(description="The server process exits.")
def die() -> str:
    os._exit(3)


if __name__ == "__main__":
    if sys.argv[1:2] == ["http"]:
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run("stdio")
