"""OpenAI-compatible ``POST /v1/chat/completions``, paid and authenticated like a task.

The signed request travels in the body's ``supernet`` field or, for OpenAI clients that cannot
add body fields, base64url-encoded JSON in the ``X-Supernet-Auth`` header (same shape:
``{"request", "signature", "voucher"}``). The task runs the ``chat`` agent on the input
``{"messages": [...], "max_new_tokens"?, "temperature"?, "top_p"?, "seed"?}`` (``max_new_tokens``
is the OpenAI ``max_tokens``), which ``inputHash`` covers.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sse_starlette import EventSourceResponse
from supernet.node.service.deps import AcceptingCtx, NodeContext, load_task
from supernet.node.service.errors import BadRequestError, BadSignatureError, NodeError
from supernet.node.service.models import TaskStatus
from supernet.node.service.routes_tasks import admit_and_start
from supernet.node.service.schemas import ChatCompletionCreate, SignedTask

router = APIRouter(prefix="/v1/chat", tags=["openai"])

AUTH_HEADER = "X-Supernet-Auth"


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
    served = {ctx.executor.model_name(m): m for m in ctx.executor.model_ids()}
    served.update({m: m for m in ctx.executor.model_ids()})
    model_id = served.get(model) or served.get(model.lower())
    if model_id is None:
        raise BadRequestError(f"model {model!r} is not served here; see GET /v1/models")
    if model_id.lower() != signed.request.modelId.lower():
        raise BadRequestError(f"model {model!r} is not the signed modelId {signed.request.modelId}")
    return ctx.executor.model_name(model_id)


def _chunk(task_id: str, model: str, delta: dict[str, str], finish: str | None) -> str:
    return json.dumps(
        {
            "id": task_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
    )


async def _stream(ctx: NodeContext, task_id: str, model: str) -> AsyncIterator[dict[str, str]]:
    yield {"data": _chunk(task_id, model, {"role": "assistant", "content": ""}, None)}
    stream = ctx.streams.get(task_id)
    if stream is not None:
        async for piece in stream.subscribe():
            yield {"data": _chunk(task_id, model, {"content": piece}, None)}
    await ctx.worker.wait(task_id)
    task = load_task(ctx, task_id)
    if task.status is not TaskStatus.DONE:
        yield {"data": json.dumps({"error": {"code": "task_failed", "message": task.error or task.status}})}
    else:
        yield {"data": _chunk(task_id, model, {}, "stop")}
    yield {"data": "[DONE]"}


@router.post("/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionCreate,
    ctx: AcceptingCtx,
    x_supernet_auth: Annotated[str | None, Header(alias=AUTH_HEADER)] = None,
) -> Any:
    """Chat completion (streamed as ``chat.completion.chunk`` events when ``stream`` is true)."""
    signed = _signed(body, x_supernet_auth)
    model = _check_model(ctx, body.model, signed)
    task_id = await admit_and_start(ctx, signed, "chat", body.task_input())
    if body.stream:
        return EventSourceResponse(_stream(ctx, task_id, model), ping=15)
    await ctx.worker.wait(task_id)
    task = load_task(ctx, task_id)
    if task.status is not TaskStatus.DONE:
        raise NodeError(f"task {task_id} failed: {task.error}", taskId=task_id)
    return JSONResponse(
        {
            "id": task_id,
            "object": "chat.completion",
            "created": int(task.created_at),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": task.output},
                    "finish_reason": "stop",
                }
            ],
            "supernet": {
                "taskId": task_id,
                "traceCid": task.trace_cid,
                "receipt": f"/v1/tasks/{task_id}/receipt",
            },
        }
    )
