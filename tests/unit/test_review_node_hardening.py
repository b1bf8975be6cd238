"""Adversarial review: the node's kernel and service as attacked by a paying user (or one who
wants not to pay).

``test_known_limit_*`` pass while the hole exists (each shows the attack concretely);
``test_defence_*`` assert an attack the code already defeats. Real parts throughout: the node
service (`NodeService`) on the real kernel (`KernelExecutor` over `Kernel`, the SmolLM2 engine, the
MiniLM embedder, the embedded store) or, where the service's own logic is under test, on the FAKE
executor and chain of ``tests/node_fixtures.py``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest_asyncio
from eth_account import Account
from supernet.node.agents.base import Agent
from supernet.node.agents.context import AgentContext
from supernet.node.kernel.syscalls import TaskSpec
from supernet.node.service.config import NodeSettings
from supernet.node.service.identity import load_account
from supernet.node.service.kernel_executor import KernelExecutor
from supernet.node.service.runner import NodeService
from supernet.sdk.client.read_grant import ReadGrantAuth
from supernet.sdk.formats.trace import MAX_TRACE_BYTES

from tests.embedder import SharedMiniLM
from tests.node_fixtures import FakeChain, FakeNode, signed_task
from tests.unit.test_validator_attacks3 import stand_in_kernel

FEE = 10**12


def sse(text: str) -> list[tuple[str, Any]]:
    """(event, data) pairs of a server-sent-events body."""
    out: list[tuple[str, Any]] = []
    event = None
    for line in text.splitlines():
        if line.startswith("event: "):
            event = line.split(": ", 1)[1]
        elif line.startswith("data: ") and event is not None:
            out.append((event, json.loads(line[6:])))
            event = None
    return out


async def wait_final(http: httpx.AsyncClient, tid: str) -> dict[str, Any]:
    """The task once it has ended (done, failed or refused)."""
    async with asyncio.timeout(120):
        while True:
            task = (await http.get(f"/v1/tasks/{tid}")).json()
            if task["status"] not in ("accepted", "running"):
                return dict(task)
            await asyncio.sleep(0.05)


# -- a node service on the real kernel --------------------------------------------------------------


class RealNode:
    """A `NodeService` on the real kernel, with an HTTP client carrying its user's read grant."""

    def __init__(self, service: NodeService, executor: KernelExecutor, chain: FakeChain) -> None:
        self.service = service
        self.executor = executor
        self.chain = chain
        self.user = Account.create()
        chain.deposits[self.user.address] = 10**18
        assert service.app is not None
        self.http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=service.app),
            base_url="http://node",
            auth=ReadGrantAuth(self.user, service.account.address, chain.domain),
            timeout=120.0,
        )

    def body(self, agent: str, task_input: Any, *, cumulative: int, **kw: Any) -> dict[str, Any]:
        agent_hash = self.executor.agent_hash(agent)
        assert agent_hash is not None
        body = signed_task(
            self.user,
            self.service.account.address,
            self.chain.domain,
            task_input,
            cumulative=cumulative,
            model_id=self.executor.model_ids()[0],
            agent_hash=agent_hash,
            **kw,
        )
        body["agent"] = agent
        return body


@pytest_asyncio.fixture
async def real_node(tmp_path: Path, kernel_engine: Any, store_client: Any) -> AsyncIterator[RealNode]:
    from supernet.node.kernel.kernel import Kernel

    kernel = Kernel(kernel_engine, store_client, embedder=SharedMiniLM())
    await kernel.setup()
    executor = KernelExecutor(kernel, "smollm2-135m", FEE)
    chain = FakeChain()
    cfg = NodeSettings.load(None, data_dir=tmp_path / "node", batch={"max_size": 4, "max_age_s": 0.2})
    service = NodeService(cfg, executor, load_account(cfg), store_client, chain)
    await service.setup()
    node = RealNode(service, executor, chain)
    try:
        yield node
    finally:
        await node.http.aclose()
        await service.cleanup()
        await kernel.stop()


# -- known limits ----------------------------------------------------------------------------------


async def test_defence_a_trace_that_would_overflow_refuses_the_call_before_any_token(
    real_node: RealNode,
) -> None:
    """ATTACK: the retrieval agent is asked to remember ~120 one-word facts and answer a question
    in the same task. Each memory add puts the namespace's previous and new root blocks and the
    entry (its 384-float embedding) into the trace's witness, so the witness grows quadratically in
    the adds; 120 adds of a fresh namespace put it over `MAX_TRACE_BYTES` (384 KiB). Nothing checks
    the trace's size until the agent has returned: the LLM call runs, its tokens are streamed to
    the user's SSE connection, and only then `save_trace` raises `TraceTooLargeError`. The task
    ends ``failed``: no receipt, not billed, its writes undone, so the same voucher amount buys the
    next one, and the next (the input is 1 KiB, far under ``max_input_chars``).

    WHO PROFITS: any user — free LLM answers (the real question is in ``question``; the padding
    facts are thrown away), indefinitely, with one fee of deposit and no setup. The node also
    pays for ~120 embeddings per task.

    IMPACT: the node works for nothing at the attacker's pace (bounded only by the per-user slot
    cap); honest users' tasks queue behind it. The same shape works with any agent whose syscalls
    feed the witness (storage puts of large files, many searches) before its last LLM call.

    DEFENCE (the class, by design): the kernel weighs the trace so far, with its witness, before
    each LLM call (`trace.trace_size`), and refuses the call when its largest possible record
    (`trace.llm_record_bound`) would take the trace past the limit: the task fails before a single
    token is generated or streamed. Nothing is delivered, so nothing is owed; the writes are undone.
    What remains (docs/node.md, "Known limits"): syscalls *after* an agent's last LLM call can
    still overflow the trace once tokens were streamed."""
    node = real_node
    facts = [f"fact{i}" for i in range(120)]
    task_input = {"remember": facts, "question": "What is two plus two?", "max_new_tokens": 6}
    assert len(json.dumps(task_input)) < node.service.settings.api.max_input_chars
    r = await node.http.post("/v1/tasks", json=node.body("retrieval", task_input, cumulative=FEE))
    assert r.status_code == 202, r.text
    tid = r.json()["id"]
    events = sse((await node.http.get(f"/v1/tasks/{tid}/events")).text)
    streamed = "".join(d["text"] for e, d in events if e == "token")
    assert streamed == "", events  # not one token reached the user
    assert events[-1][0] == "error"
    task = await wait_final(node.http, tid)
    # ended at the add that would not fit (`Dispatcher._write_fits`), before the LLM call's own check
    assert task["status"] == "failed" and "refused before writing" in task["error"], task
    assert str(MAX_TRACE_BYTES) in task["error"]
    account = (await node.http.get(f"/v1/accounts/{node.user.address}")).json()
    assert int(account["billed"]) == 0 and account["voucher"] is None  # nothing to redeem, ever
    # control: the same question with a few facts runs, streams its answer and is billed
    small = {"remember": facts[:3], "question": "What is two plus two?", "max_new_tokens": 6}
    ok = await node.http.post("/v1/tasks", json=node.body("retrieval", small, cumulative=FEE))
    assert ok.status_code == 202, ok.text
    done = await wait_final(node.http, ok.json()["id"])
    assert done["status"] == "done", done
    account = (await node.http.get(f"/v1/accounts/{node.user.address}")).json()
    assert int(account["billed"]) == FEE


# -- defences ----------------------------------------------------------------------------------------


async def test_defence_one_user_cannot_hold_every_worker_slot(fake_node: FakeNode) -> None:
    """ATTACK: a user floods the node with tasks that wait in the executor (for their own memory
    lock, a confirmation never given, a slow tool), unbilled if they then fail, to keep every other
    user's task from starting. DEFENCE: `TaskWorker` runs at most ``concurrency // 4`` (4 of 16)
    tasks of one user at a time; another user's task starts at once."""
    node = fake_node
    node.executor.gate = asyncio.Event()
    flood = []
    for i in range(10):
        r = await node.http.post("/v1/tasks", json=node.body(f"flood {i}", cumulative=FEE * (i + 1)))
        assert r.status_code == 202, r.text
        flood.append(r.json()["id"])
    other = Account.create()
    node.chain.deposits[other.address] = 10**18
    r = await node.http.post("/v1/tasks", json=node.body("other user", cumulative=FEE, user=other))
    assert r.status_code == 202, r.text
    for _ in range(50):
        await asyncio.sleep(0.01)
    running = set(node.executor.runs)
    assert len(running & set(flood)) == 4, len(running & set(flood))
    assert r.json()["id"] in running  # not stalled behind the flood
    node.executor.gate.set()
    for tid in flood:
        assert (await wait_final(node.http, tid))["status"] == "done"


class Notes(Agent):
    """Adds ``{"add": text}`` to its memory, or lists every note like ``{"search": text}``."""

    agent_id = "notes"
    description = "Adds or searches notes."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        if "add" in input:
            await ctx.memory.add(str(input["add"]))
            return "ok"
        hits = await ctx.memory.search(str(input["search"]), k=1000)
        return "|".join(sorted(h.text for h in hits))


async def test_defence_memory_namespaces_are_the_signers_not_the_agents_choice(tmp_path: Path) -> None:
    """ATTACK: read another user's memory through a shared agent: the same agent id, or a user id
    whose text starts with the victim's whole address (a prefix match on namespaces would hand it
    over). DEFENCE: the namespace is ``<signed user>/<agent id>``, set by the access manager, never
    by the agent or its input; a search sees only the signer's own entries."""
    alice, bob = "0x" + "a1" * 20, "0x" + "a1" * 20 + "ff"
    async with stand_in_kernel(tmp_path / "store", (Notes,), embedder=SharedMiniLM()) as kernel:

        async def run(n: int, task_input: Any, user: str) -> str:
            out = await kernel.run_task(TaskSpec(f"0x{n:064x}", "notes", task_input, user=user, fee=1))
            assert out.status == "ok", out.error
            return out.output

        await run(1, {"add": "alice secret"}, alice)
        await run(2, {"add": "bob note"}, bob)
        assert await run(3, {"search": "secret"}, bob) == "bob note"
        assert await run(4, {"search": "note"}, alice) == "alice secret"
