"""How amounts, times and hashes read on the pages (Jinja2 filters).

>>> eth(10**18), eth(2 * 10**15), eth(1_000_000_000), eth(0)
('1 ETH', '0.002 ETH', '1 gwei', '0 ETH')
>>> ago(100, now=160)
'1 min ago'
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

ETHER = 10**18
GWEI = 10**9


def eth(wei: int | None) -> str:
    """Wei for people: ETH (up to 6 decimals), gwei below 0.000001 ETH (task fees, prices), wei below
    0.001 gwei. Integer arithmetic throughout (rounded half to even), so every amount renders,
    however large: a node's price or a signed ``maxFee`` is any uint256, a running total more.

    >>> eth(2**256 - 1)
    '115792089237316195423570985008687907853269984665640564039457.584008 ETH'
    """
    if not wei:
        return "0 ETH"
    sign, wei = ("-" if wei < 0 else ""), abs(wei)
    if wei < GWEI // 1000:
        return f"{sign}{wei:,} wei"
    if wei < ETHER // 10**6:
        whole, frac = _rounded(wei, GWEI, 3)
        if wei % GWEI == 0:
            return f"{sign}{whole} gwei"
        return f"{sign}{whole:,}.{frac:03d} gwei"
    whole, frac = _rounded(wei, ETHER, 6)
    digits = f"{frac:06d}".rstrip("0")
    return f"{sign}{whole}.{digits} ETH" if digits else f"{sign}{whole} ETH"


def _rounded(wei: int, unit: int, places: int) -> tuple[int, int]:
    """``wei / unit`` rounded half to even at ``places`` decimals: (whole units, the decimals as an
    integer of ``places`` digits)."""
    step = unit // 10**places
    q, r = divmod(wei, step)
    if 2 * r > step or (2 * r == step and q % 2):
        q += 1
    return divmod(q, 10**places)


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
