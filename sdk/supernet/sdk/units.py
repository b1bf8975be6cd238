"""Ether amounts as people type and read them: ``0.01ether``, ``100gwei``, ``5000`` (wei).

Parsing follows `cast`'s unit suffixes (``wei``, ``gwei``, ``ether``/``eth``); the conversion is
eth-utils' (exact decimal arithmetic, no floats).

>>> parse_amount("0.01ether")
10000000000000000
>>> format_amount(1_500_000_000)
'1.5 gwei'
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from eth_utils import from_wei, to_wei

_AMOUNT = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(wei|gwei|ether|eth)?\s*$", re.IGNORECASE)
_UNITS = {"wei": "wei", "gwei": "gwei", "ether": "ether", "eth": "ether"}


class AmountError(ValueError):
    """Text that is not an amount of ether."""


def parse_amount(text: str) -> int:
    """Wei in ``text``: a number with an optional unit (``wei`` when none).

    Raises:
        AmountError: not a non-negative number with a known unit, or a fraction of a wei.
    """
    m = _AMOUNT.match(text)
    if m is None:
        raise AmountError(f"{text!r} is not an amount: write e.g. 0.01ether, 100gwei or 5000 (wei)")
    number, unit = m.group(1), _UNITS[(m.group(2) or "wei").lower()]
    try:
        value = Decimal(number)
    except InvalidOperation:  # the pattern admits only decimals; kept for safety
        raise AmountError(f"{text!r} is not a number") from None
    try:
        wei = to_wei(value, unit)
    except ValueError as exc:  # beyond 2**256: no amount the chain can hold
        raise AmountError(f"{text!r} is too large: {exc}") from None
    if Decimal(wei) != value * Decimal(10) ** {"wei": 0, "gwei": 9, "ether": 18}[unit]:
        raise AmountError(f"{text!r} is not a whole number of wei")
    return int(wei)


def format_amount(wei: int) -> str:
    """The amount in the largest unit that keeps it readable (ETH from 0.001 ETH, else gwei, else wei)."""
    if wei >= 10**15 or wei == 0:
        return f"{_trim(from_wei(wei, 'ether'))} ETH"
    if wei >= 10**6:
        return f"{_trim(from_wei(wei, 'gwei'))} gwei"
    return f"{wei} wei"


def _trim(d: int | Decimal) -> str:
    text = f"{Decimal(d):f}"
    return text.rstrip("0").rstrip(".") if "." in text else text
