"""Review: the validator's resource bounds. Can a node (with users of its own) make validators spend
unbounded or disproportionate time, memory or store round trips on what it commits, so that they
skip, stall or give up on other receipts (a cheater's go unchecked), or lose their bonds?

Real parts: Anvil with the contracts deployed, the embedded store over HTTP, SmolLM2 in the node's
kernel and in the validator (`vnet`, `validator_factory`), the real `Validator.step`, `Verifier`,
`WriteLog`, `StoreClient`. Where a test needs hours of validator time it advances the chain's clock
inside the real call that would take them (the scoring of the flood), never the code under test.

Tried, measured, found (FOUND: a known limit, test passes while it holds; holds: a defence):

1. FIXED (was FOUND): prompts the node serves from its prefix cache cost the validator in full.
   Twelve chat tasks on two ~280-token documents: in steady state the node prefills ~11 tokens per
   task, the validator read ~320 per receipt (it shared only the prefix common to every call of a
   whole pass, and the two documents differ in their first token): at the protocol's 2048-token
   context ~180x per receipt, ~18x per committed receipt at 10 % sampling. Now the scorer walks a
   pass's calls as a radix tree over their prompts, each shared prefix computed once and the
   last few kept across passes (`ModelScorer.score_many`): ~64 tokens per receipt, about half the
   node's own model work on the same tasks (tests/unit/test_validator_prefix_tree.py).
2. FOUND (mostly fixed: another node's flood no longer delays a node's batches, turns go by
   node; a node's own flood, in one batch or many, delays its later batches by a group per flood
   batch, not by its whole check, `Validator._check_batches` / `TurnOrder`): what remains is one
   group that takes longer than a window. It was: `Validator.step` checked pending batches one after the
   other, so a node's flood of (honest, expensive) batches ahead of its own cheat made every
   validator reach it too late.
3. FIXED (was FOUND): `WriteLog.step` read every committed trace (100 %, not the sample) one at a
   time inside the step, before any vote: a node whose peer delivered each block just inside the
   store's 60 s timeout held the step ~4 h per 256 receipts. Now reads go `READS_IN_FLIGHT` at a
   time (handled in order), each within `READ_DEADLINE_S` in all.
4. FIXED (was FOUND): a crafted constrained call cost the validator a vocabulary row of mask per
   output token, and calls longer than the protocol's 2048 positions were scored anyway (9 KB of
   trace -> 47 MiB of masks). Now a call over ``MAX_CONTEXT_TOKENS`` is a shape finding, never
   scored nor walked (`llm_check.check_tokens`).
5. FIXED (was FOUND): a receipt whose scoring failed on the validator was recorded as ``ok`` and
   never looked at again. Now such a verdict (`Verdict.local_failure`) is not recorded: the entry is
   checked again in full, with back-off in chain time, while its own window is open
   (`Validator._settle`, `Database.mark_recheck`, `service.recheck_at`).
6. FIXED (was FOUND): evidence was unbounded (~10,500 findings, ~1.2 MB, over the store's block):
   the step failed before anything after the batch loop, every step. Now evidence holds the first
   ``MAX_EVIDENCE_FINDINGS`` findings, values cut at ``MAX_EVIDENCE_VALUE_CHARS``.
7. holds: a manifest over ``MAX_MANIFEST_ENTRIES`` is refused before an entry is parsed.
8. holds: a trace over ``MAX_TRACE_BYTES`` is refused before it is decoded.
9. holds: when a packed pass fails, its receipts are scored alone (`Verifier._score`): a
   pass-busting companion does not shield a cheat in the same group.

Also seen (not tested here): nobody sealed seeds (then `TaskManager.sealSeed`; now the validator
seals each seed block it reads in the SeedBeacon, where the seed comes from), so a validator that a
flood held back past the seed's lifetime met ``EXPIRED_SEED`` and checked every entry (10x at
10 %), which fed the backlog; a backlog also makes
`WriteLog` record writers ``expired``, whose traces the origin walk then fetches (`MAX_WALK`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from supernet.sdk.chain.anvil import advance_to, increase_time, mine
from supernet.sdk.store import StoreClient
from validator_fixtures import VNet

from tests.unit.test_validator_attacks import WEIGHTS


def scoring_through(
    vnet: VNet, validator_factory: Any, wrap: Callable[[Callable[[Any], Any], Any], Any], **settings: Any
) -> Any:
    """A validator (``validator_factory(1, **settings)``) whose scorer, the real one of ``vnet``'s
    model, runs every pass through ``wrap(real_score_many, requests)``."""
    from supernet.validator.scoring import ModelScorer

    scorer = ModelScorer.from_loaded(vnet.loaded)
    real = scorer.score_many
    scorer.score_many = lambda requests: wrap(real, requests)  # type: ignore[method-assign]
    v = validator_factory(1, **settings)
    v._scorer = scorer
    return v


LONG_FILLER = " ".join(
    f"Entry {k}: the {('red', 'blue', 'green', 'amber')[k % 4]} crate holds {k * 7 % 13} parts."
    for k in range(22)
)
"""About 280 tokens of a long document the user's chats share (a report, a codebase, a system prompt)."""
HEADS = ("Alpha ledger.", "Beta ledger.")
"""Two documents: they differ in their first token after the chat template's header."""


class TokenMeter:
    """Tokens through the decoder (every forward pass of the shared model, node and validator alike)."""

    def __init__(self, model: Any) -> None:
        self.tokens = 0
        self._handle = model.register_forward_pre_hook(self._count)

    def _count(self, module: Any, args: tuple[Any, ...]) -> None:
        self.tokens += int(args[0].numel())

    def close(self) -> None:
        self._handle.remove()


@pytest.mark.anvil
@pytest.mark.model
async def test_defence_prompts_the_node_serves_from_its_prefix_cache_cost_the_validator_no_more(
    vnet: VNet, validator_factory: Any
) -> None:
    """Attack (cost asymmetry): the node and users of its own run chat tasks on long documents it
    keeps in its engine's prefix cache (`PrefixCache`, 8 entries), two documents interleaved in the
    batch, one output token each. The node prefills each document once and then only the tail of
    each question; the validator re-scored the whole prompt of every sampled receipt, because it
    kept only the prefix common to *every* call of a pass (here the chat template's header).
    Measured with a hook on the shared model's forward: steady state ~11 tokens per task on the
    node, ~320 per receipt on the validator; the gap grew with the document (up to the 2048-token
    context) and with the batch (512).

    Harm (before): at 10 % sampling each committed receipt cost every validator ~18x the node's
    model work; a node could buy validator hours with cheap, honest receipts (finding 2 turns those
    hours into unchecked cheats).
    Defence (by design): the validator's cost follows the node's. Its scorer walks the calls of a
    pass as a radix tree over their prompts, computing each shared prefix once and keeping the last
    few across passes (`ModelScorer.score_many`), as the node's engine reuses prefixes: here each
    document is read once per validator, and the validator's tokens stay below the node's."""
    vnet.faults()
    n = 12
    inputs = [
        {
            "messages": [
                {"role": "user", "content": f"{HEADS[i % 2]} {LONG_FILLER} Question {i}: reply ok."}
            ],
            "max_new_tokens": 1,
        }
        for i in range(n)
    ]
    meter = TokenMeter(vnet.loaded.model)
    per_task: list[int] = []
    real_run = vnet.kernel.run_task

    async def metered(spec: Any) -> Any:
        before = meter.tokens
        out = await real_run(spec)
        per_task.append(meter.tokens - before)
        return out

    vnet.kernel.run_task = metered
    try:
        started = time.perf_counter()
        batch_id, _ = await vnet.run_batch([], chat_inputs=inputs)
        node_s = time.perf_counter() - started
        node_tokens = meter.tokens
        meter.tokens = 0
        async with validator_factory(2, challenge=False) as v:
            started = time.perf_counter()
            await v.step()
            validator_s = time.perf_counter() - started
            checks = v.db.checks(batch_id)
        validator_tokens = meter.tokens
    finally:
        vnet.kernel.run_task = real_run
        meter.close()
    print(
        f"\nnode: {node_tokens} tokens ({per_task}), {node_s:.1f} s; "
        f"validator: {validator_tokens} tokens, {validator_s:.1f} s"
    )
    assert len(checks) == n and all(c.ok for c in checks), checks  # an honest node, never accused
    steady = per_task[4:]  # both documents cached: the node prefills the question's tail only
    assert max(steady) < 40, per_task
    assert validator_tokens / n < 100, validator_tokens  # each document once, not once per receipt
    assert validator_tokens <= node_tokens, (validator_tokens, node_tokens)


@pytest.mark.anvil
@pytest.mark.model
async def test_known_limit_one_group_that_outlasts_a_window_lets_a_later_cheat_pass_it(
    vnet: VNet, validator_factory: Any
) -> None:
    """Attack (stall -> unchecked cheat), what remains: a flood batch committed just before a
    cheating one, whose *first group alone* takes longer than a challenge window to check
    (modelled here: the chain clock moves a window while its calls are scored). Batches are checked
    in turns, a group each (`Validator._check_batches`), so the cheat is reached right after that
    group, but its window has passed: it is finished ``past_window`` (nothing found could be
    challenged any more).

    Harm: a cheat unchecked in time by every validator the group delays. What bounds it: a group is
    8 receipts, each within the protocol's context (2,048 positions) and trace cap, and the
    validator's cost follows the node's (prefix sharing), so such a group takes a node ~8/p
    receipts' worth of its own model work per window at sampling rate p. Fix (by design): a
    per-batch budget, checks of a batch past its budget resumed in later turns, and a validator
    that provably works on a batch extending its window, as availability answers do."""
    flood, _ = await vnet.run_batch(["Name a fruit."], max_new_tokens=4)  # honest, only expensive
    cheat, _ = await vnet.run_batch(["Say hi."], max_new_tokens=4, fault_plan=[{"tokens": 1.0}])
    w3 = vnet.contracts.w3
    window = vnet.contracts.task_manager.challenge_window()
    scored_first: list[int] = []

    def hours_of_scoring(real_score: Callable[[Any], Any], requests: Any) -> Any:
        if not scored_first:  # the flood's first group: what its real cost at scale takes, in chain time
            scored_first.append(len(requests))
            increase_time(w3, window + 1)
            mine(w3, 1)
        return real_score(requests)

    v = scoring_through(vnet, validator_factory, hours_of_scoring, challenge=False)
    async with v:
        await v.step()
        assert [c.ok for c in v.db.checks(flood)] == [True]
        assert v.chain.timestamp() >= v.chain.batch(cheat).committed_at + window  # its window is over
        # reached after that one group, too late to act on: finished unchecked (nothing found now
        # could be challenged), no challenge
        assert v.db.checks(cheat) == [] and v.db.batch(cheat).status == "past_window"
        assert v.db.pending_batches() == []


@pytest.mark.anvil
@pytest.mark.model
async def test_defence_a_flood_delays_a_later_batch_by_a_group_not_by_its_whole_check(
    vnet: VNet, validator_factory: Any
) -> None:
    """Attack (stall -> unchecked cheat; was a known limit): the node commits a flood batch of 17
    honest receipts (groups of 8, 8 and 1 to check) just before a batch with a cheat; each full
    group of the flood takes half a challenge window to check (modelled: the chain clock moves while
    its calls are scored). Batch by batch, the flood's groups took the whole window and the
    cheat was finished ``past_window`` without a look. Now pending batches are checked in turns, a
    group each (`Validator._check_batches`): the cheat is checked after the flood's first group,
    inside its window, and challenged."""
    flood, _ = await vnet.run_batch([f"Name fruit number {i}." for i in range(17)], max_new_tokens=1)
    cheat, _ = await vnet.run_batch(["Say hi."], max_new_tokens=4, fault_plan=[{"tokens": 1.0}])
    w3 = vnet.contracts.w3
    window = vnet.contracts.task_manager.challenge_window()
    groups: list[int] = []

    def half_a_window(real_score: Callable[[Any], Any], requests: Any) -> Any:
        if len(requests) > 2:  # a full group of the flood (a receipt holds two calls)
            groups.append(len(requests))
            increase_time(w3, window // 2 + 1)
            mine(w3, 1)
        return real_score(requests)

    events: list[Any] = []
    v = scoring_through(vnet, validator_factory, half_a_window, events=events)
    async with v:
        await v.step()
        assert len(groups) == 2  # the flood's full groups were checked too
        # ... and its last receipt, reached after the flood's own window, was not: nothing to act on
        assert all(c.ok for c in v.db.checks(flood)) and len(v.db.checks(flood)) == 16
        flood_row = v.db.batch(flood)
        assert flood_row is not None and flood_row.status == "past_window"
        [check] = v.db.checks(cheat)
        assert not check.ok and check.challenge_id is not None  # in its window: challenged
        assert [e.data["batch_id"] for e in events if e.kind == "challenge"] == [cheat]


class SlowPeer(httpx.AsyncBaseTransport):
    """The validator's store as it sees a node that serves its trace blocks slowly (its peer sends
    each block ``delay`` seconds after being asked, within the validator's store timeout): the
    real store answers every read, late."""

    def __init__(self, delay: float) -> None:
        self.delay, self.reads, self.in_flight, self.most_in_flight = delay, 0, 0, 0
        self._inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/block/get"):
            self.reads += 1
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            try:
                await asyncio.sleep(self.delay)
            finally:
                self.in_flight -= 1
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


@pytest.mark.anvil
@pytest.mark.model
async def test_defence_traces_served_slowly_are_read_together(vnet: VNet, validator_factory: Any) -> None:
    """Attack (slow store; was a known limit): a node serves the traces of its batches slowly (each
    block just before the validator's store timeout). `WriteLog.step` read every committed trace
    one at a time, inside `Validator.step`, before `vote_open`: at the 60 s timeout a step lasted
    ~4 h per 256 receipts, with no vote sealed and nothing claimed (every read succeeded). Now the
    write log reads `READS_IN_FLIGHT` traces together and handles them in order, each read within
    `READ_DEADLINE_S` in all (a slower one counts as a failure, toward the availability claim):
    the six slow reads overlap, and votes open after about one delay, not six."""
    vnet.faults()
    n, delay = 6, 1.0
    inputs = [{"messages": [{"role": "user", "content": f"Say {i}."}], "max_new_tokens": 1} for i in range(n)]
    batch_id, _ = await vnet.run_batch([], chat_inputs=inputs)
    peer, sampled = SlowPeer(delay), SlowPeer(delay)
    v = validator_factory(2, challenge=False)
    async with v:
        v.writes.store = StoreClient(vnet.store_url, transport=peer)
        v.verifier.store = StoreClient(vnet.store_url, transport=sampled)
        real_vote_open = v.disputes.vote_open
        voting_at: list[float] = []

        async def vote_open(now: int, until: float | None = None) -> None:
            voting_at.append(time.perf_counter())
            await real_vote_open(now, until)

        v.disputes.vote_open = vote_open  # type: ignore[method-assign]
        started = time.perf_counter()
        await v.step()
        waited = voting_at[0] - started
        rows = v.db._all("SELECT status FROM ingested WHERE batch_id = ?", batch_id)
        missing = v.db.missing("retrying")
        checks = v.db.checks(batch_id)
        await v.writes.store.aclose()
        await v.verifier.store.aclose()
    print(f"\n{peer.reads} slow trace reads; votes opened {waited:.2f} s into the step")
    assert sampled.reads == n and sampled.most_in_flight == n and len(checks) == n  # the sample: overlapped
    assert peer.reads == n and peer.most_in_flight == n  # the write log: read together too
    assert sorted(r[0] for r in rows) == ["read"] * n and missing == []  # every read succeeded
    # overlapped: about one delay for each of the two readers, not six (~2.8 s measured; sequential
    # reads of either reader alone would take n * delay, both 2 * n * delay)
    assert waited < n * delay, waited


class MaskMeter:
    """The validator's scorer as far as staging and `score_calls` see it (the real tokenizer and
    vocabulary, SmolLM2's 8192 positions, what `ModelScorer.load` holds by default); it records
    what one scoring pass is handed, then fails as an allocator would at production sizes."""

    weights_id = WEIGHTS
    dtype = "float32"
    max_positions = 8192

    def __init__(self, loaded: Any) -> None:
        from supernet.validator.scoring import eos_ids_of

        self.tokenizer = loaded.tokenizer
        self.vocab_size = int(loaded.model.cfg.vocab_size)
        self.eos_ids = eos_ids_of(loaded)
        self.mask_bytes: list[int] = []
        self.positions: list[list[int]] = []

    def score_many(self, requests: Any) -> list[Any]:
        self.mask_bytes.append(
            sum(r.allowed.numel() * r.allowed.element_size() for r in requests if r.allowed is not None)
        )
        self.positions.append([len(r.prompt_ids) + len(r.output_ids) for r in requests])
        raise MemoryError("stand-in: the pass is not run here")

    def decode(self, ids: Any) -> str:
        return ""


@pytest.mark.model
async def test_defence_a_call_over_the_protocols_context_is_a_finding_never_scored(
    smollm2_loaded: Any,
) -> None:
    """Attack (memory; was a known limit): a receipt of constrained calls of 1 prompt token and
    4,000 output tokens of one byte each. A call longer than the protocol's ``MAX_CONTEXT_TOKENS``
    was scored as long as the scorer's rotary table (8192) held it, with the masks of every output
    position built first: a 9 KB trace handed 47 MiB of masks to one pass (375 MiB as bool), a
    384 KiB trace ~2 GiB. Now such a call is a shape finding (no kernel records one) and is never
    scored, nor its grammar walked: no pass, no masks, and the receipt is faulty."""
    from supernet.node.agents.chat import ChatAgent
    from supernet.node.llm.grammar import grammar_of
    from supernet.sdk.formats.trace import MAX_CONTEXT_TOKENS
    from supernet.validator.tool_check import RegistryRunner
    from supernet.validator.verifier import Manifest, Verifier

    from tests.unit.test_validator_attacks import (
        DOMAIN,
        MODEL_ID,
        NODE,
        USER,
        DictStore,
        commit_entry,
        registry,
        signed_task,
        trace_doc,
    )

    grammar = grammar_of({"type": "json_object"})
    calls, out_len = 2, 4000  # past the protocol's 2048-position context, within the scorer's 8192

    def event(k: int) -> dict[str, Any]:
        return {
            "kind": "llm",
            "index": k,
            "model_id": MODEL_ID,
            "messages": [{"role": "user", "content": "hi"}],
            "prompt_ids": [1],
            "output_ids": [17] * out_len,  # ids below 24: one byte each in dag-cbor
            "params": {
                "max_new_tokens": out_len,
                "temperature": 0.0,
                "top_p": 1.0,
                "seed": 0,
                "stop_token_ids": None,
                "stop": [],
                "grammar": grammar,
            },
            "finish_reason": "length",
            "logprobs": [],
            "fingerprints": None,
            "text": "",
            "preemptions": 0,
        }

    store = DictStore()
    req, task_id = signed_task(ChatAgent, "hi")
    doc = trace_doc(ChatAgent, task_id, USER.address, "hi", [event(k) for k in range(calls)], "")
    entry = commit_entry(store, req, task_id, doc)
    trace_bytes = len(store.blocks[entry.trace_cid])
    meter = MaskMeter(smollm2_loaded)
    verifier = Verifier(
        store, meter, RegistryRunner(store), DOMAIN, "0x" + "44" * 20, agents=registry((ChatAgent,))
    )
    verdict = await verifier.verify(1, NODE.address, 0, Manifest({0: entry}))
    assert trace_bytes < 16_000 and meter.positions == [] and meter.mask_bytes == []  # nothing scored
    assert not verdict.ok and verdict.unverifiable is None
    over = [f for f in verdict.findings if "protocol's context" in f.message]
    assert [f.call for f in over] == list(range(calls)) and over[
        0
    ].claimed == 1 + out_len > MAX_CONTEXT_TOKENS


@pytest.mark.anvil
@pytest.mark.model
async def test_defence_a_cheat_whose_scoring_fails_here_is_checked_again(
    vnet: VNet, validator_factory: Any
) -> None:
    """Attack (which way a failure goes; was a known limit): the node cheats on its tokens only;
    the validator's scoring fails (an allocation error). The verdict is unverifiable (an honest
    node is never accused for the validator's trouble), but it used to be recorded as ``ok`` and
    never looked at again. Now a verdict that only says checking failed on this validator
    (`Verdict.local_failure`) is not recorded: the entry is checked again in full while its window
    is open (after a back-off in chain time: tests/unit/test_validator_recheck_backoff.py), and
    once memory is back the cheat is found and challenged."""
    cheat, _ = await vnet.run_batch(["Say hi."], max_new_tokens=4, fault_plan=[{"tokens": 1.0}])
    failing = [True]

    def out_of_memory(real_score: Callable[[Any], Any], requests: Any) -> Any:
        if failing[0]:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory")
        return real_score(requests)

    events: list[Any] = []
    v = scoring_through(vnet, validator_factory, out_of_memory, events=events)
    async with v:
        await v.step()
        assert v.db.checks(cheat) == []  # no verdict recorded: the failure was this side's
        assert not [e for e in events if e.kind == "verdict"]
        assert (cheat, 0) in v.db.diverged_pending()  # to be checked again
        await v.step()  # still failing (or backing off): still pending, nothing recorded
        assert v.db.checks(cheat) == [] and (cheat, 0) in v.db.diverged_pending()
        failing[0] = False  # memory is back
        [row] = v.db.diverged_rows()
        advance_to(vnet.contracts.w3, row.next_at)  # the back-off is over
        await v.step()
        [check] = v.db.checks(cheat)
        assert not check.ok and check.challenge_id is not None  # found and challenged
        assert (cheat, 0) not in v.db.diverged_pending()
        assert [e for e in events if e.kind == "challenge"]


def wrong_call(k: int, model_id: str) -> dict[str, Any]:
    """A tiny greedy LLM call whose every output token and logprob is wrong: about 11 findings
    (five tokens, five logprobs, the fingerprints) for ~370 bytes of trace."""
    return {
        "kind": "llm",
        "index": k,
        "model_id": model_id,
        "messages": [{"role": "user", "content": "hi"}],
        "prompt_ids": [1, 2, 3],
        "output_ids": [30, 31, 32, 33, 34, 35],
        "params": {
            "max_new_tokens": 6,
            "temperature": 0.0,
            "top_p": 1.0,
            "seed": 0,
            "stop_token_ids": None,
            "stop": [],
        },
        "finish_reason": "length",
        "logprobs": [0.0] * 6,
        "fingerprints": None,
        "text": "",
        "preemptions": 0,
    }


@pytest.mark.anvil
@pytest.mark.model
async def test_defence_a_trace_with_thousands_of_findings_is_accused_with_bounded_evidence(
    vnet: VNet, validator_factory: Any
) -> None:
    """Attack (evidence size; was a known limit): a trace of ~960 tiny greedy calls whose every
    token and logprob is wrong (~360 KB, under ``MAX_TRACE_BYTES``) gave ~10,500 findings, ~1.2 MB
    of evidence, over the store's 1 MiB block: publishing raised, the step ended before votes and
    settlements, and the next step started with the same batch: a cheat committed after it was
    never reached, and the poison never accused. Now evidence holds the first
    ``MAX_EVIDENCE_FINDINGS`` findings (values cut at ``MAX_EVIDENCE_VALUE_CHARS``): the poison
    is recorded faulty with its evidence, and the cheat after it is reached and found."""
    from supernet.sdk.formats.trace import MAX_TRACE_BYTES
    from supernet.sdk.store.cids import MAX_BLOCK_SIZE, encode_dag
    from supernet.validator.evidence import MAX_EVIDENCE_FINDINGS

    vnet.faults()
    calls = 960
    sizes: list[int] = []

    def poison(i: int, doc: dict[str, Any]) -> dict[str, Any]:
        out = {**doc, "events": [wrong_call(k, doc["model_id"]) for k in range(calls)]}
        sizes.append(len(encode_dag(out)))
        return out

    hi = [{"messages": [{"role": "user", "content": "hi"}], "max_new_tokens": 1}]
    poisoned, _ = await vnet.run_batch([], chat_inputs=hi, edit_trace=poison)
    cheat, _ = await vnet.run_batch(["Say hi."], max_new_tokens=4, fault_plan=[{"tokens": 1.0}])
    assert sizes[0] <= MAX_TRACE_BYTES < MAX_BLOCK_SIZE  # a trace within every protocol cap
    async with validator_factory(1, challenge=False) as v:
        await v.step()
        [poison_check] = v.db.checks(poisoned)
        [cheat_check] = v.db.checks(cheat)
        assert not poison_check.ok and not cheat_check.ok  # both found faulty, in one step
        evidence = await v.store.get_dag(poison_check.evidence_cid)
        assert len(evidence["findings"]) == MAX_EVIDENCE_FINDINGS
        assert len(encode_dag(evidence)) < MAX_BLOCK_SIZE // 10
        assert [b.batch_id for b in v.db.pending_batches()] == []


def test_defence_a_manifest_over_the_batch_cap_is_refused_before_its_entries_are_read() -> None:
    """Attack: a manifest listing many more receipts than a batch may commit, so that a validator
    parses (and hashes into a tree) thousands of entries. Holds: ``receipts`` is checked against
    ``MAX_MANIFEST_ENTRIES`` (= ``TaskManager.MAX_BATCH_COUNT``) before any entry is parsed, in
    well under a second; a manifest at the cap is read."""
    from supernet.sdk.chain.eip712 import TaskRequest, sign_task_request
    from supernet.sdk.chain.receipts import Receipt, sign_receipt
    from supernet.sdk.formats.fields import FormatError
    from supernet.sdk.formats.manifest import MAX_MANIFEST_ENTRIES, BatchManifest, ManifestEntry

    from tests.unit.test_validator_attacks import DOMAIN, NODE, USER

    req = TaskRequest(USER.address, NODE.address, bytes(32), bytes(32), bytes(32), 1, 1, 2**40)
    receipt = Receipt(bytes(32), USER.address, bytes(32), bytes(32), bytes(32), bytes(32), 1)
    entry = ManifestEntry(
        receipt,
        receipt.leaf(),
        sign_receipt(receipt, NODE),
        "bafyreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy",
        "chat",
        req,
        sign_task_request(req, DOMAIN, USER),
    )
    full = BatchManifest.seal(NODE.address, [entry] * MAX_MANIFEST_ENTRIES).to_dag()
    assert len(BatchManifest.from_dag(full).entries) == MAX_MANIFEST_ENTRIES  # at the cap: read
    over = {**full, "receipts": full["receipts"] * 40}  # 20,480 entries
    started = time.perf_counter()
    with pytest.raises(FormatError, match=f"more than {MAX_MANIFEST_ENTRIES}"):
        BatchManifest.from_dag(over)
    assert time.perf_counter() - started < 0.5


def test_defence_a_trace_over_the_byte_cap_is_refused_before_it_is_decoded() -> None:
    """Attack: a trace block far over the cap, so that a validator decodes it before refusing.
    Holds: the size is checked before the bytes are decoded (a block that is not CBOR at all is
    refused for its size), and the refusal is the node's fault (`trace_from_block`)."""
    from supernet.sdk.formats.fields import FormatError
    from supernet.sdk.formats.trace import MAX_TRACE_BYTES, example_dag
    from supernet.sdk.store.cids import encode_dag
    from supernet.validator.trace_view import MalformedTrace, parse_trace_block

    block = encode_dag({**example_dag(), "input": "x" * MAX_TRACE_BYTES})  # well-formed dag-cbor
    with pytest.raises(MalformedTrace, match="over the protocol's"):
        parse_trace_block(block)
    with pytest.raises(MalformedTrace, match="over the protocol's"):  # not even decoded: not CBOR at all
        parse_trace_block(b"\xff" * (MAX_TRACE_BYTES + 1))
    with pytest.raises((MalformedTrace, FormatError)) as small:  # control: a small non-CBOR block
        parse_trace_block(b"\xff" * 64)
    assert "over the protocol's" not in str(small.value)


@pytest.mark.anvil
@pytest.mark.model
async def test_defence_a_pass_busting_companion_does_not_shield_a_cheat_in_its_group(
    vnet: VNet, validator_factory: Any
) -> None:
    """Attack: hide a cheat behind a companion receipt that makes the shared scoring pass fail
    (too many positions for this validator's memory, modelled by a scorer that refuses passes
    over a budget), hoping the whole group turns unverifiable. Holds: `Verifier._score` scores the
    receipts one by one after a failed pass, so the cheat is judged alone and caught, and the
    companion is faulty on its model-free findings."""
    vnet.faults()
    budget = 300  # positions one pass may hold here before the allocator gives up

    def bust(i: int, doc: dict[str, Any]) -> dict[str, Any]:
        if i:
            return doc
        return {**doc, "events": [*doc["events"], *(wrong_call(k, doc["model_id"]) for k in range(40))]}

    batch_id, _ = await vnet.run_batch(
        ["Name a fruit.", "Say hi."], max_new_tokens=4, fault_plan=[{}, {"tokens": 1.0}], edit_trace=bust
    )
    passes: list[int] = []

    def limited(real_score: Callable[[Any], Any], requests: Any) -> Any:
        positions = sum(len(r.prompt_ids) + len(r.output_ids) for r in requests)
        passes.append(positions)
        if positions > budget:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory")
        return real_score(requests)

    v = scoring_through(vnet, validator_factory, limited, challenge=False)
    async with v:
        await v.step()
        checks = {c.index: c for c in v.db.checks(batch_id)}
    assert passes[0] > budget and any(p <= budget for p in passes[1:]), passes  # together, then alone
    assert not checks[1].ok and "llm.token" in checks[1].kinds, checks[1]  # the cheat: caught alone
    assert not checks[0].ok, checks[0]  # the companion: faulty on its model-free findings


def test_defence_one_nodes_flood_does_not_delay_another_nodes_batches() -> None:
    """Attack (a part of finding 2 closed): node A commits a flood of costly batches just before
    node B's cheat. Checked oldest first over all nodes, the flood came first and B's batch could
    be reached after its window. Turns go by node (`TurnOrder`: the node served longest ago, nodes
    arriving in the order of their oldest batch), so B's batch takes the second turn, whatever A
    commits; and within a node each pending batch takes a turn before any takes a second, so A's
    flood delays A's own later batches by one group each."""
    from supernet.validator.db import BatchRow
    from supernet.validator.turns import TurnOrder

    def row(batch_id: int, node: str) -> BatchRow:
        return BatchRow(batch_id, node, b"\x00" * 32, 1, batch_id, "", "pending")

    a, b = "0x" + "aa" * 20, "0x" + "bb" * 20
    pending = {i: row(i, a) for i in range(1, 9)}
    pending |= {9: row(9, b.upper().replace("0X", "0x")), 10: row(10, a), 11: row(11, b)}
    order = TurnOrder()
    order.admit(pending.values())
    turns = []
    for _ in range(2 * len(pending)):  # nothing finishes: two turns for each batch
        batch = order.next(pending)
        assert batch is not None
        turns.append((batch.batch_id, batch.node.lower()))
        order.served(batch)
    assert turns[:4] == [(1, a), (9, b), (2, a), (11, b)]  # B's cheat right after A's first batch
    assert [i for i, n in turns if n == b] == ([9, 11] * 6)[:11]  # a turn in each round of the nodes
    assert [i for i, n in turns if n == a] == [1, 2, 3, 4, 5, 6, 7, 8, 10, 1, 2]  # each a turn first
    assert order.next(pending, set(pending)) is None
    assert TurnOrder().next({}) is None
