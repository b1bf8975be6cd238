"""Request and response schemas of the public API (pydantic, the edge of the service).

The protocol's own schemas (tasks, receipts, node info, accounts, confirmations, audit, errors)
are defined once in `supernet.sdk.node_api`, shared with the client, and re-exported here; this
module adds the OpenAI-compatible chat completion request, which clients send through the
official ``openai`` package.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from supernet.sdk.formats.trace import MAX_STOP_CHARS, MAX_STOP_STRINGS
from supernet.sdk.node_api import (
    AccountPublic,
    Address,
    AgentCard,
    AgentId,
    AuditEntryPublic,
    BatchInfo,
    Bytes32,
    ConfirmationAccepted,
    ConfirmationPost,
    Deadline,
    ErrorBody,
    ModelCard,
    ModelList,
    NodeInfo,
    PromisePublic,
    ReceiptPublic,
    ServedFormat,
    Signature,
    SignedTask,
    TaskCreate,
    TaskInput,
    TaskPublic,
    TaskRequestBody,
    Uint256,
    VoucherBody,
)

__all__ = [
    "AccountPublic",
    "Address",
    "AgentCard",
    "AgentId",
    "AuditEntryPublic",
    "BatchInfo",
    "Bytes32",
    "ChatCompletionCreate",
    "ChatMessage",
    "ConfirmationAccepted",
    "ConfirmationPost",
    "ContentPart",
    "Deadline",
    "ErrorBody",
    "ModelCard",
    "ModelList",
    "NodeInfo",
    "PromisePublic",
    "ReceiptPublic",
    "ServedFormat",
    "Signature",
    "SignedTask",
    "StreamOptions",
    "TaskCreate",
    "TaskInput",
    "TaskPublic",
    "TaskRequestBody",
    "Uint256",
    "VoucherBody",
]


class ContentPart(BaseModel):
    """One part of a message's content array (only ``text`` parts are read; others are a 400)."""

    model_config = ConfigDict(extra="allow")

    type: str
    text: Annotated[str, StringConstraints(max_length=32_768)] | None = None


class ChatMessage(BaseModel):
    """One OpenAI chat message. ``developer`` is read as ``system``; other fields (``name``, an
    assistant's ``tool_calls``, a ``tool`` message's ``tool_call_id``) are kept in the signed input
    as sent; the model reads ``tool`` messages and ``tool_calls`` as text (docs/node.md)."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: (
        Annotated[str, StringConstraints(max_length=32_768)]
        | Annotated[list[ContentPart], Field(max_length=64)]
        | None
    ) = None


class StreamOptions(BaseModel):
    """``stream_options``: ``include_usage`` adds a last chunk with ``usage``."""

    model_config = ConfigDict(extra="forbid")

    include_usage: bool = False


_StopString = Annotated[str, StringConstraints(min_length=1, max_length=MAX_STOP_CHARS)]
StopStrings = _StopString | Annotated[list[_StopString], Field(max_length=MAX_STOP_STRINGS)]


class ChatCompletionCreate(BaseModel):
    """``POST /v1/chat/completions``; the ``supernet`` field (or the ``X-Supernet-Auth`` header)
    carries the signed request. The signed input is computed from the body as sent
    (`supernet.sdk.openai_compat.chat_task_input`, docs/node.md). A field this node cannot honour
    (``n`` > 1, penalties, ``top_logprobs`` > 5, any unknown field) is a 400 naming it, never
    ignored; ``response_format`` ``json_schema`` / ``json_object`` and ``tools`` / ``tool_choice``
    are honoured by constrained decoding (at most one tool call per reply, whatever
    ``parallel_tool_calls`` says)."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=64)]
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: Annotated[int, Field(gt=0, le=4096)] | None = None
    max_completion_tokens: Annotated[int, Field(gt=0, le=4096)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    seed: Annotated[int, Field(ge=0, lt=2**53)] | None = None
    stop: StopStrings | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    n: Annotated[int, Field(ge=1, le=128)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    response_format: dict[str, Any] | None = None
    tools: Annotated[list[dict[str, Any]], Field(min_length=1, max_length=64)] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    user: Annotated[str, StringConstraints(max_length=256)] | None = None
    supernet: SignedTask | None = None
