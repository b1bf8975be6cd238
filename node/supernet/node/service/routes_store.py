"""The node's content store, read-only, on its public API: what users and validators are pointed at.

Traces, manifests and evidence must be fetchable by anyone (validators re-check them, users verify
their receipts), but the store's RPC also deletes blocks and pins (`block/rm`, `pin/rm`): a
stranger pointed at it could remove a node's traces and then get the node slashed for not serving
them. So the node never advertises its store RPC. It answers the read subset of the Kubo RPC that
`supernet.sdk.store.StoreClient` reads with (``block/get``, ``block/stat``, ``version``) under
``/v1/store``, through a store client of its own (every block re-hashed against its CID), and
advertises that URL (``storeUrl`` of ``GET /v1/node``) unless ``store.public_url`` names another
read-only endpoint (a gateway of the operator's Kubo). Every other RPC path is a 403 here.

Strangers' reads are the node's blocks only: they go to the store with Kubo's ``offline`` flag (a
CID the node lacks is "not found" at once, not a network search of up to a minute, and the node
relays no block of the public IPFS network), through `public_reader`'s own small connection pool,
so that however many there are, the node's own trace and memory writes keep theirs.

>>> StoreClient(node_url + "/v1/store").get_dag(trace_cid)   # doctest: +SKIP
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from supernet.node.service.deps import Ctx, NodeContext
from supernet.sdk import __version__
from supernet.sdk.store.errors import BlockNotFoundError, StoreError, StoreLimitError
from supernet.sdk.store.server import KUBO_ERRORS, KuboError, kubo_error

PREFIX = "/v1/store"
router = APIRouter(
    prefix=f"{PREFIX}/api/v0",
    tags=["store"],
    responses={  # Kubo's error shape, as the store clients pointed here expect
        400: KUBO_ERRORS[400],
        403: KUBO_ERRORS[403],
        413: KUBO_ERRORS[413],
        500: KUBO_ERRORS[500],
        502: {"model": KuboError, "description": "The node's own store failed."},
    },
)
CidArg = Annotated[str, Query(alias="arg", description="A CID.")]

PUBLIC_READ_CONNECTIONS = 8
"""Most connections strangers' reads hold to the node's store at once (more wait, within the
timeout): local reads take milliseconds, and the node's own client keeps its pool."""
PUBLIC_READ_TIMEOUT_S = 10.0
"""A stranger's read, all in (a local block, no network search)."""


def public_reader(store: Any) -> Any:
    """The client `/v1/store` reads through: ``store``'s `StoreClient.local_reader` (``offline``,
    its own pool), or ``store`` itself where it has none (a test's fake)."""
    reader = getattr(store, "local_reader", None)
    if reader is None:
        return store
    return reader(max_connections=PUBLIC_READ_CONNECTIONS, timeout=PUBLIC_READ_TIMEOUT_S)


def _reader(ctx: NodeContext) -> Any:
    return ctx.public_store if ctx.public_store is not None else ctx.store


def _error(exc: StoreError) -> JSONResponse:
    if isinstance(exc, StoreLimitError):
        return kubo_error(413, str(exc))
    if isinstance(exc, BlockNotFoundError):
        return kubo_error(500, f"block not found: {exc}")  # Kubo's status for a missing block
    if isinstance(exc, ValueError):  # not a CID, not a supported codec
        return kubo_error(400, str(exc))
    return kubo_error(502, f"the node's store failed: {exc}")


@router.post("/block/get", response_class=Response)
async def block_get(ctx: Ctx, arg: CidArg) -> Response:
    """A block's bytes (re-hashed against ``arg`` by the node's store client)."""
    try:
        return Response(await _reader(ctx).get_block(arg), media_type="application/octet-stream")
    except StoreError as exc:
        return _error(exc)


@router.post("/block/stat")
async def block_stat(ctx: Ctx, arg: CidArg) -> Any:
    """A block's CID and size."""
    try:
        stat = await _reader(ctx).stat(arg)
    except StoreError as exc:
        return _error(exc)
    return {"Key": stat.cid, "Size": stat.size}


@router.post("/version")
async def version() -> dict[str, str]:
    """Kubo's version shape."""
    return {"Version": __version__, "Commit": "", "Repo": "node-read-only", "System": "", "Golang": ""}


@router.api_route("/{path:path}", methods=["GET", "POST", "PUT", "DELETE"], include_in_schema=False)
async def refused(path: str, request: Request) -> JSONResponse:
    """Everything else (``block/put``, ``block/rm``, ``pin/*`` ...) is refused: read-only."""
    return kubo_error(403, f"{PREFIX} is read-only: {request.method} /api/v0/{path} is not served here")
