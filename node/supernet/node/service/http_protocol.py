"""The node's HTTP/1.1 connections: uvicorn's h11 protocol, bounded so nobody holds them for free.

uvicorn times a connection out only between requests (``timeout_keep_alive``, armed once a response
went out), so a client that opens a connection and never finishes a request (half a request line,
headers a byte a minute, or nothing at all) held it, and one of the process's file descriptors,
for as long as it liked, with no signature and no fee: enough of them and the node could neither
take tasks nor reach its RPC, store or database (a review, `tests/unit/test_review_node_hardening2.py`).
Three rules, each found by a review (`tests/unit/test_review_session_changes13.py` the later two):

* a whole request (headers and body) within `REQUEST_DEADLINE_S` of opening or of the previous
  response; what the response then takes (a stream of tokens) is not bounded here
  (``[api] max_stream_s`` is);
* a response the client does not read: writing paused (the client's window and the transport's
  buffer full) for `WRITE_STALL_S` with nothing taken aborts the connection (a peer that pipelined
  requests and read nothing held a handler in uvicorn's ``drain()`` for good), as does a closing
  connection whose client takes nothing of what is left to flush;
* at most ``max_connections`` connections: uvicorn's ``limit_concurrency`` counts idle ones too, so
  a peer holding that many idle sockets (reopened as the deadline drops them) made every request a
  503. A new connection over the limit evicts the *least recently active* one of those that are
  not being answered (no request yet, half a request or half a body, or the last one answered)
  instead, so such sockets cost an attacker its own connections, never a user's request (a
  request still receiving its body counted as in progress, and half-sent bodies did the same:
  tests/unit/test_review_session_changes14.py). With none idle, it evicts the connections whose
  clients take their responses slowest, below `MIN_DRAIN_BPS` over at least `HELD_BACK_S` of
  paused writing (the client reads slower than the node writes): a peer that pipelined big
  responses on every connection and read each a trickle at a time, never stalled and never idle,
  held them all, and every other request was a 503 (tests/unit/test_review_node_api4.py). The rate,
  not the time paused, decides: a big response goes into the transport in one write, so an honest
  download on a link slower than the node is paused from its start, and evicting the response
  paused longest let a burst of new connections cut it (tests/unit/test_review_session_changes21.py).
  A client taking its response at `MIN_DRAIN_BPS` or more (a download at any usable link's pace,
  a stream of tokens, which never pauses) is never evicted; a new connection finding none to evict
  is refused (503). (A cap per source address was not the fix: it refuses users behind the
  attacker's NAT and costs an IPv6 attacker nothing.)
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from typing import Any, ClassVar

from uvicorn.protocols.http.h11_impl import H11Protocol

try:  # the socket's unsent queue (`_unsent`): POSIX only
    import fcntl
    import termios

    OUTQ: int | None = getattr(termios, "TIOCOUTQ", None)
except ImportError:  # pragma: no cover - not on POSIX
    OUTQ = None

REQUEST_DEADLINE_S = 10.0
"""How long a connection has to deliver a whole request: far more than any client needs for the
API's bodies (`[api] max_body_bytes`, 64 KiB by default)."""

HELD_BACK_S = 1.0
"""How long writing must have been paused on a client before its rate is judged (`MIN_DRAIN_BPS`):
long enough to measure a rate, short enough that a silent burst is evictable within a second."""

MIN_DRAIN_BPS = 16 * 1024
"""The rate (bytes a second) below which a client holding its response back may be evicted by a
new connection over the limit: far below any link a user or validator reads traces over (a
384 KiB trace in 24 s), and it makes holding the node's `max_connections` cost an attacker that
much download per connection (8 MiB/s for the default 512)."""

WRITE_STALL_S = 10.0
"""How long a response may wait on a client that takes none of it (writing paused and the
transport's buffer not shrinking) before the connection is aborted: a slow reader that makes
progress is never cut."""


class DeadlineH11Protocol(H11Protocol):
    """`H11Protocol` with the rules of the module; `bounded` makes one for a connection limit."""

    max_connections: ClassVar[int | None] = None
    _deadline: asyncio.TimerHandle | None = None
    _stall: asyncio.TimerHandle | None = None
    _active_at = 0.0  # when the client last sent anything
    _paused_at: float | None = None  # since when the client holds its response back (writing paused)
    _paused_unsent = 0  # what was not taken by the client then

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._active_at = time.monotonic()
        self._arm()
        if self.max_connections is not None:
            self._evict_idle(self.max_connections)

    def on_response_complete(self) -> None:
        self._arm()  # before the next (pipelined) request can start: it must be in by the deadline
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._deadline, self._stall):
            if timer is not None:
                timer.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._active_at = time.monotonic()
        super().data_received(data)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._paused_at is None:
            self._paused_at, self._paused_unsent = time.monotonic(), self._unsent()
        if self._stall is None:
            self._watch_stall(self._unsent())

    def _watch_stall(self, unsent: int) -> None:
        self._stall = self.loop.call_later(WRITE_STALL_S, self._stalled, unsent)

    def _stalled(self, unsent: int) -> None:
        """Still paused (or closing) after `WRITE_STALL_S`: aborted unless the client took some."""
        now = self._unsent()
        if now < unsent:
            self._watch_stall(now)
        else:
            self.transport.abort()

    def _unsent(self) -> int:
        """Bytes not yet taken by the client: the transport's buffer and, where the system says
        (Linux: ``TIOCOUTQ``), the socket's unsent queue. The transport's buffer alone shrinks only
        when the kernel's send buffer empties by a third: a client reading slowly but steadily
        looked stalled for tens of seconds."""
        size = self.transport.get_write_buffer_size()
        sock = self.transport.get_extra_info("socket")
        if sock is not None and OUTQ is not None:
            with contextlib.suppress(OSError, ValueError):
                size += struct.unpack("i", fcntl.ioctl(sock.fileno(), OUTQ, b"\0" * 4))[0]
        return size

    def resume_writing(self) -> None:
        self._paused_at = None
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None
        super().resume_writing()

    def _arm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self.loop.call_later(REQUEST_DEADLINE_S, self._expired, self.cycle)

    def _expired(self, armed_with: Any) -> None:
        """No request since arming (the cycle is the one of then), or one whose body is still
        coming: the connection goes (aborted if it was already closing with unread data)."""
        if self.transport.is_closing():  # still flushing to a client that may take nothing
            if self._stall is None:
                self._watch_stall(self._unsent())
            return
        cycle = self.cycle
        if cycle is armed_with or (cycle is not None and _receiving(cycle)):
            self.transport.close()

    def _idle(self) -> bool:
        """Not being answered: no request yet (or half of one), half a body, or the last answered."""
        cycle = self.cycle
        return cycle is None or cycle.response_complete or _receiving(cycle)

    def _drain_rate(self, now: float) -> float | None:
        """Bytes a second the client took of its response while writing was paused, once paused for
        `HELD_BACK_S` (None: not paused, or not long enough to judge)."""
        if self._paused_at is None or now - self._paused_at < HELD_BACK_S:
            return None
        return max(0, self._paused_unsent - self._unsent()) / (now - self._paused_at)

    def _evict_idle(self, limit: int) -> None:
        """Over ``limit`` connections: abort the least recently active connections not being
        answered, then those whose clients take their responses slowest (below `MIN_DRAIN_BPS`),
        never this new one, until within."""
        excess = len(self.connections) - limit
        if excess <= 0:
            return
        others = [c for c in self.connections if c is not self and isinstance(c, DeadlineH11Protocol)]
        idle = sorted((c for c in others if c._idle()), key=lambda c: c._active_at)
        now = time.monotonic()
        rates = [(rate, c) for c in others if not c._idle() and (rate := c._drain_rate(now)) is not None]
        slow = [c for rate, c in sorted(rates, key=lambda rc: rc[0]) if rate < MIN_DRAIN_BPS]
        for victim in (idle + slow)[:excess]:
            self.connections.discard(victim)  # counted out now: the abort's callback comes later
            victim.transport.abort()


def _receiving(cycle: Any) -> bool:
    """A request whose body is still coming and not yet answered."""
    return bool(cycle.more_body and not cycle.response_started)


def bounded(max_connections: int) -> type[DeadlineH11Protocol]:
    """The protocol class of a server holding at most ``max_connections`` connections."""
    return type("BoundedDeadlineH11Protocol", (DeadlineH11Protocol,), {"max_connections": max_connections})
