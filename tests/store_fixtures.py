"""Content-store fixtures (loaded as a plugin by tests/conftest.py).

``store_backend`` runs a test once against each backend of the one ``StoreClient``: the
embedded store in process (httpx ASGI transport) and served over real HTTP by uvicorn.
``store_url`` and ``store_client`` give other components a ready store.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from supernet.sdk.store import StoreClient
from supernet.sdk.store.embedded import EmbeddedStore, create_app, serve_in_thread

BACKENDS = ("in-process", "served")


@dataclass
class StoreBackend:
    """One embedded store directory and the clients a test opens on it."""

    kind: str
    path: Path
    store: EmbeddedStore = field(init=False)
    _stop: Callable[[], None] | None = None
    _url: str = ""
    _app: Any = None
    _clients: list[StoreClient] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._start()

    def _start(self) -> None:
        self.store = EmbeddedStore(self.path, fsync=False)
        if self.kind == "in-process":
            self._app = create_app(self.store)
        else:
            self._url, self._stop = serve_in_thread(self.store)

    def client(self, **options: Any) -> StoreClient:
        """Open a client on this backend (closed at teardown)."""
        if self.kind == "in-process":
            client = StoreClient(
                "http://embedded-store", transport=httpx.ASGITransport(app=self._app), **options
            )
        else:
            client = StoreClient(self._url, **options)
        self._clients.append(client)
        return client

    async def restart(self) -> StoreClient:
        """Stop the server, open a fresh ``EmbeddedStore`` over the same directory, return a client."""
        await self.close()
        self._start()
        return self.client()

    async def close(self) -> None:
        for client in self._clients:
            await client.aclose()
        self._clients.clear()
        if self._stop is not None:
            self._stop()
            self._stop = None


@pytest.fixture(params=BACKENDS)
async def store_backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreBackend]:
    """An embedded store reached in process or over HTTP (the test runs once per backend)."""
    backend = StoreBackend(request.param, tmp_path / "store")
    try:
        yield backend
    finally:
        await backend.close()


@pytest.fixture
def store_url(tmp_path: Path) -> Iterator[str]:
    """URL of an embedded store served on 127.0.0.1 for the test (for SUPERNET_STORE_URL)."""
    url, stop = serve_in_thread(tmp_path / "store")
    try:
        yield url
    finally:
        stop()


@pytest.fixture
async def store_client(tmp_path: Path) -> AsyncIterator[StoreClient]:
    """A ``StoreClient`` on a fresh in-process embedded store."""
    app = create_app(EmbeddedStore(tmp_path / "store"))
    async with StoreClient("http://embedded-store", transport=httpx.ASGITransport(app=app)) as client:
        yield client
