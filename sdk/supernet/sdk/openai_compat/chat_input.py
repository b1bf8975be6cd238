"""The signed input of an OpenAI chat completion: one function that clients and nodes both run.

A ``POST /v1/chat/completions`` body becomes the ``chat`` agent's task input, and ``inputHash`` is
the RFC 8785 hash of that input (`supernet.sdk.chain.receipts.input_hash`). Both sides compute it
from the JSON *as sent* — values are copied, never re-typed (``1`` stays ``1``; JCS writes ``1.0``
the same way anyway) and a message's other fields (``name``) are kept — so an honest client and
the node agree without sharing a schema library. The rules (docs/node.md "Chat completions"):

* ``messages``: each message as sent, except that ``developer`` is the ``system`` role and a
  content array of ``text`` parts is their texts joined by ``\\n`` (what the model reads);
* ``max_new_tokens``: ``max_completion_tokens``, else ``max_tokens``;
* ``temperature``, ``top_p``, ``seed``, ``stop``, ``logprobs``, ``top_logprobs``,
  ``response_format``, ``tools``, ``tool_choice``: as sent (so a node cannot drop a
  structured-output constraint, nor change the tools the reply may call);
* nothing else (``model`` is the signed ``modelId``; ``stream`` only changes the transport).
  Keys that are absent or ``null`` are left out.

>>> signed = chat_task_input({"model": "m", "messages": [{"role": "developer", "content": "Be brief."},
...     {"role": "user", "name": "ann", "content": [{"type": "text", "text": "Hi"}]}],
...     "max_completion_tokens": 8, "temperature": 1})
>>> signed["messages"]
[{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'name': 'ann', 'content': 'Hi'}]
>>> signed["max_new_tokens"], signed["temperature"]
(8, 1)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

PASSED_AS_SENT = (
    "temperature",
    "top_p",
    "seed",
    "stop",
    "logprobs",
    "top_logprobs",
    "response_format",
    "tools",
    "tool_choice",
)
"""Body fields copied into the signed input unchanged (when present and not null)."""

WITHOUT_EFFECT = frozenset({"model", "stream", "stream_options", "user", "parallel_tool_calls", "supernet"})
"""Body fields left out of the signed input because they change nothing a node runs: ``model`` is
the signed ``modelId``, the others the transport (a node may answer at most one tool call)."""

NEUTRAL = {"n": (None, 1), "presence_penalty": (None, 0), "frequency_penalty": (None, 0)}
"""Fields the signed input leaves out that are accepted only at the value that changes nothing."""


def unsigned_fields(body: Mapping[str, Any]) -> list[str]:
    """The fields of ``body`` that would change what runs but that the signed input does not hold
    (sorted): a node that drops one before its API reads the body runs the signed input, is paid,
    and nothing shows it. The drop-in refuses to sign a body that has any
    (tests/integration/test_review_openai_gateway2.py)."""
    signed = {"messages", "max_completion_tokens", "max_tokens", *PASSED_AS_SENT}
    return sorted(
        key
        for key, value in body.items()
        if key not in signed and key not in WITHOUT_EFFECT and not (key in NEUTRAL and value in NEUTRAL[key])
    )


def _content(content: Any) -> Any:
    """A content array of text parts as the text the model reads; anything else as sent (the
    node refuses parts it cannot read, naming them)."""
    if isinstance(content, list) and all(
        isinstance(p, Mapping) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content
    ):
        return "\n".join(p["text"] for p in content)
    return content


def _message(message: Any) -> Any:
    if not isinstance(message, Mapping):
        return message
    out = dict(message)
    if out.get("role") == "developer":  # OpenAI's newer name for system instructions
        out["role"] = "system"
    if "content" in out:
        out["content"] = _content(out["content"])
    return out


def chat_task_input(body: Mapping[str, Any]) -> dict[str, Any]:
    """The ``chat`` agent's input (what ``inputHash`` covers) for a chat completion ``body``, the
    parsed JSON as sent (the ``supernet`` auth field, if any, is ignored)."""
    messages = body.get("messages")
    out: dict[str, Any] = {
        "messages": [_message(m) for m in messages] if isinstance(messages, list) else messages
    }
    limit = body.get("max_completion_tokens")
    if limit is None:
        limit = body.get("max_tokens")
    if limit is not None:
        out["max_new_tokens"] = limit
    for key in PASSED_AS_SENT:
        if body.get(key) is not None:
            out[key] = body[key]
    return out
