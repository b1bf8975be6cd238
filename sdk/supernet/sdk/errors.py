"""The one error tree of Supernet: every exception the packages raise derives from `SupernetError`.

Subsystems add their own branches (``supernet.sdk.chain.errors.ChainError``, the store's
``StoreError`` ...) and mix in the matching stdlib type where one fits, so callers can catch
either ``SupernetError`` or the familiar builtin.

>>> from supernet.sdk.errors import SupernetError
>>> issubclass(SupernetError, Exception)
True
"""

from __future__ import annotations


class SupernetError(Exception):
    """Root of every error raised by the Supernet SDK, node and validator."""
