"""Third adversarial review of the block explorer (`supernet.explorer`): hostile nodes and users
whose data it shows (prices, fees, copies of a victim's task id, evidence text), and the totals it
folds from events (this session's `RefundClaimed`, burns) under replays and reorgs. The first two
reviews (tests/unit/test_review_explorer.py, test_review_explorer2.py: stored XSS in traces, agent
ids, endpoints and search, unsigned claims, head-of-line blocking of manifests, column widths,
huge counts, reorg races, misrouted RPCs, RPC cost of a batch view, live-feed bursts and ids) are
not repeated here.

Real parts throughout: Anvil with the compiled contracts (``network``), the embedded content store
(``store_url``), the real `Indexer` / `ChainReader` / `ContentReader`, the explorer's real SQLite
index and the FastAPI app over `TestClient` (``raise_server_exceptions=False``: what a browser gets).
Reorgs are real (``evm_revert``, then a different branch mined past the old head).

Found (all seven fixed; each test was a failing ``test_attack_*`` before its fix, now a
``test_defence_*``):

- HIGH (one transaction takes the explorer's front page down for everyone): `format.eth` (the
  Jinja ``eth`` filter, explorer/supernet/explorer/format.py:29) quantizes ``Decimal(wei) / 1e18``
  to 6 decimals under the default 28-digit decimal context, which raises ``InvalidOperation`` for
  any amount of 10**40 wei or more. ``ServiceManager.updatePrice`` takes any uint256 and the
  Network page renders every node's ``price_per_token|eth``: a registered node that sets its price
  to 10**40 makes ``GET /`` (and its own address page) a 500 for every visitor until it changes it
  back. ``test_defence_a_node_price_of_1e40_wei_takes_the_network_page_down``
  FIXED: `format.eth` divides with integers (``divmod``, rounded half to even), so every uint256
  (and any running total beyond) renders; tests/unit/test_explorer_text.py has the largest uint256.
- HIGH (same root cause, through a manifest, no chain call but a commit): a node that signs a task
  request with its own second key as "user" (sybil users are free) and ``maxFee`` = 10**40 passes
  `ManifestEntry.signed_by_user`; the fee is added to the node's and the network's "Fees" totals,
  and the Network page, the node's address page and the task page (``maxFee|int|eth``) all answer
  500. ``test_defence_a_self_signed_task_with_a_huge_fee_takes_the_network_page_down``
  FIXED: the same integer `format.eth` renders the fee on every page (the "Fees" total of
  self-signed tasks stays the node's word; ``Redeemed`` is what was paid).
- MEDIUM (unbounded list an outsider controls, on a victim's page): `queries.receipts_of_task`
  (queries.py:158) has no LIMIT and `details.task_detail` lists every other receipt with the same
  task id (``others``). Any node can commit batches of 512 copies of a victim's task id (one
  commit each, no user signature needed, one shared trace); every view of the victim's task page
  and ``/api/v1/tasks/{id}`` then loads and renders all of them (here 2 x 300 = 600 rows; 100
  commits give 51,200), against the module's own promise that "lists are bounded (LIMIT) so a page
  costs the same with ten receipts indexed or ten million".
  ``test_defence_copies_of_a_victims_task_id_are_listed_without_bound``
  FIXED: `queries.receipts_of_task` loads the signed receipt and at most ``LIMIT`` others and
  counts the rest, which the task page and ``/api/v1/tasks/{id}`` show as ``others_not_listed``.
- LOW (the API hides which receipts are fabrications): `schemas.ReceiptOut` (schemas.py:62) has no
  ``signed`` field, so ``/api/v1/batches/{id}``, ``/api/v1/address/{node}`` and the task answer's
  ``others`` list a node's unsigned claim in a victim's name exactly like a user-signed task; the
  page marks it "(unsigned claim)", the API (which the docs say is the page's data) cannot.
  ``test_defence_the_api_does_not_say_which_receipts_are_unsigned_claims``
  FIXED: `schemas.ReceiptOut` has ``signed: bool`` (documented in docs/explorer/openapi.json), in
  every answer that lists receipts.
- LOW (search misdirected by a copied CID): `queries.find_cid` (queries.py:226) returns the first
  receipt with a trace CID, unordered and whether or not it is signed; a node that copies an
  honest trace's CID into its own claim and is indexed first (it front-runs the honest commit:
  manifests and traces are in the store before their commit lands) makes a search for that CID
  land on its claim's task page. ``test_defence_a_search_for_a_trace_cid_can_land_on_another_nodes_claim``
  FIXED: `queries.find_cid` takes only a receipt whose ``trace_hash`` is the CID's digest, the
  user-signed one first, then by (batch, index).
- LOW (the "Burned" total disagrees with the chain): the explorer folds the burns of
  ``ChallengeResolved``, ``RefundClaimed`` and ``AvailabilityResolved`` but not of
  ``AvailabilitySettled`` (apply.py:347-370 has no handler): every answered availability claim
  burns ``CHALLENGE_BOND * AVAILABILITY_FEE_BPS / BPS`` (`TaskManager._splitAnswerBond`), which
  ``TaskManager.totalBurned`` counts and the Network page's "Burned" never shows.
  ``test_defence_an_answered_availability_claims_burn_is_missing_from_burned``
  FIXED: `apply._availability_settled` adds ``AvailabilitySettled.burned`` to "Burned" (migration
  0005 recounts an existing index), so it equals ``TaskManager.totalBurned``.
- LOW (a held refund is shown as refunded): ``ChallengeResolved.refund`` is the cap held for
  whoever can show the signed request (`TaskManager._resolveFraud`); `_challenge_resolved`
  (apply.py:293) adds it to "Refunded" at once and the challenge page calls it "User refund".
  A refund nobody can claim (a fabricated receipt whose request does not exist: a node slashing
  itself through an ally) stays held in the contract for ever, yet is shown as ETH refunded to
  users. ``test_defence_a_refund_nobody_claimed_is_not_counted_as_refunded``
  FIXED: a verdict's refund goes to "Refunds held" (the challenge page: "held for the user") and
  only `apply._refund_claimed` adds to "Refunded" (the credited ``amount``, the rest to "Burned").

Checked and holding:

- `RefundClaimed` (new this session) keeps the totals right: after a claim "Refunded" is the signed
  maxFee and "Burned" matches ``TaskManager.totalBurned``; a reorg that orphans the claim restores
  the held refund, a claim on the new branch is folded once, and a rebuild of the derived tables
  from the events table (`Indexer.check_reorg`'s replay) gives the same totals; re-ingesting an
  event already indexed (a crash re-reading a range, or a second indexer on the same database) is
  refused by the unique (block, log_index) index, so nothing is counted twice
  (``test_defence_refund_claimed_totals_survive_a_reorg_a_replay_and_a_rebuild``);
- a hostile validator's evidence (check names, messages, expected/claimed values) is escaped on
  the challenge page, a manifest with script in every field is marked invalid and its batch page
  shows nothing raw, and no attacker value reaches an href
  (``test_defence_evidence_and_manifest_errors_are_escaped``);
- the JSON API carries wei as decimal strings: a price of 10**40 is served intact by
  ``/api/v1/network`` (only the HTML filter breaks, see the first finding).
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import os
from typing import Any

import pytest
from chain_fixtures import MODEL_ID, Actors, make_receipts
from eth_account import Account
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from supernet.explorer import queries
from supernet.explorer.app import ExplorerState, create_app
from supernet.explorer.apply import ingest, project
from supernet.explorer.chain import ChainLog
from supernet.explorer.content import ContentReader
from supernet.explorer.db.engine import open_database
from supernet.explorer.db.models import Event, Receipt
from supernet.explorer.indexer import DERIVED, Indexer
from supernet.sdk.chain import Contracts, ReceiptTree, TaskRequest, hash_task_request, sign_task_request
from supernet.sdk.chain.anvil import mine, revert, snapshot
from supernet.sdk.chain.receipts import Receipt as ChainReceipt
from supernet.sdk.chain.receipts import input_hash, output_hash, sign_receipt, trace_hash
from supernet.sdk.formats import BatchManifest, ManifestEntry
from supernet.sdk.formats.evidence import example_dag as evidence_example
from supernet.sdk.formats.profile import AgentProfile
from supernet.sdk.formats.trace import Trace
from supernet.sdk.formats.trace import example_dag as trace_example
from supernet.sdk.store import StoreClient

from tests.integration.test_explorer_indexer import challenge_and_slash, commit_real_batch, make_indexer

pytestmark = [pytest.mark.anvil]

FEE = 10**14
HUGE = 10**40
XSS = "<script>alert(1)</script>"


def put(store_url: str, obj: Any) -> str:
    async def go() -> str:
        async with StoreClient(store_url) as store:
            return await store.put_dag(obj, pin=True)

    return asyncio.run(go())


def client_of(ix: Indexer, store_url: str | None = None) -> TestClient:
    content = ContentReader(store_url) if store_url else None
    return TestClient(create_app(ExplorerState(ix.engine, content)), raise_server_exceptions=False)


def entry_for(
    c: Contracts,
    node: LocalAccount,
    user: LocalAccount,
    store_url: str,
    *,
    fee: int = FEE,
    nonce: int = 1,
    signed: bool = True,
    task_id: bytes | None = None,
) -> ManifestEntry:
    """One manifest entry ``node`` writes for ``user``'s request (``maxFee`` = ``fee``), with a
    consistent trace in the store; the request signed by ``user`` when ``signed``."""
    question, answer = "What is 2 + 2?", "4"
    trace = copy.deepcopy(trace_example())
    profile = bytes.fromhex(AgentProfile.of_trace(Trace.from_dag(trace)).hash()[2:])
    req = TaskRequest(user.address, node.address, MODEL_ID, profile, input_hash(question), fee, nonce, 2**40)
    tid = task_id if task_id is not None else hash_task_request(req, c.domain)
    # the trace's own fee field is dag-cbor (at most 2**64 - 1); the receipt's and request's are not
    trace.update(
        task_id="0x" + tid.hex(), user=user.address, fee=min(fee, FEE), input=question, output=answer
    )
    trace.update(model_id="0x" + MODEL_ID.hex())
    trace["events"][0].update(model_id="0x" + MODEL_ID.hex(), text=answer)
    trace["events"][0]["messages"] = [{"role": "user", "content": question}]
    cid = put(store_url, trace)
    receipt = ChainReceipt(
        tid, user.address, MODEL_ID, input_hash(question), output_hash(answer), trace_hash(cid), fee
    )
    return ManifestEntry(
        receipt,
        receipt.leaf(),
        sign_receipt(receipt, node),
        cid,
        "chat",
        req,
        sign_task_request(req, c.domain, user) if signed else None,
    )


def commit(c: Contracts, node: LocalAccount, entries: list[ManifestEntry], store_url: str) -> int:
    manifest_cid = put(store_url, BatchManifest.seal(node.address, entries).to_dag())
    tree = ReceiptTree(e.leaf for e in entries)
    return c.as_account(node).task_manager.commit_batch(tree.root, len(tree), manifest_cid).value.batch_id


# -- huge amounts through the eth filter -------------------------------------------------------------


def test_defence_a_node_price_of_1e40_wei_takes_the_network_page_down(
    network: Contracts, actors: Actors
) -> None:
    """node2 calls ``updatePrice(10**40)`` (any uint256 is accepted). The Network page renders
    ``price_per_token|eth``; `format.eth` raises ``decimal.InvalidOperation`` (quantize beyond the
    28-digit context) and every visitor of ``/`` gets a 500. The JSON API (decimal strings) is fine.

    Fix: format amounts with integer arithmetic (``divmod(wei, 10**18)``) or a local decimal
    context wide enough for 78 digits, so every uint256 renders."""
    c = network
    c.as_account(actors.node2).service_manager.update_price(HUGE)
    ix = make_indexer(open_database("sqlite://"), c, None)
    ix.catch_up()
    with client_of(ix) as client:
        api = client.get("/api/v1/network")
        assert api.status_code == 200  # the JSON answer carries the price as a decimal string
        assert any(n["price_per_token"] == str(HUGE) for n in api.json()["nodes"])
        page = client.get("/")
        node_page = client.get(f"/address/{actors.node2.address}")
    assert page.status_code == 200, f"the Network page answers {page.status_code} for every visitor"
    assert node_page.status_code == 200


def test_defence_a_self_signed_task_with_a_huge_fee_takes_the_network_page_down(
    network: Contracts, actors: Actors, store_url: str
) -> None:
    """node2 signs a request with a fresh key of its own as the "user" (``maxFee`` = 10**40) and
    commits one receipt charging it: it passes `signed_by_user` (digest, node, user, fee = maxFee,
    a valid signature), so the fee is counted in the node's and the network's "Fees". No ether
    moved. The Network page, node2's page and the task page then answer 500 (`format.eth`).

    Fix: as above (render any uint256); the "Fees" total of self-signed tasks stays the node's
    word (the on-chain ``Redeemed`` total is what was paid)."""
    c = network
    sybil = Account.create()
    e = entry_for(c, actors.node2, sybil, store_url, fee=HUGE)
    commit(c, actors.node2, [e], store_url)
    ix = make_indexer(open_database("sqlite://"), c, store_url)
    ix.catch_up()
    with Session(ix.engine) as s:
        assert queries.totals(s)["fees"] == HUGE  # counted as a real, user-signed task
    tid = "0x" + e.receipt.request_hash.hex()
    with client_of(ix, store_url) as client:
        status = {
            p: client.get(p).status_code for p in ("/", f"/address/{actors.node2.address}", f"/tasks/{tid}")
        }
    assert status == {p: 200 for p in status}, status


# -- unbounded lists ---------------------------------------------------------------------------------


def test_defence_copies_of_a_victims_task_id_are_listed_without_bound(
    network: Contracts, actors: Actors, store_url: str
) -> None:
    """An honest node's signed task is public once committed. node2 commits two batches of 300
    copies of its task id each (its own receipts, no user signature, one shared trace). Every view
    of the victim's task page (and its API answer) loads and renders all 600 copies: the list
    grows with whatever any node commits, 512 per commit.

    Fix: LIMIT the other receipts (`queries.receipts_of_task`: the signed one plus at most
    `queries.LIMIT` others, with a count of the rest), as every other list is."""
    c = network
    honest = entry_for(c, actors.node, actors.users[0], store_url)
    commit(c, actors.node, [honest], store_url)
    victim = honest.receipt.request_hash
    copy_entry = entry_for(c, actors.node2, actors.users[0], store_url, signed=False, task_id=victim, nonce=2)
    for _ in range(2):
        commit(c, actors.node2, [copy_entry] * 300, store_url)
    ix = make_indexer(open_database("sqlite://"), c, store_url)
    ix.catch_up()
    with Session(ix.engine) as s:
        assert s.scalar(select(func.count()).select_from(Receipt).where(Receipt.signed.is_(False))) == 600
    with client_of(ix, store_url) as client:
        doc = client.get(f"/api/v1/tasks/0x{victim.hex()}").json()
        page = client.get(f"/tasks/0x{victim.hex()}").text
    assert doc["receipt"]["node"] == actors.node.address  # the honest, signed one is the task's
    shown = len(doc["others"])
    assert shown <= queries.LIMIT, f"the victim's task lists {shown} receipts another node committed"
    assert page.count("unsigned claim") <= queries.LIMIT
    assert doc["others_not_listed"] == 600 - shown  # the rest is counted, not loaded
    assert f"and {600 - shown:,} more not listed" in page


def test_defence_the_api_does_not_say_which_receipts_are_unsigned_claims(
    network: Contracts, actors: Actors, store_url: str
) -> None:
    """node2 commits a receipt in user 1's name that user 1 never signed. The batch page marks it
    "(unsigned claim)"; the JSON API's batch and address answers list it with user, fee and
    everything else, but not whether it is signed (`schemas.ReceiptOut` has no ``signed`` field,
    so FastAPI's response model drops the column): a wallet or dashboard on the API shows the
    node's fabrication as user 1's task, although the docs say each answer is the page's data.

    Fix: ``signed: bool`` in `schemas.ReceiptOut` (and the committed OpenAPI document)."""
    c = network
    fake = entry_for(c, actors.node2, actors.users[1], store_url, signed=False)
    batch_id = commit(c, actors.node2, [fake], store_url)
    ix = make_indexer(open_database("sqlite://"), c, store_url)
    ix.catch_up()
    with client_of(ix, store_url) as client:
        page = client.get(f"/batches/{batch_id}").text
        listed = client.get(f"/api/v1/batches/{batch_id}").json()["receipts"]
        by_node = client.get(f"/api/v1/address/{actors.node2.address}").json()["receipts"]
    assert "(unsigned claim)" in page
    assert listed[0]["user"] == actors.users[1].address and by_node[0]["user"] == actors.users[1].address
    assert listed[0].get("signed") is False, "the API lists the fabricated receipt like a user's task"
    assert by_node[0].get("signed") is False


def test_defence_a_search_for_a_trace_cid_can_land_on_another_nodes_claim(
    network: Contracts, actors: Actors, store_url: str
) -> None:
    """node2 copies an honest task's trace CID into a receipt of its own (a task id of its choice,
    no user signature) and gets it indexed first (it front-runs the honest commit, whose manifest
    and traces are in the store before the commit lands). Searching for the honest trace's CID
    redirects to node2's claim (`queries.find_cid` takes any receipt with that CID, unordered),
    whose page fails verification, instead of the task the trace is of.

    Fix: prefer the signed receipt (``order_by(Receipt.signed.desc(), batch_id, idx)``), and only
    a receipt whose ``trace_hash`` is the CID's digest (a claim copying the CID is not its trace)."""
    c = network
    honest = entry_for(c, actors.node, actors.users[0], store_url)
    mine_id = bytes(31) + b"\x07"
    claim = entry_for(c, actors.node2, actors.users[2], store_url, signed=False, task_id=mine_id, nonce=9)
    claim = ManifestEntry(
        claim.receipt, claim.leaf, claim.signature, honest.trace_cid, claim.agent, claim.request, None
    )
    commit(c, actors.node2, [claim], store_url)  # lands first
    commit(c, actors.node, [honest], store_url)
    ix = make_indexer(open_database("sqlite://"), c, store_url)
    ix.catch_up()
    with client_of(ix, store_url) as client:
        found = client.get("/api/v1/search", params={"q": honest.trace_cid}).json()
    assert found["id"] == "0x" + honest.receipt.request_hash.hex(), f"search lands on {found['url']}"


# -- totals folded from events -----------------------------------------------------------------------


def _availability_batch(c: Contracts, actors: Actors) -> tuple[int, list[ChainReceipt], ReceiptTree, bytes]:
    trace = bytes(b | 1 for b in os.urandom(512))
    receipts = make_receipts(c, actors.users, actors.node.address, 2)
    receipts[0] = ChainReceipt(*receipts[0].as_tuple()[:5], hashlib.sha256(trace).digest(), receipts[0].fee)
    tree = ReceiptTree.from_receipts(receipts)
    batch_id = c.as_account(actors.node).task_manager.commit_batch(tree.root, len(tree), "bafymanifest").value
    mine(c.w3, 2)
    return batch_id.batch_id, receipts, tree, trace


def test_defence_an_answered_availability_claims_burn_is_missing_from_burned(
    network: Contracts, actors: Actors
) -> None:
    """A validator claims receipt 0 of node's batch is unavailable; node answers with the trace.
    The answer burns a share of the claim's bond (``AvailabilitySettled.burned``), counted in
    ``TaskManager.totalBurned``; the explorer has no handler for ``AvailabilitySettled`` and its
    "Burned" total stays short of the chain's.

    Fix: fold ``AvailabilitySettled`` (``add_total("burned", burned)``), and compare "Burned" with
    ``totalBurned`` in the integration test."""
    c = network
    batch_id, receipts, tree, trace = _availability_batch(c, actors)
    opened = c.as_account(actors.validators[0]).task_manager.challenge_availability(batch_id, 0)
    settled = c.as_account(actors.node).task_manager.answer_availability(
        opened.value, receipts[0], tree.proof_at(0), trace
    )
    assert int(settled.value["burned"]) > 0
    ix = make_indexer(open_database("sqlite://"), c, None)
    ix.catch_up()
    with Session(ix.engine) as s:
        assert (
            s.scalar(select(func.count()).select_from(Event).where(Event.name == "AvailabilitySettled")) == 1
        )
        burned = queries.totals(s)["burned"]
    assert burned == c.task_manager.total_burned(), (
        f"explorer shows {burned} wei burned, the chain burned {c.task_manager.total_burned()}"
    )


def test_defence_a_refund_nobody_claimed_is_not_counted_as_refunded(
    network: Contracts, actors: Actors, store_url: str
) -> None:
    """A fraud verdict holds ``refund`` for whoever shows the signed request; until a
    ``RefundClaimed`` nobody was refunded (and for a fabricated receipt nobody ever will be).
    The explorer adds the held cap to "Refunded" at the verdict.

    Fix: count "Refunded" from ``RefundClaimed.amount`` only, and show the verdict's cap as
    "held for the user" (a separate total / the challenge page's wording) until claimed."""
    c = network
    done = commit_real_batch(c, actors, store_url)
    result = challenge_and_slash(c, actors, store_url, done, 1)
    assert int(result["refund"]) > 0
    ix = make_indexer(open_database("sqlite://"), c, None)
    ix.catch_up()
    with Session(ix.engine) as s:
        refunded, held = queries.totals(s)["refunded"], queries.totals(s)["refunds_held"]
    assert refunded == 0, f"{refunded} wei shown as refunded; no user has been credited anything"
    assert held == int(result["refund"])
    with client_of(ix) as client:
        page = client.get(f"/challenges/{result['challenge_id']}").text
    assert "held for the user" in page and "refunded to the user" not in page


def _totals(engine: Any) -> dict[str, int]:
    with Session(engine) as s:
        return queries.totals(s)


def test_defence_refund_claimed_totals_survive_a_reorg_a_replay_and_a_rebuild(
    network: Contracts, actors: Actors, store_url: str
) -> None:
    """Fraud verdict, then the user's refund claimed (signed maxFee credited, the rest of the held
    cap burned). "Refunded" is the maxFee and "Burned" matches ``totalBurned``. A real reorg that
    orphans the claim gives the held cap back (to "Refunds held"); the same claim on the new branch
    is folded once; a rebuild from the events table gives the same totals; re-ingesting an indexed
    event is refused."""
    c = network
    done = commit_real_batch(c, actors, store_url)
    result = challenge_and_slash(c, actors, store_url, done, 1)
    cid, held = result["challenge_id"], int(result["refund"])
    engine = open_database("sqlite://")
    ix = make_indexer(engine, c, None)
    ix.catch_up()
    before = _totals(engine)
    assert before["burned"] == c.task_manager.total_burned()
    assert (before["refunded"], before["refunds_held"]) == (0, held)  # held, nobody refunded yet

    snap = snapshot(c.w3)
    e = done.entries[1]
    claim = c.as_account(actors.outsider).task_manager.claim_refund(cid, e.receipt, e.request)
    assert claim.value == FEE
    mine(c.w3, 1)
    ix.catch_up()
    after = _totals(engine)
    assert after["refunded"] == FEE and after["burned"] == c.task_manager.total_burned()
    assert after["refunds_held"] == 0
    assert after["burned"] - before["burned"] == held - FEE

    # the claim's blocks are orphaned: a different branch grows past them
    revert(c.w3, snap)
    c.as_account(actors.node2).service_manager.add_stake(10**18)
    mine(c.w3, 4)
    ix.catch_up()
    assert (_totals(engine)["refunded"], _totals(engine)["refunds_held"]) == (0, held)
    assert _totals(engine)["burned"] == c.task_manager.total_burned()

    # claimed again on the new branch: folded once
    c.as_account(actors.users[0]).task_manager.claim_refund(cid, e.receipt, e.request)
    mine(c.w3, 1)
    ix.catch_up()
    final = _totals(engine)
    assert final["refunded"] == FEE and final["burned"] == c.task_manager.total_burned()
    assert final["refunds_held"] == 0

    # rebuild the derived tables from the events table (what a reorg does): same totals
    with Session(engine) as s, s.begin():
        for table in DERIVED:
            s.execute(delete(table))
        for ev in s.scalars(select(Event).order_by(Event.block, Event.log_index)):
            project(s, ev)
    assert _totals(engine) == final

    # an event already indexed cannot be ingested (and folded) a second time
    with Session(engine) as s:
        ev = s.scalar(select(Event).where(Event.name == "RefundClaimed"))
        assert ev is not None
        again = ChainLog(ev.block, ev.log_index, ev.tx_hash, ev.contract, ev.name, dict(ev.args))
    with pytest.raises(IntegrityError), Session(engine) as s, s.begin():
        ingest(s, again, ev.timestamp)
    assert _totals(engine) == final


# -- text a validator or node wrote --------------------------------------------------------------------


def test_defence_evidence_and_manifest_errors_are_escaped(
    network: Contracts, actors: Actors, store_url: str
) -> None:
    """A hostile validator's evidence (check, message, expected/claimed) carries script and a
    ``javascript:`` URL; a node commits a manifest whose agent id is script and a batch whose
    "manifest" is a malformed document with script in it (its error text is shown). Every page
    shows the text escaped, with no attacker value in an href."""
    c = network
    done = commit_real_batch(c, actors, store_url)
    evidence = evidence_example()
    evidence.update(batchId=done.batch_id, index=0, validator=actors.validators[0].address)
    for f in evidence["findings"]:
        f.update(check=XSS, message="javascript:alert(2)//" + XSS, expected=XSS)
    evidence_cid = put(store_url, evidence)
    tm = c.as_account(actors.validators[0]).task_manager
    ch = tm.challenge(done.batch_id, 0, done.entries[0].receipt, done.tree.proof_at(0), evidence_cid).value
    bad_cid = put(store_url, {"type": XSS, "version": 1, "node": XSS, "root": XSS, "receipts": []})
    bad = c.as_account(actors.node2).task_manager.commit_batch(b"\x02" * 32, 1, bad_cid).value.batch_id
    ix = make_indexer(open_database("sqlite://"), c, store_url)
    ix.catch_up()
    with client_of(ix, store_url) as client:
        pages = {
            "challenge": client.get(f"/challenges/{ch}").text,
            "batch": client.get(f"/batches/{bad}").text,
            "api": client.get(f"/api/v1/challenges/{ch}").text,
        }
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages["challenge"]  # the payload reached the page
    for name, html in pages.items():
        if name != "api":
            assert "<script>alert" not in html, name
            assert 'href="javascript:' not in html, name
