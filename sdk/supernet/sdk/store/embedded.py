"""The embedded content store: an on-disk blockstore served over the Kubo RPC subset.

For the devnet and tests; production points the same ``StoreClient`` at a Kubo daemon.
``serve_in_thread`` runs it on 127.0.0.1 in a background thread (real HTTP), and
``in_process_client`` talks to it through httpx's ASGI transport (no socket at all).

>>> import tempfile
>>> from supernet.sdk.store.embedded import serve_in_thread
>>> url, stop = serve_in_thread(tempfile.mkdtemp())
>>> url.startswith("http://127.0.0.1:")
True
>>> stop()
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import uvicorn
from supernet.sdk.store.blockstore import EmbeddedStore
from supernet.sdk.store.client import StoreClient
from supernet.sdk.store.errors import StoreUnavailableError
from supernet.sdk.store.server import DEFAULT_MAX_REQUEST_SIZE, allowed_hosts, create_app

__all__ = ["EmbeddedStore", "create_app", "in_process_client", "serve_in_thread"]

StorePath = str | os.PathLike[str] | EmbeddedStore


def _as_store(store: StorePath) -> EmbeddedStore:
    return store if isinstance(store, EmbeddedStore) else EmbeddedStore(store)


def in_process_client(
    store: StorePath, *, max_request_size: int = DEFAULT_MAX_REQUEST_SIZE, **client_options: Any
) -> StoreClient:
    """Return a ``StoreClient`` wired to an embedded store in this process (ASGI, no socket).

    Args:
        store: The store, or its directory.
        max_request_size: The server's request body limit.
        **client_options: Passed to ``StoreClient`` (``max_block_size``, ``concurrency`` ...).
    """
    app = create_app(_as_store(store), max_request_size=max_request_size)
    transport = httpx.ASGITransport(app=app)
    return StoreClient("http://embedded-store", transport=transport, **client_options)


def serve_in_thread(
    store: StorePath,
    port: int = 0,
    *,
    max_request_size: int = DEFAULT_MAX_REQUEST_SIZE,
    startup_timeout: float = 10.0,
) -> tuple[str, Callable[[], None]]:
    """Serve an embedded store over HTTP on 127.0.0.1 from a daemon thread.

    Args:
        store: The store, or its directory.
        port: TCP port; 0 picks a free one.
        max_request_size: The server's request body limit.
        startup_timeout: Seconds to wait for the server to accept connections.

    Returns:
        ``(url, stop)``: the base URL for ``StoreClient`` and a function that shuts the
        server down and waits for its thread (calling it twice is harmless).

    Raises:
        StoreUnavailableError: If the server does not start in time.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    host, bound_port = sock.getsockname()
    app = create_app(_as_store(store), max_request_size=max_request_size, hosts=allowed_hosts(host))
    config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"store-{bound_port}", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:  # uvicorn exposes no startup event, only this flag
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise StoreUnavailableError(f"embedded store on 127.0.0.1:{bound_port} did not start")
        time.sleep(0.005)

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()

    return f"http://{host}:{bound_port}", stop
