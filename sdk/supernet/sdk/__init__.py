"""Supernet SDK: everything users, nodes and validators must agree on.

Contract bindings, EIP-712 signing, receipts and their Merkle proofs, the content-store
client and the user's client. It never imports torch.

>>> from supernet.sdk import Client   # doctest: +SKIP
>>> from supernet.sdk import openai_client   # the official OpenAI client, paying a node  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from supernet.sdk.client import Client
    from supernet.sdk.openai_compat import SupernetAuth, async_openai_client, openai_client

_OPENAI_COMPAT = ("SupernetAuth", "async_openai_client", "openai_client")


def __getattr__(name: str) -> Any:
    # Lazy: `import supernet.sdk` stays cheap for the CLI and the store.
    if name == "Client":
        from supernet.sdk.client import Client

        return Client
    if name in _OPENAI_COMPAT:  # the OpenAI drop-in (`openai` itself is imported only when used)
        from supernet.sdk import openai_compat

        return getattr(openai_compat, name)
    raise AttributeError(name)


__all__ = ["Client", "SupernetAuth", "__version__", "async_openai_client", "openai_client"]
