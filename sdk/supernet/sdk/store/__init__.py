"""Content store: blocks, dag-cbor objects and chunked files on IPFS (Kubo) or the embedded store.

One client for every backend; CIDv1 sha2-256, raw or dag-cbor; every read re-hashed.
The embedded store (FastAPI, uvicorn) lives in ``supernet.sdk.store.embedded``.

>>> from supernet.sdk.store import StoreClient, compute_cid
>>> compute_cid(b"hello")
'bafkreibm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4yeq'
>>> store = StoreClient("http://127.0.0.1:5001")  # then: cid = await store.add_file(data)
"""

from supernet.sdk.store.cids import (
    MAX_BLOCK_SIZE,
    BlockStat,
    Codec,
    canonical_cid,
    compute_cid,
    link,
    parse_cid,
    verify_block,
)
from supernet.sdk.store.client import DEFAULT_STORE_URL, STORE_URL_ENV, StoreClient
from supernet.sdk.store.errors import (
    BlockNotFoundError,
    BlockTooLargeError,
    CIDMismatchError,
    InvalidBlockError,
    InvalidCIDError,
    PinError,
    RequestTooLargeError,
    StoreError,
    StoreLimitError,
    StoreUnavailableError,
)
from supernet.sdk.store.files import CHUNK_SIZE, FileRoot, file_cid

__all__ = [
    "CHUNK_SIZE",
    "DEFAULT_STORE_URL",
    "MAX_BLOCK_SIZE",
    "STORE_URL_ENV",
    "BlockNotFoundError",
    "BlockStat",
    "BlockTooLargeError",
    "CIDMismatchError",
    "Codec",
    "FileRoot",
    "InvalidBlockError",
    "InvalidCIDError",
    "PinError",
    "RequestTooLargeError",
    "StoreClient",
    "StoreError",
    "StoreLimitError",
    "StoreUnavailableError",
    "canonical_cid",
    "compute_cid",
    "file_cid",
    "link",
    "parse_cid",
    "verify_block",
]
