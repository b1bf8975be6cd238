"""Where a task's roots come from, on the devnet: real Anvil, embedded store over HTTP, the real
default model and embedder, the node's real kernel running the built-in ``retrieval`` agent
(fixtures in tests/validator_fixtures.py).

A user's question is answered from memories an earlier task of theirs wrote. When that earlier
task is committed, the validator follows the question's memory root to it and the receipt
verifies clean. When the node ran the earlier task but never committed its receipt (so its trace,
which holds the write, is open to no check), the question's receipt is challenged for its origin.
When the node committed the earlier task but withholds its trace, the question waits: the earlier
task goes to the availability challenge, and once the node posts its trace the question is checked.
When the node withholds the manifest of the earlier task's batch (so no one can tell which entry to
challenge), the manifest is claimed on chain: the node posts the batch's receipts and the question
is checked, or it is slashed and the earlier task counts as never committed.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from supernet.node.agents.retrieval import RetrievalAgent
from supernet.sdk.chain.anvil import increase_time, mine
from supernet.sdk.chain.merkle import ReceiptTree
from supernet.sdk.chain.receipts import trace_cid
from validator_fixtures import VNet

pytestmark = [pytest.mark.anvil, pytest.mark.model, pytest.mark.slow]

REMEMBER = {"remember": ["The vault code is 4711."]}
QUESTION = {"question": "What is the vault code?", "k": 1, "max_new_tokens": 8}


async def verdicts(vnet: VNet, validator_factory: Any, batch_id: int) -> tuple[list[Any], list[Any]]:
    """One validator's verdict events on ``batch_id``, and its challenge events."""
    events: list[Any] = []
    async with validator_factory(0, events=events) as v:
        await v.step()
    mine = [e.data for e in events if e.kind == "verdict" and e.data["batch_id"] == batch_id]
    return mine, [e.data for e in events if e.kind == "challenge" and e.data["batch_id"] == batch_id]


async def test_a_question_follows_its_memory_to_the_committed_task_that_wrote_it(
    vnet: VNet, validator_factory: Any
) -> None:
    vnet.faults()
    first, _ = await vnet.run_batch([], chat_inputs=[REMEMBER], agent=RetrievalAgent)
    second, _ = await vnet.run_batch([], chat_inputs=[QUESTION], agent=RetrievalAgent)
    trace = await vnet.store.get_dag((await vnet.entry(second, 0)).trace_cid)
    search = next(e for e in trace["events"] if e["kind"] == "memory.search")
    root = await vnet.store.get_dag(str(search["root"]))
    assert root["writer"] == "0x" + (await vnet.entry(first, 0)).receipt.request_hash.hex()
    checked, challenges = await verdicts(vnet, validator_factory, second)
    assert [(v["ok"], v["checks"], v["unverifiable"]) for v in checked] == [(True, [], None)]
    assert challenges == []


async def test_a_question_on_memory_whose_writer_trace_is_withheld_waits_until_it_is_served(
    vnet: VNet, validator_factory: Any
) -> None:
    """Before, such a question was recorded as checked ("unverifiable") and never looked at
    again: a node withholding its writers' traces kept every task reading their memory unchecked."""
    vnet.faults(withhold=1.0)
    try:
        first, receipts = await vnet.run_batch([], chat_inputs=[REMEMBER], agent=RetrievalAgent)
    finally:
        vnet.faults()
    second, _ = await vnet.run_batch([], chat_inputs=[QUESTION], agent=RetrievalAgent)
    events: list[Any] = []
    fast = {"availability_retries": 2, "availability_backoff_s": 0.1}
    async with validator_factory(0, events=events, **fast) as v:
        await v.step()
        assert v.db.checks(second) == [], "a question whose origin is unreadable is not settled"
        rows = {(r.batch_id, r.index): r for r in v.db.missing()}
        assert rows[(second, 0)].status == "awaiting" and "origin" in rows[(second, 0)].reason
        assert rows[(first, 0)].status in ("retrying", "challenged")  # the writer: availability path
        for _ in range(40):  # retries spent: the writer's entry is challenged
            if v.db.missing()[0].status == "challenged":
                break
            await v.step()
            await asyncio.sleep(0.15)
        aid = v.db.missing()[0].availability_id
        assert aid, v.db.missing()
        trace = vnet.traces[trace_cid(receipts[0].trace_hash)]
        node_tm = vnet.contracts.as_account(vnet.node).task_manager
        node_tm.answer_availability(aid, receipts[0], ReceiptTree(receipts).proof_at(0), trace)
        for _ in range(40):  # the posted trace is imported; the question is checked again
            await v.step()
            if v.db.checks(second):
                break
            await asyncio.sleep(0.15)
        status = {(r.batch_id, r.index): r.status for r in v.db.missing()}
        checks = v.db.checks(second)
    assert status == {(first, 0): "answered", (second, 0): "checked"}, status
    assert [(c.ok, c.kinds) for c in checks] == [(True, "")], checks
    verdict = next(e.data for e in events if e.kind == "verdict" and e.data["batch_id"] == second)
    assert verdict["unverifiable"] is None  # judged in full, its memory followed to the writer


FAST = {"availability_retries": 2, "availability_backoff_s": 0.1}


def to_claim_time(vnet: VNet) -> None:
    """Move the chain to where validators claim an unread manifest: near the end of the first
    half of its batch's window (the contract's limit), not at the first failed read."""
    increase_time(vnet.contracts.w3, vnet.contracts.task_manager.challenge_window() * 42 // 100)
    mine(vnet.contracts.w3, 1)


async def step_until(v: Any, done: Any, steps: int = 120) -> None:
    for _ in range(steps):
        await v.step()
        if done():
            return
        await asyncio.sleep(0.15)
    raise AssertionError(f"not reached: missing {v.db.missing()}")


async def test_a_question_whose_writers_manifest_is_withheld_waits_for_the_manifest_answer(
    vnet: VNet, validator_factory: Any
) -> None:
    """Before, such a question stayed pending and was recorded unverifiable at its window's end:
    a node withholding one manifest kept every root naming a writer "maybe in it" unchecked."""
    vnet.faults()
    first, receipts = await vnet.run_batch(
        [], chat_inputs=[REMEMBER], agent=RetrievalAgent, withhold_manifest=True
    )
    second, _ = await vnet.run_batch([], chat_inputs=[QUESTION], agent=RetrievalAgent)
    stake = vnet.contracts.service_manager.get_operator(vnet.node.address).stake
    events: list[Any] = []
    async with validator_factory(0, events=events, **FAST) as v:
        await v.step()
        assert v.db.checks(second) == [], "a question whose writer cannot be located is not settled"
        row = {(r.batch_id, r.index): r for r in v.db.missing()}[(second, 0)]
        assert row.status == "awaiting" and f"batches [{first}]" in row.reason, row.reason
        await v.step()
        assert not any(e.kind == "manifest" for e in events), "no claim at the first failed reads"
        to_claim_time(vnet)
        await step_until(v, lambda: any(e.kind == "manifest" for e in events))
        [claim] = [e.data for e in events if e.kind == "manifest"]
        assert claim["batch_id"] == first
        node_om = vnet.contracts.as_account(vnet.node).omission_manager
        node_om.answer_manifest(claim["manifest_id"], vnet.contracts.task_manager.batch(first), receipts)
        await step_until(v, lambda: bool(v.db.checks(second)) and bool(v.db.checks(first)))
        checks = v.db.checks(second)
        status = {(r.batch_id, r.index): r.status for r in v.db.missing()}
        writer_checks = v.db.checks(first)
    assert [(c.ok, c.kinds) for c in checks] == [(True, "")], checks
    verdict = next(e.data for e in events if e.kind == "verdict" and e.data["batch_id"] == second)
    assert verdict["unverifiable"] is None  # its memory followed to the writer the answer located
    assert not any(e.kind in ("manifest_slash", "availability") for e in events)
    # the writer's own entry, sampled while its manifest was unreadable, waited for the manifest
    # answer (one claim, not one per entry) and was then read by the trace CID its receipt names
    assert status.get((first, 0)) == "fetched", status
    assert [(c.ok, c.kinds) for c in writer_checks] == [(True, "")], writer_checks
    assert vnet.contracts.service_manager.get_operator(vnet.node.address).stake == stake


async def test_a_writer_trace_withheld_after_its_window_does_not_stall_its_readers(
    vnet: VNet, validator_factory: Any
) -> None:
    """Before, a writer's trace was read only when a reader needed it: once the writer's batch had
    left its challenge window, a node could stop serving it (or never have served it, the writer
    unsampled) and its readers stayed unverifiable for good (the availability challenge closed).
    Now every committed trace is read in its window for the writes it records (`WriteLog`)."""
    vnet.faults()
    _, receipts = await vnet.run_batch([], chat_inputs=[REMEMBER], agent=RetrievalAgent)
    writer_trace = trace_cid(receipts[0].trace_hash)
    events: list[Any] = []
    async with validator_factory(0, db_name="follower.sqlite", events=events, **FAST) as v:
        await v.step()  # follows the batch in its window: its writes are read
        # the node stops serving the writer's trace, and the writer's window closes
        await vnet.store.pin_rm(writer_trace)
        await vnet.store.rm_block(writer_trace)
        increase_time(vnet.contracts.w3, vnet.contracts.task_manager.challenge_window() + 1)
        mine(vnet.contracts.w3, 1)
        second, _ = await vnet.run_batch([], chat_inputs=[QUESTION], agent=RetrievalAgent)
        await step_until(v, lambda: bool(v.db.checks(second)), steps=20)
        checks = v.db.checks(second)
    await vnet.store.put_block(vnet.traces[writer_trace], "dag-cbor", pin=True)  # for later tests
    assert [(c.ok, c.kinds) for c in checks] == [(True, "")], checks
    verdict = next(e.data for e in events if e.kind == "verdict" and e.data["batch_id"] == second)
    assert verdict["unverifiable"] is None  # its memory followed through the write read in time


# these last ones leave the user's memory on a root no committed task wrote (every later task of
# theirs reading it is challenged)
async def test_a_writer_whose_trace_was_claimed_and_never_posted_wrote_nothing(
    vnet: VNet, validator_factory: Any
) -> None:
    """The writer's trace was claimed in its window and the node let the claim go unanswered
    (slashed): a reader checked after that window is accused at once, by every validator alike,
    instead of waiting for a trace no one can claim any more and ending unverifiable."""
    vnet.faults(withhold=1.0)
    try:
        first, _ = await vnet.run_batch([], chat_inputs=[REMEMBER], agent=RetrievalAgent)
    finally:
        vnet.faults()
    sm = vnet.contracts.service_manager
    stake = sm.get_operator(vnet.node.address).stake
    events: list[Any] = []
    async with validator_factory(0, db_name="follower.sqlite", events=events, **FAST) as v:
        await step_until(v, lambda: any(e.kind == "availability" for e in events))
        increase_time(vnet.contracts.w3, vnet.contracts.task_manager.challenge_window() + 1)
        mine(vnet.contracts.w3, 1)
        await step_until(v, lambda: any(e.kind == "availability_slash" for e in events))
        second, _ = await vnet.run_batch([], chat_inputs=[QUESTION], agent=RetrievalAgent)
        await step_until(v, lambda: bool(v.db.checks(second)), steps=20)
        checks = v.db.checks(second)
    assert [(c.ok, c.kinds) for c in checks] == [(False, "origin")], checks
    verdict = next(e.data for e in events if e.kind == "verdict" and e.data["batch_id"] == second)
    evidence = await vnet.store.get_dag(verdict["evidence"])
    assert "never showed when claimed" in str(evidence), evidence
    assert [e.data["batch_id"] for e in events if e.kind == "availability_slash"] == [first]
    if lost := stake - sm.get_operator(vnet.node.address).stake:
        vnet.contracts.as_account(vnet.node).service_manager.add_stake(lost)


async def test_a_manifest_never_shown_is_slashed_and_its_writers_count_as_never_committed(
    vnet: VNet, validator_factory: Any
) -> None:
    vnet.faults()
    first, _ = await vnet.run_batch([], chat_inputs=[REMEMBER], agent=RetrievalAgent, withhold_manifest=True)
    second, _ = await vnet.run_batch([], chat_inputs=[QUESTION], agent=RetrievalAgent)
    sm = vnet.contracts.service_manager
    stake = sm.get_operator(vnet.node.address).stake
    events: list[Any] = []
    async with validator_factory(0, events=events, **FAST) as v:
        await v.step()
        to_claim_time(vnet)
        await step_until(v, lambda: any(e.kind == "manifest" for e in events))
        assert v.db.checks(second) == [], "not accused while the node may still answer"
        increase_time(vnet.contracts.w3, vnet.contracts.task_manager.vote_window() + 1)
        mine(vnet.contracts.w3, 1)
        await step_until(v, lambda: bool(v.db.checks(second)))
        checks = v.db.checks(second)
    assert [e.data["batch_id"] for e in events if e.kind == "manifest_slash"] == [first]
    assert sm.get_operator(vnet.node.address).stake < stake
    assert [(c.ok, c.kinds) for c in checks] == [(False, "origin")], checks
    assert any(e.kind == "challenge" and e.data["batch_id"] == second for e in events)
    # the node serves the manifest once accused: too late, the chain's word stands for every
    # validator (another one, voting, reads it and still counts the writer as never committed)
    assert await vnet.store.put_dag(vnet.withheld[first], pin=True) == vnet.manifests[first]
    later: list[Any] = []
    async with validator_factory(1, events=later, **FAST) as voter:
        await step_until(voter, lambda: bool(voter.db.checks(second)))
        assert [(c.ok, c.kinds) for c in voter.db.checks(second)] == [(False, "origin")]
    # the node's stake back (it was slashed for the manifest and its sampled entry) for later tests
    if lost := stake - sm.get_operator(vnet.node.address).stake:
        vnet.contracts.as_account(vnet.node).service_manager.add_stake(lost)


async def test_a_posted_receipt_whose_trace_carries_no_signed_request_is_no_writer(
    vnet: VNet, validator_factory: Any
) -> None:
    """A receipt posted by a manifest answer carries no request (a manifest entry does): a node
    could commit a receipt for a task nobody asked for, withhold the manifest, answer the claim and
    name that task as a writer. Its trace must carry the request its user signed."""
    vnet.faults()

    def unsigned(_: int, trace: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in trace.items() if k not in ("request", "request_signature")}

    first, receipts = await vnet.run_batch(
        [], chat_inputs=[REMEMBER], agent=RetrievalAgent, withhold_manifest=True, edit_trace=unsigned
    )
    second, _ = await vnet.run_batch([], chat_inputs=[QUESTION], agent=RetrievalAgent)
    events: list[Any] = []
    async with validator_factory(0, events=events, **FAST) as v:
        await v.step()
        to_claim_time(vnet)
        await step_until(v, lambda: any(e.kind == "manifest" for e in events))
        [claim] = [e.data for e in events if e.kind == "manifest"]
        node_om = vnet.contracts.as_account(vnet.node).omission_manager
        node_om.answer_manifest(claim["manifest_id"], vnet.contracts.task_manager.batch(first), receipts)
        await step_until(v, lambda: bool(v.db.checks(second)))
        checks = v.db.checks(second)
    assert [(c.ok, c.kinds) for c in checks] == [(False, "origin")], checks
    verdict = next(e.data for e in events if e.kind == "verdict" and e.data["batch_id"] == second)
    evidence = await vnet.store.get_dag(verdict["evidence"])
    # read in its window (`WriteLog`): the writer's trace carries no signed request, so it wrote
    # nothing (the slow path, for a validator that did not read it then, says the same)
    assert "(no signed request), wrote no such root" in str(evidence), evidence


# last: it leaves the user's memory on a root no committed task wrote (every later task of theirs
# reading it is challenged)
async def test_memory_from_a_task_the_node_never_committed_is_challenged(
    vnet: VNet, validator_factory: Any
) -> None:
    vnet.faults()
    await vnet.run_batch([], chat_inputs=[REMEMBER], agent=RetrievalAgent, commit=False)
    batch_id, _ = await vnet.run_batch([], chat_inputs=[QUESTION], agent=RetrievalAgent)
    checked, challenges = await verdicts(vnet, validator_factory, batch_id)
    assert [(v["ok"], v["checks"]) for v in checked] == [(False, ["origin"])], checked
    assert len(challenges) == 1
