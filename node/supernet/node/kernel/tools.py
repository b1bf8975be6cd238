"""The tool manager: registered tools with JSON-schema arguments, timeouts and concurrency limits.

Each tool declares whether it is ``deterministic`` (the same arguments always give the same
result, so a validator re-runs it and compares) and whether it is ``irreversible`` (the
access manager then asks for the task owner's signed confirmation).

>>> registry = ToolRegistry()
>>> registry.register(Tool(ToolSpec("echo", "Echo the text.", {"type": "object"}), lambda args: args))
>>> registry.names()
['echo']
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import jsonschema
from supernet.node.kernel.errors import ToolArgumentsError, ToolError, ToolTimeoutError
from supernet.node.kernel.trace import as_recorded
from supernet.sdk.agents.tools import ToolSpec  # the agent ABI's; re-exported here
from supernet.sdk.chain.receipts import canonical_input
from supernet.sdk.formats.profile import check_numbers

ToolFn = Callable[[Mapping[str, Any]], Any | Awaitable[Any]]
"""A tool's body: takes the validated arguments, returns a JSON value (sync or async)."""


@dataclass(frozen=True)
class Tool:
    """A tool: its spec and its body. Sync bodies run in a worker thread."""

    spec: ToolSpec
    fn: ToolFn = field(repr=False)


def check_listable(spec: ToolSpec) -> None:
    """Raise ``ValueError`` unless the spec can be part of a signed agent profile, naming one
    environment: no float that is not finite (recorded as ``null``: the node would validate against
    another schema than the one signed) or whose value is an integer (`check_numbers`), recordable
    in a trace (`supernet.node.kernel.trace.check_encodable`), and with an RFC 8785 form (no integer
    past 2**53). A tool that fails could not be listed in ``GET /v1/node`` nor its profile hashed,
    so it is refused when it is registered, not on every task."""
    record = {"description": spec.description, "parameters": dict(spec.parameters)}
    try:
        check_numbers(record)
        canonical_input(as_recorded(record))
    except ValueError as exc:  # InputEncodingError, or not recordable at all
        raise ValueError(f"tool {spec.name!r} cannot be listed in an agent profile: {exc}") from None


class ToolRegistry:
    """The node's tools, validated and rate-limited."""

    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}
        self._limits: dict[str, asyncio.Semaphore] = {}
        self._groups: dict[str, asyncio.Semaphore] = {}

    def register(self, tool: Tool, *, limit_group: str | None = None) -> None:
        """Add ``tool``; its schema must be a valid JSON schema and its name unused.

        Tools registered with the same ``limit_group`` (e.g. the tools of one MCP server) share one
        concurrency limit, the ``max_concurrency`` of the group's first tool.

        Raises:
            ValueError: The name is taken or the schema is invalid.
        """
        if tool.spec.name in self._tools:
            raise ValueError(f"tool {tool.spec.name!r} is already registered")
        jsonschema.Draft202012Validator.check_schema(dict(tool.spec.parameters))
        check_listable(tool.spec)
        if limit_group is None:
            limit = asyncio.Semaphore(tool.spec.max_concurrency)
        else:
            limit = self._groups.setdefault(limit_group, asyncio.Semaphore(tool.spec.max_concurrency))
        self._tools[tool.spec.name] = tool
        self._limits[tool.spec.name] = limit

    def names(self) -> list[str]:
        """Registered tool names, sorted."""
        return sorted(self._tools)

    def spec(self, name: str) -> ToolSpec:
        """The spec of tool ``name``.

        Raises:
            ToolError: No such tool.
        """
        try:
            return self._tools[name].spec
        except KeyError:
            raise ToolError(f"unknown tool {name!r}; tools: {', '.join(self.names())}") from None

    def validate(self, name: str, args: Mapping[str, Any]) -> None:
        """Check ``args`` against the tool's schema.

        Raises:
            ToolError: No such tool.
            ToolArgumentsError: The arguments do not match the schema.
        """
        spec = self.spec(name)
        try:
            jsonschema.validate(dict(args), dict(spec.parameters))
        except jsonschema.ValidationError as exc:
            raise ToolArgumentsError(f"bad arguments for {name}: {exc.message}") from None

    async def call(self, name: str, args: Mapping[str, Any]) -> Any:
        """Validate ``args``, run tool ``name`` under its concurrency limit and timeout, and return
        its result *as recorded* (`recorded_result`): the one rule a node's kernel and a validator's
        re-run (`supernet.validator.tool_check.RegistryRunner`) share.

        Raises:
            ToolError: No such tool, the tool raised (its error is chained here; the agent sees
                the recorded words only, `errors.as_raised`), or its result is one a
                trace cannot hold.
            ToolArgumentsError: The arguments do not match the schema.
            ToolTimeoutError: The tool ran past ``timeout_s``.
        """
        self.validate(name, args)
        tool = self._tools[name]
        limit = self._limits[name]
        await limit.acquire()
        # a synchronous tool's slot is given back when its thread returns, not when its caller
        # stops waiting: a thread cannot be stopped, and one that outlives its timeout still holds
        # a worker of `_TOOL_THREADS` (its slot freed early let one tool fill the pool)
        is_async = inspect.iscoroutinefunction(tool.fn)
        try:
            async with asyncio.timeout(tool.spec.timeout_s):
                if is_async:
                    result = await tool.fn(args)
                else:
                    running = _in_tool_thread(tool.fn, args)
                    running.add_done_callback(lambda _: limit.release())
                    result = await asyncio.shield(running)
        except TimeoutError:
            raise ToolTimeoutError(timed_out(name, tool.spec.timeout_s)) from None
        except ToolError:
            raise
        except Exception as exc:  # (the agent sees only the recorded words: `errors.as_raised`)
            raise ToolError(f"tool {name} failed: {exc}") from exc
        finally:
            if is_async:  # (a thread's slot goes back in its done-callback, above)
                limit.release()
        return recorded_result(name, result)


_TOOL_THREADS = ThreadPoolExecutor(max_workers=16, thread_name_prefix="supernet-tool")
"""Where synchronous tools run: threads of their own, not the event loop's default executor, which
a validator's scoring and a node's engine fill (`asyncio.to_thread`). A pure tool's timeout counted
the wait for a free worker there: a busy validator's re-run timed out and the receipt went
unchecked, a busy node's task failed (tests/unit/test_review_hostile_parties2.py)."""


def _in_tool_thread(fn: Callable[[Mapping[str, Any]], Any], args: Mapping[str, Any]) -> asyncio.Future[Any]:
    """``fn(args)`` started in `_TOOL_THREADS`, with the caller's context (as `asyncio.to_thread`):
    the future of its thread, done when the thread returns."""
    call = functools.partial(contextvars.copy_context().run, fn, args)
    return asyncio.get_running_loop().run_in_executor(_TOOL_THREADS, call)


def timed_out(name: str, timeout_s: float) -> str:
    """The words of a tool call that ran past its limit (a validator holds a recorded timeout of a
    built-in tool to exactly these, with the protocol's limit)."""
    return f"tool {name} timed out after {timeout_s} s"


def recorded_result(name: str, result: Any) -> Any:
    """A tool's ``result`` as a trace records it (`supernet.node.kernel.trace.as_recorded`: NaN and
    infinities ``None``, tuples lists, maps in dag-cbor order), which is also what the agent gets.

    A result a trace cannot hold (an integer past 64 bits, a string with a lone surrogate, nesting
    too deep to encode) is the tool's failure, a `ToolError`, on every side alike: the node records
    it as the call's error and a validator's re-run through the same registry fails the same way.

    Raises:
        ToolError: the result is not recordable.
    """
    try:
        return as_recorded(result)
    except ValueError as exc:
        raise ToolError(f"tool {name} returned a result a trace cannot hold ({exc})") from None
