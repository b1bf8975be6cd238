"""Versioned per-namespace roots in the content store, shared by the memory and storage managers.

Each namespace (one agent of one user) has a root object in the store; every change writes a
new root that links the previous one (``prev``), so the root CID names one exact version and
the whole history stays reachable from it. The latest root is pinned recursively (which
keeps all of its history); the pin of the root it replaces is dropped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from supernet.node.kernel.errors import MemoryStoreError
from supernet.node.kernel.trace import cid_link


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
        """Put the namespaces starting with ``prefix`` back to the roots `mark` returned: the roots
        written since are dropped (unpinned), the marked ones pinned again."""
        for ns in [ns for ns in self._roots if ns.startswith(prefix) and self._roots[ns] != marked.get(ns)]:
            async with self.lock(ns):
                current, earlier = self._roots[ns], marked.get(ns)
                try:
                    if earlier is not None:
                        await self.store.pin_add(earlier)
                    await self.store.pin_rm(current)
                except Exception as exc:
                    raise MemoryStoreError(f"cannot revert {ns} to {earlier}: {exc}") from exc
                if earlier is None:
                    del self._roots[ns]
                else:
                    self._roots[ns] = earlier

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
        self, namespace: str, body: Mapping[str, Any], writer: str | None = None
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
            cid = str(await self.store.put_dag(obj, pin=True))
            if prev is not None and prev != cid:
                await self.store.pin_rm(prev)
        except Exception as exc:
            raise MemoryStoreError(f"cannot write a root of {namespace}: {exc}") from exc
        self._roots[namespace] = cid
        return cid, prev
