"""Chunked files (docs/protocol.md, "Content-store objects"): pure encoding, no I/O.

A file is cut into 256 KiB raw chunks; its root is the dag-cbor map
``{"type": "supernet/file", "size": n, "chunks": [CID, ...]}`` with the chunk CIDs as links.
Every file has a root, even one that fits in a single chunk (an empty file has no chunks),
so the same bytes give the same root CID on every backend.

>>> from supernet.sdk.store.files import file_cid, split_chunks
>>> [len(c) for c in split_chunks(b"x" * 300_000)]
[262144, 37856]
>>> file_cid(b"hello").startswith("bafy")
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from multiformats import CID
from supernet.sdk.store.cids import canonical_cid, codec_of, compute_cid, decode_dag, encode_dag, link
from supernet.sdk.store.errors import InvalidBlockError, InvalidCIDError

CHUNK_SIZE = 256 * 1024
FILE_TYPE = "supernet/file"


@dataclass(frozen=True)
class FileRoot:
    """The decoded root of a chunked file.

    Attributes:
        size: Total file size in bytes.
        chunks: CIDs of the raw chunks, in order.
    """

    size: int
    chunks: tuple[str, ...]


def split_chunks(data: bytes) -> list[bytes]:
    """Cut file bytes into ``CHUNK_SIZE`` pieces (the last one may be shorter)."""
    return [data[i : i + CHUNK_SIZE] for i in range(0, len(data), CHUNK_SIZE)]


def encode_file_root(size: int, chunk_cids: list[str]) -> bytes:
    """Encode the dag-cbor root block of a file from its size and chunk CIDs."""
    return encode_dag({"type": FILE_TYPE, "size": size, "chunks": [link(c) for c in chunk_cids]})


def decode_file_root(data: bytes) -> FileRoot:
    """Decode and validate a file root block.

    Raises:
        InvalidBlockError: If the block is not a well-formed ``supernet/file`` root.
    """
    obj: Any = decode_dag(data)
    if not isinstance(obj, dict) or obj.get("type") != FILE_TYPE:
        raise InvalidBlockError(f"not a {FILE_TYPE} root: expected a map with type {FILE_TYPE!r}")
    size, chunks = obj.get("size"), obj.get("chunks")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidBlockError(f"{FILE_TYPE} root has an invalid size {size!r}")
    if not isinstance(chunks, list):
        raise InvalidBlockError(f"{FILE_TYPE} root has no chunk list")
    cids = []
    for chunk in chunks:
        try:
            codec, cid = codec_of(chunk), canonical_cid(chunk)
        except InvalidCIDError as exc:
            raise InvalidBlockError(f"{FILE_TYPE} root has a bad chunk link {chunk!r}: {exc}") from exc
        if codec != "raw" or not isinstance(chunk, CID):
            raise InvalidBlockError(f"{FILE_TYPE} chunk {cid} is not a link to a raw block")
        cids.append(cid)
    expected = -(-size // CHUNK_SIZE)
    if len(cids) != expected:
        raise InvalidBlockError(f"{FILE_TYPE} root of {size} bytes lists {len(cids)} chunks, not {expected}")
    return FileRoot(size=size, chunks=tuple(cids))


def file_cid(data: bytes) -> str:
    """Compute a file's root CID locally, without a store (what ``StoreClient.add_file`` returns)."""
    chunk_cids = [compute_cid(chunk) for chunk in split_chunks(data)]
    return compute_cid(encode_file_root(len(data), chunk_cids), "dag-cbor")
