"""An adversarial review of structured output (grammar-constrained decoding), node and validator:
`supernet.node.llm.grammar` (``grammar_of``, ``check_grammar``, ``GrammarConstraint``,
``allowed_masks``), where the engine applies the masks (``LLMEngine.submit`` / ``_constraint``,
``step._constrained``), the OpenAI chat API's checks of ``response_format`` / ``tools``
(`supernet.node.service.chat_params`), and the validator's grammar walk and masked selection
margins (`supernet.validator.grammar_check`, ``verifier.score_calls``, ``ScoreRequest.allowed``).

Tried, as a rational user, node or validator:

* A schema that is cheap to send and expensive to compile. FOUND (all fixed, the tests are now
  ``test_defence_*``): llguidance's compile time of a JSON schema grows steeply (about n^3.6) with
  the number of ``patternProperties``: 250 of them (9 KB) took ~2 s, 800 (27 KB) ~130 s, and nothing
  bounded the schema on either side. Now the grammar's cost is a protocol budget
  (`supernet.node.llm.grammar.check_budget`: bytes, regexes, patternProperties per object, schema
  objects), a pure function ``grammar_of``, ``check_grammar`` and ``GrammarConstraint`` all apply,
  so node and validators refuse the same grammars before compiling; at the budget a compile takes
  tens of milliseconds.
  - FIXED (node, stall, no payment needed): ``POST /v1/chat/completions`` ran ``chat_plan`` (its
    grammar check) on the event loop before reading the signed request; it now runs in a worker
    thread, under the budget.
  - FIXED (node, stall): ``LLMEngine.submit`` compiles on the event loop, and again at every
    resume: the budget bounds each compile (it stays on the loop, tens of milliseconds at worst).
  - FIXED (validator, amplification): every validator compiled each grammar at least twice (the
    walk, then once per scoring pass); the walk is now done once per call and kept
    (`supernet.validator.grammar_check.walk`).
  - FIXED (validator memory): masks were held as ``[n, V]`` bool; they are now packed at a bit
    per token (`supernet.node.llm.grammar.pack_masks`), 8x less.
* A user getting an honest node slashed through a mask that differs on the validator: grammar
  from outside the trace, llguidance state, tokenizer views, stop-token order, the resume path
  (matcher advanced without masks). Holds: the masks are a pure function of the recorded grammar,
  the tokenizer and the tokens; two independent tokenizer views, a resumed matcher and the
  validator's walk give identical masks at every position; llguidance's limits are counts (the
  JSON recursion limit of the grammar document), so the API, the engine and the validator accept
  and refuse exactly the same grammars, and a grammar the validator cannot compile never has an
  honest receipt (the engine refuses it at submit: no receipt), so its LLM_SHAPE finding only
  hits a node that fabricated the call.
* A node cheating under a grammar: dropping the grammar from the trace, recording a looser one,
  adding stop tokens (replay divergence: holds); an allowed but non-argmax token (the walk passes
  it, the masked selection margin catches it: holds); ending early with a stop token where the
  grammar does not accept (the walk: holds).

``test_known_limit_*``: the attack works today (docstring: harm and fix). ``test_defence_*``: it
fails today.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from supernet.node.llm.grammar import (
    GrammarConstraint,
    GrammarError,
    allowed_masks,
    check_grammar,
    grammar_of,
    unpack_masks,
)

SMOLLM2 = Path.home() / ".cache" / "supernet" / "models" / "smollm2-135m"
HAVE_MODEL = (SMOLLM2 / "model.safetensors").exists()
needs_model = pytest.mark.skipif(not HAVE_MODEL, reason="SmolLM2 not cached")
pytestmark = [pytest.mark.timeout(600)]

VOCAB = 49152
EOS: tuple[int, ...] = (2,)
URL = "/v1/chat/completions"


def json_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "r", "schema": schema}}


def pattern_schema(n: int) -> dict[str, Any]:
    """``n`` patternProperties: ~37 bytes each, compile time ~n^3.6 (250: ~2 s, 800: ~130 s)."""
    return {"type": "object", "patternProperties": {f"^x{i}[a-z]+$": {"type": "integer"} for i in range(n)}}


class LoopWatch:
    """The longest time the event loop went without running a 10 ms ticker (a stall)."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            self.worst = max(self.worst, now - last)
            last = now

    async def __aenter__(self) -> LoopWatch:
        self._task = asyncio.create_task(self._tick())
        await asyncio.sleep(0.05)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.sleep(0.05)
        assert self._task is not None
        self._task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self._task


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Mask walks do tiny torch ops per token; with 2 OpenMP threads on a loaded 2-core box each
    one waits ~8 ms for the other thread. One thread keeps these walks at ~0.3 ms per token."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from supernet.node.llm.tokenizer import Tokenizer

    return Tokenizer(SMOLLM2)


def build_counter(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, float]]:
    """Every `GrammarConstraint` built from now on: (the file that built it, seconds it took)."""
    real = GrammarConstraint.__init__
    builds: list[tuple[str, float]] = []

    def counting(self: GrammarConstraint, *args: Any, **kwargs: Any) -> None:
        caller = Path(sys._getframe(1).f_code.co_filename).name
        t = time.perf_counter()
        real(self, *args, **kwargs)
        builds.append((caller, time.perf_counter() - t))

    monkeypatch.setattr(GrammarConstraint, "__init__", counting)
    return builds


# -- cost: the node ---------------------------------------------------------------------------------


def budget_schema() -> dict[str, Any]:
    """The costliest shape the budget lets through: 8 objects of 32 patternProperties (256 regexes)."""
    return {"type": "object", "properties": {f"o{j}": pattern_schema(32) for j in range(8)}}


@pytest.mark.parametrize("where", ["response_format", "tools"])
async def test_defence_an_unsigned_chat_request_cannot_freeze_the_node_with_its_schema(
    fake_node: Any, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attack (was a known limit): anyone (no key, no deposit) posts a chat completion whose
    ``response_format`` (or a tool's ``parameters``) holds 300 ``patternProperties``, 11 KB.
    ``chat_plan`` compiled it on the event loop before the signed request was read: the loop froze
    for the whole compile (2.5 s; ~130 s at 27 KB), then the request was refused (401).

    Now the schema is over the protocol's budget and refused before any compiling (400, naming the
    budget), and a schema at the budget compiles in a worker thread (then 401, unsigned): the loop
    never stalls for it, and nothing is admitted. Where a compile ran is checked by thread, not only
    by the loop's longest stall: on a busy machine (other test processes on both cores) the loop can
    wait half a second for the CPU whatever runs where."""
    import threading

    from supernet.node.service import chat_params

    from tests.unit.test_openai_chat_api import tasks_count

    loop_thread = threading.get_ident()
    compiled_on: list[bool] = []  # per grammar the node compiled: was it on the event loop's thread?
    real_check = chat_params.check_grammar

    def recording(grammar: str) -> None:
        compiled_on.append(threading.get_ident() == loop_thread)
        real_check(grammar)

    monkeypatch.setattr(chat_params, "check_grammar", recording)
    for schema, status in ((pattern_schema(300), 400), (budget_schema(), 401)):
        compiled_on.clear()
        body: dict[str, Any] = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}
        if where == "response_format":
            body["response_format"] = json_format(schema)
        else:
            body["tools"] = [{"type": "function", "function": {"name": "f", "parameters": schema}}]
            body["tool_choice"] = "required"
        async with LoopWatch() as watch:
            r = await fake_node.http.post(
                URL, content=json.dumps(body), headers={"content-type": "application/json"}
            )
        assert r.status_code == status, r.text
        if status == 400:
            assert "patternProperties" in r.text
        assert tasks_count(fake_node) == 0  # nothing admitted, nothing paid
        if status == 400:
            assert compiled_on == []  # over the budget: refused before any compiling
        else:
            assert compiled_on and not any(compiled_on), compiled_on  # compiled, off the loop
        assert watch.worst < 1.0, f"the loop stalled {watch.worst:.2f} s"  # (~2.5 s on it, quiet)


@needs_model
@pytest.mark.model
async def test_defence_the_engines_compiles_are_bounded_by_the_budget_even_across_resumes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Attack (was a known limit): a paying user sends a chat task (native task API, no
    ``chat_plan`` check) whose schema has a few hundred ``patternProperties``. ``engine.submit``
    compiles the grammar on the event loop, and again at every resume after a preemption (time
    slices): ~20 s per compile at 430 patterns, once per slice.

    Now such a schema is refused by ``grammar_of`` and by ``submit`` itself (`check_budget`, before
    compiling), and the costliest schema the budget lets through compiles in tens of milliseconds,
    however often a sliced call is resumed (each resume still compiles once, on the loop)."""
    from supernet.node.kernel.policies import make_policy
    from supernet.node.kernel.scheduler import Scheduler
    from supernet.node.kernel.syscalls import LLMJob
    from supernet.node.llm import LLMEngine, SamplingParams

    with pytest.raises(GrammarError, match="patternProperties"):
        grammar_of(json_format(pattern_schema(200)))
    over = json.dumps({"grammars": [{"json_schema": pattern_schema(200)}]})
    grammar = grammar_of(json_format(budget_schema())) or ""
    engine = LLMEngine.load(SMOLLM2, max_batch=2, max_seq_len=256)
    builds = build_counter(monkeypatch)
    heavy = SamplingParams(max_new_tokens=6, temperature=0.0, seed=1, grammar=grammar)
    plain = SamplingParams(max_new_tokens=6, temperature=0.0, seed=1)
    async with engine:
        assert engine.tokenizer is not None
        prompt = tuple(engine.tokenizer.apply_chat_template([{"role": "user", "content": "Give x."}]))
        with pytest.raises(GrammarError, match="patternProperties"):
            engine.submit(prompt, SamplingParams(max_new_tokens=6, grammar=over))
        sched = Scheduler(engine, make_policy("rr"), max_active=1, time_slice_tokens=2)
        jobs = [LLMJob(f"r{i}", f"t{i}", "0xu", 1, prompt, p) for i, p in enumerate((heavy, plain))]
        outcomes = await asyncio.gather(*(sched.generate(j) for j in jobs))
        sched.close()
    assert outcomes[0].preemptions >= 1  # the constrained call was sliced and resumed
    node_builds = [t for caller, t in builds if caller == "engine.py"]
    assert len(node_builds) == outcomes[0].preemptions + 1
    assert max(node_builds) < 0.25, node_builds  # bounded by the budget: no long stall


# -- cost: the validator ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kernel_engine_smol() -> Any:
    from supernet.node.llm import LLMEngine

    return LLMEngine.load(SMOLLM2)


@pytest.fixture(scope="module")
def scorer() -> Any:
    """A validator's float32 scorer (its own load of the model)."""
    from supernet.validator.scoring import ModelScorer

    return ModelScorer.load(str(SMOLLM2), dtype="float32", device="cpu")


@pytest_asyncio.fixture
async def kernel(kernel_engine_smol: Any, store_client: Any) -> AsyncIterator[Any]:
    from supernet.node.kernel.kernel import Kernel

    from tests.integration.test_user_framing_attacks import registry
    from tests.unit.test_validator_attacks3 import NoEmbedder

    k = Kernel(kernel_engine_smol, store_client, None, embedder=NoEmbedder(), agents=registry())  # type: ignore[arg-type]
    await k.setup()
    yield k
    await k.stop()


async def chat(kernel: Any, store: Any, scorer: Any, **options: Any) -> tuple[dict[str, Any], Any]:
    """An honest chat task on the real kernel, its receipt verified by a real `Verifier`."""
    from supernet.node.agents.chat import ChatAgent

    from tests.integration.test_user_framing_attacks import honest_verdict, llm_events

    task_input = {"messages": [{"role": "user", "content": "Answer in JSON."}], **options}
    trace, verdict = await honest_verdict(kernel, store, scorer, ChatAgent, task_input)
    assert trace["status"] == "ok", trace["error"]
    assert llm_events(trace)[0]["output_ids"] and llm_events(trace)[0]["params"].get("grammar")
    assert verdict.unverifiable is None, verdict.unverifiable
    return trace, verdict


@needs_model
@pytest.mark.model
async def test_defence_a_validator_compiles_each_grammar_once_within_the_budget(
    kernel: Any, store_client: Any, scorer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attack (was a known limit): a node that is its own user commits receipts of chat calls whose
    schema is as costly as the protocol lets it. Every validator compiled each grammar in the walk
    and again for every scoring pass (twice, three times with a screen and an arbiter), unbounded.

    Now the budget bounds each compile, and the validator walks a call's grammar once and keeps the
    result for its scoring passes (`grammar_check.walk`): one build, as the node's. The honest
    receipt is not accused."""
    builds = build_counter(monkeypatch)
    _, verdict = await chat(
        kernel,
        store_client,
        scorer,
        response_format=json_format(budget_schema()),
        max_new_tokens=6,
        temperature=0,
    )
    from tests.integration.test_user_framing_attacks import describe

    assert verdict.findings == (), describe(verdict)  # the honest node is not accused
    node = [t for caller, t in builds if caller == "engine.py"]
    validator = [t for caller, t in builds if caller == "grammar_check.py"]
    assert len(node) == 1 and len(validator) == 1, builds
    assert max(node) < 0.25  # (the validator's one build includes its first tokenizer view)


@needs_model
@pytest.mark.model
def test_defence_a_scoring_pass_holds_a_bit_per_vocabulary_token_per_constrained_position(
    tokenizer: Any, one_thread: None
) -> None:
    """Attack (was a known limit): a node (or its users) fills batches with long constrained calls
    (a JSON string schema: every position allows ~all 49,152 tokens). ``score_calls`` held every
    call's ``[n, V]`` bool masks of a pass at once: 8 receipts x 2,048 positions x 49,152 tokens =
    ~800 MB (2 GB for a 128K vocabulary). Now the masks are packed at a bit per token
    (`pack_masks`): 8x less, and the walk that made them is the one `check_grammar` did."""
    from supernet.sdk.formats.trace import MAX_CONTEXT_TOKENS
    from supernet.validator.service import RECEIPTS_PER_PASS
    from supernet.validator.trace_view import LLMCall
    from supernet.validator.verifier import score_calls

    grammar = grammar_of(json_format({"type": "string"}))
    calls = []
    for i in range(4):
        out = tuple(tokenizer.encode(json.dumps(f"answer {i}: " + "word " * 50)))
        calls.append(
            LLMCall(i, "m", (1, 2, 3), out, (0.0,) * len(out), None, 0.0, 1.0, 1, len(out), None, "length",
                    None, (), grammar)
        )  # fmt: skip
    held: list[int] = []

    class Recording:
        """A validator's scorer that records what one scoring pass is handed."""

        weights_id, eos_ids, vocab_size, max_positions = "0x", EOS, VOCAB, 4096

        def __init__(self, tok: Any) -> None:
            self.tokenizer = tok

        def score_many(self, requests: Any) -> list[Any]:
            held.append(sum(r.allowed.numel() * r.allowed.element_size() for r in requests))
            return [None] * len(requests)

        def decode(self, ids: Any) -> str:
            return ""

    score_calls(Recording(tokenizer), calls)
    positions = sum(len(c.output_ids) for c in calls)
    assert held == [positions * (VOCAB // 8)]  # a bit per token per position
    assert RECEIPTS_PER_PASS * MAX_CONTEXT_TOKENS * VOCAB // 8 < 110 * 10**6  # a pass of full chat receipts


# -- an honest node slashed through the mask? --------------------------------------------------------


@needs_model
@pytest.mark.model
def test_defence_masks_are_the_same_on_a_resumed_node_and_a_validator_with_its_own_tokenizer(
    tokenizer: Any, one_thread: None
) -> None:
    """Attack: make the validator's mask differ from the one the node sampled under, so an honest
    token is "outside the grammar" (a slashable LLM_TOKEN finding): a node that was preempted and
    resumed (its matcher re-advanced over the output *without* computing masks, engine
    ``_constraint``), stop tokens given in another order or repeated, the validator's own
    tokenizer object (its own llguidance view, built separately), flexible whitespace from the
    user's ``x-guidance``, a tool_call grammar with its text alternative. Defence: the mask is a
    pure function of (recorded grammar, tokenizer, tokens so far); every variant gives identical
    masks at every position, the stop token included."""
    from supernet.node.agents.tool_calls import tools_response_format
    from supernet.node.llm.tokenizer import Tokenizer

    validator_tok = Tokenizer(SMOLLM2)  # another object: another llguidance view
    schema = {
        "type": "object",
        "properties": {"a": {"type": "string", "pattern": "^[a-z ]{2,30}$"}, "n": {"type": "number"}},
        "required": ["a", "n"],
        "x-guidance": {"whitespace_flexible": True},
    }
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    cases = [
        (grammar_of(json_format(schema)) or "", '{"a": "hello there", "n": -12.5e3}'),
        (grammar_of(tools_response_format(tools, "auto")) or "", '{"name":"f","arguments":{"k":[1,true]}}'),
        (grammar_of(tools_response_format(tools, "auto")) or "", "Plain text, then {braces}."),
    ]
    for grammar, text in cases:
        ids = [*tokenizer.encode(text), EOS[0]]
        node_rows = []
        node = GrammarConstraint(tokenizer, grammar, VOCAB, [2, 2])
        for k, t in enumerate(ids):
            if k == len(ids) // 2:  # preempted here: resumed from the tokens alone, no masks
                node = GrammarConstraint(tokenizer, grammar, VOCAB, [2])
                assert all(node.advance(x) for x in ids[:k])
            node_rows.append(node.allowed())
            assert node.advance(t)
        masks, bad = allowed_masks(GrammarConstraint(validator_tok, grammar, VOCAB, EOS), ids)
        assert bad is None, (text, bad)
        for k, row in enumerate(node_rows):
            assert bool((row == masks[k]).all()), (text, k)


@needs_model
@pytest.mark.model
def test_defence_api_engine_and_validator_accept_and_refuse_exactly_the_same_grammars(
    tokenizer: Any,
) -> None:
    """Attack: a grammar the node compiles but a validator cannot (a validator's GrammarError is
    an LLM_SHAPE finding: an accusation), or one the API lets through and the engine refuses. Tried
    at llguidance's limits: nesting around the grammar document's JSON recursion limit (the one
    limit a schema reaches cheaply), an unsupported keyword (``uniqueItems``), a bad regex.
    Defence: the limits are counts, not time; the API's ``validate_grammar``, the engine's
    `GrammarConstraint` and the validator's ``check_grammar`` agree on each; and what the engine
    refuses never gets a receipt (submit raises: the task aborts), so the validator's finding on
    such a grammar only hits a node that made the call up."""
    from supernet.validator.evidence import Check
    from supernet.validator.grammar_check import check_grammar as validator_walk
    from supernet.validator.trace_view import LLMCall

    def nested(depth: int) -> dict[str, Any]:
        s: dict[str, Any] = {"type": "integer"}
        for _ in range(depth):
            s = {"type": "array", "items": s}
        return s

    def api_ok(g: str) -> bool:
        try:
            check_grammar(g)
            return True
        except GrammarError:
            return False

    limit = next(d for d in range(100, 160) if not api_ok(grammar_of(json_format(nested(d))) or ""))
    schemas = [
        nested(limit - 1),
        nested(limit),
        {"type": "array", "uniqueItems": True},
        {"type": "string", "pattern": "(("},
    ]
    verdicts = []
    for schema in schemas:
        g = grammar_of(json_format(schema)) or ""
        try:
            GrammarConstraint(tokenizer, g, VOCAB, EOS)
            engine_ok = True
        except GrammarError:
            engine_ok = False
        call = LLMCall(0, "m", (1,), (EOS[0],), (0.0,), None, 0.0, 1.0, 1, 4, None, "stop", None, (), g)
        found = validator_walk(call, tokenizer, VOCAB, EOS)
        validator_ok = not any(f.check == Check.LLM_SHAPE for f in found)
        verdicts.append((api_ok(g), engine_ok, validator_ok))
    assert verdicts == [
        (True, True, True),
        (False, False, False),
        (False, False, False),
        (False, False, False),
    ]


# -- a node cheating under the grammar ---------------------------------------------------------------


@needs_model
@pytest.mark.model
async def test_defence_a_node_cheating_under_the_grammar_is_caught(
    kernel: Any, store_client: Any, scorer: Any, one_thread: None
) -> None:
    """Attack, from an honest greedy constrained call (the control: it verifies clean):

    * the trace's ``params.grammar`` dropped (the call claimed unconstrained, so any token goes),
      replaced by the looser ``json_object`` grammar, or ``stop_token_ids`` added (an early end
      becomes "allowed"): each is a replay divergence (the replay rebuilds the params from the
      signed input with the same ``grammar_of``);
    * a token the grammar allows but that is not the masked argmax (a cheaper or chosen answer):
      the walk passes it, the selection margin computed under the mask flags it (LLM_TOKEN);
    * the output ended with the stop token while the JSON is still open: the walk flags it."""
    from supernet.node.llm.scoring import ScoreRequest, Tolerance
    from supernet.sdk.formats.trace import Trace
    from supernet.validator.evidence import Check
    from supernet.validator.grammar_check import check_grammar as validator_walk
    from supernet.validator.grammar_check import grammar_masks
    from supernet.validator.llm_check import check_scores
    from supernet.validator.replay_check import check_replay
    from supernet.validator.trace_view import parse_trace
    from supernet.validator.verifier import score_calls

    from tests.integration.test_user_framing_attacks import describe, registry

    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    trace, verdict = await chat(
        kernel, store_client, scorer, response_format=json_format(schema), max_new_tokens=12, temperature=0
    )
    assert verdict.findings == (), describe(verdict)

    # 1. the recorded params edited: the replay rebuilds them from the signed input
    at = next(i for i, e in enumerate(trace["events"]) if e["kind"] == "llm")
    edits = {
        "dropped": lambda p: p.pop("grammar"),
        "looser": lambda p: p.update(grammar=grammar_of({"type": "json_object"})),
        "stops": lambda p: p.update(stop_token_ids=[2, 1]),
    }
    for name, edit in edits.items():
        doc = copy.deepcopy(trace)
        edit(doc["events"][at]["params"])
        outcome = await check_replay(Trace.from_dag(doc), registry(), scorer.tokenizer)
        assert any(f.check == Check.REPLAY for f in outcome.findings), name

    # 2. an allowed, non-argmax token, with logprobs and fingerprints made consistent
    call = parse_trace(trace).llm_calls[0]
    packed = grammar_masks(call, scorer.tokenizer, scorer.vocab_size, scorer.eos_ids)
    assert packed is not None
    masks = unpack_masks(packed, scorer.vocab_size)
    k = next(i for i in range(len(call.output_ids)) if int(masks[i].sum()) > 1000)  # inside the string
    allowed = masks[k].nonzero()[:, 0].tolist()
    alt = max(t for t in allowed if t != call.output_ids[k] and t not in scorer.eos_ids)

    def recorded(out: tuple[int, ...]) -> Any:
        """The call as a node records ``out``: the model's own logprobs and fingerprints."""
        s = scorer.score_many([ScoreRequest(call.prompt_ids, out)])[0]
        fps = [
            {"index": f.index, "indices": list(f.indices), "values": list(f.values)} for f in s.fingerprints
        ]
        return dataclasses.replace(
            call, output_ids=out, logprobs=s.logprobs, fingerprints=fps, max_new_tokens=len(out),
            finish_reason="length",
        )  # fmt: skip

    honest = recorded(call.output_ids[: k + 1])
    cheat = recorded((*call.output_ids[:k], alt))
    assert honest.logprobs[k] - cheat.logprobs[k] > Tolerance().selection_margin  # a real choice
    assert validator_walk(cheat, scorer.tokenizer, scorer.vocab_size, scorer.eos_ids) == []  # in grammar
    scores = score_calls(scorer, [honest, cheat])
    assert check_scores(honest, scores[0], Tolerance()) == []
    caught = check_scores(cheat, scores[1], Tolerance())
    assert [(f.check, f.position) for f in caught] == [(Check.LLM_TOKEN, k)], caught

    # 3. an early end: the stop token where the grammar does not accept yet
    early = dataclasses.replace(call, output_ids=(*call.output_ids[:k], EOS[0]), finish_reason="stop")
    walk = validator_walk(early, scorer.tokenizer, scorer.vocab_size, scorer.eos_ids)
    assert [(f.check, f.position) for f in walk] == [(Check.LLM_TOKEN, k)]
