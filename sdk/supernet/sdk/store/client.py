"""Async client of the content store over the Kubo RPC API (``/api/v0``), with httpx.

The same client talks to a Kubo daemon (production) and to ``supernet store serve``
(devnet, tests). It computes every CID locally, checks the store's answer against it,
and re-hashes the bytes of every block it reads, so a corrupt or lying store raises
``CIDMismatchError`` instead of returning wrong data.

>>> import asyncio
>>> from supernet.sdk.store import StoreClient
>>> async def main() -> bytes:
...     async with StoreClient("http://127.0.0.1:5001") as store:
...         cid = await store.add_file(b"hello")
...         return await store.cat(cid)
>>> asyncio.run(main())  # doctest: +SKIP
b'hello'
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
from supernet.sdk.store.cids import (
    MAX_BLOCK_SIZE,
    BlockStat,
    Codec,
    canonical_cid,
    codec_of,
    compute_cid,
    decode_dag,
    encode_dag,
    verify_block,
)
from supernet.sdk.store.errors import (
    BlockTooLargeError,
    CIDMismatchError,
    InvalidBlockError,
    InvalidCIDError,
    StoreError,
    StoreUnavailableError,
)
from supernet.sdk.store.files import CHUNK_SIZE, decode_file_root, encode_file_root, split_chunks
from supernet.sdk.store.rpc_errors import error_from_response, parse_answer

STORE_URL_ENV = "SUPERNET_STORE_URL"
DEFAULT_STORE_URL = "http://127.0.0.1:5001"

T = TypeVar("T")
U = TypeVar("U")


class StoreClient:
    """Put, get and pin blocks and chunked files on a Kubo-compatible RPC API.

    Args:
        url: Base URL of the RPC API (``http://host:5001``, no ``/api/v0``). Defaults to
            ``$SUPERNET_STORE_URL``, else ``http://127.0.0.1:5001``.
        timeout: Seconds one call may take in all (the request, the wait for a connection and the
            whole answer: a store sending a block a byte at a time cannot hold a reader past it).
            Kubo looks for a block it lacks on the network until this runs out; pass
            ``offline=True`` to fail at once instead.
        offline: Ask Kubo for local blocks only (its ``offline`` option; the embedded store
            is always local).
        max_block_size: Largest block sent or read back, in bytes.
        concurrency: Most block requests in flight at once for files.
        max_connections: Most connections to the store at once (httpx's pool; default 100);
            calls beyond it wait for one, within their ``timeout``.
        transport: An httpx transport, e.g. ``httpx.ASGITransport(app)`` for an in-process store
            (``max_connections`` does not apply to it).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        timeout: float = 60.0,
        offline: bool = False,
        max_block_size: int = MAX_BLOCK_SIZE,
        concurrency: int = 8,
        max_connections: int | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = (url or os.environ.get(STORE_URL_ENV) or DEFAULT_STORE_URL).rstrip("/")
        self.max_block_size = max_block_size
        self.timeout = timeout
        self._offline = offline
        self._concurrency = concurrency
        self._transport = transport
        pool = max_connections or 100  # httpx's default
        limits = httpx.Limits(max_connections=pool, max_keepalive_connections=min(pool, 20))
        self._http = httpx.AsyncClient(
            base_url=f"{self.url}/api/v0/", timeout=timeout, transport=transport, limits=limits
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._http.aclose()

    def local_reader(self, *, max_connections: int = 8, timeout: float = 10.0) -> StoreClient:
        """Another client of the same store for reads of the blocks it holds (``offline``: Kubo
        answers "not found" at once instead of searching the network), with its own pool of at
        most ``max_connections``: what strangers' reads go through (the node's public
        ``/v1/store``), so that they can neither hold this client's connections nor make the
        store fetch blocks from the network. Close it with `aclose` (a transport given to this
        client is shared, and stays open)."""
        transport = None if self._transport is None else _SharedTransport(self._transport)
        return StoreClient(
            self.url,
            timeout=timeout,
            offline=True,
            max_block_size=self.max_block_size,
            max_connections=max_connections,
            transport=transport,
        )

    # ---------------------------------------------------------------- blocks

    async def put_block(self, data: bytes, codec: Codec = "raw", *, pin: bool = False) -> str:
        """Store one block and return its CID (computed locally and checked against the store's).

        Raises:
            BlockTooLargeError: If ``data`` is over ``max_block_size`` (checked before sending).
            InvalidBlockError: If ``codec`` is dag-cbor and ``data`` does not decode.
            CIDMismatchError: If the store reports another CID for the block.
        """
        data = bytes(data)
        expected = compute_cid(data, codec)
        if len(data) > self.max_block_size:
            raise BlockTooLargeError(
                f"block of {len(data)} bytes is over the {self.max_block_size}-byte "
                "limit; use add_file for larger data"
            )
        if codec == "dag-cbor":
            decode_dag(data)
        params = {"cid-codec": codec, "mhtype": "sha2-256", "pin": _flag(pin)}
        files = {"file": ("block", data, "application/octet-stream")}
        answer = await self._call("block/put", params, ("Key",), files=files)
        returned = canonical_cid(answer["Key"])
        if returned != expected:
            raise CIDMismatchError(
                f"store at {self.url} stored a block as {returned}, but its CID is {expected}"
            )
        return expected

    async def get_block(self, cid: str) -> bytes:
        """Fetch one block and check its bytes against the CID.

        Raises:
            InvalidCIDError: If ``cid`` is not a supported CID (checked before sending).
            BlockNotFoundError: If the store does not have the block.
            CIDMismatchError: If the bytes do not hash to ``cid``.
        """
        key = canonical_cid(cid)
        data = await self._post_capped("block/get", {"arg": key, **self._local()})
        verify_block(key, data)
        return data

    async def stat(self, cid: str) -> BlockStat:
        """Return a block's CID and size without fetching it."""
        answer = await self._call("block/stat", {"arg": canonical_cid(cid), **self._local()}, ("Key", "Size"))
        return BlockStat(cid=canonical_cid(answer["Key"]), size=int(answer["Size"]))

    async def rm_block(self, cid: str) -> None:
        """Delete a block from the store (refused while it is pinned)."""
        key = canonical_cid(cid)
        response = await self._post("block/rm", {"arg": key})
        for line in response.text.splitlines():
            if line.strip() and (error := json.loads(line).get("Error")):
                raise error_from_response(200, error, context=f"block/rm {key}")

    # ------------------------------------------------------------ dag & files

    async def put_dag(self, obj: Any, *, pin: bool = False) -> str:
        """Encode ``obj`` as dag-cbor (``multiformats.CID`` values become links) and store it."""
        return await self.put_block(encode_dag(obj), "dag-cbor", pin=pin)

    async def get_dag(self, cid: str) -> Any:
        """Fetch and decode a dag-cbor block; links come back as ``multiformats.CID``."""
        if codec_of(cid) != "dag-cbor":
            raise InvalidBlockError(f"{cid} is a raw block, not dag-cbor")
        return decode_dag(await self.get_block(cid))

    async def add_file(self, data: bytes, *, pin: bool = False) -> str:
        """Store bytes of any size as a chunked file (docs/protocol.md); return the root CID.

        Args:
            data: The file's content.
            pin: Pin the root recursively, which keeps every chunk.
        """
        data = bytes(data)
        chunk_cids = await self._map(self.put_block, split_chunks(data))
        return await self.put_block(encode_file_root(len(data), chunk_cids), "dag-cbor", pin=pin)

    async def cat(self, cid: str) -> bytes:
        """Fetch a file stored with :meth:`add_file`, checking every chunk and the total size.

        Raises:
            InvalidBlockError: If ``cid`` is not a ``supernet/file`` root or a chunk has the
                wrong size.
        """
        if codec_of(cid) != "dag-cbor":
            raise InvalidBlockError(f"{cid} is a raw block, not a supernet/file root")
        root = decode_file_root(await self.get_block(cid))
        chunks = await self._map(self.get_block, root.chunks)
        for index, chunk in enumerate(chunks):
            expected = min(CHUNK_SIZE, root.size - index * CHUNK_SIZE)
            if len(chunk) != expected:
                raise InvalidBlockError(f"chunk {index} of file {cid} has {len(chunk)} bytes, not {expected}")
        return b"".join(chunks)

    # ------------------------------------------------------------------ pins

    async def pin_add(self, cid: str, *, recursive: bool = True) -> list[str]:
        """Pin a block; a recursive pin (the default) keeps every block it links to."""
        params = {"arg": canonical_cid(cid), "recursive": _flag(recursive), **self._local()}
        return [_canonical(c) for c in (await self._call("pin/add", params, ("Pins",)))["Pins"]]

    async def pin_direct(self, cid: str) -> None:
        """Pin one block, not what it links to: a block that only adds to a pinned graph (a new
        namespace root, a trace) costs one block, where a recursive pin walks everything linked.
        A block already pinned recursively stays so (Kubo and the embedded store refuse a direct
        pin of it)."""
        try:
            await self.pin_add(cid, recursive=False)
        except StoreError as exc:
            if "already pinned recursively" not in str(exc):
                raise

    async def pin_rm(self, cid: str, *, recursive: bool = True) -> list[str]:
        """Remove a pin (the blocks stay until removed or garbage-collected)."""
        params = {"arg": canonical_cid(cid), "recursive": _flag(recursive)}
        return [_canonical(c) for c in (await self._call("pin/rm", params, ("Pins",)))["Pins"]]

    async def pin_ls(self, type: str = "recursive") -> dict[str, str]:
        """List pins as ``{cid: pin type}``; ``type`` is recursive, direct, indirect or all."""
        keys = (await self._call("pin/ls", {"type": type})).get("Keys") or {}
        return {_canonical(c): info.get("Type", type) for c, info in keys.items()}

    async def version(self) -> dict[str, Any]:
        """Return the store's ``version`` answer (a cheap liveness check)."""
        return await self._call("version", {}, ("Version",))

    # -------------------------------------------------------------- internal

    def _local(self) -> dict[str, str]:
        return {"offline": "true"} if self._offline else {}

    async def _call(
        self, path: str, params: dict[str, str], required: tuple[str, ...] = (), **kwargs: Any
    ) -> dict[str, Any]:
        response = await self._post(path, params, **kwargs)
        return parse_answer(response.text, context=path, url=self.url, required=required)

    async def _post(self, path: str, params: dict[str, str], **kwargs: Any) -> httpx.Response:
        try:
            async with asyncio.timeout(self.timeout):  # httpx's timeout is per read, not per call
                response = await self._http.post(path, params=params, **kwargs)
        except (httpx.TransportError, TimeoutError) as exc:
            raise self._unreachable(path, exc) from exc
        if response.status_code != 200:
            raise error_from_response(response.status_code, response.text, context=path, url=self.url)
        return response

    async def _post_capped(self, path: str, params: dict[str, str]) -> bytes:
        """POST and read the body, refusing more than ``max_block_size`` bytes."""
        try:
            # one deadline for the request and the whole body (a byte at a time is within httpx's)
            async with (
                asyncio.timeout(self.timeout),
                self._http.stream("POST", path, params=params) as response,
            ):
                if response.status_code != 200:
                    await response.aread()
                    raise error_from_response(response.status_code, response.text, context=path, url=self.url)
                body = bytearray()
                async for piece in response.aiter_bytes():
                    body += piece
                    if len(body) > self.max_block_size:
                        raise CIDMismatchError(
                            f"store at {self.url} sent over {self.max_block_size} bytes "
                            f"for {params.get('arg')}: no block is that large"
                        )
                return bytes(body)
        except (httpx.TransportError, TimeoutError) as exc:
            raise self._unreachable(path, exc) from exc

    def _unreachable(self, path: str, exc: Exception) -> StoreUnavailableError:
        timed_out = isinstance(exc, httpx.TimeoutException | TimeoutError)
        hint = (
            " (Kubo searches the network for blocks it lacks until the timeout; pass offline=True)"
            if timed_out and not self._offline
            else ""
        )
        what = (
            f"no answer within {self.timeout} s"
            if isinstance(exc, TimeoutError)
            else f"{type(exc).__name__} {exc}"
        )
        return StoreUnavailableError(
            f"{path}: content store at {self.url} unreachable: {what}{hint}. "
            f"Start one with `supernet store serve` or set {STORE_URL_ENV}."
        )

    async def _map(self, fn: Callable[[T], Awaitable[U]], items: Iterable[T]) -> list[U]:
        """Run ``fn`` over ``items`` with at most ``concurrency`` in flight; first error wins."""
        limit = asyncio.Semaphore(self._concurrency)

        async def one(item: T) -> U:
            async with limit:
                return await fn(item)

        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(one(item)) for item in items]
        except ExceptionGroup as failed:
            raise _first(failed) from None
        return [task.result() for task in tasks]


class _SharedTransport(httpx.AsyncBaseTransport):
    """Another client's transport, used without owning it: closing this leaves it open."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        pass


def _first(group: BaseExceptionGroup[Exception]) -> Exception:
    error = group.exceptions[0]
    return _first(error) if isinstance(error, BaseExceptionGroup) else error


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _canonical(cid: str) -> str:
    try:
        return canonical_cid(cid)
    except InvalidCIDError:  # e.g. a dag-pb pin made by `ipfs add` on a shared Kubo
        return cid
