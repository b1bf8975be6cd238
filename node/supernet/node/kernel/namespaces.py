"""Versioned per-namespace roots in the content store, shared by the memory and storage managers.

Each namespace (one agent of one user) has a root object in the store; every change writes a
new root that links the previous one (``prev``), so the root CID names one exact version and
the whole history stays reachable from it.

A write pins only what it adds: its content (pinned by the manager, a block or a file's chunks)
and its root (a direct pin, one block); nothing earlier is unpinned, so the history stays pinned
as it grows. (A recursive pin of each new root made the store walk every block the namespace
ever wrote, at every write, under the store's one lock.) A failed task's writes are undone by
moving the live root back first, which cannot fail, then dropping the direct pins of the roots it
wrote: a store error there leaves blocks pinned, never the failed task's root live. Content pins
stay: the same bytes are the same block for every user (a pin is no count), so unpinning what a
failed task wrote unpinned another user's entry or file; what a failed task leaves is bounded by
the trace cap (`Dispatcher._write_fits`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from supernet.node.kernel.errors import MemoryStoreError
from supernet.node.kernel.trace import cid_link

log = logging.getLogger(__name__)


def root_object(
    root_type: str, namespace: str, body: Mapping[str, Any], prev: str | None, writer: str | None
) -> dict[str, Any]:
    """A root block as `NamespaceRoots.commit` writes it: what a validator rebuilds to check a
    write (the replay, each write of a task; the origin check, each root below a task's first)."""
    return {"type": root_type, "namespace": namespace, **body, "prev": cid_link(prev), "writer": writer}


class NamespaceRoots:
    """The latest root CID of each namespace, with one writer at a time per namespace.

    Args:
        store: The content store client.
        root_type: The ``type`` field of this manager's root objects.
    """

    def __init__(self, store: Any, root_type: str) -> None:
        self.store = store
        self.root_type = root_type
        self._roots: dict[str, str] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def lock(self, namespace: str) -> asyncio.Lock:
        """The write lock of ``namespace`` (read-modify-write of its root must not interleave)."""
        return self._locks.setdefault(namespace, asyncio.Lock())

    def root(self, namespace: str) -> str | None:
        """The latest root CID of ``namespace`` (``None`` before its first write)."""
        return self._roots.get(namespace)

    def snapshot(self) -> dict[str, str]:
        """Every namespace's latest root, for the node to persist."""
        return dict(self._roots)

    def restore(self, roots: Mapping[str, str]) -> None:
        """Continue from roots persisted by :meth:`snapshot`."""
        self._roots.update(roots)

    def mark(self, prefix: str) -> dict[str, str]:
        """The roots of the namespaces starting with ``prefix`` (one user's), to `revert` to."""
        return {ns: cid for ns, cid in self._roots.items() if ns.startswith(prefix)}

    async def revert(self, prefix: str, marked: Mapping[str, str]) -> None:
        """Put the namespaces starting with ``prefix`` back to the roots `mark` returned: the live
        root moves back at once (in memory: it cannot fail), then the pins the undone writes took
        are dropped; a store error there is logged and leaves blocks pinned, nothing else."""
        for ns in [ns for ns in self._roots if ns.startswith(prefix) and self._roots[ns] != marked.get(ns)]:
            async with self.lock(ns):
                current, earlier = self._roots[ns], marked.get(ns)
                if earlier is None:
                    del self._roots[ns]
                else:
                    self._roots[ns] = earlier
                await self._unpin_since(ns, current, earlier)

    async def _unpin_since(self, namespace: str, current: str, earlier: str | None) -> None:
        """Drop the pins of the roots from ``current`` back to (not including) ``earlier``, following
        each root's own ``prev`` link."""
        cid: str | None = current
        while cid is not None and cid != earlier:
            try:
                prev = (await self.store.get_dag(cid)).get("prev")
                await self.store.pin_rm(cid, recursive=False)
            except Exception as exc:  # bookkeeping: the blocks stay, the root is already back
                log.warning("undoing %s: pins from %s on left in place (%s)", namespace, cid, exc)
                return
            cid = None if prev is None else str(prev)

    async def load(self, namespace: str) -> dict[str, Any] | None:
        """The latest root object of ``namespace`` (``None`` before its first write)."""
        cid = self._roots.get(namespace)
        if cid is None:
            return None
        try:
            obj: dict[str, Any] = await self.store.get_dag(cid)
        except Exception as exc:
            raise MemoryStoreError(f"cannot read root {cid} of {namespace}: {exc}") from exc
        return obj

    async def commit(
        self,
        namespace: str,
        body: Mapping[str, Any],
        writer: str | None = None,
    ) -> tuple[str, str | None]:
        """Write a new root of ``namespace`` holding ``body``; call with :meth:`lock` held.

        ``writer`` is the id of the task whose write this is (the request hash of a paid task). A
        root names it so that a validator can follow a task's first root back to the committed
        receipt whose trace wrote it (docs/validator.md, "Where a task's roots come from").

        Returns:
            (the new root CID, the previous root CID or ``None``).
        """
        prev = self._roots.get(namespace)
        obj = root_object(self.root_type, namespace, body, prev, writer)
        try:
            cid = str(await self.store.put_dag(obj))
            await self.store.pin_direct(cid)  # one block: the history is pinned already
        except Exception as exc:
            raise MemoryStoreError(f"cannot write a root of {namespace}: {exc}") from exc
        self._roots[namespace] = cid
        return cid, prev
