"""The embedded on-disk blockstore behind ``supernet store serve`` (devnet and tests).

One file per block under ``blocks/<shard>/<cid>`` (the shard is two characters of the CID,
so no directory grows past ~1000 entries), written atomically: temp file, fsync,
``os.replace``, fsync of the directory (and of ``blocks/`` for a new shard). Putting a block
again compares the file with it and rewrites a damaged copy the same way. Pins live in
``pins.json``, replaced the same way, so a crash leaves either the old or the new pin set,
never a torn one. A recursive pin protects every block reachable through dag-cbor links, as in
Kubo.

>>> import tempfile
>>> from supernet.sdk.store.blockstore import EmbeddedStore
>>> store = EmbeddedStore(tempfile.mkdtemp())
>>> cid = store.put(b"hello")
>>> store.get(cid)
b'hello'
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from pathlib import Path

from supernet.sdk.store.cids import (
    MAX_BLOCK_SIZE,
    BlockStat,
    Codec,
    block_links,
    canonical_cid,
    compute_cid,
    decode_dag,
    verify_block,
)
from supernet.sdk.store.errors import BlockNotFoundError, BlockTooLargeError, PinError

PinType = str  # "recursive" | "direct" | "indirect"


class EmbeddedStore:
    """A blockstore in one directory, safe to share between threads of one process.

    Args:
        path: Directory of the store (created if missing). A new ``EmbeddedStore`` over the
            same directory sees the same blocks and pins.
        max_block_size: Largest block ``put`` accepts, in bytes.
        fsync: Flush every write to disk before reporting it done. Turn off only for
            throwaway stores where speed matters more than crash safety.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, max_block_size: int = MAX_BLOCK_SIZE, fsync: bool = True
    ) -> None:
        self.path = Path(path)
        self.max_block_size = max_block_size
        self._fsync = fsync
        self._lock = threading.RLock()
        self._blocks = self.path / "blocks"
        self._tmp = self.path / "tmp"
        self._pins_file = self.path / "pins.json"
        self._blocks.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self._tmp, ignore_errors=True)  # leftovers of writes cut short by a crash
        self._tmp.mkdir()
        self._durable_shards: set[str] = set()  # shard directories whose entry in blocks/ is on disk
        self._recursive, self._direct = self._load_pins()

    # ---------------------------------------------------------------- blocks

    def block_path(self, cid: str) -> Path:
        """Return the file that holds (or would hold) a block."""
        key = canonical_cid(cid)
        return self._blocks / key[-3:-1] / key

    def put(self, data: bytes, codec: Codec = "raw") -> str:
        """Store a block and return its CID; storing the same block twice is a no-op, except that a
        copy damaged on disk (bit rot, a restore, a crash with ``fsync=False``) is rewritten.

        Raises:
            BlockTooLargeError: If ``data`` is larger than ``max_block_size``.
            InvalidBlockError: If ``codec`` is dag-cbor and ``data`` does not decode.
        """
        if len(data) > self.max_block_size:
            raise BlockTooLargeError(
                f"block of {len(data)} bytes is over the {self.max_block_size}-byte limit; "
                "split it (StoreClient.add_file chunks files)"
            )
        if codec == "dag-cbor":
            decode_dag(data)
        cid = compute_cid(data, codec)
        target = self.block_path(cid)
        if not _holds(target, data):
            self._shard_dir(target.parent)
            self._write_atomic(target, data)
        return cid

    def get(self, cid: str, *, verify: bool = True) -> bytes:
        """Read a block.

        Args:
            cid: The block's CID.
            verify: Re-hash the bytes against the CID. The server turns this off, as Kubo
                does by default, so that the client's own check is what catches corruption.

        Raises:
            BlockNotFoundError: If the store does not hold the block.
            CIDMismatchError: If ``verify`` and the bytes on disk do not match the CID.
        """
        try:
            data = self.block_path(cid).read_bytes()
        except FileNotFoundError:
            raise BlockNotFoundError(_not_found(cid)) from None
        if verify:
            verify_block(cid, data)
        return data

    def has(self, cid: str) -> bool:
        """Tell whether the store holds a block."""
        return self.block_path(cid).is_file()

    def stat(self, cid: str) -> BlockStat:
        """Return a block's canonical CID and size, without reading it."""
        path = self.block_path(cid)
        try:
            return BlockStat(cid=path.name, size=path.stat().st_size)
        except FileNotFoundError:
            raise BlockNotFoundError(_not_found(cid)) from None

    def remove(self, cid: str) -> None:
        """Delete a block.

        Raises:
            PinError: If the block is pinned, directly or through a recursive pin.
            BlockNotFoundError: If the store does not hold it.
        """
        key = canonical_cid(cid)
        with self._lock:
            pinned = self.pins("all").get(key)
            if pinned:
                raise PinError(f"{key} is pinned ({pinned}): unpin it before removing")
            try:
                self.block_path(key).unlink()
            except FileNotFoundError:
                raise BlockNotFoundError(_not_found(key)) from None

    # ------------------------------------------------------------------ pins

    def pin_add(self, cid: str, *, recursive: bool = True) -> str:
        """Pin a block (and, if ``recursive``, everything it links to); return its CID.

        Raises:
            BlockNotFoundError: If the block or, for a recursive pin, a linked block is missing.
            PinError: If a direct pin is asked for a block already pinned recursively.
        """
        key = canonical_cid(cid)
        with self._lock:
            if recursive:
                self._walk(key)  # every linked block must be here before the pin holds
                self._recursive.add(key)
                self._direct.discard(key)
            else:
                if key in self._recursive:
                    raise PinError(f"{key} is already pinned recursively")
                self.stat(key)
                self._direct.add(key)
            self._save_pins()
        return key

    def pin_rm(self, cid: str, *, recursive: bool = True) -> str:
        """Remove a pin; return the CID.

        Raises:
            PinError: If the block is not pinned, pinned only indirectly, or pinned
                recursively while ``recursive`` is false.
        """
        key = canonical_cid(cid)
        with self._lock:
            if key in self._recursive:
                if not recursive:
                    raise PinError(f"{key} is pinned recursively")
                self._recursive.discard(key)
            elif key in self._direct:
                self._direct.discard(key)
            else:
                raise PinError(f"{key} is not pinned or pinned indirectly")
            self._save_pins()
        return key

    def pins(self, type: str = "all") -> dict[str, PinType]:
        """List pins as ``{cid: "recursive" | "direct" | "indirect"}``.

        Args:
            type: ``"recursive"``, ``"direct"``, ``"indirect"`` or ``"all"``.
        """
        if type not in ("recursive", "direct", "indirect", "all"):
            raise ValueError(f"unknown pin type {type!r}")
        with self._lock:
            out: dict[str, PinType] = {}
            if type in ("indirect", "all"):
                for root in sorted(self._recursive):
                    out.update(dict.fromkeys(self._walk(root) - {root}, "indirect"))
            if type in ("direct", "all"):
                out.update(dict.fromkeys(self._direct, "direct"))
            if type in ("recursive", "all"):
                out.update(dict.fromkeys(self._recursive, "recursive"))
            return out

    # -------------------------------------------------------------- internal

    def _walk(self, root: str) -> set[str]:
        """Return ``root`` and every block reachable from it; raise if one is missing."""
        seen = {root}
        stack = [root]
        while stack:
            cid = stack.pop()
            for child in block_links(cid, self.get(cid, verify=False)):
                if child not in seen:
                    seen.add(child)
                    stack.append(child)
        return seen

    def _shard_dir(self, shard: Path) -> None:
        """Create a shard directory if missing and, once per shard and process, fsync ``blocks/``
        so that the shard's entry (and so a block renamed into it) survives a power loss."""
        if shard.name in self._durable_shards:
            return
        shard.mkdir(exist_ok=True)
        if self._fsync:
            _fsync_dir(self._blocks)
        self._durable_shards.add(shard.name)

    def _write_atomic(self, target: Path, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=self._tmp)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                if self._fsync:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        if self._fsync:
            _fsync_dir(target.parent)

    def _load_pins(self) -> tuple[set[str], set[str]]:
        try:
            raw = json.loads(self._pins_file.read_text())
        except FileNotFoundError:
            return set(), set()
        return set(raw.get("recursive", [])), set(raw.get("direct", []))

    def _save_pins(self) -> None:
        body = {"recursive": sorted(self._recursive), "direct": sorted(self._direct)}
        self._write_atomic(self._pins_file, json.dumps(body, indent=1).encode())


def _holds(path: Path, data: bytes) -> bool:
    """Whether the file at ``path`` holds exactly ``data`` (size first, then the bytes)."""
    try:
        if path.stat().st_size != len(data):
            return False
        return path.read_bytes() == data
    except FileNotFoundError:
        return False


def _fsync_dir(path: Path) -> None:
    dir_fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _not_found(cid: str) -> str:
    # Kubo's wording for a block missing from the local blockstore, which clients match on.
    return f"block was not found locally (offline): ipld: could not find {cid}"
