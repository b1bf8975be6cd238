"""Running one agent to its end: the part the node's kernel and a validator's replay share.

Both call :func:`run_agent` with a syscall function bound to one task: the kernel's dispatches to
the real managers, the replay's answers from a recorded trace. Sharing this (and the
`~supernet.node.kernel.dispatch.Dispatcher` behind the syscall function) is what makes a replay
reproduce exactly what an honest kernel records: there is one definition of how an agent's return
value becomes the task's output, and of how failures are reported.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from supernet.node.agents.base import Agent
from supernet.node.agents.context import AgentContext
from supernet.node.kernel.access import Capabilities
from supernet.node.kernel.syscalls import Syscall, TaskStatus
from supernet.node.kernel.tools import ToolSpec
from supernet.node.kernel.trace import as_recorded
from supernet.sdk.formats.profile import AgentProfile
from supernet.sdk.formats.trace import AgentRef, CallableAgent, Limits, ToolDescription

log = logging.getLogger(__name__)

_MASK64 = (1 << 64) - 1


def task_seed(task_id: str) -> int:
    """The base seed of a task, a protocol rule: the first 8 bytes of its id (the request hash).

    A node cannot choose it, so it cannot shop for a sampled answer it likes; ids that are not
    hex (tests, unpaid tasks) fall back to the first 8 bytes of their UTF-8 text, zero-padded.
    """
    text = task_id.removeprefix("0x")
    try:
        return int(text[:16], 16) if text else 0
    except ValueError:
        return int.from_bytes(task_id.encode()[:8].ljust(8, b"\0"), "big")


def derive_seed(base_seed: int, call_index: int) -> int:
    """The seed of LLM call ``call_index`` of a task (when the agent gives none): reproducible."""
    return (base_seed * 0x9E3779B97F4A7C15 + call_index + 1) & _MASK64


def limits_of(caps: Capabilities) -> dict[str, Any]:
    """The capabilities a replay needs, as the trace records them (``limits``)."""
    return {
        "memory": caps.memory,
        "storage": caps.storage,
        "max_llm_calls": caps.max_llm_calls,
        "max_llm_tokens": caps.max_llm_tokens,
        "max_new_tokens": caps.max_new_tokens,
        "max_tool_calls": caps.max_tool_calls,
        "max_file_bytes": caps.max_file_bytes,
    }


def spec_record(spec: ToolSpec) -> dict[str, Any]:
    """What an agent sees of a tool (and whether validators re-run it), as the trace records it."""
    return {
        "name": spec.name,
        "description": spec.description,
        "parameters": spec.parameters,
        "deterministic": spec.deterministic,
        "irreversible": spec.irreversible,
    }


def engine_record(engine: Any) -> dict[str, str]:
    """The device and compute format of the node's engine (the trace's ``dtype`` field holds the
    format, e.g. ``float16-weights``: it must equal the one the signed model id names)."""
    compute = getattr(engine, "compute", None) or getattr(engine, "dtype", "float32")
    dtype = str(compute).removeprefix("torch.")
    device = getattr(engine, "device", "cpu")
    return {"device": getattr(device, "type", str(device)), "dtype": dtype}


def seen_spec(tool: ToolDescription) -> ToolSpec:
    """The spec an agent is handed for a tool, made from its record (the kernel's and a replay's
    alike): the trace's values (key order, lists), and the default timeout and concurrency (not
    recorded, so not the agent's to see). Handing the live spec let an agent that printed a schema
    answer otherwise on the node than in the replay: an honest node framed."""
    return ToolSpec(
        name=tool.name,
        description=tool.description,
        parameters=dict(tool.parameters),
        deterministic=tool.deterministic,
        irreversible=tool.irreversible,
    )


def recorded_tool(spec: ToolSpec) -> ToolDescription:
    """A registered tool's spec as the trace records it."""
    return ToolDescription.from_dag(as_recorded(spec_record(spec)), "tool")


def profile_of(
    agent_id: str,
    code_hash: str,
    caps: Capabilities,
    tools: Sequence[ToolSpec],
    agents: Sequence[CallableAgent],
) -> AgentProfile:
    """The profile a task of ``agent_id`` runs under: its hash is the ``agentHash`` the user signs
    (`supernet.sdk.formats.profile`), built from the same records the trace keeps."""
    limits = Limits.from_dag(limits_of(caps), "limits")
    return AgentProfile.of(AgentRef(agent_id, code_hash), limits, [recorded_tool(s) for s in tools], agents)


def callable_agent(agent_id: str, code_hash: str, caps: Capabilities) -> CallableAgent:
    """What an agent gets when another agent calls it (before keeping only what the caller has)."""
    return CallableAgent(agent_id, code_hash, tuple(sorted(caps.tools)), caps.memory, caps.storage)


def child_capabilities(caller: Capabilities, child: CallableAgent, namespace: str) -> Capabilities:
    """A called agent's capabilities: its caller's budget, and the tools, memory and files that
    both its profile entry and its caller have (never more than the caller). One rule for the
    node's dispatcher and a validator's replay."""
    return dataclasses.replace(
        caller,
        tools=caller.tools & frozenset(child.tools),
        namespace=namespace,
        memory=caller.memory and child.memory,
        storage=caller.storage and child.storage,
    )


def task_context(
    seed: int, caps: Capabilities, tools: Sequence[ToolSpec], agents: Sequence[CallableAgent], engine: Any
) -> dict[str, Any]:
    """The trace fields besides the events that a replay depends on."""
    return {
        "seed": seed,
        "limits": limits_of(caps),
        "tools": [spec_record(s) for s in tools],
        "agents": [a.to_dag() for a in sorted(agents, key=lambda a: a.id)],
        "engine": engine_record(engine),
    }


@dataclass(frozen=True)
class AgentResult:
    """How an agent run ended."""

    output: str
    status: TaskStatus
    error: str | None


async def run_agent(
    agent: type[Agent],
    task_id: str,
    task_input: Any,
    syscall: Callable[[Syscall], Awaitable[Any]],
    tools: Sequence[ToolSpec],
    timeout_s: float,
) -> AgentResult:
    """Run a fresh ``agent`` on ``task_input`` with a bound syscall function.

    A string return value is the output; anything else is its sorted-key JSON. An exception is the
    task's error (``"Type: message"``); cancellation propagates.
    """
    try:
        async with asyncio.timeout(timeout_s):
            result = await agent().run(AgentContext.bind(task_id, syscall, tools), task_input)
    except TimeoutError:
        return AgentResult("", "timeout", f"TimeoutError: the task ran past {timeout_s} s")
    except Exception as exc:
        log.info("task %s failed: %r", task_id, exc)
        return AgentResult("", "error", f"{type(exc).__name__}: {exc}")
    return AgentResult(output_text(result), "ok", None)


def output_text(result: Any) -> str:
    """The task output of an agent's return value."""
    return result if isinstance(result, str) else json.dumps(result, sort_keys=True)
