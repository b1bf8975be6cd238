"""The web app: server-rendered pages, a JSON API (OpenAPI at ``/api/openapi.json``) and a live feed.

`create_app` wires an `ExplorerState` (the index, the content store, the chain) into the pages
(`supernet.explorer.pages`) and the API (`supernet.explorer.api`); when given an `Indexer`, the
app runs it in a thread for its lifetime. Errors people can cause (an unknown id, a malformed
search) become a 4xx page or JSON answer saying what was wrong, in one handler.

>>> app = create_app(ExplorerState(open_database("sqlite://")))   # doctest: +SKIP
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy import Engine
from starlette.exceptions import HTTPException
from supernet.explorer import charts, format
from supernet.explorer.content import ContentReader
from supernet.explorer.indexer import Indexer
from supernet.sdk.chain.tasks import TaskManager

log = logging.getLogger(__name__)
HERE = Path(__file__).resolve().parent


@dataclass
class ExplorerState:
    """What the handlers read: the index, and optionally the content store and the chain."""

    engine: Engine
    content: ContentReader | None = None
    task_manager: TaskManager | None = None
    indexer: Indexer | None = None
    poll_s: float = 1.0
    stop: threading.Event = field(default_factory=threading.Event)


def templates() -> Jinja2Templates:
    """The page templates with the explorer's filters."""
    t = Jinja2Templates(directory=str(HERE / "templates"))
    t.env.filters.update(eth=format.eth, utc=format.utc, ago=format.ago, short=format.short)
    t.env.globals["line_chart"] = charts.line_chart
    return t


CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
"""Every response's policy: the explorer's own scripts, styles and images only (charts are inline SVG)."""


def create_app(state: ExplorerState) -> FastAPI:
    """The explorer's ASGI app."""
    from supernet.explorer import api, pages  # import cycle: both read `ExplorerState`

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        thread = None
        if state.indexer is not None:
            thread = threading.Thread(
                target=state.indexer.run_forever, args=(state.stop, state.poll_s), name="indexer", daemon=True
            )
            thread.start()
        try:
            yield
        finally:
            state.stop.set()
            if thread is not None:
                thread.join(timeout=10)

    app = FastAPI(
        title="Supernet explorer API",
        version="1",
        summary="Nodes, validators, batches, receipts, challenges and votes of one Supernet deployment.",
        docs_url=None,  # Swagger UI loads its assets from a CDN; the spec is at /api/openapi.json
        redoc_url=None,
        openapi_url="/api/openapi.json",
        lifespan=lifespan,
    )
    app.state.explorer = state
    app.state.templates = templates()
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.include_router(api.router)
    app.include_router(pages.router)

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 400
        detail = str(exc.detail) if isinstance(exc, HTTPException) else _validation_message(exc)
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": detail}, status_code=status)
        return app.state.templates.TemplateResponse(
            request, "error.html", {"status": status, "detail": detail}, status_code=status
        )

    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, http_error)

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Response:
        # Pages show what nodes wrote (traces, agent ids, endpoints): templates escape it, and the
        # policy makes sure no script but the explorer's own file could run if one slipped through.
        response: Response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        return response

    return app


def _validation_message(exc: Exception) -> str:
    if isinstance(exc, RequestValidationError):
        parts = [f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in exc.errors()]
        return "; ".join(parts) or "invalid request"
    return str(exc)
