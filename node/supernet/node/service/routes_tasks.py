"""``/v1/tasks``: submit a paid task, read it, stream its tokens, fetch its receipt, confirm its
irreversible actions and read its access audit."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal, cast

from fastapi import APIRouter, Path, status
from sse_starlette import EventSourceResponse
from supernet.node.service.deps import (
    AcceptingCtx,
    Ctx,
    NodeContext,
    ReadGrantHeader,
    load_own_task,
    load_task,
)
from supernet.node.service.errors import (
    ForbiddenError,
    InputNotCanonicalError,
    NotFoundError,
    TooLargeError,
)
from supernet.node.service.metrics import METRICS
from supernet.node.service.models import TaskRow, TaskStatus
from supernet.node.service.schemas import (
    AuditEntryPublic,
    BatchInfo,
    ConfirmationAccepted,
    ConfirmationPost,
    PromisePublic,
    ReceiptPublic,
    SignedTask,
    TaskCreate,
    TaskPublic,
)
from supernet.node.service.streams import StreamEvent, until
from supernet.sdk.chain.eip712 import Confirmation, recover_confirmation
from supernet.sdk.chain.receipts import InputEncodingError, canonical_input, normal_input

router = APIRouter(prefix="/v1/tasks", tags=["tasks"])

BatchStatus = Literal["sealed", "sent", "committed"]

TaskId = Annotated[str, Path(pattern=r"^0x[0-9a-fA-F]{64}$", description="The task id (requestHash).")]


def task_public(t: TaskRow) -> TaskPublic:
    """API view of a stored task."""
    return TaskPublic(
        id=t.id,
        status=t.status.value,
        user=t.user,
        agent=t.agent,
        modelId=t.model_id,
        nonce=t.nonce,
        fee=t.fee,
        output=t.output,
        traceCid=t.trace_cid,
        error=t.error,
        createdAt=t.created_at,
        updatedAt=t.updated_at,
    )


async def admit_and_start(
    ctx: NodeContext, signed: SignedTask, agent: str, task_input: str | dict[str, Any]
) -> str:
    """Check the input's encoding and size, authenticate and store the task, and start it; returns
    its id. An input without a canonical form is refused before anything else: the trace could
    not record what the user signed, and validators would wrong this node over it."""
    try:
        encoded = canonical_input(task_input)
        # from here on the input is the value its hash names (`normal_input`: 8.0 becomes 8): what
        # the schema check, the agent and the trace see, so a budget of 8.0 is the integer 8
        # everywhere; an input whose normal form has no hash (1e16) is refused here too
        normal = normal_input(task_input)
    except InputEncodingError as exc:
        METRICS.tasks_rejected.labels(code=InputNotCanonicalError.code).inc()
        raise InputNotCanonicalError(str(exc)) from None
    size = len(task_input) if isinstance(task_input, str) else len(encoded)
    limit = ctx.settings.api.max_input_chars
    if size > limit:
        raise TooLargeError(f"input is {size} characters, the limit is {limit}")
    try:
        task = await ctx.auth.admit(signed, agent, normal)
    except Exception as exc:
        METRICS.tasks_rejected.labels(code=getattr(exc, "code", "internal")).inc()
        raise
    METRICS.tasks_admitted.inc()
    ctx.worker.start(task.id)
    return task.id


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=TaskPublic)
async def create_task(body: TaskCreate, ctx: AcceptingCtx) -> TaskPublic:
    """Submit a paid task. Answers once the task is durably stored (status ``accepted``)."""
    task_id = await admit_and_start(ctx, body, body.agent, body.input)
    return task_public(load_task(ctx, task_id))


@router.get("/{task_id}", response_model=TaskPublic)
async def get_task(task_id: TaskId, ctx: Ctx, grant: ReadGrantHeader = None) -> TaskPublic:
    """A task's status, and its output once done (to its user only: ``X-Supernet-Read``)."""
    return task_public(load_own_task(ctx, task_id, grant))


@router.get("/{task_id}/receipt", response_model=ReceiptPublic)
async def get_receipt(task_id: TaskId, ctx: Ctx, grant: ReadGrantHeader = None) -> ReceiptPublic:
    """The signed receipt; ``batch`` (with the Merkle proof) appears once it is committed (to the
    task's user only: ``X-Supernet-Read``)."""
    task = load_own_task(ctx, task_id, grant)
    doc = receipt_public(ctx, task)
    if doc is None:
        raise NotFoundError(f"task {task.id} has no receipt yet (status {task.status})", status=task.status)
    return doc


def receipt_public(ctx: NodeContext, task: TaskRow) -> ReceiptPublic | None:
    """The signed receipt document of ``task`` (None before it has one): what the receipt route
    serves, and what a chat completion carries with its answer (`routes_chat`)."""
    row = ctx.db.receipt(task.id)
    if row is None or task.trace_cid is None:
        return None
    promise = ctx.db.promise(task.id)
    batch_info = None
    if row.batch_id is not None:
        batch = ctx.db.batch(row.batch_id)
        assert batch is not None and row.batch_index is not None
        batch_info = BatchInfo(
            localId=batch.id,
            status=cast(BatchStatus, batch.status),
            chainBatchId=batch.chain_batch_id,
            root=batch.root,
            index=row.batch_index,
            manifestCid=batch.manifest_cid,
            txHash=batch.tx_hash,
            proof=json.loads(row.proof) if row.proof else None,
        )
    return ReceiptPublic(
        taskId=task.id,
        node=ctx.address,
        receipt=row.receipt_json,
        leaf=row.leaf,
        signature=row.signature,
        traceCid=task.trace_cid,
        batch=batch_info,
        promise=None if promise is None else PromisePublic(commitBy=promise[0], signature=promise[1]),
    )


async def task_events(ctx: NodeContext, task_id: str) -> AsyncIterator[dict[str, str]]:
    """SSE events of a task: ``token`` pieces (and ``confirmation_required`` when a call of an
    irreversible tool waits for its user), then one ``done`` (or ``error``) event. A stream
    open longer than ``api.max_stream_s`` ends with ``pending`` (a connection is a resource a
    peer must not hold forever; the client polls ``GET /v1/tasks/{id}`` instead)."""
    stream = ctx.streams.get(task_id)
    if stream is not None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ctx.settings.api.max_stream_s
        try:
            async with contextlib.aclosing(until(stream.subscribe_all(), deadline)) as pieces:
                async for piece in pieces:
                    if isinstance(piece, StreamEvent):  # confirmation_required: a call waits for the user
                        yield {"event": piece.event, "data": json.dumps(dict(piece.data))}
                        continue
                    yield {"event": "token", "data": json.dumps({"text": piece})}
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ctx.worker.wait(task_id), max(0.0, deadline - loop.time()))
        except TimeoutError:
            pass
    task = load_task(ctx, task_id)
    if stream is None and task.status is TaskStatus.DONE and task.output:
        yield {"event": "token", "data": json.dumps({"text": task.output})}
    event = "done" if task.status is TaskStatus.DONE else "error"
    if task.status in (TaskStatus.ACCEPTED, TaskStatus.RUNNING):
        event = "pending"  # running in another process lifetime: poll GET /v1/tasks/{id}
    yield {"event": event, "data": task_public(task).model_dump_json()}


@router.get(
    "/{task_id}/events",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def stream_task(task_id: TaskId, ctx: Ctx, grant: ReadGrantHeader = None) -> EventSourceResponse:
    """Server-sent events: ``token`` ``{"text"}`` as they are generated, then ``done`` with the task
    (to the task's user only: ``X-Supernet-Read``)."""
    task = load_own_task(ctx, task_id, grant)
    return EventSourceResponse(
        task_events(ctx, task.id), ping=15, send_timeout=ctx.settings.api.stream_send_timeout_s
    )


@router.post("/{task_id}/confirmations", response_model=ConfirmationAccepted)
async def confirm_action(task_id: TaskId, body: ConfirmationPost, ctx: Ctx) -> ConfirmationAccepted:
    """Confirm an irreversible action a running task waits for (``confirmation_required``). The
    signature is the authentication: it must recover to the task's user over the protocol's
    ``Confirmation`` in this node's domain, checked first (403 otherwise, whatever the action);
    then 404 if no call waits for that action, so only the task's user learns which action waits.
    A repeat of an accepted confirmation changes nothing."""
    task = load_task(ctx, task_id)
    action = body.actionHash.lower()
    # who signed, before anything about the action: a stranger's answer never depends on it
    try:
        conf = Confirmation(bytes.fromhex(task.id[2:]), bytes.fromhex(action[2:]))
        signer = recover_confirmation(conf, ctx.auth.domain, bytes.fromhex(body.signature[2:]))
    except Exception as exc:
        raise ForbiddenError(f"unreadable confirmation: {exc}") from None
    if signer.lower() != task.user.lower():
        raise ForbiddenError(f"confirmation signed by {signer}, not the task's user")
    confirm = getattr(ctx.executor, "confirm", None)
    if confirm is None:
        raise NotFoundError(f"task {task.id} has no call waiting for a confirmation")
    try:
        resumed = bool(confirm(task.id, action, bytes.fromhex(body.signature[2:])))
    except LookupError as exc:  # the access manager's UnknownActionError: nothing waits for it
        raise NotFoundError(str(exc)) from None
    except PermissionError as exc:  # its ConfirmationRejectedError: not the task user's signature
        raise ForbiddenError(str(exc)) from None
    return ConfirmationAccepted(taskId=task.id, actionHash=action, resumed=resumed)


@router.get("/{task_id}/audit", response_model=list[AuditEntryPublic])
async def get_audit(task_id: TaskId, ctx: Ctx, grant: ReadGrantHeader = None) -> list[AuditEntryPublic]:
    """The access decisions (tools, memory, files, store reads, confirmations) of a task's agent,
    persisted before its result was acknowledged (to the task's user only: ``X-Supernet-Read``)."""
    task = load_own_task(ctx, task_id, grant)
    return [AuditEntryPublic(**row) for row in ctx.db.audit(task.id)]
