# Adversarial review 4 (2026-12-04) of the bounded receipt promise (commit 99eaea6): a claim opens at
# min(commitBy, request.deadline + MAX_PROMISE_DELAY). The hole it found (the node signing promises
# already due for tasks a user held past the bound) is fixed; its tests are now test_defence_*.
"""Fourth adversarial review: the node's `ReceiptPromise` under the on-chain due time.

The contract bounds a promise by the *user's* signed ``deadline``
(`supernet.sdk.chain.promises.claim_due`). The review found the node signing ``commitBy = now +
promise_s`` whatever that deadline, never stopping a task at it: a user who held a task past
``deadline + MAX_PROMISE_DELAY`` received a promise already due on chain, claimed before the node's
batch landed, and got an honest node slashed (the chain side: contracts/test/Review4.t.sol). Now
`TaskWorker` caps ``commitBy`` at the bound, fails (unbilled) a task that ends within its commit
margin of it, and refuses a task whose worker slot comes after its deadline.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from chain_fixtures import MODEL_ID, Actors
from eth_account import Account
from supernet.node.service.db import Database
from supernet.node.service.models import NewTask, TaskStatus
from supernet.node.service.ports import JobResult
from supernet.node.service.streams import StreamHub
from supernet.node.service.worker import TaskWorker
from supernet.sdk.chain import Contracts
from supernet.sdk.chain.eip712 import TaskRequest
from supernet.sdk.chain.params import ProtocolParams
from supernet.sdk.chain.promises import (
    check_promise_delay,
    claim_due,
    claim_margin,
    claim_window,
    max_promise_delay,
    promise_horizon,
    stake_leaves_at,
)
from supernet.sdk.chain.registry import Operator, Role
from supernet.sdk.store.cids import compute_cid, encode_dag
from test_review_client_verify import CHALLENGE_WINDOW, DOMAIN, UNBONDING, _names, _promise
from test_review_client_verify2 import _at, _contract_accepts, _our_task

DEVNET_UNBONDING = ProtocolParams.devnet().unbonding_period  # 3600: MAX_PROMISE_DELAY 1800 s
PROMISE_S = 600  # the node's default batch.promise_s
MAX_AGE_S = 10  # the node's default batch.max_age_s: its batcher cuts a batch this long after a receipt
ETHER = 10**18

# ---------------------------------------------------------------------------------------- helpers


class _SlowExecutor:
    """An honest executor whose task ends when the test's clock says (a long agent run: tool calls
    waiting for the user's confirmations, a queue behind the user's own tasks)."""

    def __init__(self) -> None:
        self.trace_cid = compute_cid(encode_dag({"trace": "long task"}), "dag-cbor")

    async def run(self, job: Any, push: Any, push_event: Any, on_result: Any = None) -> JobResult:
        result = JobResult(output="done after a long while", trace_cid=self.trace_cid)
        if on_result is not None:
            await on_result(result)
        return result


def _node_task(tmp_path: Path, deadline: int) -> tuple[Database, TaskWorker, Any, str]:
    """A real node database and `TaskWorker` (promises signed in DOMAIN, ``promise_s`` 600) holding
    one admitted task of a user with the given signed ``deadline``."""
    db = Database.open(tmp_path / "node.sqlite3")
    node, user = Account.create(), Account.create()
    task_id = "0x" + "ab" * 32
    db.insert_task(
        NewTask(
            id=task_id,
            user=user.address,
            nonce=1,
            model_id="0x" + "07" * 32,
            agent="chat",
            agent_hash="0x" + "0a" * 32,
            input="hi",
            input_hash="0x" + "0b" * 32,
            max_fee=10**12,
            fee=10**12,
            deadline=deadline,
            signature="0x" + "00" * 65,
            voucher_amount=10**12,
            voucher_signature="0x" + "00" * 65,
        )
    )
    worker = TaskWorker(
        db, _SlowExecutor(), node, StreamHub(), on_receipt=lambda: None, domain=DOMAIN, promise_s=PROMISE_S
    )
    return db, worker, node, task_id


# ---------------------------------------------------------------------------------------- holes


async def test_defence_node_never_signs_a_promise_already_due_on_chain(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """Attack (user against an honest node): the user signs a request with a short ``deadline`` (the
    SDK's 600 s) and keeps the task running past ``deadline + MAX_PROMISE_DELAY`` (tool calls each
    confirmed just before their timeout, or the task queued behind the user's own tasks). Before,
    the node signed ``commitBy = now + promise_s`` anyway: the promise was due on chain the moment
    it was signed, the user claimed before the node's batch and the node was slashed.

    Now (`TaskWorker` with the chain's ``promise_bound_s``): a task that ends within the commit
    margin of the bound fails, unbilled, with no receipt and no promise; one that ends earlier gets
    ``commitBy`` capped at the bound, still at least the margin away; a task whose slot comes after
    its deadline is refused. Control: a task that ends in time gets its full ``promise_s``."""
    deadline = 1_800_000_000 + 600  # what the SDK signs (`supernet.sdk.client.ladder.DEADLINE_S`)
    bound = max_promise_delay(DEVNET_UNBONDING)
    margin = 2 * MAX_AGE_S + 60  # what the runner passes
    clock = {"now": 0.0}
    fake_time = SimpleNamespace(time=lambda: clock["now"], perf_counter=time.perf_counter)
    monkeypatch.setattr("supernet.node.service.worker.time", fake_time)

    async def run(where: str, starts: float, ends: float) -> tuple[Any, Any]:
        """The task gets its worker slot at ``starts`` and its agent finishes at ``ends``."""
        db, worker, _node, task_id = _node_task(tmp_path / where, deadline)
        worker.promise_bound_s, worker.commit_margin_s = bound, margin
        run_agent = worker.executor.run

        async def long_agent(*args: Any, **kw: Any) -> Any:
            clock["now"] = ends
            return await run_agent(*args, **kw)

        worker.executor.run = long_agent  # type: ignore[method-assign]
        clock["now"] = starts
        worker.start(task_id)
        await worker.wait(task_id)
        task, promise = db.task(task_id), db.promise(task_id)
        db.close()
        return task, promise

    task, promise = await run("queued", deadline + 5, deadline + 10)  # its slot came too late
    assert task is not None and task.status == TaskStatus.REFUSED and promise is None
    for where, ends in (("ran-past", deadline + bound + 60), ("too-close", deadline + bound - margin + 1)):
        task, promise = await run(where, deadline - 1, ends)
        assert task is not None and task.status == TaskStatus.FAILED and promise is None, where
        assert "too late to promise" in (task.error or "")
    ends = deadline + bound - 200  # close to the bound: commitBy capped, the margin still ahead
    task, promise = await run("capped", deadline - 1, ends)
    assert task is not None and task.status == TaskStatus.DONE and promise is not None
    assert promise[0] == deadline + bound == claim_due(promise[0], deadline, DEVNET_UNBONDING)
    assert promise[0] - ends >= margin
    task, promise = await run("in-time", deadline - 100, deadline - 90)  # control: the full promise
    assert task is not None and task.status == TaskStatus.DONE and promise is not None
    assert promise[0] == deadline - 90 + PROMISE_S


async def test_defence_client_waits_for_a_capped_promise_and_claims_after_it(tmp_path: Path) -> None:
    """The client side: a task that ended shortly before ``deadline + MAX_PROMISE_DELAY`` comes
    with a promise capped at that bound (the node's rule above). The user's first `Client.verify`,
    seconds after the task, is pending (not "claim"); past the bound an uncommitted receipt is
    "claim the omission", with a claim the contract accepts. (A promise signed past the bound, the
    hole the review found, is no longer made by the node.)"""
    node, _user, task_id, _trace_doc, doc, receipt, client, claims = _our_task(tmp_path)
    request = TaskRequest.from_json(client.state.tasks[task_id].request or {})
    bound = request.deadline + UNBONDING // 2
    ended = bound - 200
    doc["promise"] = _promise(node, receipt, bound)  # capped by the node
    await _pending_then_claimed(client, task_id, claims, pending_at=ended + 5, due=bound)


async def _pending_then_claimed(
    client: Any, task_id: str, claims: list[Any], *, pending_at: int, due: int, leaves_at: int = 0
) -> None:
    """At ``pending_at`` the uncommitted receipt is pending; at ``due`` "commit promise kept" fails
    (not pending), and the claim the client sends is one the contract accepts then."""
    _at(client, pending_at)
    assert (await client.verify(task_id, wait_committed=0)).pending
    _at(client, due)
    rep = await client.verify(task_id, wait_committed=0)
    assert _names(rep)["commit promise kept"] is False and not rep.pending
    await client.claim_omission(task_id)
    await client.aclose()
    assert _contract_accepts(claims[-1], due, leaves_at=leaves_at) is None


# ---------------------------------------------------------------------------------------- defences


def test_defence_claim_due_matches_the_contract_at_the_uint64_edges() -> None:
    """`claim_due` mirrors ``OmissionManager._checkPromise``: the deadline bounds the promise only
    below ``type(uint64).max`` (no overflow: the contract adds in uint256 and skips the bound at
    and above it); a deadline at the edge still bounds; far ``commitBy`` values are not cut by
    a no-deadline request (the client's "commit promise backed" judges those)."""
    mpd = max_promise_delay(UNBONDING)
    edge = 2**64 - 1
    assert claim_due(2**256 - 1, edge - 1, UNBONDING) == edge - 1 + mpd  # above 2**64: fits uint256
    assert claim_due(2**256 - 1, edge, UNBONDING) == 2**256 - 1
    assert claim_due(2**256 - 1, 2**256 - 1, UNBONDING) == 2**256 - 1
    assert claim_due(0, 0, UNBONDING) == 0
    assert claim_due(1000, 0, UNBONDING) == 1000  # mpd > 1000: the commitBy is earlier
    assert claim_due(10**12, 1000, UNBONDING) == 1000 + mpd


def test_defence_node_refuses_a_promise_above_the_bound() -> None:
    """A node configured with ``promise_s`` above MAX_PROMISE_DELAY (its every promise would fall
    due early on chain) refuses to start (`check_promise_delay`); the bound itself is accepted,
    and the devnet default (600 s) fits the devnet chain (3600 s unbonding)."""
    check_promise_delay(max_promise_delay(DEVNET_UNBONDING), DEVNET_UNBONDING)
    check_promise_delay(PROMISE_S, DEVNET_UNBONDING)
    try:
        check_promise_delay(max_promise_delay(DEVNET_UNBONDING) + 1, DEVNET_UNBONDING)
    except ValueError as exc:
        assert "MAX_PROMISE_DELAY" in str(exc)
    else:
        raise AssertionError("a promise_s above the bound was accepted")


def test_defence_an_honest_promise_is_always_backed_by_an_active_stake() -> None:
    """No false "commit promise backed" for an honest node: with its stake active, any promise it
    signs (``promise_s`` <= MAX_PROMISE_DELAY, enforced at start) is due by ``now + unbonding/2``,
    well before the horizon ``now + unbonding - claim_margin`` (margin <= unbonding/10), for every
    unbonding period."""
    for unbonding in (60, 3600, 7 * 86_400, 30 * 86_400):
        now = 1_800_000_000
        staked = Operator(Role.NODE, True, 0, 0, 0, 0, 0, 2 * ETHER, 0)
        horizon = promise_horizon(now, staked, unbonding, ETHER)
        worst = claim_due(now + max_promise_delay(unbonding), 2**64 - 1, unbonding)  # no deadline bound
        assert worst <= horizon and claim_margin(unbonding) <= unbonding // 10


async def test_defence_a_task_ending_in_time_is_pending_not_claimable(tmp_path: Path) -> None:
    """Control for the holes: a task that ends before its deadline has its honest promise due at its
    own ``commitBy`` (the deadline bound is later); the client reports it pending, and a claim
    before ``commitBy`` is refused (``PromiseNotDue``)."""
    node, _user, task_id, _trace_doc, doc, receipt, client, claims = _our_task(tmp_path)
    request = TaskRequest.from_json(client.state.tasks[task_id].request or {})
    ended = request.deadline - 100
    _at(client, ended + 5)
    doc["promise"] = _promise(node, receipt, ended + PROMISE_S)
    rep = await client.verify(task_id, wait_committed=0)
    assert rep.pending
    assert claim_due(ended + PROMISE_S, request.deadline, UNBONDING) == ended + PROMISE_S
    await client.claim_omission(task_id)
    await client.aclose()
    assert _contract_accepts(claims[-1], ended + 5) == "PromiseNotDue"


# ------------------------------------------------------------- a leaving node's promises (review 7)


def test_defence_a_leaving_nodes_claims_open_a_window_before_its_stake_leaves() -> None:
    """`claim_window` with `stake_leaves_at` mirrors ``OmissionManager._checkPromise`` and
    ``ServiceManager.stakeLeavesAt`` (contracts/test/Review7.t.sol, Review10.t.sol): a node that
    cannot commit (not active) with less than one slash of active stake and stake unbonding is
    leaving, and its claims open ``CHALLENGE_WINDOW`` before that stake may go (the later of its
    unbonding and its lock); only the opening moves (the window closes a challenge window after the
    promise's own due time); an active node, a node keeping a slash active, or one with nothing
    unbonding is not hurried, and a promise due earlier keeps its own time."""
    window, ready, lock, floor = 3600, 1_000_000, 1_050_000, 2 * ETHER
    leaving = Operator(Role.NODE, False, 0, 0, ready, lock, 0, 0, 2 * ETHER)
    assert stake_leaves_at(leaving, ETHER, floor) == lock
    assert stake_leaves_at(Operator(Role.NODE, False, 0, 0, ready, 0, 0, 0, 2 * ETHER), ETHER, floor) == ready
    kept = Operator(Role.NODE, True, 0, 0, ready, lock, 0, ETHER, ETHER)
    assert stake_leaves_at(kept, ETHER, floor) == 0
    assert stake_leaves_at(Operator(Role.NODE, True, 0, 0, 0, 0, 0, 0, 0), ETHER, floor) == 0  # nothing left
    active_below_a_slash = Operator(Role.NODE, True, 0, 0, ready, 0, 0, ETHER // 2, ETHER)
    assert stake_leaves_at(active_below_a_slash, ETHER, ETHER // 4) == 0  # it can still commit
    far = 10**9
    assert claim_window(far, 2**64 - 1, UNBONDING, window, lock) == (lock - window, far + window)
    assert claim_window(far, 2**64 - 1, UNBONDING, window, 0) == (far, far + window)
    assert claim_window(5000, 2**64 - 1, UNBONDING, window, lock) == (5000, 5000 + window)
    assert claim_window(2**70, 2**64 - 1, UNBONDING, window, lock) == (lock - window, 2**256 - 1)


async def test_defence_the_client_claims_a_leaving_nodes_far_promise_before_its_stake_is_free(
    tmp_path: Path,
) -> None:
    """The node gave a promise due long after now (a far request deadline), then deregistered: its
    whole stake unbonds. The user's client reads the node's record: before ``stakeLeavesAt -
    CHALLENGE_WINDOW`` the receipt is pending; from then on "commit promise kept" fails and its
    claim is one the contract accepts (it would have refused it before: PromiseNotDue)."""
    node, _user, task_id, _trace_doc, doc, receipt, client, claims = _our_task(tmp_path)
    contracts: Any = client.contracts  # a stand-in (`_client`)
    ready = 200_000
    contracts.service_manager.get_operator = lambda _a: Operator(
        Role.NODE, False, 0, 0, ready, 0, 0, 0, 2 * ETHER
    )
    doc["promise"] = _promise(node, receipt, 10**9)  # far: the request's deadline is 2**40
    due = ready - CHALLENGE_WINDOW  # the window opens then (the promise's own time is 10**9)
    await _pending_then_claimed(client, task_id, claims, pending_at=due - 1, due=due, leaves_at=ready)
    assert _contract_accepts(claims[-1], due - 1, leaves_at=ready) == "PromiseNotDue"


@pytest.mark.anvil
def test_defence_stake_leaves_at_is_what_the_chain_says(chain: Contracts, actors: Actors) -> None:
    """The SDK's mirror and the contract's view agree on a real deployment: 0 for an active node,
    and after ``deregister`` the time its unbonding stake may leave (the unbonding period from the
    deregistration)."""
    sm = chain.as_account(actors.outsider).service_manager
    sm.register_node("http://leaving.invalid", [MODEL_ID], 1, 2 * ETHER)
    slash = chain.omission_manager.slash_amount()
    read = chain.service_manager
    assert read.stake_leaves_at(actors.outsider.address, slash) == 0
    sm.deregister()
    op = read.get_operator(actors.outsider.address)
    assert op.unbonding == 2 * ETHER and op.stake == 0
    floor = read.min_node_stake()
    assert read.stake_leaves_at(actors.outsider.address, slash) == stake_leaves_at(op, slash, floor)
    assert stake_leaves_at(op, slash, floor) == op.unbonding_ready_at > 0
