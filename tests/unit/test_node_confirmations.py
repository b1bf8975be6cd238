"""Privilege groups, confirmations through the API and the persisted audit, on a node service whose
kernel is the real one (access manager, dispatcher, traces in the embedded store) running an agent
that makes only tool calls, so no model is needed: its engine is a STUB that is never asked to
generate (``StubEngine``), and the chain is the FAKE of ``node_fixtures``.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import pytest_asyncio
from eth_account import Account
from eth_account.signers.local import LocalAccount
from node_fixtures import FAKE_MODEL_ID, FakeChain, signed_task
from supernet.node.agents.registry import AgentRegistry
from supernet.node.kernel.access import NodePolicy, PrivilegeGroup
from supernet.node.kernel.errors import AccessDeniedError, ConfirmationRequiredError
from supernet.node.kernel.kernel import Kernel, KernelConfig
from supernet.node.kernel.tools import Tool, ToolRegistry, ToolSpec
from supernet.node.service.config import NodeSettings
from supernet.node.service.db import Database
from supernet.node.service.identity import load_account
from supernet.node.service.kernel_executor import KernelExecutor, access_policy
from supernet.node.service.routes_tasks import task_events
from supernet.node.service.runner import NodeService
from supernet.node.service.streams import StreamEvent
from supernet.sdk.agents import Agent, AgentContext
from supernet.sdk.chain.eip712 import Confirmation, sign_confirmation
from supernet.sdk.client.confirm import confirmation_body
from supernet.sdk.client.read_grant import ReadGrantAuth
from supernet.sdk.store import StoreClient
from supernet.sdk.store.embedded import in_process_client


class PayAgent(Agent):
    """Test agent: tries a tool its group denies, then pays each amount (an irreversible tool)."""

    agent_id = "payer"

    async def run(self, ctx: AgentContext, input: Any) -> str:
        try:
            await ctx.tools.call("echo", {"text": "hi"})
            denied = "echo allowed"
        except AccessDeniedError:
            denied = "echo denied"
        try:
            paid = [await ctx.tools.call("pay", {"amount": a}) for a in input["amounts"]]
        except ConfirmationRequiredError:
            if not input.get("tolerant"):
                raise
            return f"{denied}; not confirmed"
        return f"{denied}; paid {paid}"


class StubEngine:
    """STUB engine: a model id and a lifecycle (the test agent makes no LLM call)."""

    model_id = FAKE_MODEL_ID
    max_batch = 4

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


class StubEmbedder:
    """STUB embedder (the test agent uses no memory)."""

    name = "stub"

    async def embed(self, texts: list[str]) -> np.ndarray:
        return np.zeros((len(texts), 4), dtype=np.float32)


@dataclass
class Node:
    service: NodeService
    chain: FakeChain
    store: StoreClient
    http: httpx.AsyncClient
    user: LocalAccount
    executor: KernelExecutor
    payments: list[int] = field(default_factory=list)

    @property
    def ctx(self) -> Any:
        return self.service.ctx

    def body(self, amounts: list[int], n: int = 1, **extra: Any) -> dict[str, Any]:
        """The signed body of this user's ``n``-th task here."""
        body = signed_task(
            self.user,
            self.service.account.address,
            self.chain.domain,
            {"amounts": amounts, **extra},
            cumulative=n * 10**12,
            agent_hash=self.executor.agent_hash("payer") or "",
        )
        return {**body, "agent": "payer"}


async def make_node(tmp_path: Path, timeout_s: float) -> Node:
    chain = FakeChain()
    user = Account.create()
    chain.deposits[user.address] = 10**18
    store = in_process_client(tmp_path / "store")
    cfg = NodeSettings.load(
        None,
        data_dir=tmp_path / "node",
        access={
            "confirmation_timeout_s": timeout_s,
            "groups": [{"name": "payers", "agents": ["payer"], "tools": ["pay", "calc*"]}],
        },
    )
    payments: list[int] = []

    def pay(args: Mapping[str, Any]) -> str:
        payments.append(int(args["amount"]))
        return f"sent {args['amount']}"

    tools = ToolRegistry()
    schema = {"type": "object"}
    tools.register(Tool(ToolSpec("pay", "Send money (irreversible)", schema, irreversible=True), pay))
    tools.register(Tool(ToolSpec("echo", "Echo", schema, deterministic=True), lambda a: a["text"]))
    agents = AgentRegistry()
    agents.register(PayAgent)
    policy = NodePolicy(**access_policy(cfg.access))
    config = KernelConfig(node_policy=policy, eip712_domain=chain.domain)
    kernel = Kernel(
        StubEngine(), store, config, agents=agents, tools=tools, embedder=StubEmbedder(), params_type=dict
    )
    await kernel.setup()
    executor = KernelExecutor(kernel, "stub", 10**12, Database.open(cfg.data_dir / "node.sqlite3"))
    service = NodeService(cfg, executor, load_account(cfg), store, chain)
    await service.setup()
    assert service.app is not None
    http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=service.app),
        base_url="http://node",
        auth=ReadGrantAuth(user, service.account.address, chain.domain),
    )
    return Node(service, chain, store, http, user, executor, payments)


@pytest_asyncio.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    n = await make_node(tmp_path, timeout_s=30.0)
    yield n
    await n.http.aclose()
    await n.service.cleanup()
    await n.executor.close()
    await n.store.aclose()


async def pending_event(node: Node, task_id: str, count: int = 1) -> dict[str, Any]:
    """The ``count``-th ``confirmation_required`` event of the task's stream."""
    for _ in range(300):
        stream = node.ctx.streams.get(task_id)
        events = [p for p in (stream._pieces if stream else []) if isinstance(p, StreamEvent)]
        if len(events) >= count:
            assert events[count - 1].event == "confirmation_required"
            return dict(events[count - 1].data)
        await asyncio.sleep(0.01)
    raise AssertionError("no confirmation_required event")


async def wait_end(node: Node, task_id: str) -> dict[str, Any]:
    for _ in range(500):
        task = (await node.http.get(f"/v1/tasks/{task_id}")).json()
        if task["status"] in ("done", "failed"):
            return dict(task)
        await asyncio.sleep(0.01)
    raise AssertionError("task did not end")


def db_rows(node: Node) -> dict[str, list[Any]]:
    with sqlite3.connect(node.service.settings.data_dir / "node.sqlite3") as c:
        tables = [r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: sorted(c.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in tables}


def sign(account: LocalAccount, node: Node, task_id: str, action: str) -> dict[str, str]:
    conf = Confirmation(bytes.fromhex(task_id[2:]), bytes.fromhex(action[2:]))
    return {
        "actionHash": action,
        "signature": "0x" + sign_confirmation(conf, node.chain.domain, account).hex(),
    }


async def test_pause_event_confirm_resume_once_and_audit(node: Node) -> None:
    r = await node.http.post("/v1/tasks", json=node.body([5, 7]))
    assert r.status_code == 202, r.text
    task_id = r.json()["id"]
    event = await pending_event(node, task_id)
    assert event["tool"] == "pay" and event["args"] == {"amount": 5}
    assert event["typedData"]["domain"]["chainId"] == node.chain.domain.chain_id
    assert (await node.http.get(f"/v1/tasks/{task_id}")).json()["status"] == "running"  # paused, not failed
    first = await anext(aiter(task_events(node.ctx, task_id)))  # the SSE route's own mapping
    assert first["event"] == "confirmation_required" and json.loads(first["data"]) == event

    url = f"/v1/tasks/{task_id}/confirmations"
    before = db_rows(node)
    intruder = Account.create()
    r = await node.http.post(url, json=sign(intruder, node, task_id, event["actionHash"]))
    assert r.status_code == 403, r.text
    other_task = "0x" + "cd" * 32
    r = await node.http.post(url, json=sign(node.user, node, other_task, event["actionHash"]))
    assert r.status_code == 403  # signed for another task
    r = await node.http.post(url, json=sign(node.user, node, task_id, "0x" + "00" * 32))
    assert r.status_code == 404  # no call waits for that action
    r = await node.http.post(
        f"/v1/tasks/{other_task}/confirmations", json=sign(node.user, node, other_task, "0x" + "00" * 32)
    )
    assert r.status_code == 404
    r = await node.http.post(url, json={"actionHash": event["actionHash"], "signature": "0x12"})
    assert r.status_code == 422
    assert db_rows(node) == before and node.payments == []
    assert node.executor.pending_confirmations(task_id) == [event]

    body = confirmation_body(task_id, event, node.chain.domain, node.user)  # what Client.confirm posts
    r = await node.http.post(url, json=body)
    assert r.status_code == 200, r.text
    assert r.json() == {"taskId": task_id, "actionHash": event["actionHash"], "resumed": True}
    second = await pending_event(node, task_id, 2)
    assert second["args"] == {"amount": 7}
    again = await node.http.post(url, json=body)  # a replayed confirmation: harmless
    assert again.status_code == 200 and again.json()["resumed"] is False
    assert node.payments == [5]
    r = await node.http.post(url, json=confirmation_body(task_id, second, node.chain.domain, node.user))
    assert r.status_code == 200
    done = await wait_end(node, task_id)
    assert done["status"] == "done", done
    assert done["output"] == "echo denied; paid ['sent 5', 'sent 7']"
    assert node.payments == [5, 7]
    r = await node.http.post(url, json=body)  # after the task: nothing waits any more
    assert r.status_code == 404 and node.payments == [5, 7]

    # the audit: persisted, in order, readable by the task's user only
    audit = (await node.http.get(f"/v1/tasks/{task_id}/audit")).json()
    assert [(a["action"], a["target"], a["allowed"]) for a in audit] == [
        ("tool", "echo", False),
        ("confirmation.wait", "pay", True),
        ("tool", "pay", True),
        ("confirmation.wait", "pay", True),
        ("tool", "pay", True),
    ]
    assert all(a["agent"] == "payer" for a in audit)
    stranger = ReadGrantAuth(Account.create(), node.service.account.address, node.chain.domain)
    r = await node.http.get(f"/v1/tasks/{task_id}/audit", auth=stranger)
    assert r.status_code == 403
    r = await httpx.AsyncClient(transport=node.http._transport, base_url="http://node").get(
        f"/v1/tasks/{task_id}/audit"
    )
    assert r.status_code == 401

    # the full event stream replays the pauses before the tokens' end
    events = []
    async with node.http.stream("GET", f"/v1/tasks/{task_id}/events") as resp:
        async for line in resp.aiter_lines():
            if line.startswith("event:"):
                events.append(line.split(":", 1)[1].strip())
    assert events == ["confirmation_required", "confirmation_required", "done"]

    # the trace records the denied echo as the AccessDenied error kind
    trace = await node.store.get_dag(done["traceCid"])
    kinds = [(e["kind"], e.get("syscall"), e.get("name")) for e in trace["events"]]
    assert kinds == [("error", "tool", None), ("tool", None, "pay"), ("tool", None, "pay")]
    assert trace["events"][0]["error"].startswith("AccessDeniedError")
    assert [t["name"] for t in trace["tools"]] == ["pay"]  # the group's tools, as validators replay them

    # The confirmed calls carry the user's signatures, and a validator's replay (in the deployment's
    # domain) runs them again only because they verify: an honest node is never accused for them.
    from supernet.node.kernel.replay import replay

    signed = [e["confirmation"] for e in trace["events"] if e["kind"] == "tool"]
    assert signed == [
        body["signature"],
        confirmation_body(task_id, second, node.chain.domain, node.user)["signature"],
    ]
    result = await replay(trace, PayAgent, tokenizer=None, params_type=dict, domain=node.chain.domain)
    assert result.divergences == [] and result.output == done["output"]
    # ... and not without the domain (a node without one refuses irreversible calls), nor with a
    # confirmation the node made up: signed by someone else, or moved to another call
    result = await replay(trace, PayAgent, tokenizer=None, params_type=dict)
    assert result.divergences and result.divergences[0].index == 1
    forged = json.loads(json.dumps(trace, default=str))
    forged = {**trace, "events": [dict(e) for e in trace["events"]]}
    forged["events"][1]["confirmation"] = sign(Account.create(), node, task_id, event["actionHash"])[
        "signature"
    ]
    result = await replay(forged, PayAgent, tokenizer=None, params_type=dict, domain=node.chain.domain)
    assert result.divergences and result.divergences[0].index == 1


async def test_unanswered_pause_fails_the_call_after_the_timeout(tmp_path: Path) -> None:
    node = await make_node(tmp_path, timeout_s=0.3)
    try:
        r = await node.http.post("/v1/tasks", json=node.body([9]))
        task_id = r.json()["id"]
        await pending_event(node, task_id)
        done = await wait_end(node, task_id)
        assert done["status"] == "failed"
        assert "ConfirmationRequiredError: tool pay is irreversible: no confirmation" in done["error"]
        assert node.payments == []
        audit = (await node.http.get(f"/v1/tasks/{task_id}/audit")).json()
        assert audit[-1]["action"] == "tool" and audit[-1]["allowed"] is False
        assert audit[-1]["reason"] == "no confirmation within 0.3 s"

        # an agent that catches the refusal goes on; the refusal replays exactly (a validator has
        # no pause and no signature, and raises the same error)
        from supernet.node.kernel.replay import replay

        # the failed task is not billed: this one's voucher is again one fee (exactly billed + fee)
        r = await node.http.post("/v1/tasks", json=node.body([9], n=1, tolerant=True))
        done = await wait_end(node, r.json()["id"])
        assert done["status"] == "done" and done["output"] == "echo denied; not confirmed"
        trace = await node.store.get_dag(done["traceCid"])
        result = await replay(trace, PayAgent, tokenizer=None, params_type=dict)
        assert result.divergences == [] and result.output == done["output"]
    finally:
        await node.http.aclose()
        await node.service.cleanup()
        await node.executor.close()
        await node.store.aclose()


async def test_a_group_denial_replays(node: Node) -> None:
    """A validator's replay reaches the same AccessDenied from the capabilities the trace records."""
    from supernet.node.kernel.replay import replay

    r = await node.http.post("/v1/tasks", json=node.body([]))
    done = await wait_end(node, r.json()["id"])
    assert done["status"] == "done" and done["output"] == "echo denied; paid []"
    trace = await node.store.get_dag(done["traceCid"])
    result = await replay(trace, PayAgent, tokenizer=None, params_type=dict)
    assert result.divergences == [] and result.output == done["output"]


def test_access_config_section() -> None:
    cfg = NodeSettings.load(
        None, access={"groups": [{"name": "g", "agents": ["a"], "tools": ["mcp_x.*"], "memory": True}]}
    )
    policy = NodePolicy(**access_policy(cfg.access))
    assert policy.groups == (PrivilegeGroup("g", frozenset({"a"}), ("mcp_x.*",), memory=True),)
    assert policy.confirmation_timeout_s == 300.0
    with pytest.raises(ValueError, match="unique"):
        NodeSettings.load(None, access={"groups": [{"name": "g", "agents": []}, {"name": "g", "agents": []}]})
