"""Search: one box that takes a task id, batch number, address, CID, challenge or transaction.

`classify` only looks at the shape of the query (no database): a malformed query is refused
with a sentence saying what is accepted; `resolve` then finds it in the index.

>>> classify("12"), classify("challenge 3")[0], classify("0x" + "ab" * 20)[0]
(('batch', '12'), 'challenge', 'address')
>>> classify("hello")
Traceback (most recent call last):
...
supernet.explorer.search.BadQuery: not a task id, batch number, address, CID or challenge: 'hello'
"""

from __future__ import annotations

import re

from multiformats import CID
from sqlalchemy.orm import Session
from supernet.explorer import queries
from supernet.explorer.db.models import Batch, Challenge

_HEX32 = re.compile(r"0x[0-9a-fA-F]{64}")
_ADDR = re.compile(r"0x[0-9a-fA-F]{40}")
_NUM = re.compile(r"(?:batch\s*#?\s*|#)?(\d{1,18})", re.IGNORECASE)
_CHALLENGE = re.compile(r"(?:challenge|c)\s*#?\s*(\d{1,18})", re.IGNORECASE)

ACCEPTED = "a task id, batch number, address, CID or challenge"


class BadQuery(ValueError):
    """The query is not any kind of thing the explorer can look up."""


def classify(query: str) -> tuple[str, str]:
    """``(kind, value)`` with kind one of hash, address, batch, challenge, cid.

    Raises:
        BadQuery: the query has none of these shapes (or is empty / too long).
    """
    q = query.strip()
    if not q or len(q) > 200:
        raise BadQuery(f"enter {ACCEPTED}")
    if _HEX32.fullmatch(q):
        return "hash", q.lower()
    if _ADDR.fullmatch(q):
        return "address", q
    if m := _CHALLENGE.fullmatch(q):
        return "challenge", m.group(1)
    if m := _NUM.fullmatch(q):
        return "batch", m.group(1)
    try:
        return "cid", str(CID.decode(q))
    except Exception:  # whatever the CID parser raises (a lone multibase letter: IndexError)
        raise BadQuery(f"not {ACCEPTED}: {q!r}") from None


def resolve(s: Session, query: str) -> tuple[str, str] | None:
    """``(page kind, id)`` of what the query names in the index (None: nothing indexed matches).

    Raises:
        BadQuery: see `classify`.
    """
    kind, value = classify(query)
    if kind == "hash":
        return queries.find_hash(s, value)
    if kind == "address":
        return "address", value
    if kind == "batch":
        return ("batch", value) if s.get(Batch, int(value)) is not None else None
    if kind == "challenge":
        return ("challenge", value) if s.get(Challenge, int(value)) is not None else None
    return queries.find_cid(s, value)
