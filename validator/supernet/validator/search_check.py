"""Which memories a search shows: the hits of every recorded ``memory.search`` are the entries of
its root closest in meaning to the query, with the scores the query gives them.

Replay checks a search's hits are entries of the root it searched; it cannot tell whether they
are the *closest* ones, since the other entries are not in the trace. A node that shows an agent
the memories it chooses (an old note instead of the newest, a fact that helps the answer it wants)
steers the agent with a trace that replays clean. So the validator ranks the root itself:

* the query and every entry's text are embedded here with the protocol's embedder
  (all-MiniLM-L6-v2, cosine similarity: `supernet.node.kernel.memory`), never taken from the
  entry block's ``embedding`` field (a node could store any vector there);
* each recorded score must be the validator's score of that hit within `SCORE_TOLERANCE`, the
  hits best first, and no entry left out may score above the lowest hit by more than the
  tolerance (ties within it may go either way).

The texts come from the trace's witness (hits, and entries the task itself wrote), else from the
entries kept by `supernet.validator.writes.WriteLog` (every committed write is read in its window,
so every entry of a root whose origin is sound was seen), else from the store. An entry no source
has leaves the receipt unverifiable here, never accused. Vectors are computed once per entry and
kept (``memory_entries``).

The tolerance: scores of one text pair computed in bfloat16 or float16 differ from float32 by at
most 1.3e-3 on this machine's measurement (six texts, one query; batched against single encoding:
2e-7), so 0.01 leaves a node on any of those precisions clear of a false accusation while a swap
it could hide is one between entries the query cannot tell apart.
"""

from __future__ import annotations

import asyncio
import functools
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
from supernet.node.kernel.errors import MemoryStoreError
from supernet.node.kernel.memory import ENTRY_TYPE, MAX_ENTRY_CHARS, check_entry
from supernet.sdk.formats.trace import MemoryAddEvent, MemorySearchEvent, Trace, VerifiedWitness
from supernet.sdk.store.cids import canonical_cid, decode_dag, verify_block
from supernet.validator.evidence import Check, Finding

if TYPE_CHECKING:
    from supernet.validator.db import Database
    from supernet.validator.verifier import DagStore

SCORE_TOLERANCE = 0.01
"""Largest difference between a recorded score and the validator's (cosine similarity)."""
EMBED_BATCH = 64
"""Texts embedded per forward pass."""
STORE_TIMEOUT_S = 10.0
"""Longest wait for one entry block from the store."""
READ_CONCURRENCY = 16
"""Entry blocks read from the store at a time."""
CHECK_DEADLINE_S = 60.0
"""Longest a trace's searches may wait for the store, all entries together."""


class Embedder(Protocol):
    """Turns texts into unit vectors (`supernet.node.kernel.embeddings.MiniLMEmbedder`)."""

    async def embed(self, texts: list[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class SearchOutcome:
    """The findings about a trace's searches, or why one could not be judged here."""

    findings: tuple[Finding, ...] = ()
    unverifiable: str | None = None


class NotAnEntry(ValueError):
    """A block a root lists as an entry is not a memory entry."""


class SearchCheck:
    """Ranks every searched root again and compares it with the recorded hits.

    Args:
        store: where entry blocks are read when neither the witness nor ``db`` has them.
        embedder: the protocol's embedder (default: all-MiniLM-L6-v2, loaded on first use).
        db: the validator's database (entry texts kept by the write log, vectors computed here);
            None keeps vectors in memory only.
        tolerance: `SCORE_TOLERANCE`.
    """

    def __init__(
        self,
        store: DagStore,
        embedder: Embedder | None = None,
        db: Database | None = None,
        tolerance: float = SCORE_TOLERANCE,
    ) -> None:
        self.store, self.db, self.tolerance = store, db, tolerance
        self.embedder = embedder if embedder is not None else protocol_embedder()
        self._vectors: dict[str, np.ndarray] = {}  # without a database

    async def check(self, trace: Trace) -> SearchOutcome:
        """Check every search of ``trace`` (one that replays: its roots and hits are well-formed)."""
        searches = [(i, ev) for i, ev in enumerate(trace.events) if isinstance(ev, MemorySearchEvent)]
        searches = [(i, ev) for i, ev in searches if ev.root is not None and ev.hits]
        if not searches:
            return SearchOutcome()
        witness = VerifiedWitness(trace.witness)
        deadline = asyncio.get_running_loop().time() + CHECK_DEADLINE_S
        findings: list[Finding] = []
        unread = None
        for i, ev in searches:  # every search: one that cannot be judged here hides no other
            try:
                findings += await self._one(i, ev, witness, deadline)
            except NotAnEntry as exc:
                findings.append(Finding(Check.SEARCH, f"syscall {i}: {exc}", call=i))
            except LookupError as exc:
                unread = unread or f"memory.search at syscall {i}: {exc}"
        return SearchOutcome(tuple(findings), None if findings else unread)

    async def _one(
        self, i: int, ev: MemorySearchEvent, witness: VerifiedWitness, deadline: float
    ) -> list[Finding]:
        root = witness.block(str(ev.root))
        try:  # the node's root: an entry that is not a CID is its fault, never this check's error
            entries = [canonical_cid(str(c)) for c in root["entries"]]
            hits = [canonical_cid(h) for h in ev.hits]
        except (ValueError, TypeError, KeyError) as exc:
            raise NotAnEntry(f"the searched root {ev.root} lists what is not an entry: {exc}") from None
        vectors = await self._vectors_of(sorted(set(entries)), witness, deadline)
        query = (await self.embedder.embed([ev.query]))[0].astype(np.float64)
        score = {cid: float(vec.astype(np.float64) @ query) for cid, vec in vectors.items()}
        tol = self.tolerance
        out: list[Finding] = []
        extra = Counter(hits) - Counter(entries)
        if extra:  # replay checks hits are entries of the root, not how often
            return [
                Finding(
                    Check.SEARCH,
                    f"syscall {i}: memory.search returns {next(iter(extra))} "
                    "more often than its root lists it",
                    call=i,
                    claimed=hits,
                )
            ]
        for rank, (cid, claimed) in enumerate(zip(hits, ev.scores, strict=True)):
            if claimed is None or not math.isfinite(claimed) or abs(claimed - score[cid]) > tol:
                out.append(
                    Finding(
                        Check.SEARCH,
                        f"syscall {i}: memory.search hit {rank} ({cid}) scores {score[cid]:.4f} "
                        f"for the query, not {claimed}",
                        call=i,
                        expected=round(score[cid], 6),
                        claimed=claimed,
                    )
                )
        above = math.inf  # the lowest score of the hits ranked above: drift never adds up
        for rank in range(len(hits)):
            if score[hits[rank]] > above + tol:
                out.append(
                    Finding(
                        Check.SEARCH,
                        f"syscall {i}: memory.search hit {rank} scores above a hit ranked before it",
                        call=i,
                        expected=[round(score[h], 6) for h in hits],
                        claimed=list(ev.scores),
                    )
                )
                break
            above = min(above, score[hits[rank]])
        left_out = Counter(entries) - Counter(hits)
        if left_out:
            best = max(left_out, key=lambda c: score[c])
            lowest = min(score[h] for h in hits)
            if score[best] > lowest + tol:
                out.append(
                    Finding(
                        Check.SEARCH,
                        f"syscall {i}: memory.search left out entry {best} (score {score[best]:.4f}), "
                        f"closer to the query than a hit returned (score {lowest:.4f})",
                        call=i,
                        expected=best,
                        claimed=hits,
                    )
                )
        return out

    async def _vectors_of(
        self, cids: Sequence[str], witness: VerifiedWitness, deadline: float
    ) -> dict[str, np.ndarray]:
        """Every entry's vector, computed here (once per entry) from its text.

        Raises:
            LookupError: an entry's text is nowhere to be read (by ``deadline``, loop time).
            NotAnEntry: an entry's block is not a memory entry.
        """
        known = self._known_vectors(cids)
        wanted = [c for c in cids if c not in known]
        texts = self.db.entry_texts(wanted) if self.db is not None and wanted else {}
        texts.update(await self._read_texts([c for c in wanted if c not in texts], witness, deadline))
        await asyncio.to_thread(check_lengths, texts)  # the tokenizer, off the event loop
        for start in range(0, len(wanted), EMBED_BATCH):
            chunk = wanted[start : start + EMBED_BATCH]
            vecs = await self.embedder.embed([texts[c] for c in chunk])
            fresh = {c: np.asarray(v, dtype="<f4") for c, v in zip(chunk, vecs, strict=True)}
            known.update(fresh)
            if self.db is not None:
                self.db.keep_entry_vectors({c: v.tobytes() for c, v in fresh.items()})
            else:
                self._vectors.update(fresh)
        return known

    async def _read_texts(
        self, cids: Sequence[str], witness: VerifiedWitness, deadline: float
    ) -> dict[str, str]:
        """The texts of entries known neither here nor to the database: from the witness, else
        the store, `READ_CONCURRENCY` reads at a time, all by ``deadline`` (a node serving slow
        blocks costs a validator one deadline per trace, not one store timeout per entry)."""
        gate = asyncio.Semaphore(READ_CONCURRENCY)

        async def read(cid: str) -> str | Exception:
            try:
                async with gate:
                    return entry_text(cid, await self._block(cid, witness))
            except (NotAnEntry, LookupError) as exc:
                return exc

        try:
            async with asyncio.timeout_at(deadline):
                got = await asyncio.gather(*(read(c) for c in cids))
        except TimeoutError:
            raise LookupError(
                f"the searched root's entries were not all read in {CHECK_DEADLINE_S:.0f} s"
            ) from None
        failed = [r for r in got if isinstance(r, Exception)]
        if failed:  # a block that is no entry is the node's fault, whatever else was unreadable
            raise next((e for e in failed if isinstance(e, NotAnEntry)), failed[0])
        return dict(zip(cids, (str(r) for r in got), strict=True))

    def _known_vectors(self, cids: Sequence[str]) -> dict[str, np.ndarray]:
        if self.db is None:
            return {c: self._vectors[c] for c in cids if c in self._vectors}
        return {c: np.frombuffer(v, dtype="<f4") for c, v in self.db.entry_vectors(cids).items()}

    async def _block(self, cid: str, witness: VerifiedWitness) -> object:
        try:
            return witness.block(cid)
        except KeyError:
            pass
        try:
            data = await asyncio.wait_for(self.store.get_block(cid), STORE_TIMEOUT_S)
            verify_block(cid, data)  # the store's word for a block is never taken
            return decode_dag(data)
        except Exception as exc:
            raise LookupError(f"entry {cid} of the searched root is not readable here: {exc}") from None


def entry_texts_of(trace: Trace, witness: VerifiedWitness) -> dict[str, str]:
    """The texts of the memory entries ``trace``'s adds wrote, as its (verified) witness carries
    them, by CID: content addressing makes them true whatever the writes were worth. Only what
    its ``memory.add`` events name: every entry of a root was added so, and other blocks a trace
    pads its witness with are not kept (a validator's database grows with real adds only)."""
    added = {canonical_cid(str(ev.entry)) for ev in trace.events if isinstance(ev, MemoryAddEvent)}
    out = {}
    for cid, block in witness.blocks.items():
        if cid not in added:
            continue
        try:
            text = entry_text(cid, block)
        except NotAnEntry:
            continue
        if len(text) <= MAX_ENTRY_CHARS:  # a longer one no search can use (`check_lengths`)
            out[cid] = text
    return out


@functools.cache
def protocol_embedder() -> Embedder:
    """The protocol's embedder, one per process (it loads on first use)."""
    from supernet.node.kernel.embeddings import MiniLMEmbedder

    return MiniLMEmbedder()


def entry_text(cid: str, block: object) -> str:
    """The text of memory entry ``cid`` whose block is ``block`` (`NotAnEntry` if it is none)."""
    text = block.get("text") if isinstance(block, Mapping) else None
    if not isinstance(block, Mapping) or block.get("type") != ENTRY_TYPE or not isinstance(text, str):
        raise NotAnEntry(f"entry {cid} of the searched root is not a memory entry")
    return text


def check_lengths(texts: Mapping[str, str]) -> None:
    """Refuse entries longer than an add writes (`check_entry`: characters, then tokens).

    Raises:
        NotAnEntry: the first such entry.
    """
    for cid, text in texts.items():
        try:
            check_entry(text)
        except MemoryStoreError as exc:
            raise NotAnEntry(f"entry {cid} of the searched root is too long: {exc}") from None
