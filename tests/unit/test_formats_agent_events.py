"""The trace's agent-call events: ``agent.call`` and ``agent.return`` read strictly, round-trip
exactly and read no witness blocks themselves (the child's events inline carry their own; the
golden trace and the older kinds are untouched: tests/unit/test_formats.py)."""

from __future__ import annotations

from typing import Any

import pytest
from supernet.sdk.formats import trace
from supernet.sdk.formats.fields import FormatError
from supernet.sdk.formats.trace import (
    AgentCallEvent,
    AgentRef,
    AgentReturnEvent,
    Trace,
    event_from_dag,
    witness_reads,
)

CALL: dict[str, Any] = {
    "kind": "agent.call",
    "agent": {"id": "chat", "code_hash": "0x" + "cd" * 32},
    "input": {"messages": [{"role": "user", "content": "hi"}], "max_new_tokens": 4},
    "depth": 1,
    "tools": ["calculator"],
    "memory": True,
    "storage": False,
}
RETURN: dict[str, Any] = {
    "kind": "agent.return",
    "agent": "chat",
    "output": "yo",
    "status": "ok",
    "error": None,
}


def test_agent_events_round_trip_inline_in_a_trace() -> None:
    example = trace.example_dag()
    events = [CALL, *example["events"], RETURN]
    typed = [event_from_dag(e) for e in events]
    assert isinstance(typed[0], AgentCallEvent) and isinstance(typed[-1], AgentReturnEvent)
    assert typed[0].agent == AgentRef("chat", "0x" + "cd" * 32) and typed[0].tools == ("calculator",)
    assert [t.to_dag() for t in typed] == events
    doc = {**example, "events": events}
    assert Trace.from_dag(doc).to_dag() == doc
    assert witness_reads(typed) == []


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({**CALL, "depth": 0}, r"depth"),
        ({**CALL, "tools": "calculator"}, r"tools"),
        ({**CALL, "agent": {"id": "chat"}}, r"code_hash is missing"),
        ({k: v for k, v in CALL.items() if k != "memory"}, r"memory is missing"),
        ({**CALL, "extra": 1}, r"extra is not a field"),
        ({**RETURN, "status": "cancelled"}, r"status must be one of"),
        ({**RETURN, "output": None}, r"output"),
        ({k: v for k, v in RETURN.items() if k != "error"}, r"error is missing"),
    ],
)
def test_agent_events_are_read_strictly(event: dict[str, Any], message: str) -> None:
    with pytest.raises(FormatError, match=message):
        event_from_dag(event)
