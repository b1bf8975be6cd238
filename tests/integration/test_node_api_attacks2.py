"""Second adversarial review of the node's HTTP API: the attacks it found, each now closed, with
a control showing the honest path.

Setup as in ``test_node_attacks.py``: the real node service (admission, billing, worker, redeemer,
SQLite, embedded store, HTTP app over ASGI) on the FAKE executor and chain of ``node_fixtures``.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import rfc8785
from eth_account import Account
from node_fixtures import FakeExecutor, FakeNode, make_fake_node
from supernet.node.agents.chat import ChatAgent
from supernet.node.service.config import NodeSettings
from supernet.node.service.identity import load_account
from supernet.node.service.redeemer import Redeemer, RedeemPolicy
from supernet.node.service.runner import NodeService
from supernet.sdk.agents.input_schema import input_problem
from supernet.sdk.chain.receipts import input_hash

FEE = 10**12


async def _node(tmp_path: Path, **settings: Any) -> FakeNode:
    return await make_fake_node(tmp_path / "node", batch={"max_size": 1, "max_age_s": 0.05}, **settings)


async def _close(node: FakeNode) -> None:
    await node.http.aclose()
    await node.service.cleanup()
    await node.store.aclose()


async def _finish(node: FakeNode, task_id: str) -> str:
    ctx = node.service.ctx
    assert ctx is not None
    await ctx.worker.wait(task_id)
    task = ctx.db.task(task_id)
    assert task is not None
    return task.status.value


async def _redeem_on_withdrawal(node: FakeNode, user: str) -> int:
    """The user asks to withdraw: the node redeems all it can; returns what it got."""
    ctx = node.service.ctx
    assert ctx is not None
    node.chain.closing[user] = int(time.time()) + 3600
    await Redeemer(ctx.db, node.chain, 3600, RedeemPolicy(min_amount_wei=1)).redeem_once()
    return node.chain.redeemed_amounts.get(user, 0)


# ------------------------------------------------------------------------------------------------
# USER: failed tasks queued ahead of done tasks make the done tasks' vouchers unredeemable
# ------------------------------------------------------------------------------------------------


async def test_failed_tasks_ahead_no_longer_make_done_tasks_free(tmp_path: Path) -> None:
    """k tasks that will fail (an input the agent refuses at run time: the documented known gap,
    here the fake's ``fail_on``) are submitted first, then k real tasks, while all are queued. The
    real tasks' vouchers are for (k+1)F..2kF (the failing ones counted as billed while queued); once
    the k failures dropped out of ``billed``, the done fees were kF and every done voucher above
    it, so nothing was redeemable: k done tasks, 0 wei. Then a done task's voucher was redeemable
    once every task sent before it was finished (2kF: the failed fees as credit, lost to a user who
    left: tests/unit/test_review_payments_many_nodes.py). Now the largest voucher within the done
    fees is collected, whichever task it came with: the kth failed task's (kF), exactly the k done
    tasks; the next done task's own voucher, (k+1)F, is exactly what is owed then."""
    node = await _node(tmp_path)
    try:
        k = 2
        attacker = Account.create()
        node.chain.deposits[attacker.address] = 10 * FEE
        node.executor.gate = asyncio.Event()
        node.executor.fail_on = "FAILME"
        ids = []
        inputs = [f"FAILME {i}" for i in range(k)] + [f"real work {i}" for i in range(k)]
        for i, text in enumerate(inputs):
            r = await node.http.post(
                "/v1/tasks", json=node.body(text, user=attacker, cumulative=(i + 1) * FEE)
            )
            assert r.status_code == 202, r.text
            ids.append(r.json()["id"])
        node.executor.gate.set()
        statuses = [await _finish(node, t) for t in ids]
        assert statuses == ["failed"] * k + ["done"] * k
        ctx = node.service.ctx
        assert ctx is not None
        assert ctx.db.billed(attacker.address, done_only=True) == k * FEE  # k tasks done and owed
        assert ctx.db.redeemable_voucher(attacker.address)[0] == k * FEE  # type: ignore[index]
        # the next task's voucher is priced without the failed fees: billed + fee = (k + 1)F
        nxt = await node.http.post(
            "/v1/tasks", json=node.body("one more", user=attacker, cumulative=(k + 1) * FEE)
        )
        assert nxt.status_code == 202 and await _finish(node, nxt.json()["id"]) == "done", nxt.text
        assert ctx.db.redeemable_voucher(attacker.address)[0] == (k + 1) * FEE  # type: ignore[index]
        assert await _redeem_on_withdrawal(node, attacker.address) == (k + 1) * FEE  # k + 1 done, paid

        # control: the same k real tasks without failures ahead of them are paid in full
        honest = Account.create()
        node.chain.deposits[honest.address] = 10 * FEE
        for i in range(k):
            r = await node.http.post(
                "/v1/tasks", json=node.body(f"w{i}", user=honest, cumulative=(i + 1) * FEE)
            )
            assert r.status_code == 202 and await _finish(node, r.json()["id"]) == "done"
        assert await _redeem_on_withdrawal(node, honest.address) == k * FEE
    finally:
        await _close(node)


async def test_a_restart_refusal_ahead_no_longer_makes_a_done_task_free(tmp_path: Path) -> None:
    """The same without any failing input: task A (short deadline) and task B (long deadline, voucher
    2F) are queued when the node restarts after A's deadline. Resume refuses A (unbilled) and runs B;
    B's voucher (2F) was above the done fees (F), so B was never redeemed. Now the largest voucher
    within the done fees is collected: A's (F), exactly B's fee; nothing of the refused A is."""
    node = await _node(tmp_path)
    data_dir = node.service.settings.data_dir
    user = Account.create()
    node.chain.deposits[user.address] = 10 * FEE
    node.executor.gate = asyncio.Event()  # the node is busy: both tasks wait
    now = int(time.time())
    a = await node.http.post("/v1/tasks", json=node.body("a", user=user, cumulative=FEE, deadline=now + 2))
    b = await node.http.post("/v1/tasks", json=node.body("b", user=user, cumulative=2 * FEE))
    assert a.status_code == 202 and b.status_code == 202, (a.text, b.text)
    chain = node.chain
    await _close(node)  # a crash / restart: both stay accepted or running
    await asyncio.sleep(max(0.0, now + 2.2 - time.time()))
    cfg = NodeSettings.load(None, data_dir=data_dir, batch={"max_size": 1, "max_age_s": 0.05})
    from supernet.sdk.store.embedded import in_process_client

    store = in_process_client(data_dir.parent / "store")
    service = NodeService(cfg, FakeExecutor(), load_account(cfg), store, chain)
    await service.setup()
    try:
        ctx = service.ctx
        assert ctx is not None
        await ctx.worker.wait(b.json()["id"])
        ta, tb = ctx.db.task(a.json()["id"]), ctx.db.task(b.json()["id"])
        assert ta is not None and tb is not None
        assert (ta.status.value, tb.status.value) == ("refused", "done")
        assert ctx.db.billed(user.address, done_only=True) == FEE
        chain.closing[user.address] = int(time.time()) + 3600
        await Redeemer(ctx.db, chain, 3600, RedeemPolicy(min_amount_wei=1)).redeem_once()
        assert chain.redeemed_amounts.get(user.address, 0) == FEE  # B paid, the refused A not
    finally:
        await service.cleanup()
        await store.aclose()


# ------------------------------------------------------------------------------------------------
# THIRD PARTY: the signed inputHash does not say whether the input is text or JSON
# ------------------------------------------------------------------------------------------------


async def test_a_string_input_cannot_take_a_json_inputs_signature(tmp_path: Path) -> None:
    """``canonical_input`` used to be the raw UTF-8 of a string and the RFC 8785 text of an object,
    with no type tag: the string that IS the JCS text of the user's object input had the same
    inputHash. A third party that saw a signed body (a proxy, a log, a relay) submitted it first
    with the string input: the node admitted it under the user's task id, billed the user, ran a
    different input (the chat agent takes a string as ONE user message: the JSON text itself) and
    signed a receipt validators accept; the user's own request was then a 409 replay. Closed: every
    input hashes as its RFC 8785 JSON, a string as a JSON string, so the hijacked body is refused
    before anything is stored or billed and the user's request goes through."""
    node = await _node(tmp_path)
    try:
        chat_input = {
            "messages": [
                {"role": "system", "content": "Answer in French."},
                {"role": "user", "content": "hi"},
            ],
            "max_new_tokens": 8,
        }
        as_text = rfc8785.dumps(chat_input).decode()
        assert input_hash(as_text) != input_hash(chat_input)
        assert input_problem(ChatAgent.input_schema, as_text) is None  # the real chat agent's schema takes it
        signed = node.body(chat_input, cumulative=FEE)
        hijacked = {**signed, "input": as_text}
        r = await node.http.post("/v1/tasks", json=hijacked)
        assert r.status_code == 400 and "input" in r.text.lower(), r.text
        ctx = node.service.ctx
        assert ctx is not None
        assert ctx.db.billed(node.user.address) == 0  # nothing billed, nothing stored
        again = await node.http.post("/v1/tasks", json=signed)  # the user's real request
        assert again.status_code == 202, again.text
        assert await _finish(node, again.json()["id"]) == "done"
    finally:
        await _close(node)


# ------------------------------------------------------------------------------------------------
# PEER: the chat stream (and the non-streamed chat answer) has no time limit
# ------------------------------------------------------------------------------------------------


def _chat(node: FakeNode, cumulative: int, stream: bool) -> dict[str, Any]:
    chat = {"model": "fake-model", "messages": [{"role": "user", "content": "hi there"}], "max_tokens": 8}
    signed = node.body({"messages": chat["messages"], "max_new_tokens": 8}, cumulative=cumulative)
    return {**chat, "stream": stream, "supernet": {k: signed[k] for k in ("request", "signature", "voucher")}}


async def test_chat_answers_end_at_max_stream_s(tmp_path: Path) -> None:
    """``api.max_stream_s`` ended ``/v1/tasks/{id}/events`` but not the chat answers, which waited
    on their task with no deadline: a connection stayed open as long as the task ran. Now the
    streamed answer ends with a ``still_running`` error chunk naming the task, and the plain one
    with 504 ``still_running`` (the task goes on; the client polls ``GET /v1/tasks/{id}``).
    Control: once the task is done, a new question is answered in full as before."""
    node = await _node(tmp_path, api={"max_stream_s": 0.25})
    try:
        node.executor.gate = asyncio.Event()
        started = time.monotonic()
        streamed = await node.http.post("/v1/chat/completions", json=_chat(node, FEE, True))
        plain = await node.http.post("/v1/chat/completions", json=_chat(node, 2 * FEE, False))
        assert time.monotonic() - started < 2.0  # both ended near the limit, not with the tasks
        assert streamed.status_code == 200 and '"code": "still_running"' in streamed.text
        assert streamed.text.rstrip().endswith("data: [DONE]")
        assert plain.status_code == 504 and plain.json()["error"]["code"] == "still_running"
        task_id = plain.json()["error"]["taskId"]
        node.executor.gate.set()
        assert await _finish(node, task_id) == "done"  # the task went on
        after = await node.http.post("/v1/chat/completions", json=_chat(node, 3 * FEE, False))
        assert after.status_code == 200, after.text
    finally:
        await _close(node)
