"""Read Kubo RPC answers: turn errors into the store's typed exceptions, check successes.

Kubo answers a failed call with HTTP 500 (400 for bad arguments) and a JSON body
``{"Message": ..., "Code": ..., "Type": "error"}``; the embedded server does the same and
adds 413 for size limits. Kubo has no error codes for "not found" or "pinned", so those
are recognised by its wording, which the embedded server reuses.

>>> from supernet.sdk.store.rpc_errors import error_from_response
>>> body = '{"Message": "block was not found locally (offline): ipld: could not find bafk", "Code": 0}'
>>> type(error_from_response(500, body, context="block/get")).__name__
'BlockNotFoundError'
"""

from __future__ import annotations

import json
from typing import Any

from supernet.sdk.store.errors import (
    BlockNotFoundError,
    BlockTooLargeError,
    InvalidBlockError,
    InvalidCIDError,
    PinError,
    RequestTooLargeError,
    StoreError,
    StoreUnavailableError,
)


def error_from_response(status: int, body: str, *, context: str, url: str = "") -> StoreError:
    """Build the exception for an RPC error answer.

    Args:
        status: HTTP status of the answer (200 for errors inside a streamed answer).
        body: The answer's text: Kubo's JSON error, or a bare message.
        context: The RPC path (and argument) the error belongs to, for the message.
        url: Base URL of the store, for messages about a wrong address.

    Returns:
        The most specific ``StoreError`` subclass that fits; the caller raises it.
    """
    message = _message(body)
    text = f"{context}: {message}"
    lower = message.lower()
    if status in (404, 405):
        return StoreUnavailableError(
            f"{context}: {url or 'the store'} does not serve this Kubo RPC endpoint (HTTP {status}); "
            "point it at the RPC API (port 5001), not at a gateway"
        )
    if status == 413 or "over 1mib" in lower or "block is over" in lower:
        return RequestTooLargeError(text) if "request body" in lower else BlockTooLargeError(text)
    if "not found" in lower or "could not find" in lower:
        return BlockNotFoundError(text)
    if "pinned" in lower:
        return PinError(text)
    if status == 400:
        return InvalidCIDError(text) if "cid" in lower and "codec" not in lower else InvalidBlockError(text)
    return StoreError(f"{context} failed (HTTP {status}): {message}")


def _message(body: str) -> str:
    try:
        parsed = json.loads(body)
    except ValueError:
        return body.strip()[:500] or "(empty answer)"
    if isinstance(parsed, dict) and isinstance(parsed.get("Message"), str):
        return parsed["Message"]
    return body.strip()[:500]


def parse_answer(body: str, *, context: str, url: str, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """Parse a successful RPC answer: a JSON object holding the ``required`` fields.

    Raises:
        StoreUnavailableError: If the answer is not such an object, i.e. the URL does not
            lead to a Kubo-compatible RPC API.
    """
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or any(key not in answer for key in required):
        raise StoreUnavailableError(
            f"{context}: {url} answered {body[:120]!r}, not a Kubo RPC answer with {', '.join(required)}"
        )
    return answer
