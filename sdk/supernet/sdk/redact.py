"""Configured URLs kept out of error texts: what ``/healthz`` and the logs show of an error.

Hosted RPCs (and stores behind a gateway) carry an API key in the URL's path or query, or
credentials in its user part; an HTTP client's error names the URL, or its path alone (requests:
``Max retries exceeded with url: /v3/<key>``). `redact` replaces those parts of the given URLs,
wherever they appear in a text, with ``***``; scheme, host and port stay, which is what an
operator needs to tell which endpoint failed. `described` does the same for an error where the
URLs are not known (any URL cut to scheme and host, a bare URL path hidden): the node's commit
errors (`supernet.node.service.batcher`); `redact` is the validator's, over its configured RPC
and store (`supernet.validator.service`).

>>> rpc = "https://rpc.example/v3/0123456789abcdef"
>>> redact(f"POST {rpc} failed", [rpc])
'POST https://rpc.example/*** failed'
>>> redact("Max retries exceeded with url: /v3/0123456789abcdef (refused)", [rpc])
'Max retries exceeded with url: /*** (refused)'
>>> redact("no answer from http://user:hunter2@store:5001", ["http://user:hunter2@store:5001"])
'no answer from http://store:5001'
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, unquote, urlsplit

MARK = "***"
MIN_SECRET_CHARS = 8
"""A path segment or query value this long is taken out wherever it appears, even alone (an API
key named without the rest of its URL); shorter ones (``v3``, ``api``) only within the URL's
whole path or query."""


def shown_url(url: str) -> str:
    """``url`` as it may be shown: scheme, host and port, with ``/***`` where it had more (a path,
    a query); no user or password."""
    parts = urlsplit(url)
    if not parts.netloc:
        return url  # not a URL with a host (an IPC path): nothing of it is a credential
    host = parts.hostname or ""
    if ":" in host:  # IPv6
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:  # a malformed port: keep the host alone
        port = ""
    more = parts.path.strip("/") or parts.query or parts.fragment
    return f"{parts.scheme}://{host}{port}" + (f"/{MARK}" if more else "")


def _fragments(url: str) -> list[tuple[str, str]]:
    """The parts of ``url`` to take out of a text, each with what replaces it."""
    parts = urlsplit(url)
    if not parts.netloc:
        return []
    out = [(url, shown_url(url)), (url.rstrip("/"), shown_url(url))]
    rest = url.split(parts.netloc, 1)[1]  # path, query and fragment as written
    for whole in (rest, parts.path):
        if whole.strip("/?#"):
            out.append((whole, f"/{MARK}"))
    if parts.query:
        out.append((parts.query, MARK))
    pieces = [*parts.path.split("/"), *(v for _, v in parse_qsl(parts.query)), parts.username or ""]
    for piece in pieces:
        for form in {piece, unquote(piece)}:
            if len(form) >= MIN_SECRET_CHARS:
                out.append((form, MARK))
    if parts.password:  # whatever its length
        out.append((f"{parts.username or ''}:{parts.password}@", ""))
        out.append((parts.password, MARK))
    return out


def redact(text: str, urls: Iterable[str | None]) -> str:
    """``text`` with the path, query and credentials of each of ``urls`` replaced (`shown_url`),
    wherever they appear: the whole URL, its path and query, and each long enough path segment,
    query value or user name alone. The longest first, so a part of one never splits another."""
    fragments = [f for url in urls if url for f in _fragments(url)]
    for fragment, replacement in sorted(fragments, key=lambda f: len(f[0]), reverse=True):
        if fragment and fragment != replacement:
            text = text.replace(fragment, replacement)
    return text


_URL = re.compile(r"\b([a-z][a-z0-9+.-]*://)(?:[^/\s@]*@)?([^/\s?#'\"]+)[^\s'\"]*", re.IGNORECASE)
_URL_PATH = re.compile(r"(\burl: )[^\s'\"]+", re.IGNORECASE)  # requests: "... with url: /v3/<key>"


def described(exc: BaseException, limit: int = 400) -> str:
    """``Type: message`` of an error, for logs and health endpoints: every URL cut to scheme and
    host (no user, path or query) and a bare URL path hidden, since a hosted RPC's path or query
    holds its API key; at most ``limit`` characters.

    >>> described(ConnectionError("POST https://rpc.example/v3/0123456789abcdef failed"))
    'ConnectionError: POST https://rpc.example failed'
    """
    text = _URL.sub(r"\1\2", f"{type(exc).__name__}: {exc}")
    text = _URL_PATH.sub(r"\1(path hidden)", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."
