"""The user's client and the explorer on a hosted RPC that caps ``eth_getLogs`` block ranges (the
fixes of tests/unit/test_review_capped_rpc.py's MEDIUM findings on their side).

The RPC is the review's `capped_rpc` (the one FAKE: Anvil has no cap) in front of the real Anvil;
where the queries themselves are asserted, a recording proxy (tests/rpc_proxy.py) sits in front of
it. Everything else is real: the compiled contracts, `Client`, `ClientState`, `ChainReader`,
`Indexer`. The node's HTTP answers to `Client.verify` are the stand-ins of
tests/unit/test_review_client_verify.py (`_serve`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from chain_fixtures import Actors, cast_votes, make_receipts, make_request
from rpc_proxy import rpc_proxy
from sqlalchemy.orm import Session
from supernet.explorer.chain import ChainLog, ChainReader
from supernet.explorer.db.engine import open_database
from supernet.explorer.db.models import Batch as BatchRow
from supernet.explorer.indexer import Indexer, get_cursor
from supernet.sdk.chain import Contracts, ReceiptTree
from supernet.sdk.chain.anvil import increase_time, mine
from supernet.sdk.chain.contracts import make_web3
from supernet.sdk.client.client import REFUND_SCAN_LAG, Client, RefundClaimed
from supernet.sdk.client.ladder import domain_key
from supernet.sdk.client.state import ClientState, TaskRecord

from tests.unit.test_review_capped_rpc import CAP, _never_stored, capped_rpc
from tests.unit.test_review_client_verify import FEE, MODEL, _receipt_doc, _serve, _trace


@contextmanager
def recorded_capped_rpc(upstream: str) -> Iterator[tuple[str, list[dict[str, Any]], list[tuple[int, int]]]]:
    """`capped_rpc` with a recording proxy in front: (its URL, every request seen, the (first,
    last) of every ``eth_getLogs`` refused)."""
    with capped_rpc(upstream) as (capped, refused), rpc_proxy(capped, lambda _r, _f: None) as (url, seen):
        yield url, seen, refused


def log_queries(seen: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """The (first, last) block of every ``eth_getLogs`` among ``seen``."""
    out = []
    for request in list(seen):
        if request.get("method") == "eth_getLogs":
            query = request["params"][0]
            out.append((int(query["fromBlock"], 16), int(query["toBlock"], 16)))
    return out


# ---------------------------------------------------------------------------------------- verify


async def _verify(
    c: Contracts, a: Actors, tmp_path: Path, tx_hash: str | None, after: int
) -> tuple[Any, ...]:
    """Commit a one-entry batch of a done task, mine ``after`` blocks, and verify it through the
    capped RPC with the receipt document naming ``tx_hash`` (None: the commit's own): (the report's
    checks, the log queries asked, those refused, the commit block)."""
    mine(c.w3, CAP)
    user = a.users[0]
    task_id = "0x" + hashlib.sha256(f"capped verify {tx_hash} {after}".encode()).hexdigest()
    trace = _trace(task_id, user.address)
    doc, receipt = _receipt_doc(a.node, task_id=task_id, user=user.address, trace_doc=trace, commit_by=None)
    tx = c.as_account(a.node).task_manager.commit_batch(receipt.leaf(), 1, doc["batch"]["manifestCid"])
    own = "0x" + bytes(tx.receipt["transactionHash"]).hex()
    doc["batch"].update(chainBatchId=tx.value.batch_id, txHash=own if tx_hash is None else tx_hash)
    mine(c.w3, after)
    with recorded_capped_rpc(str(c.deployment.rpc_url)) as (url, seen, refused):
        client = Client(Contracts.connect(url, c.deployment, user), state_dir=tmp_path)
        client.state.tasks[task_id] = TaskRecord(
            a.node.address,
            "http://node",
            "hi",
            MODEL,
            FEE,
            output="hello",
            status="done",
            sent_seq=1,
            done_seq=2,
        )
        _serve(client, a.node, doc, trace)
        try:
            report = await client.verify(task_id, wait_committed=0)
        finally:
            await client.aclose()
        queries = log_queries(seen)
    return {ch.name: ch.ok for ch in report.checks}, queries, list(refused), tx.value.commit_block


@pytest.mark.anvil
@pytest.mark.asyncio(loop_scope="session")
async def test_verify_reads_the_batch_in_the_block_of_the_commit_it_names(
    network: Contracts, actors: Actors, tmp_path: Path
) -> None:
    """The receipt document's ``txHash`` gives the commit's block: one log query, of that block."""
    checks, asked, refused, block = await _verify(network, actors, tmp_path, None, 2 * CAP)
    assert checks["merkle inclusion"] and checks["batch node"], checks
    assert asked == [(block, block)] and not refused


@pytest.mark.anvil
@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.parametrize("lie", ["another batch's commit", "no transaction", "not a hash"])
async def test_verify_falls_back_to_the_ranged_search_when_the_node_names_a_wrong_commit(
    network: Contracts, actors: Actors, tmp_path: Path, lie: str
) -> None:
    """A node's ``txHash`` is a hint: a commit of another batch (another block, the same event of
    another id), a hash the chain never saw, or garbage finds nothing, and the batch is searched
    back from the head in ranges the capped RPC accepts (the batch is ``2 x CAP`` blocks old): the
    receipt still verifies."""
    c, a = network, actors
    other = c.as_account(a.node).task_manager.commit_batch(b"\x09" * 32, 1, _never_stored("other"))
    hashes = {
        "another batch's commit": "0x" + bytes(other.receipt["transactionHash"]).hex(),
        "no transaction": "0x" + "ab" * 32,
        "not a hash": "0xnothex",
    }
    checks, asked, _refused, block = await _verify(c, a, tmp_path, hashes[lie], 2 * CAP)
    assert checks["merkle inclusion"] and checks["batch node"], checks
    found = [(first, last) for first, last in asked if first <= block <= last and last - first < CAP]
    assert found, f"the ranged search reached the commit's block {block}: {asked}"
    if lie == "another batch's commit":
        hint = int(other.receipt["blockNumber"])
        assert (hint, hint) in asked, "the hint was asked first: one block"


# --------------------------------------------------------------------------------------- refunds


@pytest.mark.anvil
@pytest.mark.asyncio(loop_scope="session")
async def test_claim_refunds_through_a_capped_rpc_reads_on_from_its_mark(
    network: Contracts, actors: Actors, tmp_path: Path
) -> None:
    """On a deployment older than the cap: a challenge still open is not claimed and holds the
    mark before it; once resolved, the refund is claimed and the mark moves to ``REFUND_SCAN_LAG``
    blocks behind the head, persisted; the next call reads only the blocks after the mark. A mark
    past the head (a dev chain started anew) is read from the deployment block again."""
    c, a = network, actors
    receipts = make_receipts(c, a.users, a.node.address, 3)
    tree = ReceiptTree(receipts)
    batch_id = (
        c.as_account(a.node).task_manager.commit_batch(tree.root, 3, _never_stored("refund mark")).value
    )
    bad = receipts[1]
    user = next(u for u in a.users if u.address == bad.user)
    task_id = "0x" + bad.request_hash.hex()
    state = ClientState.open(tmp_path)
    state.tasks[task_id] = TaskRecord(
        a.node.address, "http://127.0.0.1:9", "task 1", "0x" + bad.model_id.hex(), bad.fee,
        status="done", request=make_request(a.users, a.node.address, 1).to_json(),
    )  # fmt: skip
    state.save()
    mine(c.w3, 2)
    challenger = c.as_account(a.validators[0]).task_manager
    opened = challenger.challenge(batch_id, 1, bad, tree.proof_at(1), "bafy-evidence")
    challenge_block = int(opened.receipt["blockNumber"])
    mine(c.w3, REFUND_SCAN_LAG + CAP)
    key = domain_key(c.domain)
    with recorded_capped_rpc(str(c.deployment.rpc_url)) as (url, seen, _refused):
        async with Client(Contracts.connect(url, c.deployment, user), state_dir=tmp_path) as client:
            assert await client.claim_refunds() == []  # open: nothing to claim yet
            held = client.state.refund_scans.get(key, -1)
            assert held < challenge_block, "an open challenge holds the mark before it"
            cast_votes(c, opened.value, [(a.validators[1], True)])
            increase_time(c.w3, c.params.vote_window + 1)
            assert challenger.resolve(opened.value).value["fraud"]
            mine(c.w3, REFUND_SCAN_LAG + CAP)
            head = c.w3.eth.block_number  # the claim mines a block after the scan read the head
            assert await client.claim_refunds() == [RefundClaimed(task_id, opened.value, bad.fee)]
            mark = client.state.refund_scans[key]
            assert mark == head - REFUND_SCAN_LAG and mark > challenge_block
            before = len(log_queries(seen))
            mine(c.w3, 3)
            assert await client.claim_refunds() == []
            later = log_queries(seen)[before:]
            client.state.refund_scans[key] = 10**9  # marked on a longer chain: a dev chain started anew
            client.state.save()
            before = len(log_queries(seen))
            assert await client.claim_refunds() == []
            anew = log_queries(seen)[before:]
            reset = client.state.refund_scans[key]
    assert ClientState.open(tmp_path).refund_scans[key] >= mark, "the mark is saved with the state"
    assert later and all(first > mark for first, _ in later), (mark, later)
    assert c.task_manager.claimable(user.address) == bad.fee
    assert anew[0][0] == c.deployment.deploy_block and reset == c.w3.eth.block_number - REFUND_SCAN_LAG


def test_the_refund_mark_of_two_processes_merges_to_the_later(tmp_path: Path) -> None:
    """A scan mark says "settled up to here": of two processes' marks the later is kept; one set
    back by one process alone is kept set back; a state file without marks (an older version)
    opens with none."""
    first, second = ClientState.open(tmp_path), ClientState.open(tmp_path)
    assert first.refund_scans == {}
    first.refund_scans["d"] = 500
    first.save()
    second.refund_scans["d"] = 300
    second.refund_scans["e"] = 7
    second.save()
    assert second.refund_scans == {"d": 500, "e": 7}
    assert ClientState.open(tmp_path).refund_scans == {"d": 500, "e": 7}
    second.refund_scans["d"] = 0  # set back (a dev chain started anew), the other side unmoved
    second.save()
    assert ClientState.open(tmp_path).refund_scans == {"d": 0, "e": 7}


# -------------------------------------------------------------------------------------- explorer


@pytest.mark.anvil
def test_an_explorer_behind_by_more_than_the_cap_catches_up_in_one_step(
    network: Contracts, actors: Actors
) -> None:
    """A fresh explorer (from the deployment block) on a chain ``2 x CAP`` blocks longer: one step
    reads the whole range in ranges the RPC accepts and indexes the batch committed since."""
    c, a = network, actors
    mine(c.w3, 2 * CAP)
    header = c.as_account(a.node).task_manager.commit_batch(b"\x07" * 32, 1, _never_stored("explorer")).value
    mine(c.w3, 2)
    dep = c.deployment
    with capped_rpc(str(dep.rpc_url)) as (url, refused):
        engine = open_database("sqlite://")
        indexer = Indexer(engine, ChainReader(make_web3(url), dep), None, start_block=dep.deploy_block)
        indexer.step()
        with Session(engine) as s:
            cursor = get_cursor(s, dep.deploy_block)
            row = s.get(BatchRow, header.batch_id)
    assert refused, "the first range was wider than the cap"
    assert cursor == c.w3.eth.block_number + 1 and row is not None and row.commit_block == header.commit_block


@pytest.mark.anvil
def test_an_unreadable_block_ends_the_explorers_step_there_and_the_next_goes_on(
    network: Contracts, actors: Actors, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A block whose log query fails (the RPC down for a moment) ends the step's range there: the
    events before it are recorded and the cursor moves to it, not past it; the next step reads on."""
    c, a = network, actors
    tm = c.as_account(a.node).task_manager
    first = tm.commit_batch(b"\x01" * 32, 1, _never_stored("before")).value
    mine(c.w3, 5)
    second = tm.commit_batch(b"\x02" * 32, 1, _never_stored("after")).value
    mine(c.w3, 2)
    dep = c.deployment
    reader = ChainReader(c.w3, dep)
    real = reader.logs
    down = [True]

    def logs(start: int, end: int) -> list[ChainLog]:
        if down[0] and start <= second.commit_block <= end:
            raise ConnectionError("the RPC is down")
        return real(start, end)

    real_block = reader._block_logs

    def block_logs(block: int) -> list[ChainLog]:  # its receipts, the fallback: the RPC is down too
        if down[0]:
            raise ConnectionError("the RPC is down")
        return real_block(block)

    monkeypatch.setattr(reader, "logs", logs)
    monkeypatch.setattr(reader, "_block_logs", block_logs)
    engine = open_database("sqlite://")
    indexer = Indexer(engine, reader, None, start_block=dep.deploy_block)
    indexer.step()
    with Session(engine) as s:
        stopped = get_cursor(s, dep.deploy_block)
        recorded = (s.get(BatchRow, first.batch_id) is not None, s.get(BatchRow, second.batch_id) is not None)
    assert stopped == second.commit_block and recorded == (True, False)
    down[0] = False
    indexer.step()
    with Session(engine) as s:
        assert get_cursor(s, dep.deploy_block) == c.w3.eth.block_number + 1
        assert s.get(BatchRow, second.batch_id) is not None
