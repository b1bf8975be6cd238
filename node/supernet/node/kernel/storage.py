"""The storage manager: agent files in the content store, versioned by CID, pinned.

A namespace's root ``{"type": "supernet/fs-root", "namespace", "files": {path: [version
links, newest last]}, "prev"}`` names every version of every file; a file version is a
``supernet/file`` (docs/protocol.md), so its CID is its content's. Reading an older version
is allowed only for a CID in that path's history: an agent reads its own files, nothing else.

History only grows. **Rollback** to an older version appends that version's CID again (it is the
latest once more, under a new version number); **delete** appends a tombstone (``null``): the
file is gone from `StorageManager.get` and `StorageManager.list_files`, but its earlier versions
stay in the history (and pinned), readable by CID and restorable by a rollback; a put after a
delete starts the file again. **Versions** lists a path's history, tombstones included. Each is
one new root, so every state a namespace was in stays named by a root CID.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from supernet.node.kernel.errors import MemoryStoreError
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


@dataclass(frozen=True)
class FileChange:
    """A rollback or a delete: the entry appended to a path's history and the namespace's roots.

    Attributes:
        cid: The version made the latest again (a rollback), ``None`` for a tombstone (a delete).
        root_cid: The namespace's new root.
        prev_root: The root it replaced.
        version: The number of the appended entry (1-based position in the path's history).
    """

    cid: str | None
    root_cid: str
    prev_root: str
    version: int


def history_of(root: Any, path: str) -> list[str | None]:
    """The version CIDs of ``path`` in a decoded fs-root (oldest first, ``None`` a tombstone)."""
    files = root.get("files") if isinstance(root, Mapping) else None
    versions = files.get(path) if isinstance(files, Mapping) else None
    if not isinstance(versions, list):
        return []
    return [None if v is None else str(v) for v in versions]


def missing_file(op: str, history: Sequence[str | None], path: str, version: str | None) -> str | None:
    """Why ``op`` (``storage.get``, ``storage.rollback``, ``storage.delete``) finds no such file in
    a root where ``path`` has ``history``: the `FileNotFoundError` message, None when it is there.
    One definition for the node and the replay, which recomputes the message an agent sees."""
    if op == "storage.get":
        if not history:
            return f"no file {path!r}"
        wanted = history[-1] if version is None else version
        if wanted is None:
            return f"file {path!r} was deleted"
        return None if wanted in history else f"{version} is not a version of {path!r} of this agent"
    if op == "storage.rollback":
        if not history:
            return f"no file {path!r}"
        # None (a tombstone) is no version to roll back to
        return (
            None if version is not None and version in history else f"{version} is not a version of {path!r}"
        )
    if op == "storage.delete":
        return f"no file {path!r}" if not history or history[-1] is None else None
    raise ValueError(f"not a file syscall that can miss: {op}")


def with_version(files: Mapping[str, Any], path: str, version: str | None) -> dict[str, Any]:
    """A root's ``files`` with ``version`` (a CID, or ``None`` for a delete) appended to ``path``'s
    history: the one change of a put, rollback or delete."""
    out = dict(files)
    out[path] = [*out.get(path, []), None if version is None else link(version)]
    return out


def latest_files(root: Any) -> dict[str, str]:
    """Every live file of a decoded fs-root with its latest version's CID (deleted ones left out)."""
    files = root.get("files") if isinstance(root, Mapping) else None
    if not isinstance(files, Mapping):
        return {}
    return {
        str(path): str(versions[-1])
        for path, versions in files.items()
        if isinstance(versions, list) and versions and versions[-1] is not None
    }


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
    """Puts, gets, lists, rolls back and deletes each namespace's files.

    Args:
        store: The content store client.
    """

    def __init__(self, store: Any) -> None:
        self.roots = NamespaceRoots(store, ROOT_TYPE)
        self._store = store

    async def put(self, namespace: str, path: str, data: bytes, writer: str | None = None) -> FileWrite:
        """Write a new version of ``path`` (the new root names ``writer``: `NamespaceRoots.commit`).

        Raises:
            ValueError: A bad path.
            MemoryStoreError: The store failed.
        """
        path = normalize_path(path)
        async with self.roots.lock(namespace):
            try:
                cid = str(await self._store.add_file(data, pin=True))  # its root and chunks
            except Exception as exc:
                raise MemoryStoreError(f"cannot write file {path}: {exc}") from exc
            files = with_version(await self._files(namespace), path, cid)
            root_cid, prev = await self.roots.commit(namespace, {"files": files}, writer)
        return FileWrite(cid, root_cid, prev, len(files[path]))

    async def get(self, namespace: str, path: str, version: str | None = None) -> tuple[str, bytes]:
        """Read the latest version of ``path``, or the version whose CID is ``version``.

        Returns:
            (the version's CID, its bytes).

        Raises:
            FileNotFoundError: No such file in this namespace, or ``version`` is not a version of
                its ``path`` (as `rollback`: the root decides it, so a replay reproduces it; an
                ``AccessDeniedError`` is the access manager's alone, and a replay takes one it
                does not raise itself for a fabricated refusal).
        """
        path = normalize_path(path)
        history = history_of(await self.roots.load(namespace), path)
        missing = missing_file("storage.get", history, path, version)
        if missing is not None:
            raise FileNotFoundError(missing)
        cid = history[-1] if version is None else version
        assert cid is not None
        try:
            return cid, await self._store.cat(cid)
        except Exception as exc:
            raise MemoryStoreError(f"cannot read file {path} ({cid}): {exc}") from exc

    async def list_files(self, namespace: str) -> dict[str, str]:
        """Every file of ``namespace`` with its latest version's CID (deleted files left out)."""
        return latest_files(await self.roots.load(namespace))

    async def rollback(
        self, namespace: str, path: str, version: str, writer: str | None = None
    ) -> FileChange:
        """Make the version of ``path`` whose CID is ``version`` the latest again.

        The history keeps everything: the version is appended once more (a new version number),
        so the rollback itself can be rolled back. A deleted file can be rolled back too.

        Raises:
            ValueError: A bad path.
            FileNotFoundError: No such file, or ``version`` is not one of its versions.
            MemoryStoreError: The store failed.
        """
        path = normalize_path(path)
        async with self.roots.lock(namespace):
            files = await self._files(namespace)
            history = [None if v is None else str(v) for v in files.get(path, [])]
            missing = missing_file("storage.rollback", history, path, version)
            if missing is not None:
                raise FileNotFoundError(missing)
            return await self._append(namespace, files, path, version, writer)

    async def delete(self, namespace: str, path: str, writer: str | None = None) -> FileChange:
        """Delete ``path``: a tombstone ends its history (earlier versions stay, by CID).

        Raises:
            ValueError: A bad path.
            FileNotFoundError: No such file, or it is deleted already.
            MemoryStoreError: The store failed.
        """
        path = normalize_path(path)
        async with self.roots.lock(namespace):
            files = await self._files(namespace)
            history = [None if v is None else str(v) for v in files.get(path, [])]
            missing = missing_file("storage.delete", history, path, None)
            if missing is not None:
                raise FileNotFoundError(missing)
            return await self._append(namespace, files, path, None, writer)

    async def versions(self, namespace: str, path: str) -> list[str | None]:
        """Every version CID of ``path``, oldest first, ``None`` for a delete; [] for no such file.

        Raises:
            ValueError: A bad path.
        """
        return history_of(await self.roots.load(namespace), normalize_path(path))

    async def _append(
        self,
        namespace: str,
        files: dict[str, list[Any]],
        path: str,
        version: str | None,
        writer: str | None,
    ) -> FileChange:
        """Append ``version`` (``None``: a tombstone) to ``path``'s history and commit; call with
        the namespace's lock held."""
        files = with_version(files, path, version)
        root_cid, prev = await self.roots.commit(namespace, {"files": files}, writer)
        assert prev is not None  # the path has a history, so the namespace has a root
        return FileChange(version, root_cid, prev, len(files[path]))

    async def _files(self, namespace: str) -> dict[str, list[Any]]:
        root = await self.roots.load(namespace)
        return dict(root["files"]) if root else {}
