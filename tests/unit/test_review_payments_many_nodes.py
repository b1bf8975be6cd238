"""Adversarial review of payments from the money's side: one user, several nodes, one Anvil.

Every test runs the real node service (admission in ``service/auth.py``, billing in SQLite, the
worker, the real ``Redeemer``) against the REAL contracts on a real Anvil (``Web3Chain`` over the
``network`` fixture of ``tests/chain_fixtures.py``: two staked nodes, devnet WITHDRAWAL_DELAY of
60 s). The only fake is the executor (``HeldExecutor``, FAKE, on ``node_fixtures.FakeExecutor``):
it echoes the input, fails on a marker, and can hold one named task unfinished. Holding stands
for what the real kernel does for a user's task waiting on the user's own confirmation (up to
``access.confirmation_timeout_s`` = 300 s per irreversible call) or for a busy node's queue;
neither can be produced in test time without the model.

What was tried, and what was found:

- one deposit buying work at two nodes, or more work than it holds by racing admissions at one
  node, and a node-A voucher spent at node B: defeated (a channel per (user, node), exact
  cumulative vouchers re-checked inside the admission transaction). Defence.
- a voucher signed for another deployment (same chain id, other Payments) or another chain id,
  at the node and on chain: defeated (the EIP-712 domain). Defence.
- a withdrawal requested while the node still serves the user from its 15 s funded-channel cache:
  the node's next redeemer round collects every admitted fee, even below its gas threshold, before
  the user can withdraw. Defence (the money side of the cache's documented 15 s window).
- rounding of the verification share in a commit that settles dust vouchers: exact, at most one
  wei per call in the node's favour. Defence.
- FIXED (were known limits): one task of the user's kept unfinished blocked the redemption of
  every later done task, even on a closing channel (the user withdrew its whole deposit and kept
  the outputs); a failed task's fee, collected as "credit" with the next done task's voucher, was
  lost for good when the user closed the channel. Now the redeemer collects the largest voucher
  within the done fees (`Database.redeemable_voucher`). And a task admitted before the withdrawal
  was still run after it: now the worker re-reads the channel as a task starts.
- KNOWN LIMIT: vouchers are paid before the work; a node can redeem the voucher of a task it
  never runs, and the user has nothing to challenge (no receipt, no promise).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from chain_fixtures import USER_DEPOSIT, Actors
from eth_account.signers.local import LocalAccount
from node_fixtures import FakeExecutor, signed_task
from supernet.node.service.chain import Web3Chain
from supernet.node.service.config import NodeSettings
from supernet.node.service.deps import NodeContext
from supernet.node.service.models import TaskStatus
from supernet.node.service.ports import Job, JobResult, SignedVoucher, TokenSink
from supernet.node.service.runner import NodeService
from supernet.sdk.chain import Contracts, Voucher, sign_voucher
from supernet.sdk.chain.anvil import dev_account, increase_time
from supernet.sdk.chain.contract_errors import InvalidSignature
from supernet.sdk.chain.eip712 import Domain
from supernet.sdk.chain.payments import pack_vouchers
from supernet.sdk.store.embedded import in_process_client

pytestmark = pytest.mark.anvil

FEE = 10**12
"""The node's default task fee (price_per_token 1 gwei x 1000 tokens)."""


@dataclass
class HeldExecutor(FakeExecutor):
    """FAKE executor: `FakeExecutor`, plus ``held``: an input named there waits for its event
    (a task the user keeps waiting on its own confirmation, or a busy node's queue)."""

    held: dict[str, asyncio.Event] = field(default_factory=dict)

    async def run(
        self, job: Job, on_token: TokenSink, on_event: Any = None, on_result: Any = None
    ) -> JobResult:
        gate = self.held.get(job.input) if isinstance(job.input, str) else None
        if gate is not None:
            await gate.wait()
        return await super().run(job, on_token, on_event, on_result)


@dataclass
class ChainNode:
    """A real node service keyed as a staked dev account, paid through the real contracts."""

    service: NodeService
    executor: HeldExecutor
    chain: Web3Chain
    http: httpx.AsyncClient

    @property
    def address(self) -> str:
        return self.service.account.address

    @property
    def ctx(self) -> NodeContext:
        assert self.service.ctx is not None
        return self.service.ctx

    async def post(self, user: LocalAccount, text: str, cumulative: int, **kw: Any) -> httpx.Response:
        body = signed_task(user, self.address, self.chain.domain, text, cumulative=cumulative, **kw)
        return await self.http.post("/v1/tasks", json=body)

    async def status(self, task_id: str) -> str:
        await self.ctx.worker.wait(task_id)
        task = self.ctx.db.task(task_id)
        assert task is not None
        return task.status.value

    async def redeem_round(self) -> None:
        """One round of the node's own redeemer, as configured."""
        assert self.service.redeemer is not None
        await self.service.redeemer.redeem_once()


@pytest_asyncio.fixture
async def nodes(
    tmp_path: Path, network: Contracts, actors: Actors
) -> AsyncIterator[tuple[ChainNode, ChainNode]]:
    """``node`` and ``node2`` of the `network` fixture as real node services (default redeem
    policy: a user is redeemed when it owes 250 x its voucher's gas, or as soon as it closes)."""
    made: list[tuple[ChainNode, Any]] = []
    for name, account in (("n1", actors.node), ("n2", actors.node2)):
        store = in_process_client(tmp_path / name / "store")
        cfg = NodeSettings.load(
            None,
            data_dir=tmp_path / name / "data",
            identity={"private_key": "0x" + bytes(account.key).hex()},
            batch={"max_size": 1, "max_age_s": 0.05},
            redeem={"interval_s": 3600},
        )
        chain = Web3Chain(network, account)
        executor = HeldExecutor(fail_on="FAILME")
        service = NodeService(cfg, executor, account, store, chain)
        await service.setup()
        assert service.app is not None
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=service.app), base_url="http://node")
        made.append((ChainNode(service, executor, chain, http), store))
    try:
        yield made[0][0], made[1][0]
    finally:
        for node, store in made:
            for gate in node.executor.held.values():
                gate.set()
            await node.http.aclose()
            await node.service.cleanup()
            await store.aclose()


def _fresh_user(network: Contracts, index: int, node: str, deposit: int) -> LocalAccount:
    """Dev account ``index`` (no channel in the `network` fixture) with ``deposit`` to ``node``."""
    user = dev_account(index)
    network.as_account(user).payments.deposit(node, deposit)
    return user


def _ether(network: Contracts, who: str) -> int:
    return int(network.w3.eth.get_balance(who))


def _withdraw_all(network: Contracts, user: LocalAccount, node: str) -> int:
    """The user's withdrawal of its channel to ``node`` once the delay passed; what it received."""
    pay = network.as_account(user).payments
    increase_time(network.w3, network.params.withdrawal_delay + 1)
    before = _ether(network, user.address)
    tx = pay.withdraw(node)
    return _ether(network, user.address) - before + tx.gas_used * int(tx.receipt["effectiveGasPrice"])


# -- defences ---------------------------------------------------------------------------------------


async def test_defence_one_deposit_buys_work_only_at_its_node_and_never_more_than_it_holds(
    network: Contracts, nodes: tuple[ChainNode, ChainNode]
) -> None:
    """A user deposits 3F to node 1 only, then tries to spend it twice: at node 2 (own voucher, and
    node 1's voucher pasted into a node-2 request), and at node 1 by racing four admissions that
    each carry the same cumulative F (the losers: 402, or 409 for a nonce
    already passed). Node 2 admits nothing (402: no channel; 401: node 1's voucher
    does not recover to the user under node 2's address); node 1 admits exactly one of the racing
    four (the exact-cumulative guard runs inside the insert's transaction), then 2F and 3F, and
    refuses 4F (402, deposit). Both nodes' redeemers then run: node 1 collects exactly 3F for 3 done
    tasks, node 2 nothing, and the user's channel is drained to the wei."""
    n1, n2 = nodes
    user = _fresh_user(network, 12, n1.address, 3 * FEE)

    r = await n2.post(user, "at node 2", FEE)
    assert r.status_code == 402 and "requiredDeposit" in r.text, r.text
    pasted = signed_task(user, n2.address, network.domain, "pasted voucher", cumulative=FEE)
    pasted["voucher"] = signed_task(user, n1.address, network.domain, "x", cumulative=FEE)["voucher"]
    r = await n2.http.post("/v1/tasks", json=pasted)
    assert r.status_code == 401, r.text

    race = await asyncio.gather(*(n1.post(user, f"race {i}", FEE) for i in range(4)))
    codes = sorted(x.status_code for x in race)
    assert codes[0] == 202 and set(codes[1:]) <= {402, 409}, [x.text for x in race]  # 409: a nonce behind
    ids = [x.json()["id"] for x in race if x.status_code == 202]
    for k in (2, 3):
        r = await n1.post(user, f"task {k}", k * FEE)
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    over = await n1.post(user, "one too many", 4 * FEE)
    assert over.status_code == 402 and "requiredDeposit" in over.text, over.text
    assert [await n1.status(t) for t in ids] == ["done"] * 3

    pay = network.payments
    network.as_account(user).payments.request_withdrawal(n1.address)  # the redeemers must act now
    earned_before = sum(pay.node_account(n1.address))
    await n1.redeem_round()
    await n2.redeem_round()
    assert pay.channel(user.address, n1.address).redeemed == 3 * FEE
    assert sum(pay.node_account(n1.address)) - earned_before == 3 * FEE, "exactly the 3 done tasks"
    assert pay.channel(user.address, n2.address).deposited == 0, "node 2 never had a wei to take"
    assert _withdraw_all(network, user, n1.address) == 0, "nothing left: paid exactly what it used"


async def test_defence_a_voucher_for_another_deployment_or_chain_pays_nothing(
    network: Contracts, actors: Actors, nodes: tuple[ChainNode, ChainNode]
) -> None:
    """A second deployment on the same Anvil (same chain id 31337, another Payments address), with
    the same user funding the same node there too: a voucher (and request) signed for deployment A
    is refused by the node serving B (401: recovered signer is not the user), and B's contract
    refuses to redeem it (InvalidSignature); one signed for A's contract but chain id 1 is refused
    by A's contract too. Control: A redeems its own voucher."""
    n1, _ = nodes
    b = Contracts.deploy(network.w3, actors.deployer, network.params)
    assert b.domain.chain_id == network.domain.chain_id
    assert b.domain.verifying_contract != network.domain.verifying_contract
    user = actors.users[0]  # already funds node 1 on A (the network fixture)
    b.as_account(user).payments.deposit(actors.node.address, USER_DEPOSIT)

    store = in_process_client(n1.service.settings.data_dir.parent / "store-b")
    cfg = NodeSettings.load(None, data_dir=n1.service.settings.data_dir.parent / "data-b")
    on_b = NodeService(cfg, HeldExecutor(), actors.node, store, Web3Chain(b, actors.node))
    await on_b.setup()
    try:
        assert on_b.app is not None
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=on_b.app), base_url="http://b") as h:
            body_a = signed_task(user, actors.node.address, network.domain, "signed for A", cumulative=FEE)
            r = await h.post("/v1/tasks", json=body_a)
            assert r.status_code == 401 and "bad_signature" in r.text, r.text
            body_b = signed_task(user, actors.node.address, b.domain, "signed for B", cumulative=FEE)
            assert (await h.post("/v1/tasks", json=body_b)).status_code == 202  # control: B's own
    finally:
        await on_b.cleanup()
        await store.aclose()

    v = Voucher(user.address, actors.node.address, FEE)
    sig_a = sign_voucher(v, network.domain, user)
    with pytest.raises(InvalidSignature):
        b.as_account(actors.node).payments.redeem([v], [sig_a])
    other_chain = Domain(1, network.domain.verifying_contract)
    with pytest.raises(InvalidSignature):
        network.as_account(actors.node).payments.redeem([v], [sign_voucher(v, other_chain, user)])
    assert b.payments.channel(user.address, actors.node.address).redeemed == 0
    assert network.as_account(actors.node).payments.redeem([v], [sig_a]).value == FEE  # control


async def test_defence_a_withdrawal_seen_late_still_lets_the_node_collect_all_it_ran(
    network: Contracts, nodes: tuple[ChainNode, ChainNode]
) -> None:
    """The node admits task 1 (the channel is read, open, and cached for min(15 s, delay / 4)); the
    user then asks to withdraw and at once sends task 2, which the cache admits (the documented
    window of ``test_review_admission_cache``). The money side of that window: task 2 does not
    start on the closing channel (refused, unbilled: `TaskWorker._unpaid`), and task 1's fee (F, far
    below the default threshold of 250 x a voucher's gas, so never redeemed on worth alone) is
    collected by the node's next redeemer round, because the round reads the channel as closing;
    the user withdraws exactly its deposit less F. After the withdrawal the channel holds F in
    total, so a third task is refused (402)."""
    n1, _ = nodes
    user = _fresh_user(network, 14, n1.address, 10 * FEE)
    first = await n1.post(user, "before the withdrawal", FEE)
    assert first.status_code == 202, first.text
    assert await n1.status(first.json()["id"]) == "done"
    network.as_account(user).payments.request_withdrawal(n1.address)
    second = await n1.post(user, "from the cache", 2 * FEE)
    assert second.status_code == 202, second.text  # the 15 s window
    assert await n1.status(second.json()["id"]) == "refused"

    assert n1.service.redeemer is not None
    threshold = n1.service.redeemer.policy.threshold(network.w3.eth.gas_price)
    assert threshold > FEE, "not worth its gas: only the closing channel makes it due"
    await n1.redeem_round()
    assert network.payments.channel(user.address, n1.address).redeemed == FEE
    assert _withdraw_all(network, user, n1.address) == 9 * FEE
    delay = network.params.withdrawal_delay
    n1.ctx.auth._clock = lambda: time.time() + delay + 1  # the node's clock lives through the delay too
    late = await n1.post(user, "after it", 2 * FEE)
    assert late.status_code == 402, late.text


async def test_defence_rounding_of_the_verification_share_is_under_a_wei_per_call(
    network: Contracts, actors: Actors
) -> None:
    """Dust vouchers (1, 2 and 4 wei from three users) settled in one real ``commitBatch``: the
    node's earnings and escrow grow by exactly the 7 wei the channels lost, the escrow by
    floor(7 x 38 %) = 2 (the node keeps the 0.66 wei of rounding: under one wei per call, which a
    call's gas dwarfs), and the Payments contract's ether does not move."""
    node = network.as_account(actors.node)
    amounts = [1, 2, 4]
    vouchers = [
        Voucher(u.address, actors.node.address, a) for u, a in zip(actors.users, amounts, strict=True)
    ]
    sigs = [sign_voucher(v, network.domain, u) for v, u in zip(vouchers, actors.users, strict=True)]
    before = node.payments.node_account(actors.node.address)
    held = _ether(network, network.payments.address)
    node.task_manager.commit_batch(b"\x11" * 32, 1, "bafy-dust", pack_vouchers(vouchers, sigs))
    earnings, escrow = node.payments.node_account(actors.node.address)
    total = sum(amounts)
    share = network.params.verification_share_bps
    assert escrow - before[1] == total * share // 10_000 == 2
    assert (earnings - before[0]) + (escrow - before[1]) == total
    assert sum(network.payments.redeemed(u.address, actors.node.address) for u in actors.users) == total
    assert _ether(network, network.payments.address) == held, "no ether leaves on redemption"


# -- known limits -----------------------------------------------------------------------------------


async def test_defence_one_unfinished_task_no_longer_shields_later_done_work(
    network: Contracts, nodes: tuple[ChainNode, ChainNode]
) -> None:
    """Found by this review (was a known limit). The user sends task 1, which it keeps unfinished
    (held here; for real: the task waits on the user's own confirmation, 300 s by default per
    irreversible call, longer than the devnet's 60 s WITHDRAWAL_DELAY), then tasks 2..4, which are
    done and whose outputs it reads. It asks to withdraw. `Database.redeemable_voucher` stopped at
    the first unfinished task, so nothing was redeemed: the user withdrew its whole deposit, 4
    tasks of work for 0 wei. Now the node collects the largest voucher within the done fees,
    whichever task it came with: task 3's 3F pays exactly tasks 2..4 before the user can withdraw;
    task 1, done later, is paid by its own 4F voucher while the channel still holds it."""
    n1, _ = nodes
    user = _fresh_user(network, 15, n1.address, 10 * FEE)
    n1.executor.held["held by its user"] = asyncio.Event()
    held = await n1.post(user, "held by its user", FEE)
    assert held.status_code == 202, held.text
    done = []
    for k in (2, 3, 4):
        r = await n1.post(user, f"work {k}", k * FEE)
        assert r.status_code == 202, r.text
        done.append(r.json()["id"])
    assert [await n1.status(t) for t in done] == ["done"] * 3
    outputs = [n1.ctx.db.task(t).output for t in done]  # type: ignore[union-attr]
    assert outputs == ["echo: work 2", "echo: work 3", "echo: work 4"], "the user has its work"

    network.as_account(user).payments.request_withdrawal(n1.address)
    await n1.redeem_round()  # the node sees the request in time and collects the done work
    assert network.payments.channel(user.address, n1.address).redeemed == 3 * FEE
    n1.executor.held["held by its user"].set()
    assert await n1.status(held.json()["id"]) == "done"
    await n1.redeem_round()
    assert network.payments.channel(user.address, n1.address).redeemed == 4 * FEE, "4 done, 4 paid"
    assert _withdraw_all(network, user, n1.address) == 6 * FEE


async def test_defence_a_task_queued_past_the_withdrawal_is_refused_unpaid(
    network: Contracts, nodes: tuple[ChainNode, ChainNode]
) -> None:
    """Found by this review (was a known limit): a task waiting in the node's queue when the user
    withdrew was still run (the worker never looked at the channel again): work delivered, never
    paid. Now `TaskWorker._unpaid` reads the channel as a task starts and refuses it, unbilled,
    when the channel no longer holds its voucher. Here the user's own 4 tasks fill its per-user
    slots (held: waiting on confirmations), a 5th waits behind them; the user requests a
    withdrawal and withdraws after the delay; the 5th is then refused, never run. (The 4 that were
    already running finish: work in progress at the withdrawal, bounded by the user's slots and,
    on a real deployment, by a one-day delay against a 300 s confirmation wait.)"""
    n1, _ = nodes
    user = _fresh_user(network, 16, n1.address, 10 * FEE)
    slots = n1.ctx.worker._per_user
    ids = []
    for k in range(slots + 1):
        n1.executor.held[f"held {k}"] = asyncio.Event()
        r = await n1.post(user, f"held {k}", (k + 1) * FEE)
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    await asyncio.sleep(0.2)
    queued = ids[-1]
    assert n1.ctx.db.task(queued).status is TaskStatus.ACCEPTED  # type: ignore[union-attr]
    network.as_account(user).payments.request_withdrawal(n1.address)
    await n1.redeem_round()  # nothing is done yet: nothing to redeem
    assert _withdraw_all(network, user, n1.address) == 10 * FEE
    for gate in n1.executor.held.values():
        gate.set()
    assert await n1.status(queued) == "refused"
    assert queued not in n1.executor.runs, "the queued task never ran"
    row = n1.ctx.db.task(queued)
    assert row is not None and "no longer covers" in (row.error or "") and row.output is None


async def test_defence_a_failed_tasks_fee_is_not_taken_when_the_user_leaves(
    network: Contracts, nodes: tuple[ChainNode, ChainNode]
) -> None:
    """Found by this review (was a known limit, the documented "credit" of docs/node.md). An
    honest node; the user sends task 1 and, while it is queued, task 2 (voucher 2F). Task 1 fails
    (FAKE failure: an input the agent fails on), task 2 is done. The redeemer collected 2F (task
    2's voucher), F as credit for a next task here that a user who leaves never uses: 2F for one
    task. Now it collects the largest voucher within the done fees: task 1's F, exactly the one
    task done; the user withdraws the rest."""
    n1, _ = nodes
    user = _fresh_user(network, 17, n1.address, 10 * FEE)
    n1.executor.held["FAILME first"] = asyncio.Event()
    first = await n1.post(user, "FAILME first", FEE)
    second = await n1.post(user, "real work", 2 * FEE)
    assert first.status_code == 202 and second.status_code == 202, (first.text, second.text)
    n1.executor.held["FAILME first"].set()
    assert [await n1.status(x.json()["id"]) for x in (first, second)] == ["failed", "done"]
    assert n1.ctx.db.billed(user.address, done_only=True) == FEE, "one task done"

    network.as_account(user).payments.request_withdrawal(n1.address)
    await n1.redeem_round()
    assert network.payments.channel(user.address, n1.address).redeemed == FEE
    assert _withdraw_all(network, user, n1.address) == 9 * FEE, "paid F for one task"


async def test_known_limit_a_node_can_redeem_the_voucher_of_a_task_it_never_runs(
    network: Contracts, nodes: tuple[ChainNode, ChainNode]
) -> None:
    """LIMIT. The voucher is signed with the request, before any work (cumulative = billed + fee),
    and the contract knows only amounts. A cheating node answers 202, never runs the task (held
    forever here), and redeems the stored voucher at once: the user pays F. There is no receipt to
    challenge and no signed ReceiptPromise (a node signs one only with a receipt), so neither a
    fraud challenge nor ``OmissionManager`` can reach it: F is simply gone.

    Harmed: the user, one fee per request the node takes and drops (every request in flight at a
    node the user pipelines to). Bounded per task, not per deposit: the node needs a fresh signed
    voucher for each further fee.
    Fix (protocol): make the 202 carry a node-signed acceptance (requestHash, commitBy) that
    ``OmissionManager`` slashes when no receipt, or node-signed failure record, of that requestHash
    is committed by then (routes_tasks.create_task signs it; OmissionManager checks it); or have the
    SDK client keep one task in flight per node so the exposure stays one fee."""
    n1, _ = nodes
    user = _fresh_user(network, 18, n1.address, 10 * FEE)
    n1.executor.held["never run"] = asyncio.Event()
    r = await n1.post(user, "never run", FEE)
    assert r.status_code == 202, r.text
    task_id = r.json()["id"]
    stored = n1.ctx.db.latest_voucher(user.address)
    assert stored is not None
    amount, signature = stored
    await n1.chain.redeem([SignedVoucher(user.address, amount, bytes.fromhex(signature[2:]))])

    assert network.payments.channel(user.address, n1.address).redeemed == FEE, "the user paid"
    task = n1.ctx.db.task(task_id)
    assert task is not None and task.status in (TaskStatus.ACCEPTED, TaskStatus.RUNNING)
    assert n1.ctx.db.receipt(task_id) is None and n1.ctx.db.promise(task_id) is None, "nothing to claim"
