"""The storage manager: agent files in the content store, versioned by CID, pinned.

A namespace's root ``{"type": "supernet/fs-root", "namespace", "files": {path: [version
links, newest last]}, "prev"}`` names every version of every file; a file version is a
``supernet/file`` (docs/protocol.md), so its CID is its content's. Reading an older version
is allowed only for a CID in that path's history: an agent reads its own files, nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from supernet.node.kernel.errors import AccessDeniedError, MemoryStoreError
from supernet.node.kernel.namespaces import NamespaceRoots
from supernet.sdk.store.cids import link

ROOT_TYPE = "supernet/fs-root"
MAX_PATH_CHARS = 256


@dataclass(frozen=True)
class FileWrite:
    """A written file version and the namespace's new root."""

    cid: str
    root_cid: str
    prev_root: str | None
    version: int


def normalize_path(path: str) -> str:
    """A relative path without empty, ``.`` or ``..`` parts.

    Raises:
        ValueError: The path is empty, too long, or climbs out with ``..``.
    """
    parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts or ".." in parts or len(path) > MAX_PATH_CHARS:
        raise ValueError(f"bad file path {path!r}")
    return "/".join(parts)


class StorageManager:
    """Puts and gets each namespace's files.

    Args:
        store: The content store client.
    """

    def __init__(self, store: Any) -> None:
        self.roots = NamespaceRoots(store, ROOT_TYPE)
        self._store = store

    async def put(self, namespace: str, path: str, data: bytes) -> FileWrite:
        """Write a new version of ``path``.

        Raises:
            ValueError: A bad path.
            MemoryStoreError: The store failed.
        """
        path = normalize_path(path)
        async with self.roots.lock(namespace):
            try:
                cid = str(await self._store.add_file(data))
            except Exception as exc:
                raise MemoryStoreError(f"cannot write file {path}: {exc}") from exc
            files = await self._files(namespace)
            versions = [*files.get(path, []), link(cid)]
            files[path] = versions
            root_cid, prev = await self.roots.commit(namespace, {"files": files})
        return FileWrite(cid, root_cid, prev, len(versions))

    async def get(self, namespace: str, path: str, version: str | None = None) -> tuple[str, bytes]:
        """Read the latest version of ``path``, or the version whose CID is ``version``.

        Returns:
            (the version's CID, its bytes).

        Raises:
            FileNotFoundError: No such file in this namespace.
            AccessDeniedError: ``version`` is not a version of this namespace's ``path``.
        """
        path = normalize_path(path)
        history = [str(c) for c in (await self._files(namespace)).get(path, [])]
        if not history:
            raise FileNotFoundError(f"no file {path!r}")
        cid = history[-1] if version is None else version
        if cid not in history:
            raise AccessDeniedError(f"{version} is not a version of {path!r} of this agent")
        try:
            return cid, await self._store.cat(cid)
        except Exception as exc:
            raise MemoryStoreError(f"cannot read file {path} ({cid}): {exc}") from exc

    async def list_files(self, namespace: str) -> dict[str, str]:
        """Every file of ``namespace`` with its latest version's CID."""
        return {path: str(versions[-1]) for path, versions in (await self._files(namespace)).items()}

    async def _files(self, namespace: str) -> dict[str, list[Any]]:
        root = await self.roots.load(namespace)
        return dict(root["files"]) if root else {}
