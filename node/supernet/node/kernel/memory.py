"""The memory manager: per-agent memory as content-addressed blocks, searched by meaning.

Each entry is a dag-cbor block ``{"type": "supernet/memory-entry", "text", "metadata",
"model", "embedding"}`` (the embedding as little-endian float32 bytes). A namespace's root
``{"type": "supernet/memory-root", "namespace", "entries": [links], "prev"}`` lists its
entries; every write makes a new root CID (see :mod:`supernet.node.kernel.namespaces`).
Search embeds the query with all-MiniLM-L6-v2 and ranks the entries by cosine similarity.

**Working set (K-LRU).** As in AIOS, memory is two-tier: RAM holds a bounded *working set* of
decoded entries per namespace, the content store holds them all. Writes go through to the store
(an entry is a block before it is in RAM), so evicting an entry only drops it from RAM; the next
access pages it back in from the store. The victim is chosen by LRU-K (`KLRU`): the entry whose
K-th most recent access is oldest, entries accessed fewer than K times first (the oldest of
them), so one scan of many entries does not push out the ones used again and again. Accesses
are adds and search hits.

Search stays exact under eviction: it scores *every* entry of the root, reading the vectors of
evicted entries from the store without admitting them (a scan is not a use), in fixed chunks of
the root's order, so a bounded manager computes bit for bit the same scores, and returns the
same hits, as an unbounded one. Only the hits are admitted to the working set.

Namespaces come from the access manager (``"<user>/<agent id>"``), never from the agent.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
from supernet.node.kernel.embeddings import MAX_TOKENS, token_count
from supernet.node.kernel.errors import MemoryStoreError
from supernet.node.kernel.namespaces import NamespaceRoots
from supernet.node.kernel.syscalls import MemoryHit
from supernet.node.kernel.trace import to_dag
from supernet.sdk.store.cids import link

ENTRY_TYPE = "supernet/memory-entry"
ROOT_TYPE = "supernet/memory-root"
MAX_ENTRY_CHARS = 8192
MAX_ENTRY_TOKENS = MAX_TOKENS
"""An entry holds at most what the embedder reads, so a search ranks it by all of its text (two
entries differing past that point would score alike, and a node could show either)."""
DEFAULT_WORKING_SET = 1024
"""Entries of one namespace held in RAM at most (``[kernel] memory_working_set``)."""
DEFAULT_RESIDENT_LIMIT = 8192
"""Entries held in RAM at most, all namespaces together (``[kernel] memory_resident_entries``):
every user address is a namespace, so a bound per namespace alone lets RAM grow with the users."""
DEFAULT_K = 2
"""The K of LRU-K (``[kernel] memory_k``): 1 is plain LRU."""
SCORE_CHUNK = 256
"""Entries scored per matrix product in a search (the same chunks whatever is resident)."""

V = TypeVar("V")


def with_entry(entries: Sequence[Any], entry: str) -> list[Any]:
    """A memory root's ``entries`` with ``entry`` (a CID) appended: the one change of an add (as
    `with_version` is a file write's), for the manager, the replay and the origin check alike."""
    return [*entries, link(entry)]


def check_entry(text: str) -> None:
    """Refuse a memory entry longer than the protocol allows (`MAX_ENTRY_CHARS`, then
    `MAX_ENTRY_TOKENS`): run by the dispatcher, so a validator's replay refuses it alike.

    Raises:
        MemoryStoreError: the text is too long, saying by how much.
    """
    if len(text) > MAX_ENTRY_CHARS:  # first: the tokenizer's work stays bounded
        raise MemoryStoreError(f"a memory entry holds at most {MAX_ENTRY_CHARS} characters")
    tokens = token_count(text)
    if tokens > MAX_ENTRY_TOKENS:
        raise MemoryStoreError(
            f"a memory entry holds at most {MAX_ENTRY_TOKENS} tokens (what the search's embedder "
            f"reads), this one {tokens}: store a longer text as several entries"
        )


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


@dataclass
class PagingStats:
    """What the working sets did since the manager started."""

    hits: int = 0
    page_ins: int = 0
    evictions: int = 0
    scanned: int = 0  # evicted entries read from the store to score a search (not admitted)


class KLRU(Generic[V]):
    """A bounded map with LRU-K replacement (O'Neil, O'Neil and Weikum, 1993).

    Each resident key keeps the times of its last ``k`` accesses (a logical clock). When the map
    is over ``capacity``, the victim is the key with the largest *backward K-distance*: keys with
    fewer than ``k`` accesses (infinite distance) go first, the least recently used of them; else
    the key whose ``k``-th most recent access is oldest. The history of an evicted key is retained
    (for at most ``capacity`` keys), so a key paged back in soon keeps its standing.

    Args:
        capacity: Keys held at most (``None``: unbounded, nothing is ever evicted).
        k: How many past accesses rank a key (``k=1`` is LRU).

    >>> cache = KLRU[str](capacity=2, k=2)
    >>> cache.put("a", "A"), cache.get("a"), cache.put("b", "B")
    ([], 'A', [])
    >>> cache.put("c", "C")  # "b" was used once, "a" twice: "b" goes
    ['b']
    """

    def __init__(self, capacity: int | None, k: int = DEFAULT_K) -> None:
        if capacity is not None and capacity < 1:
            raise ValueError("a working set holds at least one entry")
        if k < 1:
            raise ValueError("K of K-LRU is at least 1")
        self.capacity, self.k = capacity, k
        self._values: dict[str, V] = {}
        self._history: dict[str, deque[int]] = {}
        self._retained: OrderedDict[str, deque[int]] = OrderedDict()
        self._clock = 0

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def keys(self) -> list[str]:
        """The resident keys (no particular order)."""
        return list(self._values)

    def peek(self, key: str) -> V | None:
        """The value of ``key`` if resident, without counting an access."""
        return self._values.get(key)

    def get(self, key: str) -> V | None:
        """The value of ``key`` if resident (an access), else ``None``."""
        value = self._values.get(key)
        if value is not None:
            self._touch(key)
        return value

    def put(self, key: str, value: V) -> list[str]:
        """Admit (or refresh) ``key`` as an access; returns the keys evicted to make room."""
        if key not in self._values:
            retained = self._retained.pop(key) if key in self._retained else None
            self._history[key] = retained if retained is not None else deque(maxlen=self.k)
        self._values[key] = value
        self._touch(key)
        evicted: list[str] = []
        while self.capacity is not None and len(self._values) > self.capacity:
            victim = self._victim(spare=key)
            del self._values[victim]
            self._retained[victim] = self._history.pop(victim)
            while len(self._retained) > self.capacity:
                self._retained.popitem(last=False)
            evicted.append(victim)
        return evicted

    def _touch(self, key: str) -> None:
        self._clock += 1
        self._history[key].append(self._clock)

    def _victim(self, spare: str) -> str:
        def rank(key: str) -> tuple[int, int]:
            times = self._history[key]
            if len(times) < self.k:
                return (0, times[-1])  # infinite backward K-distance: the least recently used first
            return (1, times[0])  # the oldest K-th most recent access first

        return min((key for key in self._values if key != spare), key=rank)


class MemoryManager:
    """Adds to and searches each namespace's memory, with a bounded K-LRU working set in RAM.

    Args:
        store: The content store client.
        embedder: The sentence embedder.
        working_set: Entries of one namespace held in RAM at most (``None``: unbounded).
        k: The K of the working sets' LRU-K replacement.
        resident_limit: Entries held in RAM at most, all namespaces together: past it, the working
            sets of the namespaces used longest ago are dropped whole (``None``: unbounded).
    """

    def __init__(
        self,
        store: Any,
        embedder: Embedder,
        *,
        working_set: int | None = DEFAULT_WORKING_SET,
        k: int = DEFAULT_K,
        resident_limit: int | None = DEFAULT_RESIDENT_LIMIT,
    ) -> None:
        if resident_limit is not None and resident_limit < 1:
            raise ValueError(f"resident_limit must be at least 1, not {resident_limit}")
        KLRU[_Entry](working_set, k)  # checks the arguments now, not at the first write
        self.roots = NamespaceRoots(store, ROOT_TYPE)
        self.working_set, self.k, self.resident_limit = working_set, k, resident_limit
        self.stats = PagingStats()
        self._store = store
        self._embedder = embedder
        # namespace -> entry CID -> decoded entry, the namespace used last at the end
        self._sets: OrderedDict[str, KLRU[_Entry]] = OrderedDict()
        self._resident = 0  # entries in all of them (a sum over every namespace at each admit is O(users))

    def resident(self, namespace: str | None = None) -> int:
        """Entries held in RAM: of ``namespace``, or of all namespaces."""
        if namespace is not None:
            ws = self._sets.get(namespace)
            return 0 if ws is None else len(ws)
        return self._resident

    def is_resident(self, namespace: str, cid: str) -> bool:
        """Whether entry ``cid`` of ``namespace`` is in its working set."""
        ws = self._sets.get(namespace)
        return ws is not None and cid in ws

    async def add(
        self, namespace: str, text: str, metadata: Mapping[str, Any], writer: str | None = None
    ) -> MemoryWrite:
        """Embed ``text`` and append it to ``namespace``'s memory (the new root names ``writer``,
        the task that wrote it: `NamespaceRoots.commit`).

        Raises:
            MemoryStoreError: The text is too long or the store failed.
        """
        check_entry(text)
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
                entry_cid = str(await self._store.put_dag(block, pin=True))
            except Exception as exc:
                raise MemoryStoreError(f"cannot write a memory entry: {exc}") from exc
            root = await self.roots.load(namespace)
            links = with_entry(root["entries"] if root else [], entry_cid)
            root_cid, prev = await self.roots.commit(namespace, {"entries": links}, writer)
            self._admit(namespace, entry_cid, _Entry(text, dict(metadata), vector))  # written through
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
        query_vec = (await self._embedder.embed([query]))[0]
        scores = np.empty(len(cids), dtype=np.result_type(np.float32, query_vec.dtype))
        for start in range(0, len(cids), SCORE_CHUNK):
            chunk = cids[start : start + SCORE_CHUNK]
            vectors = await asyncio.gather(*(self._vector(namespace, cid) for cid in chunk))
            scores[start : start + len(chunk)] = np.stack(vectors) @ query_vec
        best = np.argsort(-scores, kind="stable")[: max(k, 0)]
        hits = []
        for i in best:
            entry = await self._entry(namespace, cids[i])
            hits.append(MemoryHit(cids[i], entry.text, float(scores[i]), entry.metadata))
        return root_cid, hits

    def _admit(self, namespace: str, cid: str, entry: _Entry) -> None:
        ws = self._sets.get(namespace)
        if ws is None:
            ws = self._sets[namespace] = KLRU(self.working_set, self.k)
        self._sets.move_to_end(namespace)
        before = len(ws)
        self.stats.evictions += len(ws.put(cid, entry))
        self._resident += len(ws) - before
        while (
            self.resident_limit is not None and self._resident > self.resident_limit and len(self._sets) > 1
        ):
            _, dropped = self._sets.popitem(last=False)  # the namespace used longest ago
            self._resident -= len(dropped)
            self.stats.evictions += len(dropped)

    async def _vector(self, namespace: str, cid: str) -> np.ndarray:
        """An entry's embedding for scoring: from RAM if resident, else read (not admitted)."""
        ws = self._sets.get(namespace)
        cached = ws.peek(cid) if ws is not None else None
        if cached is not None:
            return cached.vector
        self.stats.scanned += 1
        return (await self._load(cid)).vector

    async def _entry(self, namespace: str, cid: str) -> _Entry:
        """An entry as an access: from the working set, or paged in from the store."""
        ws = self._sets.get(namespace)
        cached = ws.get(cid) if ws is not None else None
        if cached is not None:
            self.stats.hits += 1
            self._sets.move_to_end(namespace)
            return cached
        entry = await self._load(cid)
        self.stats.page_ins += 1
        self._admit(namespace, cid, entry)
        return entry

    async def _load(self, cid: str) -> _Entry:
        try:
            block = await self._store.get_dag(cid)
        except Exception as exc:
            raise MemoryStoreError(f"cannot read memory entry {cid}: {exc}") from exc
        return _Entry(block["text"], block.get("metadata") or {}, np.frombuffer(block["embedding"], "<f4"))
