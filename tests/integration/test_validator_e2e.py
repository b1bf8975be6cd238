"""The validator on real parts: real Anvil, embedded store over HTTP, the real default model and the
node's real kernel (fixtures in tests/validator_fixtures.py).

Each fault kind of ``--fault`` is caught, honest receipts are never flagged, a challenge goes through
other validators' independent votes to a slash with the user refunded, and a restarted validator
neither skips nor repeats a batch.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import httpx
import pytest
from supernet.node.agents.retrieval import RetrievalAgent
from supernet.node.llm.scoring import ScoreRequest
from supernet.node.llm.types import ScoreResult
from supernet.sdk.chain.anvil import advance_to, increase_time, mine
from supernet.sdk.chain.merkle import ReceiptTree
from supernet.sdk.store.cids import compute_cid, encode_dag, link
from supernet.validator.chain import ChallengeStatus
from supernet.validator.evidence import FAULT_OF
from supernet.validator.scoring import ModelScorer
from supernet.validator.service import Validator
from supernet.validator.tool_check import RegistryRunner
from supernet.validator.verifier import Verifier, load_manifest
from validator_fixtures import TASK_FEE, VNet, probe_registry

pytestmark = [pytest.mark.anvil, pytest.mark.model, pytest.mark.slow]

QUESTIONS = ["Name a fruit.", "What is the capital of Italy?", "Say hello.", "Count to three."]

EXPECTED_CHECK = {
    "model": "llm.model",
    "tokens": "llm.token",
    "truncate": "llm.finish",
    "seed": "llm.sample",
    "tool": "tool",
    "trace": "trace",
    # the rational cheats: receipt, trace and signatures consistent; only the agent replay sees them
    "answer": "replay",
    "skip": "replay",
    "prompt": "replay",
}


async def test_honest_batch_is_not_flagged(vnet: VNet, validator_factory: Any) -> None:
    vnet.faults()
    batch_id, receipts = await vnet.run_batch(QUESTIONS)
    events: list[Any] = []
    async with validator_factory(0, events=events) as v:
        await v.step()
        checks = v.db.checks(batch_id)
    assert [c.index for c in checks] == list(range(len(receipts)))  # sampling rate 1: every receipt
    assert all(c.ok for c in checks), [c.kinds for c in checks]
    assert not [e for e in events if e.kind == "challenge"]
    verdicts = [e.data for e in events if e.kind == "verdict"]
    assert all(d["ok"] and d["evidence"] for d in verdicts)
    doc = await vnet.store.get_dag(verdicts[0]["evidence"])
    assert doc["type"] == "supernet/evidence/v1" and doc["fraud"] is False and doc["llmCalls"] == 2


@pytest.mark.parametrize("kind", sorted(EXPECTED_CHECK))
async def test_each_fault_kind_is_detected(vnet: VNet, validator_factory: Any, kind: str) -> None:
    vnet.faults(**{kind: 1.0})
    try:
        batch_id, _ = await vnet.run_batch(QUESTIONS[:1])
    finally:
        vnet.faults()
    async with validator_factory(1, challenge=False) as v:
        await v.step()
        [check] = v.db.checks(batch_id)
    assert not check.ok
    kinds = set(check.kinds.split(","))
    assert EXPECTED_CHECK[kind] in kinds, kinds
    if EXPECTED_CHECK[kind] != "replay":
        assert kind in {FAULT_OF[k] for k in FAULT_OF if k.value in kinds}
    doc = await vnet.store.get_dag(check.evidence_cid)
    assert doc["fraud"] is True and doc["findings"]
    assert all("expected" in f and "claimed" in f for f in doc["findings"])


async def test_receipts_verified_together_get_their_own_verdicts(vnet: VNet, validator_factory: Any) -> None:
    """Packing the LLM calls of honest and faulty receipts into shared forward passes changes no verdict."""
    plan: list[dict[str, float]] = [{}, {"tokens": 1.0}, {}, {"seed": 1.0}]
    batch_id, receipts = await vnet.run_batch(QUESTIONS, fault_plan=plan)
    manifest = await load_manifest(
        vnet.store, vnet.manifests[batch_id], ReceiptTree(receipts).root, len(receipts)
    )
    async with validator_factory(1, challenge=False) as v:
        node = vnet.node.address
        together = await v.verifier.verify_many(batch_id, node, range(len(receipts)), manifest)
        alone = [await v.verifier.verify(batch_id, node, i, manifest) for i in range(len(receipts))]
        pipelined: list[Any] = []  # the next group staged while this one is scored
        async for group, verdicts in v.verifier.verify_groups(batch_id, node, range(4), manifest, 3):
            assert [x.index for x in verdicts] == group
            pipelined += verdicts
    assert [x.ok for x in together] == [True, False, True, False]
    assert {"llm.token"} <= together[1].checks and {"llm.sample"} <= together[3].checks

    def shape(vs: list[Any]) -> list[Any]:
        return [[(f.check, f.call, f.position, f.claimed) for f in v.findings] for v in vs]

    assert shape(together) == shape(alone) == shape(pipelined)
    assert [(v.index, v.leaf, v.llm_calls, v.tool_calls) for v in together] == [
        (v.index, v.leaf, v.llm_calls, v.tool_calls) for v in alone
    ]


async def test_unscorable_traces_get_verdicts_not_crashes(vnet: VNet, validator_factory: Any) -> None:
    """A trace the model cannot score (a token outside the vocabulary, a context longer than the
    validator's model holds, a mistyped field) is judged like any other: the batch is finished.
    The inflated prompt is not the one the agent built, so the replay proves it wrong even though
    no forward pass can score it."""

    def edit(i: int, trace: dict[str, Any]) -> dict[str, Any]:
        llm = next(e for e in trace["events"] if e["kind"] == "llm")
        if i == 1:
            llm["output_ids"] = [10**9, *llm["output_ids"][1:]]
        elif i == 2:
            llm["prompt_ids"] = llm["prompt_ids"] * 40  # > the 1024 positions of the shared model
        elif i == 3:
            llm["params"]["temperature"] = "hot"
        return trace

    batch_id, _ = await vnet.run_batch(QUESTIONS, edit_trace=edit)
    async with validator_factory(1, challenge=False) as v:
        await v.step()
        checks = v.db.checks(batch_id)
        assert batch_id not in [b.batch_id for b in v.db.pending_batches()]
    assert [c.index for c in checks] == [0, 1, 2, 3]
    docs = [await vnet.store.get_dag(c.evidence_cid) for c in checks]
    assert [d["fraud"] for d in docs] == [False, True, True, True]
    assert "llm.shape" in checks[1].kinds.split(",")
    assert docs[0]["unverifiable"] is None
    assert checks[2].kinds == "replay"
    assert any("prompt_ids" in f["message"] for f in docs[2]["findings"])
    assert checks[3].kinds == "trace.malformed"


class FailingScorer(ModelScorer):
    """FAKE fault: the validator's own scoring fails (out of memory, a bug) on calls with one prompt,
    a failure that cannot be caused on demand with the real model."""

    failing_prompt: tuple[int, ...] = ()

    def score_many(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        if any(tuple(r.prompt_ids) == self.failing_prompt for r in requests):
            raise MemoryError("simulated")
        return super().score_many(requests)


async def test_a_scoring_failure_makes_one_receipt_unverifiable(vnet: VNet) -> None:
    batch_id, receipts = await vnet.run_batch(QUESTIONS[:3])
    root = ReceiptTree(receipts).root
    manifest = await load_manifest(vnet.store, vnet.manifests[batch_id], root, len(receipts))
    trace = await vnet.store.get_dag(manifest.entries[1].trace_cid)
    scorer = FailingScorer.from_loaded(vnet.loaded)
    scorer.failing_prompt = tuple(next(e for e in trace["events"] if e["kind"] == "llm")["prompt_ids"])
    verifier = Verifier(
        vnet.store, scorer, RegistryRunner(vnet.store), vnet.contracts.domain, "0xv", agents=probe_registry()
    )
    verdicts = await verifier.verify_many(batch_id, vnet.node.address, range(3), manifest)
    assert [(v.ok, v.unverifiable is None) for v in verdicts] == [(True, True), (True, False), (True, True)]
    assert "MemoryError" in (verdicts[1].unverifiable or "")
    assert verdicts[0].llm_calls == verdicts[2].llm_calls == 2


async def test_restart_neither_skips_nor_repeats(vnet: VNet, validator_factory: Any) -> None:
    vnet.faults()
    first, _ = await vnet.run_batch(QUESTIONS[:2])
    events: list[Any] = []
    async with validator_factory(2, "restart.sqlite", events=events) as v:
        await v.step()
    second, _ = await vnet.run_batch(QUESTIONS[2:])
    async with validator_factory(2, "restart.sqlite", events=events) as v:
        await v.step()
        await v.step()
        checks = v.db.checks()
    seen = [e.data["batch_id"] for e in events if e.kind == "batch"]
    assert seen == [first, second]  # each batch processed once, in order, across the restart
    assert [(c.batch_id, c.index) for c in checks] == [(first, 0), (first, 1), (second, 0), (second, 1)]
    assert len([e for e in events if e.kind == "verdict"]) == 4


async def test_challenge_vote_resolve_slash_refund(vnet: VNet, validator_factory: Any) -> None:
    c = vnet.contracts
    vnet.faults(tokens=1.0)
    try:
        _, [receipt] = await vnet.run_batch(QUESTIONS[:1])
    finally:
        vnet.faults()
    cid, voters = await challenged_to_slash(vnet, validator_factory)
    # the challenger showed the manifest's signed request: the refund reached its signer
    assert c.task_manager.claimable(receipt.user) == TASK_FEE
    assert all(c.task_manager.get_vote(cid, v).reward_claimed for v in voters)


async def challenged_to_slash(vnet: VNet, validator_factory: Any) -> tuple[int, list[str]]:
    """One validator steps through this test's batches and opens the one challenge there is to
    open, two others re-check and vote, the vote window passes and the challenger resolves: the
    challenge is FRAUD and the node's stake is cut. Returns the challenge id and the voters."""
    c = vnet.contracts
    stake_before = c.service_manager.get_operator(vnet.node.address).stake
    events: list[Any] = []
    challenger = validator_factory(0, "c.sqlite", events=events)
    voters = [validator_factory(i, f"v{i}.sqlite", events=events, challenge=False) for i in (1, 2)]
    for v in (challenger, *voters):
        await v.setup()
    try:
        await challenger.step()
        [opened] = [e.data for e in events if e.kind == "challenge"]
        cid = opened["challenge_id"]
        for v in voters:
            await v.step()  # re-check independently, then seal a vote (bonded)
        votes = [e.data for e in events if e.kind == "vote"]
        assert len(votes) == 2 and all(d["fraud"] for d in votes)
        assert all(d["evidence"] != opened["evidence"] for d in votes)  # their own evidence
        assert c.task_manager.get_challenge(cid).committed == 2
        advance_to(c.w3, c.task_manager.reveals_at(cid))  # the vote's last REVEAL_WINDOW seconds
        for v in voters:
            await v.step()  # reveal
        assert [e.data["fraud"] for e in events if e.kind == "reveal"] == [True, True]
        increase_time(c.w3, c.task_manager.vote_window() + 1)
        mine(c.w3)
        await challenger.step()  # resolves, claims, withdraws
        for v in voters:
            await v.step()  # claim their vote bonds back with their rewards, and withdraw them
    finally:
        for v in (challenger, *voters):
            await v.cleanup()
    assert c.task_manager.get_challenge(cid).status == ChallengeStatus.FRAUD
    assert c.service_manager.get_operator(vnet.node.address).stake < stake_before
    claims = c.task_manager.contract.events.VoteRewardClaimed().get_logs(
        from_block=0, argument_filters={"challengeId": cid}
    )
    paid = {e["args"]["validator"]: int(e["args"]["amount"]) for e in claims}
    bond = c.task_manager.challenge_bond()
    assert all(paid[v.address] > bond for v in voters), paid  # the bond back, with a share of the pool
    restore_stake(vnet, stake_before)
    return cid, [v.address for v in voters]


def restore_stake(vnet: VNet, stake: int) -> None:
    """Top the slashed node's stake up to ``stake`` again: the module's chain is shared, and a
    node below the minimum commits nothing more."""
    c = vnet.contracts
    missing = stake - c.service_manager.get_operator(vnet.node.address).stake
    if missing > 0:
        c.as_account(vnet.node).service_manager.add_stake(missing)


MEMORY_TASK = {
    "remember": [
        "The spare key is under the blue flower pot.",
        "My dentist appointment is on Tuesday at 3 pm.",
        "Our cat is called Miso and she hates the vacuum.",
    ],
    "question": "Where is the spare key?",
    "k": 1,
    "max_new_tokens": 8,
}


async def test_a_node_showing_the_agent_memories_of_its_choosing_is_slashed(
    vnet: VNet, validator_factory: Any
) -> None:
    """The rational cheat ``search``: the retrieval agent is shown the memory least related to the
    question (with its true score), so the model answers from the wrong note. Receipt, trace and
    replay are consistent; the validators rank the searched root again, and the node is slashed.
    Control: the same task run honestly verifies clean."""
    honest_batch, _ = await vnet.run_batch([], chat_inputs=[MEMORY_TASK], agent=RetrievalAgent)
    vnet.faults(search=1.0)
    try:
        batch_id, _ = await vnet.run_batch([], chat_inputs=[MEMORY_TASK], agent=RetrievalAgent)
    finally:
        vnet.faults()
    async with validator_factory(1, "check.sqlite", challenge=False) as v:
        await v.step()
        [honest] = v.db.checks(honest_batch)
        [cheat] = v.db.checks(batch_id)
    assert honest.ok, honest.kinds
    assert not cheat.ok and cheat.kinds == "memory.search", cheat.kinds
    doc = await vnet.store.get_dag(cheat.evidence_cid)
    assert any("left out entry" in f["message"] for f in doc["findings"]), doc["findings"]
    await challenged_to_slash(vnet, validator_factory)


async def test_a_made_up_write_in_a_task_no_validator_sampled_is_challenged(
    vnet: VNet, validator_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node claims, in a retrieval task's trace, a memory entry other than the one the agent
    added (the user's later tasks would find the node's "fact"), and the task is one this
    validator did not sample. Sampling is chance (and every receipt on the devnet), so "not
    sampled" is the one fake here: `Validator.sample` draws nothing. The write log reads every
    trace in its window, replays the writer's agent, and the diverging entry is verified in full
    and challenged like a sampled one."""
    made_up = {"type": "supernet/memory-entry", "text": "The spare key is in the mailbox.", "metadata": {}}

    def claim_another_entry(i: int, trace: dict[str, Any]) -> dict[str, Any]:
        raw = encode_dag(made_up)
        add = next(e for e in trace["events"] if e["kind"] == "memory.add")
        add["entry"] = link(compute_cid(raw, "dag-cbor"))
        trace["witness"]["blocks"] = [*trace["witness"]["blocks"], raw]
        return trace

    await vnet.store.put_dag(made_up)  # the node's store holds what its trace links
    batch_id, _ = await vnet.run_batch(
        [], chat_inputs=[{**MEMORY_TASK, "k": 1}], agent=RetrievalAgent, edit_trace=claim_another_entry
    )
    monkeypatch.setattr(Validator, "sample", lambda self, batch, seed: [])  # the fake: drawn by no one
    c = vnet.contracts
    stake_before = c.service_manager.get_operator(vnet.node.address).stake
    events: list[Any] = []
    async with validator_factory(0, "writer.sqlite", events=events) as v:
        await v.step()
        await v.step()  # the write log runs after the batch's (empty) sample
        [check] = v.db.checks(batch_id)
        [opened] = [e.data for e in events if e.kind == "challenge"]
        increase_time(c.w3, c.task_manager.vote_window() + 1)
        mine(c.w3)
        await v.step()  # resolves: the challenger's own stake is over the quorum here
    assert [e.data["sampled"] for e in events if e.kind == "batch"] == [[]]
    assert not check.ok and "replay" in check.kinds.split(","), check.kinds
    assert opened["batch_id"] == batch_id and opened["index"] == 0
    assert c.task_manager.get_challenge(opened["challenge_id"]).status == ChallengeStatus.FRAUD
    assert c.service_manager.get_operator(vnet.node.address).stake < stake_before
    restore_stake(vnet, stake_before)


async def test_healthz_and_metrics_follow_the_validators_work(vnet: VNet, validator_factory: Any) -> None:
    """`--http-port` on a running validator: /healthz turns 200 once steps succeed; /metrics counts
    the receipts checked and the findings of a faulty one (the status rules: test_validator_ops)."""
    from supernet.sdk.devnet.processes import free_port

    port = free_port()
    vnet.faults(tokens=1.0)
    try:
        batch_id, _ = await vnet.run_batch(QUESTIONS[:1])
    finally:
        vnet.faults()
    async with validator_factory(0, http_port=port, challenge=False) as v, httpx.AsyncClient() as http:
        running = asyncio.create_task(v.run_forever())
        base = f"http://127.0.0.1:{port}"
        health = None
        for _ in range(600):
            with contextlib.suppress(httpx.HTTPError):
                health = await http.get(f"{base}/healthz")
                if health.status_code == 200 and v.db.checks(batch_id):
                    break
            await asyncio.sleep(0.1)
        metrics = (await http.get(f"{base}/metrics")).text
        v.stop()
        await running
    assert health is not None and health.status_code == 200, health and health.text
    assert health.json()["status"] == "ok" and health.json()["validator"] == v.address
    assert 'supernet_validator_receipts_total{result="faulty"}' in metrics, metrics[:2000]
    assert 'supernet_validator_findings_total{check="llm.token"}' in metrics
    assert "supernet_validator_step_seconds_count" in metrics
