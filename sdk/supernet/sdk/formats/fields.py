"""Strict readers for wire documents: each names the field it rejects.

Formats (`supernet.sdk.formats`) are read with these so that a document either has exactly the
fields its format defines, with the types it defines, or is refused with a `FormatError` whose
message gives the path (``events[3].params.seed``). There are no alternate field names.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from multiformats import CID
from supernet.sdk.store.cids import canonical_cid, link

T = TypeVar("T")

INT64_MIN, UINT64_MAX = -(2**63), 2**64 - 1
"""dag-cbor integers: what a document may hold."""


class FormatError(ValueError):
    """A document is not of its format (the message names the field)."""


def record(
    value: Any, path: str, required: tuple[str, ...], optional: tuple[str, ...] = ()
) -> Mapping[str, Any]:
    """``value`` as an object with every ``required`` field and no field outside both lists."""
    if not isinstance(value, Mapping):
        raise FormatError(f"{path or 'document'} must be an object")
    missing = [k for k in required if k not in value]
    if missing:
        raise FormatError(f"{_at(path, missing[0])} is missing")
    unknown = sorted(str(k) for k in value if k not in required and k not in optional)
    if unknown:
        raise FormatError(f"{_at(path, unknown[0])} is not a field of this format")
    return value


def _at(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def string(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise FormatError(f"{path} must be a string")
    return value


def integer(value: Any, path: str, lo: int = INT64_MIN, hi: int = UINT64_MAX) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise FormatError(f"{path} must be an integer")
    if not lo <= value <= hi:
        raise FormatError(f"{path} must be in [{lo}, {hi}]")
    return value


def boolean(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise FormatError(f"{path} must be true or false")
    return value


def number(value: Any, path: str) -> float:
    """A finite number (integers are accepted and become floats)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FormatError(f"{path} must be a number")
    if not math.isfinite(value):
        raise FormatError(f"{path} must be finite")
    return float(value)


def hexbytes(value: Any, path: str, size: int | None = None) -> bytes:
    """``0x``-prefixed hex as bytes (of ``size`` bytes, if given)."""
    if not isinstance(value, str) or not value.startswith("0x"):
        raise FormatError(f"{path} must be 0x-prefixed hex")
    try:
        data = bytes.fromhex(value[2:])
    except ValueError:
        raise FormatError(f"{path} is not hex") from None
    if size is not None and len(data) != size:
        raise FormatError(f"{path} must be {size} bytes, not {len(data)}")
    return data


def cid(value: Any, path: str) -> str:
    """A link (or CID string) as its canonical CID string."""
    if not isinstance(value, CID | str):
        raise FormatError(f"{path} must be a CID link")
    try:
        return canonical_cid(value)
    except Exception as exc:
        raise FormatError(f"{path} is not a CID the store serves: {exc}") from None


def optional(read: Callable[[Any, str], T]) -> Callable[[Any, str], T | None]:
    """``read`` that lets ``None`` through."""

    def read_optional(value: Any, path: str) -> T | None:
        return None if value is None else read(value, path)

    return read_optional


def items(value: Any, path: str, read: Callable[[Any, str], T], max_len: int | None = None) -> tuple[T, ...]:
    """A list, each item read with ``read``."""
    if not isinstance(value, list | tuple):
        raise FormatError(f"{path} must be a list")
    if max_len is not None and len(value) > max_len:
        raise FormatError(f"{path} has {len(value)} items, more than {max_len}")
    return tuple(read(v, f"{path}[{i}]") for i, v in enumerate(value))


def data(value: Any, path: str) -> Any:
    """Any dag-cbor data model value (as decoded: no tuples, no NaN, 64-bit integers)."""
    if value is None or isinstance(value, bool | str | bytes | CID):
        return value
    if isinstance(value, int):
        return integer(value, path)
    if isinstance(value, float):
        return number(value, path)
    if isinstance(value, list | tuple):
        return [data(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise FormatError(f"{path} keys must be strings")
            out[k] = data(v, _at(path, k))
        return out
    raise FormatError(f"{path}: a {type(value).__name__} is not dag-cbor data")


def link_or_none(value: str | None) -> CID | None:
    """A CID string as a dag-cbor link (``None`` stays ``None``)."""
    return None if value is None else link(value)


def hex0x(value: bytes) -> str:
    return "0x" + value.hex()
