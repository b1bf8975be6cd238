"""Parsing a ReAct step from a small model's text, forgiving its usual mistakes.

Small models drift from the format: they vary the case of the labels, wrap the arguments
in code fences or prose, name tools loosely (``Calculator``, ``calculator tool``), give a
bare expression instead of JSON, or answer straight away. :func:`parse_step` turns such text
into a :class:`Step`; :func:`coerce_args` turns the argument text into a JSON object for a
tool's schema.

>>> parse_step('Thought: add\\nAction: Calculator\\nAction Input: {"expression": "2+2"}', ["calculator"])
Step(thought='add', action='calculator', action_input='{"expression": "2+2"}', final_answer=None)
>>> coerce_args("2 + 2", {"properties": {"expression": {"type": "string"}}, "required": ["expression"]})
{'expression': '2 + 2'}
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_LABEL = r"(?im)^\s*\**\s*{}\s*\**\s*[:：]\s*"
_THOUGHT = re.compile(_LABEL.format("thought") + r"(.*)$")
_ACTION = re.compile(_LABEL.format("action") + r"(.*)$")
_ACTION_INPUT = re.compile(
    _LABEL.format(r"action[ _]input") + r"(.*?)(?=^\s*(?:observation|thought|action)\b|\Z)", re.S
)
_FINAL = re.compile(_LABEL.format("final[ _]answer") + r"(.*)", re.S)


@dataclass(frozen=True)
class Step:
    """One parsed model turn: an action to take, or a final answer (or neither)."""

    thought: str | None
    action: str | None
    action_input: str | None
    final_answer: str | None


def _clean_name(name: str) -> str:
    return re.sub(r"[^a-z0-9_]", "", re.sub(r"[\s-]+", "_", name.lower()))


def match_tool(name: str, tools: Sequence[str]) -> str | None:
    """The tool ``name`` most likely means: exact, case-insensitive, then by prefix or containment."""
    wanted = _clean_name(name)
    if not wanted:
        return None
    by_clean = {_clean_name(t): t for t in tools}
    if wanted in by_clean:
        return by_clean[wanted]
    for clean, tool in by_clean.items():
        if wanted.startswith(clean) or clean.startswith(wanted) or clean in wanted:
            return tool
    return None


def parse_step(text: str, tools: Sequence[str]) -> Step:
    """Read the thought, action, action input and final answer out of one model turn."""
    thought = _THOUGHT.search(text)
    action = _ACTION.search(text)
    action_input = _ACTION_INPUT.search(text)
    final = _FINAL.search(text)
    tool = match_tool(action.group(1).strip().strip("`'\"[]"), tools) if action else None
    # A final answer counts only if it comes before any action (small models often add both).
    if final and (not action or final.start() < action.start() or tool is None):
        return Step(_group(thought), None, None, final.group(1).strip())
    return Step(_group(thought), tool, _group(action_input), None)


def _group(match: re.Match[str] | None) -> str | None:
    return match.group(1).strip() if match else None


def coerce_args(raw: str | None, schema: Mapping[str, Any]) -> dict[str, Any]:
    """Arguments for a tool from the model's text: JSON if there is any, else the text itself.

    A bare value goes into the schema's only required property (or its only property).

    Raises:
        ValueError: Nothing usable.
    """
    text = (raw or "").strip().strip("`").removeprefix("json").strip()
    start, end = text.find("{"), text.rfind("}")
    if start != -1 and end > start:
        try:
            value = json.loads(text[start : end + 1])
            if isinstance(value, dict):
                return value
        except json.JSONDecodeError:
            pass
    required = list(schema.get("required", [])) or list(schema.get("properties", {}))
    if len(required) == 1 and text:
        return {required[0]: text.strip("\"'")}
    raise ValueError(f"cannot read tool arguments from {raw!r}")
