"""Explorer benchmark: events indexed per second, and page latency with 10,000 receipts indexed.

The chain events are SYNTHESISED in this process and fed through the indexer's own ingest path
(`supernet.explorer.apply.ingest` in transactions of one block range, then `attach_manifest`
with well-formed manifests whose roots match the commits): no Anvil and no RPC are involved, so
``events_per_s`` measures the indexer's database work, not a node's ``eth_getLogs``. Pages are
then served by the real app under uvicorn on 127.0.0.1 and fetched over HTTP; the task and
challenge pages read their traces and evidence from a real embedded content store and run the
SDK's receipt verification on every request, as in production.

Writes ``docs/benchmarks/explorer.json`` (``events_per_s``, ``page_p95_ms`` and details) and
``docs/benchmarks/explorer.md``.

    python scripts/bench_explorer.py [--receipts 10000] [--requests 60] [--db URL]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import functools
import json
import os
import platform
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from sqlalchemy import update
from sqlalchemy.orm import Session
from supernet.explorer.app import ExplorerState, create_app
from supernet.explorer.apply import attach_manifest, ingest
from supernet.explorer.chain import ChainLog
from supernet.explorer.content import ContentReader
from supernet.explorer.db.engine import open_database
from supernet.explorer.db.models import Batch, Challenge
from supernet.sdk.chain.eip712 import Domain, TaskRequest, hash_task_request, sign_task_request
from supernet.sdk.chain.receipts import Receipt, input_hash, output_hash, sign_receipt, trace_hash
from supernet.sdk.devnet.processes import free_port
from supernet.sdk.formats.evidence import example_dag as evidence_example
from supernet.sdk.formats.manifest import BatchManifest, ManifestEntry
from supernet.sdk.formats.profile import AgentProfile
from supernet.sdk.formats.trace import Trace
from supernet.sdk.formats.trace import example_dag as trace_example
from supernet.sdk.store import StoreClient
from supernet.sdk.store.cids import compute_cid, encode_dag
from supernet.sdk.store.embedded import serve_in_thread

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "benchmarks"
ETH = 10**18
BATCH = 16
NODES, VALIDATORS, USERS = 8, 5, 64
FEE = 10**14
CHALLENGE_EVERY = 25  # batches
DOMAIN = Domain(31337, "0x" + "5a" * 20)
"""The synthetic deployment's EIP-712 domain: users sign their requests under it, as on a chain."""


def addr(kind: int, i: int) -> str:
    if kind == 0x11:  # nodes sign their receipts: real keys, so the task page's verification passes
        return str(node_key(i).address)
    if kind == 0x44:  # users sign their requests: the index counts a receipt only where they did
        return str(user_key(i).address)
    return "0x" + f"{kind:02x}" * 18 + f"{i:04x}"


def node_key(i: int) -> LocalAccount:
    return Account.from_key(keccak(f"bench node {i}".encode()))


@functools.cache
def user_key(i: int) -> LocalAccount:
    return Account.from_key(keccak(f"bench user {i}".encode()))


class Synth:
    """A deterministic network history: registrations, batches with manifests, challenges."""

    def __init__(self, receipts: int) -> None:
        self.block = 0
        self.logs: list[ChainLog] = []
        self.manifests: dict[int, BatchManifest] = {}
        self.traces: dict[str, dict[str, Any]] = {}
        self.receipts = receipts
        self.keys = {addr(0x11, n): node_key(n) for n in range(NODES)}

    def emit(self, contract: str, name: str, **args: Any) -> None:
        self.block += 1
        tx = "0x" + f"{self.block:064x}"
        self.logs.append(ChainLog(self.block, 0, tx, contract, name, args))

    def build(self) -> None:
        for n in range(NODES):
            self.emit(
                "ServiceManager",
                "NodeRegistered",
                node=addr(0x11, n),
                endpoint=f"http://node{n}:8000",
                modelIds=["0x" + "07" * 32],
                pricePerToken=10**9,
                stake=10 * ETH,
            )
        for v in range(VALIDATORS):
            self.emit("ServiceManager", "ValidatorRegistered", validator=addr(0x22, v), stake=5 * ETH)
        batches = self.receipts // BATCH
        for b in range(1, batches + 1):
            node = addr(0x11, b % NODES)
            manifest = self.manifest(b, node)
            self.manifests[b] = manifest
            self.emit(
                "TaskManager",
                "BatchCommitted",
                batchId=b,
                node=node,
                root="0x" + manifest.root.hex(),
                count=BATCH,
                commitBlock=self.block + 1,
                manifestCid=f"bafy-manifest-{b}",
            )
            if b % CHALLENGE_EVERY == 0:
                self.challenge(b // CHALLENGE_EVERY, b, node, manifest.entries[0])

    def manifest(self, b: int, node: str) -> BatchManifest:
        entries = []
        for i in range(BATCH):
            u = (b * BATCH + i) % USERS
            user = addr(0x44, u)
            question, answer = f"question {b}.{i}", f"answer {b}.{i}"
            trace = copy.deepcopy(trace_example())
            trace.update(user=user, input=question, output=answer, fee=FEE)
            trace["events"][0]["text"] = answer
            # the request names the agent profile the trace ran under, as a real one does
            profile = bytes.fromhex(AgentProfile.of_trace(Trace.from_dag(trace)).hash()[2:])
            req = TaskRequest(
                user, node, b"\x07" * 32, profile, input_hash(question), FEE, b * BATCH + i, 2**40
            )
            task_id = "0x" + hash_task_request(req, DOMAIN).hex()
            trace.update(task_id=task_id)
            cid = compute_cid(encode_dag(trace), "dag-cbor")
            self.traces[cid] = trace
            r = Receipt(
                bytes.fromhex(task_id[2:]),
                user,
                b"\x07" * 32,
                input_hash(question),
                output_hash(answer),
                trace_hash(cid),
                FEE,
            )
            signature = sign_receipt(r, self.keys[node])
            request_signature = sign_task_request(req, DOMAIN, user_key(u))
            entries.append(ManifestEntry(r, r.leaf(), signature, cid, "chat", req, request_signature))
        return BatchManifest.seal(node, entries)

    def challenge(self, cid: int, batch: int, node: str, entry: ManifestEntry) -> None:
        leaf, rh = "0x" + entry.leaf.hex(), "0x" + entry.receipt.request_hash.hex()
        v0, v1 = addr(0x22, 0), addr(0x22, 1)
        self.emit("TaskManager", "Voted", challengeId=cid, validator=v0, fraud=True, weight=5 * ETH)
        self.emit(
            "TaskManager",
            "ChallengeOpened",
            challengeId=cid,
            batchId=batch,
            challenger=v0,
            node=node,
            leaf=leaf,
            requestHash=rh,
            voteDeadline=10**10,
            evidenceCid="bafy-evidence",
        )
        # a voter's vote is sealed first (commit-reveal), then opened
        self.emit("TaskManager", "VoteCommitted", challengeId=cid, validator=v1, weight=5 * ETH)
        self.emit("TaskManager", "Voted", challengeId=cid, validator=v1, fraud=True, weight=5 * ETH)
        self.emit(
            "ServiceManager", "Slashed", operator=node, amount=ETH // 10, fromStake=ETH // 10, fromUnbonding=0
        )
        self.emit(
            "TaskManager",
            "ChallengeResolved",
            challengeId=cid,
            fraud=True,
            fraudStake=10 * ETH,
            honestStake=0,
            slashed=ETH // 10,
            refund=10**14,
            challengerReward=ETH // 50,
            voterPool=ETH // 100,
            burned=ETH // 20,
        )


def index(engine: Any, synth: Synth, per_tx: int = 64) -> tuple[float, float]:
    """Feed the events (``per_tx`` per transaction, like a block range), then the manifests."""
    t0 = time.perf_counter()
    for start in range(0, len(synth.logs), per_tx):
        with Session(engine) as s, s.begin():
            for lg in synth.logs[start : start + per_tx]:
                ingest(s, lg, 1_700_000_000 + lg.block * 2, 90_000 if lg.name == "BatchCommitted" else 0)
    t_events = time.perf_counter() - t0
    t0 = time.perf_counter()
    for batch_id, manifest in synth.manifests.items():
        with Session(engine) as s, s.begin():
            batch = s.get(Batch, batch_id)
            assert batch is not None
            attach_manifest(s, batch, manifest, domain=DOMAIN)
    return t_events, time.perf_counter() - t0


async def put_docs(url: str, docs: list[dict[str, Any]]) -> list[str]:
    async with StoreClient(url) as store:
        return [await store.put_dag(d) for d in docs]


def serve(app: Any) -> tuple[str, uvicorn.Server, threading.Thread]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", server, thread


def measure(client: httpx.Client, url: str, n: int) -> dict[str, float]:
    for _ in range(3):  # warm-up: caches, connections
        client.get(url)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = client.get(url)
        times.append((time.perf_counter() - t0) * 1000)
        assert r.status_code in (200, 303), (url, r.status_code, r.text[:300])
    times.sort()
    return {
        "p50_ms": round(statistics.median(times), 1),
        "p95_ms": round(times[int(0.95 * (len(times) - 1))], 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--receipts", type=int, default=10_000)
    ap.add_argument("--requests", type=int, default=60)
    ap.add_argument("--db", default=None, help="database URL (default: a fresh SQLite file)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-explorer-"))
    load_before = os.getloadavg()[0]
    synth = Synth(args.receipts)
    synth.build()
    engine = open_database(args.db or str(work / "index.sqlite"))
    t_events, t_manifests = index(engine, synth)
    n_receipts = sum(len(m.entries) for m in synth.manifests.values())
    print(
        f"SYNTHESISED in-process: {len(synth.logs):,} events in {t_events:.2f} s, "
        f"{n_receipts:,} receipts from manifests in {t_manifests:.2f} s"
    )

    store_url, stop_store = serve_in_thread(work / "store")
    sample_batch = len(synth.manifests) // 2
    task_entry = synth.manifests[sample_batch].entries[3]
    asyncio.run(put_docs(store_url, [synth.traces[task_entry.trace_cid]]))
    evidence = evidence_example()
    [evidence_cid] = asyncio.run(put_docs(store_url, [evidence]))
    with engine.begin() as conn:  # the synthetic challenges point at a real evidence document
        conn.execute(update(Challenge).values(evidence_cid=evidence_cid))
    state = ExplorerState(engine, ContentReader(store_url))
    base, server, thread = serve(create_app(state))
    task_id = "0x" + task_entry.receipt.request_hash.hex()
    pages = {
        "network": "/",
        "batch": f"/batches/{sample_batch}",
        "task": f"/tasks/{task_id}",
        "challenge": "/challenges/1",
        "address (node)": f"/address/{addr(0x11, 3)}",
        "address (user)": f"/address/{addr(0x44, 5)}",
        "search": f"/search?q={task_id}",
        "api network": "/api/v1/network",
        "api task": f"/api/v1/tasks/{task_id}",
    }
    results: dict[str, dict[str, float]] = {}
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            check = client.get(f"/api/v1/tasks/{task_id}").json()
            assert check["verification"]["ok"], check["verification"]
            for name, path in pages.items():
                results[name] = measure(client, path, args.requests)
                print(
                    f"{name:16} p50 {results[name]['p50_ms']:7.1f} ms   p95 {results[name]['p95_ms']:7.1f} ms"
                )
    finally:
        server.should_exit = True
        thread.join(10)
        stop_store()
        engine.dispose()
        shutil.rmtree(work, ignore_errors=True)
    events_per_s = round(len(synth.logs) / t_events)
    worst = max(r["p95_ms"] for r in results.values())
    doc = {
        "events_per_s": events_per_s,
        "page_p95_ms": worst,
        "receipts": n_receipts,
        "events": len(synth.logs),
        "receipts_per_s": round(n_receipts / t_manifests),
        "pages": results,
        "database": engine.dialect.name,
        "synthesised": "events generated in-process and fed to the indexer's ingest path (no RPC)",
        "goal_page_p95_ms": 200,
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}",
        "command": f"python scripts/bench_explorer.py --receipts {args.receipts} --requests {args.requests}",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "explorer.json").write_text(json.dumps(doc, indent=2) + "\n")
    rows = "\n".join(f"| {k} | {v['p50_ms']:.1f} | {v['p95_ms']:.1f} |" for k, v in results.items())
    (args.out / "explorer.md").write_text(
        f"""# Explorer benchmark

Reproduce: `make bench-explorer` (or `{doc["command"]}`).

**The chain events are synthesised in-process** and fed through the indexer's own ingest path
(`supernet.explorer.apply.ingest`, {64} events per transaction, then `attach_manifest`): no Anvil,
no RPC. Pages are served by the real app under uvicorn and fetched over HTTP; the task page reads
its trace from a real embedded content store and runs the SDK's receipt verification per request.

| figure | value |
|---|---|
| events indexed | {len(synth.logs):,} in {t_events:.2f} s: **{events_per_s:,} events/s** |
| receipts attached from manifests | {n_receipts:,}: {doc["receipts_per_s"]:,} receipts/s |
| database | {doc["database"]} |
| worst page p95 | **{worst:.1f} ms** (goal ≤ 200 ms) |

| page ({args.requests} requests each, after 3 warm-ups) | p50 ms | p95 ms |
|---|---|---|
{rows}

Machine: {doc["machine"]}; 1-minute load average {doc["load_average"][0]} before and
{doc["load_average"][1]} after the run (other work on the same 2 cores slows every figure).
"""
    )
    print(json.dumps({"events_per_s": events_per_s, "page_p95_ms": worst}))


if __name__ == "__main__":
    main()
