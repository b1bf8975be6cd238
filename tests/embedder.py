"""The protocol's sentence embedder (all-MiniLM-L6-v2), loaded once per test process.

A memory search's scores are checked by validators against their own embedding of the query and
the entries (`supernet.validator.search_check`), so a test trace with a search carries the real
scores, and a test kernel that searches embeds with the real model.
"""

from __future__ import annotations

from typing import Any

from supernet.node.kernel.embeddings import MODEL_NAME
from supernet.validator.search_check import protocol_embedder


def score(query: str, text: str) -> float:
    """The score a memory search gives ``text`` for ``query`` (cosine similarity)."""
    vectors = protocol_embedder().embed_sync([query, text])  # type: ignore[attr-defined]
    return float(vectors[0] @ vectors[1])


class SharedMiniLM:
    """The node's embedder, sharing the one model of this process."""

    name = MODEL_NAME
    dim = 384

    async def embed(self, texts: list[str]) -> Any:
        return await protocol_embedder().embed(texts)
