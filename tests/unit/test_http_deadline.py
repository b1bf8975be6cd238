"""Each connection to the node's API must deliver a whole request by a deadline
(`supernet.node.service.http_protocol`), while a response may take as long as it takes.

A real uvicorn server with the node's protocol on a small ASGI app, real TCP connections; the
deadline shortened for the test (`REQUEST_DEADLINE_S`).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import pytest
import uvicorn
from fastapi import FastAPI, Request, Response
from supernet.node.service import http_protocol
from supernet.node.service.http_protocol import DeadlineH11Protocol
from supernet.sdk.devnet.processes import free_port

DEADLINE = 0.5
BIG = 8 * 1024 * 1024  # more than the socket buffers and the transport's high water hold


@pytest.fixture()
async def server(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[int]:
    monkeypatch.setattr(http_protocol, "REQUEST_DEADLINE_S", DEADLINE)
    monkeypatch.setattr(http_protocol, "WRITE_STALL_S", DEADLINE)
    app = FastAPI()

    @app.get("/slow")
    async def slow() -> dict[str, str]:
        await asyncio.sleep(4 * DEADLINE)  # the response takes longer than the request's deadline
        return {"ok": "slow"}

    @app.get("/big")
    async def big() -> Response:
        return Response(b"x" * BIG, media_type="application/octet-stream")

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", http=DeadlineH11Protocol)
    srv = uvicorn.Server(config)
    task = asyncio.create_task(srv.serve())
    for _ in range(200):
        if srv.started:
            break
        await asyncio.sleep(0.02)
    try:
        yield port
    finally:
        srv.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    try:
        while await asyncio.wait_for(reader.read(4096), seconds):
            pass
    except TimeoutError:
        return False
    except ConnectionError:
        return True
    return True


async def test_a_connection_that_never_finishes_its_request_is_closed(server: int) -> None:
    silent = await asyncio.open_connection("127.0.0.1", server)
    partial = await asyncio.open_connection("127.0.0.1", server)
    partial[1].write(b"GET /slow HTTP/1.1\r\nHost: no")
    body = await asyncio.open_connection("127.0.0.1", server)  # headers whole, the body never
    body[1].write(b"POST /echo HTTP/1.1\r\nHost: node\r\nContent-Length: 100\r\n\r\n0123456789")
    closed = await asyncio.gather(*(_closed_within(c[0], 6 * DEADLINE) for c in (silent, partial, body)))
    assert closed == [True, True, True]


async def _response(reader: asyncio.StreamReader, seconds: float) -> tuple[bytes, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), seconds)
    lines = head.split(b"\r\n")
    length = next(int(line.split(b":")[1]) for line in lines if line.startswith(b"content-length"))
    return head, await reader.readexactly(length)


async def test_a_response_may_take_longer_than_the_request_deadline(server: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server)
    writer.write(b"GET /slow HTTP/1.1\r\nHost: node\r\n\r\n")
    head, body = await _response(reader, 10 * DEADLINE)
    assert head.startswith(b"HTTP/1.1 200") and body == b'{"ok":"slow"}'
    # kept alive: the next request is on time, then the connection idles out
    writer.write(b"POST /echo HTTP/1.1\r\nHost: node\r\nContent-Length: 3\r\n\r\nabc")
    head, body = await _response(reader, 5 * DEADLINE)
    assert head.startswith(b"HTTP/1.1 200") and body == b'{"bytes":3}'
    writer.write(b"GET /slow HTTP/1.1\r\n")  # and a third that never finishes: closed
    assert await _closed_within(reader, 6 * DEADLINE)
    writer.close()


async def test_a_slow_reader_that_makes_progress_is_never_cut(server: int) -> None:
    """Writing stays paused for many stall periods while the client reads a little at a time: the
    transport's buffer shrinks between checks, so the response is delivered whole."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
    sock.connect(("127.0.0.1", server))
    sock.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(b"GET /big HTTP/1.1\r\nHost: node\r\n\r\n")
    head, _ = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5), None
    assert head.startswith(b"HTTP/1.1 200")
    got = 0
    while got < BIG:  # about 8 stall periods in all, never a whole one without reading
        chunk = await asyncio.wait_for(reader.read(256 * 1024), 5)
        assert chunk, f"cut after {got} of {BIG} bytes"
        got += len(chunk)
        await asyncio.sleep(DEADLINE / 4)
    writer.close()
