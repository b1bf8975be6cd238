"""Adversarial review of the content store and its HTTP surfaces, as an attacker sees them.

Scope: ``supernet.sdk.store`` (CIDs, dag-cbor, the embedded blockstore and its Kubo-RPC server, the
async ``StoreClient``) and the node's read-only ``/v1/store``, with the readers that judge what a node
serves (the validator's `Verifier`). Attackers: a node serving blocks to validators and clients, a
user uploading, a stranger on the network (or a web page in an operator's browser), a crash. Real
parts: the embedded store (in process, httpx's ASGI transport), a node service on the FAKE executor and
chain of ``tests/node_fixtures.py`` (only its store route is exercised), the real `Verifier`.

Found (``test_attack_*`` failed until fixed; each is now a ``test_defence_*``):

1. HIGH, FIXED: a dag-cbor block nested deeper than the process's recursion limit allows (~500
   levels at Python's default 1,000, ~50,000 in the node, validator and client, where ``py_ecc``
   raises the limit to 100,000; a ~195 KiB block of ``0x81`` bytes passes both) makes
   ``decode_dag`` raise ``RecursionError``, not the ``InvalidBlockError`` it documents. The
   validator's ``parse_trace_block`` catches only ``FormatError`` / ``InvalidBlockError``, so a
   cheating node that commits such a block as a receipt's trace gets ``unverifiable: trace
   unavailable`` with ``missing=True`` (an availability case the node answers by posting the very
   block, ~195 KiB of calldata, which ``Challenger.posted`` then cannot store: ``put_block``
   re-decodes it) instead of a ``trace.malformed`` finding: in the usual path (manifest served) the
   receipt is never judged; ``WriteLog`` files it "unreadable" too. (Only when the manifest is
   withheld does ``Challenger.claimed``, with a catch-all, call it malformed.) The embedded store
   answered the upload with a 500 (uncaught) instead of a 400. Fixed: ``cids.MAX_DAG_DEPTH`` = 64
   (the protocol's deepest document, evidence, is 36) bounds ``decode_dag`` (an iterative pre-scan
   of the CBOR heads) and ``encode_dag`` alike with ``InvalidBlockError``; the kernel records values
   of at most ``MAX_DAG_DEPTH - 8`` levels, so a trace it accepts always encodes.
2. MEDIUM, FIXED: the node's public ``/v1/store`` reads through the node's own ``StoreClient`` without
   Kubo's ``offline`` flag: every stranger's ``block/get`` / ``block/stat`` of a CID the node lacks
   becomes a network search (DHT + bitswap) of up to the client's 60 s, on the same connection pool
   (httpx: 100) the node's own trace and memory writes use, and the node serves any CID of the
   public IPFS network under its URL (an open gateway). No signature, no rate limit. Fixed:
   ``/v1/store`` reads through ``StoreClient.local_reader`` (``offline=true``, its own pool of 8).
3. MEDIUM, FIXED: the embedded store's RPC (``supernet store serve``, the devnet, and the node's
   default when ``store.url`` is unset) acts on cross-site browser requests: a web page the
   operator visits can POST ``pin/rm`` then ``block/rm`` (CORS "simple" requests, no preflight) to
   ``127.0.0.1:PORT`` (5001 for ``supernet store serve``; a random port the page must scan for in
   the node's case) and delete the node's traces, which then get it slashed for not serving them.
   Kubo refuses a request whose ``Origin`` is not allowed (403). Fixed: the store's
   ``_BrowserGuard`` answers 403 to any ``Origin``, a ``Sec-Fetch-Site`` other than ``none`` /
   ``same-origin``, and (served on a socket) a ``Host`` that is not a loopback name or the bound one.
4. LOW, FIXED: a CID whose sha2-256 multihash declares a 33-byte digest raises multiformats'
   ``MultihashValueError`` from ``canonical_cid`` (not ``InvalidCIDError``): the embedded store
   and the node's ``/v1/store`` answer a stranger's request with a 500, and a ``StoreClient`` caller
   that catches ``StoreError`` (the client's trace fetch) sees an unexpected exception. Fixed:
   ``_split_slow`` turns every error of ``CID.decode`` / ``raw_digest`` into ``InvalidCIDError``.
5. LOW, FIXED: ``StoreClient`` reads have no total deadline (httpx's timeout is per read): a node
   whose store URL a client follows drips a block a byte at a time and holds ``Client.verify`` /
   ``Client.trace`` for as long as it likes (``freshness.MAX_WALK`` = 256 blocks of it). Fixed:
   one deadline per call (``asyncio.timeout(self.timeout)`` around the request and the body).
6. LOW, FIXED: ``EmbeddedStore.put`` skips a block whose file exists, whatever it holds: a copy
   damaged on disk (bit rot, a restore, a crash with ``fsync=False``) is never repaired by putting
   the genuine bytes again; the put answers success and every read fails. Fixed: ``put`` compares
   an existing file (size, then bytes) with the data and rewrites it atomically if it differs.

Checked and holding (``test_defence_*`` / ``test_known_limit_*``):

- only CIDv1, sha2-256 (32-byte digest), raw or dag-cbor CIDs pass: identity (inline data),
  truncated digests, sha2-512, dag-pb / CIDv0, dag-json, trailing bytes, path-like strings are
  refused by the client before any request, by the embedded store and by the node with a 400;
  other spellings of an accepted CID (upper case, base58) map to the one canonical file name;
- dag-cbor has one encoding per value (unsorted or duplicate keys, non-minimal integers and
  lengths, indefinite lengths, short floats, foreign tags, trailing bytes are refused), so two
  blocks never decode to one value under two CIDs;
- the node's ``/v1/store`` never serves bytes that do not hash to the CID asked (a block damaged in
  its own store is an error, not the wrong bytes);
- a writer killed mid-put never leaves a torn block under its final name (temp file, fsync,
  ``os.replace``, directory fsync); the reopened store clears the temp files;
- known limit: every block the node holds (memory entries, files, traces) is readable by any
  stranger who knows its CID, with no grant (README "Results are readable by their user only":
  traces are public documents until they are encrypted to the validator set).

Also seen (not tested): ``decode_dag`` of a 1 MiB block of ~1M empty lists or ~25k links costs
seconds of CPU, run on the event loop of whoever calls ``get_dag`` (validator manifests, a client's
freshness walk); ``EmbeddedStore.remove`` walks every recursive pin's graph on each ``block/rm``;
``put`` created a shard directory without fsyncing ``blocks/`` (now fsynced once per shard and process).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from eth_account import Account
from supernet.node.service.config import NodeSettings
from supernet.node.service.identity import load_account
from supernet.node.service.runner import NodeService
from supernet.sdk.chain.eip712 import Domain, TaskRequest, hash_task_request, sign_task_request
from supernet.sdk.chain.receipts import Receipt, input_hash, output_hash, sign_receipt, trace_hash
from supernet.sdk.formats.manifest import ManifestEntry
from supernet.sdk.store import StoreClient
from supernet.sdk.store.blockstore import EmbeddedStore
from supernet.sdk.store.cids import canonical_cid, compute_cid, decode_dag, encode_dag
from supernet.sdk.store.embedded import serve_in_thread
from supernet.sdk.store.errors import CIDMismatchError, InvalidBlockError, InvalidCIDError, StoreError
from supernet.sdk.store.server import create_app
from supernet.validator.evidence import Check
from supernet.validator.tool_check import RegistryRunner
from supernet.validator.verifier import Manifest, Verifier

from tests.node_fixtures import FakeChain, FakeExecutor

NESTED_BOMB = b"\x81" * 200_000 + b"\x00"
"""Valid dag-cbor: an integer inside 200,000 one-element arrays (~195 KiB, under ``MAX_TRACE_BYTES``).
Past the recursion limit of every role: 1,000 in a bare ``supernet store serve``, 100,000 in the node,
validator and client processes (``py_ecc``, imported through the chain code, raises it)."""

HELLO_DIGEST = hashlib.sha256(b"hello").digest()


def _b32(binary: bytes) -> str:
    return "b" + base64.b32encode(binary).decode().lower().rstrip("=")


OVERLONG_DIGEST_CID = _b32(b"\x01\x55\x12\x21" + HELLO_DIGEST + b"\x00")
"""A raw CIDv1 whose sha2-256 multihash declares (and carries) a 33-byte digest."""


def _write_as_stored(store: EmbeddedStore, cid: str, data: bytes) -> None:
    """Put ``data`` on disk under ``cid`` as a store that does not decode dag-cbor on ``block/put``
    holds it (Kubo's ``block put --cid-codec dag-cbor`` only hashes the bytes)."""
    path = store.block_path(cid)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


class RecordingStore:
    """The real embedded store's ASGI app, recording the path and query of every request it gets."""

    def __init__(self, store: EmbeddedStore) -> None:
        self.app = create_app(store)
        self.seen: list[tuple[str, str]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.seen.append((scope["path"], scope["query_string"].decode()))
        await self.app(scope, receive, send)


NodeRig = tuple[NodeService, EmbeddedStore, RecordingStore, httpx.AsyncClient]


@pytest_asyncio.fixture
async def node(
    tmp_path: Path,
) -> AsyncIterator[tuple[NodeService, EmbeddedStore, RecordingStore, httpx.AsyncClient]]:
    """A node service (fake executor and chain) over a real embedded store; an HTTP client of a
    stranger (no read grant) on its app."""
    blocks = EmbeddedStore(tmp_path / "store", fsync=False)
    recorder = RecordingStore(blocks)
    store = StoreClient("http://embedded-store", transport=httpx.ASGITransport(app=recorder))
    cfg = NodeSettings.load(None, data_dir=tmp_path / "node")
    service = NodeService(cfg, FakeExecutor(), load_account(cfg), store, FakeChain())
    await service.setup()
    stranger = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=service.app, raise_app_exceptions=False), base_url="http://node"
    )
    try:
        yield service, blocks, recorder, stranger
    finally:
        await stranger.aclose()
        await service.cleanup()
        await store.aclose()


# ------------------------------------------------------------------------------ 1. nesting


async def test_defence_a_deeply_nested_block_is_not_reported_as_an_invalid_block(tmp_path: Path) -> None:
    """HIGH (root cause of the verifier's misclassification below). ``decode_dag`` documents
    ``InvalidBlockError`` for what it cannot decode; a block nested 200,000 deep raises
    ``RecursionError`` from it, from ``EmbeddedStore.put`` and from ``StoreClient.put_block``.
    Fix: an explicit depth bound in ``decode_dag`` (``InvalidBlockError`` past it)."""
    assert decode_dag(b"\x81" * 20 + b"\x00") is not None  # control: a shallow nest decodes
    with pytest.raises(InvalidBlockError):
        decode_dag(NESTED_BOMB)
    with pytest.raises(InvalidBlockError):
        EmbeddedStore(tmp_path / "store", fsync=False).put(NESTED_BOMB, "dag-cbor")
    transport = httpx.ASGITransport(app=create_app(EmbeddedStore(tmp_path / "other", fsync=False)))
    store = StoreClient("http://embedded-store", transport=transport)
    try:
        with pytest.raises(InvalidBlockError):
            await store.put_block(NESTED_BOMB, "dag-cbor")  # what `Challenger.posted` does
    finally:
        await store.aclose()


def test_defence_the_encoder_writes_only_what_every_reader_decodes() -> None:
    """The same bound on both sides: ``MAX_DAG_DEPTH`` levels encode and decode, one more is an
    ``InvalidBlockError`` when encoding (a cycle too, not a ``RecursionError``); the kernel holds a
    recorded value (a tool's result) to fewer levels, so the trace around it still encodes."""
    from supernet.node.kernel.trace import MAX_RECORDED_DEPTH, as_recorded
    from supernet.sdk.store.cids import MAX_DAG_DEPTH

    def nested(levels: int) -> Any:
        value: Any = 0
        for _ in range(levels):
            value = [value]
        return value

    assert decode_dag(encode_dag(nested(MAX_DAG_DEPTH))) == nested(MAX_DAG_DEPTH)
    cycle: list[Any] = []
    cycle.append(cycle)
    for bad in (nested(MAX_DAG_DEPTH + 1), {"a": nested(MAX_DAG_DEPTH)}, cycle):
        with pytest.raises(InvalidBlockError, match="deeper than"):
            encode_dag(bad)
    assert as_recorded(nested(MAX_RECORDED_DEPTH)) == nested(MAX_RECORDED_DEPTH)
    with pytest.raises(ValueError, match="not recordable"):
        as_recorded(nested(MAX_RECORDED_DEPTH + 1))
    trace = {"type": "t", "events": [{"kind": "tool", "result": nested(MAX_RECORDED_DEPTH)}]}
    assert decode_dag(encode_dag(trace)) == trace


async def test_defence_the_embedded_store_answers_a_nested_block_with_a_server_error(tmp_path: Path) -> None:
    """LOW (same root cause). A user's upload of the nested block is a client error (400, Kubo's
    shape), not an unhandled 500; the store's fuzz budget promises 0 server errors."""
    app = create_app(EmbeddedStore(tmp_path / "store", fsync=False))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://store") as rpc:
        files = {"file": ("block", NESTED_BOMB, "application/octet-stream")}
        r = await rpc.post("/api/v0/block/put", params={"cid-codec": "dag-cbor"}, files=files)
    assert r.status_code == 400, (r.status_code, r.text[:200])


async def test_defence_a_nested_trace_is_called_unavailable_not_malformed(tmp_path: Path) -> None:
    """HIGH. A cheating node commits a receipt whose trace block (its CID the receipt's
    ``traceHash``) is the nested block. The validator reads it fine from its store, but
    ``parse_trace_block`` lets ``RecursionError`` out and `Verifier._stage` files it as "trace
    unavailable" (``missing=True``): an availability case the node answers by posting the same
    block, which the challenger then cannot store. The secure verdict is the node's fault,
    ``trace.malformed``, as for any other block that is not a trace (the control)."""
    domain = Domain(chain_id=31337, verifying_contract="0x" + "33" * 20)
    user, node = Account.from_key("0x" + "01" * 32), Account.from_key("0x" + "02" * 32)
    blocks = EmbeddedStore(tmp_path / "store", fsync=False)
    store = StoreClient("http://embedded-store", transport=httpx.ASGITransport(app=create_app(blocks)))
    verifier = Verifier(store, None, RegistryRunner(store), domain, "0x" + "44" * 20)

    async def verdict_for(block: bytes) -> Any:
        cid = compute_cid(block, "dag-cbor")
        _write_as_stored(blocks, cid, block)
        req = TaskRequest(
            user=user.address,
            node=node.address,
            model_id=b"\x07" * 32,
            agent_hash=b"\xcd" * 32,
            input_hash=input_hash("hi"),
            max_fee=100,
            nonce=1,
            deadline=2**40,
        )
        receipt = Receipt(
            request_hash=hash_task_request(req, domain),
            user=user.address,
            model_id=req.model_id,
            input_hash=req.input_hash,
            output_hash=output_hash("made up"),
            trace_hash=trace_hash(cid),
            fee=100,
        )
        entry = ManifestEntry(
            receipt,
            receipt.leaf(),
            sign_receipt(receipt, node),
            cid,
            "chat",
            req,
            sign_task_request(req, domain, user),
        )
        return await verifier.verify(1, node.address, 0, Manifest({0: entry}))

    try:
        control = await verdict_for(encode_dag({"type": "not a trace"}))
        assert [f.check for f in control.findings] == [Check.TRACE_MALFORMED], control
        bomb = await verdict_for(NESTED_BOMB)
        assert not bomb.missing, f"a readable block judged unavailable: {bomb.unverifiable}"
        assert Check.TRACE_MALFORMED in [f.check for f in bomb.findings], bomb
    finally:
        await store.aclose()


# ------------------------------------------------------------------- 2. the node's public store


async def test_defence_the_nodes_public_store_searches_the_network_for_a_strangers_cid(node: Any) -> None:
    """MEDIUM. A stranger's read of ``/v1/store`` reaches the node's store without ``offline=true``:
    against Kubo (production) each CID the node lacks is a network search of up to 60 s on the
    pool the node's own writes use, and the node relays any public IPFS block under its URL. The
    node's public reads must ask its store for local blocks only."""
    _, _, recorder, stranger = node
    absent = compute_cid(b"a block this node never stored")
    for path in ("block/get", "block/stat"):
        r = await stranger.post(f"/v1/store/api/v0/{path}", params={"arg": absent})
        assert r.status_code == 500 and "not found" in r.json()["Message"], r.text  # Kubo's answer
    asked = [query for path, query in recorder.seen if path.endswith(("block/get", "block/stat"))]
    assert len(asked) == 2, recorder.seen
    assert all("offline=true" in query for query in asked), asked


async def test_defence_a_cid_with_an_overlong_digest_is_a_server_error(node: Any) -> None:
    """LOW. ``canonical_cid`` lets multiformats' ``MultihashValueError`` out for a sha2-256
    multihash of 33 bytes: the embedded store and the node answer a stranger with 500 instead of
    400, and a client catching ``StoreError`` sees an unexpected ``ValueError``."""
    _, _, _, stranger = node
    r = await stranger.post("/v1/store/api/v0/block/get", params={"arg": NOT_SERVED["CIDv0"]})
    assert r.status_code == 400, r.text  # control: another unsupported CID is a client error
    r = await stranger.post("/v1/store/api/v0/block/get", params={"arg": OVERLONG_DIGEST_CID})
    assert r.status_code == 400, (r.status_code, r.text[:200])
    with pytest.raises(InvalidCIDError):
        canonical_cid(OVERLONG_DIGEST_CID)


async def test_defence_the_node_never_serves_bytes_that_do_not_hash_to_the_cid(node: Any) -> None:
    """A block damaged in the node's own store (or a store that lies to it) is an error on
    ``/v1/store``, never the wrong bytes under the CID asked."""
    _, blocks, _, stranger = node
    cid = blocks.put(b"a trace the validators need")
    r = await stranger.post("/v1/store/api/v0/block/get", params={"arg": cid})
    assert r.status_code == 200 and r.content == b"a trace the validators need"
    blocks.block_path(cid).write_bytes(b"a trace the validators need, edited")
    r = await stranger.post("/v1/store/api/v0/block/get", params={"arg": cid})
    assert r.status_code != 200 and b"edited" not in r.content, r.text


async def test_known_limit_a_stranger_reads_any_block_the_node_holds(node: Any) -> None:
    """Known limit (README "Results are readable by their user only"): ``/v1/store`` needs no grant,
    so anyone with a CID (every memory root and file is named in a public trace) reads a user's
    memory entries and files. What would fix it: traces and private blocks encrypted to the user
    and the validator set."""
    _, blocks, _, stranger = node
    entry = encode_dag({"type": "supernet/memory-entry", "text": "my bank pin is 1234", "metadata": {}})
    cid = blocks.put(entry, "dag-cbor")
    r = await stranger.post("/v1/store/api/v0/block/get", params={"arg": cid})
    assert r.status_code == 200 and b"1234" in r.content


# -------------------------------------------------------------------- 3. the store's own RPC


async def test_defence_a_web_page_deletes_blocks_from_the_embedded_store(tmp_path: Path) -> None:
    """MEDIUM. A browser on the operator's machine sends a page's cross-site ``POST`` (no body, no
    custom header: a CORS simple request, no preflight) to the store on loopback; the embedded
    store acts on it, so the page unpins and removes the node's traces. Kubo answers 403 to an
    ``Origin`` it does not allow. Control: the SDK's own requests (no ``Origin``) still work."""
    blocks = EmbeddedStore(tmp_path / "store", fsync=False)
    trace = blocks.put(b"a committed trace")
    blocks.pin_add(trace)
    browser = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"}
    transport = httpx.ASGITransport(app=create_app(blocks))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:5001") as rpc:
        assert (await rpc.post("/api/v0/block/stat", params={"arg": trace})).status_code == 200  # control
        for path in ("pin/rm", "block/rm"):
            r = await rpc.post(f"/api/v0/{path}", params={"arg": trace}, headers=browser)
            assert r.status_code == 403, (path, r.status_code, r.text)
    assert blocks.has(trace) and trace in blocks.pins("recursive")


async def test_defence_a_rebound_host_name_is_refused_by_the_served_store(tmp_path: Path) -> None:
    """DNS rebinding: a page whose own name resolves to 127.0.0.1 is same-origin with the store, so
    the browser sends its name as ``Host``. The store served on a socket (``serve_in_thread``, the
    node's default) answers only loopback names: 403 otherwise. Control: the SDK over real HTTP."""
    url, stop = serve_in_thread(tmp_path / "store")
    port = url.rsplit(":", 1)[1]
    try:
        async with StoreClient(url) as store:
            cid = await store.put_block(b"a committed trace", pin=True)
            assert await store.get_block(cid) == b"a committed trace"
        async with httpx.AsyncClient(base_url=url) as rpc:
            for host in (f"rebound.example:{port}", "rebound.example", f"127.0.0.1.rebound.example:{port}"):
                r = await rpc.post("/api/v0/pin/rm", params={"arg": cid}, headers={"Host": host})
                assert r.status_code == 403, (host, r.status_code, r.text)
            for host in (f"localhost:{port}", f"127.0.0.1:{port}", "localhost"):
                r = await rpc.post("/api/v0/block/stat", params={"arg": cid}, headers={"Host": host})
                assert r.status_code == 200, (host, r.status_code, r.text)
        async with StoreClient(url) as store:
            assert cid in await store.pin_ls()
    finally:
        stop()


# ------------------------------------------------------------------------------ 4. the client


async def test_defence_a_dripped_block_holds_a_reader_past_its_timeout() -> None:
    """LOW. A node's store sends a real block one byte every 0.25 s: each read is inside the
    client's 0.5 s timeout, so ``get_block`` takes the whole drip (2.5 s here, unbounded in
    general). A read must end within its timeout."""
    block = b"0123456789"
    cid = compute_cid(block)

    async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        head = "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
        writer.write(f"{head}Content-Length: {len(block)}\r\nConnection: close\r\n\r\n".encode())
        for byte in block:
            await writer.drain()
            writer.write(bytes([byte]))
            await asyncio.sleep(0.25)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(drip, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    started = time.monotonic()
    try:
        async with StoreClient(f"http://127.0.0.1:{port}", timeout=0.5) as store:
            try:
                await store.get_block(cid)
            except StoreError:
                pass  # giving up is the secure outcome
    finally:
        server.close()
    elapsed = time.monotonic() - started
    assert elapsed < 1.5, f"get_block held for {elapsed:.1f} s under a 0.5 s timeout"


# ------------------------------------------------------------------- 5. disk and crash


async def test_defence_putting_a_block_again_does_not_repair_a_damaged_copy(tmp_path: Path) -> None:
    """LOW. The block's file was emptied on disk; putting the genuine bytes again answers success
    and leaves the damage: every read fails from then on. A put must leave the block readable."""
    blocks = EmbeddedStore(tmp_path / "store", fsync=False)
    transport = httpx.ASGITransport(app=create_app(blocks))
    async with StoreClient("http://embedded-store", transport=transport) as store:
        cid = await store.put_block(b"a trace block")
        blocks.block_path(cid).write_bytes(b"")
        with pytest.raises(CIDMismatchError):
            await store.get_block(cid)  # control: the damage is seen
        assert await store.put_block(b"a trace block") == cid
        assert await store.get_block(cid) == b"a trace block"


def test_defence_a_writer_killed_mid_put_leaves_no_torn_block(tmp_path: Path) -> None:
    """A process putting 256 KiB blocks (fsync on) is SIGKILLed at a random point of its work; the
    reopened store holds only whole blocks under their names, and no temp file."""
    root = tmp_path / "store"
    script = textwrap.dedent(
        f"""
        import os, sys
        from supernet.sdk.store.blockstore import EmbeddedStore
        store = EmbeddedStore({str(root)!r})
        i = 0
        while True:
            store.put(os.urandom(256 * 1024))
            i += 1
            if i == 1:
                print("ready", flush=True)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(0.2 + (os.getpid() % 7) / 20)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    files = [p for p in (root / "blocks").rglob("*") if p.is_file()]
    reopened = EmbeddedStore(root)
    assert files, "no block written before the kill"
    for path in files:
        assert reopened.get(path.name) == path.read_bytes()  # re-hashed against its name
    assert not any((root / "tmp").iterdir())


# ------------------------------------------------------------------ 6. CIDs and encodings


NOT_SERVED = {
    "identity multihash (inline data)": _b32(b"\x01\x55\x00\x05hello"),
    "sha2-256 cut to 20 bytes": _b32(b"\x01\x55\x12\x14" + HELLO_DIGEST[:20]),
    "sha2-256 cut to 1 byte": _b32(b"\x01\x55\x12\x01" + HELLO_DIGEST[:1]),
    "sha2-512": _b32(b"\x01\x55\x13\x40" + hashlib.sha512(b"hello").digest()),
    "dag-json": _b32(b"\x01\xa9\x02\x12\x20" + HELLO_DIGEST),
    "dag-pb CIDv1": _b32(b"\x01\x70\x12\x20" + HELLO_DIGEST),
    "CIDv0": "QmRN6wdp1S2A5EtjW9A3M1vKSBuQQGcgvuhoMUoEz4iiT5",
    "trailing bytes": _b32(b"\x01\x55\x12\x20" + HELLO_DIGEST + b"\x00"),
    "a path": "../pins.json",
    "a path under a prefix": "bafk/../../pins.json",
}


async def test_defence_only_the_stores_one_cid_form_is_served(tmp_path: Path) -> None:
    """Every CID outside CIDv1 / sha2-256 (32 bytes) / raw or dag-cbor is refused by the client
    before any request and with a 400 by the embedded store (nothing read from disk); another
    spelling of a served CID names the same file."""
    blocks = EmbeddedStore(tmp_path / "store", fsync=False)
    cid = blocks.put(b"hello")
    (tmp_path / "store" / "pins.json").write_text("{}")
    transport = httpx.ASGITransport(app=create_app(blocks))
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://store") as rpc,
        StoreClient("http://embedded-store", transport=transport) as store,
    ):
        for name, bad in NOT_SERVED.items():
            with pytest.raises(InvalidCIDError):
                await store.get_block(bad)
            r = await rpc.post("/api/v0/block/get", params={"arg": bad})
            assert r.status_code == 400 and r.json()["Type"] == "error", (name, r.status_code, r.text[:120])
        for spelling in (cid.upper(), "z" + _base58(base64.b32decode(cid[1:].upper() + "======"))):
            assert blocks.block_path(spelling) == blocks.block_path(cid)
            assert await store.get_block(spelling) == b"hello"


def _base58(data: bytes) -> str:
    alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
    n, out = int.from_bytes(data, "big"), ""
    while n:
        n, r = divmod(n, 58)
        out = alphabet[r] + out
    return "1" * (len(data) - len(data.lstrip(b"\0"))) + out


NON_CANONICAL = {
    "unsorted keys": b"\xa2\x62bb\x01\x61a\x02",
    "duplicate keys": b"\xa2\x61a\x01\x61a\x02",
    "non-minimal integer": b"\x18\x01",
    "non-minimal length": b"\x78\x01a",
    "indefinite array": b"\x9f\x01\xff",
    "half float": b"\xf9\x3c\x00",
    "single float": b"\xfa\x3f\x80\x00\x00",
    "undefined": b"\xf7",
    "tag other than 42": b"\xc1\x01",
    "bignum": b"\xc2\x41\x01",
    "integer map key": b"\xa1\x01\x01",
    "trailing bytes": b"\x01\x02",
}


def test_defence_dag_cbor_has_one_encoding_per_value() -> None:
    """Two blocks never decode to one value: every non-canonical form is refused, and what decodes
    re-encodes to the same bytes (so to the same CID)."""
    for data in NON_CANONICAL.values():
        with pytest.raises(InvalidBlockError):
            decode_dag(data)
    for value in ({"a": 1, "bb": [1, 2.5, None, "x"]}, {"": b"\x00", "z": {"y": True}}):
        data = encode_dag(value)
        assert encode_dag(decode_dag(data)) == data
