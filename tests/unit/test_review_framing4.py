"""Fourth adversarial review of the LLM checks, on the DEFAULT configuration: the node serves the
``float16-weights`` format (the CPU default, `LLMEngine.load(compute="float16-weights")`), the
validator is `ModelScorer.load_screened` (``auto``: a bfloat16 screen and a float16-weights
arbiter where the CPU computes bf16 natively, else float16-weights alone) behind the real
`Verifier`, which judges such a node in its own format with the tight `Tolerance()`.

Sides played: a USER (alone or with a validator) who wants an HONEST node flagged, through what it
signs (messages, temperature, ``top_p``, seed, ``max_new_tokens``, stop strings, grammars), and a
NODE that wants a steered output accepted. Every end-to-end test runs the honest node's real code
(the kernel, `ChatAgent`, the engine's continuous-batching decode) and the whole `Verifier`
(`tests.integration.test_user_framing_attacks.honest_verdict`, with the default arbiter).

The user's preparation is offline and legitimate: the model, the engine and the validator are
open code; the user runs the validator's scorer (bit-identical: same format, same kind of CPU) and
reads the node's row from the node's own engine (here captured from `step.select`; a user who
cannot reproduce the node's decode bit for bit simply tries: each try is about an even bet).

Found, and fixed since (each now a ``test_defence_*``):

* high: the nucleus is a cut in PROBABILITY ORDER, and same-format noise (~1e-5 in logits) swaps
  near-tied tokens there. A user set ``top_p`` inside the share of the last member ``a`` of a
  nucleus whose next token ``b`` is tied with it within that noise, and a seed whose draw lies in
  ``b``'s interval on the node. The node's row ranks ``b`` above ``a``, so its nucleus holds ``b``
  and it draws ``b``; every nucleus of the validator's order that holds ``b`` also holds ``a``, so
  the margin was the cut's distance, about half of ``a``'s share, against the bound: an
  ``llm.sample`` accusation of an honest node (position 1 of "Tell me a fact about space.", T = 1.5:
  tokens 5428 / 7436, 2.9e-6 apart on the validator and 4.8e-6 the other way on the node; margin
  2.4e-4). Fixed: the margin also takes the nuclei made by swapping two tokens across a cut, at
  the swap's price ``min(T, 1) * log(p_a / p_b) / 4`` (`sampling._swap_margin`; the batched
  margins send every row where such a swap might do better to it); that draw now scores 4.8e-7.
* high (implementation): `sampling.selection_margins` refined a margin over the other nuclei only
  above ``EXACT_ABOVE`` = 1e-3, above the same-format bound (2e-4): with ``top_p`` set between the
  two sides' sums of the same tokens the node's token was flagged while `selection_margin` accepted
  it (position 1 of "List some animals.", top_p 0.98356, token 30: batched 3.7e-4, exact 5.6e-8).
  Fixed: ``EXACT_ABOVE`` is 0, every batched margin that is not 0 is exact.
* medium (cheating node): `Tolerance.sample_bound` was flat (2e-4 of CDF mass) at ``T >= 1``,
  though honest noise moves the CDF by ``e / T`` there: at ``T`` = 5 the window held 13-25 tokens at
  each of 8 positions and a node rewrote the reply with a clean verdict. Fixed: the bound narrows as
  ``1 / T`` above 1 (4e-5 at ``T`` = 5), where the window holds 3-7 tokens (shares there are ~1e-5)
  and that reply is caught at every position.

Also holds: ``top_p`` exactly equal to a cumulative sum the validator computes (the
1e-12 edge guard sends the row to the exact function), ``temperature`` exactly ``MIN_TEMPERATURE``
with a one-token nucleus, ``max_new_tokens`` 0 (the dispatcher makes it 1 on both sides) and 1 with
a stop string made of the first token's half character, and a grammar sampled at ``T`` = 1e300
(disallowed tokens stay at ``-inf``, the allowed ones uniform on both sides).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import torch
from supernet.node.llm import sampling
from supernet.node.llm.sampling import (
    MIN_TEMPERATURE,
    SamplingParams,
    _nucleus,
    select,
    selection_margin,
    selection_margins,
    uniform,
)
from supernet.node.llm.scoring import ScoreRequest, Tolerance
from supernet.sdk.models import CPU_DEFAULT_COMPUTE
from supernet.validator.llm_check import check_scores
from supernet.validator.trace_view import LLMCall
from supernet.validator.verifier import Verifier, score_call

import tests.integration.test_user_framing_attacks as framing
from tests.integration.test_user_framing_attacks import describe, honest_verdict, llm_events, registry
from tests.unit.test_review_cheating_node import _logits
from tests.unit.test_validator_attacks3 import NoEmbedder

SMOLLM2 = Path.home() / ".cache" / "supernet" / "models" / "smollm2-135m"
pytestmark = [
    pytest.mark.model,
    pytest.mark.timeout(900),
    pytest.mark.skipif(not (SMOLLM2 / "model.safetensors").exists(), reason="SmolLM2 not cached"),
]

FP16W = CPU_DEFAULT_COMPUTE  # int8-weights: float16-weights arithmetic on its grid
TIGHT = Tolerance.for_pair(FP16W, FP16W)
PROMPTS = (
    "List some animals.",
    "Name a colour.",
    "Write a short poem about the sea.",
    "What is the capital of France?",
    "Give me three ideas for a birthday party.",
    "Tell me a fact about space.",
)


@pytest.fixture(scope="module")
def engine() -> Any:
    """The honest node's engine in its CPU default format."""
    from supernet.node.llm import LLMEngine

    return LLMEngine.load(SMOLLM2, compute=FP16W)


@pytest.fixture(scope="module")
def validator() -> tuple[Any, Any]:
    """A default validator's scorers: (screen, arbiter); arbiter None where bf16 is not native."""
    from supernet.validator.scoring import ModelScorer

    screen, arbiter = ModelScorer.load_screened(str(SMOLLM2), device="cpu")
    assert (arbiter or screen).dtype == FP16W  # the node's format decides, as configured by default
    return screen, arbiter


@pytest.fixture
def decider(validator: tuple[Any, Any]) -> Any:
    """The scorer whose verdict decides a float16-weights node's calls (`Verifier._decider`)."""
    screen, arbiter = validator
    return (arbiter or screen).for_compute(FP16W)


@pytest_asyncio.fixture
async def kernel(engine: Any, store_client: Any) -> AsyncIterator[Any]:
    from supernet.node.kernel.kernel import Kernel

    k = Kernel(engine, store_client, None, embedder=NoEmbedder(), agents=registry())
    await k.setup()
    yield k
    await k.stop()


@pytest.fixture
def default_verifier(monkeypatch: pytest.MonkeyPatch, validator: tuple[Any, Any]) -> Any:
    """`honest_verdict` with the default validator: its screen as the scorer, its arbiter beside it."""
    screen, arbiter = validator
    monkeypatch.setattr(framing, "Verifier", functools.partial(Verifier, arbiter=arbiter))
    return screen


@pytest.fixture
def node_rows(monkeypatch: pytest.MonkeyPatch) -> list[torch.Tensor]:
    """Every logits row the node's engine selects a token from, in order (`step.select`)."""
    import supernet.node.llm.step as step

    rows: list[torch.Tensor] = []
    real = step.select

    def spy(logits: torch.Tensor, params: Sequence[SamplingParams], positions: Sequence[int]) -> list[int]:
        rows.extend(r.detach().clone() for r in logits)
        return real(logits, params, positions)

    monkeypatch.setattr(step, "select", spy)
    return rows


def validator_rows(
    decider: Any, prompt: Sequence[int], output: Sequence[int], mp: pytest.MonkeyPatch
) -> torch.Tensor:
    """The rows ``[len(output), V]`` the validator computes its margins on for ``prompt + output``
    (the last output token does not change them)."""
    import supernet.node.llm.scoring as scoring

    rows: list[torch.Tensor] = []
    real = scoring.selection_margins

    def spy(block: torch.Tensor, tokens: Sequence[int], params: SamplingParams, start: int) -> list[float]:
        rows.append(block.detach().clone())
        return real(block, tokens, params, start)

    with mp.context() as m:
        m.setattr(scoring, "selection_margins", spy)
        decider.score_many([ScoreRequest(tuple(prompt), tuple(output), SamplingParams(temperature=1.0))])
    out = torch.cat(rows)
    assert out.shape[0] == len(output)
    return out


def chat(text: str, **options: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], "max_new_tokens": 1, **options}


REPLY = 4  # tokens of the greedy reply the user studies


async def study(
    kernel: Any, store: Any, screen: Any, node_rows: list[torch.Tensor], text: str
) -> tuple[tuple[int, ...], list[int], list[torch.Tensor]]:
    """The user's preparation: the prompt, the node's greedy reply and the rows the node drew each
    token from (stable once its prefix cache is warm: two runs in a row give the same bits)."""
    last: list[torch.Tensor] | None = None
    for _ in range(5):
        node_rows.clear()
        trace, verdict = await honest_verdict(
            kernel, store, screen, framing.ChatAgent, chat(text, max_new_tokens=REPLY)
        )
        assert verdict.findings == (), describe(verdict)  # greedy: the honest control verifies
        rows = list(node_rows)
        if last is not None and len(rows) == len(last) and all(map(torch.equal, rows, last)):
            break
        last = rows
    else:
        raise AssertionError("the node's rows do not settle")
    call = llm_events(trace)[0]
    return tuple(call["prompt_ids"]), list(call["output_ids"]), rows


def seed_for(
    node: list[torch.Tensor], want: list[int], temperature: float, top_p: float, at: int, tries: int = 200_000
) -> int | None:
    """A seed under which the node's rows draw ``want`` (position ``at`` onwards), if one of the first
    ``tries`` does."""
    last = len(want) - 1
    probs = torch.softmax(node[last].double() / temperature, -1)
    members = _nucleus(probs, top_p)
    cdf = probs[members].cumsum(0)
    k = int(torch.nonzero(members == want[last]).flatten()[0])
    lo, hi = float(cdf[k - 1] / cdf[-1]) if k else 0.0, float(cdf[k] / cdf[-1])
    for s in range(tries):
        if lo < uniform(s, at + last) < hi:
            params = SamplingParams(temperature=temperature, top_p=top_p, seed=s)
            if all(select(node[i][None], [params], [at + i]) == [want[i]] for i in range(len(want))):
                return s
    return None


def sampled_findings(verdict: Any) -> list[Any]:
    return [f for f in verdict.findings if f.check.value == "llm.sample"]


async def attack(
    kernel: Any,
    store: Any,
    screen: Any,
    node_rows: list[torch.Tensor],
    text: str,
    want: list[int],
    **options: Any,
) -> tuple[dict[str, Any], Any]:
    """Run the crafted request on the honest node; check it drew from the rows the user studied."""
    node_rows.clear()
    task = chat(text, max_new_tokens=len(want), **options)
    trace, verdict = await honest_verdict(kernel, store, screen, framing.ChatAgent, task)
    assert list(llm_events(trace)[0]["output_ids"]) == want  # the honest node drew them, by the rule
    return trace, verdict


# -- 1. a near-tie at the nucleus cut ----------------------------------------------------------------


def _swap_at_the_cut(
    node: torch.Tensor, val: torch.Tensor, temperature: float
) -> tuple[int, int, float] | None:
    """A nucleus cut where the two rows order two tokens of share > 4e-4 the other way: (a, b, top_p)
    with ``a`` in the validator's nucleus and ``b`` in the node's."""
    pv = torch.softmax(val.double() / temperature, -1)
    pn = torch.softmax(node.double() / temperature, -1)
    order = torch.sort(pv, descending=True, stable=True).indices
    cum = pv[order].cumsum(0)
    for r in range(1, int((pv > 4e-4).sum()) - 1):
        a, b = int(order[r]), int(order[r + 1])
        if not node[b] > node[a]:
            continue
        top_p = float(cum[r - 1] + pv[a] / 2)
        on_node, on_val = set(_nucleus(pn, top_p).tolist()), set(_nucleus(pv, top_p).tolist())
        if b in on_node and a not in on_node and on_val == (on_node - {b}) | {a}:
            return a, b, top_p
    return None


async def test_defence_a_near_tie_at_the_nucleus_cut_does_not_get_an_honest_node_flagged(
    kernel: Any,
    store_client: Any,
    default_verifier: Any,
    decider: Any,
    node_rows: list[torch.Tensor],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Attack (a USER frames an honest node): find, offline, a position of a reply where the node's
    row and the validator's order two tokens ``a``, ``b`` of share > 4e-4 the other way (a near-tie
    within the decode / re-score noise), set ``top_p`` inside ``a``'s share and a seed whose draw lies
    in ``b``'s interval on the node: the node's nucleus holds ``b``, the validator's ``a``.

    Was: `sampling._nucleus` keeps the likeliest tokens in probability order, and every nucleus of
    the VALIDATOR's order that holds ``b`` also holds ``a``, so the margin was the cut's distance
    ``cum - top_p`` (~half of ``a``'s share): an ``llm.sample`` accusation. Defence: the margin also
    takes the nuclei made by swapping ``a`` for a near-tied ``b`` across the cut, at the swap's price
    ``min(T, 1) * log(p_a / p_b) / 4`` (`sampling._swap_margin`), i.e. the noise; without them the
    margin is still past the bound. The search is bounded (~10 s here; it finds the first case in
    the last prompt) so the test ends whether or not the defence holds."""
    tried = 0
    landed = None  # the output ids of an attack the node's decode reproduced
    async for found in _near_ties(kernel, store_client, default_verifier, decider, node_rows, monkeypatch):
        text, prompt, head, node_j, val, temperature, a, b, top_p, seed = found
        at = len(prompt) + len(head)
        assert 0 < float(val[a] - val[b]) < 1e-4 and float(node_j[b] - node_j[a]) > 0  # a near-tie, swapped
        params = SamplingParams(temperature=temperature, top_p=top_p, seed=seed)
        bound = TIGHT.sample_bound(temperature)
        margin = selection_margin(val, b, params, at)
        assert margin <= bound / 10  # the swap's price: the noise
        assert selection_margins(val[None], [b], params, at)[0] == pytest.approx(margin, abs=1e-12)
        with monkeypatch.context() as m:  # the former rule, the validator's order's nuclei alone
            m.setattr(sampling, "_swap_margin", lambda *args, **kw: math.inf)
            m.setattr(sampling, "_band_margin", lambda *args, **kw: math.inf)
            assert selection_margin(val, b, params, at) > bound

        # the crafted request on the honest node: whatever it draws, its verdict is clean
        node_rows.clear()
        task = chat(text, max_new_tokens=len(head) + 1, temperature=temperature, top_p=top_p, seed=seed)
        trace, verdict = await honest_verdict(kernel, store_client, default_verifier, framing.ChatAgent, task)
        assert verdict.findings == (), describe(verdict)
        drew = list(llm_events(trace)[0]["output_ids"])
        tried += 1
        if drew == [*head, b]:  # the node drew b, as the user studied it: the attack landed
            landed = drew
            break
        if tried >= 3:
            break
    assert tried, "no near-tie at a cut in these prompts' replies"
    if landed is None:
        # the user's study is a bet on reproducing the node's decode bit for bit (module docstring);
        # on this CPU the re-run drew otherwise each time: the verdicts above were clean all the same
        pytest.skip(f"the node's decode did not reproduce the studied near-tie in {tried} tries on this CPU")


async def _near_ties(
    kernel: Any,
    store_client: Any,
    default_verifier: Any,
    decider: Any,
    node_rows: list[torch.Tensor],
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[Any, ...]]:
    """Near-ties at a nucleus cut the user finds offline, with the ``top_p`` and the seed of each
    attack: a position where the node's row and the validator's order two tokens the other way."""
    for text in PROMPTS[::-1]:
        prompt, out, node = await study(kernel, store_client, default_verifier, node_rows, text)
        for j in range(1, len(out)):
            val = validator_rows(decider, prompt, [*out[:j], 0], monkeypatch)[j]
            for temperature in (1.0, 1.5, 2.0):
                swap = _swap_at_the_cut(node[j], val, temperature)
                if swap is None:
                    continue
                a, b, top_p = swap
                seed = seed_for(node, [*out[:j], b], temperature, top_p, len(prompt))
                if seed is not None:
                    yield text, prompt, out[:j], node[j], val, temperature, a, b, top_p, seed


# -- 2. the batched margins' refinement threshold --------------------------------------------------


def _longer_node_nucleus(node: torch.Tensor, val: torch.Tensor, temperature: float) -> Any:
    """``top_p`` values between the two sides' sums of the same top ``k`` tokens (their nuclei then
    differ by one token), with the token set that the node's nucleus adds."""
    pv = torch.softmax(val.double() / temperature, -1)
    pn = torch.softmax(node.double() / temperature, -1)
    ov = torch.sort(pv, descending=True, stable=True).indices
    on = torch.sort(pn, descending=True, stable=True).indices
    cv, cn = pv[ov].cumsum(0), pn[on].cumsum(0)
    for k in range(2, 60):
        if not torch.equal(ov[: k + 1], on[: k + 1]) or abs(float(cn[k - 1] - cv[k - 1])) < 1e-10:
            continue
        if pv[ov[k]] >= 2e-4:
            yield float((cv[k - 1] + cn[k - 1]) / 2)


def _disagreeing_seeds(
    node: torch.Tensor, val: torch.Tensor, params: SamplingParams, at: int, count: int, tries: int = 100_000
) -> list[int]:
    """The first ``count`` of ``tries`` seeds under which the node's row draws another token than the
    validator's rule on its own row: where the two nuclei's intervals disagree."""
    u = torch.tensor([uniform(s, at) for s in range(tries)], dtype=torch.float64)
    drawn = []
    for row in (node, val):
        probs = torch.softmax(row.double() / params.temperature, -1)
        members = _nucleus(probs, params.top_p)
        cdf = probs[members].cumsum(0)
        drawn.append(members[torch.searchsorted(cdf, u * cdf[-1], right=True).clamp(max=len(members) - 1)])
    return torch.nonzero(drawn[0] != drawn[1]).flatten()[:count].tolist()


async def test_defence_batched_margins_are_exact_where_the_two_sides_nuclei_differ(
    kernel: Any,
    store_client: Any,
    default_verifier: Any,
    decider: Any,
    node_rows: list[torch.Tensor],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Attack (a USER frames an honest node): set ``top_p`` between the node's and the validator's sum
    of the same top ``k`` tokens (they differ by ~1e-6; within the 1e-12 edge guard nothing
    happens), so the node's nucleus is one token longer or shorter, and a seed whose draw the two
    nuclei's intervals split: the node's token sits a few 1e-4 off its interval in the validator's
    nucleus and ~1e-6 off it in the node's.

    Was: `sampling.selection_margins` looked at the other nuclei only above ``EXACT_ABOVE`` = 1e-3,
    above the same-format bound (2e-4): flagged, while `selection_margin` accepted the token.
    Defence: ``EXACT_ABOVE`` is 0, so the batched margin equals the per-row one on every such row
    (checked on up to 3 seeds per ``top_p``, 3 ``top_p`` per position, the first three prompts'
    replies), each within the bound, and one such call verifies end to end."""
    temperature = 1.0
    bound = TIGHT.sample_bound(temperature)
    checked, chosen = 0, None
    for text in PROMPTS[:3]:
        prompt, out, node = await study(kernel, store_client, default_verifier, node_rows, text)
        for j in range(1, len(out)):
            val = validator_rows(decider, prompt, [*out[:j], 0], monkeypatch)[j]
            at = len(prompt) + j
            for top_p in itertools.islice(_longer_node_nucleus(node[j], val, temperature), 3):
                rule = SamplingParams(temperature=temperature, top_p=top_p)
                for s in _disagreeing_seeds(node[j], val, rule, at, 3):
                    params = SamplingParams(temperature=temperature, top_p=top_p, seed=s)
                    t = select(node[j][None], [params], [at])[0]
                    margin = selection_margin(val, t, params, at)
                    assert selection_margins(val[None], [t], params, at)[0] == pytest.approx(
                        margin, abs=1e-12
                    )
                    assert margin <= bound, (text, j, top_p, s, t, margin)
                    checked += 1
                    same_head = all(
                        select(node[i][None], [params], [len(prompt) + i]) == [out[i]] for i in range(j)
                    )
                    if chosen is None and same_head:
                        chosen = (text, out[:j], top_p, s, t)
    assert checked >= 10 and chosen is not None, checked
    text, head, top_p, seed, token = chosen
    options = {"temperature": temperature, "top_p": top_p, "seed": seed}
    _, verdict = await attack(
        kernel, store_client, default_verifier, node_rows, text, [*head, token], **options
    )
    assert verdict.findings == (), describe(verdict)


# -- 3. the sampled window above temperature 1 -----------------------------------------------------


def _window(decider: Any, ids: tuple[int, ...], params: SamplingParams) -> dict[int, float]:
    """Every next token after ``ids`` within the former flat bound (2e-4) of the draw, with its margin."""
    row = _logits(decider, ids)
    at = len(ids)
    p = torch.softmax(row.double() / params.temperature, -1)
    cdf = p.cumsum(0)
    u = uniform(params.seed, at)
    near = torch.nonzero((cdf >= u - 4e-4) & (cdf - p <= u + 4e-4)).flatten().tolist()
    margins = {t: selection_margin(row, t, params, at) for t in near}
    return {t: m for t, m in margins.items() if m <= 2e-4}


def test_defence_a_node_cannot_steer_sampled_tokens_at_high_temperature(decider: Any) -> None:
    """Attack (a cheating NODE): at ``T`` = 5 choose each reply token among those the validator
    accepts next to the draw (the node knows each draw before it samples), here the highest id.

    Was: `Tolerance.sample_bound` was a flat 2e-4 at ``T >= 1``, ``T`` times wider than the honest
    noise (``e / T``): 13-25 tokens at each of 8 positions, all 8 tokens changed, a clean verdict.
    Defence: the bound narrows as ``1 / T`` above 1 (4e-5 at ``T`` = 5): the window holds 3-7 tokens
    here (a flat distribution's shares are ~1e-5 each), a third or less of the former 13-25, and
    the reply the former window allowed is caught where it leaves the window (every position
    here; `check_scores` reports the first ``MAX_POSITIONS_REPORTED``)."""
    prompt = tuple(
        decider.tokenizer.apply_chat_template(
            [{"role": "user", "content": "Write a short poem about the sea."}], add_generation_prompt=True
        )
    )
    temperature, seed, n = 5.0, 11, 8
    params = SamplingParams(max_new_tokens=n, temperature=temperature, seed=seed)
    bound = TIGHT.sample_bound(temperature)
    assert bound == pytest.approx(4e-5)
    steered: list[int] = []
    former, now, outside = [], [], []
    for i in range(n):
        ids = prompt + tuple(steered)
        honest = select(_logits(decider, ids)[None], [params], [len(ids)])[0]
        window = _window(decider, ids, params)
        accepted = [t for t, m in window.items() if m <= bound]
        assert honest in accepted
        former.append(len(window))
        now.append(len(accepted))
        steered.append(max(window))  # the node's policy under the former bound
        if steered[-1] not in accepted:
            outside.append(i)
    assert max(now) <= 8 and 3 * sum(now) <= sum(former), (now, former)
    assert len(outside) >= n // 2, outside

    probe = LLMCall(
        0, "m", prompt, tuple(steered), (0.0,) * n, None, temperature, 1.0, seed, n, None, "length", None
    )
    own = score_call(decider, probe)  # what the node records: its own logprobs and fingerprints
    fps = [{"index": f.index, "indices": list(f.indices), "values": list(f.values)} for f in own.fingerprints]
    claimed = LLMCall(
        0, "m", prompt, tuple(steered), own.logprobs, fps, temperature, 1.0, seed, n, None, "length", None
    )
    flagged = [f.position for f in check_scores(claimed, score_call(decider, claimed), TIGHT)]
    assert flagged == outside[: len(flagged)] and flagged[:1] == outside[:1]  # reported up to a cap


# -- defences ---------------------------------------------------------------------------------------


async def test_defence_top_p_exactly_on_a_validator_sum_and_min_temperature_verify(
    kernel: Any,
    store_client: Any,
    default_verifier: Any,
    decider: Any,
    node_rows: list[torch.Tensor],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Tried: ``top_p`` set to exactly the validator's cumulative sum of its top ``k`` tokens (the
    user computes it bit for bit), so the validator's nucleus sits exactly on the cut and the
    node's (~1e-6 away) on either side; seeds drawing near the cut's token; ``temperature`` exactly
    ``MIN_TEMPERATURE`` with that ``top_p``. Holds: within 1e-12 of ``top_p`` the batched margins
    mark the row inexact and take the exact per-row function, which considers every nucleus (the
    node's among them); at ``MIN_TEMPERATURE`` the log-odds margin absorbs the noise."""
    text = PROMPTS[0]
    prompt, out, node = await study(kernel, store_client, default_verifier, node_rows, text)
    val = validator_rows(decider, prompt, out[:2], monkeypatch)[1]
    pv = torch.softmax(val.double(), -1)
    cum = pv[torch.sort(pv, descending=True, stable=True).indices].cumsum(0)
    flagged, runs = [], 0
    for k in (1, 2, 3):
        top_p = float(cum[k - 1])  # exactly the validator's sum: its nucleus ends on the cut
        for temperature in (1.0, MIN_TEMPERATURE):
            seeds = (
                s
                for s in range(10_000)
                if select(
                    node[0][None],
                    [SamplingParams(temperature=temperature, top_p=top_p, seed=s)],
                    [len(prompt)],
                )
                == [out[0]]
            )
            for seed in (next(seeds), next(seeds)):
                options = {"temperature": temperature, "top_p": top_p, "seed": seed, "max_new_tokens": 2}
                trace, verdict = await honest_verdict(
                    kernel, store_client, default_verifier, framing.ChatAgent, chat(text, **options)
                )
                assert llm_events(trace)[0]["output_ids"][0] == out[0]  # position 1 drew from that row
                runs += 1
                if verdict.findings:
                    flagged.append((k, temperature, seed, describe(verdict)))
    assert runs == 12 and flagged == []


async def test_defence_budget_edges_stop_strings_and_a_grammar_at_a_huge_temperature_verify(
    kernel: Any, store_client: Any, default_verifier: Any
) -> None:
    """Tried: ``max_new_tokens`` 0 (the dispatcher records ``max(1, ...)`` on both sides), 1 with a
    stop string that is the first half of an emoji the reply starts with (U+FFFD) or the emoji
    itself, and a ``json_schema`` reply sampled at ``T`` = 1e300 with ``top_p`` 0.5 (every allowed
    token equally likely; masked tokens stay at ``-inf`` / T = ``-inf``). Holds: every receipt
    verifies clean under the default validator."""
    schema = {
        "type": "json_schema",
        "json_schema": {
            "name": "w",
            "schema": {"type": "object", "properties": {"w": {"enum": ["中文", "😀"]}}},
        },
    }
    cases: list[dict[str, Any]] = [
        chat("Reply with one emoji.", max_new_tokens=0),
        chat("Reply with 😀 only.", stop=["\ufffd"], temperature=0.7, seed=9),
        chat("Reply with 😀 only.", stop=["😀"], max_new_tokens=4),
        chat("Pick a word.", response_format=schema, temperature=1e300, top_p=0.5, seed=4, max_new_tokens=12),
    ]
    flagged = []
    for task_input in cases:
        trace, verdict = await honest_verdict(
            kernel, store_client, default_verifier, framing.ChatAgent, task_input
        )
        assert trace["status"] == "ok", trace.get("error")
        call = llm_events(trace)[0]
        assert call["output_ids"] and call["params"]["max_new_tokens"] >= 1
        assert verdict.unverifiable is None, verdict.unverifiable
        if verdict.findings:
            flagged.append((str(task_input)[:70], describe(verdict)))
    assert flagged == []
