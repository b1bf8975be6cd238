"""Tools from the operator's MCP servers (Model Context Protocol, the ``mcp`` package).

The node connects to each configured server when it starts (``stdio``: a subprocess it launches;
``http``: a Streamable HTTP endpoint), lists its tools and registers each in the kernel's tool
manager as ``<server>.<tool>``. Built-in tool names have no dot and server names are checked
(``[a-z][a-z0-9_-]*``), so an MCP tool can never take a built-in's name, and two servers can
never take each other's.

A call runs under the server's timeout and one concurrency limit shared by all of that server's
tools (calls past ``max_concurrency`` wait, untimed, for a slot). What the agent gets back, and
what the trace records, is one JSON value made from the MCP ``CallToolResult``:

- the server's ``structuredContent`` when it sent one (already JSON);
- else, when every content block is text, the texts joined with ``"\\n"`` (a string);
- else a list with one object per block: ``{"type": "text", "text"}``; images and audio as
  ``{"type", "mime_type", "bytes", "sha256"}`` (the data itself is not kept); resource links as
  ``{"type": "resource_link", "uri", "name"}``; embedded resources as ``{"type": "resource",
  "uri", "mime_type", "text"}`` (text) or ``{..., "bytes", "sha256"}`` (blob).

A result whose compact JSON is longer than ``max_result_bytes`` is refused (``ToolError``), an
``isError`` result becomes a ``ToolError`` with the server's text (cut to 1 KiB), a timeout is a
:class:`~supernet.node.kernel.errors.ToolTimeoutError` and a server that cannot be reached a
:class:`~supernet.node.kernel.errors.ToolUnavailableError` (both "environmental": validators never
hold them against the node). The call that finds its server gone fails ``ToolUnavailableError``;
the next one reconnects (in a task of its own, which a call's timeout does not abort).

The operator's ``irreversible`` and ``deterministic`` lists name tools as the server lists them
(``echo``, not ``pay.echo``). A name that cannot be one (it holds a ``.``) is refused with the
config, and a name the server does not list when the node starts (``Echo`` for ``echo``, a typo)
stops the start (:class:`MCPConfigError`): a confirmation the operator asked for that silently
never happens would widen every agent's authority.

MCP tools are non-deterministic unless the operator lists them in ``deterministic``. Validators
cannot reach the operator's servers, so they re-run no MCP tool either way (an unknown tool is
skipped, not accused); the declaration only marks the trace's tool event, for a validator that
is configured with the same server. Replay answers every MCP call from the trace.

Hostile servers: tool names, schemas and descriptions come from the server and are checked —
names must be ``[A-Za-z0-9_-]{1,64}``, the input schema must be a valid JSON schema with
``"type": "object"``, at most ``max_schema_bytes`` long, with only local ``$ref``\\ s (``#...``;
no remote retrieval) and recordable in a trace; descriptions are cut to 1 KiB, on one line. A tool
that fails a check is skipped (logged); at most 128 tools per server are taken.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

from supernet.node.kernel.errors import ToolError, ToolUnavailableError
from supernet.node.kernel.tools import Tool, ToolRegistry, ToolSpec, check_listable

log = logging.getLogger(__name__)

SERVER_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_DESCRIPTION_CHARS = 1024
MAX_ERROR_CHARS = 1024
MAX_TOOLS_PER_SERVER = 128
MAX_TOOL_PAGES = 16
LINE_CAP = Path(__file__).with_name("mcp_line_cap.py")
"""The relay a stdio server runs behind (`supernet.node.kernel.mcp_line_cap`)."""
MESSAGE_BYTES_FLOOR = 4 << 20
"""The least a server's one message may take on the wire (`MCPServerConfig.max_message_bytes`): a
``tools/list`` page of `MAX_TOOLS_PER_SERVER` tools with their schemas and descriptions at their
largest (cut only after they are read) fits in it, as does a result the node keeps under
``max_result_bytes`` that the server frames twice (``structuredContent`` and content blocks)."""


class MCPConfigError(ValueError):
    """The operator's MCP config names a tool its server does not list (the node does not start)."""


def listed_name_problem(server: str, key: str, name: str) -> str:
    """Why ``name`` in server ``server``'s ``key`` list (``irreversible``, ``deterministic``) can
    never be a tool the server lists ("" when it may be one): a listed name holds no ``.``, so a
    prefixed one (``pay.echo``) would match nothing and be ignored."""
    if "." not in name:
        return ""
    bare = name.removeprefix(server + ".") if name.startswith(server + ".") else name.rsplit(".", 1)[-1]
    return (
        f"MCP server {server}: {key} names {name!r}, which can never be one of its tools (a name "
        f"the server lists holds no '.'): write the server's own name of the tool, e.g. {bare!r}"
    )


@dataclass(frozen=True)
class MCPServerConfig:
    """One MCP server as the operator configured it (``[[mcp.servers]]``).

    Attributes:
        name: Prefix of its tools' names (``<name>.<tool>``).
        transport: ``"stdio"`` (``command``, ``args``, ``env``) or ``"http"`` (``url``).
        timeout_s: Bound of one tool call.
        connect_timeout_s: Bound of starting (stdio), connecting, initializing and listing tools.
        max_concurrency: Calls to this server running at once, all its tools together.
        deterministic: Tool names (the server's, without prefix) declared deterministic.
        irreversible: Tool names (the server's, without prefix) that need the task owner's signed
            confirmation. Each name in both lists must be one the server lists (checked at start).
        allow: Tool names to register (``None``: every tool the server lists).
        max_result_bytes: Largest result (compact JSON) a call may return.
        max_schema_bytes: Largest input schema (compact JSON) a tool may declare.
    """

    name: str
    transport: Literal["stdio", "http"] = "stdio"
    command: str | None = None
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    url: str | None = None
    timeout_s: float = 30.0
    connect_timeout_s: float = 30.0
    max_concurrency: int = 4
    deterministic: frozenset[str] = frozenset()
    irreversible: frozenset[str] = frozenset()
    allow: frozenset[str] | None = None
    max_result_bytes: int = 64 * 1024
    max_schema_bytes: int = 16 * 1024

    @property
    def max_message_bytes(self) -> int:
        """Largest message read from the server (a stdio line, an SSE event): the node's memory
        bound, 4 x ``max_result_bytes`` but at least `MESSAGE_BYTES_FLOOR` (what the node accepts
        must fit, whatever the server's framing)."""
        return max(4 * self.max_result_bytes, MESSAGE_BYTES_FLOOR)

    def __post_init__(self) -> None:
        if not SERVER_NAME.fullmatch(self.name):
            raise ValueError(f"MCP server name {self.name!r} must match {SERVER_NAME.pattern}")
        if self.transport == "stdio" and not self.command:
            raise ValueError(f"MCP server {self.name}: stdio needs a command")
        if self.transport == "http" and not self.url:
            raise ValueError(f"MCP server {self.name}: http needs a url")
        if self.timeout_s <= 0 or self.connect_timeout_s <= 0 or self.max_concurrency < 1:
            raise ValueError(f"MCP server {self.name}: timeouts must be > 0 and max_concurrency >= 1")
        for key in ("irreversible", "deterministic"):
            for listed in sorted(getattr(self, key)):
                problem = listed_name_problem(self.name, key, listed)
                if problem:
                    raise MCPConfigError(problem)

    def unlisted(self, listed: Sequence[str]) -> str:
        """Why this config does not fit the tools the server lists (``listed``, their names): a
        name in ``irreversible`` or ``deterministic`` it does not list ("" when every one is)."""
        known = set(listed)
        problems = []
        for key in ("irreversible", "deterministic"):
            unknown = sorted(set(getattr(self, key)) - known)
            if unknown:
                problems.append(f"{key} names {', '.join(map(repr, unknown))}")
        if not problems:
            return ""
        return (
            f"MCP server {self.name}: {'; '.join(problems)}, which it does not list (its tools: "
            f"{', '.join(sorted(known)) or 'none'}; names are the server's, exact in case and without "
            f"the '{self.name}.' prefix): refused, none of its tools is registered"
        )


def tool_name(server: str, tool: str) -> str:
    """The registered name of ``tool`` of ``server``."""
    return f"{server}.{tool}"


# -- results ----------------------------------------------------------------------------------------


def _digest(data: str) -> dict[str, Any]:
    raw = base64.b64decode(data, validate=False)
    return {"bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}


def _block(block: Any) -> dict[str, Any]:
    kind = getattr(block, "type", None)
    if kind == "text":
        return {"type": "text", "text": str(block.text)}
    if kind in ("image", "audio"):
        return {"type": kind, "mime_type": str(block.mime_type), **_digest(block.data)}
    if kind == "resource_link":
        return {"type": "resource_link", "uri": str(block.uri), "name": str(block.name)}
    if kind == "resource":
        res = block.resource
        out = {"type": "resource", "uri": str(res.uri), "mime_type": res.mime_type}
        if getattr(res, "text", None) is not None:
            return {**out, "text": str(res.text)}
        return {**out, **_digest(getattr(res, "blob", "") or "")}
    return {"type": str(kind)}  # a kind this node does not know: its type only


def _json_value(value: Any) -> Any:
    """``value`` as plain JSON (objects, arrays, strings, numbers, booleans, null), or ToolError."""
    try:
        return json.loads(json.dumps(value, allow_nan=False, ensure_ascii=False))
    except (TypeError, ValueError) as exc:
        raise ToolError(f"MCP result is not JSON ({exc})") from None


def result_value(result: Any, max_bytes: int) -> Any:
    """The JSON value the agent gets and the trace records for an MCP ``CallToolResult``.

    Raises:
        ToolError: The server reported an error, or the value is not JSON or larger than ``max_bytes``.
    """
    blocks = list(result.content or ())
    if result.is_error:
        text = " ".join(str(b.text) for b in blocks if getattr(b, "type", None) == "text")
        raise ToolError(f"MCP tool error: {text[:MAX_ERROR_CHARS] or 'no message'}")
    if result.structured_content is not None:
        value = _json_value(result.structured_content)
    elif all(getattr(b, "type", None) == "text" for b in blocks):
        value = "\n".join(str(b.text) for b in blocks)
    else:
        value = [_block(b) for b in blocks]
    size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())
    if size > max_bytes:
        raise ToolError(f"MCP result of {size} bytes is over this node's limit of {max_bytes}")
    return value


# -- tool descriptions ------------------------------------------------------------------------------


def _local_refs_only(node: Any) -> bool:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("$ref", "$dynamicRef", "$recursiveRef") and not (
                isinstance(value, str) and value.startswith("#")
            ):
                return False
            if key == "$id" and not (isinstance(value, str) and value.startswith("#")):
                return False  # a base URI would make "#..." refs resolve against it
            if not _local_refs_only(value):
                return False
        return True
    if isinstance(node, list):
        return all(_local_refs_only(v) for v in node)
    return True


def check_schema(schema: Any, max_bytes: int) -> dict[str, Any]:
    """A server's input schema, if this node accepts it.

    Raises:
        ValueError: Not an object schema, too large, not valid, or with a non-local reference.
    """
    import jsonschema

    if not isinstance(schema, dict) or schema.get("type") != "object":
        raise ValueError('the input schema must be an object with "type": "object"')
    schema = _json_value(schema)
    if len(json.dumps(schema, separators=(",", ":")).encode()) > max_bytes:
        raise ValueError(f"the input schema is over {max_bytes} bytes")
    if not _local_refs_only(schema):
        raise ValueError("the input schema has a non-local $ref or $id")
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


def make_spec(cfg: MCPServerConfig, tool: Any) -> ToolSpec:
    """The tool manager's spec of MCP ``tool`` (a ``mcp.types.Tool``) of server ``cfg``.

    Raises:
        ValueError: The tool's name or schema is not acceptable.
    """
    if not isinstance(tool.name, str) or not TOOL_NAME.fullmatch(tool.name):
        raise ValueError(f"tool name {str(tool.name)[:80]!r} must match {TOOL_NAME.pattern}")
    hints = tool.annotations
    destructive = hints is not None and hints.destructive_hint is True and hints.read_only_hint is not True
    description = " ".join(str(tool.description or tool.name).split())[:MAX_DESCRIPTION_CHARS]
    parameters = check_schema(tool.input_schema, cfg.max_schema_bytes)
    spec = ToolSpec(
        name=tool_name(cfg.name, tool.name),
        description=description,
        parameters=parameters,
        deterministic=tool.name in cfg.deterministic,
        irreversible=tool.name in cfg.irreversible or destructive,  # a server can only make it stricter
        timeout_s=cfg.timeout_s,
        max_concurrency=cfg.max_concurrency,
    )
    # every task's trace records the specs its agent saw, and its signed profile hashes them: one
    # a trace cannot hold or hash (a 100-bit integer, a lone surrogate) would break every task
    check_listable(spec)
    return spec


# -- connections ------------------------------------------------------------------------------------


_DEVNULL: list[TextIO] = []


def _errlog() -> TextIO:
    """Where a stdio server's stderr goes: the node's stderr (or nowhere when it has no file)."""
    try:
        sys.stderr.fileno()
        return sys.stderr
    except (AttributeError, OSError, ValueError):  # e.g. captured by a test runner
        if not _DEVNULL:
            _DEVNULL.append(open(os.devnull, "w"))  # one for the process's life
        return _DEVNULL[0]


def _connection_lost(exc: Exception) -> bool:
    """Whether ``exc`` means the session is gone (not that the tool or its arguments failed)."""
    import anyio
    import httpx2
    from mcp.shared.exceptions import MCPError
    from mcp.types import CONNECTION_CLOSED

    if isinstance(exc, MCPError):
        return exc.error.code == CONNECTION_CLOSED
    lost = (OSError, httpx2.TransportError, anyio.ClosedResourceError, anyio.BrokenResourceError)
    return isinstance(exc, (*lost, anyio.EndOfStream))


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # logged by the caller that waited, if any; never "never retrieved"


def mcp_unavailable(server: str) -> str:
    """The one wording of an MCP server's failure, whatever happened (the reason is logged): the
    text reaches the agent, and no validator can re-run the moment, so a node that could write its
    own there would steer the task through a failure (`supernet.validator.tool_check`)."""
    return f"MCP server {server} is unavailable"


class MCPConnection:
    """One session with one MCP server, held by a background task (the MCP client's transports
    must be entered and left in one task); reconnected on the next call after it ends."""

    def __init__(self, cfg: MCPServerConfig) -> None:
        self.cfg = cfg
        self._session: Any = None
        self._runner: asyncio.Task[None] | None = None
        self._closing: asyncio.Event | None = None
        self._reconnecting: asyncio.Task[list[Any]] | None = None

    @property
    def connected(self) -> bool:
        """Whether a session is up."""
        return self._session is not None and self._runner is not None and not self._runner.done()

    def _transport(self) -> Any:
        if self.cfg.transport == "stdio":
            from mcp.client.stdio import StdioServerParameters, stdio_client

            assert self.cfg.command is not None
            # through the line cap: the client holds a whole message before anything can check it
            # (the same cap as the HTTP transport's on an SSE event)
            # -I: the server's environment (PYTHONHOME, PYTHONPATH...) is the server's, not the relay's
            cap = ["-I", str(LINE_CAP), str(self.cfg.max_message_bytes), "--", self.cfg.command]
            params = StdioServerParameters(
                command=sys.executable, args=[*cap, *self.cfg.args], env=dict(self.cfg.env) or None
            )
            return stdio_client(params, errlog=_errlog())
        from mcp.client.streamable_http import streamable_http_client

        assert self.cfg.url is not None
        return streamable_http_client(self.cfg.url, max_sse_event_size=self.cfg.max_message_bytes)

    async def _serve(self, ready: asyncio.Future[list[Any]], closing: asyncio.Event) -> None:
        from mcp import ClientSession

        try:
            async with contextlib.AsyncExitStack() as stack:
                read, write = await stack.enter_async_context(self._transport())
                session = await stack.enter_async_context(
                    ClientSession(read, write)  # calls are bounded by the tool manager's timeout
                )
                await session.initialize()
                tools: list[Any] = []
                cursor: str | None = None
                for _page in range(MAX_TOOL_PAGES):
                    from mcp.types import PaginatedRequestParams

                    page = await session.list_tools(
                        params=PaginatedRequestParams(cursor=cursor) if cursor else None
                    )
                    tools.extend(page.tools)
                    cursor = page.next_cursor
                    if not cursor or len(tools) > MAX_TOOLS_PER_SERVER:
                        break
                self._session = session
                ready.set_result(tools[:MAX_TOOLS_PER_SERVER])
                await closing.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc if isinstance(exc, Exception) else ConnectionError(repr(exc)))
            if not isinstance(exc, Exception):
                raise
            log.warning("MCP server %s: session ended: %s", self.cfg.name, exc)
        finally:
            self._session = None

    async def connect(self) -> list[Any]:
        """Open a session; returns the server's tools (``mcp.types.Tool``).

        Raises:
            ToolUnavailableError: The server could not be started, reached or initialized in time.
        """
        await self.close()
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[list[Any]] = loop.create_future()
        self._closing = asyncio.Event()
        self._runner = asyncio.create_task(self._serve(ready, self._closing), name=f"mcp-{self.cfg.name}")
        try:
            async with asyncio.timeout(self.cfg.connect_timeout_s):
                return await asyncio.shield(ready)
        except Exception as exc:
            await self.close()
            reason = "timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
            log.warning("MCP server %s is unavailable: %s", self.cfg.name, reason)
            raise ToolUnavailableError(mcp_unavailable(self.cfg.name)) from None

    async def call(self, name: str, args: Mapping[str, Any]) -> Any:
        """Call tool ``name`` (the server's name) and return its JSON value (see the module doc).

        Raises:
            ToolUnavailableError: The server is down and could not be reconnected.
            ToolError: The tool reported an error or returned an unacceptable result.
        """
        if not self.connected:
            # One reconnection at a time, in its own task: a call that times out while waiting
            # for it does not abort it, and the calls after find the server back.
            if self._reconnecting is None or self._reconnecting.done():
                log.info("MCP server %s: reconnecting", self.cfg.name)
                self._reconnecting = asyncio.create_task(self.connect(), name=f"mcp-{self.cfg.name}-connect")
                self._reconnecting.add_done_callback(_retrieve)
            await asyncio.shield(self._reconnecting)
        session = self._session
        if session is None:
            raise ToolUnavailableError(mcp_unavailable(self.cfg.name))
        try:
            result = await session.call_tool(name, dict(args))
        except (TimeoutError, asyncio.CancelledError, ToolError):
            raise
        except Exception as exc:
            if _connection_lost(exc) or not self.connected:
                if self._session is session:  # not a session a reconnection already replaced
                    await self.close()  # the next call reconnects
                log.warning("MCP server %s went away: %s", self.cfg.name, exc)
                raise ToolUnavailableError(mcp_unavailable(self.cfg.name)) from None
            raise ToolError(f"MCP call failed: {str(exc)[:MAX_ERROR_CHARS]}") from None
        return result_value(result, self.cfg.max_result_bytes)

    async def close(self) -> None:
        """End the session (and a stdio server's process)."""
        runner, self._runner = self._runner, None
        if self._closing is not None:
            self._closing.set()
        if runner is not None and not runner.done():
            try:
                async with asyncio.timeout(5):
                    await asyncio.shield(runner)
            except (TimeoutError, Exception):
                runner.cancel()
                with contextlib.suppress(BaseException):
                    await runner
        self._session = None

    async def shutdown(self) -> None:
        """Stop reconnecting and close the session."""
        if self._reconnecting is not None and not self._reconnecting.done():
            self._reconnecting.cancel()
            with contextlib.suppress(BaseException):
                await self._reconnecting
        await self.close()


class MCPTools:
    """The node's MCP servers and the tools they contributed."""

    def __init__(self, configs: Sequence[MCPServerConfig]) -> None:
        names = [c.name for c in configs]
        if len(set(names)) != len(names):
            raise ValueError("MCP server names must be unique")
        self.connections = {c.name: MCPConnection(c) for c in configs}
        self.tools: list[Tool] = []

    async def start(self) -> list[Tool]:
        """Connect to every server and build its tools; a server that is down is logged and left
        out (its tools are absent until the node restarts), never stopping the node.

        Raises:
            MCPConfigError: A server does not list a tool its config names ``irreversible`` or
                ``deterministic`` (every session is closed first, no tool is kept).
        """
        results = await asyncio.gather(
            *(self._start_one(c) for c in self.connections.values()), return_exceptions=True
        )
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            await self.close()
            config = [str(e) for e in failed if isinstance(e, MCPConfigError)]
            if config:
                raise MCPConfigError("; ".join(config))
            raise failed[0]
        self.tools = [t for tools in results if not isinstance(tools, BaseException) for t in tools]
        return self.tools

    async def _start_one(self, conn: MCPConnection) -> list[Tool]:
        try:
            listed = await conn.connect()
        except ToolUnavailableError as exc:
            log.error("%s; its tools are absent", exc)
            return []
        # an irreversible name the server does not list would leave its tool unconfirmed: refuse
        problem = conn.cfg.unlisted([str(t.name) for t in listed])
        if problem:
            raise MCPConfigError(problem)
        tools: list[Tool] = []
        for mcp_tool in listed:
            if conn.cfg.allow is not None and mcp_tool.name not in conn.cfg.allow:
                continue
            try:
                spec = make_spec(conn.cfg, mcp_tool)
            except Exception as exc:
                log.warning("MCP server %s: tool skipped: %s", conn.cfg.name, exc)
                continue
            tools.append(Tool(spec, _bound(conn, mcp_tool.name)))
        log.info("MCP server %s: %d tools: %s", conn.cfg.name, len(tools), [t.spec.name for t in tools])
        return tools

    def register(self, registry: ToolRegistry) -> list[str]:
        """Register the started tools in ``registry``, each server's sharing one concurrency limit;
        returns their names."""
        for tool in self.tools:
            registry.register(tool, limit_group="mcp:" + tool.spec.name.split(".", 1)[0])
        return [t.spec.name for t in self.tools]

    async def close(self) -> None:
        """Close every session."""
        await asyncio.gather(*(c.shutdown() for c in self.connections.values()))


def _bound(conn: MCPConnection, name: str) -> Any:
    async def call(args: Mapping[str, Any]) -> Any:
        return await conn.call(name, args)

    return call
