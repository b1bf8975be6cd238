"""The embedded on-disk blockstore on its own: layout, atomic writes, pins, persistence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from supernet.sdk.store import (
    BlockNotFoundError,
    BlockTooLargeError,
    CIDMismatchError,
    InvalidBlockError,
    PinError,
    compute_cid,
    link,
)
from supernet.sdk.store.cids import encode_dag
from supernet.sdk.store.embedded import EmbeddedStore


@pytest.fixture
def store(tmp_path: Path) -> EmbeddedStore:
    return EmbeddedStore(tmp_path / "store")


def make_tree(store: EmbeddedStore) -> tuple[str, str, str]:
    """root (dag-cbor) -> mid (dag-cbor) -> leaf (raw); returns (root, mid, leaf)."""
    leaf = store.put(b"leaf")
    mid = store.put(encode_dag({"leaf": link(leaf)}), "dag-cbor")
    root = store.put(encode_dag({"mid": link(mid), "again": [link(leaf)]}), "dag-cbor")
    return root, mid, leaf


def test_put_writes_one_sharded_file_per_block(store: EmbeddedStore) -> None:
    cid = store.put(b"hello")
    assert cid == compute_cid(b"hello")
    path = store.block_path(cid)
    assert path == store.path / "blocks" / cid[-3:-1] / cid
    assert path.read_bytes() == b"hello"
    assert store.put(b"hello") == cid  # idempotent
    assert list(path.parent.iterdir()) == [path]
    assert list((store.path / "tmp").iterdir()) == []  # no temp file left behind
    assert store.stat(cid).size == 5 and store.has(cid)


def test_dag_cbor_blocks_must_decode(store: EmbeddedStore) -> None:
    with pytest.raises(InvalidBlockError):
        store.put(b"\xff\x00", "dag-cbor")
    assert not any((store.path / "blocks").rglob("*"))


def test_block_size_limit(tmp_path: Path) -> None:
    small = EmbeddedStore(tmp_path / "s", max_block_size=10)
    assert small.put(b"x" * 10)
    with pytest.raises(BlockTooLargeError, match="11 bytes is over the 10-byte limit"):
        small.put(b"x" * 11)


def test_get_verifies_unless_told_not_to(store: EmbeddedStore) -> None:
    cid = store.put(b"genuine")
    store.block_path(cid).write_bytes(b"tampered")
    with pytest.raises(CIDMismatchError):
        store.get(cid)
    assert store.get(cid, verify=False) == b"tampered"


def test_missing_blocks(store: EmbeddedStore) -> None:
    cid = compute_cid(b"never stored")
    for call in (store.get, store.stat, store.remove):
        with pytest.raises(BlockNotFoundError, match="could not find " + cid):
            call(cid)


def test_recursive_pin_protects_every_linked_block(store: EmbeddedStore) -> None:
    root, mid, leaf = make_tree(store)
    store.pin_add(root)
    assert store.pins("recursive") == {root: "recursive"}
    assert store.pins("indirect") == {mid: "indirect", leaf: "indirect"}
    for cid in (root, mid, leaf):
        with pytest.raises(PinError, match="pinned"):
            store.remove(cid)
    store.pin_rm(root)
    assert store.pins() == {}
    store.remove(leaf)
    assert not store.has(leaf)


def test_recursive_pin_needs_every_block(store: EmbeddedStore) -> None:
    root, _, leaf = make_tree(store)
    store.remove(leaf)
    with pytest.raises(BlockNotFoundError, match=leaf):
        store.pin_add(root)
    assert store.pins() == {}


def test_direct_pins(store: EmbeddedStore) -> None:
    root, mid, _ = make_tree(store)
    store.pin_add(mid, recursive=False)
    assert store.pins() == {mid: "direct"}
    store.pin_add(root)
    with pytest.raises(PinError, match="already pinned recursively"):
        store.pin_add(root, recursive=False)
    with pytest.raises(PinError, match="pinned recursively"):
        store.pin_rm(root, recursive=False)
    store.pin_rm(mid)
    with pytest.raises(PinError, match="not pinned or pinned indirectly"):
        store.pin_rm(mid)  # still indirectly pinned through root, which pin_rm cannot undo
    with pytest.raises(ValueError, match="unknown pin type"):
        store.pins("everything")


def test_restart_sees_blocks_and_pins(tmp_path: Path) -> None:
    first = EmbeddedStore(tmp_path / "s")
    root, mid, leaf = make_tree(first)
    first.pin_add(root)
    first.pin_add(leaf, recursive=False)
    saved = json.loads((tmp_path / "s" / "pins.json").read_text())
    assert saved == {"recursive": [root], "direct": [leaf]}

    second = EmbeddedStore(tmp_path / "s")
    assert second.get(mid) == first.get(mid)
    assert second.pins("recursive") == {root: "recursive"}
    assert second.pins("direct") == {leaf: "direct"}


def test_reopening_clears_interrupted_writes(tmp_path: Path) -> None:
    EmbeddedStore(tmp_path / "s").put(b"kept")
    leftover = tmp_path / "s" / "tmp" / "half-written"
    leftover.write_bytes(b"partial")
    reopened = EmbeddedStore(tmp_path / "s")
    assert not leftover.exists()
    assert reopened.get(compute_cid(b"kept")) == b"kept"
