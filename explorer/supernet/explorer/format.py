"""How amounts, times and hashes read on the pages (Jinja2 filters).

>>> eth(10**18), eth(2 * 10**15), eth(1_000_000_000), eth(0)
('1 ETH', '0.002 ETH', '1 gwei', '0 ETH')
>>> ago(100, now=160)
'1 min ago'
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal

ETHER = 10**18
GWEI = 10**9


def eth(wei: int | None) -> str:
    """Wei for people: ETH (up to 6 decimals), gwei below 0.000001 ETH (task fees, prices), wei below
    0.001 gwei."""
    if not wei:
        return "0 ETH"
    if abs(wei) < GWEI // 1000:
        return f"{wei:,} wei"
    if abs(wei) < ETHER // 10**6:
        g = Decimal(wei) / GWEI
        return f"{g.normalize():f} gwei" if g == g.to_integral() else f"{g:,.3f} gwei"
    value = (Decimal(wei) / ETHER).quantize(Decimal("0.000001")).normalize()
    return f"{value:f} ETH"


def utc(ts: int | None) -> str:
    """An absolute UTC time."""
    if ts is None:
        return "—"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def ago(ts: int | None, now: float | None = None) -> str:
    """A relative time ("12 s ago", "3 min ago", "in 20 s")."""
    if ts is None:
        return "—"
    delta = int((time.time() if now is None else now) - ts)
    future, delta = delta < 0, abs(delta)
    if delta < 60:
        text = f"{delta} s"
    elif delta < 3600:
        text = f"{delta // 60} min"
    elif delta < 86400:
        text = f"{delta // 3600} h"
    else:
        text = f"{delta // 86400} d"
    return f"in {text}" if future else f"{text} ago"


def short(value: str | None, keep: int = 10) -> str:
    """A long hex or CID shortened for tables (the full value stays in the link and title)."""
    if not value:
        return "—"
    return value if len(value) <= keep + 6 else f"{value[:keep]}…{value[-4:]}"
