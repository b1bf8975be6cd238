"""The node's HTTP/1.1 connections: uvicorn's h11 protocol with a deadline on each request.

uvicorn times a connection out only between requests (``timeout_keep_alive``, armed once a response
went out), so a client that opens a connection and never finishes a request (half a request line,
headers a byte a minute, or nothing at all) holds it, and one of the process's file descriptors,
for as long as it likes, with no signature and no fee: enough of them and the node can neither take
tasks nor reach its RPC, store or database (a review, `tests/unit/test_review_node_hardening2.py`).
So each connection must deliver a whole request (headers and body) within `REQUEST_DEADLINE_S`
of opening or of its previous response; what the response then takes (a stream of tokens) is not
bounded here (`[api] max_stream_s` is).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

REQUEST_DEADLINE_S = 10.0
"""How long a connection has to deliver a whole request: far more than any client needs for the
API's bodies (`[api] max_body_bytes`, 64 KiB by default)."""


class DeadlineH11Protocol(H11Protocol):
    """`H11Protocol` that closes a connection whose next request is not all in by its deadline."""

    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_response_complete(self) -> None:
        self._arm()  # before the next (pipelined) request can start: it must be in by the deadline
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self.loop.call_later(REQUEST_DEADLINE_S, self._expired, self.cycle)

    def _expired(self, armed_with: Any) -> None:
        """No request since arming (the cycle is the one of then), or one whose body is still
        coming: the connection goes."""
        cycle = self.cycle
        if self.transport.is_closing():
            return
        if cycle is armed_with or (cycle is not None and cycle.more_body and not cycle.response_started):
            self.transport.close()
