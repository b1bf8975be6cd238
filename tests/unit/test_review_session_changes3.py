"""Adversarial review of four changes of the session: model coverage (validators declare the served
model ids they check; clients sign only covered ids), the worker's fee-ordered task slots
(`FeeSlots`), the per-receipt MCP re-run budget (`check_tools(mcp_budget_s)`) and the Anvil state
clean-up (``--cache-path``, `Anvil.stop`, ``devnet down``).

Real parts: Anvil with the compiled contracts (``network``: three validators of 2 ETH each, the
30 % quorum), the SDK's `Client.discover` / `_prepare_paid` (only the nodes' ``/v1/node`` answers
are an HTTP mock), the node service on the FAKE executor (``tests/node_fixtures.py``), the real
`FeeSlots`, the validator's `check_tools` with the test MCP server, the real ``anvil`` binary and
the devnet CLI.

What was tried, and what was found:

1. Model coverage.
   * FOUND (known limit): coverage needs QUORUM_BPS (30 %) of stake, which one validator can hold
     alone (here each of three holds 33 %). That validator declares a made-up id the cheating node
     serves; the client signs it; the other validators hold no such model, so they abstain and the
     colluder alone decides every challenge (test_review_model_provenance finding 4). On a model
     every validator holds, the same 33 % could not shield a lie (the honest 67 % outvote it).
   * FOUND (known limit, griefing): "unknown" (nothing declared: accept everything) flips to
     "known" on one declaration by any active validator, whatever its stake. On a network whose
     validators have not declared yet, an outsider bonding the 1 ETH minimum and declaring one
     bogus id gets every honest node refused by every client.
   * FOUND (known limit, minor): the client trusts a read of the declarations for 60 s: a client
     that read while a validator covered an id keeps signing it after that validator left.
   * holds: declarations of a deregistered or fully unbonded validator count for nothing (its stake
     is 0 in `validatorStake`); a node's ``/v1/node`` id it did not register on chain is left out;
     an honest node writing its id in upper-case hex is not.
2. Fee slots.
   * holds: a waiter cancelled before or while being granted never leaks or double-grants a slot
     (a random flood of fees 0..2**255 with cancellations keeps <= n holders and ends with n free).
   * holds: the per-user slot (an arrival-ordered semaphore) is taken *before* the fee-ordered
     one, but a user's 100x offer cannot wait behind its own base-price tasks: admission allows one
     fee per user in flight (409 ``fee_in_flight``), and across users the fee decides.
   * not a finding, noted: priority is strict by fee (no fair share at this level, unlike the
     kernel's `fair` policy); a base-price task can wait until its deadline behind a stream of
     paid higher offers, and is then refused uncharged. Every such offer is billed in full.
3. MCP re-run budget.
   * FOUND (known limit, worse than before): the budget is spent in trace order and a call past it
     is skipped *silently* (no finding, not unverifiable): a trace whose first MCP calls are slow
     but honest hides a lie in any later deterministic MCP call; the receipt verifies clean. Before
     the change the lie was found (slowly).
   * holds: built-in tools are outside the budget: a lie in a built-in call after the budget is
     still caught (each built-in is bounded by its own timeout, 2-10 s).
4. Anvil clean-up.
   * FOUND (known limit): a start whose ``Popen`` fails (a binary that is not executable) leaks
     the states folder and the temporary log it had just made (``mkdtemp`` before the ``try``).
   * FOUND (fixed): when the owning Python process is killed (SIGKILL: a CI job timeout), Anvil
     lived on in its own session and its states folder stayed in the temporary folder; now a
     supervisor ends Anvil and removes its states when the owner's end of a pipe closes, whichever
     of the owner's threads started it.
   * FOUND (known limit, minor): ``devnet down`` removes any folder whose *name* starts with
     ``anvil-states-`` that the pid file names, wherever it is.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from chain_fixtures import MODEL_COMPUTE, MODEL_ID, MODEL_WEIGHTS_ID, Actors, group_alive
from supernet.node.kernel.mcp_tools import MCPTools
from supernet.node.service.fee_slots import FeeSlots
from supernet.sdk.chain import Contracts
from supernet.sdk.chain.anvil import ANVIL_STATES_PREFIX, Anvil
from supernet.sdk.client import Client
from supernet.sdk.client.types import ClientError, NodeChoice
from supernet.sdk.models import served_model_id
from supernet.validator.tool_check import RegistryRunner, check_tools
from supernet.validator.trace_view import ToolCall

from tests.node_fixtures import FakeNode
from tests.unit.test_review_chat_and_scheduling import FEE, _db, _funded, _settled
from tests.unit.test_review_mcp_tools import DictStore, server

pytestmark = pytest.mark.timeout(180)

FAKE_WEIGHTS_ID = "0x" + hashlib.sha256(b"the colluders' private 'model'").hexdigest()
FAKE_ID = bytes.fromhex(served_model_id(FAKE_WEIGHTS_ID, "float32")[2:])
FORMATS = {
    "0x" + MODEL_ID.hex(): {"weights": MODEL_WEIGHTS_ID, "compute": MODEL_COMPUTE},
    "0x" + FAKE_ID.hex(): {"weights": FAKE_WEIGHTS_ID, "compute": "float32"},
}
CLI = "from supernet.sdk.devnet.cli import app; app()"


# -- helpers ----------------------------------------------------------------------------------------


def _client(
    c: Contracts,
    actors: Actors,
    tmp_path: Path,
    answers: dict[str, tuple[str, str]],
    formats: dict[str, dict[str, str]] | None = None,
) -> Client:
    """The real SDK client of user 0, whose HTTP reaches only the nodes in ``answers``
    (host -> (address, the model id its ``/v1/node`` names for ``test-model``)); each node states
    the format of its id as `FORMATS` and ``formats`` (id -> weights, compute) have it."""
    domain = c.domain
    known = {**FORMATS, **(formats or {})}

    def handler(request: httpx.Request) -> httpx.Response:
        host = request.url.host + (f":{request.url.port}" if request.url.port else "")
        if host not in answers or request.url.path != "/v1/node":
            raise httpx.ConnectError("unreachable", request=request)
        address, mid = answers[host]
        body = {
            "address": address,
            "chainId": domain.chain_id,
            "verifyingContract": domain.verifying_contract,
            "taskFee": "1",
            "models": [mid],
            "modelNames": {"test-model": mid},
            "modelFormats": {mid: known[mid.lower()]} if mid.lower() in known else {},
            "agents": {"chat": "0x" + "11" * 32},
        }
        return httpx.Response(200, json=body)

    client = Client(
        c.as_account(actors.users[0]), state_dir=tmp_path / f"client-{len(answers)}-{time.time()}"
    )
    client.http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return client


def _register_cheater(c: Contracts, actors: Actors) -> dict[str, tuple[str, str]]:
    c.as_account(actors.outsider).service_manager.register_node(
        "http://cheater.invalid", [FAKE_ID], 1, 2 * 10**18
    )
    return {
        "127.0.0.1:8100": (actors.node.address, "0x" + MODEL_ID.hex()),
        "cheater.invalid": (actors.outsider.address, "0x" + FAKE_ID.hex()),
    }


async def _found(client: Client) -> list[str]:
    try:
        return [n.address for n in await client.discover("test-model")]
    finally:
        await client.http.aclose()


# -- 1. model coverage --------------------------------------------------------------------------------


@pytest.mark.anvil
async def test_defence_one_validator_holding_the_quorum_cannot_certify_a_model_only_it_checks(
    network: Contracts, actors: Actors, tmp_path: Path
) -> None:
    """Attack (node + one validator): the three validators hold 1/3 of the stake each; the quorum is
    30 %. Two declare the real model; the colluder declares the real model *and* the cheating node's
    made-up id (16 such ids cost it nothing more). The cheater answers ``/v1/node`` with
    ``modelNames = {"test-model": <made-up id>}`` at a lower price.

    It was: 33 % >= 30 %, so the made-up id was "covered": `Client.discover` ranked the cheater and
    `_prepare_paid` signed for it. No honest validator holds that model: they find the receipt
    unverifiable and abstain, so the colluder alone decides every challenge (it never opens one).
    On the real model the same colluder could not shield a lie (the honest 67 % outvote it).

    Defence: a model is covered only if it stays covered without its largest declarer
    (``covered - max_declarer >= quorum``, sdk/supernet/sdk/chain/coverage.py), so no single
    validator certifies a model on its own word. Left on chain: a challenge's quorum base is all
    validator stake (tests/unit/test_review_model_provenance.py, finding 4)."""
    answers = _register_cheater(network, actors)
    colluder, *honest = actors.validators
    network.as_account(colluder).service_manager.declare_checked_models([MODEL_ID, FAKE_ID])
    for v in honest:
        network.as_account(v).service_manager.declare_checked_models([MODEL_ID])
    client = _client(network, actors, tmp_path, answers)
    covered = await client.model_coverage("0x" + FAKE_ID.hex())
    assert not covered.checkable and covered.covered_stake * 3 == covered.total_stake
    assert (await client.model_coverage("0x" + MODEL_ID.hex())).checkable  # three declarers
    assert actors.outsider.address not in await _found(client)
    signer = _client(network, actors, tmp_path, answers)
    direct = await signer.node_info("http://cheater.invalid")
    choice = NodeChoice(actors.outsider.address, "http://cheater.invalid", 1, 2 * 10**18, direct)
    try:  # named directly: refused before anything is signed
        with pytest.raises(ClientError, match="without the largest of them"):
            await signer._prepare_paid(choice, "hi", "chat", "test-model", None, 0)
    finally:
        await signer.http.aclose()


@pytest.mark.anvil
async def test_defence_one_minimum_stake_declaration_cannot_turn_unknown_into_refuse_everything(
    network: Contracts, actors: Actors, tmp_path: Path
) -> None:
    """Attack (griefing): the network's validators run a version that does not declare yet (or
    register after their service started: `_declare_models` runs once, at start). Coverage is
    "unknown" and clients accept every model. An outsider registers a validator with the 1 ETH
    minimum and declares one bogus id.

    It was: `coverage` set ``known`` on any active validator's declaration whatever its stake, so
    the honest node's model (declared by nobody) fell below quorum: every client left every honest
    node out, for the cost of a minimum stake returned after unbonding.

    Defence: coverage is "known" only once validators holding more than half of the stake have
    declared (sdk/supernet/sdk/chain/coverage.py)."""
    answers = {"127.0.0.1:8100": (actors.node.address, "0x" + MODEL_ID.hex())}
    before = _client(network, actors, tmp_path, answers)
    assert await _found(before) == [actors.node.address]  # unknown: accepted
    griefer = network.as_account(actors.outsider).service_manager
    griefer.register_validator(network.params.min_validator_stake)
    griefer.declare_checked_models([FAKE_ID])
    after = _client(network, actors, tmp_path, answers)
    assert not (await after.model_coverage("0x" + MODEL_ID.hex())).known
    assert await _found(after) == [actors.node.address]  # still unknown: accepted


@pytest.mark.anvil
async def test_defence_declarations_of_departed_validators_count_for_nothing(
    network: Contracts, actors: Actors, tmp_path: Path
) -> None:
    """Attack: a validator declares the cheater's id (covering it alone, previous test) and then
    deregisters, or unbonds its whole stake while staying registered, hoping its declaration keeps
    counting (it is never cleared on chain). Defence: `declarations` weighs each validator by
    `validatorStake`, 0 for an inactive one; both ways the id is uncovered for a fresh read, and
    the departed stake leaves the quorum base too."""
    answers = _register_cheater(network, actors)
    a, b, c = actors.validators
    for v in (a, b):
        network.as_account(v).service_manager.declare_checked_models([MODEL_ID, FAKE_ID])
    network.as_account(c).service_manager.declare_checked_models([MODEL_ID])
    network.as_account(a).service_manager.deregister()
    network.as_account(b).service_manager.request_unbond(network.service_manager.validator_stake(b.address))
    assert network.service_manager.checked_models(a.address) == [MODEL_ID, FAKE_ID]  # still on chain
    client = _client(network, actors, tmp_path, answers)
    covered = await client.model_coverage("0x" + FAKE_ID.hex())
    assert not covered.checkable and covered.covered_stake == 0
    assert covered.total_stake == network.service_manager.validator_stake(c.address)
    assert actors.outsider.address not in await _found(client)


@pytest.mark.anvil
async def test_known_limit_a_client_signs_until_its_coverage_read_expires(
    network: Contracts, actors: Actors, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attack: the validators covering an id leave (here: deregister); a client that read the
    declarations just before keeps its read for `COVERAGE_TTL_S` (15 s, was 60) and signs the id
    meanwhile. Harm: small (seconds of tasks under a model no remaining validator checks). Fix: re-read
    the declarations when a ``CheckedModelsDeclared`` / ``Deregistered`` / ``UnbondRequested``
    event is newer than the cached read (one ``eth_getLogs`` from the cached block), or cache per
    block, not per second."""
    answers = _register_cheater(network, actors)
    for v in actors.validators:
        network.as_account(v).service_manager.declare_checked_models([MODEL_ID, FAKE_ID])
    client = _client(network, actors, tmp_path, answers)
    try:
        assert (await client.model_coverage("0x" + FAKE_ID.hex())).checkable
        for v in actors.validators[:2]:
            network.as_account(v).service_manager.deregister()
        network.as_account(actors.validators[2]).service_manager.declare_checked_models([MODEL_ID])
        assert (await client.model_coverage("0x" + FAKE_ID.hex())).checkable  # the cached read
        monkeypatch.setattr(client.rule.coverage, "ttl_s", 0.0)
        assert not (await client.model_coverage("0x" + FAKE_ID.hex())).checkable  # a fresh read
    finally:
        await client.http.aclose()


@pytest.mark.anvil
async def test_defence_an_unregistered_id_is_left_out_and_upper_case_hex_is_not_griefed(
    network: Contracts, actors: Actors, tmp_path: Path
) -> None:
    """Attacks: (a) a node registered for the real model names in ``/v1/node`` another id that the
    validators do cover (so coverage alone would pass): left out, "did not register on chain";
    (b) griefing by form: an honest node writing its registered id in upper-case hex is still
    accepted (ids are compared as bytes), and named directly it passes the coverage check."""
    for v in actors.validators:
        network.as_account(v).service_manager.declare_checked_models([MODEL_ID, FAKE_ID])
    upper = "0x" + MODEL_ID.hex().upper()
    answers = {
        "127.0.0.1:8100": (actors.node.address, upper),
        "127.0.0.1:8101": (actors.node2.address, "0x" + FAKE_ID.hex()),  # registered MODEL_ID only
    }
    client = _client(network, actors, tmp_path, answers)
    assert await _found(client) == [actors.node.address]
    [left] = [p for p in client.last_discovery if p.address == actors.node2.address]
    assert left.problem is not None and "did not register on chain" in left.problem
    assert (await client.model_coverage(upper)).checkable


# -- 2. fee slots -----------------------------------------------------------------------------------


async def test_defence_a_waiter_cancelled_as_it_is_granted_passes_its_slot_on() -> None:
    """Attack (race): a task is cancelled (its client went away, the node stops) in the instant its
    slot is granted (the grant's future is done, the task has not resumed), or just before. A slot
    that leaked would shrink the node forever; one granted twice would run more tasks than slots.
    Defence: `FeeSlots.slot` hands a granted-then-cancelled slot to the next waiter, skips a
    cancelled grant, and the free count comes back whole."""
    slots = FeeSlots(1)
    holding: list[str] = []
    peak = 0

    async def task(name: str, fee: int) -> None:
        nonlocal peak
        async with slots.slot(fee):
            holding.append(name)
            peak = max(peak, len(holding))
            await asyncio.sleep(0.01)
            holding.remove(name)

    ran: list[str] = []
    async with slots.slot(0):
        rich = asyncio.create_task(task("rich", 100))
        gone = asyncio.create_task(task("gone", 50))
        cheap = asyncio.create_task(task("cheap", 1))
        await asyncio.sleep(0)
        assert slots.waiting == 3
        gone.cancel()  # cancelled before any grant
        await asyncio.sleep(0)
    # the holder's release granted "rich"; it is cancelled before it resumes
    rich.cancel()
    results = await asyncio.gather(rich, gone, cheap, return_exceptions=True)
    ran = [type(r).__name__ for r in results]
    assert ran == ["CancelledError", "CancelledError", "NoneType"]
    assert peak == 1 and slots.free == 1 and slots.waiting == 0
    async with asyncio.timeout(1):  # the slot is usable again, at once
        async with slots.slot(0):
            assert slots.free == 0


async def test_defence_a_flood_of_fees_with_cancellations_never_exceeds_the_slots() -> None:
    """Attack: a flood of tasks with fees from 0 to 2**255 (uint256 offers), a third cancelled at
    random moments (waiting, granted, running). Defence: never more holders than slots, every
    grant while others wait goes to the highest fee then waiting, and all slots come back."""
    rng = random.Random(7)
    n = 3
    slots = FeeSlots(n)
    holders = 0
    peak = 0
    waiting_fees: dict[int, int] = {}
    out_of_order: list[tuple[int, int]] = []

    async def task(i: int, fee: int) -> None:
        nonlocal holders, peak
        waiting_fees[i] = fee
        try:
            async with slots.slot(fee):
                waiting_fees.pop(i, None)
                best = max(waiting_fees.values(), default=-1)
                if best > fee:
                    out_of_order.append((fee, best))
                holders += 1
                peak = max(peak, holders)
                try:
                    await asyncio.sleep(rng.random() / 500)
                finally:
                    holders -= 1
        finally:
            waiting_fees.pop(i, None)

    fees = [rng.choice([0, 1, FEE, 2**255, rng.randrange(2**64)]) for _ in range(300)]
    tasks = [asyncio.create_task(task(i, f)) for i, f in enumerate(fees)]
    for _ in range(100):
        await asyncio.sleep(rng.random() / 1000)
        rng.choice(tasks).cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert peak <= n and holders == 0
    assert slots.free == n and slots.waiting == 0
    assert out_of_order == []


async def test_defence_a_users_fifo_slot_never_puts_its_high_offer_behind_its_own_cheap_tasks(
    fake_node: FakeNode,
) -> None:
    """Attack / failure looked for: the worker takes a task's per-user slot (an ``asyncio.Semaphore``:
    arrival order, fee unread, 4 per user) *before* its fee-ordered worker slot, so a user's 100x
    offer could wait behind its own base-price tasks (and behind another user's 10x) while billed
    100x. Four keys hold the node's 16 slots; user A queues 4 base-price tasks, then a 100x one.

    Defence: admission allows one fee per user in flight (``fee_in_flight``, 409, nothing stored
    or billed), so a user's FIFO never orders its own fees; across users the fee decides: B's 10x,
    sent after A's four, starts before them."""
    node = fake_node
    node.executor.gate = asyncio.Event()
    for _ in range(4):
        holder = _funded(node)
        for i in range(4):
            body = node.body(f"hold {i}", user=holder, cumulative=FEE * (i + 1))
            assert (await node.http.post("/v1/tasks", json=body)).status_code == 202
    a, b = _funded(node), _funded(node)
    cheap_ids = []
    for i in range(4):
        r = await node.http.post(
            "/v1/tasks", json=node.body(f"a cheap {i}", user=a, cumulative=FEE * (i + 1))
        )
        assert r.status_code == 202, r.text
        cheap_ids.append(r.json()["id"])
    urgent = await node.http.post(
        "/v1/tasks", json=node.body("a urgent", user=a, cumulative=FEE * 4 + 100 * FEE, fee=100 * FEE)
    )
    assert urgent.status_code == 409 and urgent.json()["error"]["code"] == "fee_in_flight", urgent.text
    medium = await node.http.post("/v1/tasks", json=node.body("b", user=b, cumulative=10 * FEE, fee=10 * FEE))
    assert medium.status_code == 202, medium.text
    medium_id = medium.json()["id"]
    for _ in range(20):
        await asyncio.sleep(0.01)
    assert len(node.executor.runs) == 16
    node.executor.gate.set()
    await _settled(node, 16 + 5)
    runs = node.executor.runs
    assert all(runs.index(medium_id) < runs.index(c) for c in cheap_ids)
    assert _db(node).billed(a.address) == 4 * FEE  # the refused offer is not billed


# -- 3. MCP re-run budget --------------------------------------------------------------------------


async def _mcp_check(
    budget_s: float, lie: bool = True, rng: random.Random | None = None
) -> tuple[list[Any], int, str | None]:
    """Three honest calls of the deterministic, slow ``test.slow`` (0.4 s each on re-run), then
    ``test.add`` recorded with a made-up result (2 + 2 = 5) or the honest one."""
    cfg = server(timeout_s=5.0, deterministic=frozenset({"slow", "add"}), allow=frozenset({"slow", "add"}))
    mcp = MCPTools([cfg])
    await mcp.start()
    try:
        runner = RegistryRunner(DictStore())
        runner.add_mcp(mcp)
        honest = await runner.run("test.add", {"a": 2, "b": 2})
        told = json.loads(json.dumps(honest).replace("4", "5")) if lie else honest
        assert told != honest or not lie
        calls = tuple(ToolCall(i, "test.slow", {"seconds": 0.4}, "done", None, True) for i in range(3))
        calls += (ToolCall(3, "test.add", {"a": 2, "b": 2}, told, None, True),)
        offered = {name: runner.spec(name) for name in ("test.slow", "test.add")}
        return await check_tools(calls, runner, None, offered, budget_s, rng)  # type: ignore[arg-type]
    finally:
        await mcp.close()


def _order(seed: int, n: int = 4) -> list[int]:
    """The order `check_tools` re-runs ``n`` MCP calls in under ``random.Random(seed)``."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order


async def test_defence_a_lie_after_the_mcp_budget_cannot_count_on_being_skipped() -> None:
    """Attack: the trace's first deterministic MCP calls are honest and slow to re-run (a trace
    chooses how many, and a node measures the re-run time on the same public server); the lie is
    in a later one. `check_tools` spent the budget in trace order and then skipped MCP calls: the
    verdict was clean every time (before the budget the lie was always found, slowly).

    Defence: the MCP calls are re-run in an order drawn from the validator's own secret rng, as
    many as the budget allows: the lie is last (skipped) only about a quarter of the time here, and
    where the draw puts it first it is a finding. Control: with room in the budget it always is."""
    last = sum(_order(seed).index(3) == 3 for seed in range(400)) / 400
    assert 0.15 < last < 0.35, last  # no position the node can count on
    first = next(seed for seed in range(400) if _order(seed)[0] == 3)
    findings, rerun, why = await _mcp_check(budget_s=1.0, rng=random.Random(first))
    assert why is None and rerun >= 1
    assert any("another result on re-run" in f.message for f in findings)
    caught, rerun_all, _ = await _mcp_check(budget_s=60.0)
    assert rerun_all == 4 and any("another result on re-run" in f.message for f in caught)


async def test_defence_built_in_calls_are_re_run_whatever_the_mcp_budget() -> None:
    """Attack: spend the MCP budget (0 here), then lie in built-in calls. Defence: the budget
    applies to MCP calls only; every built-in deterministic call is still re-run (each bounded by
    its own timeout: 2 s for the local pure tools), so the lie is a finding."""
    runner = RegistryRunner(DictStore())
    calls = (
        ToolCall(0, "calculator", {"expression": "2+2"}, 4, None, True),
        ToolCall(1, "text", {"text": "abc", "op": "upper"}, "ABD", None, True),
    )
    findings, rerun, why = await check_tools(calls, runner, None, {}, mcp_budget_s=0.0)  # type: ignore[arg-type]
    assert rerun == 2 and why is None
    assert [f.message for f in findings] == ["tool text returned another result on re-run"]


# -- 4. Anvil clean-up ------------------------------------------------------------------------------


def test_defence_a_start_that_cannot_exec_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Failure (fixed): `Anvil.start` made its temporary log and states folder, then ``Popen``; the
    ``try`` that calls `stop` on failure started only after ``Popen``. A binary that cannot be
    executed (a wrong path, a half-downloaded file, no exec bit) raised there and both stayed in
    the temporary folder (each retry added a pair). Defence: they are made inside the ``try``."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    not_exec = tmp_path / "anvil"
    not_exec.write_text("not a program")
    with pytest.raises(PermissionError):
        Anvil(binary=not_exec).start()
    assert sorted(p.name for p in tmp.iterdir()) == []


@pytest.mark.anvil
def test_defence_a_killed_owner_takes_its_anvil_with_it(tmp_path: Path) -> None:
    """Failure (fixed): the process that started Anvil is killed with SIGKILL (a CI job's timeout,
    the OOM killer): `Anvil.stop` never ran, Anvil kept running in its own session and its states
    folder (a megabyte per block once it mines) stayed until the next start swept it. Defence:
    Anvil is started by a supervisor (``anvil_lifeline``) that reads a pipe only the owner holds
    open; the kernel closes it with the owner, and the supervisor ends Anvil's whole group (the
    ``anvil`` launcher runs the server as a second process in it) and removes its states and log."""
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    script = (
        "import time; from supernet.sdk.chain.anvil import Anvil; a = Anvil(accounts=1).start(); "
        "print(a.pid, a.state_dir, a.url, a.log_path, flush=True); time.sleep(120)"
    )
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env, text=True)
    anvil_pid = 0
    try:
        assert owner.stdout is not None
        line = owner.stdout.readline().split()
        anvil_pid, states, url, log = int(line[0]), Path(line[1]), line[2], Path(line[3])
        assert states.is_dir() and states.parent == tmp_path
        assert httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"}).is_success
        owner.send_signal(signal.SIGKILL)
        owner.wait(30)
        deadline = time.monotonic() + 5
        while group_alive(anvil_pid) or states.exists() or log.exists():
            assert time.monotonic() < deadline, "Anvil outlived its owner"
            time.sleep(0.05)
        with pytest.raises(httpx.ConnectError):
            httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"})
    finally:
        if owner.poll() is None:
            owner.kill()
        if anvil_pid and group_alive(anvil_pid):
            os.killpg(anvil_pid, signal.SIGKILL)  # the Anvil this test started (its own group)
        shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.mark.anvil
def test_defence_an_anvil_started_from_a_worker_thread_outlives_that_thread() -> None:
    """Failure (avoided): ``prctl(PR_SET_PDEATHSIG)`` would end Anvil with its owner, but fires
    when the *thread* that started it ends: an Anvil started from a worker thread (a fixture's
    executor, ``asyncio.to_thread``) would die under its owner, which still uses it. Defence: the
    lifeline is a pipe held by the process, which no thread's end closes."""
    anvil = Anvil(accounts=1)
    worker = threading.Thread(target=anvil.start)
    worker.start()
    worker.join(60)
    try:
        assert not worker.is_alive() and anvil.pid is not None
        time.sleep(1.0)
        assert anvil.running() and group_alive(anvil.pid)
        assert anvil.web3().eth.chain_id == 31337
    finally:
        anvil.stop()
    assert not anvil.running()


def test_defence_devnet_down_removes_only_anvils_own_states_folders(tmp_path: Path) -> None:
    """Failure (minor, fixed): ``devnet down``'s guard was the folder's *name* only: a pid file
    naming ``~/notes/anvil-states-2024`` (a stale or hand-edited file, a state dir shared with
    another checkout) got that folder removed, wherever it was. Defence: only a direct child of the
    temporary folder, where `Anvil` makes them."""
    victim = tmp_path / "notes" / f"{ANVIL_STATES_PREFIX}2024"
    victim.mkdir(parents=True)
    (victim / "thesis.txt").write_text("x")
    state = tmp_path / "devnet"
    state.mkdir()
    (state / "devnet.pid").write_text(json.dumps({"pid": 0, "anvilPid": 0, "anvilStates": str(victim)}))
    subprocess.run([sys.executable, "-c", CLI, "down", "--state-dir", str(state)], check=True, timeout=60)
    assert (victim / "thesis.txt").exists()
