"""Hand-built traces for replay tests: a `Trace` of one task of a given agent, and the events of a
child agent call inside it (what the reviews of agent provenance and checked ids replay)."""

from __future__ import annotations

from typing import Any

from supernet.node.kernel.agent_run import task_seed
from supernet.sdk.formats.trace import AgentRef, Trace

USER = "0x" + "01" * 20
TASK_ID = "0x" + "5a" * 32
LIMITS = {
    "memory": False,
    "storage": False,
    "max_llm_calls": 8,
    "max_llm_tokens": 1024,
    "max_new_tokens": 64,
    "max_tool_calls": 8,
    "max_file_bytes": 0,
}
"""The limits of every `trace_of` trace."""


def trace_of(
    agent: AgentRef, model_id: str, task_input: Any, output: str, events: list[dict[str, Any]], **more: Any
) -> Trace:
    """The trace of task `TASK_ID` of `USER`: ``agent`` on ``model_id`` answered ``output`` to
    ``task_input`` through ``events`` (``more``: other fields, or overrides)."""
    return Trace.from_dag(
        {
            **more,
            "type": "supernet/trace/v1",
            "task_id": TASK_ID,
            "user": USER,
            "fee": 100,
            "agent": agent.to_dag(),
            "model_id": model_id,
            "input": task_input,
            "seed": task_seed(TASK_ID),
            "limits": dict(LIMITS),
            "tools": [],
            "engine": {"device": "cpu", "dtype": "float32"},
            "output": output,
            "status": "ok",
            "error": None,
            "events": events,
            "witness": {"blocks": [], "files": []},
        }
    )


def child_events(agent_id: str, code_hash: str, task_input: Any, output: str) -> list[dict[str, Any]]:
    """A call of agent ``agent_id`` at ``code_hash`` with ``task_input``, returning ``output``."""
    return [
        {"kind": "agent.call", "agent": {"id": agent_id, "code_hash": code_hash}, "input": task_input,
         "depth": 1, "tools": [], "memory": False, "storage": False},
        {"kind": "agent.return", "agent": agent_id, "output": output, "status": "ok", "error": None},
    ]  # fmt: skip
