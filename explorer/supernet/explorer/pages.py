"""The server-rendered pages (Jinja2): network, batch, task, challenge, address, search.

Each page renders the same data as its JSON API route (`supernet.explorer.api`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from supernet.explorer import api, queries
from supernet.explorer.ids import DB, State

router = APIRouter(include_in_schema=False)


def _page(request: Request, name: str, ctx: dict[str, Any]) -> HTMLResponse:
    state = request.app.state.explorer
    with_live = {**ctx, "live_after": ctx.get("live_after", 0), "poll_ms": int(state.poll_s * 1000)}
    response: HTMLResponse = request.app.state.templates.TemplateResponse(request, name, with_live)
    return response


@router.get("/", response_class=HTMLResponse)
def network(request: Request, db: DB) -> HTMLResponse:
    doc = queries.network(db)
    return _page(request, "network.html", {**doc, "live_after": queries.last_event_id(db)})


@router.get("/batches/{batch_id}", response_class=HTMLResponse)
def batch(request: Request, batch_id: str, db: DB, state: State) -> HTMLResponse:
    return _page(request, "batch.html", api.batch(batch_id, db, state))


@router.get("/tasks/{task_id}", response_class=HTMLResponse)
def task(request: Request, task_id: str, db: DB, state: State) -> HTMLResponse:
    return _page(request, "task.html", api.task(task_id, db, state))


@router.get("/challenges/{challenge_id}", response_class=HTMLResponse)
def challenge(request: Request, challenge_id: str, db: DB, state: State) -> HTMLResponse:
    return _page(request, "challenge.html", api.challenge(challenge_id, db, state))


@router.get("/address/{address}", response_class=HTMLResponse)
def address(request: Request, address: str, db: DB) -> HTMLResponse:
    doc = api.address(address, db)
    return _page(request, "address.html", {**doc, "live_after": queries.last_event_id(db)})


@router.get("/search")
def find(db: DB, q: str = Query("", description="what to look for")) -> Response:
    kind, value = api.resolve(db, q)
    return RedirectResponse(api.page_url(kind, value), status_code=303)


@router.get("/healthz")
def healthz(db: DB) -> dict[str, int]:
    return {"indexed_block": queries.indexed_block(db)}
