"""Adversarial review: a RATIONAL CHEATING NODE (fourth pass) against verification soundness.

Scope: what a node that wants to keep its fee while doing less work, or while returning an answer
of its choosing, can still get past the validator (the whole `supernet.validator.verifier.Verifier`:
receipt, signed request, trace binding, agent replay, teacher-forced re-scoring of every LLM call)
and the user's client (which signs the model id and reads back the trace the receipt commits to).
Tried, after the earlier reviews (test_review_cheating_node.py, test_review_rational_node2.py and 3,
test_review_llm_check*.py, test_review_replay_fidelity.py, test_review_band.py,
test_review_model_provenance.py): tolerance steering of greedy tokens through the precision the
signed id names, values the trace carries that no check binds but that reach the agent, sampling
parameters recorded otherwise than the agent asked, non-canonical tokenisations of an honest text,
and an old honest trace committed under a new request.

Real parts: SmolLM2-135M (one float32 load shared by the node's `LLMEngine` under the real `Kernel`
and the validator's `ModelScorer`, as tests/integration/test_validator_precision.py shares it),
the embedded content store, real EIP-712 signatures, the whole `Verifier` with the validator's
`RegistryRunner`. The node's cheats are trace edits made after an honest run, as a node's own
software would write them (receipt, trace and signatures stay consistent).

Found:

1. MEDIUM, now a KNOWN LIMIT (docs/security-parameters.md) — a node that serves the ``bfloat16``
   id of a model chooses the answer of a greedy call among every token within 0.6 nat of the
   argmax, and verifies clean
   (`test_known_limit_a_node_on_the_bfloat16_id_flips_a_greedy_answer_inside_the_pair_bounds`). The
   validator derives the node's precision from the signed id and, for a bfloat16 node, judges every
   call by `Tolerance.bf16()` (`supernet.node.llm.scoring.Tolerance.for_pair`, scoring.py ~516:
   any pair with a bf16 side; `ModelScorer.for_compute` returns the validator's own scorer for
   ``bfloat16``, scoring.py ~170): greedy selection margin 0.6 nat, logprobs ±0.75, sampled tokens
   0.1 of CDF mass, flat in the temperature (``sample_scales=False``). Those bounds are the
   calibrated noise of bf16 *against another format*, but the node need not compute in bf16 at all:
   here it computes in float32, knows the validator's exact scores, and at "Was the payment received?
   Answer yes or no." replaces the model's ``No`` (argmax) by ``Yes`` (0.40 nat below), continues
   greedily and claims the validator's own logprobs and fingerprints: no finding, from a float32
   validator as from the default one (whether or not its bf16 screen doubts the token, its arbiter
   judges a bf16 node by the same bf16 pair: `Verifier._judge`, `Tolerance.for_pair`). The same steer
   under the float32 id is an ``llm.token`` finding (control:
   `test_defence_the_same_steer_under_the_float32_id_is_caught`). Why it matters beyond the known
   limit "the bf16 pair's loose bounds accept a cheaper format" (test_review_model_provenance.py,
   6): that limit costs the user quality; this one lets the node pick the answer (a yes/no, a
   figure, a name) whenever the model is within 0.6 nat of two answers, i.e. on most uncertain
   questions, and a sampled call lets it pick any token within 0.1 of the draw (measured at the
   first position of two prompts, three seeds each, T = 1 and 0.7: 2 to 5,310 tokens, most often
   hundreds). And the user does not knowingly choose it (docs/validator.md says "a user who signs
   a bf16 id accepts the bf16 bounds knowingly"): validators declare every compute format
   of their weights as checked (`Validator._declare_models`, service.py ~348), a GPU node serves
   bfloat16 by default, and the client signs the node's *first* listed id when no model is given,
   or the id the node's own ``modelNames`` maps a name to (`supernet.sdk.client.types.pick_model_id`).
   Fix by design: make the loose precision an explicit product choice, not a node's: the client
   signs a ``bfloat16`` id only when the caller names that precision (``model="...@bfloat16"`` or a
   ``precision=`` option; never as a default or through ``modelNames``), and the docs state the
   window it opens (0.6 nat per greedy token, 0.1 CDF per sampled token); or, better, give bf16 an
   exact check: batch-invariant bf16 kernels (a fixed reduction order per row, as deterministic
   inference engines do) let a validator re-score a bf16 node *in bf16* under the same-format bounds,
   as int8-weights already is. The first is built (twenty-sixth session): a client signs a bf16 id
   only when its caller accepts bfloat16 (``precisions``, ``--allow-bfloat16``), checked against
   the node's stated ``modelFormats`` (tests/unit/test_node_api_types.py,
   tests/unit/test_review_model_formats.py); the window stays for a user who opts in.
2. LOW, FIXED (`ChatResult` no longer carries the count; the trace keeps it as telemetry) —
   ``ChatResult.preemptions``, a number no check binds, reached the agent, so a node chose which
   branch of an agent that reads it runs
   (`test_defence_a_node_chosen_preemption_count_no_longer_skips_the_agents_second_call`). The LLM event's
   ``preemptions`` is recorded by the node (dispatch.py ~500 hands ``outcome.preemptions`` to the
   agent), the replay's tape hands the recorded value back (replay.py ~632, `_TapeScheduler`), and
   nothing else reads it: no re-score can reproduce the node's scheduling. The SDK documents it to
   agent authors ("How often the scheduler preempted and resumed this generation",
   `supernet.sdk.agents.syscalls.ChatResult`), so a load-aware agent (draft, then refine unless the
   node is busy) is an honest design; its node records one preemption, drops the refine call (the
   larger half of the work) and answers with the draft, for the full fee, with a clean verdict. No
   shipped agent reads the field, hence LOW. Fix by design: what the agent sees must be a function
   of the checked record: the kernel hands every agent ``preemptions = 0`` (or drops the field from
   `ChatResult` and keeps it in the trace as telemetry only), on the node and in the replay alike.

Checked and holding (``test_defence_*``):

- the greedy steer of 1 under the float32 id (the tight same-format bound, 0.001 nat) is an
  ``llm.token`` finding at the steered position;
- sampling parameters recorded otherwise than the agent asked for (a greedy call recorded as
  sampled at T = 0.7, which would open the sampled window; a smaller ``max_new_tokens`` with the
  output cut to it and ``length`` claimed; another seed) are ``replay`` findings;
- a non-canonical tokenisation of the honest answer (the same text, one token per character: the
  same decoded text, output and output hash) is an ``llm.token`` finding: greedy positions must be
  the model's argmax, not merely decode to the same text;
- an old honest trace of the same user and input committed under a new request (another nonce) is a
  ``trace`` finding (task id), and with its task id rewritten to the new request's, a ``replay``
  finding (its seed is the old task's).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import pytest
import pytest_asyncio
from eth_account import Account
from supernet.node.agents.base import Agent
from supernet.node.agents.chat import ChatAgent
from supernet.node.agents.context import AgentContext
from supernet.node.agents.registry import AgentRegistry
from supernet.node.kernel.dispatch import stop_text
from supernet.node.kernel.syscalls import TaskSpec
from supernet.node.llm.scoring import Tolerance
from supernet.node.llm.types import finish_reason_of
from supernet.sdk.chain.eip712 import Domain, TaskRequest, hash_task_request, sign_task_request
from supernet.sdk.chain.receipts import Receipt, input_hash, output_hash, sign_receipt, trace_hash
from supernet.sdk.formats.manifest import ManifestEntry
from supernet.sdk.models import served_model_id
from supernet.validator.llm_check import check_scores
from supernet.validator.tool_check import RegistryRunner
from supernet.validator.trace_view import parse_trace
from supernet.validator.verifier import Manifest, Verifier, score_call

from tests.unit.test_validator_attacks3 import NoEmbedder

SMOLLM2 = Path.home() / ".cache" / "supernet" / "models" / "smollm2-135m"
pytestmark = [
    pytest.mark.model,
    pytest.mark.timeout(120),
    pytest.mark.skipif(not (SMOLLM2 / "model.safetensors").exists(), reason="SmolLM2 not cached"),
]

DOMAIN = Domain(chain_id=31337, verifying_contract="0x" + "33" * 20)
USER = Account.from_key("0x" + "c1" * 32)
NODE = Account.from_key("0x" + "c2" * 32)
QUESTION = "Was the payment received? Answer yes or no."


# -- an agent a node runs (installed on the validator alike) ---------------------------------------


class DraftThenRefine(Agent):
    """A load-aware agent, written to the SDK's documented ABI: a short draft, then a longer refined
    answer, unless the node was busy with the draft (the scheduler preempted it), in which case
    the draft is the answer (shedding load as a web service degrades under pressure)."""

    agent_id = "draftrefine"
    description = "Drafts an answer, then refines it unless the node is busy."
    input_schema: ClassVar[Mapping[str, Any]] = {"type": "string"}

    async def run(self, ctx: AgentContext, input: Any) -> str:
        draft = await ctx.llm.chat([{"role": "user", "content": str(input)}], max_new_tokens=6)
        # written to the old ABI, where ChatResult carried the count (0 when absent, as now)
        if getattr(draft, "preemptions", 0) > 0:  # the node is loaded: answer with the draft
            return draft.text
        refined = await ctx.llm.chat(
            [
                {"role": "user", "content": str(input)},
                {"role": "assistant", "content": draft.text},
                {"role": "user", "content": "Explain your answer in one sentence."},
            ],
            max_new_tokens=24,
        )
        return refined.text


def registry() -> AgentRegistry:
    r = AgentRegistry()
    for cls in (ChatAgent, DraftThenRefine):
        r.register(cls)
    return r


# -- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def loaded() -> Any:
    """One float32 load of the weights: the node's engines and the validator's scorer share it."""
    from supernet.node.llm.loader import load_model

    return load_model(SMOLLM2, compute="float32", max_positions=1024)


@pytest.fixture(scope="module")
def scorer(loaded: Any) -> Any:
    """The validator's float32 scorer (the strictest configuration: no bf16 screen)."""
    from supernet.validator.scoring import ModelScorer

    return ModelScorer.from_loaded(loaded)


def _engine(loaded: Any, compute: str) -> Any:
    """A node engine on the float32 weights that serves (signs receipts for) ``compute``'s id: the
    node's own software says which format it computes in, and a trace records that word."""
    from supernet.node.llm import LLMEngine

    engine = LLMEngine(loaded.model, loaded.tokenizer, loaded.model_id, max_batch=4, max_seq_len=1024)
    engine.compute = compute
    engine.model_id = served_model_id(loaded.model_id, compute)
    return engine


@pytest_asyncio.fixture
async def make_node(loaded: Any, store_client: Any) -> AsyncIterator[Any]:
    from supernet.node.kernel.kernel import Kernel

    kernels: list[Any] = []

    async def make(compute: str = "float32") -> Any:
        k = Kernel(_engine(loaded, compute), store_client, None, embedder=NoEmbedder(), agents=registry())
        await k.setup()
        kernels.append(k)
        return k

    yield make
    for k in kernels:
        await k.stop()


_nonce = iter(range(1, 10**6))


def _request(kernel: Any, agent: type[Agent], task_input: Any) -> tuple[TaskRequest, bytes]:
    req = TaskRequest(
        user=USER.address,
        node=NODE.address,
        model_id=bytes.fromhex(kernel.model_id[2:]),
        agent_hash=bytes.fromhex(kernel.profile(agent.agent_id).hash()[2:]),
        input_hash=input_hash(task_input),
        max_fee=100,
        nonce=next(_nonce),
        deadline=2**40,
    )
    return req, sign_task_request(req, DOMAIN, USER)


async def run_signed(kernel: Any, agent: type[Agent], task_input: Any) -> tuple[dict[str, Any], Any, bytes]:
    """Run a user-signed task on ``kernel``; returns (trace document, request, user signature)."""
    req, sig = _request(kernel, agent, task_input)
    spec = TaskSpec(
        task_id="0x" + hash_task_request(req, DOMAIN).hex(),
        agent_id=agent.agent_id,
        input=task_input,
        user=USER.address,
        fee=100,
        agent_hash="0x" + req.agent_hash.hex(),
        request=req.to_json(),
        request_signature="0x" + sig.hex(),
        model_id=kernel.model_id,
    )
    outcome = await kernel.run_task(spec)
    return dict(await kernel.store.get_dag(outcome.trace_cid)), req, sig


async def verdict_of(store: Any, scorer: Any, trace: Mapping[str, Any], req: TaskRequest, sig: bytes) -> Any:
    """Commit ``trace`` under a receipt the node signs for ``req``; the whole `Verifier`'s verdict."""
    cid = await store.put_dag(dict(trace), pin=True)
    receipt = Receipt(
        request_hash=hash_task_request(req, DOMAIN),
        user=USER.address,
        model_id=req.model_id,
        input_hash=req.input_hash,
        output_hash=output_hash(trace["output"]),
        trace_hash=trace_hash(cid),
        fee=100,
    )
    entry = ManifestEntry(receipt, receipt.leaf(), sign_receipt(receipt, NODE), cid, "x", req, sig)
    verifier = Verifier(store, scorer, RegistryRunner(store), DOMAIN, "0x" + "44" * 20, agents=registry())
    return await verifier.verify(1, NODE.address, 0, Manifest({0: entry}))


def checks(verdict: Any) -> list[str]:
    return [f.check.value for f in verdict.findings]


def llm_indexes(trace: Mapping[str, Any]) -> list[int]:
    return [i for i, e in enumerate(trace["events"]) if e["kind"] == "llm"]


def with_event(trace: Mapping[str, Any], index: int, **changes: Any) -> dict[str, Any]:
    events = list(trace["events"])
    events[index] = {**events[index], **changes}
    return {**trace, "events": events}


def claimed(scorer: Any, call: Any, output: list[int]) -> dict[str, Any]:
    """The fields a node records for ``output`` in place of ``call``'s: the validator's own
    logprobs and fingerprints (a node computing in float32 knows them), the text the agent reads,
    the finish reason the engine's rule gives."""
    probe = replace(call, output_ids=tuple(output), logprobs=(0.0,) * len(output))
    own = score_call(scorer, probe)
    fps = [{"index": f.index, "indices": list(f.indices), "values": list(f.values)} for f in own.fingerprints]
    return {
        "output_ids": list(output),
        "logprobs": list(own.logprobs),
        "fingerprints": fps,
        "text": stop_text(scorer.tokenizer, output),
        "finish_reason": finish_reason_of(output, call.max_new_tokens, set(scorer.eos_ids)),
    }


def greedy_after(scorer: Any, call: Any, prefix: list[int]) -> list[int]:
    """The model's argmax continuation of ``prefix`` up to the call's budget or a stop token."""
    out = list(prefix)
    while len(out) < call.max_new_tokens and (not out or out[-1] not in scorer.eos_ids):
        probe = replace(call, output_ids=(*out, 0), logprobs=(0.0,) * (len(out) + 1))
        out.append(score_call(scorer, probe).top_tokens[-1][0][0])
    return out


def steer_to_yes(scorer: Any, trace: Mapping[str, Any]) -> tuple[dict[str, Any], float]:
    """The node's cheat on the chat call: its first token ``No`` (the argmax) replaced by the
    likeliest token that starts a ``Yes``, the rest the model's argmax continuation, the record
    made consistent (logprobs, fingerprints, text, finish, the task's output). Returns the edited
    trace and the steered token's gap below the argmax (nat)."""
    at = llm_indexes(trace)[0]
    call = parse_trace(trace).llm_calls[0]
    first = score_call(scorer, call).top_tokens[0]
    best = first[0][1]
    words = {t: scorer.tokenizer.decode([t]).strip().lower() for t, _ in first}
    yes, lp = next((t, lp) for t, lp in first if words[t].startswith("yes"))
    fields = claimed(scorer, call, greedy_after(scorer, call, [yes]))
    return {**with_event(trace, at, **fields), "output": fields["text"]}, best - lp


# -- 1. the bfloat16 id: the pair's bounds are a window the node steers in --------------------------


async def test_known_limit_a_node_on_the_bfloat16_id_flips_a_greedy_answer_inside_the_pair_bounds(
    make_node: Any, store_client: Any, scorer: Any
) -> None:
    """Finding 1 (MEDIUM; module docstring). The node serves the bfloat16 id (the default of a GPU
    node; the client signs a node's first id unasked), computes in float32, and on a greedy yes/no
    question emits ``Yes`` where the model's argmax is ``No``, 0.40 nat apart: inside the bf16
    pair's greedy bound of 0.6 nat, so the whole Verifier finds nothing. KNOWN LIMIT (asserted as
    it stands, docs/security-parameters.md "Known limits"): bf16 on two machines (or two batch
    shapes) differs by up to those bounds, so a validator cannot tell a steer inside them from
    noise. The same-format bound (1e-3 nat) does catch it (asserted below, and under the float32
    id in the next test). Fixes by design, not built: the client signing a bf16 id only when the
    caller names that precision (the node's info would list each id's weights and compute, which
    the client checks against the id), and batch-invariant bf16 kernels, re-scored in bf16 under
    same-format bounds as int8-weights is."""
    node = await make_node("bfloat16")
    trace, req, sig = await run_signed(node, ChatAgent, {"messages": [{"role": "user", "content": QUESTION}]})
    assert trace["engine"]["dtype"] == "bfloat16" and trace["output"].startswith("No"), trace["output"]
    honest = await verdict_of(store_client, scorer, trace, req, sig)
    assert honest.ok and not honest.unverifiable, checks(honest)

    steered, gap = steer_to_yes(scorer, trace)
    assert steered["output"].startswith("Yes") and 0.05 < gap < Tolerance.bf16().selection_margin, gap
    call = parse_trace(steered).llm_calls[0]
    exact = check_scores(call, score_call(scorer, call), Tolerance())  # the node's own format's bound
    assert [(f.check.value, f.position) for f in exact] == [("llm.token", 0)]

    verdict = await verdict_of(store_client, scorer, steered, req, sig)
    assert verdict.ok and not verdict.unverifiable, (
        f"the steer inside the bf16 pair's bounds is now caught ({checks(verdict)}): update the known "
        "limit in docs/security-parameters.md and make this a defence"
    )


async def test_defence_the_same_steer_under_the_float32_id_is_caught(
    make_node: Any, store_client: Any, scorer: Any
) -> None:
    """Control of finding 1: the same node serving the float32 id, with the same edit, is held to
    the same-format bound (0.001 nat) and gets an ``llm.token`` finding at the steered position."""
    node = await make_node("float32")
    trace, req, sig = await run_signed(node, ChatAgent, {"messages": [{"role": "user", "content": QUESTION}]})
    steered, _ = steer_to_yes(scorer, trace)
    verdict = await verdict_of(store_client, scorer, steered, req, sig)
    assert [(f.check.value, f.position) for f in verdict.findings] == [("llm.token", 0)]


# -- 2. a recorded value no check binds, handed to the agent ----------------------------------------


async def test_defence_a_node_chosen_preemption_count_no_longer_skips_the_agents_second_call(
    make_node: Any, store_client: Any, scorer: Any
) -> None:
    """Finding 2 (LOW; module docstring). An honest run of `DraftThenRefine` makes two LLM calls
    (the draft was not preempted). The node records one preemption on the draft, drops the refine
    call (24 of the task's 30 budgeted tokens) and answers with the draft: the replay hands the
    agent the recorded count, the agent takes its busy branch, and every remaining call scores as
    the model's own. Safe behaviour asserted: the cheat gets a finding (e.g. the replay's agent sees
    no preemption, as the node's must, and makes its second call). FIXED: `ChatResult` no longer
    carries the count (an agent sees only what a replay rebuilds), so the replay's agent makes its
    second call and the dropped call is a replay finding."""
    node = await make_node("float32")
    trace, req, sig = await run_signed(node, DraftThenRefine, QUESTION)
    assert trace["status"] == "ok" and len(llm_indexes(trace)) == 2, trace.get("error")
    honest = await verdict_of(store_client, scorer, trace, req, sig)
    assert honest.ok and not honest.unverifiable, checks(honest)

    draft, refine = llm_indexes(trace)
    cheat = with_event(trace, draft, preemptions=1)
    cheat = {**cheat, "events": [e for i, e in enumerate(cheat["events"]) if i != refine]}
    cheat["output"] = trace["events"][draft]["text"]
    verdict = await verdict_of(store_client, scorer, cheat, req, sig)
    assert not verdict.ok, (
        f"the node skipped the refine call and answered {cheat['output']!r}: verdict "
        f"{checks(verdict) or 'ok'}, the preemption count is the node's word"
    )


# -- checked and holding ---------------------------------------------------------------------------


async def test_defence_sampling_parameters_recorded_otherwise_than_asked_are_caught(
    make_node: Any, store_client: Any, scorer: Any
) -> None:
    """A node that records other parameters than the agent's call gives (to widen its window or cut
    its work) diverges from the replay, which re-derives them from the signed input: a greedy call
    recorded as sampled at T = 0.7, a smaller budget with the output cut to it and ``length``
    claimed, another seed on a sampled call."""
    node = await make_node("float32")
    greedy = {"messages": [{"role": "user", "content": QUESTION}], "max_new_tokens": 8}
    trace, req, sig = await run_signed(node, ChatAgent, greedy)
    at = llm_indexes(trace)[0]
    event = trace["events"][at]

    as_sampled = with_event(trace, at, params={**event["params"], "temperature": 0.7})
    verdict = await verdict_of(store_client, scorer, as_sampled, req, sig)
    assert "replay" in checks(verdict), checks(verdict)

    call = parse_trace(trace).llm_calls[0]
    cut = replace(call, max_new_tokens=2)
    fields = claimed(scorer, cut, list(call.output_ids[:2]))
    shorter = with_event(trace, at, params={**event["params"], "max_new_tokens": 2}, **fields)
    shorter["output"] = fields["text"]
    assert fields["finish_reason"] == "length"
    verdict = await verdict_of(store_client, scorer, shorter, req, sig)
    assert "replay" in checks(verdict), checks(verdict)

    sampled = {**greedy, "temperature": 0.7, "seed": 11}
    trace, req, sig = await run_signed(node, ChatAgent, sampled)
    at = llm_indexes(trace)[0]
    reseeded = with_event(trace, at, params={**trace["events"][at]["params"], "seed": 12})
    verdict = await verdict_of(store_client, scorer, reseeded, req, sig)
    assert "replay" in checks(verdict), checks(verdict)


async def test_defence_a_non_canonical_tokenisation_of_the_honest_text_is_caught(
    make_node: Any, store_client: Any, scorer: Any
) -> None:
    """The node records the honest answer's text as other token ids (one token per character: the
    same decoded text, so the same output and output hash, and the same replay), e.g. to pad the
    token count a drop-in's ``usage`` reports, or to cut its work to spelling: greedy positions must
    be the model's argmax, so each re-spelt position is an ``llm.token`` finding."""
    node = await make_node("float32")
    trace, req, sig = await run_signed(node, ChatAgent, {"messages": [{"role": "user", "content": QUESTION}]})
    at = llm_indexes(trace)[0]
    call = parse_trace(trace).llm_calls[0]
    tok = scorer.tokenizer
    text = trace["events"][at]["text"]
    spelt = [i for ch in text for i in tok.encode(ch)]
    tail = [t for t in call.output_ids if t in scorer.eos_ids][-1:]  # the honest stop token, kept
    spelt += tail
    assert tok.decode(spelt, skip_special_tokens=True) == text and tuple(spelt) != call.output_ids
    fields = claimed(scorer, replace(call, max_new_tokens=max(call.max_new_tokens, len(spelt))), spelt)
    respelt = with_event(trace, at, **fields)
    assert respelt["events"][at]["text"] == text
    verdict = await verdict_of(store_client, scorer, respelt, req, sig)
    assert "llm.token" in checks(verdict), checks(verdict)


async def test_defence_an_old_honest_trace_under_a_new_request_is_caught(
    make_node: Any, store_client: Any, scorer: Any
) -> None:
    """The node answers a repeated request (same user, same input, a new nonce) with the trace of
    the first one, doing no work: a ``trace`` finding (the task id is the old request's); with the
    task id rewritten to the new request's, a ``replay`` finding (the task seed is the old one's,
    and the sampled calls' seeds follow it)."""
    node = await make_node("float32")
    task_input = {"messages": [{"role": "user", "content": QUESTION}], "temperature": 0.7}
    old, _, _ = await run_signed(node, ChatAgent, task_input)
    req, sig = _request(node, ChatAgent, task_input)
    verdict = await verdict_of(store_client, scorer, old, req, sig)
    assert "trace" in checks(verdict), checks(verdict)
    renamed = {**old, "task_id": "0x" + hash_task_request(req, DOMAIN).hex()}
    verdict = await verdict_of(store_client, scorer, renamed, req, sig)
    assert "replay" in checks(verdict), checks(verdict)
