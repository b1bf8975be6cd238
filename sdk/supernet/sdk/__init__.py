"""Supernet SDK: everything users, nodes and validators must agree on.

Contract bindings, EIP-712 signing, receipts and their Merkle proofs, the content-store
client and the user's client. It never imports torch.

>>> from supernet.sdk import Client   # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from supernet.sdk.client import Client


def __getattr__(name: str) -> Any:
    # Lazy: `import supernet.sdk` stays cheap for the CLI and the store.
    if name == "Client":
        from supernet.sdk.client import Client

        return Client
    raise AttributeError(name)


__all__ = ["Client", "__version__"]
