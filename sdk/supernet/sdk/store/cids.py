"""CIDs and dag-cbor for the content store: CIDv1, sha2-256, codec ``raw`` or ``dag-cbor``.

Everything here is pure (no I/O), so a CID computed locally is the one any backend returns:
the client checks the store's answer against it, and every ``get`` re-hashes the bytes.

>>> from supernet.sdk.store.cids import compute_cid, verify_block
>>> cid = compute_cid(b"hello")
>>> cid
'bafkreibm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4yeq'
>>> verify_block(cid, b"hello")
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import dag_cbor
from dag_cbor.decoding import CBORDecodingError
from dag_cbor.encoding import CBOREncodingError
from multiformats import CID, multihash
from supernet.sdk.store.errors import CIDMismatchError, InvalidBlockError, InvalidCIDError

Codec = Literal["raw", "dag-cbor"]

CODECS: tuple[Codec, ...] = ("raw", "dag-cbor")
HASH_FUNCTION = "sha2-256"
MAX_BLOCK_SIZE = 1024 * 1024
"""Largest block accepted (bytes): Kubo's default ``block/put`` limit, also bitswap's."""
MAX_DAG_DEPTH = 64
"""Deepest nesting of lists and maps a dag-cbor block may have (``[]`` is 1 level, ``[[1]]`` 2),
enforced by `encode_dag` and `decode_dag` alike, so a block the node can encode is one every reader
decodes, whatever its stack or recursion limit (the ``dag_cbor`` codec recurses: ~2 frames a level,
and a ~195 KiB block of ``0x81`` bytes nests 200,000 deep). The protocol's own documents stay far
below it: a trace's framing is 5 levels around the values it records (which the kernel holds to
``MAX_DAG_DEPTH - 8``), a manifest 4, evidence 4 plus at most 33 of ``plain`` values (36), a
memory entry or namespace root a few."""


@dataclass(frozen=True)
class BlockStat:
    """What ``block/stat`` reports about a block.

    Attributes:
        cid: The block's CID (CIDv1, base32).
        size: Its size in bytes.
    """

    cid: str
    size: int


_PREFIXES: dict[Codec, bytes] = {"raw": b"\x01\x55\x12\x20", "dag-cbor": b"\x01\x71\x12\x20"}
"""Binary CID header per codec: version 1, codec (0x55 / 0x71), sha2-256 (0x12), 32 bytes."""
_CODEC_OF_PREFIX = {prefix: codec for codec, prefix in _PREFIXES.items()}


def compute_cid(data: bytes, codec: Codec = "raw") -> str:
    """Compute the CIDv1 (sha2-256, base32) of a block.

    Args:
        data: The block's bytes.
        codec: ``"raw"`` or ``"dag-cbor"``.

    Returns:
        The CID as a base32 string (``bafk...`` for raw, ``bafy...`` for dag-cbor).

    Raises:
        InvalidCIDError: If the codec is not supported.
    """
    if codec not in _PREFIXES:
        raise InvalidCIDError(f"unsupported codec {codec!r}: the store uses {', '.join(CODECS)}")
    return _base32(_PREFIXES[codec] + hashlib.sha256(data).digest())


def canonical_cid(value: str | CID) -> str:
    """Return the canonical string (CIDv1, base32) of a CID the store can serve.

    Raises:
        InvalidCIDError: If ``value`` is not a CID, or not sha2-256 with a raw/dag-cbor codec.
    """
    codec, digest = _split(value)
    return _base32(_PREFIXES[codec] + digest)


def parse_cid(value: str | CID) -> CID:
    """Parse and check a CID the store can serve, as a ``multiformats.CID`` (e.g. for links).

    Any multibase and CID version is accepted on input; the result is CIDv1 in base32, so
    ``str(parse_cid(x)) == canonical_cid(x)`` is the key of the block.

    Raises:
        InvalidCIDError: If ``value`` is not a CID, or not sha2-256 with a raw/dag-cbor codec.
    """
    codec, digest = _split(value)
    return CID("base32", 1, codec, multihash.wrap(digest, HASH_FUNCTION))


def codec_of(cid: str | CID) -> Codec:
    """Return the codec name of a CID (``"raw"`` or ``"dag-cbor"``)."""
    return _split(cid)[0]


def verify_block(cid: str | CID, data: bytes) -> None:
    """Check that ``data`` hashes to ``cid``.

    Raises:
        CIDMismatchError: If the sha2-256 digest of ``data`` differs from the CID's digest.
        InvalidCIDError: If ``cid`` is not a supported CID.
    """
    codec, expected = _split(cid)
    actual = hashlib.sha256(data).digest()
    if actual != expected:
        raise CIDMismatchError(
            f"block {_base32(_PREFIXES[codec] + expected)} is corrupt: its {len(data)} bytes hash to "
            f"sha2-256 {actual.hex()}, not {expected.hex()}"
        )


def cid_digest(cid: str | CID) -> tuple[Codec, bytes]:
    """(codec, sha2-256 digest) of a supported CID.

    Raises:
        InvalidCIDError: not a CIDv1 raw / dag-cbor sha2-256 CID.
    """
    return _split(cid)


def cid_of_digest(digest: bytes, codec: Codec) -> str:
    """The canonical CID string of a block with this sha2-256 ``digest`` (inverse of `cid_digest`)."""
    if len(digest) != 32:
        raise InvalidCIDError(f"a sha2-256 digest is 32 bytes, not {len(digest)}")
    return _base32(_PREFIXES[codec] + digest)


def _base32(binary: bytes) -> str:
    return "b" + base64.b32encode(binary).decode("ascii").lower().rstrip("=")


def _split(value: str | CID) -> tuple[Codec, bytes]:
    """Return (codec, sha2-256 digest) of a supported CID; fast for the canonical forms."""
    if isinstance(value, CID):
        binary = bytes(value)  # CIDv1 binary form, cheap
        if binary[:4] in _CODEC_OF_PREFIX and len(binary) == 36:
            return _CODEC_OF_PREFIX[binary[:4]], binary[4:]
    elif isinstance(value, str) and len(value) == 59 and value[0] == "b" and value.islower():
        try:
            binary = base64.b32decode(value[1:].upper() + "=" * 6)
        except ValueError:
            binary = b""
        if binary[:4] in _CODEC_OF_PREFIX and len(binary) == 36 and _base32(binary) == value:
            return _CODEC_OF_PREFIX[binary[:4]], binary[4:]
    return _split_slow(value)


def _split_slow(value: str | CID) -> tuple[Codec, bytes]:
    if not isinstance(value, CID) and (not isinstance(value, str) or not value.strip()):
        raise InvalidCIDError(f"not a CID: {value!r}")
    try:
        cid = value if isinstance(value, CID) else CID.decode(value.strip())
        codec, hash_name, digest = cid.codec.name, cid.hashfun.name, cid.raw_digest
    except Exception as exc:  # multiformats raises many types (an overlong digest, a lone prefix...)
        raise InvalidCIDError(f"not a CID: {value!r} ({type(exc).__name__}: {exc})") from exc
    if codec not in _PREFIXES:
        raise InvalidCIDError(f"unsupported codec {codec!r} in {value}: expected raw or dag-cbor")
    if hash_name != HASH_FUNCTION or len(digest) != 32:
        raise InvalidCIDError(f"unsupported hash {hash_name!r} in {value}: expected sha2-256")
    return ("raw" if codec == "raw" else "dag-cbor"), digest


def encode_dag(obj: Any, *, max_depth: int = MAX_DAG_DEPTH) -> bytes:
    """Encode an object as dag-cbor (``multiformats.CID`` values become links).

    Args:
        obj: The value (maps with string keys, lists, strings, bytes, 64-bit integers, finite
            floats, booleans, ``None``, ``CID`` links).
        max_depth: Deepest nesting of lists and maps allowed; at most `MAX_DAG_DEPTH`, what every
            reader decodes (a caller embedding the block's value in a larger one passes less).

    Raises:
        InvalidBlockError: If the object holds something dag-cbor cannot encode, or nests deeper
            than ``max_depth``.
    """
    _check_value_depth(obj, min(max_depth, MAX_DAG_DEPTH))
    try:
        return bytes(dag_cbor.encode(obj))
    except (CBOREncodingError, TypeError, ValueError) as exc:
        raise InvalidBlockError(f"cannot encode as dag-cbor: {exc}") from exc


def decode_dag(data: bytes) -> Any:
    """Decode dag-cbor bytes; links come back as ``CID`` objects in base32.

    Raises:
        InvalidBlockError: If ``data`` is not valid dag-cbor, or nests deeper than `MAX_DAG_DEPTH`.
    """
    _check_block_depth(data, MAX_DAG_DEPTH)
    try:
        obj = dag_cbor.decode(data)
    except (CBORDecodingError, TypeError, ValueError) as exc:
        raise InvalidBlockError(f"not valid dag-cbor: {exc}") from exc
    return _base32_links(obj)


def _too_deep(limit: int) -> InvalidBlockError:
    return InvalidBlockError(f"dag-cbor nested deeper than {limit} levels of lists and maps")


def _check_value_depth(obj: Any, limit: int) -> None:
    """Raise unless ``obj``'s lists and dicts (what the codec encodes as arrays and maps) nest at
    most ``limit`` deep; iterative, so a value nested past the recursion limit (or a cycle) is an
    `InvalidBlockError` here, not a ``RecursionError`` in the codec."""
    stack: list[tuple[Any, int]] = [(obj, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth >= limit:
            raise _too_deep(limit)
        stack.extend((child, depth + 1) for child in children)


_CONTAINER_HEADS = bytes(range(0x80, 0xC0))
"""Initial bytes of CBOR arrays (major type 4) and maps (5): no block has more levels than these."""


def _check_block_depth(data: bytes, limit: int) -> None:
    """Raise unless the arrays and maps of the CBOR item in ``data`` nest at most ``limit`` deep.

    A pre-scan of the item heads only (no values are built), iterative; it stops without a verdict
    at anything it does not follow (indefinite lengths, reserved values, a truncated block) and
    leaves that to the codec, which reads the same heads in the same order and so fails there, at
    a depth this scan has already bounded. Blocks with at most ``limit`` container heads in all
    (the usual small block) are passed without a scan."""
    if len(data) - len(data.translate(None, _CONTAINER_HEADS)) <= limit:
        return
    pending: list[int] = []  # items still to read in each open array or map, innermost last
    pos, size = 0, len(data)
    while pos < size:
        major, info = data[pos] >> 5, data[pos] & 0x1F
        pos += 1
        if info < 24:
            arg = info
        elif info < 28:
            width = 1 << (info - 24)
            if pos + width > size:
                return
            arg = int.from_bytes(data[pos : pos + width], "big")
            pos += width
        else:
            return  # indefinite length or reserved: the codec refuses it
        if major == 6:
            continue  # a tag: its content is the next item, in the same place
        if major in (2, 3):
            pos += arg  # bytes or text: skip the content
        elif major in (4, 5):
            if len(pending) >= limit:
                raise _too_deep(limit)
            if arg:
                pending.append(arg * (2 if major == 5 else 1))
                continue
        while pending:  # one item done: close every container it completes
            pending[-1] -= 1
            if pending[-1]:
                break
            pending.pop()
        else:
            return  # the top-level item is complete (trailing bytes: the codec refuses them)


def _base32_links(obj: Any) -> Any:
    if isinstance(obj, CID):
        return obj.set(base="base32")
    if isinstance(obj, dict):
        return {key: _base32_links(value) for key, value in obj.items()}
    if isinstance(obj, list):
        return [_base32_links(value) for value in obj]
    return obj


def iter_links(obj: Any) -> Iterator[CID]:
    """Yield every link (``CID``) inside a decoded dag-cbor object, depth first."""
    if isinstance(obj, CID):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from iter_links(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from iter_links(value)


def block_links(cid: str | CID, data: bytes) -> list[str]:
    """Return the CIDs a block links to (none for raw blocks), as canonical strings."""
    if codec_of(cid) == "raw":
        return []
    return [canonical_cid(link) for link in iter_links(decode_dag(data))]


def link(cid: str | CID) -> CID:
    """Turn a CID string into a link for :func:`encode_dag` / ``StoreClient.put_dag``."""
    return parse_cid(cid)
