"""The validator's checks alone: LLM calls on a tiny random model, tools, receipts and traces."""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any

import pytest
import torch
from eth_account import Account
from llm_fixtures import make_tiny_llama
from supernet.node.faults import FaultInjector, Generation
from supernet.node.llm import LLMEngine, SamplingParams
from supernet.node.llm.scoring import ScoreRequest, Tolerance, score
from supernet.node.llm.types import ScoreResult
from supernet.sdk.chain.eip712 import Domain, TaskRequest, hash_task_request, sign_task_request
from supernet.sdk.chain.receipts import Receipt, input_hash, output_hash, sign_receipt, trace_hash
from supernet.sdk.formats.manifest import ManifestEntry
from supernet.sdk.formats.profile import AgentProfile
from supernet.sdk.formats.trace import Trace as TraceDoc
from supernet.sdk.formats.trace import example_dag
from supernet.sdk.store.cids import compute_cid, encode_dag
from supernet.validator import scoring as validator_scoring
from supernet.validator.consistency import check_receipt, check_trace, check_trace_hash
from supernet.validator.evidence import Check, Verdict
from supernet.validator.llm_check import check_scores, check_shape, check_tokens, claimed_fingerprints
from supernet.validator.scoring import ModelScorer
from supernet.validator.tool_check import RegistryRunner, check_tools
from supernet.validator.trace_view import LLMCall, MalformedTrace, ToolCall, parse_trace
from supernet.validator.verifier import score_call

PROMPT = (5, 17, 33, 2, 9)


@pytest.fixture(scope="module")
def tiny() -> LLMEngine:
    return LLMEngine.from_model(make_tiny_llama(3), max_batch=4, max_seq_len=128)


async def generate(engine: LLMEngine, temperature: float) -> LLMCall:
    params = SamplingParams(max_new_tokens=40, temperature=temperature, top_p=0.9, seed=11, stop_token_ids=())
    async with engine:
        # another sequence in the batch: the validator re-scores alone (different batch composition)
        other = engine.submit((7, 8, 9), SamplingParams(max_new_tokens=20, stop_token_ids=()))
        res = await engine.submit(PROMPT, params).result()
        await other.result()
    fps = [{"index": f.index, "indices": list(f.indices), "values": list(f.values)} for f in res.fingerprints]
    return LLMCall(
        call=0,
        model_id=engine.model_id,
        prompt_ids=PROMPT,
        output_ids=res.output_ids,
        logprobs=res.logprobs,
        fingerprints=fps,
        temperature=temperature,
        top_p=0.9,
        seed=11,
        max_new_tokens=40,
        stop_token_ids=(),
        finish_reason=res.finish_reason,
        text=None,
    )


def rescore(engine: LLMEngine, call: LLMCall) -> ScoreResult:
    return score_call(ModelScorer(engine.model, None, engine.weights_id, (0,)), call)  # type: ignore[arg-type]


def faulty(call: LLMCall, kind: str) -> LLMCall:
    gen = Generation(
        call.prompt_ids,
        call.output_ids,
        call.logprobs,
        call.fingerprints,
        call.temperature,
        call.top_p,
        call.seed,
        call.finish_reason,
    )
    out = FaultInjector.from_cli([kind]).on_generation("t:0", gen)
    return replace(
        call,
        output_ids=out.output_ids,
        logprobs=out.logprobs,
        fingerprints=out.fingerprints,
        seed=out.seed,
        finish_reason=out.finish_reason,
    )


@pytest.mark.parametrize("temperature", [0.0, 1.0])
async def test_honest_calls_pass(tiny: LLMEngine, temperature: float) -> None:
    call = await generate(tiny, temperature)
    assert check_shape(call, eos_ids=(0,)) == []
    assert check_scores(call, rescore(tiny, call), Tolerance()) == []


@pytest.mark.parametrize(
    ("kind", "temperature", "expected"),
    [
        ("tokens", 0.0, Check.LLM_TOKEN),
        ("tokens", 1.0, Check.LLM_SAMPLE),
        ("model", 0.0, Check.LLM_MODEL),
        ("seed", 1.0, Check.LLM_SAMPLE),
    ],
)
async def test_faulty_calls_are_caught(
    tiny: LLMEngine, kind: str, temperature: float, expected: Check
) -> None:
    call = faulty(await generate(tiny, temperature), kind)
    findings = check_scores(call, rescore(tiny, call), Tolerance())
    assert expected in {f.check for f in findings}
    assert all(f.position is not None for f in findings if f.check in (Check.LLM_TOKEN, Check.LLM_SAMPLE))


async def test_scorer_packs_calls_and_reuses_their_shared_prefix(
    tiny: LLMEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``score_many`` over several forward passes and a cached shared prefix equals one pass per call."""
    shared = (*PROMPT, *PROMPT)  # 10 tokens: above MIN_SHARED_PREFIX
    sampled = SamplingParams(max_new_tokens=40, temperature=1.0, top_p=0.9, seed=3)
    requests = [
        ScoreRequest((*shared, 1 + i, 2 * i + 3), [(7 * i + j) % 60 + 1 for j in range(6 + 5 * i)], p)
        for i, p in enumerate((None, sampled, None, sampled, None))
    ]
    monkeypatch.setattr(validator_scoring, "MAX_PACKED_TOKENS", 30)  # forces several packed passes
    monkeypatch.setattr(validator_scoring, "MIN_SAVED_TOKENS", 8)  # a prefix pass for 4 x 10 tokens
    assert len(validator_scoring._chunks(requests, len(shared), 30)) >= 3
    scorer = ModelScorer(tiny.model, None, tiny.weights_id, (0,))  # type: ignore[arg-type]
    for round_ in range(2):  # the second round takes the prefix from the cache
        got = scorer.score_many(requests)
        assert list(scorer._prefixes) == [shared]
        for r, g in zip(requests, got, strict=True):
            ref = score(tiny.model, r.prompt_ids, r.output_ids, r.params)
            assert max(abs(a - b) for a, b in zip(ref.logprobs, g.logprobs, strict=True)) < 1e-4, round_
            assert [t[0][0] for t in ref.top_tokens] == [t[0][0] for t in g.top_tokens]
            assert (ref.margins is None) == (g.margins is None)
    # a prefix of the cached one: sliced from the cache, not recomputed
    shorter = ScoreRequest((*shared[:9], 4), [5, 6])
    ref = score(tiny.model, shorter.prompt_ids, shorter.output_ids)
    assert scorer.score_many([shorter])[0].logprobs == pytest.approx(ref.logprobs, abs=1e-4)
    assert list(scorer._prefixes) == [shared]


def test_scorer_sets_its_thread_count_in_the_scoring_thread(tiny: LLMEngine) -> None:
    """torch's intra-op thread count is per OS thread; the validator scores in a worker thread."""
    scorer = ModelScorer(tiny.model, None, tiny.weights_id, (0,), threads=1)  # type: ignore[arg-type]
    seen: list[int] = []

    def work() -> None:
        torch.set_num_threads(2)
        scorer.score_many([ScoreRequest(PROMPT, [1, 2, 3])])
        seen.append(torch.get_num_threads())

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    assert seen == [1]


def test_chunks_respect_the_token_budget() -> None:
    requests = [ScoreRequest([1] * 12, [2] * n) for n in (10, 10, 25, 2, 3)]
    chunks = validator_scoring._chunks(requests, 10, 20)  # each costs 2 prompt tokens + its output
    assert [[len(r.output_ids) for r in c] for c in chunks] == [[10], [10], [25], [2, 3]]
    assert [r for c in chunks for r in c] == requests


def test_unscorable_tokens_are_findings() -> None:
    call = LLMCall(0, "0x", PROMPT, (1, 2), (-1.0, -1.0), None, 0.0, 1.0, 0, 8, (), "length", None)
    assert check_tokens(call, vocab_size=64) == []
    bad_out = replace(call, output_ids=(1, 64))
    [f] = check_tokens(bad_out, vocab_size=64)
    assert (f.check, f.position, f.claimed) == (Check.LLM_SHAPE, 1, 64)
    [f] = check_tokens(replace(call, prompt_ids=(5, -3)), vocab_size=64)
    assert (f.check, f.position, f.claimed) == (Check.LLM_SHAPE, None, -3)
    assert [f.message for f in check_tokens(replace(call, prompt_ids=()), vocab_size=64)] == ["empty prompt"]


def test_mistyped_traces_and_fingerprints_are_malformed() -> None:
    _, trace = make_entry()
    [event] = trace["events"]
    assert len(parse_trace(trace).llm_calls) == 1
    params = event["params"]
    for bad, field in (
        ({**params, "temperature": "hot"}, "events[0].params.temperature"),
        ({**params, "max_new_tokens": [1]}, "events[0].params.max_new_tokens"),
        ({**params, "max_new_tokens": "x"}, "events[0].params.max_new_tokens"),
        ({**params, "sampling": {}}, "events[0].params.sampling"),  # no alternate field names
        ({k: v for k, v in params.items() if k != "seed"}, "events[0].params.seed"),
    ):
        with pytest.raises(MalformedTrace, match=field.replace("[", r"\[").replace("]", r"\]")):
            parse_trace({**trace, "events": [{**event, "params": bad}]})
    good = [{"index": 0, "indices": list(range(1, 9)), "values": [0.5, -0.5] * 4}]  # FINGERPRINT_TOP_K dims
    assert claimed_fingerprints(good)[0].indices == tuple(range(1, 9))
    for raw in (
        [{"index": 0, "indices": [1, 2], "values": [0.5]}],
        [{"index": 0, "indices": [], "values": []}],  # checks nothing
        [{"index": 0, "indices": [1, 2], "values": [0.5, -0.5]}],  # fewer dims than the top-k
        [{"index": 0, "indices": [1] * 8, "values": [0.5] * 8}],  # repeated dims
        [{"index": 0, "indices": list(range(1, 9)), "values": [float("inf")] * 8}],
        [{"index": 0, "indices": [1], "values": ["big"]}],
        [{"index": 0, "indices": [1]}],
        [7],
    ):
        with pytest.raises(ValueError, match="bad fingerprints"):
            claimed_fingerprints(raw)


async def test_truncated_output_claiming_stop_is_caught(tiny: LLMEngine) -> None:
    call = faulty(await generate(tiny, 0.0), "truncate")
    assert [f.check for f in check_shape(call, eos_ids=(0,))] == [Check.LLM_FINISH]
    stopped = replace(call, output_ids=(*call.output_ids, 0), logprobs=(), stop_token_ids=None)
    assert check_shape(stopped, eos_ids=(0,)) == []  # ends on the model's EOS: a legitimate stop


async def test_tools_are_rerun() -> None:
    runner = RegistryRunner(store=None)
    honest = ToolCall(0, "calculator", {"expression": "6 * 7"}, 42, None, True)
    findings, rerun, why = await check_tools((honest,), runner)
    assert findings == [] and rerun == 1 and why is None
    fake = replace(honest, result=43)
    dodged = replace(honest, deterministic=False)
    unknown = replace(honest, name="not_a_tool", result="x")
    findings, rerun, _ = await check_tools((fake, dodged, unknown), runner)
    assert [f.check for f in findings] == [Check.TOOL, Check.TOOL] and rerun == 2


DOMAIN = Domain(chain_id=31337, verifying_contract="0x" + "33" * 20)
USER, NODE = Account.from_key("0x" + "01" * 32), Account.from_key("0x" + "02" * 32)


def make_entry(output: str = "yo") -> tuple[ManifestEntry, dict[str, Any]]:
    head = {**example_dag(), "agent": {"id": "chat", "code_hash": "0x" + "08" * 32}}
    profile = AgentProfile.of_trace(TraceDoc.from_dag(head)).hash()  # what the user signs
    req = TaskRequest(
        user=USER.address,
        node=NODE.address,
        model_id=b"\x07" * 32,
        agent_hash=bytes.fromhex(profile[2:]),
        input_hash=input_hash("hi"),
        max_fee=50,  # the fee the receipt states: a node charges the signed maxFee
        nonce=1,
        deadline=2**40,
    )
    rh = hash_task_request(req, DOMAIN)
    cid = compute_cid(encode_dag({"trace": 1}), "dag-cbor")
    r = Receipt(rh, USER.address, req.model_id, req.input_hash, output_hash(output), trace_hash(cid), 50)
    entry = ManifestEntry(
        r, r.leaf(), sign_receipt(r, NODE), cid, "chat", req, sign_task_request(req, DOMAIN, USER)
    )
    trace = {
        **head,
        "task_id": "0x" + rh.hex(),
        "user": USER.address,
        "fee": 50,  # the receipt's
        "model_id": "0x" + "07" * 32,
        "input": "hi",
        "output": "yo",
    }
    return entry, trace


def test_receipt_and_trace_consistency() -> None:
    entry, trace = make_entry()
    assert check_receipt(entry, NODE.address, DOMAIN) == []
    assert check_trace_hash(entry.trace_cid, entry.receipt.trace_hash) == []
    assert check_trace(parse_trace(trace), entry) == []
    edited, _ = make_entry(output="something else")  # the `trace` fault: receipt output != trace output
    assert [f.check for f in check_trace(parse_trace(trace), edited)] == [Check.TRACE]
    forged = replace(entry, request_signature=sign_task_request(entry.request, DOMAIN, NODE))
    assert [f.check for f in check_receipt(forged, NODE.address, DOMAIN)] == [Check.REQUEST]
    for fee in (0, 49, 51):  # any fee but the signed maxFee misstates the charge
        misstated = replace(entry, receipt=replace(entry.receipt, fee=fee))
        assert Check.RECEIPT in {f.check for f in check_receipt(misstated, NODE.address, DOMAIN)}


def test_evidence_document() -> None:
    entry, _ = make_entry()
    v = Verdict(
        1,
        0,
        entry.leaf,
        findings=tuple(check_receipt(replace(entry, signature=b"\x00" * 65), NODE.address, DOMAIN)),
    )
    doc = v.to_dag()
    assert doc["fraud"] is True and doc["findings"][0]["check"] == "receipt" and v.fault_kinds == {"trace"}


def test_the_scoring_format_follows_the_hardware() -> None:
    import torch
    from supernet.validator.scoring import native_bf16, scoring_compute

    cpu = torch.device("cpu")
    assert scoring_compute(torch.device("cuda"), "auto") == "bfloat16"
    # off native bf16, the format CPU nodes serve by default: a validator then needs no second model
    assert scoring_compute(cpu, "auto") == ("bfloat16" if native_bf16(cpu) else "float16-weights")
    for fmt in ("float32", "bfloat16", "float16-weights"):
        assert scoring_compute(cpu, fmt) == fmt
    with pytest.raises(ValueError, match="scoring format"):
        scoring_compute(cpu, "float16")
