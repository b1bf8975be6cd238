"""The Kubo RPC subset served over an :class:`EmbeddedStore` (FastAPI).

Endpoints (all ``POST``, as in Kubo): ``block/put|get|stat|rm``, ``pin/add|rm|ls``,
``version``, ``id`` under ``/api/v0``. Errors are Kubo's JSON ``{"Message", "Code", "Type"}``:
400 for bad arguments, 413 for a block or body over the limits, 500 for the rest (a missing
block included, with Kubo's wording), so ``StoreClient`` handles both backends alike.

The API has no authentication (like Kubo's, it is meant for loopback), so it refuses what a web
page in the operator's browser could send it (`_BrowserGuard`, 403): a request with an ``Origin``
(the store serves no page, so every origin is foreign) or a ``Sec-Fetch-Site`` other than
``none`` / ``same-origin`` (a cross-site form ``POST`` to ``pin/rm`` needs no CORS preflight), and,
where the server is bound to a socket, a ``Host`` other than a loopback name or the bound address
(DNS rebinding: a page whose own name resolves to 127.0.0.1). Programs (the SDK, the node, the
validator, ``curl``) send none of these headers and a loopback ``Host``.

>>> import tempfile
>>> from supernet.sdk.store.blockstore import EmbeddedStore
>>> from supernet.sdk.store.server import create_app
>>> app = create_app(EmbeddedStore(tempfile.mkdtemp()))
>>> sorted(path for path in app.openapi()["paths"] if path.startswith("/api/v0/pin"))
['/api/v0/pin/add', '/api/v0/pin/ls', '/api/v0/pin/rm']
"""

from __future__ import annotations

import ipaddress
import json
import platform
from collections.abc import Iterable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from supernet.sdk import __version__
from supernet.sdk.store.blockstore import EmbeddedStore
from supernet.sdk.store.cids import CODECS, HASH_FUNCTION, MAX_BLOCK_SIZE, Codec
from supernet.sdk.store.errors import (
    InvalidBlockError,
    InvalidCIDError,
    RequestTooLargeError,
    StoreError,
    StoreLimitError,
)

DEFAULT_MAX_REQUEST_SIZE = 2 * MAX_BLOCK_SIZE
"""Largest request body the server reads; a block is checked against its own, smaller limit."""

AGENT = f"supernet-embedded/{__version__}"


def _get_store(request: Request) -> EmbeddedStore:
    return request.app.state.store


StoreDep = Annotated[EmbeddedStore, Depends(_get_store)]
CidArg = Annotated[str, Query(alias="arg", description="A CID.")]


class KuboError(BaseModel):
    """Kubo's RPC error body: what every error answer of this API carries."""

    Message: str
    Code: int = Field(description="1: the client's error; 0: the server's")
    Type: Literal["error"] = "error"


KUBO_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {
        "model": KuboError,
        "description": "Invalid argument: not a CID, an unsupported codec, a bad block.",
    },
    403: {"model": KuboError, "description": "Refused (a read-only endpoint)."},
    404: {"model": KuboError, "description": "No such RPC path."},
    405: {
        "model": KuboError,
        "description": "Method not allowed (the `Allow` header lists the allowed ones).",
    },
    413: {"model": KuboError, "description": "Request body or block over the limit."},
    500: {"model": KuboError, "description": "Block not found (the status Kubo answers it with)."},
}
"""The error answers of the Kubo RPC subset, as documented in its OpenAPI (`create_app`)."""

router = APIRouter(prefix="/api/v0", responses=KUBO_ERRORS)


@router.post("/block/put")
async def block_put(
    request: Request,
    store: StoreDep,
    codec: Annotated[str, Query(alias="cid-codec")] = "raw",
    mhtype: str = HASH_FUNCTION,
    mhlen: int = -1,
    pin: bool = False,
) -> dict[str, Any]:
    """Store the first file part of a multipart body as one block."""
    if codec not in CODECS:
        raise InvalidCIDError(f"unsupported cid-codec {codec!r}: this store accepts {', '.join(CODECS)}")
    if mhtype != HASH_FUNCTION or mhlen not in (-1, 32):
        raise InvalidCIDError(f"unsupported multihash {mhtype!r}/{mhlen}: this store uses sha2-256")
    data = await _read_file_part(request)
    cid = await run_in_threadpool(store.put, data, _as_codec(codec))
    if pin:
        await run_in_threadpool(store.pin_add, cid, recursive=True)
    return {"Key": cid, "Size": len(data)}


@router.post("/block/get")
def block_get(store: StoreDep, arg: CidArg) -> Response:
    """Return a block's bytes as stored (the client re-hashes them, as with Kubo)."""
    return Response(store.get(arg, verify=False), media_type="application/octet-stream")


@router.post("/block/stat")
def block_stat(store: StoreDep, arg: CidArg) -> dict[str, Any]:
    """Return a block's CID and size."""
    stat = store.stat(arg)
    return {"Key": stat.cid, "Size": stat.size}


@router.post(
    "/block/rm",
    response_class=Response,
    responses={
        200: {
            "description": "One JSON object per line (`Hash`, and `Error` when that block failed), as Kubo.",
            "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
        }
    },
)
def block_rm(store: StoreDep, arg: Annotated[list[str], Query()], force: bool = False) -> Response:
    """Remove blocks; like Kubo, report per-block failures in the ``Error`` field of each line."""
    lines = []
    for cid in arg:
        try:
            store.remove(cid)
            lines.append({"Hash": cid})
        except StoreError as exc:
            if not (force and "not found" in str(exc)):
                lines.append({"Hash": cid, "Error": str(exc)})
    body = "".join(json.dumps(line) + "\n" for line in lines)
    return Response(body, media_type="application/x-ndjson")  # one JSON object per line, as Kubo


@router.post("/pin/add")
def pin_add(store: StoreDep, arg: CidArg, recursive: bool = True) -> dict[str, Any]:
    """Pin a block, recursively by default (every linked block must be present)."""
    return {"Pins": [store.pin_add(arg, recursive=recursive)]}


@router.post("/pin/rm")
def pin_rm(store: StoreDep, arg: CidArg, recursive: bool = True) -> dict[str, Any]:
    """Remove a pin."""
    return {"Pins": [store.pin_rm(arg, recursive=recursive)]}


@router.post("/pin/ls")
def pin_ls(store: StoreDep, type: str = "all") -> dict[str, Any]:
    """List pins: ``{"Keys": {cid: {"Type": ...}}}``."""
    if type not in ("recursive", "direct", "indirect", "all"):
        raise InvalidBlockError(f"invalid pin type {type!r}: use recursive, direct, indirect or all")
    return {"Keys": {cid: {"Type": kind} for cid, kind in sorted(store.pins(type).items())}}


@router.post("/version")
def version() -> dict[str, Any]:
    """Report the server's version, in Kubo's shape."""
    return {
        "Version": __version__,
        "Commit": "",
        "Repo": "embedded",
        "System": platform.machine(),
        "Golang": "",
        "Agent": AGENT,
    }


@router.post("/id")
def node_id(store: StoreDep) -> dict[str, Any]:
    """Identify the server (an embedded store has no libp2p identity)."""
    return {
        "ID": f"embedded:{store.path}",
        "PublicKey": "",
        "Addresses": [],
        "AgentVersion": AGENT,
        "Protocols": [],
    }


def create_app(
    store: EmbeddedStore,
    *,
    max_request_size: int = DEFAULT_MAX_REQUEST_SIZE,
    hosts: Iterable[str] | None = None,
) -> FastAPI:
    """Build the FastAPI app serving ``store`` over the Kubo RPC subset.

    Args:
        store: The blockstore to serve.
        max_request_size: Largest request body accepted, in bytes (413 beyond).
        hosts: The names a request's ``Host`` may give (port aside), e.g. `allowed_hosts` of the
            bound address; ``None`` checks no ``Host`` (an app served in process, which no
            browser reaches). Browser requests are refused either way.
    """
    app = FastAPI(
        title="Supernet embedded content store",
        version=__version__,
        description="The subset of the Kubo RPC API that supernet.sdk.store uses.",
    )
    app.state.store = store
    app.state.max_request_size = max_request_size
    app.include_router(router)
    app.add_middleware(_BodyLimit, max_bytes=max_request_size)
    app.add_middleware(_BrowserGuard, hosts=None if hosts is None else frozenset(h.lower() for h in hosts))
    app.add_exception_handler(StoreError, _store_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    return app


LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def allowed_hosts(bound: str) -> frozenset[str] | None:
    """The ``Host`` names a server bound to ``bound`` accepts: the loopback names and ``bound``;
    ``None`` (no check) for a wildcard address (``0.0.0.0``, ``::``), reached under names it cannot
    know (such a store is off loopback, where `supernet store serve` warns it has no
    authentication)."""
    name = bound.strip("[]").lower()
    try:
        if ipaddress.ip_address(name).is_unspecified:
            return None
    except ValueError:
        pass  # a host name
    return LOOPBACK_NAMES | {name}


SAFE_FETCH_SITES = frozenset({"none", "same-origin"})
"""``Sec-Fetch-Site`` values of requests no other site made (typed by the user, or the page's own)."""


class _BrowserGuard:
    """ASGI middleware: 403 (Kubo's shape) for what a web page can make a browser send, before the
    app reads anything (Kubo refuses an ``Origin`` it does not allow the same way)."""

    def __init__(self, app: ASGIApp, hosts: frozenset[str] | None) -> None:
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = self._refusal(dict(scope.get("headers", [])))
            if refusal is not None:
                await kubo_error(403, refusal)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _refusal(self, headers: dict[bytes, bytes]) -> str | None:
        origin = headers.get(b"origin")
        if origin is not None:
            return f"refused a browser's request from origin {origin.decode('latin-1')[:100]!r}"
        site = headers.get(b"sec-fetch-site")
        if site is not None and site.decode("latin-1").lower() not in SAFE_FETCH_SITES:
            return f"refused a browser's {site.decode('latin-1')[:20]!r} request (Sec-Fetch-Site)"
        host = headers.get(b"host")
        if self.hosts is not None and host is not None and not _allowed(_host_name(host), self.hosts):
            return f"refused a request for host {host.decode('latin-1')[:100]!r}: not this store's address"
        return None


def _allowed(name: str, hosts: frozenset[str]) -> bool:
    if name in hosts:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback  # 127.0.0.2 too: no page is served from it
    except ValueError:
        return False


def _host_name(header: bytes) -> str:
    """The name of a ``Host`` header without its port (``[::1]:5001`` is ``::1``)."""
    host = header.decode("latin-1").strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    name, _, port = host.rpartition(":")
    return name if name and port.isdigit() else host


def kubo_error(status: int, message: str) -> JSONResponse:
    """Build an error response the way Kubo's RPC API shapes it (``Code`` 1 = client error)."""
    code = 1 if 400 <= status < 500 else 0
    return JSONResponse({"Message": message, "Code": code, "Type": "error"}, status_code=status)


async def _store_error(_: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, StoreLimitError):
        return kubo_error(413, str(exc))
    if isinstance(exc, ValueError):  # invalid CIDs, blocks and arguments
        return kubo_error(400, str(exc))
    return kubo_error(500, str(exc))


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, StarletteHTTPException):
        response = kubo_error(exc.status_code, str(exc.detail))
        response.headers.update(exc.headers or {})  # e.g. ``Allow`` on a 405
        return response
    return kubo_error(500, str(exc))


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    first = errors[0] if errors else {"loc": ("?",), "msg": str(exc)}
    return kubo_error(400, f"invalid argument {first['loc'][-1]!r}: {first['msg']}")


async def _read_file_part(request: Request) -> bytes:
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidBlockError("block/put expects a multipart/form-data body with one file part")
    limit = request.app.state.max_request_size
    async with request.form(max_files=1, max_fields=0, max_part_size=limit) as form:
        parts = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
        if not parts:
            raise InvalidBlockError("block/put expects one file part in the multipart body")
        return await parts[0].read()


def _as_codec(name: str) -> Codec:
    return "raw" if name == "raw" else "dag-cbor"


class _BodyLimit:
    """ASGI middleware: refuse request bodies over ``max_bytes`` with a Kubo-style 413.

    A declared ``Content-Length`` over the limit is refused before the app runs (the body is
    drained first so HTTP clients read the answer instead of a reset connection); a streamed
    body is counted as it arrives and stops the route with ``RequestTooLargeError``.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        declared = headers.get(b"content-length", b"").decode()
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._drain(receive, int(declared))
            await kubo_error(413, self._message(int(declared)))(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise RequestTooLargeError(self._message(received))
            return message

        await self.app(scope, counted, send)

    def _message(self, size: int) -> str:
        return f"request body of {size} bytes is over the server's {self.max_bytes}-byte limit"

    async def _drain(self, receive: Receive, declared: int) -> None:
        if declared > 16 * self.max_bytes:
            return  # not worth reading; the client may see the connection close instead
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False) and message["type"] == "http.request"
