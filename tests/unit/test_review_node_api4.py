"""Adversarial review (fourth pass) of the node's hardening: its HTTP API (``service/api.py``, the
routes, admission, streaming, the OpenAI-style drop-in), its persistence (database, batcher,
receipts) and its restart behaviour, as a hostile user, a competitor or an outsider would attack
them.

Not repeated (earlier reviews, see their docstrings): idle and half-request sockets, pipelining
peers that read nothing (test_review_session_changes13/14.py), the admission chain-read bound and
funded cache (test_review_admission_cache.py), read grants, body limits and nesting
(test_review_node_api3.py), per-user slots, the trace gate (test_review_node_hardening*.py), the
crash points of commit and redemption (test_review_crash_consistency.py), confirmations within one
run of a task (test_review_confirmations.py, test_review_occurrences.py).

Real parts: the node service's own uvicorn serving path (`NodeService.run_forever`) and in-process
app, its real `Database`, `TaskWorker`, `Authenticator`, the embedded content store, the real kernel
(access manager, dispatcher, traces) for the confirmation test. FAKES, named where used: the
executor and chain of ``tests/node_fixtures.py`` where the model plays no part (HTTP and admission
tests), and the STUB engine of ``tests/unit/test_node_confirmations.py`` (its agent makes tool calls
only, never an LLM call). The restart is the node's own graceful stop (``NodeService.cleanup``,
what SIGTERM runs) and a new service over the same data directory, as ``supernet node run`` does.

Found:

1. MEDIUM, FIXED — one outsider held every connection of the node's API with slow readers
   (`test_defence_slow_readers_from_one_peer_no_longer_hold_every_connection`). The node
   bounds connections at ``[api] max_connections`` (512) with no per-address cap, evicts only *idle*
   connections past it (`http_protocol.DeadlineH11Protocol._evict_idle`), and aborts a response
   only when the client takes *nothing* for `WRITE_STALL_S` (``_stalled``: "a slow reader that makes
   progress is never cut"). A peer with no key, deposit or fee opens ``max_connections`` sockets
   with a small receive window, pipelines 200 ``GET /openapi.json`` (44 KB each, 8 KB of requests)
   on each and then reads ~1 KB a second from each: every connection is "being answered" (a
   handler waits in uvicorn's ``flow.drain()``), so none is idle, none stalls, and both 10 s
   deadlines pass. Every other request (task submissions, receipts, ``/healthz``, the validators'
   trace reads under ``/v1/store``) is a 503 for as long as the peer reads (8.8 MB queued per
   socket: hours at 1 KB/s; 512 sockets cost the peer ~0.5 MB/s of downstream). Measured: 4 of 4
   connections held, every honest request 503 for 14 s, 200 again the moment the peer closes.
   Fix by design: bound what one source may hold (a per-address share of ``max_connections``
   for connections with a response in progress, or a minimum drain rate: abort a response whose
   client takes less than N KB/s over a window), and stop serving pipelined requests while the
   previous response is unread (uvicorn's h11 reads the next request as soon as one is written).
   The fix: a new connection over the limit with none idle evicts the connection whose client has
   held its response back longest (writing paused for at least `HELD_BACK_S`,
   `DeadlineH11Protocol._evict_idle`). A client that keeps up with its response is never paused
   for long and so is never evicted; a per-address cap was left out, as in review 13, because it
   refuses users behind the attacker's NAT and costs an IPv6 attacker nothing.
2. MEDIUM, FIXED — a restart ran a confirmed irreversible call a second time, on the user's one
   consent (`test_defence_a_restart_does_not_run_a_confirmed_irreversible_call_again`). A task
   whose agent made a confirmed irreversible call (an MCP ``pay``, a deployment, an email) and is
   stopped before its receipt (a graceful stop for an upgrade: `NodeService.cleanup` cancels it and leaves it
   ``running``; a crash leaves the same) is re-run from its start by `TaskWorker.resume`
   (worker.py): the agent calls the tool again with the same arguments, it is occurrence 0 again,
   so its ``actionHash`` and the EIP-712 ``Confirmation`` are the very ones the user already signed
   (RFC 6979: the same bytes). The node kept no record that the call ran (confirmations live in
   `AccessManager._received`, memory only; the audit is persisted only with the receipt), so it
   pauses and asks again; the SDK signs an occurrence-0 event without ``repeat=True``
   (`supernet.sdk.client.confirm.confirmation_body`), and a client that simply retries its
   earlier POST is accepted too. The payment is made twice for one consent, while the protocol
   says a signature "allows that one call, never a retry or a repeat" (docs/agents.md), and the
   final trace shows one confirmed call, so no validator sees the first. Fix by design: persist an
   irreversible call's intent (task, actionHash, signature) in ``node.sqlite3`` *before* the tool
   runs and its completion after; a resumed task whose record shows an executed or possibly
   executed irreversible call is not re-run blindly: it fails unbilled (its user told which actions
   ran), or replays the recorded result of that call instead of calling the tool again.
   The fix: `Database.begin_irreversible` records the call (task, action) before the tool runs
   (`AccessManager.begin_irreversible`, from the kernel's dispatcher; a call recorded before ends
   the task without a receipt), and `TaskWorker.resume` fails such a task unbilled, naming the
   actions that ran or began.

Checked and holding:

- the same signed request after a restart of the node (a new service over the same database) is
  the same task: 409, one task, billed once
  (`test_defence_a_request_replayed_after_a_restart_is_refused_and_billed_once`);
- the malleable (high-s) twin of a request's signature names the same task (the id is the EIP-712
  hash of the struct, not of the signature): refused, one task, billed once
  (`test_defence_the_high_s_twin_of_a_request_signature_is_not_a_second_task`);
- a chat body with a key sent twice (``"messages": A, ..., "messages": B``) is read the same way
  (last wins) by the typed view and by the signed input, `chat_task_input` of the parsed JSON: a
  request signed for A's input is refused (input_hash_mismatch) and nothing is stored, so no
  parser differential runs another input than the one hashed
  (`test_defence_a_duplicated_key_in_a_chat_body_runs_the_input_that_was_signed`);
- a ``deadline`` that SQLite could not store (2**63 and above, sent as a uint256) is a 422 before
  anything is read or written, and 2**63 - 1 is stored and run (probed, no test);
- ``GET /v1/tasks/{id}/events`` of a task that ended before the stream was opened (or after a
  restart) ends at once with its ``done`` event and its output; streams are opened at admission and
  closed on every path of `TaskWorker._run` (read);
- the peer of finding 1 needs no key and no large block: ``/openapi.json`` is public; on loopback
  the kernel's send buffer takes ~2.8 MB before uvicorn's transport pauses, hence the pipelining
  (on a real link the buffers are smaller and fewer requests do).
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_keys import keys
from node_fixtures import FakeChain, FakeNode, make_fake_node, signed_task
from supernet.node.agents.registry import AgentRegistry
from supernet.node.kernel.access import NodePolicy
from supernet.node.kernel.kernel import Kernel, KernelConfig
from supernet.node.kernel.tools import Tool, ToolRegistry, ToolSpec
from supernet.node.service.config import NodeSettings
from supernet.node.service.db import Database
from supernet.node.service.http_protocol import REQUEST_DEADLINE_S, WRITE_STALL_S
from supernet.node.service.identity import load_account
from supernet.node.service.kernel_executor import KernelExecutor, access_policy
from supernet.node.service.models import TaskStatus
from supernet.node.service.runner import NodeService
from supernet.sdk.client.confirm import confirmation_body
from supernet.sdk.client.read_grant import ReadGrantAuth
from supernet.sdk.openai_compat.chat_input import chat_task_input
from supernet.sdk.store import StoreClient
from supernet.sdk.store.embedded import in_process_client

from tests.unit.test_node_confirmations import PayAgent, StubEmbedder, StubEngine, pending_event
from tests.unit.test_review_session_changes13 import _get, _serving

FEE = 10**12
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def _stranger(node: FakeNode) -> httpx.AsyncClient:
    """A client that sees the node's answers (500s included) as a real HTTP peer would."""
    assert node.service.app is not None
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=node.service.app, raise_app_exceptions=False),
        base_url="http://node",
    )


def _db(node: FakeNode) -> Database:
    assert node.service.ctx is not None
    return node.service.ctx.db


# ------------------------------------------------------------------------------------------------
# 1. Slow readers
# ------------------------------------------------------------------------------------------------


async def test_defence_slow_readers_from_one_peer_no_longer_hold_every_connection(
    tmp_path: Path,
) -> None:
    """MEDIUM. Attack: an outsider (no key, deposit or fee) opens ``max_connections`` sockets with
    a 4 KB receive window, pipelines 200 ``GET /openapi.json`` on each, then reads 2 KB from each
    every 2 s. Each connection always has a handler waiting in uvicorn's ``flow.drain()`` (not
    idle: never evicted), and its unsent bytes shrink at every read (never a write stall), so
    neither 10 s deadline of `DeadlineH11Protocol` fires. The FAKE executor of node_fixtures plays
    no part (no task is sent).

    Safe: an honest request made while one peer reads slowly on every connection is served (that
    peer's excess refused or its slowest responses cut). Before the fix: 503 for as long as it read;
    now the honest connection evicts the response held back longest."""
    limit = 4  # [api] max_connections, small for the test (the default 512 behaves alike)
    async with _serving(tmp_path, max_connections=limit) as (n, port):
        assert (await _get(port, "/healthz")).startswith(b"HTTP/1.1 200")
        server = n.service._server
        assert server is not None
        socks: list[socket.socket] = []
        statuses: list[bytes] = []
        try:
            for _ in range(limit):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
                s.connect(("127.0.0.1", port))
                s.setblocking(False)
                s.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: node\r\n\r\n" * 200)
                socks.append(s)
                await asyncio.sleep(0.3)  # each one's handler is waiting before the next connects
            read = [0] * limit
            started = time.monotonic()
            held_for = max(REQUEST_DEADLINE_S, WRITE_STALL_S) + 2  # past both deadlines
            while time.monotonic() - started < held_for:
                await asyncio.sleep(2)
                for i, s in enumerate(socks):  # progress: never a write stall
                    try:
                        read[i] += len(s.recv(2048))
                    except BlockingIOError:
                        pass
            held = len(server.server_state.connections)
            statuses = [await _get(port, "/healthz"), await _get(port, "/v1/node")]
        finally:
            for s in socks:
                s.close()
        assert all(read), read  # the peer did read: it is a slow reader, not a silent one
        assert all(st.startswith(b"HTTP/1.1 200") for st in statuses), (
            f"{held_for:g} s after one peer began reading {limit} pipelined connections at ~1 KB/s "
            f"({held} still held, max_connections={limit}), honest requests are answered {statuses}: a "
            f"connection with a handler waiting in drain() is never idle (never evicted) and a reader "
            f"that makes progress is never cut, so one outsider denies the node's API to everyone"
        )


# ------------------------------------------------------------------------------------------------
# 2. Irreversible calls and restarts
# ------------------------------------------------------------------------------------------------


@dataclass
class PayerNode:
    """The node service on the real kernel with the in-process irreversible ``pay`` tool (as
    tests/unit/test_node_confirmations.py builds it), whose chain and user survive a restart."""

    service: NodeService
    executor: KernelExecutor
    store: StoreClient
    http: httpx.AsyncClient
    payments: list[int] = field(default_factory=list)

    @property
    def ctx(self) -> Any:
        return self.service.ctx

    async def close(self) -> None:
        """The node's graceful stop (what SIGTERM runs): running tasks are cancelled and stay
        ``running`` in the database, to be resumed at the next start."""
        await self.http.aclose()
        await self.service.cleanup()
        await self.executor.close()
        await self.store.aclose()


async def _payer_node(tmp_path: Path, chain: FakeChain, user: LocalAccount, payments: list[int]) -> PayerNode:
    store = in_process_client(tmp_path / "store")
    cfg = NodeSettings.load(
        None,
        data_dir=tmp_path / "node",  # the same directory at each start: the same key and database
        access={
            "confirmation_timeout_s": 30.0,
            "groups": [{"name": "payers", "agents": ["payer"], "tools": ["pay", "calc*"]}],
        },
    )

    def pay(args: Mapping[str, Any]) -> str:  # the irreversible effect: money leaves
        payments.append(int(args["amount"]))
        return f"sent {args['amount']}"

    tools = ToolRegistry()
    schema = {"type": "object"}
    tools.register(Tool(ToolSpec("pay", "Send money (irreversible)", schema, irreversible=True), pay))
    tools.register(Tool(ToolSpec("echo", "Echo", schema, deterministic=True), lambda a: a["text"]))
    agents = AgentRegistry()
    agents.register(PayAgent)
    config = KernelConfig(node_policy=NodePolicy(**access_policy(cfg.access)), eip712_domain=chain.domain)
    kernel = Kernel(
        StubEngine(), store, config, agents=agents, tools=tools, embedder=StubEmbedder(), params_type=dict
    )
    await kernel.setup()
    executor = KernelExecutor(kernel, "stub", FEE, Database.open(cfg.data_dir / "node.sqlite3"))
    service = NodeService(cfg, executor, load_account(cfg), store, chain)
    await service.setup()  # resumes the tasks left accepted or running
    assert service.app is not None
    http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=service.app),
        base_url="http://node",
        auth=ReadGrantAuth(user, service.account.address, chain.domain),
    )
    return PayerNode(service, executor, store, http, payments)


def _payer_body(node: PayerNode, user: LocalAccount, chain: FakeChain, amounts: list[int]) -> dict[str, Any]:
    """The signed body of a ``payer`` task (as test_node_confirmations' ``Node.body``)."""
    body = signed_task(
        user,
        node.service.account.address,
        chain.domain,
        {"amounts": amounts},
        cumulative=FEE,
        agent_hash=node.executor.agent_hash("payer") or "",
    )
    return {**body, "agent": "payer"}


async def _ended(node: PayerNode, task_id: str) -> dict[str, Any]:
    for _ in range(500):
        task = (await node.http.get(f"/v1/tasks/{task_id}")).json()
        if task["status"] in ("done", "failed", "refused"):
            return dict(task)
        await asyncio.sleep(0.01)
    raise AssertionError("the task did not end")


async def test_defence_a_restart_does_not_run_a_confirmed_irreversible_call_again(tmp_path: Path) -> None:
    """MEDIUM, FIXED. Setup: a node on the real kernel whose ``pay`` tool is irreversible; a user's
    task pays 5 then 7, each call paused for the user's confirmation. The user confirms ``pay 5``
    with the SDK (`confirmation_body`, what `Client.confirm` posts); 5 is paid; ``pay 7`` waits. The
    operator restarts the node (graceful stop, same data directory). Before the fix
    `TaskWorker.resume` ran the task again from its start: ``pay 5``, occurrence 0, paused again under
    the same actionHash, and the user's earlier confirmation (the same bytes a retrying client
    re-posts, or what the SDK signs again for an occurrence-0 event) was accepted: 5 was paid twice.
    FAKE chain of node_fixtures and STUB engine (the agent makes no LLM call).

    Fixed: an irreversible call is recorded in ``node.sqlite3`` before it runs
    (`Database.begin_irreversible`, through `AccessManager.begin_irreversible`); a task left
    unfinished with such a record is not resumed: it fails, unbilled, naming the actions that ran,
    and the user's re-posted consent finds nothing to confirm. Paid once."""
    chain, user, payments = FakeChain(), Account.create(), []
    chain.deposits[user.address] = 10**18
    first = await _payer_node(tmp_path, chain, user, payments)
    try:
        assert first.service.ctx is not None
        body = _payer_body(first, user, chain, [5, 7])
        r = await first.http.post("/v1/tasks", json=body)
        assert r.status_code == 202, r.text
        task_id = r.json()["id"]
        event = await pending_event(first, task_id)
        assert event["tool"] == "pay" and event["args"] == {"amount": 5} and event["occurrence"] == 0
        consent = confirmation_body(task_id, event, chain.domain, user)  # the user's one consent
        r = await first.http.post(f"/v1/tasks/{task_id}/confirmations", json=consent)
        assert r.status_code == 200 and r.json()["resumed"] is True, r.text
        later = await pending_event(first, task_id, 2)
        assert later["args"] == {"amount": 7}
        assert payments == [5]  # paid once; the task waits for the second consent, no receipt yet
        db = Database.open(tmp_path / "node" / "node.sqlite3")
        assert db.irreversible_calls(task_id) == [("pay", event["actionHash"].lower())]  # before the call
        db.close()
    finally:
        await first.close()

    second = await _payer_node(tmp_path, chain, user, payments)  # the restart
    try:
        assert second.service.ctx is not None
        task = await _ended(second, task_id)
        assert task["status"] == "failed", task
        assert "irreversible" in task["error"] and event["actionHash"].lower() in task["error"], task
        r = await second.http.post(f"/v1/tasks/{task_id}/confirmations", json=consent)  # a retrying client
        assert r.status_code != 200 or r.json().get("resumed") is not True, r.text
        assert payments == [5], f"payments made: {payments}: the confirmed `pay 5` ran again"
        db = Database.open(tmp_path / "node" / "node.sqlite3")
        assert db.billed(user.address) == 0  # a failed task is not charged
        db.close()
    finally:
        await second.close()


# ------------------------------------------------------------------------------------------------
# Defences
# ------------------------------------------------------------------------------------------------


async def test_defence_a_request_replayed_after_a_restart_is_refused_and_billed_once(tmp_path: Path) -> None:
    """Attack: a user whose task was admitted (and done) sends the same signed body again after
    the node restarted (a new service over the same database; FAKE executor and chain), hoping a
    fresh process has forgotten it: a second answer for one fee, or a second receipt. Defence: the
    task id and the nonce are in ``node.sqlite3``; 409, one task, billed once."""
    first = await make_fake_node(tmp_path / "node")
    body = first.body("hello", cumulative=FEE)
    r = await first.http.post("/v1/tasks", json=body)
    assert r.status_code == 202, r.text
    tid = r.json()["id"]
    assert first.service.ctx is not None
    await first.service.ctx.worker.wait(tid)
    chain, user = first.chain, first.user
    await first.http.aclose()
    await first.service.cleanup()
    await first.store.aclose()

    second = await make_fake_node(tmp_path / "node", chain=chain)
    try:
        async with _stranger(second) as client:
            again = await client.post("/v1/tasks", json=body)
        assert again.status_code == 409 and again.json()["error"]["code"] == "replay", again.text
        db = _db(second)
        assert db.count_by_status() == {"done": 1}
        assert db.billed(user.address) == FEE and db.receipt(tid) is not None
    finally:
        await second.http.aclose()
        await second.service.cleanup()
        await second.store.aclose()


async def test_defence_the_high_s_twin_of_a_request_signature_is_not_a_second_task(
    tmp_path: Path,
) -> None:
    """Attack: the same request with its signature's malleable twin (s -> n - s, v flipped), a
    different byte string over the same struct, hoping the node keys a task by its signature bytes.
    Defence: the task id is the EIP-712 hash of the request; the twin is refused (401 or 409), the
    node holds one task billed once (FAKE executor and chain)."""
    node = await make_fake_node(tmp_path / "node")
    try:
        body = node.body("twin", cumulative=FEE)
        r = await node.http.post("/v1/tasks", json=body)
        assert r.status_code == 202, r.text
        raw = bytes.fromhex(body["signature"][2:])
        sig = keys.Signature(raw[:64] + bytes([raw[64] - 27 if raw[64] >= 27 else raw[64]]))
        twin_s = SECP256K1_N - sig.s
        twin = sig.r.to_bytes(32, "big") + twin_s.to_bytes(32, "big") + bytes([27 + (1 - sig.v)])
        assert twin != raw
        async with _stranger(node) as client:
            resp = await client.post("/v1/tasks", json={**body, "signature": "0x" + twin.hex()})
        assert resp.status_code in (401, 409), resp.text  # today: 401 (eth-keys refuses high s)
        assert _db(node).count_by_status() in ({"accepted": 1}, {"running": 1}, {"done": 1})
        assert _db(node).billed(node.user.address) == FEE
    finally:
        await node.http.aclose()
        await node.service.cleanup()
        await node.store.aclose()


async def test_defence_a_duplicated_key_in_a_chat_body_runs_the_input_that_was_signed(
    tmp_path: Path,
) -> None:
    """Attack: a chat body that sends ``messages`` twice, signed for the first value, hoping the
    typed view (what FastAPI validates) and the signed input (`chat_task_input` of the parsed
    JSON) read different values, so that what runs is not what was hashed (FAKE executor and
    chain). Defence: both read the last value; a request signed for the first is 400
    input_hash_mismatch and stores nothing, one signed for the last runs it."""
    node = await make_fake_node(tmp_path / "node")
    try:
        a = [{"role": "user", "content": "first"}]
        b = [{"role": "user", "content": "second"}]
        for signed_for, expect in ((a, 400), (b, 200)):
            signed = node.body(
                chat_task_input({"model": "fake-model", "messages": signed_for}), cumulative=FEE
            )
            auth = json.dumps({k: signed[k] for k in ("request", "signature", "voucher")})
            raw = (
                '{"model": "fake-model", "messages": '
                + json.dumps(a)
                + ', "supernet": '
                + auth
                + ', "messages": '
                + json.dumps(b)
                + "}"
            )
            async with _stranger(node) as client:
                resp = await client.post(
                    "/v1/chat/completions", content=raw, headers={"content-type": "application/json"}
                )
            assert resp.status_code == expect, resp.text
            if expect == 400:
                assert resp.json()["error"]["code"] == "input_hash_mismatch"
                assert _db(node).count_by_status() == {}
        assert _db(node).count_by_status() == {"done": 1}
        (task,) = _db(node).tasks_with_status(TaskStatus.DONE)
        assert task.input == chat_task_input({"model": "fake-model", "messages": b})
    finally:
        await node.http.aclose()
        await node.service.cleanup()
        await node.store.aclose()


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_defence_an_irreversible_call_is_recorded_once_per_task_and_action(tmp_path: Path) -> None:
    """The journal under the fix above: the first record of a (task, action) wins, a second is
    refused with nothing written (what makes the kernel end a re-run before the tool runs again),
    another occurrence or task is its own call, and the record survives reopening the file."""
    db = Database.open(tmp_path / "node.sqlite3")
    assert db.begin_irreversible("0x01", "0xAA", "pay") is True
    assert db.begin_irreversible("0x01", "0xaa", "pay") is False  # the same action (hex case aside)
    assert db.begin_irreversible("0x01", "0xbb", "pay") is True  # another occurrence: another action
    assert db.begin_irreversible("0x02", "0xaa", "pay") is True  # another task
    db.close()
    db = Database.open(tmp_path / "node.sqlite3")
    assert db.irreversible_calls("0x01") == [("pay", "0xaa"), ("pay", "0xbb")]
    assert db.begin_irreversible("0x01", "0xaa", "pay") is False
    db.close()
