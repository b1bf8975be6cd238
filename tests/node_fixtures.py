"""Fixtures of the node-service tests.

``FakeExecutor`` and ``FakeChain`` are FAKES used only by ``tests/unit/test_node_*.py`` to test
the service's own logic (admission, persistence, batching, the HTTP surface) alone and fast.
The end-to-end tests (``tests/integration/test_node_*.py``) run the real kernel, the real
model, the embedded store and a real Anvil.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import pytest_asyncio
from eth_account import Account
from eth_account.signers.local import LocalAccount
from supernet.node.service.config import NodeSettings
from supernet.node.service.identity import load_account
from supernet.node.service.ports import (
    ChannelEvents,
    CommitPending,
    Job,
    JobResult,
    RootsSnapshot,
    SignedCommit,
    SignedVoucher,
    TokenSink,
)
from supernet.node.service.runner import NodeService
from supernet.sdk.chain import Contracts, ProtocolParams
from supernet.sdk.chain.anvil import Anvil, dev_account
from supernet.sdk.chain.eip712 import Domain, TaskRequest, Voucher, sign_task_request, sign_voucher
from supernet.sdk.chain.payments import Channel
from supernet.sdk.chain.receipts import input_hash
from supernet.sdk.client.read_grant import ReadGrantAuth
from supernet.sdk.client.types import ClientError
from supernet.sdk.devnet.processes import ServiceProcess, free_port
from supernet.sdk.formats.profile import AgentProfile
from supernet.sdk.formats.trace import AgentRef, Limits
from supernet.sdk.models import served_model_id
from supernet.sdk.store import StoreClient
from supernet.sdk.store.cids import compute_cid, encode_dag
from supernet.sdk.store.embedded import in_process_client

from tests.chain_fixtures import MODEL_COMPUTE, MODEL_ID, MODEL_WEIGHTS_ID

FAKE_WEIGHTS_ID = "0x" + hashlib.sha256(b"fake-model").hexdigest()
FAKE_COMPUTE = "float32"
FAKE_MODEL_ID = served_model_id(FAKE_WEIGHTS_ID, FAKE_COMPUTE)  # a served id: clients check its format
FAKE_PROFILE = AgentProfile.of(
    AgentRef("chat", "0x" + hashlib.sha256(b"fake-chat-agent").hexdigest()),
    Limits(True, True, 32, 8192, 512, 64, 1 << 16),
    [],
)
"""The profile the FAKE kernel lists for its one agent."""
FAKE_AGENT_HASH = FAKE_PROFILE.hash()


@dataclass
class FakeExecutor:
    """FAKE kernel: echoes the input word by word; ``gate`` holds tasks until set."""

    gate: asyncio.Event | None = None
    fail_on: str | None = None
    runs: list[str] = field(default_factory=list)
    fees: dict[str, int] = field(default_factory=dict)  # the fee each job was run with
    stores_roots: bool = False  # hand each result, with roots naming the task, to ``on_result``

    def model_ids(self) -> Sequence[str]:
        return [FAKE_MODEL_ID]

    def model_name(self, model_id: str) -> str:
        return "fake-model"

    def model_format(self, model_id: str) -> tuple[str, str]:
        # the fake model, or the one `tests.chain_fixtures.network` registered (a subclass serves it)
        if model_id.lower() == "0x" + MODEL_ID.hex():
            return MODEL_WEIGHTS_ID, MODEL_COMPUTE
        return FAKE_WEIGHTS_ID, FAKE_COMPUTE

    def agent_hash(self, agent: str) -> str | None:
        return FAKE_AGENT_HASH if agent == "chat" else None

    def agent_cards(self) -> list[dict[str, Any]]:
        code_hash = FAKE_PROFILE.agent.code_hash
        return [
            {
                "id": "chat",
                "codeHash": code_hash,
                "agentHash": FAKE_AGENT_HASH,
                "profile": FAKE_PROFILE.to_json(),
            }
        ]

    async def run(
        self, job: Job, on_token: TokenSink, on_event: Any = None, on_result: Any = None
    ) -> JobResult:
        self.runs.append(job.task_id)
        self.fees[job.task_id] = job.fee
        if self.gate is not None:
            await self.gate.wait()
        text = job.input if isinstance(job.input, str) else job.input["messages"][-1]["content"]
        if self.fail_on is not None and self.fail_on in text:
            raise RuntimeError("fake failure")
        output = f"echo: {text}"
        for word in output.split(" "):
            on_token(word + " ")
            await asyncio.sleep(0)
        result = JobResult(output=output, trace_cid=compute_cid(encode_dag({"in": text}), "dag-cbor"))
        if self.stores_roots and on_result is not None:
            roots = RootsSnapshot(len(self.runs), {"memory": {job.user.lower(): job.task_id}})
            await on_result(replace(result, roots=roots))
        return result


@dataclass
class FakeChain:
    """FAKE chain: deposits, redemptions and commits held in dicts."""

    domain: Domain = field(default_factory=lambda: Domain(31337, "0x" + "ab" * 20))
    deposits: dict[str, int] = field(default_factory=dict)
    redeemed_amounts: dict[str, int] = field(default_factory=dict)
    commits: list[tuple[bytes, int, str]] = field(default_factory=list)
    redeem_calls: int = 0

    closing: dict[str, int] = field(default_factory=dict)
    max_batch: int = 256
    withdrawal_delay_s: int = 86_400
    price: int = 0

    # the agent code hashes the fake validators replay (None: nothing declared yet, any is signed)
    checked_agents: frozenset[str] | None = None

    def check(self, node: str, model_id: str, agent_hashes: Sequence[str]) -> None:
        """FAKE `supernet.sdk.client.signable.Signable` (a fake chain has no registry): its node
        registered ``FAKE_MODEL_ID``, which the validators check; any other id is refused, and so
        is an agent code hash outside ``checked_agents`` (when set)."""
        if model_id.lower() != FAKE_MODEL_ID:
            raise ClientError(f"node {node}: its /v1/node names model {model_id}, which it did not register")
        for code_hash in agent_hashes:
            if self.checked_agents is not None and code_hash.lower() not in self.checked_agents:
                raise ClientError(f"node {node}: agent code {code_hash} is not replayed by the validators")

    async def channel(self, user: str) -> Channel:
        redeemed = self.redeemed_amounts.get(user, 0)
        return Channel(self.deposits.get(user, 0) + redeemed, redeemed, self.closing.get(user, 0))

    async def redeemed(self, user: str) -> int:
        return self.redeemed_amounts.get(user, 0)

    block: int = 0  # this fake chain's head: one block more each time it is asked for

    async def head(self) -> int:
        self.block += 1
        return self.block

    async def channel_events(self, from_block: int, to_block: int, max_queries: int) -> ChannelEvents:
        """Every channel closing now and every funded one, the scan always up to ``to_block`` (no
        log here: the tests set the dicts directly, so each scan reports them all, which never
        hides a closing channel)."""
        return ChannelEvents(to_block, dict.fromkeys(self.closing, to_block), frozenset(self.deposits))

    async def gas_price(self) -> int:
        return self.price

    async def max_redeem_batch(self) -> int:
        return self.max_batch

    async def withdrawal_delay(self) -> int:
        return self.withdrawal_delay_s

    signed: dict[str, tuple[bytes, int, str]] = field(default_factory=dict)
    mined: dict[str, int] = field(default_factory=dict)
    nonce: int = 0

    settled_in_commits: list[int] = field(default_factory=list)  # vouchers settled by each commit
    refuse_vouchers: bool = False  # signing a commit with vouchers fails (e.g. one went stale)

    async def sign_commit(
        self, root: bytes, count: int, manifest_cid: str, vouchers: Sequence[SignedVoucher] = ()
    ) -> SignedCommit:
        if vouchers and self.refuse_vouchers:
            raise RuntimeError("StaleVoucher (the gas estimate reverts)")
        self.nonce += 1
        tx = "0x" + hashlib.sha256(root + self.nonce.to_bytes(8, "big")).hexdigest()
        self.signed[tx] = (root, count, manifest_cid)
        self._settles[tx] = list(vouchers)
        return SignedCommit(tx, root, self.nonce)

    _settles: dict[str, list[SignedVoucher]] = field(default_factory=dict)

    paused: bool = False  # mining paused: broadcast transactions stay pending
    broadcasts: int = 0

    async def broadcast(self, commit: SignedCommit) -> None:
        self.broadcasts += 1
        if not self.paused and commit.tx_hash not in self.mined:  # the same signed bytes land once
            self.commits.append(self.signed[commit.tx_hash])
            self.mined[commit.tx_hash] = len(self.commits)
            vouchers = self._settles.get(commit.tx_hash, [])
            self._pay(vouchers)  # a commit that settles: redeemed in the same transaction
            self.settled_in_commits.append(len(vouchers))

    async def repriced(self, commit: SignedCommit) -> SignedCommit | None:
        return None  # this fake chain has no base fee

    async def wait_commit(self, commit: SignedCommit) -> int | None:
        if commit.tx_hash not in self.mined:
            raise CommitPending(commit.tx_hash)
        return self.mined[commit.tx_hash]

    async def find_commit(self, root: bytes) -> int | None:
        return next((i + 1 for i, c in enumerate(self.commits) if c[0] == root), None)

    async def redeem(self, vouchers: Sequence[SignedVoucher]) -> str:
        assert len(vouchers) <= self.max_batch, "more vouchers than one call takes"
        self.redeem_calls += 1
        self._pay(vouchers)
        return "0x" + "77" * 32

    def _pay(self, vouchers: Sequence[SignedVoucher]) -> None:
        for v in vouchers:
            already = self.redeemed_amounts.get(v.user, 0)
            paid = min(v.cumulative_amount - already, self.deposits.get(v.user, 0))
            self.deposits[v.user] = self.deposits.get(v.user, 0) - paid
            self.redeemed_amounts[v.user] = already + paid

    async def ensure_registered(self, endpoint: str, model_ids: Sequence[str], stake_wei: int) -> None:
        return None


_nonces = itertools.count(1)


def signed_task(
    user: LocalAccount,
    node: str,
    domain: Domain,
    task_input: str | dict[str, Any],
    *,
    cumulative: int,
    fee: int = 10**12,
    nonce: int | None = None,
    deadline: int | None = None,
    model_id: str = FAKE_MODEL_ID,
    agent_hash: str = FAKE_AGENT_HASH,
    input_digest: bytes | None = None,
) -> dict[str, Any]:
    """A ``POST /v1/tasks`` body signed by ``user`` (``input_digest``: sign this ``inputHash``
    instead of the input's, as an attacker with its own encoding would)."""
    req = TaskRequest(
        user=user.address,
        node=node,
        model_id=bytes.fromhex(model_id[2:]),
        agent_hash=bytes.fromhex(agent_hash[2:]),
        input_hash=input_hash(task_input) if input_digest is None else input_digest,
        max_fee=fee,
        nonce=next(_nonces) if nonce is None else nonce,
        deadline=int(time.time()) + 600 if deadline is None else deadline,
    )
    voucher = Voucher(user=user.address, node=node, cumulative_amount=cumulative)
    return {
        "request": {
            "user": req.user,
            "node": req.node,
            "modelId": model_id,
            "agentHash": agent_hash,
            "inputHash": "0x" + req.input_hash.hex(),
            "maxFee": str(req.max_fee),
            "nonce": str(req.nonce),
            "deadline": str(req.deadline),
        },
        "signature": "0x" + sign_task_request(req, domain, user).hex(),
        "voucher": {
            "cumulativeAmount": str(cumulative),
            "signature": "0x" + sign_voucher(voucher, domain, user).hex(),
        },
        "agent": "chat",
        "input": task_input,
    }


@dataclass
class FakeNode:
    """A node service on fakes, with an HTTP client on its app."""

    service: NodeService
    executor: FakeExecutor
    chain: FakeChain
    store: StoreClient
    http: httpx.AsyncClient
    user: LocalAccount

    @property
    def address(self) -> str:
        return self.service.account.address

    def body(self, task_input: str | dict[str, Any], **kw: Any) -> dict[str, Any]:
        """A signed task body from the default user."""
        return signed_task(kw.pop("user", self.user), self.address, self.chain.domain, task_input, **kw)


def rewriting_bodies(app: Any, old: bytes, new: bytes, on_path: Callable[[str], bool]) -> Any:
    """A lying node: its own ASGI ``app`` with ``old`` replaced by ``new`` (same length, so the
    headers hold) in every response body of a path ``on_path`` accepts."""

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not on_path(scope["path"]):
            await app(scope, receive, send)
            return

        async def rewrite(message: Any) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": message.get("body", b"").replace(old, new)}
            await send(message)

        await app(scope, receive, rewrite)

    return wrapped


def forging_answers(
    app: Any,
    rewrite: Callable[[bytes], bytes],
    *,
    path: str = "/v1/chat/completions",
    status: int | None = None,
    content_type: bytes | None = None,
    headers: Sequence[tuple[bytes, bytes]] = (),
    stall_s: float = 0.0,
) -> Any:
    """A lying node: its own ASGI ``app`` with the whole body of every answer on ``path``
    rewritten (``rewrite``: its bytes to the bytes sent); ``status`` and ``content_type`` replace
    the node's, ``headers`` are added, the length is the new body's; ``stall_s``: the connection
    is held open that long after the body (no length then) before it ends."""

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != path:
            await app(scope, receive, send)
            return
        start: dict[str, Any] = {}
        body = b""

        async def collect(message: Any) -> None:
            nonlocal body
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                body += message.get("body", b"")

        await app(scope, receive, collect)
        new = rewrite(body)
        replaced = (b"content-length", b"content-type") if content_type else (b"content-length",)
        sent = [(k, v) for k, v in start["headers"] if k.lower() not in replaced] + list(headers)
        if content_type:
            sent.append((b"content-type", content_type))
        if not stall_s:
            sent.append((b"content-length", str(len(new)).encode()))
        await send({"type": "http.response.start", "status": status or start["status"], "headers": sent})
        await send({"type": "http.response.body", "body": new, "more_body": bool(stall_s)})
        if stall_s:
            await asyncio.sleep(stall_s)
            await send({"type": "http.response.body", "body": b""})

    return wrapped


async def until_held(
    sent: Sequence[asyncio.Future[Any]], held: int, deadline_s: float = 60.0
) -> tuple[set[asyncio.Future[Any]], set[asyncio.Future[Any]]]:
    """Wait until all of ``sent`` but ``held`` requests have ended (those past a bound are refused
    at once; on a busy machine "at once" can take seconds, so no fixed second is waited), then half
    a second more: ``(done, pending)``, the pending ones being the requests a bound holds."""
    loop, pending = asyncio.get_running_loop(), set(sent)
    end = loop.time() + deadline_s
    while len(pending) > held and loop.time() < end:
        _, pending = await asyncio.wait(
            pending, timeout=end - loop.time(), return_when=asyncio.FIRST_COMPLETED
        )
    _, pending = await asyncio.wait(pending, timeout=0.5)
    return set(sent) - pending, pending


async def make_fake_node(data_dir: Path, chain: FakeChain | None = None, **settings: Any) -> FakeNode:
    """Build and set up a node service on fakes (caller cleans up); ``chain``: the (fake) chain of
    a node this one restarts, with its users' deposits."""
    executor = FakeExecutor()
    chain = chain or FakeChain()
    store = in_process_client(data_dir.parent / "store")  # the real embedded store, no socket
    user = Account.create()
    chain.deposits[user.address] = 10**18
    cfg = NodeSettings.load(None, data_dir=data_dir, **settings)
    service = NodeService(cfg, executor, load_account(cfg), store, chain)
    await service.setup()
    assert service.app is not None
    # Reads carry the default user's read grant (what `supernet.sdk.client.Client` sends); the
    # tests of the grant itself use clients without it.
    http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=service.app),
        base_url="http://node",
        auth=ReadGrantAuth(user, service.account.address, chain.domain),
    )
    return FakeNode(service, executor, chain, store, http, user)


@pytest_asyncio.fixture
async def fake_node(tmp_path: Path) -> AsyncIterator[FakeNode]:
    """A node service on FAKE executor and chain (unit tests of the service layer)."""
    node = await make_fake_node(tmp_path / "node", batch={"max_size": 2, "max_age_s": 0.2})
    yield node
    await node.http.aclose()
    await node.service.cleanup()
    await node.store.aclose()


# ---------------------------------------------------------------------------------------------
# A real node process (end-to-end tests)
# ---------------------------------------------------------------------------------------------


@dataclass
class NodeProcess:
    """``supernet node run`` as a child process (so a test can ``kill -9`` it and start it again).

    Process handling is the devnet's `ServiceProcess`; this adds the node's config file.
    """

    data_dir: Path
    rpc_url: str
    deployment: Path
    private_key: str
    port: int = field(default_factory=free_port)
    extra: str = ""
    service: ServiceProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "node.sqlite3"

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}.log"

    def write_config(self) -> Path:
        path = self.data_dir.parent / f"{self.data_dir.name}.toml"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(
            f'data_dir = "{self.data_dir}"\n'
            f"[api]\nport = {self.port}\n"
            f'[chain]\nenabled = true\nrpc_url = "{self.rpc_url}"\ndeployment = "{self.deployment}"\n'
            "auto_register = true\nstake_wei = 1000000000000000000\n"
            "[batch]\nmax_size = 4\nmax_age_s = 1.0\n"
            "[redeem]\ninterval_s = 2.0\nmin_amount_wei = 1\n" + self.extra
        )
        return path

    def start(self, timeout: float = 240.0) -> None:
        """Start the node and wait until it answers ``/healthz`` (raises `ProcessError` otherwise)."""
        config = self.write_config()
        self.service = ServiceProcess(
            f"node {self.data_dir.name}",
            ["node", "run", "--config", str(config)],
            self.log_path,
            {"SUPERNET_IDENTITY__PRIVATE_KEY": self.private_key},
        )
        self.service.start()
        self.service.wait_http(self.url + "/healthz", timeout)

    def kill9(self) -> None:
        """SIGKILL: no cleanup at all, like a crash."""
        if self.service is not None:
            self.service.kill()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit in 20 s."""
        if self.service is not None:
            self.service.stop()

    def log_tail(self, n: int = 3000) -> str:
        return self.service.log_tail(n) if self.service is not None else ""


@contextmanager
def node_on_anvil(
    tmp: Path, node_key_index: int, extra: str = ""
) -> Iterator[tuple[Anvil, Contracts, Path, NodeProcess]]:
    """A real Anvil with the protocol deployed (devnet parameters) and ``supernet node run`` keyed as
    dev account ``node_key_index``, data under ``tmp``; the node is stopped on exit. ``extra``: TOML
    appended to the node's config (e.g. an ``[engine]`` section)."""
    with Anvil(accounts=20) as anvil:
        contracts = Contracts.deploy(anvil.url, dev_account(0), ProtocolParams.devnet())
        deployment = contracts.deployment.save(tmp / "deployment.json")
        key = "0x" + bytes(dev_account(node_key_index).key).hex()
        node = NodeProcess(tmp / "node", anvil.url, deployment, key, extra=extra)
        node.start()
        try:
            yield anvil, contracts, deployment, node
        finally:
            node.stop()
