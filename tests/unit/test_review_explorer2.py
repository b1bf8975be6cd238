"""Second adversarial review of the block explorer (`supernet.explorer`): an outsider, a hostile
node, a hostile or misrouted RPC. The first review (tests/unit/test_review_explorer.py: stored XSS,
unsigned claims, head-of-line blocking of manifests, PostgreSQL column widths, huge counts, a reorg
re-reading every manifest, the int64 cursor, the tx-hash index, CSP) is not repeated here.

Real parts throughout: Anvil with the compiled contracts (``network``), the embedded content store
(``store_url``), the real `Indexer` / `ChainReader` / `ContentReader`, the FastAPI app over
`TestClient`, and ``tests/rpc_proxy.py`` (a real JSON-RPC proxy in front of Anvil) to count what a
page costs the RPC. The one arranged fault: in the mid-scan reorg test the real reorg (``evm_revert``
then a different block) is triggered between the indexer's two reads, the only way to hit that
window deterministically.

Found (all seven fixed; each test was a failing ``test_attack_*`` before its fix, now a
``test_defence_*``):

- HIGH (orphaned events kept for ever, real ones skipped): a reorg that lands between
  `Indexer._scan`'s ``eth_getLogs`` and its ``eth_getBlockByNumber`` calls stores the orphaned
  branch's events under the new branch's block hashes. `check_reorg` then sees matching hashes and
  never undoes them: the explorer shows events that are not on chain (here a ``deregister``: a
  live node shown as "left" with stake 0; equally a slash, a stake or a verdict), and the new
  branch's events in those blocks are never indexed (the cursor is past them).
  ``test_defence_a_reorg_between_reading_logs_and_block_hashes_is_undone``
  FIXED: `ChainLog` keeps each log's ``blockHash``; `_scan` pins the range's last block's hash
  before reading the logs and records the range only when it is unchanged after, and every log's
  hash is the one recorded for its block; else the range is read again next step.
- MEDIUM (another chain shown as this deployment): the explorer never compares the RPC's chain id
  with the deployment's (the SDK's `Contracts.connect` does, the explorer builds its `ChainReader`
  without it). A misrouted or hijacked RPC URL of another chain where the same deployer created
  contracts at the same addresses (addresses are deployer + nonce) is indexed as this deployment:
  stakes, slashes, batches and verdicts of a different network.
  ``test_defence_an_rpc_of_another_chain_is_refused``
  FIXED: `ChainReader.check_chain` before every scan (`WrongChain`), and at start (``--rpc`` refused).
- MEDIUM (anonymous request -> full-history log scan + 255 RPC calls): every view of a batch page
  calls ``TaskManager.batch`` (``eth_getLogs`` from block 0 to latest) and then ``isSampled`` once
  per (validator, receipt), up to 256 ``eth_call`` s, uncached, although all of it is fixed once
  the seed is sealed. One cheap ``commitBatch`` of count 85 (no manifest needed) makes each view
  of its page cost ~257 RPC requests; on a metered or range-limited public RPC this is a quota
  drain and a slow page for everyone.
  ``test_defence_a_batch_page_view_costs_at_most_two_rpc_reads``
  FIXED: the seed from the index (or one ``batchSeed`` read with the indexed commit's header), the
  rate read once, the sample computed locally (`supernet.sdk.chain.sampling`, the contract's rule,
  which the validator imports too).
- LOW (protocol events silently dropped): `ChainReader` keys its decoders by topic only; two
  contracts declare ``Withdrawn(address,uint256)`` (TaskManager, OmissionManager) and the last one
  wins, so every TaskManager ``Withdrawn`` (challenger rewards, vote rewards, refunds, bonds pulled)
  is discarded as "unknown" and missing from the feed and the address pages (likewise
  ServiceManager's ``TaskManagerSet``).
  ``test_defence_task_manager_withdrawals_are_indexed``
  FIXED: decoders keyed by (contract address, topic).
- LOW (a 500 on one letter): ``/search?q=b`` (any single multibase prefix letter: b, z, f, m, u,
  k, t, h...) raises IndexError inside ``multiformats.CID.decode``; `search.classify` catches only
  ValueError/KeyError, so the page and the API answer 500 (the docs promise "never a 500").
  ``test_defence_a_one_letter_search_is_a_400``
  FIXED: whatever the CID parser raises is a 400.
- LOW (live feed drops events): `/api/v1/live` fetches the newest 200 events after its cursor and
  then jumps the cursor to the newest: when more than 200 events are indexed between two polls
  (one indexer step covers 2,000 blocks; a reconnecting page) the older ones are never sent,
  although the docs promise "one event message per newly indexed protocol event".
  ``test_defence_the_live_feed_sends_every_event_of_a_burst``
  FIXED: the feed reads the oldest 200 after its cursor (`queries.events_after`) and reads again
  at once while a page comes back full.
- LOW (live feed skips the new branch after a reorg, SQLite): ``events.id`` is a SQLite rowid
  without AUTOINCREMENT, so after a reorg deletes the newest events the new branch's events reuse
  their ids; a client (``/api/v1/events?after=``, ``/api/v1/live``) whose cursor is an orphaned
  id never receives the replacement events.
  ``test_defence_after_a_reorg_new_events_get_ids_no_client_passed``
  FIXED: ``events`` is an AUTOINCREMENT table on SQLite (migration 0004; PostgreSQL's sequence
  never went back).

Checked and holding:

- endpoint strings with CR/LF and SSE framing (``\\n\\nevent: x``) cannot split a live message
  (``json.dumps`` escapes them) and a search redirect's Location only carries validated values
  (``test_defence_node_text_cannot_forge_live_messages_or_redirects``);
- ids with non-ASCII digits, signs, spaces, 19+ digits, over-long search strings and odd addresses
  are 4xx and change nothing (``test_defence_malformed_ids_are_4xx_and_change_nothing``);
- a fraud verdict cannot be turned into "cleared" (``revealDecoy`` needs an open challenge), a
  slashed node keeps its "slashed" status through freeze/unfreeze and re-registration, and the
  stake/unbonding replay matches ``getOperator`` (slash past the stake: ``Slashed.amount``
  includes the held earnings seized, `_slashed` subtracts only fromStake/fromUnbonding);
- evidence/manifest/trace CIDs reach the store only through ``canonical_cid`` (no path or query
  injection); traces are bounded by the 1 MiB block and 1,024 events; every list query is
  LIMITed and indexed.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import pytest
from chain_fixtures import Actors
from fastapi.testclient import TestClient
from rpc_proxy import rpc_proxy
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from supernet.explorer import queries
from supernet.explorer.app import ExplorerState, create_app
from supernet.explorer.chain import ChainLog, ChainReader
from supernet.explorer.db.engine import open_database
from supernet.explorer.db.models import Event, Operator
from supernet.explorer.indexer import Indexer
from supernet.sdk.chain import Contracts
from supernet.sdk.chain.anvil import increase_time, mine, revert, snapshot
from supernet.sdk.chain.contracts import make_web3
from supernet.sdk.chain.tasks import TaskManager
from supernet.sdk.store.cids import compute_cid, encode_dag

from tests.integration.test_explorer_indexer import challenge_and_slash, commit_real_batch, make_indexer

pytestmark = [pytest.mark.anvil]

ETH = 10**18


def never_stored_cid(i: int) -> str:
    """A well-formed CID of a document nobody ever put in the store."""
    return compute_cid(encode_dag({"never stored (review 2)": i}), "dag-cbor")


# -- lying: reorgs, other chains --------------------------------------------------------------------


def test_defence_a_reorg_between_reading_logs_and_block_hashes_is_undone(
    network: Contracts, actors: Actors
) -> None:
    """Harm: `_scan` reads a range's logs, then (separate calls) the hashes of their blocks. When
    the chain reorganises in between (routine at the head with the default ``confirmations=0``),
    the orphaned branch's events are stored with the *new* branch's hashes. Every later
    `check_reorg` compares those hashes with the chain's, finds them equal, and keeps the orphaned
    events for ever: here node2's ``deregister`` that is not on chain shows node2 as "left" with
    its whole stake unbonding (clients and users read a live node as gone), and the new branch's
    own event in that block (node's stake going up) is never indexed, since the cursor is already
    past it. (A ``BatchCommitted`` happens to be spared: its gas lookup by transaction hash fails
    and the step is retried; every other event, slashes and verdicts included, is not.)

    Cause: explorer/supernet/explorer/indexer.py `_scan` (``logs = self.reader.logs(...)`` then
    ``blocks = {b: self.reader.block(b) ...}``) and chain.py `ChainReader.logs`, which drops each
    log's ``blockHash``.

    Fix (by design): keep ``blockHash`` in `ChainLog` and record *that* hash for the log's block;
    refuse (re-read) the range when a log's blockHash differs from the block hash read for it, or
    read logs by block hash (``eth_getLogs`` with ``blockHash``) for the blocks whose hashes are
    recorded."""
    c = network
    ix = make_indexer(open_database("sqlite://"), c, None)
    ix.catch_up()
    snap = snapshot(c.w3)
    c.as_account(actors.node2).service_manager.deregister()  # only on the branch about to be dropped
    real_logs = ix.reader.logs
    reorged: list[int] = []

    def logs_then_reorg(start: int, end: int) -> list[ChainLog]:
        out = real_logs(start, end)
        if not reorged and any(lg.name == "Deregistered" for lg in out):
            # the real chain reorganises now: that block is replaced by a different one
            revert(c.w3, snap)
            c.as_account(actors.node).service_manager.add_stake(ETH)
            mine(c.w3, 1)
            reorged.append(1)
        return out

    ix.reader.logs = logs_then_reorg  # type: ignore[method-assign]
    ix.step()
    ix.reader.logs = real_logs  # type: ignore[method-assign]
    assert reorged
    ix.catch_up()
    ix.catch_up()
    assert c.service_manager.get_operator(actors.node2.address).registered  # node2 never left
    with Session(ix.engine) as s:
        left = s.scalar(select(func.count()).select_from(Event).where(Event.name == "Deregistered"))
        node2 = s.get(Operator, actors.node2.address)
        node = s.get(Operator, actors.node.address)
        assert node2 is not None and node is not None
        shown = (queries.operator_status(node2), node2.stake, node.stake)
    onchain = (
        "active",
        c.service_manager.get_operator(actors.node2.address).stake,
        c.service_manager.get_operator(actors.node.address).stake,
    )
    assert (left, shown) == (0, onchain), f"index shows (status, node2 stake, node stake) {shown}"


def test_defence_an_rpc_of_another_chain_is_refused(network: Contracts, actors: Actors) -> None:
    """Harm: the deployment says chain 1; ``--rpc`` answers for another chain (a misrouted or
    hijacked URL, a provider failing over to a testnet). Contract addresses are the deployer's
    address and nonce, so the same deployer's contracts on the other chain sit at the same
    addresses. The explorer indexes that chain's nodes, stakes, slashes and verdicts and shows
    them as this deployment's, without a word (a later switch back is "a reorg with nothing in
    common" and rebuilds the index again from whatever answers).

    Cause: explorer/supernet/explorer/cli.py builds ``ChainReader(make_web3(rpc), dep)`` and
    indexer.py `Indexer.step` scans it; nothing compares ``eth_chainId`` with
    ``Deployment.chain_id`` (the SDK's `Contracts.connect` does, and pins it).

    Fix (by design): at start (and in each step, or pinned like the SDK's) refuse an RPC whose
    chain id is not the deployment's, and record the deploy block's hash in the index's meta:
    an RPC whose deploy block differs is another chain, never a reorg to replay."""
    c = network
    assert c.w3.eth.chain_id != 1
    mainnet = dataclasses.replace(c.deployment, chain_id=1)  # the deployment file: Ethereum mainnet
    engine = open_database("sqlite://")
    ix = Indexer(engine, ChainReader(c.w3, mainnet), None, start_block=mainnet.deploy_block)
    refused = False
    try:
        ix.catch_up()
    except Exception:  # refusing loudly is the safe answer
        refused = True
    with Session(engine) as s:
        indexed = s.scalar(select(func.count()).select_from(Event))
        nodes = [o.address for o in s.scalars(select(Operator))]
    assert indexed == 0 and nodes == [], (
        f"indexed {indexed} events of chain {c.w3.eth.chain_id} as chain 1's deployment "
        f"(nodes {nodes}, refused={refused})"
    )


# -- denial of service ----------------------------------------------------------------------------


def test_defence_a_batch_page_view_costs_at_most_two_rpc_reads(network: Contracts, actors: Actors) -> None:
    """Harm: node2 sends one ``commitBatch`` of count 85 with a manifest nobody stored. From then
    on every anonymous view of ``/batches/N`` (page or API) makes the explorer send an
    ``eth_getLogs`` over the whole chain (block 0 to latest) and 3 x 85 = 255 ``eth_call``
    (``isSampled``), each view again: a few page loads a second exhaust a metered RPC's quota,
    a range-limited public RPC refuses the scan (no sampling ever shown), and each view holds a
    worker for hundreds of round trips.

    Cause: explorer/supernet/explorer/details.py `sampling`: ``tm.batch(batch_id)`` (sdk
    tasks.py `TaskManager.batch`: ``get_logs(from_block=0, ...)``) and one ``is_sampled`` call per
    (validator, index) up to ``count * validators <= 256``, with nothing cached, although the
    header is in the index and the result is fixed once the seed is sealed.

    Fix (by design): build the batch header from the indexed ``BatchCommitted`` (no log scan),
    read the seed once and compute the sample locally (`supernet.validator.sampler.sample` is
    the contract's rule) or cache the result per (batch, validator set) in the index."""
    c = network
    batch_id = (
        c.as_account(actors.node2)
        .task_manager.commit_batch(b"\x03" * 32, 85, never_stored_cid(3))
        .value.batch_id
    )
    mine(c.w3, c.params.seed_delay_blocks + 1)
    c.as_account(actors.validators[0]).task_manager.seal_seed_block(c.task_manager.batch(batch_id))
    ix = make_indexer(open_database("sqlite://"), c, None)
    ix.catch_up()
    assert c.deployment.rpc_url
    with rpc_proxy(c.deployment.rpc_url, lambda _req, _fwd: None) as (url, seen):
        tm = TaskManager(make_web3(url), c.deployment.address("TaskManager"))
        with TestClient(create_app(ExplorerState(ix.engine, None, tm))) as client:
            docs = [client.get(f"/api/v1/batches/{batch_id}").json() for _ in range(2)]
        requests = list(seen)
    assert docs[0]["sampling"]["seed"], docs[0]["sampling"]  # the sampling was shown
    methods = [r.get("method") for r in requests]
    scans = [
        r
        for r in requests
        if r.get("method") == "eth_getLogs"
        and int(str(r["params"][0].get("fromBlock", "0x0")), 16) < c.deployment.deploy_block
    ]
    assert (len(scans), len(requests) <= 10) == (0, True), (
        f"two views of one batch page cost {len(requests)} RPC requests "
        f"({methods.count('eth_call')} eth_call, {methods.count('eth_getLogs')} eth_getLogs, "
        f"{len(scans)} of them from block 0)"
    )


# -- events silently lost -------------------------------------------------------------------------


def test_defence_task_manager_withdrawals_are_indexed(
    network: Contracts, actors: Actors, store_url: str
) -> None:
    """Harm: a challenger wins a fraud challenge and withdraws its bond and reward from the
    TaskManager (``Withdrawn(account, amount)``). The explorer drops that event: it is in no
    feed, on no address page, in no ``/api/v1/events`` answer. Every TaskManager payout
    (challenger rewards, voter rewards, refunds) is invisible, while OmissionManager's are shown.

    Cause: explorer/supernet/explorer/chain.py `ChainReader.__init__` keys ``_decoders`` by topic
    alone; TaskManager and OmissionManager both declare ``Withdrawn(address,uint256)`` (same
    topic), OmissionManager's entry overwrites TaskManager's, and `logs` then skips the
    TaskManager log because its address is not OmissionManager's (ServiceManager's
    ``TaskManagerSet`` is lost to Payments' the same way).

    Fix: key decoders by (contract address, topic), and a unit test that every event of every
    ABI round-trips through `ChainReader`."""
    c = network
    done = commit_real_batch(c, actors, store_url)
    mine(c.w3, c.params.seed_delay_blocks + 1)
    increase_time(c.w3, 1)
    challenge_and_slash(c, actors, store_url, done, index=1)
    challenger = actors.validators[0]
    assert c.task_manager.claimable(challenger.address) > 0
    c.as_account(challenger).task_manager.withdraw()
    ix = make_indexer(open_database("sqlite://"), c, None)
    ix.catch_up()
    with Session(ix.engine) as s:
        found = [
            (e.contract, e.subject)
            for e in s.scalars(select(Event).where(Event.name == "Withdrawn"))
            if e.contract == "TaskManager"
        ]
        shown = [e["name"] for e in queries.address(s, challenger.address)["events"]]
    assert found == [("TaskManager", challenger.address)], f"TaskManager Withdrawn not indexed: {found}"
    assert "Withdrawn" in shown


# -- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize("q", ["b", "z", "f", "u"])
def test_defence_a_one_letter_search_is_a_400(q: str) -> None:
    """Harm: ``/search?q=b`` (and ``/api/v1/search?q=b``; any lone multibase prefix letter) is
    an unhandled IndexError: a 500 from a one-character request (the docs: "never a 500"; a fuzzer
    of the published OpenAPI finds it at once, error logs fill with tracebacks).

    Cause: explorer/supernet/explorer/search.py `classify` catches ``(ValueError, KeyError)``
    around ``CID.decode(q)``; multiformats raises IndexError for a prefix with no payload.

    Fix: catch every exception of the CID parser there (or require a minimum CID length before
    trying it) and answer the same 400 as any other malformed query."""
    engine = open_database("sqlite://")
    with TestClient(create_app(ExplorerState(engine)), raise_server_exceptions=False) as client:
        page = client.get("/search", params={"q": q}, follow_redirects=False)
        api = client.get("/api/v1/search", params={"q": q})
    assert (page.status_code, api.status_code) == (400, 400)
    assert "not a task id" in api.json()["detail"]


# -- the live feed --------------------------------------------------------------------------------


def _live_body(engine: Any, after: int, seconds: float = 2.0) -> str:
    """What ``/api/v1/live?after=`` sends in ``seconds`` (then the app is told to stop)."""
    state = ExplorerState(engine, poll_s=0.1)
    timer = threading.Timer(seconds, state.stop.set)
    timer.start()
    try:
        with TestClient(create_app(state)) as client:
            return client.get("/api/v1/live", params={"after": after}).text
    finally:
        timer.cancel()
        state.stop.set()


def test_defence_the_live_feed_sends_every_event_of_a_burst(network: Contracts, actors: Actors) -> None:
    """Harm: 230 protocol events (here one node's 230 ``updateEndpoint`` calls; any burst, or a
    page that reconnects after a while) are indexed between two polls of ``/api/v1/live``. The
    stream sends the newest 200 and moves its cursor past all of them: 30 events are never sent
    to any open page, which the docs promise gets "one event message per newly indexed protocol
    event".

    Cause: explorer/supernet/explorer/api.py `live`: ``_events_after`` is
    ``queries.latest_events(s, after, 200)``, the *newest* 200 after the cursor (``ORDER BY id
    DESC LIMIT 200``), then ``last = ev["id"]`` of the newest.

    Fix: read the *oldest* N events after the cursor (``ORDER BY id ASC LIMIT N``) and loop
    until none is left (or tell the client it must reload when it is too far behind)."""
    c = network
    ix = make_indexer(open_database("sqlite://"), c, None)
    ix.catch_up()
    with Session(ix.engine) as s:
        before = queries.last_event_id(s)
    sm = c.service_manager.contract
    node2 = actors.node2.address
    tx = b""
    for i in range(230):
        data = sm.encode_abi("updateEndpoint", args=[f"http://10.0.0.{i % 250}:8100/"])
        tx = c.w3.eth.send_transaction({"from": node2, "to": sm.address, "data": data, "gas": 200_000})
    assert c.w3.eth.wait_for_transaction_receipt(tx)["status"] == 1  # type: ignore[arg-type]
    ix.catch_up()
    with Session(ix.engine) as s:
        new = s.scalar(select(func.count()).select_from(Event).where(Event.id > before))
    assert new == 230
    body = _live_body(ix.engine, before)
    sent = body.count("event: event\n")
    assert sent == 230, f"the live feed sent {sent} of 230 new events"


def test_defence_after_a_reorg_new_events_get_ids_no_client_passed(
    network: Contracts, actors: Actors
) -> None:
    """Harm: a page's live feed (or an API client polling ``/api/v1/events?after=``) has seen the
    event of the head block, id N. A one-block reorg replaces it; the new branch's event (here
    node's stake going up by 1 ETH) is stored with id N again (SQLite reuses the largest rowid
    once it is deleted), so ``after=N`` never returns it: the client shows the orphaned event and
    never the real one.

    Cause: explorer/supernet/explorer/db/models.py ``Event.id`` (``Integer, autoincrement=True``)
    is a plain SQLite rowid (the migration has no ``sqlite_autoincrement``), and indexer.py
    `check_reorg` deletes the orphaned events' rows.

    Fix: ids that never go back (``sqlite_autoincrement=True`` / a sequence; PostgreSQL already
    has one), and tell live clients about a reorg (an SSE ``reorg`` event with the fork's last
    valid id) so they can drop what they showed."""
    c = network
    ix = make_indexer(open_database("sqlite://"), c, None)
    ix.catch_up()
    snap = snapshot(c.w3)
    c.as_account(actors.node2).service_manager.add_stake(ETH)
    ix.catch_up()
    with Session(ix.engine) as s:
        seen_up_to = queries.last_event_id(s)  # what the client has shown
    revert(c.w3, snap)
    c.as_account(actors.node).service_manager.add_stake(ETH)
    mine(c.w3, 1)
    ix.catch_up()
    with TestClient(create_app(ExplorerState(ix.engine))) as client:
        after = client.get("/api/v1/events", params={"after": seen_up_to}).json()
    subjects = [(e["name"], e["subject"]) for e in after]
    assert ("StakeAdded", actors.node.address) in subjects, (
        f"after id {seen_up_to} the client gets {subjects}: the new branch's event is never sent"
    )


# -- defences -------------------------------------------------------------------------------------


def test_defence_node_text_cannot_forge_live_messages_or_redirects(
    network: Contracts, actors: Actors
) -> None:
    """node2 sets an endpoint with SSE framing and header-splitting characters. The live feed
    carries it as one JSON ``data:`` line (no forged ``event:``/``id:`` line), and a search
    redirect's Location is built only from validated ids."""
    c = network
    ix = make_indexer(open_database("sqlite://"), c, None)
    ix.catch_up()
    with Session(ix.engine) as s:
        before = queries.last_event_id(s)
    evil = 'http://x/\r\n\r\nid: 999999\nevent: event\ndata: {"name":"Slashed"}\n\nSet-Cookie: a=b'
    c.as_account(actors.node2).service_manager.update_endpoint(evil[:200])
    ix.catch_up()
    body = _live_body(ix.engine, before, seconds=1.0)
    assert body.count("event: event\n") == 1
    assert not any(ln.startswith(("id: 999999", "Set-Cookie")) for ln in body.splitlines())
    lines = [ln for ln in body.splitlines() if ln.startswith("data: ")]
    assert len(lines) == 1 and "EndpointUpdated" in lines[0]
    with TestClient(create_app(ExplorerState(ix.engine)), raise_server_exceptions=False) as client:
        r = client.get("/search", params={"q": "batch 1\r\nSet-Cookie: a=b"}, follow_redirects=False)
    assert r.status_code in (400, 404) and "set-cookie" not in r.headers


@pytest.mark.parametrize(
    "path",
    [
        "/batches/%D9%A1%D9%A2",  # Arabic-Indic digits
        "/batches/+1",
        "/batches/%201",
        "/batches/1234567890123456789",
        "/challenges/0x1",
        "/tasks/0x" + "g" * 64,
        "/tasks/0x" + "ab" * 33,
        "/address/0x" + "ab" * 21,
        "/api/v1/address/%00",
        "/api/v1/events?limit=100000",
        "/api/v1/events?limit=0",
        "/search?q=" + "1" * 300,
        "/search?q=challenge%20" + "9" * 19,
    ],
)
def test_defence_malformed_ids_are_4xx_and_change_nothing(path: str) -> None:
    """Odd digits, signs, spaces, over-long numbers and strings, bad hex and NULs: a 4xx each."""
    engine = open_database("sqlite://")
    with TestClient(create_app(ExplorerState(engine)), raise_server_exceptions=False) as client:
        r = client.get(path, follow_redirects=False)
    assert 400 <= r.status_code < 500, (path, r.status_code, r.text[:200])
    with Session(engine) as s:
        assert s.scalar(select(func.count()).select_from(Event)) == 0
