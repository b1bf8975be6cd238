"""Adversarial review: the human-in-the-loop confirmation flow and the kernel's access manager.

Everything runs on the node service with the real kernel (access manager, dispatcher, worker,
traces in the embedded store), through its HTTP API, and on the validator's own replay check
(`supernet.validator.replay_check.check_replay`). The pieces come from
``tests/unit/test_node_confirmations.py`` (`make_node`): its engine is a STUB that is never asked to
generate (the agents here make only tool calls) and its chain is the FAKE of ``node_fixtures``; the
``pay`` tool is an in-process irreversible tool that appends to ``node.payments``.

What was tried, and what was found:

* **A user frames an honest node** (fixed; was a known limit): the user let an agent's first call
  of an irreversible action time out and confirmed the agent's retry of the *same* action; the
  replay collected the recorded confirmations per action over the *whole* trace, so on replay the
  first call was allowed and the honest trace "diverged": a REPLAY finding.
* **One confirmation, many executions** (fixed; was a known limit): a confirmation was bound to the
  task and the action (tool + args), not to one call: an agent that repeated a confirmed call ran it
  again with no new pause. Both fixed by design: the signed ``actionHash`` names the call's
  occurrence (`supernet.sdk.chain.receipts.action_hash`).
* **Holding the node's worker slots for free** (fixed; was a known limit): a user (four Sybil
  addresses, one deposit each) whose tasks pause on confirmations it never gives held every worker
  slot for ``confirmation_timeout_s``; now at most ``[access] max_paused_calls`` (8 of 16) wait at once.
* Defences that hold: a confirmation signed in another chain's domain, or the malleable (high-s) form
  of the user's own signature, is refused (403) and runs nothing; a late confirmation after the
  timeout is 404 and runs nothing; a node that moves the user's genuine signature from one task to
  another (same action) is caught by the replay; the SDK refuses to sign an event whose
  ``actionHash`` is not the hash of the call it shows; a task failed because its user refused leaves
  no file write behind.
(Already covered elsewhere, not repeated: another account's or another task's signature, an unknown
action, a node's own forged signature or trace ``user``, an irreversible tool relabelled reversible,
group denials, namespaces derived from the signer.)
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from node_fixtures import signed_task
from supernet.node.agents.registry import AgentRegistry
from supernet.node.kernel.errors import ConfirmationRequiredError
from supernet.sdk.agents import Agent, AgentContext
from supernet.sdk.chain.eip712 import Domain
from supernet.sdk.chain.receipts import action_hash
from supernet.sdk.chain.signatures import SECP256K1_HALF_N
from supernet.sdk.client.confirm import confirmation_body
from supernet.sdk.client.read_grant import ReadGrantAuth
from supernet.validator.replay_check import check_replay
from supernet.validator.trace_view import parse_trace

from tests.unit.test_node_confirmations import Node, PayAgent, make_node, pending_event, sign, wait_end

FEE = 10**12
SECP256K1_N = 2 * SECP256K1_HALF_N + 1


class RetryPayer(Agent):
    """Pays ``amount``; if the user did not confirm in time, says so and asks once more (the same
    call): what a careful scripted agent, or an LLM agent shown the refusal, does."""

    agent_id = "retry-payer"

    async def run(self, ctx: AgentContext, input: Any) -> str:
        said = []
        for _ in range(2):
            try:
                said.append(str(await ctx.tools.call("pay", {"amount": input["amount"]})))
                break
            except ConfirmationRequiredError:
                said.append("not confirmed")
        return "; ".join(said)


class FilePayer(Agent):
    """Writes the order to a file, then pays it (irreversible); with ``read``, lists its files."""

    agent_id = "file-payer"

    async def run(self, ctx: AgentContext, input: Any) -> str:
        if input.get("read"):
            return json.dumps(await ctx.storage.list(), sort_keys=True)
        await ctx.storage.put("order.txt", f"pay {input['amount']}")
        return str(await ctx.tools.call("pay", {"amount": input["amount"]}))


async def close(node: Node) -> None:
    await node.http.aclose()
    await node.service.cleanup()
    await node.executor.close()
    await node.store.aclose()


def body_for(node: Node, user: LocalAccount, agent: str, task_input: Any, n: int = 1) -> dict[str, Any]:
    """The signed ``POST /v1/tasks`` body of ``user``'s ``n``-th task of ``agent`` on this node."""
    agent_hash = node.executor.agent_hash(agent)
    assert agent_hash is not None, agent
    body = signed_task(
        user,
        node.service.account.address,
        node.chain.domain,
        task_input,
        cumulative=n * FEE,
        agent_hash=agent_hash,
    )
    return {**body, "agent": agent}


async def submit(node: Node, body: dict[str, Any]) -> str:
    r = await node.http.post("/v1/tasks", json=body)
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


async def submit_paid(node: Node, user: LocalAccount, agent: str, task_input: Any) -> str:
    """Submit with the voucher the node asks for now (``billed + fee``: tasks that fail meanwhile
    drop out of ``billed``)."""
    for _ in range(5):
        billed = node.ctx.db.billed(user.address)
        body = {
            **signed_task(
                user,
                node.service.account.address,
                node.chain.domain,
                task_input,
                cumulative=billed + FEE,
                agent_hash=node.executor.agent_hash(agent) or "",
            ),
            "agent": agent,
        }
        r = await node.http.post("/v1/tasks", json=body)
        if r.status_code == 202:
            return str(r.json()["id"])
        assert r.status_code == 402, r.text  # a task ended between the read and the post
    raise AssertionError("no voucher was accepted")


async def replay_findings(node: Node, trace_doc: Any, *agents: type[Agent]) -> list[Any]:
    """The validator's replay findings of a trace (its own check, in the deployment's domain)."""
    registry = AgentRegistry()
    for cls in agents:
        registry.register(cls)
    outcome = await check_replay(
        parse_trace(trace_doc).doc, registry, tokenizer=None, domain=node.chain.domain
    )
    assert outcome.unverifiable is None, outcome.unverifiable
    return list(outcome.findings)


# ------------------------------------------------------------------------------------------------
# Known limits
# ------------------------------------------------------------------------------------------------


async def test_defence_a_user_cannot_frame_a_node_by_confirming_only_the_retry(tmp_path: Path) -> None:
    """Found by this review (was a known limit: a free slashing). The user stays silent on the
    agent's first call of ``pay {amount: 5}`` (it times out: ``ConfirmationRequiredError``, caught by
    the agent) and confirms the agent's retry of the very same call. The honest node records that:
    an ``error`` event for call 0 and a confirmed ``tool`` event for call 1. The replay collected
    confirmations as ``actionHash -> signature`` over the whole trace, so on replay call 0 was
    already confirmed, ran, and "diverged": a REPLAY finding against an honest node. Fixed by
    design: a signature allows one call, the ``occurrence``-th of its action in the task
    (`supernet.sdk.chain.receipts.action_hash`, counted as the agent makes the calls,
    `dispatch._occurrence`), so the retry's confirmation is for occurrence 1 and cannot allow
    call 0, on the node or on replay."""
    node = await make_node(tmp_path, timeout_s=0.5)
    try:
        node.executor.kernel.agents.register(RetryPayer)
        task_id = await submit(node, body_for(node, node.user, "retry-payer", {"amount": 5}))
        first = await pending_event(node, task_id)
        second = await pending_event(node, task_id, 2)  # the first call timed out; the agent asks again
        assert (first["occurrence"], second["occurrence"]) == (0, 1)
        assert first["actionHash"] != second["actionHash"]  # two calls, two consents
        r = await node.http.post(
            f"/v1/tasks/{task_id}/confirmations",
            json=confirmation_body(task_id, second, node.chain.domain, node.user, repeat=True),
        )
        assert r.status_code == 200 and r.json()["resumed"] is True
        done = await wait_end(node, task_id)
        assert done["status"] == "done" and done["output"] == "not confirmed; sent 5"
        assert node.payments == [5]  # the node was honest: one payment, the confirmed one

        trace = await node.store.get_dag(done["traceCid"])
        kinds = [(e["kind"], e.get("confirmation") is not None) for e in trace["events"]]
        assert kinds == [("error", False), ("tool", True)]
        assert trace["events"][0]["error"].startswith("ConfirmationRequiredError")
        assert await replay_findings(node, trace, RetryPayer) == []  # the honest trace replays clean
    finally:
        await close(node)


async def test_defence_one_confirmation_runs_one_call(tmp_path: Path) -> None:
    """Found by this review (was a known limit: consent reusable). A Confirmation signed
    ``(task id, sha256({"tool","args"}))``, nothing binding it to one call: an agent paying 5 twice
    asked once and paid twice, the replay accepting the same signature on both calls. Now the
    second identical call is occurrence 1 and pauses for its own confirmation: a user who confirms
    only the first pays once (the second call is refused when the wait ends), and one who confirms
    both is asked twice, each call carrying its own signature, and the trace replays clean."""
    node = await make_node(tmp_path, timeout_s=0.5)
    try:
        task_id = await submit(node, node.body([5, 5], tolerant=True))
        event = await pending_event(node, task_id)
        r = await node.http.post(
            f"/v1/tasks/{task_id}/confirmations",
            json=confirmation_body(task_id, event, node.chain.domain, node.user),
        )
        assert r.status_code == 200
        again = await pending_event(node, task_id, 2)  # the second payment asks again
        assert again["occurrence"] == 1 and again["actionHash"] != event["actionHash"]
        done = await wait_end(node, task_id)  # ... and, unanswered, is refused
        assert done["status"] == "done" and done["output"].endswith("not confirmed")
        assert node.payments == [5], "one consent, one payment"

        both = await submit(node, node.body([7, 7], n=2))
        for k in (1, 2):
            shown = await pending_event(node, both, k)
            r = await node.http.post(
                f"/v1/tasks/{both}/confirmations",
                json=confirmation_body(both, shown, node.chain.domain, node.user, repeat=True),
            )
            assert r.status_code == 200, r.text
        done = await wait_end(node, both)
        assert done["status"] == "done" and node.payments == [5, 7, 7]
        trace = await node.store.get_dag(done["traceCid"])
        sigs = [e["confirmation"] for e in trace["events"] if e["kind"] == "tool" and e["name"] == "pay"]
        assert len(sigs) == 2 and sigs[0] != sigs[1]
        assert await replay_findings(node, trace, PayAgent) == []
    finally:
        await close(node)


async def test_defence_unconfirmed_tasks_cannot_hold_every_worker_slot(tmp_path: Path) -> None:
    """Found by this review (was a known limit: a free denial of service). A task paused on a
    confirmation gives its *kernel* slot up but keeps its *worker* slot. Four Sybil addresses, each
    with a funded channel, sent four tasks each whose agent calls ``pay`` and never confirmed: for
    ``confirmation_timeout_s`` (300 s by default) every worker slot was held and an honest user's
    task waited; the paused tasks then failed unbilled, so the attack cost nothing. Now at most
    ``[access] max_paused_calls`` (8, half the worker's slots) calls wait for their users at once,
    over all tasks; one more is refused at once, in the words of a call nobody confirmed (so the
    replay is unchanged): the honest task starts at once. A confirmation that comes after a call's
    wait ended runs nothing (404)."""
    node = await make_node(tmp_path, timeout_s=6.0)
    try:
        worker = node.ctx.worker
        total, per_user = worker._slots.free, worker._per_user
        paused_max = node.executor.kernel.access.policy.max_paused_calls
        assert paused_max < total
        sybils = [Account.create() for _ in range(total // per_user)]
        held: list[str] = []
        for sybil in sybils:
            node.chain.deposits[sybil.address] = 10**18
            for _ in range(per_user):
                held.append(await submit_paid(node, sybil, "payer", {"amounts": [1]}))
        honest = await submit_paid(node, node.user, "payer", {"amounts": []})  # needs no confirmation
        started = time.monotonic()
        done = await wait_end(node, honest)
        assert done["status"] == "done" and time.monotonic() - started < 5.0  # before any wait ends
        assert len([t for t in held if node.executor.kernel.access.pending(t)]) <= paused_max
        for task_id in held:
            await node.ctx.worker.wait(task_id)
            row = node.ctx.db.task(task_id)
            assert row is not None and row.status.value == "failed"
            assert "ConfirmationRequiredError" in (row.error or "")
        assert [node.ctx.db.billed(s.address) for s in sybils] == [0] * len(sybils)

        # a confirmation that comes after the wait ended runs nothing
        late = sign(sybils[0], node, held[0], "0x" + action_hash("pay", {"amount": 1}).hex())
        r = await node.http.post(f"/v1/tasks/{held[0]}/confirmations", json=late)
        assert r.status_code == 404 and node.payments == []
    finally:
        await close(node)


# ------------------------------------------------------------------------------------------------
# Defences
# ------------------------------------------------------------------------------------------------


async def test_defence_confirmation_from_another_chain_or_in_malleable_form_is_refused(
    tmp_path: Path,
) -> None:
    """The user's genuine Confirmation of this very task and action, but signed in another
    deployment's domain (another chain id: e.g. seen on a testnet), is not the user's here: 403,
    nothing runs. Nor is the high-s twin of the user's valid signature (anyone can make it from the
    public trace): if the node took it, its trace would carry a form the validator's
    `require_canonical` refuses, a finding against the node made by whoever posted it."""
    node = await make_node(tmp_path, timeout_s=30.0)
    try:
        task_id = await submit(node, node.body([5]))
        event = await pending_event(node, task_id)
        url = f"/v1/tasks/{task_id}/confirmations"
        other = Domain(
            chain_id=node.chain.domain.chain_id + 1, verifying_contract=node.chain.domain.verifying_contract
        )
        r = await node.http.post(url, json=confirmation_body(task_id, event, other, node.user))
        assert r.status_code == 403, r.text

        good = confirmation_body(task_id, event, node.chain.domain, node.user)
        sig = bytes.fromhex(good["signature"][2:])
        s = int.from_bytes(sig[32:64], "big")
        twin = sig[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - sig[64]])
        r = await node.http.post(url, json={"actionHash": good["actionHash"], "signature": "0x" + twin.hex()})
        assert r.status_code == 403, r.text
        await asyncio.sleep(0.05)
        assert node.payments == [] and node.executor.pending_confirmations(task_id) == [event]

        r = await node.http.post(url, json=good)  # control: the canonical one, in this domain
        assert r.status_code == 200 and r.json()["resumed"] is True
        done = await wait_end(node, task_id)
        assert done["status"] == "done" and node.payments == [5]
    finally:
        await close(node)


async def test_defence_a_genuine_confirmation_moved_to_another_task_is_caught(tmp_path: Path) -> None:
    """A node that holds the user's genuine signature of ``pay {amount: 5}`` from one task and pays
    the same in another task of the same user, recording the first task's signature, is caught: the
    Confirmation's ``requestHash`` is the task id, so the moved signature recovers to a stranger and
    the replay diverges at that call. Control: the untouched traces replay clean (the user cannot
    deny a confirmation it gave: the signature it posted is in the trace and verifies)."""
    node = await make_node(tmp_path, timeout_s=30.0)
    try:
        traces = []
        for n in (1, 2):
            task_id = await submit(node, node.body([5], n=n))
            event = await pending_event(node, task_id)
            r = await node.http.post(
                f"/v1/tasks/{task_id}/confirmations",
                json=confirmation_body(task_id, event, node.chain.domain, node.user),
            )
            assert r.status_code == 200
            done = await wait_end(node, task_id)
            assert done["status"] == "done"
            traces.append(await node.store.get_dag(done["traceCid"]))
        assert node.payments == [5, 5]
        for trace in traces:
            assert await replay_findings(node, trace, PayAgent) == []

        a, b = traces
        moved = {**b, "events": [dict(e) for e in b["events"]]}
        [index] = [i for i, e in enumerate(moved["events"]) if e["kind"] == "tool"]
        theirs = next(e["confirmation"] for e in a["events"] if e["kind"] == "tool")
        assert moved["events"][index]["confirmation"] != theirs
        moved["events"][index]["confirmation"] = theirs
        findings = await replay_findings(node, moved, PayAgent)
        assert [(f.check.value, f.call) for f in findings][:1] == [("replay", index)], findings
    finally:
        await close(node)


def test_defence_sdk_never_signs_a_hash_other_than_the_call_shown() -> None:
    """A node that shows the user ``pay {amount: 1}`` but asks for a signature over the hash of
    ``pay {amount: 1000}`` (the call it will run) gets no signature from the SDK: `confirmation_body`
    hashes the shown tool and args itself and refuses an event whose ``actionHash`` differs."""
    user = Account.create()
    domain = Domain(chain_id=31337, verifying_contract="0x" + "33" * 20)
    task_id = "0x" + "ab" * 32
    lying = {
        "taskId": task_id,
        "tool": "pay",
        "args": {"amount": 1},
        "actionHash": "0x" + action_hash("pay", {"amount": 1000}).hex(),
    }
    with pytest.raises(ValueError, match="not the hash of its tool and args"):
        confirmation_body(task_id, lying, domain, user)
    honest = confirmation_body(task_id, {**lying, "actionHash": None}, domain, user)
    assert honest["actionHash"] == "0x" + action_hash("pay", {"amount": 1}).hex()


async def test_defence_a_refused_confirmation_leaves_no_file_write(tmp_path: Path) -> None:
    """The agent writes ``order.txt`` and then calls ``pay``; the user never confirms, the call
    fails, the task fails (unbilled). Its file write does not become the user's: the next task of
    the same agent for the same user lists no files (no half-done order is left behind)."""
    node = await make_node(tmp_path, timeout_s=0.3)
    try:
        node.executor.kernel.agents.register(FilePayer)
        task_id = await submit(node, body_for(node, node.user, "file-payer", {"amount": 3}))
        await pending_event(node, task_id)
        done = await wait_end(node, task_id)
        assert done["status"] == "failed" and "ConfirmationRequiredError" in done["error"]
        assert node.payments == []
        reader = await submit(node, body_for(node, node.user, "file-payer", {"amount": 0, "read": True}, n=1))
        listed = await wait_end(node, reader)
        assert listed["status"] == "done", listed
        assert json.loads(listed["output"]) == {}
        # control: the user's own read grant shows the audit of the refused task, with the write in it
        auth = ReadGrantAuth(node.user, node.service.account.address, node.chain.domain)
        audit = (await node.http.get(f"/v1/tasks/{task_id}/audit", auth=auth)).json()
        assert ("storage.write", True) in [(a["action"], a["allowed"]) for a in audit]
        assert audit[-1]["action"] == "tool" and audit[-1]["allowed"] is False
    finally:
        await close(node)
