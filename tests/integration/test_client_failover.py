"""Node choice and failover end to end: a real Anvil, a real ``supernet node run`` (the honest node),
and a second node registered on chain by the test, cheaper (task fee and registered price), so the
client's score puts it first.

The second node's endpoint is a small real HTTP server started here that answers ``/v1/node`` like
a node (so discovery finds and ranks it) and ``500`` to everything else. A FAULT the test injects:
a real node cannot be made to answer 5xx on demand (its only 5xx, ``/healthz`` while draining,
lasts the moment of a shutdown). With it the client must pass the failing node over before paying
(no deposit in the user's channel to it, read on chain), run the task on the honest node, and say
which node it chose and why. When the failing node breaks only after the deposit (its ``POST
/v1/tasks`` answers 500), the client must not retry elsewhere (that would pay twice): it raises an
error naming the node.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from node_fixtures import NodeProcess, node_on_anvil
from supernet.sdk.chain import Contracts, Deployment
from supernet.sdk.chain.anvil import Anvil, dev_account
from supernet.sdk.client import Client
from supernet.sdk.client.types import ClientError

pytestmark = [pytest.mark.anvil, pytest.mark.model, pytest.mark.slow]

NODE_KEY_INDEX = 15  # the honest node
BROKEN_KEY_INDEX = 16  # the node answering 500
USER_INDEXES = (17, 18, 19)
DEPOSIT = 10**17


class BrokenNode(ThreadingHTTPServer):
    """FAULT: a node whose API answers ``/v1/node`` (copied from the honest node, with its own
    address) and 500 to every other request, or only to ``POST /v1/tasks`` with ``fail_posts_only``."""

    def __init__(self, info: dict[str, Any]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.info = info
        self.fail_posts_only = False
        self.status = 500  # what it answers instead (a 4xx: a refusal, not a failure)
        self.requests: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: BrokenNode

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.server.requests.append(f"GET {self.path}")
        if self.path == "/v1/node":
            return self._reply(200, self.server.info)
        if self.server.fail_posts_only and self.path == "/healthz":
            return self._reply(200, {"status": "ok", "node": self.server.info["address"]})
        if self.server.fail_posts_only and self.path.startswith("/v1/accounts/"):
            user = self.path.rsplit("/", 1)[1]
            return self._reply(200, {"user": user, "lastNonce": 0, "billed": "0", "redeemed": "0"})
        self._reply(self.server.status, {"error": {"code": "internal", "message": "database is gone"}})

    def do_POST(self) -> None:
        self.server.requests.append(f"POST {self.path}")
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        self._reply(500, {"error": {"code": "internal", "message": "database is gone"}})

    def log_message(self, *args: Any) -> None:
        pass


@dataclass
class Net:
    anvil: Anvil
    contracts: Contracts
    deployment: Path
    node: NodeProcess
    broken: BrokenNode
    tmp: Path

    def client(self, user_index: int, name: str) -> Client:
        key = "0x" + bytes(dev_account(user_index).key).hex()
        return Client.connect(self.anvil.url, self.deployment, key, state_dir=self.tmp / f"user-{name}")

    def deposited(self, user_index: int, node_index: int) -> int:
        pay = self.contracts.payments
        return pay.channel(dev_account(user_index).address, dev_account(node_index).address).deposited


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    tmp = tmp_path_factory.mktemp("failover")
    with node_on_anvil(tmp, NODE_KEY_INDEX) as (anvil, contracts, dep, node):
        info = httpx.get(node.url + "/v1/node", timeout=30).json()
        broken_account = dev_account(BROKEN_KEY_INDEX)
        # half the honest node's task fee (what the client ranks on) and half its registered price
        cheaper_fee = str(int(info["taskFee"]) // 2)
        broken = BrokenNode({**info, "address": broken_account.address, "taskFee": cheaper_fee})
        thread = threading.Thread(target=broken.serve_forever, daemon=True)
        thread.start()
        try:
            honest = contracts.service_manager.get_node(dev_account(NODE_KEY_INDEX).address)
            sm = Contracts.connect(anvil.url, Deployment.load(dep), broken_account).service_manager
            # cheaper than the honest node, same models: the score ranks it first
            sm.register_node(broken.url, honest.model_ids, honest.price_per_token // 2, honest.stake)
            yield Net(anvil, contracts, dep, node, broken, tmp)
        finally:
            broken.shutdown()
            broken.server_close()


async def test_a_node_answering_500_is_passed_over_before_any_deposit(net: Net) -> None:
    user = USER_INDEXES[0]
    client = net.client(user, "failover")
    try:
        ranked = await client.discover()
        assert [n.url for n in ranked] == [net.broken.url, net.node.url]  # the cheaper one first
        net.broken.requests.clear()
        result = await client.submit_task(
            {"messages": [{"role": "user", "content": "Say hi."}], "max_new_tokens": 4}, deposit=DEPOSIT
        )
        honest = dev_account(NODE_KEY_INDEX).address
        assert result.node.lower() == honest.lower() and result.output
        # the client says which node it chose and why
        assert client.last_choice is not None and client.last_choice.address.lower() == honest.lower()
        assert "score" in client.last_choice.explain() and net.node.url in client.last_choice.explain()
        assert len(client.last_skipped) == 1 and net.broken.url in client.last_skipped[0]
        assert "500" in client.last_skipped[0]
        # nothing was paid to the failing node: no deposit in the user's channel to it (on chain)
        assert net.deposited(user, BROKEN_KEY_INDEX) == 0
        assert net.deposited(user, NODE_KEY_INDEX) >= DEPOSIT
        assert not any(r.startswith("POST") for r in net.broken.requests)  # no task was sent to it
    finally:
        await client.aclose()


async def test_a_node_failing_after_the_deposit_is_named_and_not_retried_elsewhere(net: Net) -> None:
    user = USER_INDEXES[1]
    client = net.client(user, "no-double-pay")
    net.broken.fail_posts_only = True
    try:
        with pytest.raises(ClientError) as err:
            await client.submit_task("Say hi.", deposit=DEPOSIT)
        broken = dev_account(BROKEN_KEY_INDEX).address
        assert broken in str(err.value) and "after payment was committed" in str(err.value)
        assert net.deposited(user, BROKEN_KEY_INDEX) >= DEPOSIT  # the deposit that was made
        assert net.deposited(user, NODE_KEY_INDEX) == 0  # and no second payment elsewhere
    finally:
        net.broken.fail_posts_only = False
        await client.aclose()


async def test_a_4xx_before_the_deposit_is_the_nodes_refusal_and_moves_on(net: Net) -> None:
    """Before the deposit a node is asked only its health and the user's account, which carry
    nothing of the task: a 4xx there is the node's own refusal (one cheap node that ranks first
    refusing them stopped every discovering client), so it is passed over like a 5xx."""
    user = USER_INDEXES[2]
    client = net.client(user, "refused")
    net.broken.status = 400
    try:
        result = await client.submit_task(
            {"messages": [{"role": "user", "content": "Say hi."}], "max_new_tokens": 4}, deposit=DEPOSIT
        )
        assert result.node.lower() == dev_account(NODE_KEY_INDEX).address.lower() and result.output
        assert len(client.last_skipped) == 1 and net.broken.url in client.last_skipped[0]
        assert "400" in client.last_skipped[0]
        assert net.deposited(user, BROKEN_KEY_INDEX) == 0  # nothing paid to the refusing node
    finally:
        net.broken.status = 500
        await client.aclose()


async def test_a_4xx_to_the_task_itself_is_raised_and_moves_nowhere(net: Net) -> None:
    """The task is sent after the deposit: its refusal (a well-formed 4xx to ``POST /v1/tasks``) is
    raised naming the node, and no other node is tried (that could pay twice)."""
    user = USER_INDEXES[2]
    client = net.client(user, "refused-task")
    net.broken.fail_posts_only, net.broken.status = True, 400
    elsewhere = net.deposited(user, NODE_KEY_INDEX)  # the previous test's deposit
    try:
        with pytest.raises(ClientError) as err:
            await client.submit_task("Say hi.", deposit=DEPOSIT)
        assert dev_account(BROKEN_KEY_INDEX).address in str(err.value)
        assert net.deposited(user, BROKEN_KEY_INDEX) >= DEPOSIT  # the deposit that was made
        assert net.deposited(user, NODE_KEY_INDEX) == elsewhere  # no second node tried
    finally:
        net.broken.fail_posts_only, net.broken.status = False, 500
        await client.aclose()
