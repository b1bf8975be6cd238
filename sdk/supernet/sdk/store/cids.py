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
    if isinstance(value, CID):
        cid = value
    else:
        if not isinstance(value, str) or not value.strip():
            raise InvalidCIDError(f"not a CID: {value!r}")
        try:
            cid = CID.decode(value.strip())
        except (ValueError, KeyError, IndexError) as exc:  # IndexError: a lone multibase prefix
            raise InvalidCIDError(f"not a CID: {value!r} ({exc})") from exc
    if cid.codec.name not in _PREFIXES:
        raise InvalidCIDError(f"unsupported codec {cid.codec.name!r} in {value}: expected raw or dag-cbor")
    if cid.hashfun.name != HASH_FUNCTION or len(cid.raw_digest) != 32:
        raise InvalidCIDError(f"unsupported hash {cid.hashfun.name!r} in {value}: expected sha2-256")
    return ("raw" if cid.codec.name == "raw" else "dag-cbor"), cid.raw_digest


def encode_dag(obj: Any) -> bytes:
    """Encode an object as dag-cbor (``multiformats.CID`` values become links).

    Raises:
        InvalidBlockError: If the object holds something dag-cbor cannot encode.
    """
    try:
        return bytes(dag_cbor.encode(obj))
    except (CBOREncodingError, TypeError, ValueError) as exc:
        raise InvalidBlockError(f"cannot encode as dag-cbor: {exc}") from exc


def decode_dag(data: bytes) -> Any:
    """Decode dag-cbor bytes; links come back as ``CID`` objects in base32.

    Raises:
        InvalidBlockError: If ``data`` is not valid dag-cbor.
    """
    try:
        obj = dag_cbor.decode(data)
    except (CBORDecodingError, TypeError, ValueError) as exc:
        raise InvalidBlockError(f"not valid dag-cbor: {exc}") from exc
    return _base32_links(obj)


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
