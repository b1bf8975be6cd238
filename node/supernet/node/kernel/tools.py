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
import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jsonschema
from supernet.node.kernel.errors import ToolArgumentsError, ToolError, ToolTimeoutError

ToolFn = Callable[[Mapping[str, Any]], Any | Awaitable[Any]]
"""A tool's body: takes the validated arguments, returns a JSON value (sync or async)."""


@dataclass(frozen=True)
class ToolSpec:
    """What a tool is and how it may run.

    Attributes:
        name: Unique name agents call it by.
        description: One line for the LLM's tool list.
        parameters: JSON schema of the arguments object.
        deterministic: Same arguments, same result: validators re-run it.
        irreversible: Needs the task owner's signed EIP-712 confirmation.
        timeout_s: Wall-clock bound of one call.
        max_concurrency: Calls of this tool running at once, node-wide.
    """

    name: str
    description: str
    parameters: Mapping[str, Any]
    deterministic: bool = True
    irreversible: bool = False
    timeout_s: float = 10.0
    max_concurrency: int = 4


@dataclass(frozen=True)
class Tool:
    """A tool: its spec and its body. Sync bodies run in a worker thread."""

    spec: ToolSpec
    fn: ToolFn = field(repr=False)


class ToolRegistry:
    """The node's tools, validated and rate-limited."""

    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}
        self._limits: dict[str, asyncio.Semaphore] = {}

    def register(self, tool: Tool) -> None:
        """Add ``tool``; its schema must be a valid JSON schema and its name unused.

        Raises:
            ValueError: The name is taken or the schema is invalid.
        """
        if tool.spec.name in self._tools:
            raise ValueError(f"tool {tool.spec.name!r} is already registered")
        jsonschema.Draft202012Validator.check_schema(dict(tool.spec.parameters))
        self._tools[tool.spec.name] = tool
        self._limits[tool.spec.name] = asyncio.Semaphore(tool.spec.max_concurrency)

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
        """Validate ``args`` and run tool ``name`` under its concurrency limit and timeout.

        Raises:
            ToolError: No such tool, or the tool raised (its error is chained).
            ToolArgumentsError: The arguments do not match the schema.
            ToolTimeoutError: The tool ran past ``timeout_s``.
        """
        self.validate(name, args)
        tool = self._tools[name]
        async with self._limits[name]:
            try:
                async with asyncio.timeout(tool.spec.timeout_s):
                    if inspect.iscoroutinefunction(tool.fn):
                        return await tool.fn(args)
                    return await asyncio.to_thread(tool.fn, args)
            except TimeoutError:
                raise ToolTimeoutError(f"tool {name} timed out after {tool.spec.timeout_s} s") from None
            except ToolError:
                raise
            except Exception as exc:
                raise ToolError(f"tool {name} failed: {exc}") from exc
