"""Regression tests of the validator on real parts (Anvil, store, SmolLM2, the node's kernel).

Each test replays an attack of an adversarial review and asserts it now fails (the cheat is
caught, the validator is not stalled, the honest node is not flagged).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
import torch
from supernet.sdk.chain.receipts import trace_cid
from test_validator_precision import QUESTIONS, screened, verdicts
from validator_fixtures import VNet

SHORT = [*QUESTIONS, "Is water wet? Answer yes or no.", "Pick a number.", "Say hi.", "Name a colour."]

pytestmark = [pytest.mark.anvil, pytest.mark.model, pytest.mark.slow, pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def bf16_screen_scorer() -> Any:
    """A bfloat16 scorer: the screen of a validator on a bf16-capable CPU or any CUDA GPU."""
    from supernet.validator.scoring import ModelScorer

    return ModelScorer.load("smollm2-135m", dtype="bfloat16")


class Pick(random.Random):
    """A stand-in for the arbiter's private draw that picks the accepted calls ``wanted`` names (else
    the first ones): to show which draw catches what. The real draw is `secrets.SystemRandom`."""

    def __init__(self, wanted: Callable[[Any], bool]) -> None:
        super().__init__(0)
        self.wanted = wanted

    def sample(self, population: Any, k: int, *, counts: Any = None) -> list[Any]:
        pool = list(population)
        return ([c for c in pool if self.wanted(c)] or pool)[:k]


async def test_bf16_compute_sold_as_float32_is_caught_by_the_arbiter_sample(
    vnet: VNet, bf16_screen_scorer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression (was a known limit): a node computes in bfloat16 (cheapest) but serves the float32
    id and writes float32 in the trace. A float32 validator flags it; the default validator of bf16
    hardware (bf16 screen + float32 arbiter) used to accept it: `Tolerance.screening` keeps the bf16
    pair's logprob (0.75) and fingerprint (15 %) bounds, and only calls whose *tokens* the screen
    doubted went to the arbiter. Now the arbiter also re-scores a random draw of every float32
    receipt's accepted calls (`Verifier.arbiter_draw`), and every bf16-computed call it re-scores
    is an `llm.model` finding: every receipt is caught (and the greedy calls of such a node go to
    the arbiter without the screen, `Verifier._route`). Control: with an empty draw and the screen
    judging every call, i.e. the old rule, some receipt passes."""
    from supernet.node.llm import LLMEngine
    from supernet.node.llm.loader import load_model
    from supernet.validator import verifier as verifier_module

    vnet.faults()
    loaded = load_model("smollm2-135m", dtype=torch.bfloat16, max_positions=1024)
    engine = LLMEngine(loaded.model, loaded.tokenizer, loaded.model_id, max_batch=4, max_seq_len=1024)
    engine.compute, engine.model_id = "float32", vnet.kernel.model_id  # the dearer product's id
    async with vnet.other_kernel(engine) as kernel:
        batch_id, receipts = await vnet.run_batch(QUESTIONS, max_new_tokens=32, kernel=kernel)
    trace = await vnet.store.get_dag(trace_cid(receipts[0].trace_hash))
    assert trace["engine"]["dtype"] == "float32"
    assert all("0x" + r.model_id.hex() == vnet.kernel.model_id for r in receipts)

    exact = await verdicts(vnet, batch_id, receipts, None)  # a float32-only validator
    assert all(not v.ok for v in exact), [sorted(v.checks) for v in exact]

    found = await screened(vnet, batch_id, receipts, bf16_screen_scorer, arbiter=True)
    print("screened: ok", [v.ok for v in found], "rechecked", [v.rechecked for v in found])
    assert all(not v.ok and "llm.model" in v.checks for v in found), [sorted(v.checks) for v in found]
    assert all(v.rechecked >= 1 for v in found)

    class NoDraw(random.Random):
        def sample(self, population: Any, k: int, *, counts: Any = None) -> list[Any]:
            return []

    monkeypatch.setattr(
        verifier_module.Verifier, "_route", lambda self, s, recheck_all: ([], list(s.scorable))
    )
    old_rule = await screened(
        vnet, batch_id, receipts, bf16_screen_scorer, arbiter=True, rng=NoDraw(), arbiter_sample_fraction=0.0
    )
    assert any(v.ok for v in old_rule), [sorted(v.checks) for v in old_rule]


async def test_a_partial_bf16_cheat_is_caught_when_its_call_is_drawn(
    vnet: VNet, bf16_screen_scorer: Any
) -> None:
    """(With the one-call draw an operator may opt into; by default every call is re-scored.)
    A node computes the first LLM call of each task in float32 and the second in bfloat16 (its
    claimed logprobs and fingerprints are bf16's, its tokens the float32 ones), under the float32
    id. With one drawn call of n = 2 a receipt is caught with probability at least m/n = 1/2 per
    receipt (more where the screen doubts the cheated call itself), so a batch of r such receipts
    escapes with probability at most 2^-r, and the node cannot compute the draw. Pinned here
    deterministically: when the draw falls on the cheated call every receipt is an `llm.model`
    finding on that call; when it falls on the honest call a receipt is flagged only where the
    screen doubted the cheated call (two calls re-checked), and the honest call never is."""
    from supernet.validator.trace_view import parse_trace
    from supernet.validator.verifier import score_calls

    cheated: set[int] = set()  # event indexes of the bf16-computed calls

    def second_call_in_bf16(i: int, doc: dict[str, Any]) -> dict[str, Any]:
        call = parse_trace(doc).llm_calls[1]
        [bf16] = score_calls(bf16_screen_scorer, [call])
        e = dict(doc["events"][call.call])
        e["logprobs"] = list(bf16.logprobs)
        e["fingerprints"] = [
            {"index": f.index, "indices": list(f.indices), "values": list(f.values)}
            for f in bf16.fingerprints
        ]
        events = list(doc["events"])
        events[call.call] = e
        cheated.add(call.call)
        return {**doc, "events": events}

    vnet.faults()
    batch_id, receipts = await vnet.run_batch(QUESTIONS, max_new_tokens=32, edit_trace=second_call_in_bf16)
    assert len(cheated) == 1, cheated  # the same layout in every task

    def on_cheat(c: Any) -> bool:
        return c.call in cheated

    def on_honest(c: Any) -> bool:
        return c.call not in cheated

    one = {"arbiter_sample_fraction": 0.0}  # the draw of one call an operator may opt into
    hit = await screened(
        vnet, batch_id, receipts, bf16_screen_scorer, arbiter=True, rng=Pick(on_cheat), **one
    )
    miss = await screened(
        vnet, batch_id, receipts, bf16_screen_scorer, arbiter=True, rng=Pick(on_honest), **one
    )
    print("drawn cheated: ok", [v.ok for v in hit], "drawn honest: ok", [v.ok for v in miss])
    print("rechecked", [v.rechecked for v in hit], [v.rechecked for v in miss])
    for v in hit:
        assert not v.ok and {f.call for f in v.findings} == cheated, [(f.check, f.call) for f in v.findings]
        assert {f.check.value for f in v.findings} == {"llm.model"}
    for v in miss:
        assert v.ok or v.rechecked == 2, (v.rechecked, [(f.check, f.call) for f in v.findings])
        assert {f.call for f in v.findings} <= cheated


async def test_emptied_fingerprints_of_fp16_weights_sold_as_float32_are_caught(vnet: VNet) -> None:
    """float16-weights compute sold under the float32 id is caught by its fingerprints
    (`test_fp16_weights_work_sold_under_the_float32_id_is_caught`). A fingerprint whose
    ``indices``/``values`` are empty was compared over nothing and passed, leaving only the
    logprob bound. Every claimed fingerprint must now list ``FINGERPRINT_TOP_K`` distinct finite
    dims: the emptied ones are LLM shape findings on every receipt."""
    from supernet.node.llm import LLMEngine
    from supernet.validator.scoring import ModelScorer

    originals: dict[int, dict[str, Any]] = {}

    def empty_fingerprints(i: int, doc: dict[str, Any]) -> dict[str, Any]:
        originals[i] = doc
        events = []
        for e in doc["events"]:
            if e["kind"] == "llm" and e["fingerprints"]:
                e = {**e, "fingerprints": [{**f, "indices": [], "values": []} for f in e["fingerprints"]]}
            events.append(e)
        return {**doc, "events": events}

    vnet.faults()
    engine = LLMEngine.load("smollm2-135m", compute="float16-weights", max_batch=4, max_seq_len=1024)
    engine.compute, engine.model_id = "float32", vnet.kernel.model_id
    async with vnet.other_kernel(engine) as kernel:
        # short answers (a label, a number): few positions for the logprob bound to catch it at
        b_plain, r_plain = await vnet.run_batch(SHORT, max_new_tokens=2, kernel=kernel)
        b_empty, r_empty = await vnet.run_batch(
            SHORT, max_new_tokens=2, kernel=kernel, edit_trace=empty_fingerprints
        )
    scorer = ModelScorer.from_loaded(vnet.loaded)
    plain = await verdicts(vnet, b_plain, r_plain, None, scorer)
    emptied = await verdicts(vnet, b_empty, r_empty, None, scorer)
    print("plain ok", [v.ok for v in plain], "emptied ok", [v.ok for v in emptied])
    assert not any(v.ok for v in plain)
    assert not any(v.ok for v in emptied), [sorted(v.checks) for v in emptied]
    for v in emptied:  # each is caught by the shape of its fingerprints (every call has one at 0)
        bad = [f for f in v.findings if f.check.value == "llm.shape" and "bad fingerprints" in f.message]
        assert bad, [f.message for f in v.findings]
    assert set(originals) == set(range(len(SHORT)))


async def test_poison_trace_does_not_stall_the_validator(vnet: VNet, validator_factory: Any) -> None:
    """A node commits one batch whose trace input holds an integer past 2**53 (a valid dag-cbor
    trace). `check_trace`'s ``input_hash`` raised ``InputEncodingError``, so `Validator.step`
    failed before ``finish_batch`` on every retry and the cheating batch the node committed next
    was never checked. Now the poison input is a TRACE finding (and any unexpected exception in one
    receipt is that receipt's unverifiable verdict): one step finishes both batches."""
    vnet.faults()

    def poison(i: int, doc: dict[str, Any]) -> dict[str, Any]:
        return {**doc, "input": {"n": 2**60}}

    poisoned, _ = await vnet.run_batch(QUESTIONS[:1], max_new_tokens=4, edit_trace=poison)
    cheat, _ = await vnet.run_batch(QUESTIONS[:1], max_new_tokens=4, fault_plan=[{"answer": 1.0}])
    async with validator_factory(1, challenge=False) as v:
        await v.step()  # no exception out of the step
        pending = [b.batch_id for b in v.db.pending_batches()]
        assert poisoned not in pending and cheat not in pending, pending
        [poison_check] = v.db.checks(poisoned)
        assert not poison_check.ok and "trace" in poison_check.kinds, poison_check
        cheat_checks = v.db.checks(cheat)
        assert cheat_checks and not any(c.ok for c in cheat_checks), cheat_checks  # the cheat is examined


# a stop string that spans a special token must not get an HONEST node's receipt judged faulty
FEW_SHOT = [
    m
    for _ in range(4)
    for m in (
        {"role": "user", "content": "Say it."},
        {"role": "assistant", "content": "Alpha<filename>Omega"},  # the text names a special token
    )
] + [{"role": "user", "content": "Say it."}]
SLASH_INPUT = {"messages": FEW_SHOT, "stop": ["Omega"], "max_new_tokens": 8}
CONTROL_INPUT = {"messages": FEW_SHOT, "max_new_tokens": 8}  # the same chat without the stop string


async def test_stop_string_across_special_token_does_not_flag_an_honest_node(
    vnet: VNet, validator_factory: Any
) -> None:
    """The kernel looks for stop strings in the text decoded WITHOUT special tokens
    (`_StopWatcher`); the validator checked a ``stop`` finish against the text decoded WITH them.
    A user whose few-shot prompt makes the model answer ``Alpha<filename>Omega`` (``<filename>`` a
    special token the user's text encodes to) with ``stop = ["AlphaOmega"]`` got an honest node to
    stop there, and the validator flagged it ("finish 'stop' without a stop token or stop
    string"), which a challenge slashes for. Both sides now use one decode rule
    (`supernet.node.kernel.dispatch.stop_text`, docs/protocol.md "Token selection").

    Since only the chat template makes special tokens (docs/protocol.md "Models"), the user's
    typed ``<filename>`` is plain text and so is the model's copy of it: the stop string here is
    ``Omega``, after the marker's text, and the honest stop must pass. A stop string across a
    special token the model itself emits is pinned at unit level
    (tests/unit/test_review_framing_llm.py, the stop-string tests)."""
    from supernet.validator.trace_view import parse_trace

    traces: list[dict[str, Any]] = []

    def keep(i: int, trace: dict[str, Any]) -> dict[str, Any]:
        traces.append(trace)
        return trace

    vnet.faults()  # an honest node
    batch_id, receipts = await vnet.run_batch([], chat_inputs=[SLASH_INPUT, CONTROL_INPUT], edit_trace=keep)
    [call] = parse_trace(traces[0]).llm_calls
    [control] = parse_trace(traces[1]).llm_calls
    tok = vnet.loaded.tokenizer
    assert call.finish_reason == "stop", call
    assert tok.decode(list(call.output_ids)) == "Alpha<filename>Omega", tok.decode(list(call.output_ids))
    [marker] = tok.encode("<filename>")  # a special token of the vocabulary, typed as text by the user
    assert marker not in call.prompt_ids  # only the template makes special tokens
    assert tok.decode(list(control.output_ids)).startswith("Alpha<filename>Omega")
    async with validator_factory(0, challenge=False) as v:
        await v.step()
        checks = v.db.checks(batch_id)
    print("validator findings:", [(c.ok, c.kinds) for c in checks])
    assert len(checks) == len(receipts) == 2
    assert checks[1].ok, checks[1].kinds  # the same answer without the stop string passes
    assert checks[0].ok, checks[0].kinds  # the honest stop on the string passes too
