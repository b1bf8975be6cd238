"""A JSON-RPC endpoint in front of a real one, rewriting the answers a test names: the attacker's
code (a public RPC that lies, a hijacked URL) or a chain in a fee spike. Used by the reviews of the
SDK's and the daemons' transaction path (tests/integration/test_review_money_keys.py,
test_review_fee_policy.py, test_review_signing_path.py)."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Forward = Callable[[], dict[str, Any]]
Rewrite = Callable[[dict[str, Any], Forward], dict[str, Any] | None]


def answer(request: dict[str, Any], result: Any) -> dict[str, Any]:
    """The JSON-RPC response to ``request`` with ``result``."""
    return {"jsonrpc": "2.0", "id": request["id"], "result": result}


@contextmanager
def rpc_proxy(upstream: str | list[str], rewrite: Rewrite) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Serve JSON-RPC in front of ``upstream`` (a list: ``upstream[0]``, which a test may move to
    another chain): ``rewrite(request, forward)`` returns the response to give (``forward()``
    fetches the upstream's), or None to forward the request as is. Yields (its URL, every
    request seen)."""
    seen: list[dict[str, Any]] = []
    target = upstream if isinstance(upstream, list) else [upstream]

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_: Any) -> None:
            pass

        def do_POST(self) -> None:
            request = json.loads(self.rfile.read(int(self.headers["content-length"])))
            seen.append(request)

            def forward() -> dict[str, Any]:
                headers = {"content-type": "application/json"}
                fwd = urllib.request.Request(target[0], json.dumps(request).encode(), headers)
                with urllib.request.urlopen(fwd, timeout=30) as resp:
                    got: dict[str, Any] = json.loads(resp.read())
                return got

            body = json.dumps(rewrite(request, forward) or forward()).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
