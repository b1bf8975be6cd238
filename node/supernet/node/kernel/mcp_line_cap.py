"""Runs a stdio MCP server and relays its stdout, cutting the session at a line past a byte cap.

``python mcp_line_cap.py MAX_BYTES -- COMMAND [ARGS...]`` (`MCPConnection` starts stdio servers
through it). The MCP client reads a stdio server's JSON-RPC messages a line at a time and holds a
whole line before anything can check its size: one huge answer (a compromised server, or an
honest fetch-like tool on a user's input) was held whole in the node's memory, and a line with no
end exhausted it. This relay sits between the two and stops the server at the first line longer
than ``MAX_BYTES``, so the node never holds more than that of one message; the client then sees
the session end (the call fails as the server's unavailability, the next call reconnects).

Standard library only, run by path with ``-I`` (the server's ``PYTHON*`` environment is the
server's): it must start with nothing of the node imported. The server inherits its stdin (the
client's requests) and stderr; it runs in the relay's process group, which the MCP client ends as
a whole when it closes the session, and which the relay itself kills when it cuts one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import IO, Protocol, cast

READ_SIZE = 1 << 16


class _Chunks(Protocol):
    def read1(self, size: int = -1, /) -> bytes: ...


def relay(source: _Chunks, sink: IO[bytes], limit: int) -> bool:
    """Copy ``source`` to ``sink`` until the end, False at the first line over ``limit`` bytes
    (nothing of that line past the limit is copied)."""
    line = 0  # bytes of the current line so far
    while chunk := source.read1(READ_SIZE):
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            if line + end - start > limit:
                return False
            line, start = 0, end + 1
        line += len(chunk) - start
        if line > limit:
            return False
        sink.write(chunk)
        sink.flush()
    return True


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: mcp_line_cap.py MAX_BYTES -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    limit, command = int(argv[0]), argv[2:]
    server = subprocess.Popen(command, stdout=subprocess.PIPE)
    assert server.stdout is not None
    if relay(cast(_Chunks, server.stdout), sys.stdout.buffer, limit):
        return server.wait()
    print(f"MCP server {command[0]}: a message over {limit} bytes, session ended", file=sys.stderr)
    sys.stdout.close()  # the client sees the session end at once
    if os.getpgrp() == os.getpid():
        # the whole process group (the MCP client starts the relay as its leader): the server and
        # any process it started, with the relay; killing the server alone left its children
        # running, and the client kills the group only while its leader is alive
        os.killpg(os.getpgrp(), signal.SIGKILL)
    server.kill()  # started otherwise (by hand): the group is not the relay's to end
    server.wait()
    return 3


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
