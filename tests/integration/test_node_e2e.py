"""End to end on real parts: a real Anvil, ``supernet node run`` in a subprocess (real kernel,
real default model, embedded store), and the user's ``supernet.sdk.client.Client``.

Users submit paid tasks and get streamed results; receipts verify against the on-chain batch
root; the node is paid by voucher redemption; refused requests change nothing; a node killed
with SIGKILL mid-task and restarted finishes (or refuses) the task and charges it once.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest.mock import patch

import httpx
import pytest
from node_fixtures import NodeProcess, node_on_anvil
from supernet.sdk.chain import Contracts
from supernet.sdk.chain.anvil import Anvil, dev_account, increase_time, set_balance
from supernet.sdk.chain.merkle import ReceiptTree
from supernet.sdk.chain.omission import ManifestStatus, OmissionStatus
from supernet.sdk.chain.receipts import Receipt
from supernet.sdk.chain.tasks import AvailabilityStatus
from supernet.sdk.client import Client, ClientError
from supernet.sdk.devnet.processes import free_port
from supernet.sdk.store import StoreClient

pytestmark = [pytest.mark.anvil, pytest.mark.model, pytest.mark.slow]

NODE_KEY_INDEX = 11  # dev accounts other suites do not use
USER_INDEXES = (12, 13, 14)


@dataclass
class Net:
    anvil: Anvil
    contracts: Contracts
    deployment: Path
    node: NodeProcess
    tmp: Path

    def client(self, user_index: int, name: str | None = None) -> Client:
        key = "0x" + bytes(dev_account(user_index).key).hex()
        state = self.tmp / f"user-{name or user_index}"
        return Client.connect(self.anvil.url, self.deployment, key, state_dir=state)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    tmp = tmp_path_factory.mktemp("e2e")
    # the built-in retrieval agent too: a user's memory across tasks
    extra = '[engine]\nagents = ["chat", "retrieval"]\n'
    with node_on_anvil(tmp, NODE_KEY_INDEX, extra=extra) as (anvil, contracts, dep, node):
        yield Net(anvil, contracts, dep, node, tmp)


SETTLEMENT_TABLES = frozenset({"redemptions", "closing_channels", "chain_cursors"})
"""What the node's settlement loop writes on its own clock (a redemption is confirmed by a read
64 blocks after it, the log cursor moves with the chain): no request changes them, and they
change while a test runs, so "a refused request changes nothing" compares the other tables."""


def db_rows(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the node's database but those of `SETTLEMENT_TABLES`, by table."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as c:
        tables = [r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {
            t: sorted(c.execute(f"SELECT * FROM {t}").fetchall(), key=repr)
            for t in tables
            if t not in SETTLEMENT_TABLES
        }


def test_sdk_imports_without_torch() -> None:
    code = "import sys, supernet.sdk.client, supernet.sdk.client_cli; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


async def test_paid_tasks_verify_on_chain_and_node_is_paid(net: Net) -> None:
    node_addr = dev_account(NODE_KEY_INDEX).address
    assert net.contracts.service_manager.is_active_node(node_addr)  # registered and staked on start
    clients = [net.client(i) for i in USER_INDEXES[:2]]
    tokens: list[str] = []
    try:
        results = await asyncio.gather(
            clients[0].submit_task("What is the capital of France?", deposit=10**17, on_token=tokens.append),
            clients[1].submit_task("Name a color.", deposit=10**17),
        )
        assert all(r.output for r in results) and "".join(tokens) == results[0].output
        for client, result in zip(clients, results, strict=True):
            report = await client.verify(result.task_id, wait_committed=60)
            assert report.ok, report.failed()
            names = {c.name for c in report.checks}
            assert {
                "merkle inclusion",
                "node signature",
                "trace hash",
                "trace in store",
                "input hash",
            } <= names
        # the node redeems each user's voucher: paid exactly the fees
        pay = net.contracts.payments
        for _ in range(60):
            paid = [pay.redeemed(c.account.address, node_addr) for c in clients]
            if paid == [r.fee for r in results]:
                break
            await asyncio.sleep(0.5)
        assert paid == [r.fee for r in results]
        redeemed = pay.contract.events.Redeemed().get_logs(from_block=0, argument_filters={"node": node_addr})
        assert sum(int(e["args"]["total"]) for e in redeemed) >= sum(paid)  # paid to the node in the call
        # the engine's own numbers reach /metrics: the tokens of these tasks were produced by it
        async with httpx.AsyncClient(base_url=net.node.url, timeout=30) as http:
            metrics = (await http.get("/metrics")).text
        steps = next(
            line for line in metrics.splitlines() if line.startswith("supernet_engine_sequence_steps")
        )
        assert float(steps.split()[-1]) >= len(tokens)
        assert any(line.startswith("supernet_engine_kv_cache_bytes ") for line in metrics.splitlines())
    finally:
        for c in clients:
            await c.aclose()


async def test_refusals_are_4xx_and_change_nothing(net: Net) -> None:
    client = net.client(USER_INDEXES[2], "refusals")
    try:
        done = await client.submit_task("Say hi.", deposit=10**17)
        await client.receipt(done.task_id, wait_committed=30)
        await asyncio.sleep(0.5)
        before = db_rows(net.node.db_path)
        async with httpx.AsyncClient(base_url=net.node.url) as http:
            replay = client.state.tasks[done.task_id]
            p = await client.prepare("Say hi again.")
            good = p.task_body()
            # replay of an accepted request (same nonce): 409
            stale = {**good, "request": {**good["request"], "nonce": "1"}}
            r = await http.post("/v1/tasks", json=stale)
            assert r.status_code in (401, 409), r.text  # nonce change breaks the signature first
            forged = {**good, "signature": "0x" + "11" * 65}
            assert (await http.post("/v1/tasks", json=forged)).status_code == 401
            wrong_input = {**good, "input": "something else"}
            assert (await http.post("/v1/tasks", json=wrong_input)).status_code == 400
            assert (
                await http.post("/v1/tasks", content=b"{", headers={"content-type": "application/json"})
            ).status_code == 422
            assert (await http.post("/v1/tasks", json={**good, "input": "x" * 100_000})).status_code == 413
            # an input the agent's schema rejects (chat: at least one message): the SDK refuses it
            # from the node's agent card before signing, so no nonce is reserved...
            nonces = {k: a.nonce for k, a in client.state.accounts.items()}
            with pytest.raises(ClientError, match="input schema at messages"):
                await client.prepare({"messages": []})
            assert {k: a.nonce for k, a in client.state.accounts.items()} == nonces
            # ...and the node refuses it too when a client that does not check signs it
            with patch("supernet.sdk.client.client.check_input", lambda *_: None):
                off_schema = await client.prepare({"messages": []})
            r = await http.post("/v1/tasks", json=off_schema.task_body())
            assert r.status_code == 400 and r.json()["error"]["code"] == "input_schema_mismatch", r.text
            assert "messages" in r.json()["error"]["message"]
            assert replay.status == "done"
            assert db_rows(net.node.db_path) == before
            # now submit it for real, then replay the identical body: 409 and nothing new
            assert (await http.post("/v1/tasks", json=good)).status_code == 202
            client.accepted(p)
            final = [e async for e in client.stream_events(net.node.url, p.task_id)][-1][1]
            client.finished(p, final["status"], final.get("output"))
            after = db_rows(net.node.db_path)
            again = await http.post("/v1/tasks", json=good)
            assert again.status_code == 409 and again.json()["error"]["code"] == "replay"
            assert db_rows(net.node.db_path)["tasks"] == after["tasks"]
    finally:
        await client.aclose()


async def test_chat_completions_openai_compatible(net: Net) -> None:
    client = net.client(USER_INDEXES[0], "chat")
    try:
        messages = [{"role": "user", "content": "What is 2+2?"}]
        p = await client.prepare({"messages": messages, "max_new_tokens": 16}, deposit=10**17)
        body = {
            "model": "smollm2-135m",
            "messages": messages,
            "max_tokens": 16,
            "stream": True,
            "supernet": p.signed,
        }
        async with httpx.AsyncClient(base_url=net.node.url, timeout=120) as http:
            r = await http.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        client.accepted(p)
        lines = [ln[6:] for ln in r.text.splitlines() if ln.startswith("data: ")]
        assert lines[-1] == "[DONE]" and len(lines) > 2
        async with httpx.AsyncClient(base_url=net.node.url) as http:
            models = (await http.get("/v1/models")).json()
        assert models["data"][0]["modelId"] == p.model_id
    finally:
        await client.aclose()


async def test_kill_mid_task_then_restart_charges_once(net: Net) -> None:
    node_addr = dev_account(NODE_KEY_INDEX).address
    client = net.client(USER_INDEXES[1], "crash")
    pay = net.contracts.payments
    try:
        p = await client.prepare(
            {
                "messages": [{"role": "user", "content": "Write a long story about a cat."}],
                "max_new_tokens": 96,
            },
            deposit=10**17,
        )
        async with httpx.AsyncClient(base_url=net.node.url, timeout=60) as http:
            assert (await http.post("/v1/tasks", json=p.task_body())).status_code == 202
        client.accepted(p)
        async for event, _ in client.stream_events(net.node.url, p.task_id):
            if event == "token":
                break  # generation is under way: crash now
        net.node.kill9()
        net.node.start()
        task = await client.task(p.task_id)
        for _ in range(240):
            task = await client.task(p.task_id)
            if task.status in ("done", "refused", "failed"):
                break
            await asyncio.sleep(0.5)
        assert task.status == "done", task  # deadline still ahead: resumed and finished
        assert f"resuming task {p.task_id}" in net.node.log_tail(200_000)
        client.finished(p, task.status, task.output)
        with sqlite3.connect(f"file:{net.node.db_path}?mode=ro", uri=True) as c:
            done_fees = [
                int(f)
                for (f,) in c.execute(
                    "SELECT fee FROM tasks WHERE user = ? AND status = 'done'", (client.account.address,)
                )
            ]
        for _ in range(60):
            if pay.redeemed(client.account.address, node_addr) == sum(done_fees):
                break
            await asyncio.sleep(0.5)
        assert pay.redeemed(client.account.address, node_addr) == sum(
            done_fees
        )  # charged once, or not at all
    finally:
        await client.aclose()


async def test_a_lost_acknowledgement_does_not_strand_the_client(net: Net) -> None:
    """The node stores a task and bills it, but its 202 never reaches the client (a crash or a cut
    connection right after the commit). The client's next sync finds the node billed more than it
    counted, looks up the tasks it sent without an answer, and counts the one the node has: the
    next task is admitted instead of being refused with 402 forever."""
    client = net.client(USER_INDEXES[0], "lost-ack")
    try:
        first = await client.prepare("Say hi.", node_url=net.node.url, deposit=10**17)
        async with httpx.AsyncClient(base_url=net.node.url, timeout=60) as http:
            assert (await http.post("/v1/tasks", json=first.task_body())).status_code == 202
        # ... and the client never hears of it (no `accepted`): its ladder is one fee behind
        for _ in range(240):
            if (await client.task(first.task_id, net.node.url)).status in ("done", "failed"):
                break
            await asyncio.sleep(0.5)
        second = await client.submit_task("Say bye.", node_url=net.node.url)
        assert second.status == "done"
        assert client.state.tasks[first.task_id].status == "done"
        acct = client.state.account(client._domain_key, client.account.address, second.node)
        async with httpx.AsyncClient(base_url=net.node.url, timeout=60) as http:
            grant = await client._read_auth(net.node.url)
            remote = (await http.get(f"/v1/accounts/{client.account.address}", auth=grant)).json()
        assert acct.cumulative == int(remote["billed"])  # the client and the node agree again
    finally:
        await client.aclose()


def test_cli_submit_and_verify(net: Net) -> None:
    import os

    env = {**os.environ, "SUPERNET_USER_KEY": "0x" + bytes(dev_account(USER_INDEXES[2]).key).hex()}
    args = ["--deployment", str(net.deployment), "--rpc", net.anvil.url, "--state-dir", str(net.tmp / "cli")]
    out = subprocess.run(
        [sys.executable, "-m", "supernet.sdk.cli", "task", "submit", "Say hello.", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "receipt verified" in out.stdout
    task_id = next(w for w in out.stdout.split() if w.startswith("0x") and len(w) == 66)
    again = subprocess.run(
        [sys.executable, "-m", "supernet.sdk.cli", "task", "verify", task_id, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert again.returncode == 0 and "merkle inclusion" in again.stdout, again.stdout + again.stderr
    # the same user's task, from a fresh client state that never saw it: verified from the node,
    # the chain and the trace (input and output taken from the trace and checked against the receipt)
    fresh = [*args[:-1], str(net.tmp / "cli-fresh")]
    third = subprocess.run(
        [sys.executable, "-m", "supernet.sdk.cli", "task", "verify", task_id, *fresh, "--node", net.node.url],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert third.returncode == 0 and "input hash" in third.stdout, third.stdout + third.stderr
    unknown = subprocess.run(
        [sys.executable, "-m", "supernet.sdk.cli", "task", "verify", task_id, *fresh],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert unknown.returncode == 1 and "pass the node's URL" in unknown.stderr + unknown.stdout


async def test_node_answers_availability_challenges(net: Net) -> None:
    """Anyone may claim an entry is unavailable; the running node posts it on chain and is paid
    what that cost out of the bond, and the posted trace is the one the receipt commits to."""
    client = net.client(USER_INDEXES[0], "availability")
    try:
        done = await client.submit_task("Name a planet.", deposit=10**17)
        doc = await client.receipt(done.task_id, wait_committed=60)
    finally:
        await client.aclose()
    assert doc.batch is not None and doc.batch.chainBatchId is not None
    batch_id, index = doc.batch.chainBatchId, doc.batch.index
    node_addr = dev_account(NODE_KEY_INDEX).address
    tm = net.contracts.task_manager
    claimable = tm.claimable(node_addr)
    stranger = net.contracts.as_account(dev_account(16)).task_manager
    aid = stranger.challenge_availability(batch_id, index).value
    for _ in range(60):
        if tm.get_availability(aid).status == AvailabilityStatus.ANSWERED:
            break
        await asyncio.sleep(0.5)
    assert tm.get_availability(aid).status == AvailabilityStatus.ANSWERED
    [settled] = tm.contract.events.AvailabilitySettled().get_logs(
        from_block=0, argument_filters={"availabilityId": aid}
    )
    cost = int(settled["args"]["answerCost"])
    assert 0 < cost < tm.challenge_bond() // 2  # its cost, not the bond
    assert tm.claimable(node_addr) == claimable + cost
    assert tm.claimable(stranger.account.address) == int(settled["args"]["refunded"])
    [answer] = tm.availability_answers(batch_id)
    assert answer.index == index and answer.receipt == Receipt.from_json(doc.receipt)
    assert hashlib.sha256(answer.trace).digest() == answer.receipt.trace_hash
    assert net.contracts.service_manager.get_operator(node_addr).frozen_count == 0


async def test_node_answers_manifest_challenges(net: Net) -> None:
    """Anyone may claim a batch's manifest is unavailable; the running node posts every receipt of
    the batch in order (the contract recomputes the root), is paid what that cost, and the posted
    list holds the user's receipt at its index."""
    client = net.client(USER_INDEXES[0], "manifest")
    try:
        done = await client.submit_task("Name a river.", deposit=10**17)
        doc = await client.receipt(done.task_id, wait_committed=60)
    finally:
        await client.aclose()
    assert doc.batch is not None and doc.batch.chainBatchId is not None
    batch_id, index = doc.batch.chainBatchId, doc.batch.index
    node_addr = dev_account(NODE_KEY_INDEX).address
    om = net.contracts.omission_manager
    claimable = om.claimable(node_addr)
    stranger = net.contracts.as_account(dev_account(16)).omission_manager
    header = net.contracts.task_manager.batch(batch_id)
    mid = stranger.challenge_manifest(header).value
    assert net.contracts.service_manager.get_operator(node_addr).frozen_count >= 1
    for _ in range(60):
        claim = om.batch_manifest(batch_id)
        if claim is not None and claim.status == ManifestStatus.ANSWERED:
            break
        await asyncio.sleep(0.5)
    claim = om.batch_manifest(batch_id)
    assert claim is not None and claim.manifest_id == mid and claim.status == ManifestStatus.ANSWERED
    posted = om.manifest_receipts(batch_id, header.commit_block)
    assert posted is not None and len(posted) == header.count
    assert posted[index] == Receipt.from_json(doc.receipt)
    assert ReceiptTree(posted).root == header.root
    [settled] = om.contract.events.ManifestSettled().get_logs(
        from_block=header.commit_block, argument_filters={"manifestId": mid}
    )
    cost = int(settled["args"]["answerCost"])
    assert 0 < cost < om.challenge_bond() // 2  # its cost, not the bond
    assert om.claimable(node_addr) == claimable + cost
    assert net.contracts.service_manager.get_operator(node_addr).frozen_count == 0


async def test_the_answer_streams_as_an_async_iterator_and_a_dead_node_is_explained(net: Net) -> None:
    """`Client.stream`: text pieces as they come, then the result; discovery probes every node,
    ranks the reachable ones and says why the others were left out (a registered node whose
    endpoint is down, cheaper than the live one, is not chosen)."""
    dead = dev_account(16)
    c = net.contracts.as_account(dead)
    set_balance(net.contracts.w3, dead.address, 100 * 10**18)
    if not net.contracts.service_manager.get_operator(dead.address).registered:
        model = net.contracts.service_manager.get_node(dev_account(NODE_KEY_INDEX).address).model_ids
        c.service_manager.register_node(f"http://127.0.0.1:{free_port()}", model, 1, 2 * 10**18)
    client = net.client(USER_INDEXES[0], "stream")
    try:
        nodes = await client.discover()
        assert [n.address for n in nodes] == [dev_account(NODE_KEY_INDEX).address]
        left_out = {p.address: p.problem for p in client.last_discovery if not p.ok}
        assert left_out[dead.address] is not None and "unreachable" in left_out[dead.address]
        stream = client.stream("Count to three.", deposit=10**17)
        pieces = [piece async for piece in stream]
        assert len(pieces) > 1 and stream.result is not None
        assert "".join(pieces).strip() == stream.result.output.strip()
        assert (await client.verify(stream.result.task_id)).ok
    finally:
        await client.aclose()


def test_the_sync_client_submits_streams_and_verifies(net: Net) -> None:
    from supernet.sdk.client.sync import SyncClient

    key = "0x" + bytes(dev_account(USER_INDEXES[1]).key).hex()
    with SyncClient.connect(net.anvil.url, net.deployment, key, state_dir=net.tmp / "sync") as client:
        result = client.submit_task("Say yes.", node_url=net.node.url, deposit=10**17)
        assert result.status == "done" and result.output
        pieces = list(client.stream("Say no.", node_url=net.node.url))
        assert pieces and client.last_result is not None
        assert "".join(pieces).strip() == client.last_result.output.strip()
        assert client.verify(result.task_id).ok


async def test_an_offer_above_the_price_is_charged_and_verifies(net: Net) -> None:
    """Fee priority: a user who offers more than the node's price pays exactly the offer (its
    voucher ladder counts it), the receipt says so and verifies, and the next task at the price
    is admitted on the same ladder."""
    client = net.client(USER_INDEXES[0], "offer")
    try:
        price = (await client.node_info(net.node.url)).taskFee
        rich = await client.submit_task(
            "Name a river.", deposit=10**17, offer=2 * price, node_url=net.node.url
        )
        assert rich.fee == 2 * price
        report = await client.verify(rich.task_id, wait_committed=60)
        assert report.ok, report.failed()
        assert (await client.receipt(rich.task_id)).receipt["fee"] == str(2 * price)
        plain = await client.submit_task("Name a lake.", node_url=net.node.url)
        assert plain.fee == price
        with pytest.raises(ClientError, match="below the node's price"):
            await client.submit_task("Too cheap.", offer=price - 1, node_url=net.node.url)
    finally:
        await client.aclose()


async def test_the_node_promises_each_commit_and_answers_an_omission_claim(net: Net) -> None:
    """Each receipt comes with the node's signed promise to commit it by a time; the client checks
    and keeps it, and after that time can claim the receipt was left out of the node's batches. A
    running honest node answers the claim by showing the receipt in its batch (it keeps its stake
    and is paid the answer's cost). Last in this module: it moves the chain's clock."""
    client = net.client(USER_INDEXES[1], "omission")
    node_addr = dev_account(NODE_KEY_INDEX).address
    try:
        done = await client.submit_task("Name a mountain.", deposit=10**17, node_url=net.node.url)
        report = await client.verify(done.task_id, wait_committed=60)
        assert report.ok, report.failed()
        assert {c.name: c.ok for c in report.checks}["commit promise"]
        promise = client.state.tasks[done.task_id].promise
        assert promise is not None and promise["leaf"] == (await client.receipt(done.task_id)).leaf
        now = net.contracts.w3.eth.get_block("latest")["timestamp"]
        increase_time(net.contracts.w3, max(0, int(promise["commitBy"]) - now) + 1)
        stake = net.contracts.service_manager.get_operator(node_addr).stake
        claim = await client.claim_omission(done.task_id)
        om = net.contracts.omission_manager
        for _ in range(60):
            if om.get_omission(claim).status == OmissionStatus.ANSWERED:
                break
            await asyncio.sleep(0.5)
        assert om.get_omission(claim).status == OmissionStatus.ANSWERED
        assert net.contracts.service_manager.get_operator(node_addr).stake == stake
        assert 0 < om.claimable(node_addr) < om.challenge_bond() // 2  # its answer's cost, no more
    finally:
        await client.aclose()


async def test_a_users_memory_carries_over_and_the_client_checks_it_is_the_latest(net: Net) -> None:
    """The built-in ``retrieval`` agent remembers a fact in one task and answers from it in the
    next: the node stored the first task's receipt before the second could read its memory, and
    the client verifies the second started from the memory the first left ("latest memory and
    files", `supernet.sdk.client.freshness`)."""
    client = net.client(USER_INDEXES[-1], name="memory")
    try:
        first = await client.submit_task(
            {"remember": ["The vault code is 4711."]}, agent="retrieval", deposit=10**17
        )
        second = await client.submit_task(
            {"question": "What is the vault code?", "k": 1, "max_new_tokens": 8}, agent="retrieval"
        )
        reports = [await client.verify(r.task_id, wait_committed=60) for r in (first, second)]
        for report in reports:
            assert report.ok, report.failed()
        latest = [c for c in reports[1].checks if c.name == "latest memory and files"]
        assert latest and latest[0].ok, reports[1].checks
        trace = await client.trace(second.task_id)
        search = next(e for e in trace.events if getattr(e, "kind", "") == "memory.search")
        async with StoreClient((await client.node_info(net.node.url)).storeUrl) as store:
            root = await store.get_dag(str(search.root))
        assert root["writer"] == first.task_id  # the memory names the task that wrote it
    finally:
        await client.aclose()
