"""Reading documents (manifests, traces, evidence) from the content store, synchronously.

The explorer's indexer thread and its page handlers are synchronous; reads go to one SDK
`StoreClient` (which re-hashes every block against its CID) running on a private event-loop
thread, so connections are reused (a new client per read costs ~70 ms of TLS set-up alone), and
each read has a short timeout: a slow or missing store makes a page say "not available", never hang.

>>> ContentReader("http://127.0.0.1:5001").dag("bafy…")   # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any

from supernet.sdk.store import StoreClient
from supernet.sdk.store.errors import CIDMismatchError, InvalidBlockError, InvalidCIDError, StoreError


class ContentUnavailable(Exception):
    """The document could not be read (missing, store down, bad CID); ``args[0]`` says why.

    ``permanent`` is True when retrying cannot help (the CID itself is malformed or lies).
    """

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class ContentReader:
    """Reads dag-cbor documents by CID.

    Args:
        url: the store's RPC URL (Kubo or the embedded store).
        timeout: seconds per read.
    """

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url
        self.timeout = timeout
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._store: StoreClient | None = None

    def _start(self) -> tuple[asyncio.AbstractEventLoop, StoreClient]:
        with self._lock:
            if self._loop is None or self._store is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="content-reader", daemon=True).start()
                self._store = StoreClient(self.url, timeout=self.timeout, offline=True)
                self._loop = loop
            return self._loop, self._store

    def dag(self, cid: str) -> Any:
        """The decoded document at ``cid``.

        Raises:
            ContentUnavailable: the store has no such block, cannot be reached, or the CID is invalid.
        """
        loop, store = self._start()
        future = asyncio.run_coroutine_threadsafe(store.get_dag(cid), loop)
        try:
            return future.result(self.timeout + 1)
        except (InvalidCIDError, CIDMismatchError, InvalidBlockError) as exc:
            raise ContentUnavailable(f"{type(exc).__name__}: {exc}", permanent=True) from exc
        except StoreError as exc:
            raise ContentUnavailable(f"{type(exc).__name__}: {exc}") from exc
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise ContentUnavailable(f"the store did not answer within {self.timeout:.0f} s") from None
        except ValueError as exc:  # a malformed CID string
            raise ContentUnavailable(f"invalid CID: {exc}", permanent=True) from exc
