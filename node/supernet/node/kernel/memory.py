"""The memory manager: per-agent memory as content-addressed blocks, searched by meaning.

Each entry is a dag-cbor block ``{"type": "supernet/memory-entry", "text", "metadata",
"model", "embedding"}`` (the embedding as little-endian float32 bytes). A namespace's root
``{"type": "supernet/memory-root", "namespace", "entries": [links], "prev"}`` lists its
entries; every write makes a new root CID (see :mod:`supernet.node.kernel.namespaces`).
Search embeds the query with all-MiniLM-L6-v2 and ranks the entries by cosine similarity.

Namespaces come from the access manager (``"<user>/<agent id>"``), never from the agent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from supernet.node.kernel.errors import MemoryStoreError
from supernet.node.kernel.namespaces import NamespaceRoots
from supernet.node.kernel.syscalls import MemoryHit
from supernet.node.kernel.trace import to_dag
from supernet.sdk.store.cids import link

ENTRY_TYPE = "supernet/memory-entry"
ROOT_TYPE = "supernet/memory-root"
MAX_ENTRY_CHARS = 8192


class Embedder(Protocol):
    """Turns texts into unit vectors (see :class:`~supernet.node.kernel.embeddings.MiniLMEmbedder`)."""

    name: str

    async def embed(self, texts: list[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class MemoryWrite:
    """Where an added entry went: its block and the namespace's new root."""

    entry_cid: str
    root_cid: str
    prev_root: str | None


@dataclass(frozen=True)
class _Entry:
    text: str
    metadata: Mapping[str, Any]
    vector: np.ndarray


class MemoryManager:
    """Adds to and searches each namespace's memory.

    Args:
        store: The content store client.
        embedder: The sentence embedder.
    """

    def __init__(self, store: Any, embedder: Embedder) -> None:
        self.roots = NamespaceRoots(store, ROOT_TYPE)
        self._store = store
        self._embedder = embedder
        self._entries: dict[str, _Entry] = {}  # entry CID -> decoded entry (blocks are immutable)

    async def add(self, namespace: str, text: str, metadata: Mapping[str, Any]) -> MemoryWrite:
        """Embed ``text`` and append it to ``namespace``'s memory.

        Raises:
            MemoryStoreError: The text is too long or the store failed.
        """
        if len(text) > MAX_ENTRY_CHARS:
            raise MemoryStoreError(f"a memory entry holds at most {MAX_ENTRY_CHARS} characters")
        vector = (await self._embedder.embed([text]))[0].astype("<f4")
        block = {
            "type": ENTRY_TYPE,
            "text": text,
            "metadata": to_dag(dict(metadata)),
            "model": self._embedder.name,
            "embedding": vector.tobytes(),
        }
        async with self.roots.lock(namespace):
            try:
                entry_cid = str(await self._store.put_dag(block))
            except Exception as exc:
                raise MemoryStoreError(f"cannot write a memory entry: {exc}") from exc
            self._entries[entry_cid] = _Entry(text, dict(metadata), vector)
            root = await self.roots.load(namespace)
            links = [*(root["entries"] if root else []), link(entry_cid)]
            root_cid, prev = await self.roots.commit(namespace, {"entries": links})
        return MemoryWrite(entry_cid, root_cid, prev)

    async def search(self, namespace: str, query: str, k: int) -> tuple[str | None, list[MemoryHit]]:
        """The ``k`` entries of ``namespace`` closest in meaning to ``query``.

        Returns:
            (the root CID that was searched, hits best first); (``None``, []) for an empty memory.
        """
        root_cid = self.roots.root(namespace)
        root = await self.roots.load(namespace)
        if root is None or not root["entries"]:
            return root_cid, []
        cids = [str(c) for c in root["entries"]]
        entries = [await self._entry(cid) for cid in cids]
        query_vec = (await self._embedder.embed([query]))[0]
        scores = np.stack([e.vector for e in entries]) @ query_vec
        best = np.argsort(-scores, kind="stable")[: max(k, 0)]
        hits = [MemoryHit(cids[i], entries[i].text, float(scores[i]), entries[i].metadata) for i in best]
        return root_cid, hits

    async def _entry(self, cid: str) -> _Entry:
        cached = self._entries.get(cid)
        if cached is not None:
            return cached
        try:
            block = await self._store.get_dag(cid)
        except Exception as exc:
            raise MemoryStoreError(f"cannot read memory entry {cid}: {exc}") from exc
        entry = _Entry(block["text"], block.get("metadata") or {}, np.frombuffer(block["embedding"], "<f4"))
        self._entries[cid] = entry
        return entry
