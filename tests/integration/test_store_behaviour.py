"""One behaviour suite for ``StoreClient``, run against each embedded-store backend.

``store_backend`` (tests/store_fixtures.py) runs every test twice: in process over httpx's
ASGI transport, and served by uvicorn over real HTTP. CIDs are checked against ones
computed locally (themselves checked against the spec and ``multiformats`` in the unit tests).
"""

from __future__ import annotations

import asyncio
import os

import pytest
from multiformats import CID, multihash
from store_fixtures import StoreBackend
from supernet.sdk.store import (
    CHUNK_SIZE,
    MAX_BLOCK_SIZE,
    BlockNotFoundError,
    BlockTooLargeError,
    CIDMismatchError,
    InvalidBlockError,
    InvalidCIDError,
    PinError,
    RequestTooLargeError,
    compute_cid,
    file_cid,
    link,
)

UNKNOWN = compute_cid(b"no store holds this")
UNKNOWN_DAG = compute_cid(b"\xa0", "dag-cbor")  # the empty map, never stored here


async def test_blocks_round_trip_under_their_standard_cid(store_backend: StoreBackend) -> None:
    store = store_backend.client()
    data = os.urandom(1000)
    cid = await store.put_block(data)
    assert cid == str(CID("base32", 1, "raw", multihash.digest(data, "sha2-256")))
    assert await store.get_block(cid) == data
    stat = await store.stat(CID.decode(cid).encode("base58btc"))  # any multibase in, base32 out
    assert (stat.cid, stat.size) == (cid, 1000)
    assert await store.put_block(data) == cid
    assert await store.put_block(b"") == compute_cid(b"")
    assert await store.get_block(compute_cid(b"")) == b""


async def test_dag_objects_keep_their_links(store_backend: StoreBackend) -> None:
    store = store_backend.client()
    leaf = await store.put_block(b"leaf")
    obj = {"kind": "trace", "steps": [1, 2, 3], "input": link(leaf), "ok": True, "score": 0.5}
    cid = await store.put_dag(obj)
    assert cid.startswith("bafy") and CID.decode(cid).codec.name == "dag-cbor"
    back = await store.get_dag(cid)
    assert back == obj
    assert str(back["input"]) == leaf
    with pytest.raises(InvalidBlockError, match="not dag-cbor"):
        await store.get_dag(leaf)
    with pytest.raises(InvalidBlockError):
        await store.put_block(b"\xff\xfe", "dag-cbor")


@pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE + 7])
async def test_files_round_trip_with_the_same_cid_everywhere(store_backend: StoreBackend, size: int) -> None:
    store = store_backend.client()
    data = os.urandom(size)
    cid = await store.add_file(data)
    assert cid == file_cid(data)  # computed without any store: equal on every backend
    assert await store.cat(cid) == data
    root = await store.get_dag(cid)
    assert root["type"] == "supernet/file" and root["size"] == size
    assert len(root["chunks"]) == -(-size // CHUNK_SIZE)
    for chunk in root["chunks"]:
        assert (await store.stat(str(chunk))).size <= CHUNK_SIZE


async def test_cat_refuses_what_is_not_a_file(store_backend: StoreBackend) -> None:
    store = store_backend.client()
    with pytest.raises(InvalidBlockError, match="raw block"):
        await store.cat(await store.put_block(b"just bytes"))
    with pytest.raises(InvalidBlockError, match="not a supernet/file"):
        await store.cat(await store.put_dag({"type": "something else"}))


async def test_corrupt_block_on_disk_fails_loudly(store_backend: StoreBackend) -> None:
    store = store_backend.client()
    cid = await store.put_block(b"the genuine bytes")
    store_backend.store.block_path(cid).write_bytes(b"the forged bytes!")
    with pytest.raises(CIDMismatchError, match=f"block {cid} is corrupt"):
        await store.get_block(cid)

    data = os.urandom(CHUNK_SIZE + 100)
    root = await store.add_file(data)
    second_chunk = (await store.get_dag(root))["chunks"][1]
    store_backend.store.block_path(str(second_chunk)).write_bytes(os.urandom(100))
    with pytest.raises(CIDMismatchError):
        await store.cat(root)


async def test_unknown_and_invalid_cids(store_backend: StoreBackend) -> None:
    store = store_backend.client()
    for call, cid in [
        (store.get_block, UNKNOWN),
        (store.stat, UNKNOWN),
        (store.cat, UNKNOWN_DAG),
        (store.get_dag, UNKNOWN_DAG),
    ]:
        with pytest.raises(BlockNotFoundError, match=f"could not find {cid}"):
            await call(cid)
    for bad in ("", "not-a-cid", "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"):
        with pytest.raises(InvalidCIDError):
            await store.get_block(bad)
    with pytest.raises(BlockNotFoundError):
        await store.rm_block(UNKNOWN)


async def test_block_size_limits(store_backend: StoreBackend) -> None:
    store = store_backend.client()
    assert await store.put_block(b"x" * MAX_BLOCK_SIZE) == compute_cid(b"x" * MAX_BLOCK_SIZE)
    with pytest.raises(BlockTooLargeError, match="use add_file"):
        await store.put_block(b"x" * (MAX_BLOCK_SIZE + 1))  # refused before sending

    # A client with looser limits meets the server's: the block limit, then the body limit.
    loose = store_backend.client(max_block_size=8 * MAX_BLOCK_SIZE)
    with pytest.raises(BlockTooLargeError, match="over the 1048576-byte limit"):
        await loose.put_block(b"y" * (MAX_BLOCK_SIZE + 1))
    with pytest.raises(RequestTooLargeError, match="request body"):
        await loose.put_block(b"z" * (3 * MAX_BLOCK_SIZE))
    with pytest.raises(BlockNotFoundError):
        await store.stat(compute_cid(b"y" * (MAX_BLOCK_SIZE + 1)))
    # Bigger data goes through as a file.
    big = os.urandom(2 * MAX_BLOCK_SIZE + 3)
    assert await store.cat(await store.add_file(big)) == big


async def test_recursive_pin_of_a_file_keeps_its_chunks(store_backend: StoreBackend) -> None:
    store = store_backend.client()
    data = os.urandom(2 * CHUNK_SIZE + 1)
    root = await store.add_file(data)
    chunks = [str(c) for c in (await store.get_dag(root))["chunks"]]
    assert await store.pin_ls() == {}
    assert await store.pin_add(root) == [root]
    assert await store.pin_ls() == {root: "recursive"}
    assert await store.pin_ls("indirect") == dict.fromkeys(chunks, "indirect")
    with pytest.raises(PinError, match="pinned"):
        await store.rm_block(chunks[0])
    assert await store.pin_rm(root) == [root]
    with pytest.raises(PinError, match="not pinned"):
        await store.pin_rm(root)
    await store.rm_block(chunks[0])
    with pytest.raises(BlockNotFoundError):
        await store.cat(root)
    with pytest.raises(BlockNotFoundError, match=chunks[0]):
        await store.pin_add(root)  # a recursive pin needs every block
    assert await store.pin_ls("all") == {}


async def test_pin_on_add_and_direct_pins(store_backend: StoreBackend) -> None:
    store = store_backend.client()
    root = await store.add_file(b"pinned at once", pin=True)
    assert await store.pin_ls() == {root: "recursive"}
    leaf = await store.put_block(b"direct")
    await store.pin_add(leaf, recursive=False)
    assert (await store.pin_ls("direct")) == {leaf: "direct"}
    assert set(await store.pin_ls("all")) == {root, leaf, compute_cid(b"pinned at once")}


async def test_restart_keeps_blocks_and_pins(store_backend: StoreBackend) -> None:
    store = store_backend.client()
    data = os.urandom(CHUNK_SIZE + 5)
    root = await store.add_file(data, pin=True)
    loose = await store.put_block(b"unpinned but stored")

    again = await store_backend.restart()
    assert await again.cat(root) == data
    assert await again.get_block(loose) == b"unpinned but stored"
    assert await again.pin_ls() == {root: "recursive"}


async def test_concurrent_writers_and_readers(store_backend: StoreBackend) -> None:
    store = store_backend.client()
    blobs = [os.urandom(2000) for _ in range(24)] * 2  # each block written twice, concurrently
    cids = await asyncio.gather(*(store.put_block(b) for b in blobs))
    assert cids == [compute_cid(b) for b in blobs]
    assert await asyncio.gather(*(store.get_block(c) for c in cids)) == blobs


async def test_version(store_backend: StoreBackend) -> None:
    answer = await store_backend.client().version()
    assert answer["Agent"].startswith("supernet-embedded/") and answer["Version"]
