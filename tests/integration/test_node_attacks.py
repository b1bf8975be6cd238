"""Regression tests of the node service and the user SDK against attacks found in a security review.

Each test once proved an attack worked (``test_attack_*``); each now asserts the attack FAILS, next
to a control showing the honest path still works. Two kinds of setup:

* on the FAKE executor and chain of ``node_fixtures`` (admission, billing, redemption and the HTTP
  surface are the real service code; where an agent matters the real agent class runs; the SDK
  ``Client`` talks to the node's ASGI app): fast, no chain, no model;
* ``@e2e``: a real Anvil with the protocol deployed and ``supernet node run`` (real kernel, real
  default model, embedded store).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from node_fixtures import (
    FAKE_MODEL_ID,
    FakeExecutor,
    FakeNode,
    NodeProcess,
    make_fake_node,
    node_on_anvil,
    rewriting_bodies,
    signed_task,
)
from supernet.node.agents.chat import ChatAgent
from supernet.node.service.ports import Job, JobResult, TokenSink
from supernet.node.service.redeemer import Redeemer, RedeemPolicy
from supernet.sdk.agents.input_schema import input_problem
from supernet.sdk.chain import Contracts, Deployment
from supernet.sdk.chain.anvil import Anvil, dev_account
from supernet.sdk.chain.eip712 import Voucher, sign_voucher
from supernet.sdk.chain.payments import Channel
from supernet.sdk.chain.receipts import Receipt, input_hash, output_hash, sign_receipt, trace_hash
from supernet.sdk.client.answer import AnswerMismatchError
from supernet.sdk.client.client import Client
from supernet.sdk.client.ladder import DEFAULT_MAX_FEE
from supernet.sdk.client.read_grant import ReadGrantAuth
from supernet.sdk.client.routing import Probe, rank
from supernet.sdk.client.streaming import stream_problem
from supernet.sdk.client.types import ClientError, NodeChoice
from supernet.sdk.client.verify import check_receipt
from supernet.sdk.store.cids import compute_cid, encode_dag

FEE = 10**12  # the fake node's default price (pricing.task_fee_wei)


async def _node(tmp_path: Path, executor: FakeExecutor | None = None) -> FakeNode:
    node = await make_fake_node(tmp_path / "node", batch={"max_size": 1, "max_age_s": 0.05})
    if executor is not None:  # swap the executor in every part that holds it
        node.executor = executor
        node.service.executor = executor
        ctx = node.service.ctx
        assert ctx is not None
        ctx.executor = executor
        ctx.worker.executor = executor
        ctx.auth.executor = executor
    return node


async def _close(node: FakeNode) -> None:
    await node.http.aclose()
    await node.service.cleanup()
    await node.store.aclose()


async def _wait(node: FakeNode, task_id: str, user: Any = None) -> dict[str, Any]:
    ctx = node.service.ctx
    assert ctx is not None
    await ctx.worker.wait(task_id)
    task = ctx.db.task(task_id)
    assert task is not None
    return {"status": task.status.value, "output": task.output, "error": task.error}


# ------------------------------------------------------------------------------------------------
# USER: a voucher above billed + fee (never redeemable) is refused at admission
# ------------------------------------------------------------------------------------------------


def _stored(node: FakeNode, user: str) -> tuple[int, int, int]:
    """What the node holds of ``user``: tasks, vouchers, last nonce."""
    ctx = node.service.ctx
    assert ctx is not None
    tasks = ctx.db._all("SELECT COUNT(*) AS n FROM tasks WHERE user = ?", (user,))[0]["n"]
    vouchers = ctx.db._all("SELECT COUNT(*) AS n FROM vouchers WHERE user = ?", (user,))[0]["n"]
    return int(tasks), int(vouchers), ctx.db.last_nonce(user)


async def test_overvoucher_is_refused(tmp_path: Path) -> None:
    """Redemption only takes a voucher up to the fees of done tasks, so admission now requires the
    voucher to be exactly ``billed + fee``: ``billed + fee + 1`` (which would never be redeemed,
    making the task free) and ``billed + fee - 1`` are refused with 402 naming the amount expected,
    and nothing is stored. Control: exact vouchers are admitted and every one is redeemed."""
    node = await _node(tmp_path)
    try:
        ctx = node.service.ctx
        assert ctx is not None
        user = Account.create()
        node.chain.deposits[user.address] = FEE + 1
        for wrong in (FEE + 1, FEE - 1):
            r = await node.http.post(
                "/v1/tasks", json=node.body("please do this work", user=user, cumulative=wrong)
            )
            assert r.status_code == 402, r.text
            err = r.json()["error"]
            assert err["code"] == "payment_required"
            assert f"exactly {FEE}" in err["message"] and err["requiredCumulative"] == str(FEE)
            assert _stored(node, user.address) == (0, 0, -1)  # nothing stored, nonce not used
        assert node.executor.runs == []

        # control: the exact voucher is admitted, done, and redeemed once the user closes
        r = await node.http.post(
            "/v1/tasks", json=node.body("please do this work", user=user, cumulative=FEE)
        )
        assert r.status_code == 202, r.text
        done = await _wait(node, r.json()["id"])
        assert done["status"] == "done" and done["output"] == "echo: please do this work"
        assert ctx.db.redeemable_voucher(user.address) is not None

        # a long-lived account: every task's voucher is billed + fee; the node redeems all n fees
        n = 3
        node.chain.deposits[user.address] = 10 * FEE
        for _ in range(n - 1):
            billed = ctx.db.billed(user.address)
            over = node.body("more work", user=user, cumulative=billed + FEE + 1)
            r = await node.http.post("/v1/tasks", json=over)
            assert r.status_code == 402, r.text
            body = node.body("more work", user=user, cumulative=billed + FEE)
            r = await node.http.post("/v1/tasks", json=body)
            assert r.status_code == 202, r.text
            assert (await _wait(node, r.json()["id"]))["status"] == "done"
        node.chain.closing[user.address] = int(time.time()) + 3600
        redeemer = Redeemer(ctx.db, node.chain, 3600, RedeemPolicy(min_amount_wei=1))
        await redeemer.redeem_once()
        assert ctx.db.billed(user.address, done_only=True) == n * FEE
        assert node.chain.redeemed_amounts.get(user.address, 0) == n * FEE  # every task paid
    finally:
        await _close(node)


# ------------------------------------------------------------------------------------------------
# USER: an input the agent always refuses is refused at admission (nothing stored, nothing run)
# ------------------------------------------------------------------------------------------------


class RealChatAgentExecutor(FakeExecutor):
    """FAKE kernel that runs the REAL ChatAgent up to its LLM call (an LLM call here would be a
    test bug: the attack input fails before it)."""

    async def run(
        self, job: Job, on_token: TokenSink, on_event: Any = None, on_result: Any = None
    ) -> JobResult:
        self.runs.append(job.task_id)

        class _LLM:
            async def chat(self, *a: Any, **k: Any) -> Any:
                raise AssertionError("not reached")

        await ChatAgent().run(SimpleNamespace(llm=_LLM()), job.input)  # type: ignore[arg-type]
        raise AssertionError("not reached")

    def agent_input_schema(self, agent: str) -> Any:
        return ChatAgent.input_schema  # the node checks the real schema at admission


async def test_input_the_chat_agent_refuses_is_refused_at_admission(tmp_path: Path) -> None:
    """``tools`` with a non-text ``response_format`` always failed in the chat agent, unbilled, so
    one fee of deposit admitted unbounded stored, run tasks. The chat agent's published input
    schema now rejects it, so admission refuses it (400 ``input_schema_mismatch`` naming the
    field), nothing is stored and nothing runs. Control: the same tools without a response_format,
    or with ``tool_choice: "none"``, match the schema."""
    node = await _node(tmp_path, RealChatAgentExecutor())
    try:
        ctx = node.service.ctx
        assert ctx is not None
        user = Account.create()
        node.chain.deposits[user.address] = FEE
        padding = "A" * (ctx.settings.api.max_input_chars - 400)
        tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
        attack = {
            "messages": [{"role": "user", "content": padding}],
            "tools": tools,
            "response_format": {"type": "json_object"},
        }
        assert input_problem(ChatAgent.input_schema, attack) == "at response_format/type: 'text' was expected"
        for _ in range(5):
            r = await node.http.post("/v1/tasks", json=node.body(attack, user=user, cumulative=FEE))
            assert r.status_code == 400, r.text
            err = r.json()["error"]
            assert err["code"] == "input_schema_mismatch" and "response_format" in err["message"], err
        assert node.executor.runs == []
        assert _stored(node, user.address) == (0, 0, -1)
        # controls: inputs the agent accepts still match the published schema
        ok_inputs = [
            {"messages": [{"role": "user", "content": "hi"}], "tools": tools},
            {**attack, "tool_choice": "none"},
            {**attack, "response_format": {"type": "text"}},
            {"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_object"}},
        ]
        for ok in ok_inputs:
            assert input_problem(ChatAgent.input_schema, ok) is None, ok
    finally:
        await _close(node)


# ------------------------------------------------------------------------------------------------
# NODE: the SDK's receipt check compares modelId and fee with what the user signed
# ------------------------------------------------------------------------------------------------


def _receipt_doc(node: Any, user: Any, model: bytes, fee: int) -> tuple[dict[str, Any], bytes]:
    task_id = "0x" + "ab" * 32
    cid = compute_cid(encode_dag({"task": task_id, "output": "5"}), "dag-cbor")
    receipt = Receipt(
        request_hash=bytes.fromhex(task_id[2:]),
        user=user.address,
        model_id=model,
        input_hash=input_hash("what is 2+2?"),
        output_hash=output_hash("5"),
        trace_hash=trace_hash(cid),
        fee=fee,
    )
    leaf = receipt.leaf()
    doc = {
        "taskId": task_id,
        "node": node.address,
        "receipt": receipt.to_json(),
        "leaf": "0x" + leaf.hex(),
        "signature": "0x" + sign_receipt(receipt, node).hex(),
        "traceCid": cid,
        "batch": {"chainBatchId": 1, "proof": [], "index": 0},
    }
    return doc, leaf


def test_sdk_refuses_receipt_with_other_model_or_fee_above_max_fee() -> None:
    """`check_receipt` (what `Client.verify` runs, with the model and fee the client signed) fails
    a receipt naming another model than the signed ``modelId`` and one whose fee is above the
    signed ``maxFee`` (and not the agreed fee). Control: the receipt of the signed model at the
    agreed fee passes."""
    node, user = Account.create(), Account.create()
    signed_model = hashlib.sha256(b"big-model").digest()
    cheap_model = hashlib.sha256(b"cheap-model").digest()

    def check(model: bytes, fee: int) -> Any:
        doc, leaf = _receipt_doc(node, user, model, fee)
        return check_receipt(
            doc,
            task_id=doc["taskId"],
            user=user.address,
            node=node.address,
            task_input="what is 2+2?",
            output="5",
            onchain_batch=lambda _: (node.address, leaf, 1),
            trace_loaded=True,
            model_id="0x" + signed_model.hex(),
            max_fee=FEE,
            fee=FEE,
        )

    cheat = check(cheap_model, 1000 * FEE)
    assert not cheat.ok
    assert {c.name for c in cheat.failed()} == {"model id", "fee within maxFee", "fee"}
    assert {c.name for c in check(cheap_model, FEE).failed()} == {"model id"}
    assert {c.name for c in check(signed_model, FEE + 1).failed()} == {"fee within maxFee", "fee"}
    honest = check(signed_model, FEE)
    assert honest.ok, honest.failed()
    assert {"model id", "fee within maxFee", "fee"} <= {c.name for c in honest.checks}


# ------------------------------------------------------------------------------------------------
# SDK client against a cheating node (the node's own service code, with a lying part swapped in)
# ------------------------------------------------------------------------------------------------


class _Payments:
    def __init__(self, chain: Any, user: str) -> None:
        self.chain, self.user, self.deposits_made = chain, user, []

    def channel(self, user: str, node: str) -> Channel:
        redeemed = self.chain.redeemed_amounts.get(user, 0)
        return Channel(self.chain.deposits.get(user, 0) + redeemed, redeemed, self.chain.closing.get(user, 0))

    def deposit(self, node: str, amount: int) -> None:
        self.deposits_made.append(amount)
        self.chain.deposits[self.user] = self.chain.deposits.get(self.user, 0) + amount


def _client(node: FakeNode, user: Any, state_dir: Path, app: Any = None) -> tuple[Client, _Payments]:
    payments = _Payments(node.chain, user.address)
    contracts = SimpleNamespace(
        account=user,
        domain=node.chain.domain,
        payments=payments,
        task_manager=SimpleNamespace(batch=lambda i: None, call=lambda name: 3_000),  # QUORUM_BPS
        # the FAKE chain's registry: the node is an active, staked node (`Client._registered`); no
        # validator has declared the models it checks (coverage unknown: any model is signed)
        service_manager=SimpleNamespace(
            get_node=lambda a: SimpleNamespace(
                endpoint="http://node",  # the URL the tests name it by (read grants go only there)
                active=True,
                registered=True,
                price_per_token=0,
                stake=10**18,
                model_ids=[bytes.fromhex(FAKE_MODEL_ID[2:])],
            ),
            validators=lambda: [],
        ),
    )
    client = Client(contracts, state_dir=state_dir)  # type: ignore[arg-type]
    client.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app or node.service.app), timeout=30)
    return client, payments


async def test_fresh_client_refuses_unproven_billed(tmp_path: Path) -> None:
    """A client that has never seen the account no longer takes the node's ``billed`` on its word:
    the base of its voucher is at most what the node proves with the user's own signed voucher
    (or what was redeemed on chain). A node claiming ``billed`` = 5 ETH, with no proof or with a
    voucher signed by another key, is refused: nothing is deposited, signed or stored. Control:
    a fresh state directory against an honest node with real history re-bases on the proven
    total and deposits one fee."""
    node = await _node(tmp_path)
    try:
        ctx = node.service.ctx
        assert ctx is not None
        user = Account.create()
        lie = 5 * 10**18
        app = node.service.app
        forged = sign_voucher(
            Voucher(user=user.address, node=node.address, cumulative_amount=lie),
            node.chain.domain,
            Account.create(),
        )
        claims: list[dict[str, Any]] = [
            {"user": user.address, "lastNonce": 0, "billed": str(lie), "redeemed": "0"},
            {
                "user": user.address,
                "lastNonce": 0,
                "billed": str(lie),
                "redeemed": "0",
                "voucher": {"cumulativeAmount": str(lie), "signature": "0x" + forged.hex()},
            },
        ]
        for i, claim in enumerate(claims):

            async def lying(scope: Any, receive: Any, send: Any, claim: dict[str, Any] = claim) -> None:
                if scope["type"] == "http" and scope["path"].startswith("/v1/accounts/"):
                    body = json.dumps(claim).encode()
                    headers = [(b"content-type", b"application/json")]
                    await send({"type": "http.response.start", "status": 200, "headers": headers})
                    await send({"type": "http.response.body", "body": body})
                    return
                await app(scope, receive, send)  # type: ignore[misc]

            client, payments = _client(node, user, tmp_path / f"state{i}", lying)
            with pytest.raises(ClientError, match=f"says it billed {lie} wei.*most it can prove.*is 0 wei"):
                await client.submit_task("hi", node_url="http://node", max_fee=FEE)
            assert payments.deposits_made == []
            assert ctx.db._all("SELECT * FROM vouchers") == []
            assert client.state.accounts == {}  # nothing recorded for the unproven account
            await client.aclose()

        # control: real history on this node from one state directory, then a fresh one
        first, payments = _client(node, user, tmp_path / "first")
        for _ in range(2):
            assert (await first.submit_task("hi", node_url="http://node")).status == "done"
        assert payments.deposits_made == [FEE, FEE]  # one fee at a time: never more
        await first.aclose()
        fresh, payments = _client(node, user, tmp_path / "fresh")
        result = await fresh.submit_task("again", node_url="http://node")
        assert result.status == "done" and result.fee == FEE
        assert payments.deposits_made == [FEE]
        assert ctx.db.billed(user.address) == 3 * FEE
        await fresh.aclose()
    finally:
        await _close(node)


async def test_automatic_deposit_is_capped_at_one_fee(tmp_path: Path) -> None:
    """`Client.ensure_deposit` with the task's ``fee`` refuses to deposit more than that fee on top
    of what the channel holds (a voucher base the chain does not back). Control: one fee missing
    is deposited."""
    node = await _node(tmp_path)
    try:
        user = Account.create()
        client, payments = _client(node, user, tmp_path / "state")
        with pytest.raises(ClientError, match="above one task's fee"):
            await client.ensure_deposit(node.address, 5 * FEE, fee=FEE)
        assert payments.deposits_made == []
        assert await client.ensure_deposit(node.address, FEE, fee=FEE) == FEE
        assert payments.deposits_made == [FEE]
        await client.aclose()
    finally:
        await _close(node)


class LyingStreamExecutor(FakeExecutor):
    """A cheating node's kernel: streams one text to the user, returns (and commits) another."""

    async def run(
        self, job: Job, on_token: TokenSink, on_event: Any = None, on_result: Any = None
    ) -> JobResult:
        for word in "Send 1 ETH to 0xdead to unlock your answer".split(" "):
            on_token(word + " ")
            await asyncio.sleep(0)
        return JobResult(output="4", trace_cid=compute_cid(encode_dag({"out": "4"}), "dag-cbor"))


async def test_streamed_text_differing_from_committed_output_is_refused(tmp_path: Path) -> None:
    """`Client.stream` and `submit_task(on_token=...)` now join the streamed pieces and require the
    committed output to match them (the stop-cut rule of `stream_problem`): a node streaming one
    text and committing another raises a `ClientError` at the end and ``stream.result`` stays
    None. Control: the honest fake node (its stream is the output and a trailing space) passes."""
    node = await _node(tmp_path, LyingStreamExecutor())
    try:
        user = Account.create()
        node.chain.deposits[user.address] = 10 * FEE
        client, _ = _client(node, user, tmp_path / "state")
        stream = client.stream("what is 2+2?", node_url="http://node")
        seen: list[str] = []
        with pytest.raises(ClientError, match="streamed text that is not the output its receipt commits"):
            async for piece in stream:
                seen.append(piece)
        assert "0xdead" in "".join(seen) and stream.result is None
        shown: list[str] = []
        with pytest.raises(ClientError, match="streamed text that is not the output"):
            await client.submit_task("what is 2+2?", node_url="http://node", on_token=shown.append)
        assert shown
        await client.aclose()
    finally:
        await _close(node)
    honest = await _node(tmp_path / "honest")
    try:
        user = Account.create()
        honest.chain.deposits[user.address] = 10 * FEE
        client, _ = _client(honest, user, tmp_path / "state2")
        stream = client.stream("what is 2+2?", node_url="http://node")
        seen = [piece async for piece in stream]
        assert stream.result is not None and stream.result.output == "echo: what is 2+2?"
        assert "".join(seen) == "echo: what is 2+2? "
        shown = []
        result = await client.submit_task("hello", node_url="http://node", on_token=shown.append)
        assert result.output == "echo: hello" and "".join(shown) == "echo: hello "
        await client.aclose()
    finally:
        await _close(honest)


async def test_an_output_the_receipt_does_not_commit_is_refused_at_once(tmp_path: Path) -> None:
    """Attack: the node runs the task honestly (its receipt and trace commit the real output, so
    validators find nothing) but reports another output to the user (the task read and the
    stream's ``done`` event), rewritten to the same length. Before, `submit_task` returned it and
    only a later `Client.verify` compared it with the receipt. Defence: `Client.checked` compares
    the answer with the signed receipt before returning (`supernet.sdk.client.answer`), for
    ``submit_task`` and ``stream``; the record says ``answer_mismatch``."""
    node = await _node(tmp_path)
    try:
        user = Account.create()
        node.chain.deposits[user.address] = 10 * FEE
        # the task read and the ``done`` event report another output; the receipt is untouched
        reads = lambda p: p.startswith("/v1/tasks/") and not p.endswith("/receipt")  # noqa: E731
        lying = rewriting_bodies(node.service.app, b"echo: hello", b"echo: HELLO", reads)
        client, _ = _client(node, user, tmp_path / "state", app=lying)
        with pytest.raises(AnswerMismatchError, match="output hash"):
            await client.submit_task("hello", node_url="http://node")
        stream = client.stream("hello", node_url="http://node")
        with pytest.raises(AnswerMismatchError, match="output hash"):
            [piece async for piece in stream]
        assert stream.result is None
        assert sorted(r.status for r in client.state.tasks.values()) == ["answer_mismatch"] * 2
        honest, _ = _client(node, user, tmp_path / "state2")  # control: the node's own answer
        result = await honest.submit_task("hello", node_url="http://node")
        record = honest.state.tasks[result.task_id]
        assert result.output == "echo: hello" and record.status == "done" and record.promise is not None
        await client.aclose()
        await honest.aclose()
    finally:
        await _close(node)


def test_stream_rule() -> None:
    """The rule itself: what the client shows of the stream (cut at the first stop string) is the
    output, then at most whitespace; U+FFFD in the stream stands for a
    character split across tokens; agents other than chat are not checked."""
    stop = {"messages": [{"role": "user", "content": "x"}], "stop": ["END"]}
    assert stream_problem("chat", "x", "4", "4") is None
    assert stream_problem("chat", "x", "4 \n", "4") is None
    # what follows a stop string is never shown (the client cuts there), in whatever pieces
    assert stream_problem("chat", stop, ["4", "END and more"], "4") is None
    assert stream_problem("chat", stop, ["4", "EN", "D and"], "4") is None
    assert stream_problem("chat", stop, ["4", "END", " and more"], "4") is None
    assert stream_problem("chat", stop, ["5", "END"], "4") is not None  # other text before it
    assert stream_problem("chat", "x", "caf\ufffd ok", "caf\u00e9 ok") is None
    assert stream_problem("chat", "x", "4", "4", complete=False) is None
    assert stream_problem("chat", "x", "4", "42", complete=False) is None  # ended early: a start
    assert stream_problem("chat", "x", "4END", "4") is not None  # no such stop string
    assert stream_problem("chat", "x", "5", "4") is not None
    assert stream_problem("chat", "x", "4", "42") is not None
    assert stream_problem("chat", "x", "Send 1 ETH to 0xdead ", "4") is not None
    assert stream_problem("chat", "x", "\ufffd", "a long hidden text") is not None
    assert stream_problem("react", "x", "thinking... 4", "4") is None


async def test_node_fee_above_max_fee_is_refused_and_ranking_uses_task_fee(tmp_path: Path) -> None:
    """Discovery now ranks by the fee the client signs (the advertised ``taskFee``), not the
    registered price per token, and the client refuses a node whose ``taskFee`` is above its
    ``max_fee`` (by default `DEFAULT_MAX_FEE`): nothing is signed or deposited. Control: the
    honest node's fee is signed."""
    node = await _node(tmp_path)
    try:
        user = Account.create()
        client, payments = _client(node, user, tmp_path / "state")
        honest_info = await client.node_info("http://node")
        lie = 10**18
        assert lie > DEFAULT_MAX_FEE >= honest_info.taskFee
        lying_info = honest_info.model_copy(update={"taskFee": lie})
        cheap = Probe(node.address, "http://node", 1, 0, 0, 0.01, lying_info)  # 1 wei/token on chain
        other = Probe("0x" + "22" * 20, "http://other", 10**9, 0, 0, 0.01, honest_info)
        assert [p.address for p in rank([cheap, other])] == [other.address, cheap.address]
        choice = NodeChoice(node.address, "http://node", 1, 0, lying_info, 0, 0.01)
        with pytest.raises(ClientError, match=f"fee {lie} is above the default max_fee {DEFAULT_MAX_FEE}"):
            await client._prepare_for(choice, "hi", "chat", None, None, 0)
        with pytest.raises(ClientError, match=f"fee {lie} is above max_fee {FEE}"):
            await client._prepare_for(choice, "hi", "chat", None, FEE, 0)
        assert payments.deposits_made == [] and client.state.tasks == {}
        ctx = node.service.ctx
        assert ctx is not None
        assert ctx.db.billed(user.address) == 0
        # control: the honest fee is signed and admitted
        honest = NodeChoice(node.address, "http://node", 1, 0, honest_info, 0, 0.01)
        p = await client._prepare_for(honest, "hi", "chat", None, None, 0)
        assert p.fee == FEE and payments.deposits_made == [FEE]
        await client.send(p)
        assert ctx.db.billed(user.address) == FEE
        await client.aclose()
    finally:
        await _close(node)


# ------------------------------------------------------------------------------------------------
# End to end (real chain, node process, model)
# ------------------------------------------------------------------------------------------------


def e2e(f: Any) -> Any:
    """Marks a test that needs a real Anvil and the real model."""
    return pytest.mark.anvil(pytest.mark.model(pytest.mark.slow(f)))


NODE_KEY_INDEX = 16  # dev accounts other suites do not use
ATTACKER, CONTROL, FAILER = 17, 18, 19


@dataclass
class Net:
    anvil: Anvil
    contracts: Contracts
    deployment: Path
    node: NodeProcess

    def user(self, index: int) -> tuple[LocalAccount, Contracts]:
        account = dev_account(index)
        return account, Contracts.connect(self.anvil.url, Deployment.load(self.deployment), account)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    tmp = tmp_path_factory.mktemp("adversary")
    with node_on_anvil(tmp, NODE_KEY_INDEX) as (anvil, contracts, dep, node):
        yield Net(anvil, contracts, dep, node)


async def _info(http: httpx.AsyncClient, net: Net) -> dict[str, Any]:
    return (await http.get(f"{net.node.url}/v1/node")).json()


def _body(
    net: Net, info: dict[str, Any], user: LocalAccount, task_input: Any, cumulative: int, nonce: int
) -> Any:
    return signed_task(
        user,
        info["address"],
        net.contracts.domain,
        task_input,
        cumulative=cumulative,
        fee=int(info["taskFee"]),
        nonce=nonce,
        model_id=info["models"][0],
        agent_hash=info["agents"]["chat"],
    )


async def _finish(
    http: httpx.AsyncClient, net: Net, info: dict[str, Any], user: LocalAccount, tid: str
) -> Any:
    auth = ReadGrantAuth(user, info["address"], net.contracts.domain)
    for _ in range(600):
        task = (await http.get(f"{net.node.url}/v1/tasks/{tid}", auth=auth)).json()
        if task["status"] in ("done", "failed", "refused"):
            return task
        await asyncio.sleep(0.5)
    raise AssertionError(f"task {tid} did not finish: {net.node.log_tail()}")


@e2e
async def test_overvoucher_is_refused_on_a_real_node(net: Net) -> None:
    """A voucher 1 wei above ``billed + fee`` is refused (402 naming the exact amount), nothing
    runs; the control user who signs exactly ``billed + fee`` is admitted and paid."""
    async with httpx.AsyncClient(timeout=60) as http:
        info = await _info(http, net)
        fee = int(info["taskFee"])
        node = info["address"]
        attacker, attacker_c = net.user(ATTACKER)
        control, control_c = net.user(CONTROL)
        attacker_c.payments.deposit(node, fee + 1)
        control_c.payments.deposit(node, fee)
        r = await http.post(
            f"{net.node.url}/v1/tasks", json=_body(net, info, attacker, "Name a color.", fee + 1, 1)
        )
        assert r.status_code == 402, r.text
        assert r.json()["error"]["requiredCumulative"] == str(fee)
        grant = ReadGrantAuth(attacker, node, net.contracts.domain)
        account = (await http.get(f"{net.node.url}/v1/accounts/{attacker.address}", auth=grant)).json()
        assert account["billed"] == "0" and account["lastNonce"] == -1
        r = await http.post(
            f"{net.node.url}/v1/tasks", json=_body(net, info, control, "Name a color.", fee, 1)
        )
        assert r.status_code == 202, r.text
        task = await _finish(http, net, info, control, r.json()["id"])
        assert task["status"] == "done" and task["output"], task
        deadline = time.monotonic() + 60
        while control_c.payments.channel(control.address, node).redeemed < fee:  # the redeemer works
            assert time.monotonic() < deadline, net.node.log_tail()
            await asyncio.sleep(1)
        assert control_c.payments.channel(control.address, node).redeemed == fee


@e2e
async def test_input_the_agent_refuses_is_refused_on_a_real_node(net: Net) -> None:
    """``tools`` plus a ``json_object`` ``response_format`` is refused at admission (400
    ``input_schema_mismatch``): nothing is stored, run or pinned, the nonce is not used."""
    async with httpx.AsyncClient(timeout=60) as http:
        info = await _info(http, net)
        fee = int(info["taskFee"])
        node = info["address"]
        user, c = net.user(FAILER)
        c.payments.deposit(node, fee)
        attack = {
            "messages": [{"role": "user", "content": "B" * 8000}],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            "response_format": {"type": "json_object"},
        }
        for nonce in range(1, 4):
            r = await http.post(f"{net.node.url}/v1/tasks", json=_body(net, info, user, attack, fee, nonce))
            assert r.status_code == 400, r.text
            err = r.json()["error"]
            assert err["code"] == "input_schema_mismatch" and "response_format" in err["message"], err
        grant = ReadGrantAuth(user, node, net.contracts.domain)
        account = (await http.get(f"{net.node.url}/v1/accounts/{user.address}", auth=grant)).json()
        assert account["billed"] == "0" and account["lastNonce"] == -1
