"""Errors of the content store, one branch of the Supernet error tree.

Each class mixes in the stdlib type callers would naturally catch (``ValueError`` for bad
input, ``LookupError`` for a missing block, ``ConnectionError`` for an unreachable store).
The embedded server maps the same classes to Kubo-style HTTP errors, and the client maps
them back, so code sees one set of exceptions whichever backend it talks to.

>>> from supernet.sdk.store.errors import CIDMismatchError, StoreError
>>> issubclass(CIDMismatchError, StoreError) and issubclass(CIDMismatchError, ValueError)
True
"""

from __future__ import annotations

from supernet.sdk.errors import SupernetError


class StoreError(SupernetError):
    """Root of every content-store error."""


class InvalidCIDError(StoreError, ValueError):
    """A string is not a CID, or names a codec or hash function the store does not support."""


class CIDMismatchError(StoreError, ValueError):
    """The bytes of a block do not hash to its CID: the store returned corrupt or forged data."""


class BlockNotFoundError(StoreError, LookupError):
    """The store does not hold the requested block."""


class InvalidBlockError(StoreError, ValueError):
    """A block's bytes are not valid for its codec, or a file root is not a ``supernet/file``."""


class StoreLimitError(StoreError, ValueError):
    """A request exceeds one of the store's size limits."""


class BlockTooLargeError(StoreLimitError):
    """A block is larger than the maximum block size (1 MiB, as Kubo's ``block/put``)."""


class RequestTooLargeError(StoreLimitError):
    """An HTTP request body is larger than the server accepts."""


class PinError(StoreError):
    """A pin operation was refused (not pinned, pinned differently, or a pinned block removed)."""


class StoreUnavailableError(StoreError, ConnectionError):
    """The store cannot be reached, or it answered with something that is not its RPC API."""
