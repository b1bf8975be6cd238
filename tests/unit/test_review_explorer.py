"""Adversarial review of the block explorer and its indexer (`supernet.explorer`).

Real parts throughout: Anvil with the compiled contracts (`network` fixture), the embedded content
store (`store_url`), the real `Indexer` / `ChainReader` / `ContentReader`, the FastAPI app, and a
throw-away PostgreSQL 15 where the attack needs it (the README's second backend).
``test_defence_*`` tests record attacks that were tried and are stopped (their docstrings keep the
harm each did before its fix).

Tried, what was found, and how it was fixed (every finding is now a ``test_defence_*``):

- FIXED (fake 'passed', victim attribution, inflated totals): a node committed receipts in the name
  of a user who never signed anything, and the explorer indexed them as the user's tasks, added the
  fees the node wrote to the totals and showed "Verification: passed". Now a receipt is a task only
  where its user signed the request for the committing node and its digest is the task id
  (`ManifestEntry.signed_by_user`, checked at ingest with the deployment's domain, stored as
  ``receipts.signed``); anything else is the node's "unsigned claim": in no total, on no user's
  page, and its page fails "request signed by the user".
- FIXED (task page shows another node's receipt): a node that learnt a task id front-ran the honest
  commit and its receipt was "the" task's. Now the page shows the signed receipt and lists the
  others as conflicting claims.
- FIXED (receipts stall for everyone): 32 commits whose manifests never resolve kept every later
  batch pending. Now batches never tried come first, then retries by due time, within a time budget.
- FIXED (PostgreSQL: the whole indexer stops): columns narrower than their sources (a uint32 count
  in an int32, a manifest's strings in VARCHARs, wei sums in VARCHAR(80)). Now every column is as
  wide as its source (migration 0003), and a batch the database still refuses is marked invalid
  instead of stopping the loop.
- FIXED (false activity): "committed", gas per task and tasks per minute came from the commit's
  count; now only from batches whose manifest proved it.
- FIXED (reorg amplification): a one-block reorg deleted every receipt and re-read every manifest;
  now the batches before the fork keep their receipts and verdicts.
- FIXED (API 500): ``after`` beyond int64 is a 400. FIXED: ``events.tx_hash`` is indexed.
  FIXED: every response carries a Content-Security-Policy and ``X-Content-Type-Options``.
- holds: stored XSS through agent ids, trace input/messages/output, an on-chain endpoint, and the
  search box: Jinja2 autoescaping escapes every field, the SVG charts escape their labels, the
  live feed uses textContent, no attacker value lands in an href.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest
from chain_fixtures import MODEL_ID, Actors
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, inspect, select, text
from sqlalchemy.orm import Session
from supernet.explorer import queries
from supernet.explorer.app import ExplorerState, create_app
from supernet.explorer.content import ContentReader
from supernet.explorer.db.engine import open_database
from supernet.explorer.db.models import Batch, Event, Meta, Operator, Receipt
from supernet.explorer.details import task_detail
from supernet.explorer.indexer import get_cursor
from supernet.sdk.chain import Contracts, ReceiptTree, TaskRequest, hash_task_request, sign_task_request
from supernet.sdk.chain.anvil import mine, revert, snapshot
from supernet.sdk.chain.errors import ContractError
from supernet.sdk.chain.receipts import Receipt as ChainReceipt
from supernet.sdk.chain.receipts import input_hash, output_hash, sign_receipt, trace_hash
from supernet.sdk.formats import BatchManifest, ManifestEntry
from supernet.sdk.formats.profile import AgentProfile
from supernet.sdk.formats.trace import Trace
from supernet.sdk.formats.trace import example_dag as trace_example
from supernet.sdk.store import StoreClient
from supernet.sdk.store.cids import compute_cid, encode_dag

from tests.integration.test_explorer_indexer import (  # noqa: F401  (postgres_server: a fixture)
    commit_real_batch,
    make_indexer,
    postgres_server,
)

pytestmark = [pytest.mark.anvil]

ETH = 10**18
FEE = 10**14


# -- helpers: what a node writes (traces, manifests) and commits ----------------------------------


def put(store_url: str, obj: Any) -> str:
    async def go() -> str:
        async with StoreClient(store_url) as store:
            return await store.put_dag(obj, pin=True)

    return asyncio.run(go())


def make_entry(
    c: Contracts,
    node: LocalAccount,
    user: str,
    store_url: str,
    *,
    nonce: int,
    question: str = "What is 2 + 2?",
    answer: str = "4",
    fee: int = FEE,
    agent: str = "chat",
    task_id: bytes | None = None,
    signed_by: LocalAccount | None = None,
) -> ManifestEntry:
    """One manifest entry ``node`` writes for ``user``: a consistent trace in the store, a receipt
    signed by ``node``; the user's request signature only when ``signed_by`` is given."""
    trace = copy.deepcopy(trace_example())
    profile = bytes.fromhex(AgentProfile.of_trace(Trace.from_dag(trace)).hash()[2:])
    req = TaskRequest(
        user, node.address, MODEL_ID, profile, input_hash(question), max(fee, FEE), nonce, 2**40
    )
    tid = task_id if task_id is not None else hash_task_request(req, c.domain)
    trace.update(task_id="0x" + tid.hex(), user=user, fee=fee, input=question, output=answer)
    trace.update(model_id="0x" + MODEL_ID.hex())
    trace["events"][0].update(model_id="0x" + MODEL_ID.hex(), text=answer)
    trace["events"][0]["messages"] = [{"role": "user", "content": question}]
    cid = put(store_url, trace)
    receipt = ChainReceipt(
        tid, user, MODEL_ID, input_hash(question), output_hash(answer), trace_hash(cid), fee
    )
    return ManifestEntry(
        receipt,
        receipt.leaf(),
        sign_receipt(receipt, node),
        cid,
        agent,
        req,
        None if signed_by is None else sign_task_request(req, c.domain, signed_by),
    )


def commit(c: Contracts, node: LocalAccount, entries: list[ManifestEntry], store_url: str) -> int:
    """Seal, store and commit a manifest of ``entries``; the new batch id."""
    manifest_cid = put(store_url, BatchManifest.seal(node.address, entries).to_dag())
    tree = ReceiptTree(e.leaf for e in entries)
    return c.as_account(node).task_manager.commit_batch(tree.root, len(tree), manifest_cid).value.batch_id


def never_stored_cid(i: int) -> str:
    """A well-formed CID of a document nobody ever put in the store."""
    return compute_cid(encode_dag({"never stored": i}), "dag-cbor")


@pytest.fixture()
def pg_engine(request: pytest.FixtureRequest) -> Engine:
    """A fresh PostgreSQL index (the README's production backend)."""
    import uuid

    import psycopg

    admin = request.getfixturevalue("postgres_server")
    name = f"review_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{admin}/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    engine = open_database(f"{admin}/{name}")
    request.addfinalizer(engine.dispose)
    return engine


# -- (c) false state --------------------------------------------------------------------------------


def test_defence_a_node_cannot_publish_verified_tasks_in_a_victims_name(
    network: Contracts, actors: Actors, store_url: str
) -> None:
    """Harm: node2 commits three receipts "for" a user who never signed a request, never opened a
    channel to it and never paid (no request signature in the manifest). The explorer indexes them
    as the victim's tasks (victim's address page), adds the fees the node wrote (10 ETH each) to
    the node's fees and the network's "Fees" total, and the task page says "Verification: passed"
    under "Request (signed by the user)". A node buys a reputation of busy, well-paid service, and
    any user can be shown as its customer.

    Cause: apply.py `attach_manifest` never recovers ``request_signature``; details.py
    `task_detail` calls `check_receipt(..., request=...)` without ``domain``, so the request's
    digest (must equal the task id) and its signer (must be the receipt's user) are never checked.

    Fix (by design): give the explorer the deployment's EIP-712 domain; at ingest, accept an entry
    as a task only if hash_task_request(request) == requestHash, recover(request_signature) ==
    request.user == receipt.user and request.node == the committing node; keep the others as
    "unsigned claims" that count in no total, appear on no user's page and never show "passed".
    Fees shown as earned should come from on-chain ``Redeemed``, not from manifests."""
    c, victim = network, actors.users[2]
    fee = 10 * ETH
    entries = [
        make_entry(c, actors.node2, victim.address, store_url, nonce=100 + i, fee=fee, answer=f"fake {i}")
        for i in range(3)
    ]
    assert all(e.request_signature is None for e in entries)  # the victim signed nothing
    # a real task of another user, signed, in the same batch: it counts
    real = make_entry(c, actors.node2, actors.users[1].address, store_url, nonce=5, signed_by=actors.users[1])
    batch_id = commit(c, actors.node2, [*entries, real], store_url)
    ix = make_indexer(open_database("sqlite://"), c, store_url)
    ix.catch_up()
    tid = "0x" + entries[0].receipt.request_hash.hex()
    with Session(ix.engine) as s:
        batch = s.get(Batch, batch_id)
        assert batch is not None and batch.manifest_status == "ok"
        totals = queries.totals(s)
        assert (totals["tasks"], totals["fees"], totals["claims"]) == (1, FEE, 3)
        node2 = s.get(Operator, actors.node2.address)
        assert node2 is not None and (node2.tasks, node2.fees) == (1, FEE)
        assert queries.address(s, victim.address)["receipts"] == []  # not the victim's task
        detail = task_detail(s, ContentReader(store_url), tid)
        assert detail is not None and detail.verification is not None and not detail.verification.ok
        assert "request signed by the user" in {x.name for x in detail.verification.failed()}
    with TestClient(create_app(ExplorerState(ix.engine, ContentReader(store_url)))) as client:
        page = client.get(f"/tasks/{tid}").text
        assert 'id="verify-result">FAILED' in page and "no valid user signature" in page
        assert tid[:10] not in client.get(f"/address/{victim.address}").text
        assert "30 ETH" not in client.get("/").text  # the network's "Fees" total


def test_defence_a_node_that_learns_a_task_id_cannot_take_over_its_task_page(
    network: Contracts, actors: Actors, store_url: str
) -> None:
    """Harm: the honest node writes its manifest to the store, then sends ``commitBatch``. node2
    reads the pending transaction's manifest, copies the user's task id and front-runs with a
    receipt of its own for it (its own request naming itself, its own trace and answer). The task
    page then shows node2's receipt as the task's, "passed", with node2's answer; the honest
    receipt is not rendered anywhere on the page. The user (or anyone they link) reads a wrong
    answer attributed as verified, and the honest node loses the credit.

    Cause: details.py `task_detail` shows ``receipts[0]`` (lowest batch id) of every receipt with
    that request hash, and (see the test above) nothing binds a receipt's task id to a request the
    user signed for the committing node; task.html never renders ``others``.

    Fix (by design): the request-signature check above at ingest (an impostor cannot produce a
    request whose digest is the victim's task id and names itself), and the task page picks the
    receipt whose signed request names its committing node; any other receipt of the id is listed
    as a conflicting claim."""
    c, user = network, actors.users[0]
    honest = make_entry(c, actors.node, user.address, store_url, nonce=7, answer="4", signed_by=user)
    tid = honest.receipt.request_hash
    impostor = make_entry(
        c, actors.node2, user.address, store_url, nonce=7, answer="five", task_id=tid
    )  # same task id, node2's own unsigned request and trace
    first = commit(c, actors.node2, [impostor], store_url)  # front-run
    second = commit(c, actors.node, [honest], store_url)
    assert first < second
    ix = make_indexer(open_database("sqlite://"), c, store_url)
    ix.catch_up()
    with Session(ix.engine) as s:
        detail = task_detail(s, ContentReader(store_url), "0x" + tid.hex())
        assert detail is not None and detail.verification is not None
        assert detail.verification.ok, detail.verification.failed()
        assert detail.receipt["node"] == actors.node.address and detail.trace is not None
        assert detail.trace["output"] == "4"
        assert [(o["node"], o["signed"]) for o in detail.others] == [(actors.node2.address, False)]
    with TestClient(create_app(ExplorerState(ix.engine, ContentReader(store_url)))) as client:
        page = client.get(f"/tasks/0x{tid.hex()}").text
    assert 'id="verify-result">passed' in page and ">five</pre>" not in page
    assert "Other receipts with this task id" in page and "unsigned claim" in page
    assert actors.node.address in page and actors.node2.address in page


def test_defence_one_commit_with_a_huge_count_fakes_no_network_activity(
    network: Contracts, actors: Actors
) -> None:
    """Harm: ``commitBatch`` takes any uint32 count (> 0); node2 commits count 2**32-1 with a
    manifest that does not exist. The network page's "gas per task" becomes 0, the "committed"
    total 4.29 billion and the "tasks per minute" chart shows 4.29 billion tasks, for the gas of
    one transaction (the manifest-availability challenge may cost it stake later; the figures stay).

    Cause: apply.py `_batch_committed` adds the committed count to ``committed`` and
    queries.py `charts` plots ``Batch.count``, before (and whether or not) a manifest proves them.

    Fix (by design): network figures (tasks/min, gas per task) only from batches whose manifest
    was attached and matched (``manifest_status == "ok"``), counting the manifest's entries."""
    c = network
    # (the contract now takes at most MAX_BATCH_COUNT = 512: the largest count a node can claim)
    c.as_account(actors.node2).task_manager.commit_batch(b"\x01" * 32, 512, never_stored_cid(1))
    ix = make_indexer(open_database("sqlite://"), c, None)
    ix.catch_up()
    with Session(ix.engine) as s:
        totals = queries.totals(s)
        assert (totals["batches"], totals["committed"], totals["gas_per_task"], totals["tasks"]) == (
            1,
            0,
            0,
            0,
        )
        assert queries.charts(s)["tasks_per_minute"] == []
        batch = s.scalar(select(Batch))
        assert batch is not None and batch.count == 512  # the node's word, kept as written


# -- (b) stalling the indexer for everyone ------------------------------------------------------


def test_defence_unresolvable_manifests_do_not_hold_back_later_batches(
    network: Contracts, actors: Actors, store_url: str
) -> None:
    """Harm: node2 commits 32 batches whose manifest CIDs are well formed but never stored (32
    cheap transactions). `attach_manifests` selects the 32 lowest pending batch ids and skips the
    ones in back-off, so an honest batch committed afterwards is never selected: its receipts never
    appear and its task pages answer 404, for every node's batch from then on.

    Cause: indexer.py `attach_manifests`: ``.where(status == "pending").order_by(batch_id).limit(32)``
    then ``continue`` for batches in back-off: head-of-line blocking.

    Fix (by design): select only batches that are due (keep ``next_try_at`` and ``tries`` in the
    batches table, order by next_try_at), and give up after a bounded time (status "unavailable",
    re-tried rarely), so a stuck manifest never holds a slot another batch needs."""
    c = network
    for i in range(40):
        c.as_account(actors.node2).task_manager.commit_batch(bytes([i + 1]) * 32, 1, never_stored_cid(i))
    ix = make_indexer(open_database("sqlite://"), c, store_url)
    ix.retry_s = 30.0
    ix.catch_up()  # every bogus manifest tried once, now in back-off
    done = commit_real_batch(c, actors, store_url)
    ix.catch_up()
    with Session(ix.engine) as s:
        b = s.get(Batch, done.batch_id)
        assert b is not None and b.manifest_status == "ok"
        assert task_detail(s, None, done.task_ids[0]) is not None
        pending = s.scalar(select(func.count()).select_from(Batch).where(Batch.manifest_status == "pending"))
        assert pending == 40  # the attacker's stay pending, retried later


def test_defence_postgres_a_huge_count_does_not_stop_the_indexer(
    network: Contracts, actors: Actors, pg_engine: Engine
) -> None:
    """Harm: on PostgreSQL (the production backend) one ``commitBatch`` with count 2**31 (the
    contract accepts any uint32 > 0) makes every scan of its block range fail ("integer out of
    range"): the cursor never moves past it, so no later event of anyone (stakes, batches,
    challenges, slashes) is ever indexed. `run_forever` logs and retries the same range forever.

    Cause: db/models.py ``Batch.count: Integer`` (int32 on PostgreSQL) for a uint32; the same class:
    ``Receipt.agent`` String(128), ``Receipt.signature``/``request_signature`` String(140), every
    ``Wei`` String(80) (a sum of uint256 fees exceeds 80 digits), against formats that bound none.

    Fix (by design): derive every column type from the ABI/format type it stores (uint32 -> BigInteger,
    uint256 -> Numeric(78) or Wei without a length, strings -> Text) and check it in a test that
    walks the ABI; and never let one row fail a whole range: validate/clip each event's values
    before insert and record an unrepresentable one as a raw event with an error."""
    c = network
    ix = make_indexer(pg_engine, c, None)
    ix.catch_up()
    with pytest.raises(ContractError, match="BatchTooLarge"):  # the chain refuses it now ...
        c.as_account(actors.node2).task_manager.commit_batch(b"\x02" * 32, 2**32 - 1, never_stored_cid(2))
    c.as_account(actors.node2).task_manager.commit_batch(b"\x02" * 32, 512, never_stored_cid(2))
    c.as_account(actors.node).service_manager.add_stake(ETH)  # an honest later event
    ix.catch_up()
    with Session(pg_engine) as s:
        assert get_cursor(s, 0) > c.w3.eth.block_number - 1
        node = s.get(Operator, actors.node.address)
        assert node is not None and node.stake == c.service_manager.get_operator(actors.node.address).stake
        assert s.scalar(select(Batch.count)) == 512
    counts = {col["name"]: col["type"] for col in inspect(pg_engine).get_columns("batches")}
    assert "BIGINT" in str(counts["count"])  # ... and the index holds any uint32 a chain may send


def test_defence_postgres_a_long_agent_id_stalls_no_manifest(
    network: Contracts, actors: Actors, store_url: str, pg_engine: Engine
) -> None:
    """Harm: node2 commits a valid batch whose one entry has a 129-character agent id (the manifest
    format bounds no string). On PostgreSQL the insert fails ("value too long"), the exception leaves
    `attach_manifests` at that batch on every step, and no later batch of any node gets receipts.

    Cause: db/models.py ``Receipt.agent: String(128)``; indexer.py `attach_manifests` lets a database
    error of one batch escape its loop (it handles only ContentUnavailable and FormatError).

    Fix (by design): Text columns for every format string (or the format bounds them and the model
    uses the same constant), and a per-batch try/except that marks the batch "invalid" with the
    error instead of aborting the loop."""
    c = network
    bad = make_entry(c, actors.node2, actors.users[1].address, store_url, nonce=1, agent="a" * 5000)
    bad_batch = commit(c, actors.node2, [bad], store_url)
    done = commit_real_batch(c, actors, store_url)
    ix = make_indexer(pg_engine, c, store_url)
    ix.catch_up()
    with Session(pg_engine) as s:
        b = s.get(Batch, done.batch_id)
        assert b is not None and b.manifest_status == "ok"
        long = s.get(Batch, bad_batch)
        assert long is not None and long.manifest_status == "ok"  # stored whole: a Text column
        assert s.scalar(select(Receipt.agent).where(Receipt.batch_id == bad_batch)) == "a" * 5000


def test_defence_a_one_block_reorg_keeps_the_receipts_before_the_fork(
    network: Contracts, actors: Actors, store_url: str
) -> None:
    """Harm: with the default ``confirmations=0``, a one-block reorg at the head (routine on many
    chains) that touches no batch still deletes every receipt of the index and re-reads every
    manifest from the store (32 per step); with a long history the explorer answers 404 for every
    task for minutes and hammers the store.

    Cause: indexer.py `check_reorg` deletes all DERIVED tables (Receipt included) and replays every
    event from the first, resetting every batch to "pending".

    Fix (by design): undo only what the orphaned events did: delete events/batches/receipts with
    block > fork and replay derived state from a checkpoint (or from the fork, for additive
    tables); keep receipts of batches below the fork; default confirmations > 0."""
    c = network
    done = commit_real_batch(c, actors, store_url)
    ix = make_indexer(open_database("sqlite://"), c, store_url)
    ix.catch_up()
    assert ix.content is not None
    with Session(ix.engine) as s:
        before = queries.totals(s)
        kept = s.scalar(select(func.count()).select_from(Receipt))
    reads: list[str] = []
    real_dag = ix.content.dag

    def counting_dag(cid: str) -> Any:
        reads.append(cid)
        return real_dag(cid)

    ix.content.dag = counting_dag  # type: ignore[method-assign]
    snap = snapshot(c.w3)
    c.as_account(actors.node).service_manager.add_stake(ETH)
    ix.catch_up()
    revert(c.w3, snap)  # the head block is replaced by a different one
    c.as_account(actors.node2).service_manager.add_stake(ETH)
    mine(c.w3, 1)
    assert ix.check_reorg()
    with Session(ix.engine) as s:
        batch = s.get(Batch, done.batch_id)
        assert batch is not None and batch.block < get_cursor(s, 0)  # the batch was not reorged...
        assert batch.manifest_status == "ok"
        assert s.scalar(select(func.count()).select_from(Receipt)) == kept > 0  # ...nor its receipts
        assert task_detail(s, None, done.task_ids[0]) is not None
        after = queries.totals(s)
        assert {k: after[k] for k in ("tasks", "fees", "committed")} == {
            k: before[k] for k in ("tasks", "fees", "committed")
        }
    ix.catch_up()
    assert reads == []  # no manifest was downloaded again


# -- (d) the API ------------------------------------------------------------------------------------


def test_defence_an_event_cursor_beyond_int64_is_a_client_error() -> None:
    """Harm: ``/api/v1/events?after=2**63`` (and ``/api/v1/live?after=``) reach SQLite with an
    integer it cannot bind: an unhandled OverflowError, a 500 instead of a 4xx (schemathesis-style
    fuzzing of the explorer's OpenAPI would flag it; the node's API is held to 0 server errors).

    Fix: bound every integer parameter to the column's range (``le=2**63 - 1``) in one place."""
    engine = open_database("sqlite://")
    with TestClient(create_app(ExplorerState(engine)), raise_server_exceptions=False) as client:
        assert client.get("/api/v1/events", params={"after": 2**63 - 1}).status_code == 200
        assert client.get("/api/v1/events", params={"after": 2**63}).status_code == 400
        assert client.get("/api/v1/live", params={"after": 2**63}).status_code == 400


FIND_TX = "SELECT id FROM events WHERE tx_hash = 'x'"


def test_defence_transaction_hash_search_uses_an_index() -> None:
    """Harm: any ``/search?q=0x<64 hex>`` that is neither a task id nor a leaf runs
    ``SELECT ... FROM events WHERE tx_hash = ?`` (queries.py `find_hash`); ``events.tx_hash`` has no
    index, so each anonymous search reads the whole events table (millions of rows on a live
    network): a cheap request that costs the server a full scan.

    Fix: an index on ``events.tx_hash`` (model and migration), or look transactions up by block."""
    engine = open_database("sqlite://")
    indexed = {tuple(ix["column_names"]) for ix in inspect(engine).get_indexes("events")}
    assert ("tx_hash",) in indexed
    with engine.connect() as conn:
        plan = " ".join(str(r[-1]) for r in conn.execute(text("EXPLAIN QUERY PLAN " + FIND_TX)))
    assert "INDEX" in plan and "SCAN" not in plan, plan


# -- (a) script injection -----------------------------------------------------------------------

XSS = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(2)>'


def test_defence_attacker_text_is_escaped_on_every_page(
    network: Contracts, actors: Actors, store_url: str
) -> None:
    """node2 puts script in its on-chain endpoint, in an agent id, and in the trace's input, messages
    and output; the search box gets script too. Every page shows the text escaped; no raw tag, no
    event handler attribute, and no attacker value in an href."""
    c = network
    c.as_account(actors.node2).service_manager.update_endpoint("javascript:alert(3)//" + XSS)
    e = make_entry(
        c,
        actors.node2,
        actors.users[1].address,
        store_url,
        nonce=3,
        question=XSS + IMG,
        answer=IMG + XSS,
        agent=XSS,
        signed_by=actors.users[1],
    )
    batch_id = commit(c, actors.node2, [e], store_url)
    ix = make_indexer(open_database("sqlite://"), c, store_url)
    ix.catch_up()
    tid = "0x" + e.receipt.request_hash.hex()
    with TestClient(create_app(ExplorerState(ix.engine, ContentReader(store_url)))) as client:
        pages = {
            "task": client.get(f"/tasks/{tid}").text,
            "batch": client.get(f"/batches/{batch_id}").text,
            "address": client.get(f"/address/{actors.node2.address}").text,
            "network": client.get("/").text,
            "search": client.get("/search", params={"q": XSS}).text,
        }
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages["task"]  # the payload reached the page
    assert "&lt;img src=x onerror=alert(2)&gt;" in pages["task"]
    assert "javascript:alert(3)//&lt;script&gt;" in pages["address"]
    for name, html in pages.items():
        assert "<script>alert" not in html, name
        assert "<img src=x" not in html, name
        assert 'href="javascript:' not in html, name
    with Session(ix.engine) as s:  # the raw values are stored as they were (escaping is at render)
        assert s.scalar(select(Receipt.agent)) == XSS
        assert s.scalar(select(func.count()).select_from(Event).where(Event.name == "EndpointUpdated")) == 1
        assert s.get(Meta, "cursor") is not None


def test_defence_pages_with_attacker_text_carry_a_csp() -> None:
    """Harm (defence in depth): task, batch and challenge pages render text any node or user wrote
    (traces, agent ids, evidence); autoescaping is the only barrier. One ``|safe``, Markup() or
    template slip and it is stored XSS on the explorer's origin (which also serves the JSON API).
    No Content-Security-Policy, X-Content-Type-Options or frame-ancestors is sent.

    Fix: one middleware: ``Content-Security-Policy: default-src 'self'; script-src 'self';
    object-src 'none'; base-uri 'none'; frame-ancestors 'none'`` (the pages already use only
    /static/live.js and /static/style.css and inline SVG), ``X-Content-Type-Options: nosniff``,
    ``Referrer-Policy: no-referrer``."""
    with TestClient(create_app(ExplorerState(open_database("sqlite://")))) as client:
        pages = [client.get(path) for path in ("/", "/api/v1/network", "/tasks/0x" + "00" * 32)]
    for r in pages:
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "object-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert r.headers["x-content-type-options"] == "nosniff"
