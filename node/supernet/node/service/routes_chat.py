"""OpenAI-compatible ``POST /v1/chat/completions``, paid and authenticated like a task.

The signed request travels in the body's ``supernet`` field or, for OpenAI clients that cannot
add body fields, base64url-encoded JSON in the ``X-Supernet-Auth`` header (same shape:
``{"request", "signature", "voucher"}``; `supernet.sdk.openai_compat.SupernetAuth` sends it).
The task runs the ``chat`` agent on `chat_task_input` of the body *as received* (the parsed JSON,
not this module's typed view of it), which ``inputHash`` covers: what runs, what is billed and
what the user signed are one input. Parameters this node cannot honour are a 400 (`chat_params`).

A request with ``tools`` whose reply is a tool call (`supernet.node.agents.tool_calls`) answers
with ``message.tool_calls`` and ``finish_reason: "tool_calls"``; streamed, such a request sends no
text until the reply is complete (a reply is a call or text only once its first token is known,
and a call is sent whole), then one chunk with the text or the call.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sse_starlette import EventSourceResponse
from supernet.node.agents.tool_calls import parse_tool_call
from supernet.node.service.chat_params import ChatPlan, UnsupportedParameterError, chat_plan
from supernet.node.service.chat_result import add_alternatives, call_facts
from supernet.node.service.deps import AcceptingCtx, NodeContext, load_task
from supernet.node.service.errors import (
    BadRequestError,
    BadSignatureError,
    ModelNotServedError,
    NodeError,
    StillRunningError,
)
from supernet.node.service.models import TaskRow, TaskStatus
from supernet.node.service.ports import served_models
from supernet.node.service.routes_tasks import admit_and_start, receipt_public
from supernet.node.service.schemas import ChatCompletionCreate, SignedTask
from supernet.node.service.streams import until
from supernet.sdk.client.answer import tool_call_arguments
from supernet.sdk.client.streaming import StopCutter, cut_at_stop
from supernet.sdk.formats.chat_facts import CallFacts, finish_reason, token_logprobs
from supernet.sdk.openai_compat.chat_input import chat_task_input

router = APIRouter(prefix="/v1/chat", tags=["openai"])

AUTH_HEADER = "X-Supernet-Auth"

log = logging.getLogger(__name__)


def _signed(body: ChatCompletionCreate, header: str | None) -> SignedTask:
    if body.supernet is not None:
        return body.supernet
    if header is None:
        raise BadSignatureError(f"missing signed request: send the `supernet` body field or {AUTH_HEADER}")
    try:
        raw = base64.urlsafe_b64decode(header + "=" * (-len(header) % 4))
        return SignedTask.model_validate_json(raw)
    except ValidationError as exc:  # a credential that is not one: 401, naming the first bad field
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid"}
        where = ".".join(str(p) for p in first.get("loc", ())) or "header"
        raise BadSignatureError(
            f"{AUTH_HEADER} is not a signed request: {where}: {first.get('msg', 'invalid')}"
        ) from None
    except ValueError:
        raise BadSignatureError(f"{AUTH_HEADER} is not base64url JSON of a signed request") from None


def _check_model(ctx: NodeContext, model: str, signed: SignedTask) -> str:
    """The served model id ``model`` names (a name or an id), checked against the signed one."""
    names = served_models(ctx.executor)
    served = {**names, **{m.lower(): m for m in ctx.executor.model_ids()}}
    model_id = served.get(model) or served.get(model.lower())
    if model_id is None:
        raise ModelNotServedError.naming(repr(model), names)
    if model_id.lower() != signed.request.modelId.lower():
        raise BadRequestError(f"model {model!r} is not the signed modelId {signed.request.modelId}")
    return model_id


def _engine(ctx: NodeContext, model_id: str | None = None) -> Any:
    """The LLM engine (tokenizer, scoring pass) of ``model_id`` behind a kernel executor (None: the
    default model's); None for other executors."""
    engine_for = getattr(ctx.executor, "engine", None)
    if engine_for is None:
        return None
    return engine_for(model_id) if model_id is not None else engine_for(ctx.executor.model_ids()[0])


async def _logprobs(
    ctx: NodeContext, plan: ChatPlan, facts: CallFacts | None, content: str, model_id: str
) -> Any:
    if not plan.logprobs:
        return None
    if facts is None:
        # the task is done and billed: its answer goes out without them rather than as an error
        # the user cannot retry (the same signed request is a replay, a new one pays again)
        log.warning("the trace of a chat task cannot be read: its answer goes out without logprobs")
        return None
    engine = _engine(ctx, model_id)  # the alternatives come from the model that answered
    entries = token_logprobs(getattr(engine, "tokenizer", None), facts, content)
    await add_alternatives(engine, facts, entries, plan.top_logprobs)
    return {"content": entries}


class _Answer:
    """One completion's fixed fields: a single ``id``, ``created`` and ``model`` for every chunk."""

    def __init__(self, task: TaskRow, model: str) -> None:
        self.id, self.created, self.model = task.id, int(task.created_at), model
        self.model_id = task.model_id

    def doc(self, kind: str, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        head = {"id": self.id, "object": kind, "created": self.created, "model": self.model}
        return {**head, "choices": choices, **extra}

    def chunk(
        self, delta: dict[str, Any], finish: str | None = None, logprobs: Any = None, **extra: Any
    ) -> dict[str, str]:
        choice = {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        return {"data": json.dumps(self.doc("chat.completion.chunk", [choice], **extra))}


def _proof(ctx: NodeContext, task: TaskRow) -> dict[str, Any]:
    """The ``supernet`` field of an answer: the task, its whole output and its signed receipt, so
    the client checks the text it is handed against what the node committed
    (`supernet.sdk.openai_compat.answer_check`) before it hands it over."""
    doc = receipt_public(ctx, task)
    return {
        "taskId": task.id,
        "traceCid": task.trace_cid,
        "receipt": f"/v1/tasks/{task.id}/receipt",
        "output": task.output,
        "signedReceipt": None if doc is None else doc.model_dump(mode="json"),
    }


def _tool_calls(plan: ChatPlan, task_id: str, content: str) -> list[dict[str, Any]] | None:
    """OpenAI's ``tool_calls`` when the reply is a call of one of the request's tools, else None.
    The call's ``id`` is derived from the task id (one call per task)."""
    if plan.tools is None or (call := parse_tool_call(content, plan.tools)) is None:
        return None
    name, arguments = call
    call_id = "call_" + hashlib.sha256(task_id.encode()).hexdigest()[:24]
    function = {"name": name, "arguments": tool_call_arguments(arguments)}
    return [{"id": call_id, "type": "function", "function": function}]


def _message(plan: ChatPlan, task_id: str, content: str) -> tuple[dict[str, Any], bool]:
    """The answer's message, and whether it is a tool call."""
    calls = _tool_calls(plan, task_id, content)
    if calls is None:
        return {"role": "assistant", "content": content}, False
    return {"role": "assistant", "content": None, "tool_calls": calls}, True


def _still_running(task_id: str, ctx: NodeContext) -> str:
    return (
        f"task {task_id} is still running after api.max_stream_s ({ctx.settings.api.max_stream_s:g} s): "
        f"poll GET /v1/tasks/{task_id}"
    )


async def _stream(ctx: NodeContext, answer: _Answer, plan: ChatPlan) -> AsyncIterator[dict[str, str]]:
    yield answer.chunk({"role": "assistant", "content": ""})
    hold = StopCutter(plan.stop)
    stream = ctx.streams.get(answer.id)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ctx.settings.api.max_stream_s  # as /v1/tasks/{id}/events
    try:
        if stream is not None and plan.tools is None:  # a possible tool call is sent whole, at the end
            async with contextlib.aclosing(until(stream.subscribe(), deadline)) as pieces:
                async for piece in pieces:
                    if text := hold.feed(piece):
                        yield answer.chunk({"content": text})
        await asyncio.wait_for(ctx.worker.wait(answer.id), max(0.05, deadline - loop.time()))
    except TimeoutError:
        message = _still_running(answer.id, ctx)
        error = {"code": StillRunningError.code, "message": message, "taskId": answer.id}
        yield {"data": json.dumps({"error": error})}
        yield {"data": "[DONE]"}
        return
    task = load_task(ctx, answer.id)
    if task.status is not TaskStatus.DONE:
        yield {"data": json.dumps({"error": {"code": "task_failed", "message": task.error or task.status}})}
        yield {"data": "[DONE]"}
        return
    content, stopped = cut_at_stop(task.output or "", plan.stop)
    facts = await call_facts(ctx.store, task.trace_cid)
    calls = _tool_calls(plan, answer.id, content)
    if calls is not None:
        yield answer.chunk({"tool_calls": [{"index": 0, **calls[0]}]})
        logprobs = await _logprobs(ctx, plan, facts, content, answer.model_id)
        yield answer.chunk(
            {}, finish_reason(facts, stopped, tool_call=True), logprobs, supernet=_proof(ctx, task)
        )
        if plan.include_usage and facts is not None:
            yield {"data": json.dumps(answer.doc("chat.completion.chunk", [], usage=facts.usage()))}
        yield {"data": "[DONE]"}
        return
    sent = hold.shown
    if content.startswith(sent) and len(content) > len(sent):  # held back, or no live stream
        yield answer.chunk({"content": content[len(sent) :]})
    logprobs = await _logprobs(ctx, plan, facts, content, answer.model_id)
    yield answer.chunk({}, finish_reason(facts, stopped), logprobs, supernet=_proof(ctx, task))
    if plan.include_usage and facts is not None:
        yield {"data": json.dumps(answer.doc("chat.completion.chunk", [], usage=facts.usage()))}
    yield {"data": "[DONE]"}


@router.post("/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionCreate,
    request: Request,
    ctx: AcceptingCtx,
    x_supernet_auth: Annotated[str | None, Header(alias=AUTH_HEADER)] = None,
) -> Any:
    """Chat completion (streamed as ``chat.completion.chunk`` events when ``stream`` is true)."""
    # off the event loop: its grammar check compiles the user's schema (bounded by the protocol's
    # budget, `supernet.node.llm.grammar.check_budget`, but not free), before any signature is read
    plan = await asyncio.to_thread(chat_plan, body)
    if plan.top_logprobs and _engine(ctx) is None:
        raise UnsupportedParameterError(
            "`top_logprobs` is not supported by this node: its executor has no scoring pass",
            param="top_logprobs",
        )
    signed = _signed(body, x_supernet_auth)
    model_id = _check_model(ctx, body.model, signed)
    received = json.loads(await request.body())  # the JSON as sent: the typed view re-types values
    task_id = await admit_and_start(ctx, signed, "chat", chat_task_input(received))
    answer = _Answer(load_task(ctx, task_id), ctx.executor.model_name(model_id))
    if body.stream:
        return EventSourceResponse(
            _stream(ctx, answer, plan), ping=15, send_timeout=ctx.settings.api.stream_send_timeout_s
        )
    try:
        await asyncio.wait_for(ctx.worker.wait(task_id), ctx.settings.api.max_stream_s)
    except TimeoutError:
        raise StillRunningError(_still_running(task_id, ctx), taskId=task_id) from None
    task = load_task(ctx, task_id)
    if task.status is not TaskStatus.DONE:
        raise NodeError(f"task {task_id} failed: {task.error}", taskId=task_id)
    content, stopped = cut_at_stop(task.output or "", plan.stop)
    facts = await call_facts(ctx.store, task.trace_cid)
    message, is_call = _message(plan, task_id, content)
    choice = {
        "index": 0,
        "message": message,
        "logprobs": await _logprobs(ctx, plan, facts, content, task.model_id),
        "finish_reason": finish_reason(facts, stopped, tool_call=is_call),
    }
    usage = {"usage": facts.usage()} if facts is not None else {}
    return JSONResponse(answer.doc("chat.completion", [choice], **usage, supernet=_proof(ctx, task)))
