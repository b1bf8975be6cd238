"""The explorer's indexer and web app on real parts: real Anvil and contracts, the embedded store.

A node commits a batch whose manifest and traces are real documents in the store; a validator
challenges one receipt with evidence, the others vote, the challenge resolves and the node is
slashed. The index must agree with the chain's own views, the task page's verification (the
SDK's `check_receipt`) must pass, bad input must get 4xx answers, a reorg must be undone and the
`supernet explorer` command must serve the same. No model is needed: the traces are written by hand.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from chain_fixtures import MODEL_ID, Actors, cast_votes
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session
from supernet.explorer import queries
from supernet.explorer.app import ExplorerState, create_app
from supernet.explorer.chain import ChainReader
from supernet.explorer.content import ContentReader
from supernet.explorer.db.engine import open_database
from supernet.explorer.db.models import Batch, Challenge, Event, Operator, Receipt
from supernet.explorer.details import task_detail
from supernet.explorer.indexer import Indexer
from supernet.sdk.chain import Contracts, ReceiptTree, TaskRequest, hash_task_request, sign_task_request
from supernet.sdk.chain.anvil import increase_time, mine, revert, snapshot
from supernet.sdk.chain.receipts import Receipt as ChainReceipt
from supernet.sdk.chain.receipts import input_hash, output_hash, sign_receipt, trace_hash
from supernet.sdk.devnet.processes import ServiceProcess, free_port
from supernet.sdk.formats import BatchManifest, ManifestEntry
from supernet.sdk.formats.evidence import example_dag as evidence_example
from supernet.sdk.formats.profile import AgentProfile
from supernet.sdk.formats.trace import Trace
from supernet.sdk.formats.trace import example_dag as trace_example
from supernet.sdk.store import StoreClient

pytestmark = [pytest.mark.anvil]

QUESTIONS = ("What is the capital of France?", "Name a colour.", "Say hello.")
FEE = 10**14


@dataclass
class Committed:
    """A batch committed on chain with its manifest and traces in the store."""

    batch_id: int
    task_ids: list[str]
    entries: list[ManifestEntry]
    tree: ReceiptTree


def commit_real_batch(c: Contracts, actors: Actors, store_url: str) -> Committed:
    """Three tasks from three users to ``actors.node``: traces, manifest and commit, all real."""
    entries: list[ManifestEntry] = []

    async def put(obj: Any) -> str:
        async with StoreClient(store_url) as store:
            return await store.put_dag(obj, pin=True)

    for i, question in enumerate(QUESTIONS):
        user = actors.users[i % len(actors.users)]
        answer = f"answer {i}"
        trace = copy.deepcopy(trace_example())
        profile = bytes.fromhex(AgentProfile.of_trace(Trace.from_dag(trace)).hash()[2:])  # what it ran
        req = TaskRequest(
            user.address, actors.node.address, MODEL_ID, profile, input_hash(question), FEE, i + 1, 2**40
        )
        task_id = "0x" + hash_task_request(req, c.domain).hex()
        trace.update(task_id=task_id, user=user.address, fee=FEE, input=question, output=answer)
        trace.update(model_id="0x" + MODEL_ID.hex())  # the receipt's model, as every check requires
        trace["events"][0]["model_id"] = "0x" + MODEL_ID.hex()
        trace["events"][0]["messages"] = [{"role": "user", "content": question}]
        trace["events"][0]["text"] = answer
        cid = asyncio.run(put(trace))
        receipt = ChainReceipt(
            hash_task_request(req, c.domain),
            user.address,
            MODEL_ID,
            input_hash(question),
            output_hash(answer),
            trace_hash(cid),
            FEE,
        )
        entries.append(
            ManifestEntry(
                receipt,
                receipt.leaf(),
                sign_receipt(receipt, actors.node),
                cid,
                "chat",
                req,
                sign_task_request(req, c.domain, user),
            )
        )
    manifest = BatchManifest.seal(actors.node.address, entries)
    manifest_cid = asyncio.run(put(manifest.to_dag()))
    tree = ReceiptTree(e.leaf for e in entries)
    batch_id = (
        c.as_account(actors.node).task_manager.commit_batch(tree.root, len(tree), manifest_cid).value.batch_id
    )
    return Committed(batch_id, ["0x" + e.receipt.request_hash.hex() for e in entries], entries, tree)


def challenge_and_slash(
    c: Contracts, actors: Actors, store_url: str, done: Committed, index: int
) -> dict[str, Any]:
    """Validator 0 challenges entry ``index`` with evidence, the others vote fraud, it resolves."""

    async def put(obj: Any) -> str:
        async with StoreClient(store_url) as store:
            return await store.put_dag(obj)

    evidence = evidence_example()
    evidence.update(batchId=done.batch_id, index=index, validator=actors.validators[0].address)
    evidence_cid = asyncio.run(put(evidence))
    tm = c.as_account(actors.validators[0]).task_manager
    e = done.entries[index]
    ch = tm.challenge(done.batch_id, index, e.receipt, done.tree.proof_at(index), evidence_cid).value
    cast_votes(c, ch, [(v, True) for v in actors.validators[1:]])  # sealed, then revealed (``Voted``)
    increase_time(c.w3, c.params.vote_window + 1)
    return {"challenge_id": ch, **c.as_account(actors.outsider).task_manager.resolve(ch).value}


PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _as_postgres(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root (CI and these machines run tests as root)."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[str]:
    """A throw-away PostgreSQL 15 server on a free port; yields its admin URL."""
    if not (PG_BIN / "initdb").exists():
        pytest.skip("PostgreSQL 15 binaries are not installed")
    # Not under pytest's tmp folder: the postgres user cannot enter root's 0700 directories.
    root = Path(tempfile.mkdtemp(prefix="supernet-explorer-pg-"))
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    port = free_port()
    subprocess.run(
        _as_postgres([str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"]),
        check=True,
        capture_output=True,
    )
    opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        _as_postgres(
            [str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(root / "log"), "-w", "start"]
        ),
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run(
            _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def explorer_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """The index, on SQLite and on a fresh PostgreSQL database (one schema, same migrations)."""
    if request.param == "sqlite":
        engine = open_database(str(tmp_path / "explorer.sqlite"))
    else:
        admin = request.getfixturevalue("postgres_server")
        name = f"explorer_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(f"{admin}/postgres", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        engine = open_database(f"{admin}/{name}")
        assert engine.dialect.name == "postgresql"
    yield engine
    engine.dispose()


def make_indexer(engine: Engine, c: Contracts, store_url: str | None) -> Indexer:
    content = ContentReader(store_url) if store_url else None
    return Indexer(engine, ChainReader(c.w3, c.deployment), content, start_block=c.deployment.deploy_block)


def test_index_matches_the_chain_and_pages_show_it(
    network: Contracts, actors: Actors, store_url: str, explorer_db: Engine
) -> None:
    c = network
    done = commit_real_batch(c, actors, store_url)
    mine(c.w3, c.params.seed_delay_blocks + 1)
    increase_time(c.w3, 1)
    res = challenge_and_slash(c, actors, store_url, done, index=1)
    ix = make_indexer(explorer_db, c, store_url)
    assert ix.catch_up() > 10

    with Session(explorer_db) as s:
        # Stake bookkeeping replayed from events equals the contract's own view of every operator.
        for op in s.scalars(select(Operator)):
            onchain = c.service_manager.get_operator(op.address)
            assert (op.stake, op.unbonding, op.slash_count) == (
                onchain.stake,
                onchain.unbonding,
                onchain.slash_count,
            )
        node = s.get(Operator, actors.node.address)
        assert node is not None and node.slash_count == 1 and node.tasks == 3 and node.fees == 3 * FEE
        batch = s.get(Batch, done.batch_id)
        assert batch is not None and batch.manifest_status == "ok" and batch.gas_used > 0
        assert s.scalar(select(func.count()).select_from(Receipt)) == 3
        ch = s.get(Challenge, res["challenge_id"])
        assert ch is not None and ch.status == "fraud"
        assert (ch.slashed, ch.refund, ch.burned) == (res["slashed"], res["refund"], res["burned"])
        # the network's totals folded from events equal the contract's: every burn, and the
        # verdict's refund held (not refunded) until the request's user claims it
        totals = queries.totals(s)
        assert totals["burned"] == c.task_manager.total_burned()
        assert (totals["refunded"], totals["refunds_held"]) == (0, res["refund"])
        detail = task_detail(s, ContentReader(store_url), done.task_ids[0])
        assert detail is not None and detail.verification is not None
        assert detail.verification.ok, detail.verification.failed()
        checked = {
            "merkle inclusion",
            "node signature",
            "trace output",
            "request node",
            "trace agent profile",
        }
        assert checked <= {x.name for x in detail.verification.checks}
        assert detail.trace is not None and detail.trace["output"] == "answer 0"

    # A second indexer on the same database resumes from the cursor: nothing is recorded twice.
    with Session(explorer_db) as s:
        before = s.scalar(select(func.count()).select_from(Event))
    assert make_indexer(explorer_db, c, store_url).catch_up() == 0
    with Session(explorer_db) as s:
        assert s.scalar(select(func.count()).select_from(Event)) == before
        # sealed votes are kept as raw events (no derived state: the side shows at ``Voted``)
        assert s.scalar(select(func.count()).where(Event.name == "VoteCommitted")) == 2

    state = ExplorerState(explorer_db, ContentReader(store_url), c.task_manager)
    with TestClient(create_app(state)) as client:
        home = client.get("/")
        assert home.status_code == 200
        assert f'data-node="{actors.node.address}"' in home.text and "badge-slashed" in home.text
        page = client.get(f"/tasks/{done.task_ids[0]}")
        assert page.status_code == 200 and 'id="verify-result">passed' in page.text
        assert "What is the capital of France?" in page.text
        page = client.get(f"/challenges/{res['challenge_id']}")
        assert "FRAUD" in page.text and "token 5 is not the argmax" in page.text
        api = client.get(f"/api/v1/challenges/{res['challenge_id']}").json()
        assert [v["fraud"] for v in api["votes"]] == [True] * 3
        assert api["challenge"]["refund"] == str(res["refund"])  # wei as a decimal string
        batch_doc = client.get(f"/api/v1/batches/{done.batch_id}").json()
        assert batch_doc["sampling"]["seed"] and all(
            idx == [0, 1, 2] for idx in batch_doc["sampling"]["sampled"].values()
        )  # the devnet parameters sample every receipt
        found = client.get("/search", params={"q": done.task_ids[2]}, follow_redirects=False)
        assert found.status_code == 303 and found.headers["location"] == f"/tasks/{done.task_ids[2]}"
        manifest_cid = client.get(f"/api/v1/batches/{done.batch_id}").json()["batch"]["manifest_cid"]
        assert client.get("/api/v1/search", params={"q": manifest_cid}).json()["kind"] == "batch"
        addr = client.get(f"/address/{actors.users[0].address}")
        assert addr.status_code == 200 and done.task_ids[0][:10] in addr.text
        spec = client.get("/api/openapi.json").json()
        assert "/api/v1/tasks/{task_id}" in spec["paths"] and "/api/v1/live" in spec["paths"]


@pytest.mark.parametrize(
    ("path", "status", "says"),
    [
        ("/tasks/0x12", 400, "64 hex digits"),
        ("/tasks/0x" + "00" * 32, 404, "no committed receipt"),
        ("/batches/abc", 400, "must be a number"),
        ("/batches/99999", 404, "no batch 99999"),
        ("/challenges/-1", 400, "must be a number"),
        ("/challenges/7", 404, "no challenge 7"),
        ("/address/0xZZ", 400, "40 hex digits"),
        ("/search?q=hello", 400, "not a task id"),
        ("/search?q=", 400, "enter a task id"),
        ("/search?q=0x" + "ab" * 32, 404, "nothing indexed"),
        ("/api/v1/tasks/nope", 400, "64 hex digits"),
        ("/api/v1/batches/12", 404, "no batch 12"),
        ("/api/v1/events?after=-3", 400, "after"),
        ("/nowhere", 404, "Not Found"),
    ],
)
def test_bad_input_gets_a_clear_4xx(explorer_db: Engine, path: str, status: int, says: str) -> None:
    with TestClient(create_app(ExplorerState(explorer_db))) as client:
        r = client.get(path)
    assert r.status_code == status
    assert says in r.text
    if path.startswith("/api/"):
        assert r.headers["content-type"].startswith("application/json")
    else:
        assert r.headers["content-type"].startswith("text/html") and "<h1>" in r.text


def test_a_reorg_is_undone(network: Contracts, actors: Actors, explorer_db: Engine) -> None:
    c = network
    ix = make_indexer(explorer_db, c, None)
    ix.catch_up()
    snap = snapshot(c.w3)
    c.as_account(actors.node2).task_manager.commit_batch(b"\x01" * 32, 1, "bafyorphan")
    mine(c.w3, 2)
    ix.catch_up()
    with Session(explorer_db) as s:
        assert s.scalar(select(func.count()).select_from(Batch)) == 1
    # The chain drops those blocks and grows a different branch past them.
    revert(c.w3, snap)
    c.as_account(actors.node).service_manager.add_stake(10**18)
    mine(c.w3, 4)
    ix.catch_up()
    with Session(explorer_db) as s:
        assert s.scalar(select(func.count()).select_from(Batch)) == 0
        assert s.scalar(select(func.count()).select_from(Event).where(Event.name == "BatchCommitted")) == 0
        node = s.get(Operator, actors.node.address)
        assert node is not None and node.stake == c.service_manager.get_operator(actors.node.address).stake


def test_supernet_explorer_command_serves_the_index(
    network: Contracts, actors: Actors, store_url: str, tmp_path: Path
) -> None:
    c = network
    dep = c.deployment.save(tmp_path / "deployment.json")
    port = free_port()
    proc = ServiceProcess(
        "explorer",
        [
            "explorer",
            "--rpc",
            str(c.deployment.rpc_url),
            "--deployment",
            str(dep),
            "--store",
            store_url,
            "--port",
            str(port),
            "--db",
            str(tmp_path / "x.sqlite"),
            "--poll",
            "0.3",
        ],
        tmp_path / "explorer.log",
    )
    proc.start()
    try:
        proc.wait_http(f"http://127.0.0.1:{port}/healthz", timeout=60)
        done = commit_real_batch(c, actors, store_url)
        url = f"http://127.0.0.1:{port}/api/v1/tasks/{done.task_ids[1]}"
        for _ in range(100):
            r = httpx.get(url, timeout=5)
            if r.status_code == 200:
                break
            asyncio.run(asyncio.sleep(0.2))
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["verification"]["ok"] is True, json.dumps(doc["verification"], indent=1)
        nodes = httpx.get(f"http://127.0.0.1:{port}/api/v1/network", timeout=5).json()["nodes"]
        assert {n["address"] for n in nodes} == {actors.node.address, actors.node2.address}
    finally:
        proc.stop()
