"""The node's public HTTP API (FastAPI). See docs/node.md for the full description.

``create_app(ctx)`` builds the app around a running :class:`NodeContext`; the runner serves it
with uvicorn. Domain errors (:class:`NodeError`) become HTTP answers in one handler, as
``{"error": {"code", "message", ...}}``; so do validation errors (422) and oversized bodies (413).
"""

from __future__ import annotations

import time
from typing import Any

from eth_utils import to_checksum_address
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from supernet.node.service import routes_chat, routes_store, routes_tasks
from supernet.node.service.deps import Ctx, NodeContext, ReadGrantHeader, reader_of
from supernet.node.service.errors import BusyError, ForbiddenError, NodeError
from supernet.node.service.metrics import METRICS
from supernet.node.service.ports import Executor
from supernet.node.service.schemas import (
    AccountPublic,
    Address,
    AgentCard,
    ErrorBody,
    ModelCard,
    ModelList,
    NodeInfo,
    ServedFormat,
    VoucherBody,
)

API_VERSION = "1.0.0"


class BodyLimit:
    """ASGI middleware: answers 413 when a request body is over ``limit`` bytes (declared or sent)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await _too_large(self.limit)(scope, receive, send)
            return
        seen = 0

        async def counting() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _BodyTooLarge(self.limit)
            return message

        try:
            await self.app(scope, counting, send)
        except _BodyTooLarge:
            await _too_large(self.limit)(scope, receive, send)


class _BodyTooLarge(StarletteHTTPException):
    """A streamed (chunked) body went over the limit. An HTTP exception, so that FastAPI's body
    parsing, which turns any other error into a vague 400, passes it on as the 413 it is."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is over {limit} bytes")


def _too_large(limit: int) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": "too_large", "message": f"request body is over {limit} bytes"}}, 413
    )


def _served_format(executor: Executor, model_id: str) -> ServedFormat:
    weights, compute = executor.model_format(model_id)
    return ServedFormat(weights=weights, compute=compute)


def _error(status: int, code: str, message: str, **detail: Any) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, **detail}}, status_code=status)


async def _node_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, NodeError)
    response = _error(exc.status, exc.code, exc.message, **exc.detail)
    if isinstance(exc, BusyError):
        response.headers["Retry-After"] = str(exc.retry_after_s)
    return response


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    """Starlette's own errors (a body that is not UTF-8 JSON, unknown path, wrong method) in the
    documented error format, keeping their headers (``Allow`` on a 405)."""
    assert isinstance(exc, StarletteHTTPException)
    code = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(
        exc.status_code, "http_error"
    )
    response = _error(exc.status_code, code, str(exc.detail))
    response.headers.update(exc.headers or {})
    return response


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
    first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(p) for p in first["loc"])
    return _error(422, "invalid_request", f"{where}: {first['msg']}", errors=errors)


def create_app(ctx: NodeContext | None = None, *, max_body_bytes: int = 64 * 1024) -> FastAPI:
    """The FastAPI app; ``ctx`` may be attached later as ``app.state.node``."""
    app = FastAPI(
        title="Supernet node",
        version=API_VERSION,
        description="Paid agent tasks with signed, Merkle-committed receipts. Authentication: the "
        "user's EIP-712 TaskRequest and cumulative Voucher signatures (docs/protocol.md).",
        responses={
            400: {"model": ErrorBody},
            401: {"model": ErrorBody},
            402: {"model": ErrorBody},
            403: {"model": ErrorBody},
            404: {"model": ErrorBody},
            409: {"model": ErrorBody},
            413: {"model": ErrorBody},
            422: {"model": ErrorBody},
        },
    )
    app.state.node = ctx
    app.add_exception_handler(NodeError, _node_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_middleware(BodyLimit, limit=ctx.settings.api.max_body_bytes if ctx else max_body_bytes)

    @app.middleware("http")
    async def _count(request: Request, call_next: Any) -> Response:
        started = time.perf_counter()
        response: Response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", "other")
        METRICS.requests.labels(route=route, status=str(response.status_code)).inc()
        METRICS.request_seconds.labels(route=route).observe(time.perf_counter() - started)
        return response

    app.include_router(routes_tasks.router)
    app.include_router(routes_chat.router)
    app.include_router(routes_store.router)

    @app.get(
        "/healthz",
        tags=["ops"],
        responses={503: {"description": "draining, or commits_at_risk: takes no new tasks"}},
    )
    async def healthz(ctx: Ctx) -> JSONResponse:
        """Readiness and the node's load (its tasks accepted and running): 503 while draining
        (shutting down), so a load balancer stops sending it tasks before it stops, and while its
        commits keep failing (``commits_at_risk``, with a ``reason``: an empty wallet, say), so
        clients pass over a node that cannot keep its commit promises. Anyone may ask, so its cost
        must not grow with the node's history (totals are in /metrics)."""
        # `Batcher.commit_risk` is kept in memory: no cost here
        risk = ctx.commit_risk() if ctx.commit_risk is not None and ctx.accepting else None
        status = "draining" if not ctx.accepting else "ok" if risk is None else "commits_at_risk"
        body: dict[str, Any] = {"status": status, "node": ctx.address}
        if risk is not None:
            body["reason"] = risk
        return JSONResponse(
            {**body, "tasks": ctx.db.count_unfinished()}, status_code=200 if status == "ok" else 503
        )

    @app.get("/metrics", tags=["ops"], response_class=Response)
    async def metrics() -> Response:
        """Prometheus metrics."""
        return Response(generate_latest(METRICS.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models", response_model=ModelList, tags=["openai"])
    async def models(ctx: Ctx) -> ModelList:
        """Models served here (OpenAI shape, plus the protocol's ``modelId`` and the task fee)."""
        fee = ctx.settings.pricing.task_fee_wei
        return ModelList(
            data=[
                ModelCard(id=ctx.executor.model_name(m), owned_by=ctx.address, modelId=m, taskFee=fee)
                for m in ctx.executor.model_ids()
            ]
        )

    @app.get("/v1/node", response_model=NodeInfo, tags=["node"])
    async def node_info(ctx: Ctx, request: Request) -> NodeInfo:
        """What a client needs to sign for this node: address, EIP-712 domain, fee, models, agents,
        and where to read traces (the read-only store under ``/v1/store``, or ``store.public_url``)."""
        ids = {*ctx.settings.engine.agents, *(a.id for a in ctx.settings.agents.allow)}
        # each profile hashed once: the cards carry the agentHash `agents` lists
        cards = [
            AgentCard.model_validate(c)
            for c in ctx.executor.agent_cards()
            if c["id"] in ids and c.get("agentHash")
        ]
        agents = {c.id: c.agentHash for c in cards if c.agentHash is not None}
        return NodeInfo(
            address=ctx.address,
            chainId=ctx.auth.domain.chain_id,
            verifyingContract=ctx.auth.domain.verifying_contract,
            taskFee=ctx.settings.pricing.task_fee_wei,
            models=list(ctx.executor.model_ids()),
            modelNames={ctx.executor.model_name(m): m for m in ctx.executor.model_ids()},
            modelFormats={m: _served_format(ctx.executor, m) for m in ctx.executor.model_ids()},
            agents=agents,
            agentCards=cards,
            storeUrl=ctx.store_url or str(request.base_url).rstrip("/") + routes_store.PREFIX,
        )

    @app.get("/v1/accounts/{user}", response_model=AccountPublic, tags=["node"])
    async def account(user: Address, ctx: Ctx, grant: ReadGrantHeader = None) -> AccountPublic:
        """A user's last nonce and billed total here (to resynchronise a client's local state), with
        the user's largest voucher of a billed task (the proof of that total). Only with that
        user's read grant: the nonce and the total move as each task is admitted, so they tell
        whoever reads them what the user does here and when."""
        u = to_checksum_address(user)
        if reader_of(ctx, grant, "an account") != u:
            raise ForbiddenError(f"the read grant is another user's, not {u}'s")
        latest = ctx.db.latest_voucher(u)
        voucher = None if latest is None else VoucherBody(cumulativeAmount=latest[0], signature=latest[1])
        return AccountPublic(
            user=u,
            lastNonce=ctx.db.last_nonce(u),
            billed=ctx.db.billed(u),
            redeemed=ctx.db.redeemed(u),
            voucher=voucher,
        )

    return app
