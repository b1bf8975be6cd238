"""The JSON API (``/api/v1``), documented in the app's OpenAPI, and the live feed (SSE).

Every answer is the same data the matching page renders (`supernet.explorer.queries`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException
from supernet.explorer import details, ids, queries, schemas, search
from supernet.explorer.db.models import Operator
from supernet.explorer.ids import DB, State

MAX_EVENT_ID = 2**63 - 1
"""Largest event id (a signed 64-bit integer in every database): a larger cursor is a 422, not a 500."""
LIVE_PAGE = 200
"""Events the live feed reads per query (it reads again at once while a page comes back full)."""

router = APIRouter(prefix="/api/v1", tags=["explorer"])
Doc = dict[str, Any]
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    400: {"description": "Malformed id or query"},
    404: {"description": "Nothing indexed has this id"},
}


@router.get(
    "/network",
    response_model=schemas.NetworkOut,
    summary="Nodes, validators, totals, charts and the latest activity",
)
def network(db: DB) -> Doc:
    return queries.network(db)


@router.get(
    "/totals",
    response_model=schemas.TotalsOut,
    summary="Network-wide totals (tasks, fees, gas per task, slashed, burned, refunded)",
)
def totals(db: DB) -> Doc:
    return {**queries.totals(db), "indexed_block": queries.indexed_block(db)}


@router.get(
    "/batches/{batch_id}",
    response_model=schemas.BatchDetailOut,
    summary="A batch: root, count, manifest, seed, receipts, challenges",
    responses=NOT_FOUND,
)
def batch(batch_id: str, db: DB, state: State) -> Doc:
    doc = queries.batch(db, ids.number(batch_id, "a batch id"))
    if doc is None:
        raise HTTPException(404, f"no batch {batch_id} is indexed")
    validators = list(db.scalars(select(Operator.address).where(Operator.role == "validator")))
    b = doc["batch"]
    doc["sampling"] = details.sampling(db, state.task_manager, b["batch_id"], b["count"], validators)
    return doc


@router.get(
    "/tasks/{task_id}",
    response_model=schemas.TaskOut,
    summary="A task's receipt, request, Merkle proof, trace and verification",
    responses=NOT_FOUND,
)
def task(task_id: str, db: DB, state: State) -> Doc:
    detail = details.task_detail(db, state.content, ids.task_id(task_id))
    if detail is None:
        raise HTTPException(404, f"no committed receipt has task id {task_id}")
    out = dataclasses.asdict(detail)
    rep = detail.verification
    out["verification"] = (
        None if rep is None else {"ok": rep.ok, "checks": [dataclasses.asdict(c) for c in rep.checks]}
    )
    return out


@router.get(
    "/challenges/{challenge_id}",
    response_model=schemas.ChallengeDetailOut,
    summary="A challenge: evidence, votes, outcome and split",
    responses=NOT_FOUND,
)
def challenge(challenge_id: str, db: DB, state: State) -> Doc:
    doc = queries.challenge(db, ids.number(challenge_id, "a challenge id"))
    if doc is None:
        raise HTTPException(404, f"no challenge {challenge_id} is indexed")
    doc["evidence"], doc["evidence_error"] = details.evidence(state.content, doc["challenge"]["evidence_cid"])
    return doc


@router.get(
    "/address/{address}",
    response_model=schemas.AddressOut,
    summary="A node, validator or user: stake, batches, tasks, challenges, votes",
    responses=NOT_FOUND,
)
def address(address: str, db: DB) -> Doc:
    return queries.address(db, ids.address(address))


@router.get(
    "/search",
    response_model=schemas.SearchOut,
    summary="Find a task id, batch, address, CID or challenge",
    responses=NOT_FOUND,
)
def find(
    db: DB, q: str = Query(..., description="task id, batch number, address, CID or 'challenge N'")
) -> Doc:
    kind, value = resolve(db, q)
    return {"kind": kind, "id": value, "url": page_url(kind, value)}


@router.get(
    "/events",
    response_model=list[schemas.EventOut],
    summary="The newest events after an event id (newest first)",
)
def events(
    db: DB, after: int = Query(0, ge=0, le=MAX_EVENT_ID), limit: int = Query(50, ge=1, le=500)
) -> list[Doc]:
    return queries.latest_events(db, after, limit)


@router.get(
    "/live",
    summary="Server-sent events: one `event` message per newly indexed protocol event",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def live(
    request: Request, state: State, after: int | None = Query(None, ge=0, le=MAX_EVENT_ID)
) -> StreamingResponse:
    async def stream() -> AsyncIterator[str]:
        last = after
        if last is None:
            last = await asyncio.to_thread(_last_id, state)
        yield "retry: 2000\n\n"
        while not await request.is_disconnected() and not state.stop.is_set():
            new = await asyncio.to_thread(_events_after, state, last)
            for ev in new:  # oldest first, a page at a time: a burst is sent whole, in order
                last = ev["id"]
                yield f"id: {ev['id']}\nevent: event\ndata: {json.dumps(ev, default=str)}\n\n"
            if len(new) == LIVE_PAGE:
                continue  # more are waiting
            if not new:
                yield ": keep-alive\n\n"
            await asyncio.sleep(state.poll_s)

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def _last_id(state: Any) -> int:
    with Session(state.engine) as s:
        return queries.last_event_id(s)


def _events_after(state: Any, after: int) -> list[Doc]:
    with Session(state.engine) as s:
        return queries.events_after(s, after, LIVE_PAGE)


def resolve(db: Session, q: str) -> tuple[str, str]:
    """What a search query names, or a 400 (malformed) / 404 (nothing indexed)."""
    try:
        found = search.resolve(db, q)
    except search.BadQuery as exc:
        raise HTTPException(400, str(exc)) from None
    if found is None:
        raise HTTPException(404, f"nothing indexed matches {q.strip()[:100]!r}")
    return found


def page_url(kind: str, value: str) -> str:
    """The page of a search result."""
    return {"batch": "/batches/", "task": "/tasks/", "challenge": "/challenges/", "address": "/address/"}[
        kind
    ] + value
