"""The node's running parts as one object, and FastAPI's ``Annotated`` dependencies on it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from supernet.node.service.auth import Authenticator
from supernet.node.service.config import NodeSettings
from supernet.node.service.db import Database
from supernet.node.service.errors import (
    CommitsAtRiskError,
    ForbiddenError,
    NotFoundError,
    UnauthorizedError,
    UnavailableError,
)
from supernet.node.service.models import TaskRow
from supernet.node.service.ports import ChainPort, Executor
from supernet.node.service.streams import StreamHub
from supernet.node.service.worker import TaskWorker
from supernet.sdk.client.read_grant import READ_HEADER, ReadGrantError, verify_read_grant


@dataclass
class NodeContext:
    """Everything a request handler may touch."""

    settings: NodeSettings
    address: str
    db: Database
    executor: Executor
    auth: Authenticator
    worker: TaskWorker
    streams: StreamHub
    chain: ChainPort | None
    store_url: str | None = None
    store: Any = None  # the node's store client
    public_store: Any = None  # strangers' reads of /v1/store: `routes_store.public_reader` of `store`
    accepting: bool = True
    commit_risk: Callable[[], str | None] | None = None
    """Why the receipts' commit promises are at risk (`Batcher.commit_risk`), or None: while it
    says so, ``/healthz`` answers 503 and new paid tasks are refused."""


def _context(request: Request) -> NodeContext:
    ctx: NodeContext | None = getattr(request.app.state, "node", None)
    if ctx is None:
        raise UnavailableError("node is starting")
    return ctx


def _accepting(ctx: Annotated[NodeContext, Depends(_context)]) -> NodeContext:
    if not ctx.accepting:
        raise UnavailableError("node is shutting down and takes no new tasks")
    risk = ctx.commit_risk() if ctx.commit_risk is not None else None
    if risk is not None:  # each task would come with a promise to commit it the node cannot keep
        raise CommitsAtRiskError(f"this node takes no new tasks: {risk}")
    return ctx


Ctx = Annotated[NodeContext, Depends(_context)]
"""The node, for read-only routes."""

AcceptingCtx = Annotated[NodeContext, Depends(_accepting)]
"""The node, for routes that admit new work (503 while shutting down)."""


def load_task(ctx: NodeContext, task_id: str) -> TaskRow:
    """The task ``task_id`` or a 404."""
    task = ctx.db.task(task_id.lower())
    if task is None:
        raise NotFoundError(f"no task {task_id}")
    return task


ReadGrantHeader = Annotated[
    str | None,
    Header(
        alias=READ_HEADER,
        description="The task user's read grant for this node: `<user>:<expiry>:<signature>` "
        "(EIP-712 `ReadGrant`, at most one hour long; `supernet.sdk.client.ReadGrantAuth`).",
    ),
]


def reader_of(ctx: NodeContext, grant: str | None, what: str) -> str:
    """The user whose valid read grant for this node ``grant`` is (401 without one)."""
    if grant is None:
        raise UnauthorizedError(
            f"reading {what} needs its user's read grant in {READ_HEADER} "
            "(docs/protocol.md, 'Reading results')"
        )
    try:
        return verify_read_grant(grant, ctx.address, ctx.auth.domain)
    except ReadGrantError as exc:
        raise UnauthorizedError(str(exc)) from None


def load_own_task(ctx: NodeContext, task_id: str, grant: str | None) -> TaskRow:
    """The task ``task_id`` for the user who paid for it: 401 without a valid read grant, 404 if
    there is no such task, 403 if the grant is another user's. Task ids are public (every batch
    manifest lists them), so the id alone must not open a result."""
    reader = reader_of(ctx, grant, "a task")
    task = load_task(ctx, task_id)
    if task.user.lower() != reader.lower():
        raise ForbiddenError(f"task {task.id} belongs to another user")
    return task
