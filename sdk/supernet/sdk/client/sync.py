"""`SyncClient`: the `Client` for code that is not async (scripts, notebooks, web handlers).

It runs one `Client` on a private event loop in a background thread and blocks on each call, as
openai-python's and web3.py's sync clients sit beside their async ones. Streaming is a plain
iterator of text pieces.

>>> with SyncClient.connect("http://127.0.0.1:8545", "deployment.json", key) as client:  # doctest: +SKIP
...     for piece in client.stream("Tell me a story."):
...         print(piece, end="")
...     print(client.verify(client.last_result.task_id).ok)
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, Self, TypeVar

from eth_account.signers.local import LocalAccount
from supernet.sdk.chain import Deployment
from supernet.sdk.client.client import Client
from supernet.sdk.client.types import NodeChoice, RefundClaimed, TaskResult
from supernet.sdk.client.verify import VerificationReport
from supernet.sdk.node_api import NodeInfo, ReceiptPublic, TaskPublic

T = TypeVar("T")
_DONE = object()


class SyncClient:
    """Blocking wrapper of `Client` (same arguments, same errors)."""

    def __init__(self, client_factory: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="supernet-client", daemon=True)
        self._thread.start()
        self._client: Client = self._call(_make(client_factory))
        self.last_result: TaskResult | None = None

    @classmethod
    def connect(
        cls, rpc_url: str, deployment: str | Path | Deployment, private_key: str | LocalAccount, **kwargs: Any
    ) -> SyncClient:
        """Like `Client.connect`."""
        return cls(lambda: Client.connect(rpc_url, deployment, private_key, **kwargs))

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def submit_task(self, task_input: str | dict[str, Any], **kwargs: Any) -> TaskResult:
        """`Client.submit_task`."""
        self.last_result = self._call(self._client.submit_task(task_input, **kwargs))
        return self.last_result

    def stream(self, task_input: str | dict[str, Any], **kwargs: Any) -> Iterator[str]:
        """The answer's text pieces as they are generated; then ``last_result`` holds the task."""
        stream = self._client.stream(task_input, **kwargs)
        pieces = stream.__aiter__()

        async def next_piece() -> Any:
            try:
                return await pieces.__anext__()
            except StopAsyncIteration:
                return _DONE

        while (piece := self._call(next_piece())) is not _DONE:
            yield piece
        self.last_result = stream.result

    def verify(self, task_id: str, **kwargs: Any) -> VerificationReport:
        """`Client.verify`."""
        return self._call(self._client.verify(task_id, **kwargs))

    def task(self, task_id: str, node_url: str | None = None) -> TaskPublic:
        """`Client.task`."""
        return self._call(self._client.task(task_id, node_url))

    def receipt(self, task_id: str, node_url: str | None = None, **kwargs: Any) -> ReceiptPublic:
        """`Client.receipt`."""
        return self._call(self._client.receipt(task_id, node_url, **kwargs))

    def claim_refunds(self, from_block: int | None = None) -> list[RefundClaimed]:
        """`Client.claim_refunds`."""
        return self._call(self._client.claim_refunds(from_block))

    def node_info(self, url: str) -> NodeInfo:
        """`Client.node_info`."""
        return self._call(self._client.node_info(url))

    def discover(self, model: str | None = None, **kwargs: Any) -> list[NodeChoice]:
        """`Client.discover`."""
        return self._call(self._client.discover(model, **kwargs))

    def close(self) -> None:
        """Close the client and stop its loop."""
        if self._loop.is_running():
            self._call(self._client.aclose())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _make(factory: Any) -> Client:
    """Build the client on the loop's thread (its httpx client belongs to that loop)."""
    return factory()
