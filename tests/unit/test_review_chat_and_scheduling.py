"""Adversarial review of (a) the node's OpenAI-compatible ``POST /v1/chat/completions`` (its
credential, billing and refusals) and (b) the kernel's fee priority and fair share (the
`FairSharePolicy` of the LLM scheduler, the worker's task slots in front of it, child agents).

``test_known_limit_*`` pass while the hole exists (each shows the attack and says the harm and a
fix); ``test_defence_*`` assert an attack the code already defeats. Real service code throughout
(`NodeService` on the FAKE executor and chain of ``tests/node_fixtures.py`` where the service's
own logic is under test; the real kernel, SmolLM2 engine and embedded store for the token budget;
the real `Scheduler` and `FairSharePolicy` on the FAKE engine of ``tests/kernel_fixtures.py`` for
ordering).

What was tried, and what was found:

(a) chat completions
* FIXED (the factories default ``max_retries`` to 0): the SDK's own ``openai_client`` /
  ``async_openai_client`` kept the openai package's default ``max_retries=2``. The node answers a
  completion that outlives ``api.max_stream_s`` with
  504 ``still_running`` (the task goes on and is billed), and openai retries 5xx (and client-side
  read timeouts, whose default of 300 s is below the node's 600 s): every retry re-runs
  `SupernetAuth`, which signs a new nonce and the next voucher, so one completion becomes three
  paid tasks. Every test of the SDK passes ``max_retries=0`` and so never sees it.
* holds: a credential is single use (409 on a replay, billed once), bound to its model (400 for
  another one), its deadline (400 after it) and the exact body (the existing
  test_openai_chat_api.py covers prompt/limit/params); malformed, oversized, ``n`` > 1 and
  legacy-function bodies are 4xx with nothing stored or billed.

(b) scheduling and fee priority
* FOUND: a paid offer buys no priority in the shipped service. Tasks wait for one of the worker's
  16 slots (`TaskWorker._slots`, an ``asyncio.Semaphore``: FIFO) *before* the fee-aware scheduler,
  whose batch is also 16 (``KernelConfig.max_active``, ``LLMEngine.max_batch``): one-call tasks
  (every chat completion) never queue where the fee is read. A 100x offer waits behind a cheaper
  task that came first, and is charged in full.
* FOUND: the offer is unverifiable: a node configured ``[engine] policy = "fifo"`` admits and bills
  an offer above its price exactly as a "fair" node does, and ``GET /v1/node`` does not say which
  policy it runs. The receipt's ``fee`` is the offer; nothing a validator checks says whether it
  bought anything.
* FOUND: fair share is per key and keys are free: the same calls at the same fee spread over four
  fresh keys get ~4/5 of the model against one key's four calls (1/2 if the attacker used one
  key), so per-user fairness costs an honest batch user and is free to dodge.
* FIXED (`FairSharePolicy.release` clears the virtual times once the node is idle): a user's
  virtual time was never rebased when the node went idle: tokens a user had while
  nobody else wanted the model become debt. The next newcomer starts at 0 and is served ahead of
  that user (even when that user offers 100x the newcomer's fee) until it has used as many
  fee-weighted tokens: a high offer gets lower priority than the base price.
* FIXED (an agent call holds its caller's turn for the child's whole run): concurrent child
  agents (``asyncio.gather`` of ``ctx.agents.call``, which docs/agents.md allows) (1) overrun the paid
  token budget: each LLM call reads the task's
  remaining budget (``max_llm_tokens - use.llm_tokens``) when it starts, and the children start
  together, so a task paid for N tokens generates up to ``max_llm_calls * max_new_tokens``
  (defaults: 32 x 128 = 4096 for a 1000-token fee); and (2) get the honest node that ran them
  flagged: the trace holds the children's events in timing order, which the validator's replay
  does not reproduce (a REPLAY divergence at syscall 1).
* holds: a long generation is cut at the operator's ``max_new_tokens`` whatever the request asks
  (no never-ending sequence), and a second user's call preempts it at the end of a time slice.
"""

from __future__ import annotations

import asyncio
import inspect
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import pytest_asyncio
from eth_account import Account
from eth_account.signers.local import LocalAccount
from supernet.node.agents.base import Agent
from supernet.node.agents.context import AgentContext
from supernet.node.agents.registry import AgentRegistry
from supernet.node.kernel.access import NodePolicy
from supernet.node.kernel.kernel import KernelConfig
from supernet.node.kernel.policies import FairSharePolicy
from supernet.node.kernel.scheduler import LLMJob, Scheduler
from supernet.node.kernel.syscalls import TaskSpec
from supernet.node.llm.engine import LLMEngine
from supernet.node.service.worker import TaskWorker
from supernet.sdk.chain.deployment import Deployment
from supernet.sdk.openai_compat import async_openai_client, chat_task_input

from tests.kernel_fixtures import FakeLLMEngine, FakeParams
from tests.node_fixtures import FakeNode, make_fake_node
from tests.unit.test_openai_chat_api import header

FEE = 10**12  # the fake node's task fee (default pricing: 1e9 wei x 1000 tokens)
URL = "/v1/chat/completions"
PROMPT = [{"role": "user", "content": "hi"}]


def _db(node: FakeNode) -> Any:
    assert node.service.ctx is not None
    return node.service.ctx.db


def _task_rows(node: FakeNode) -> list[tuple[str, str, int]]:
    """(user, status, fee) of every stored task, in nonce order."""
    with sqlite3.connect(node.service.settings.data_dir / "node.sqlite3") as c:
        rows = c.execute("SELECT user, status, fee FROM tasks ORDER BY created_at, nonce")
        return [(u, s, int(f)) for u, s, f in rows]


def _funded(node: FakeNode) -> LocalAccount:
    user = Account.create()
    node.chain.deposits[user.address] = 10**18
    return user


async def _settled(node: FakeNode, n: int) -> None:
    """Wait until ``n`` tasks are stored and none is accepted or running."""
    async with asyncio.timeout(20):
        while True:
            rows = _task_rows(node)
            if len(rows) >= n and all(s not in ("accepted", "running") for _, s, _ in rows):
                return
            await asyncio.sleep(0.02)


@pytest_asyncio.fixture
async def slow_node(tmp_path: Path) -> AsyncIterator[FakeNode]:
    """A fake node whose chat answers wait at most 0.3 s (``api.max_stream_s``), as a loaded node's
    answers outlive the default 600 s."""
    node = await make_fake_node(
        tmp_path / "node", batch={"max_size": 2, "max_age_s": 0.2}, api={"max_stream_s": 0.3}
    )
    yield node
    await node.http.aclose()
    await node.service.cleanup()
    await node.store.aclose()


# -- (a) chat completions -----------------------------------------------------------------------------


async def test_defence_the_sdk_openai_client_does_not_retry_a_paid_request(
    slow_node: FakeNode, tmp_path: Path
) -> None:
    """DEFENCE (was a known limit; fixed: the SDK's openai factories default ``max_retries`` to 0).
    ATTACK / FAILURE: a user asks one question through ``async_openai_client`` exactly as the
    README shows (no ``max_retries``). The node is busy: the answer is not ready within
    ``api.max_stream_s`` and the route answers 504 ``still_running`` (routes_chat.py,
    `StillRunningError`, errors.py: status 504) while the task goes on and stays billed. The
    openai package retries 5xx twice (and read timeouts; the SDK's 300 s client timeout is below
    the node's 600 s ``max_stream_s``, so the same happens with defaults), and each retry passes
    through `SupernetAuth.auth_flow`, which signs a fresh nonce and the next cumulative voucher:
    the node admits three tasks for one completion, runs them and redeems three fees.

    WHO PROFITS / HARM: the user pays 3x for one answer whenever a node is slow; a greedy node can
    make it happen at will (hold the answer past its ``max_stream_s``, or close the connection),
    and an overloaded node gets a retry storm that adds two paid tasks per waiting user.

    FIX (the class): a paid request must be idempotent across transport retries. Either the SDK
    factory sets ``max_retries=0`` and `SupernetAuth` refuses to re-sign a request it already
    signed (keep the signed header on the request object / key by the body and return the same
    credential, which the node answers with the existing task: 409 replay -> the task's result),
    or the node answers a retry of the same signed request with the stored task instead of 409,
    and answers ``still_running`` with a non-retryable status (202 + ``taskId``, or
    ``x-should-retry: false``)."""
    node = slow_node
    node.executor.gate = asyncio.Event()  # a busy node: the task takes longer than max_stream_s
    deployment = Deployment(31337, 0, {"Payments": node.chain.domain.verifying_contract})
    assert deployment.domain.verifying_contract.lower() == node.chain.domain.verifying_contract
    ai = async_openai_client(
        "http://node", node.user, deployment, rule=node.chain, state_dir=tmp_path / "state"
    )
    assert ai.max_retries == 0  # openai's default of 2 retried each paid request twice
    ai._client._transport = httpx.ASGITransport(app=node.service.app)  # the real app, in process
    with pytest.raises(openai.APIStatusError) as err:
        await ai.chat.completions.create(model="fake-model", messages=PROMPT)  # type: ignore[arg-type]
    assert err.value.status_code == 504
    node.executor.gate.set()
    await _settled(node, 1)
    rows = _task_rows(node)
    assert len(rows) == 1, rows  # one question, one task
    assert [s for _, s, _ in rows] == ["done"]
    assert _db(node).billed(node.user.address) == FEE  # and one fee owed
    await ai.close()


async def test_defence_a_chat_credential_is_single_use_and_bound_to_its_model_and_deadline(
    fake_node: FakeNode,
) -> None:
    """ATTACK: reuse one signed chat credential (a relay or a logging proxy that saw the header):
    send it twice, send it for another served model name than the signed ``modelId``, and sign one
    whose deadline has passed. DEFENCE: the task id is the request's EIP-712 hash, stored once
    (409 replay); the route checks ``model`` against the signed ``modelId`` before admission; the
    authenticator refuses a passed deadline. One task, one fee."""
    node = fake_node
    body = {"model": "fake-model", "messages": PROMPT, "max_tokens": 8}
    signed = node.body(chat_task_input(body), cumulative=FEE)
    first = await node.http.post(URL, json=body, headers=header(signed))
    assert first.status_code == 200, first.text
    again = await node.http.post(URL, json=body, headers=header(signed))
    assert again.status_code == 409 and again.json()["error"]["code"] == "replay", again.text
    auth = {k: signed[k] for k in ("request", "signature", "voucher")}
    again = await node.http.post(URL, json={**body, "supernet": auth})
    assert again.status_code == 409, again.text  # the body field path too
    # a credential signed for another model id, sent with the served model's name
    other_model = "0x" + "11" * 32
    other = node.body(chat_task_input(body), cumulative=2 * FEE, model_id=other_model)
    r = await node.http.post(URL, json=body, headers=header(other))
    assert r.status_code == 400 and "signed modelId" in r.text, r.text
    expired = node.body(chat_task_input(body), cumulative=2 * FEE, deadline=1)
    r = await node.http.post(URL, json=body, headers=header(expired))
    assert r.status_code == 400 and r.json()["error"]["code"] == "deadline_passed", r.text
    assert len(_task_rows(node)) == 1
    assert _db(node).billed(node.user.address) == FEE


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"n": 2}, 400),
        ({"functions": [{"name": "f"}]}, 400),
        ({"max_tokens": 8, "max_completion_tokens": 9}, 400),
        ({"max_tokens": 10**9}, 422),
        ({"stop": ["a", "b", "c", "d", "e"]}, 422),
        ({"messages": [{"role": "user", "content": "x"}] * 65}, 422),
        ({"messages": [{"role": "user", "content": "x" * 70_000}]}, 413),
        ({"messages": [{"role": "user", "content": "x" * 20_000}]}, 413),
        ({"messages": [{"role": "user"}]}, 400),
    ],
    ids=[
        "n",
        "functions",
        "two-limits",
        "huge-limit",
        "five-stops",
        "65-messages",
        "body",
        "input",
        "no-content",
    ],
)
async def test_defence_malformed_chat_bodies_are_4xx_and_bill_nothing(
    fake_node: FakeNode, change: dict[str, Any], status: int
) -> None:
    """ATTACK: a body correctly signed (its own ``inputHash``) but malformed, oversized or asking
    for what the node cannot verify (``n`` > 1, legacy functions, an unbounded ``max_tokens``, a
    64 KiB+ body, an input over ``max_input_chars``). DEFENCE: a 4xx before admission; nothing is
    stored, no nonce used, nothing billed; the next honest request with the same nonce and voucher
    amount is admitted."""
    node = fake_node
    body = {"model": "fake-model", "messages": PROMPT, **change}
    signed = node.body(chat_task_input(body), cumulative=FEE, nonce=5)
    r = await node.http.post(URL, json=body, headers=header(signed))
    assert r.status_code == status, r.text
    assert _task_rows(node) == [] and _db(node).billed(node.user.address) == 0
    honest = {"model": "fake-model", "messages": PROMPT}
    ok = node.body(chat_task_input(honest), cumulative=FEE, nonce=5)
    r = await node.http.post(URL, json=honest, headers=header(ok))
    assert r.status_code == 200, r.text
    assert _db(node).billed(node.user.address) == FEE


# -- (b) fee priority at the service --------------------------------------------------------------------


async def test_defence_a_high_offer_is_first_in_line_for_a_worker_slot(
    fake_node: FakeNode,
) -> None:
    """ATTACK / FAILURE (fixed): docs/protocol.md promises that a ``maxFee`` above the price buys
    priority, and the node charges the whole offer. But in the service a task first waits for one
    of `TaskWorker`'s slots (an ``asyncio.Semaphore``, woken in arrival order, fee unread), and only
    a task holding one reaches the kernel, whose fee-aware scheduler has a batch just as large
    (``KernelConfig.max_active`` 16, ``LLMEngine.max_batch`` 16 = ``TaskWorker`` concurrency 16):
    a one-call task (every chat completion) never waited where the fee is read. Here four keys hold
    the 16 slots (4 each, the per-user cap), a base-price task arrives, then a 100x offer.

    DEFENCE: the worker's slots are `FeeSlots`: a freed slot goes to the waiting task with the
    highest fee under the `fair` policy (the default), so the 100x task starts first."""
    node = fake_node
    node.executor.gate = asyncio.Event()
    # the shipped sizes: the worker admits as many tasks as the kernel's LLM batch holds
    concurrency = inspect.signature(TaskWorker.__init__).parameters["concurrency"].default
    batch = inspect.signature(LLMEngine.__init__).parameters["max_batch"].default
    assert concurrency == KernelConfig().max_active == batch == 16
    holders = [_funded(node) for _ in range(4)]
    for user in holders:
        for i in range(4):
            body = node.body(f"hold {i}", user=user, cumulative=FEE * (i + 1))
            assert (await node.http.post("/v1/tasks", json=body)).status_code == 202
    cheap_user, rich_user = _funded(node), _funded(node)
    cheap = await node.http.post("/v1/tasks", json=node.body("cheap", user=cheap_user, cumulative=FEE))
    rich = await node.http.post(
        "/v1/tasks", json=node.body("rich", user=rich_user, cumulative=100 * FEE, fee=100 * FEE)
    )
    assert cheap.status_code == rich.status_code == 202, (cheap.text, rich.text)
    cheap_id, rich_id = cheap.json()["id"], rich.json()["id"]
    for _ in range(20):
        await asyncio.sleep(0.01)
    assert len(node.executor.runs) == 16 and {cheap_id, rich_id}.isdisjoint(node.executor.runs)
    node.executor.gate.set()
    await _settled(node, 18)
    assert node.executor.runs.index(rich_id) < node.executor.runs.index(cheap_id)  # fee, not arrival
    assert node.executor.fees[rich_id] == 100 * FEE
    assert _db(node).billed(rich_user.address) == 100 * FEE  # charged the offer in full


async def test_known_limit_a_fifo_node_charges_the_full_offer_and_publishes_no_policy(tmp_path: Path) -> None:
    """ATTACK: a node runs ``[engine] policy = "fifo"`` (or any order it likes) and still admits
    and bills offers above its price: admission (auth.py ``fee=req.max_fee``) never looks at the
    policy, ``GET /v1/node`` does not publish it, the receipt's ``fee`` is the offer, and nothing in
    the trace a validator replays says where the task waited. The offer is a payment for a
    service no one can check.

    FIX (by design): treat the offer as unverifiable and say so (docs/protocol.md), or make it
    checkable: publish the policy and per-batch queue facts (the manifest lists each task's
    arrival and start order and fee; a validator flags a batch where a lower key started before
    a waiting higher one), or refund the offer above the price unless the task was started within
    a promised bound (signed like the receipt promise)."""
    node = await make_fake_node(tmp_path / "node", engine={"policy": "fifo"})
    try:
        assert node.service.settings.engine.policy == "fifo"
        info = (await node.http.get("/v1/node")).json()
        assert not any("polic" in k.lower() or "priorit" in k.lower() for k in info), sorted(info)
        assert int(info["taskFee"]) == FEE
        r = await node.http.post("/v1/tasks", json=node.body("offer", cumulative=50 * FEE, fee=50 * FEE))
        assert r.status_code == 202, r.text
        await _settled(node, 1)
        receipt = (await node.http.get(f"/v1/tasks/{r.json()['id']}/receipt")).json()
        assert int(receipt["receipt"]["fee"]) == 50 * FEE
        assert _db(node).billed(node.user.address) == 50 * FEE
    finally:
        await node.http.aclose()
        await node.service.cleanup()
        await node.store.aclose()


# -- (b) the fair-share policy ----------------------------------------------------------------------------


class _Call:
    def __init__(self, user: str, fee: int, seq: int) -> None:
        self.user, self.fee, self.seq = user, fee, seq


def _shares(calls: list[_Call], steps: int = 1000) -> dict[str, int]:
    """Tokens each user gets when the policy picks one call per token (the engine's one slot)."""
    policy = FairSharePolicy()
    for c in calls:
        policy.push(c)
    served: dict[str, int] = {}
    for _ in range(steps):
        e = policy.pop()
        policy.charge(e, 1)
        served[e.user] = served.get(e.user, 0) + 1
        policy.push(e)
    return served


def test_known_limit_splitting_calls_over_free_keys_buys_a_larger_share() -> None:
    """ATTACK: fair share is per user key (`FairSharePolicy._vtime` by ``entry.user``) and keys are
    free. An honest user runs four tasks at the base fee from one key; the attacker runs four tasks
    at the same fee from four fresh keys (each a deposit of one fee). With equal work and equal
    payment, the attacker gets ~4/5 of the model instead of 1/2; the worker's per-user cap (4
    slots of 16) is dodged the same way (four keys hold every slot, see the test above).

    HARM: a user who batches under one key pays four fees for one share; the 'one user's many calls
    do not crowd out another's few' guarantee (policies.py) holds only for users who do not split.

    FIX (the class): weigh by what was paid, not by identity: each task (or each call) is its own
    flow with weight = its fee, so four tasks get four shares on one key or on four, and the
    per-user caps become per-fee caps (a user's slots in proportion to the fees in flight)."""
    honest = [_Call("honest", FEE, i) for i in range(4)]
    split = [_Call(f"sybil{i}", FEE, 10 + i) for i in range(4)]
    one_key = [_Call("attacker", FEE, 10 + i) for i in range(4)]
    fair = _shares(honest + one_key)
    assert fair["honest"] == pytest.approx(500, abs=5)
    served = _shares(honest + split)
    attacker = sum(v for k, v in served.items() if k.startswith("sybil"))
    assert attacker == pytest.approx(800, abs=5) and served["honest"] == pytest.approx(200, abs=5)


def _job(rid: str, user: str, fee: int, n: int) -> LLMJob:
    return LLMJob(rid, f"task-{rid}", user, fee, (1, 2, 3), FakeParams(n))


async def _finish_order(sched: Scheduler, jobs: list[LLMJob]) -> list[str]:
    """Start ``jobs`` in list order (each after the previous is queued); their finish order."""
    done: list[str] = []

    async def one(j: LLMJob) -> None:
        await sched.generate(j)
        done.append(j.request_id)

    runs = []
    for j in jobs:
        runs.append(asyncio.ensure_future(one(j)))
        await asyncio.sleep(0)  # queued (or admitted) before the next arrives
    async with asyncio.timeout(10):
        await asyncio.gather(*runs)
    return done


async def test_defence_tokens_used_alone_are_no_debt_against_a_100x_offer(
    fake_llm_engine: FakeLLMEngine,
) -> None:
    """DEFENCE (was a known limit; fixed: `FairSharePolicy.release` clears the virtual times when
    the node goes idle). ATTACK / FAILURE: user R used the model while nobody else wanted it (64 tokens,
    base fee).
    Later the node is idle, a newcomer B arrives (a long call at the base fee) and R arrives right
    after it offering 100x. `FairSharePolicy.push` starts B at ``floor`` = 0 (nobody busy:
    ``min(..., default=0.0)``) but keeps R's old virtual time (``max(own, floor)``): R's solo
    tokens, which delayed no one, are debt, and R's 100x call waits until B has had as many
    fee-weighted tokens. Control: a fresh user with the same 100x offer preempts B after one slice.

    HARM: priority is inverted for exactly the users who use a node most (a regular customer
    paying 100x is served after a newcomer paying the price, for as long as its history lasts:
    the policy lives as long as the kernel); a competitor can exploit it by sending one long call
    whenever the node goes idle.

    FIX (the class): rebase virtual times when the system goes idle (start-time fair queueing's
    system virtual time: a user arriving at an idle node starts at the largest recorded virtual
    time, or clear the table when the last outstanding call is released), so that only tokens
    taken while others waited count against a user."""
    sched = Scheduler(fake_llm_engine, FairSharePolicy(), max_active=1, time_slice_tokens=4)
    await _finish_order(sched, [_job("r-alone", "R", 1, 64)])  # R alone: nobody waited
    assert sched.active == 0 and sched.waiting == 0
    order = await _finish_order(sched, [_job("b-long", "B", 1, 64), _job("r-rich", "R", 100, 8)])
    assert order == ["r-rich", "b-long"]  # R's solo tokens are no debt: the 100x offer goes first

    fresh = Scheduler(fake_llm_engine, FairSharePolicy(), max_active=1, time_slice_tokens=4)
    control = await _finish_order(fresh, [_job("b-long2", "B", 1, 64), _job("n-rich", "N", 100, 8)])
    assert control == ["n-rich", "b-long2"]  # without R's history the offer goes first


async def test_defence_a_long_generation_is_capped_and_yields_to_another_user(
    fake_llm_engine: FakeLLMEngine,
) -> None:
    """ATTACK: one user starts a very long generation to hold the engine's only slot. DEFENCE: under
    the fair policy with a token slice, another user's call preempts it at the end of a slice
    (the long call resumes exactly where it stopped); the length itself is capped per call by the
    dispatcher (``min(call.max_new_tokens, caps.max_new_tokens, ...)``; shown on the real engine in
    the next test)."""
    sched = Scheduler(fake_llm_engine, FairSharePolicy(), max_active=1, time_slice_tokens=4)
    order = await _finish_order(sched, [_job("hog", "H", 1, 400), _job("small", "S", 1, 8)])
    assert order == ["small", "hog"]


# -- (b) child agents on the real kernel ------------------------------------------------------------------

BUDGET = 16  # the task's paid token budget (max_llm_tokens) and one call's cap (max_new_tokens)
CHILDREN = 4
ASKED = 4096  # what each child asks for: far past the cap, which each call is cut to


class Asker(Agent):
    """One long greedy LLM call of ``input`` new tokens; returns how many it got."""

    agent_id = "asker"
    description = "Counts for a while."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        reply = await ctx.llm.chat(
            [{"role": "user", "content": "Count from 1 to 200, separated by commas."}],
            max_new_tokens=int(input),
        )
        return str(len(reply.output_ids))


class FanOut(Agent):
    """Calls ``asker`` ``CHILDREN`` times at once (``asyncio.gather``), as a map-reduce agent would."""

    agent_id = "fan-out"

    calls_agents = ("asker",)
    description = "Asks several children at once."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        got = await asyncio.gather(*(ctx.agents.call("asker", int(input)) for _ in range(CHILDREN)))
        return ",".join(got)


class InTurn(Agent):
    """The same children one after another (the control)."""

    agent_id = "in-turn"

    calls_agents = ("asker",)
    description = "Asks several children in turn."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        got = []
        for _ in range(CHILDREN):
            try:
                got.append(await ctx.agents.call("asker", int(input)))
            except Exception:  # the budget is spent: refused
                got.append("refused")
        return ",".join(got)


@pytest.mark.model
@pytest.mark.timeout(300)
async def test_defence_concurrent_child_agents_take_turns_within_the_budget_and_replay_clean(
    make_kernel: Any,
) -> None:
    """DEFENCE (was a known limit; fixed: an agent call takes its caller's turn for the whole of
    the child's run). ATTACK: a user picks an agent (operator-allowed) that calls child agents concurrently,
    ``asyncio.gather`` of ``ctx.agents.call``, which docs/agents.md allows ("An agent may
    `asyncio.gather` syscalls ... an agent call's child takes turns of its own"). An agent call
    takes no turn (dispatch.py ``Dispatcher.handle``: ``AgentCall`` bypasses ``st.turn``), so:

    1. BUDGET: every child's LLM call reads the task's remaining budget when it starts
       (``Dispatcher._llm``: ``max_new = min(call.max_new_tokens, caps.max_new_tokens,
       caps.max_llm_tokens - use.llm_tokens, room)``; ``use.llm_tokens`` grows only when a call
       ends): a task paid for 16 tokens generates 64 here; with the shipped caps a 1000-token fee
       (``pricing.tokens_per_task``) buys up to ``max_llm_calls`` x ``engine.max_new_tokens`` =
       32 x 128 = 4096 tokens, and one task holds up to 32 KV slots at once (the per-user worker
       cap of 4 tasks becomes 128 sequences).
    2. FRAMING: the trace records the children's events as they happen (four ``agent.call``, then
       each child's ``llm`` and ``agent.return``, in timing order); the validator's replay
       (`supernet.node.kernel.replay.replay`, run by validator/replay_check.py) answers each
       syscall from the tape at once and so expects ``agent.call, llm, agent.return, ...``: it
       reports a divergence at syscall 1, a REPLAY finding against the honest node that ran it.
       Control: the same children called one after another stay in budget and replay clean.

    WHO PROFITS: the user (4x the paid tokens; and a colluding validator's challenge of an honest
    node: slash, challenger reward, user refund). HARM: unpaid work and an honest node slashed for
    running an agent exactly as documented.

    FIX (the class): make an agent call take its caller's turn like every other syscall (children
    run one at a time in call order: the trace order is then the call order, which the replay
    reproduces), or record each child's events as a block under its ``agent.call`` (ordered by
    call, not by time) and replay them so; and reserve a call's ``max_new`` from the budget when
    it starts (returning the unused part when it ends), so the sum of the calls' limits can never
    pass ``max_llm_tokens``. Until then docs/agents.md must forbid gathering agent calls."""
    from supernet.node.kernel.replay import replay

    agents = AgentRegistry()
    for cls in (Asker, FanOut, InTurn):
        agents.register(cls)
    policy = NodePolicy(max_llm_tokens=BUDGET, max_new_tokens=BUDGET)
    kernel = await make_kernel(KernelConfig(node_policy=policy), agents=agents)
    tokenizer = kernel.engine.tokenizer
    user = "0x" + "c4" * 20
    control = await kernel.run_task(TaskSpec("in-turn", "in-turn", ASKED, user=user, fee=FEE))
    assert control.status == "ok", control.error
    assert control.llm_tokens <= BUDGET and "refused" in control.output  # one at a time: capped
    clean = await replay(control.trace, InTurn, tokenizer, agents=agents)
    assert clean.status == "ok" and clean.divergences == [], clean.divergences

    outcome = await kernel.run_task(TaskSpec("fan-out", "fan-out", ASKED, user=user, fee=FEE))
    # the children took turns: the first spent the paid budget, the second was refused (the agent
    # lets that error end the task, unbilled), and nothing past the budget was generated
    assert outcome.status == "error" and f"used its {BUDGET} LLM tokens" in (outcome.error or "")
    assert outcome.llm_tokens <= BUDGET
    kinds = [e["kind"] for e in outcome.trace["events"]]
    assert kinds[:3] == ["agent.call", "llm", "agent.return"]  # the first child whole, then the next
