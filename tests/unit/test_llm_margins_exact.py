"""The validator's faster scoring paths give bit for bit what the earlier ones gave.

``selection_margins`` finds the rule's nucleus among the tokens above a probability floor instead
of a batched top-k over the whole vocabulary, and ``score_packed`` post-processes the logits a few
rows at a time and pads attention by whole tokens; the decoder rotates without a rolled copy and
multiplies in place. Each is pinned here against a verbatim copy of
the implementation it replaced, on random rows with exact ties, flat rows, nuclei at the edge of
``top_p`` and near-perturbed logits (the refinement path), so soundness cannot drift. (Rules added to
the copy since: below temperature 1 a margin that counts is taken row by row, in log space; at 1 and
above, so is a margin that a swap of near-tied tokens across a nucleus cut might lower.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest
import torch
import torch.nn.functional as F
from llm_fixtures import TINY, make_tiny_llama
from supernet.node.llm import sampling
from supernet.node.llm.model import Llama, apply_rope, rope_tables
from supernet.node.llm.sampling import SamplingParams, select, selection_margin, selection_margins, uniform
from supernet.node.llm.scoring import ScoreRequest, fingerprint_due, fingerprints_of, prompt_kv, score_packed
from supernet.node.llm.types import ScoreResult
from torch import Tensor

# ---- the implementation before the candidate floors (verbatim but for names) ----


def _old_nuclei(probs: Tensor, top_p: float) -> tuple[Tensor, Tensor]:
    n, vocab = probs.shape
    thr = torch.zeros(n, dtype=probs.dtype)
    cut = torch.zeros(n, dtype=torch.long)
    edge = torch.zeros(n, dtype=torch.bool)
    pending = torch.arange(n)
    width = min(512, vocab)
    while pending.numel():
        sub = probs[pending]
        vals = sub.topk(width, dim=-1).values if width < vocab else sub.sort(dim=-1, descending=True).values
        cum = vals.cumsum(-1)
        reached = cum >= top_p
        done = reached[:, -1] | (width == vocab)
        idx, c, v, hit = pending[done], cum[done], vals[done], reached[done]
        sel = torch.arange(idx.numel())
        at = torch.where(hit.any(-1), hit.int().argmax(-1), width - 1)
        prev = torch.where(at > 0, c[sel, (at - 1).clamp(min=0)], torch.zeros_like(v[:, 0]))
        thr[idx], cut[idx] = v[sel, at], at
        edge[idx] = ((c[sel, at] - top_p).abs() < 1e-12) | ((prev - top_p).abs() < 1e-12)
        pending = pending[~done]
        width = vocab if width * 8 >= vocab else width * 8
    members = probs >= thr[:, None]
    over = torch.nonzero(members.sum(-1) != cut + 1).flatten()
    if over.numel():
        sub, t = probs[over], thr[over, None]
        tied = sub == t
        need = (cut[over] + 1 - (sub > t).sum(-1))[:, None]
        members[over] = (sub > t) | (tied & (tied.cumsum(-1) <= need))
    return probs * members, ~edge


def old_selection_margins(
    logits: Tensor, tokens: Sequence[int], params: SamplingParams, start: int
) -> list[float]:
    n = len(tokens)
    if n > 8:
        return [
            x
            for c in range(0, n, 8)
            for x in old_selection_margins(logits[c : c + 8], tokens[c : c + 8], params, start + c)
        ]
    if n == 0:
        return []
    rows = logits.detach().double().cpu()
    target = torch.tensor(list(tokens), dtype=torch.long)[:, None]
    if params.greedy:
        return (rows.max(dim=-1).values - rows.gather(-1, target)[:, 0]).tolist()
    probs = torch.softmax(rows / params.temperature, dim=-1)
    log_p = sampling._token_log_p(rows / params.temperature, target, probs.gather(-1, target)[:, 0])
    u = torch.tensor([uniform(params.seed, start + i) for i in range(n)], dtype=torch.float64)
    vocab = probs.shape[1]
    nuclei = _old_nuclei(probs, params.top_p) if params.top_p < 1.0 else None
    support = probs if nuclei is None else nuclei[0]
    cdf = support.cumsum(-1)
    t = target[:, 0]
    lo = torch.where(
        t > 0, cdf.gather(-1, (t - 1).clamp(min=0)[:, None])[:, 0], torch.zeros(n, dtype=cdf.dtype)
    )
    out = sampling._interval_margin(
        lo, cdf.gather(-1, target)[:, 0], cdf[:, vocab - 1], u, params.temperature, log_p
    )
    out = torch.where(support.gather(-1, target)[:, 0] == 0, torch.inf, out)
    redo = out > sampling.EXACT_ABOVE
    if nuclei is not None:
        exact = nuclei[1]
        p_token = probs.gather(-1, target)[:, 0]
        rows = torch.nonzero(redo & exact).flatten()
        swaps: list[Tensor] = []  # added since
        top = sampling._top(probs[rows], min(1024, vocab))
        while rows.numel():
            complete = top[0].shape[1] == vocab
            refined, settled = sampling._least_margins(
                top, t[rows], p_token[rows], u[rows], params.top_p, complete, params.temperature, log_p[rows]
            )
            out[rows[settled]] = torch.minimum(out[rows[settled]], refined[settled])
            if params.temperature >= 1.0:  # added since: a swap across a cut might do better
                swap = settled & (out[rows] > 0)
                swap[swap.clone()] = sampling._swaps_in_reach(
                    (top[0][swap], top[1][swap]),
                    t[rows[swap]],
                    u[rows[swap]],
                    out[rows[swap]],
                    params.top_p,
                    params.temperature,
                    complete,
                )
                swaps.append(rows[swap])
            rows = rows[~settled]
            if not rows.numel() or complete:
                break
            width = top[0].shape[1]
            top = sampling._top(probs[rows], vocab if width * 8 >= vocab else width * 8)
        redo = ~exact
        redo[rows] = True
        for swap in swaps:  # added since
            redo[swap] = True
        if params.temperature < 1.0:  # added since: these rows' edges are summed in log space
            redo |= out > sampling.EXACT_ABOVE
    margins = out.tolist()
    for i in torch.nonzero(redo).flatten().tolist():
        margins[i] = selection_margin(logits[i], tokens[i], params, start + i)
    return margins


# ---- the margins ----


def _rows(kind: str, n: int, vocab: int, gen: torch.Generator) -> Tensor:
    logits = torch.randn(n, vocab, generator=gen) * (3.0 if kind != "sharp" else 12.0)
    if kind == "bf16":  # rounded to bfloat16: many exact ties in every row
        logits = logits.to(torch.bfloat16).float()
    elif kind == "integer":  # ties everywhere
        logits = torch.round(logits)
    logits[0, : min(5, vocab)] = logits[0].max() + 1  # exact ties at the top
    if n > 1:
        logits[1] = 0.0  # a flat row
    return logits


PAIRS = [(1.0, 0.95), (0.7, 0.9), (1.5, 0.5), (2.0, 0.999), (0.3, 0.1), (1.0, 1.0)]


def _assert_same_margins(logits: Tensor, pairs: Sequence[tuple[float, float]], seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    n, vocab = logits.shape
    near = logits + torch.randn(n, vocab, generator=gen) * 0.05  # a validator's other rounding
    for temperature, top_p in pairs:
        p = SamplingParams(temperature=temperature, top_p=top_p, seed=seed)
        chosen = select(logits, [p] * n, list(range(30, 30 + n)))
        other = torch.randint(0, vocab, (n,), generator=gen).tolist()
        for toks, rows in ((chosen, logits), (other, logits), (chosen, near)):
            assert selection_margins(rows, toks, p, 30) == old_selection_margins(rows, toks, p, 30)


@pytest.mark.parametrize("kind", ["plain", "bf16", "integer", "sharp"])
@pytest.mark.parametrize("vocab", [7, 60, 3000])
def test_selection_margins_equal_the_top_k_implementation(kind: str, vocab: int) -> None:
    gen = torch.Generator().manual_seed(vocab + len(kind))
    _assert_same_margins(_rows(kind, 13, vocab, gen), PAIRS, vocab)


def test_selection_margins_equal_the_top_k_implementation_on_a_model_vocabulary() -> None:
    gen = torch.Generator().manual_seed(1)
    _assert_same_margins(_rows("bf16", 9, 49152, gen), PAIRS[:2], 1)


def test_selection_margins_equal_the_old_ones_at_the_edges() -> None:
    """Nuclei within rounding of top_p, a top_p so close to 1 that no floor's candidates reach it,
    and every row's margin on a subset of rows (they are computed row by row)."""
    logits = torch.cat((torch.zeros(2048), torch.full((952,), -5.0)))[None].repeat(3, 1)
    logits[1] = torch.randn(3000, generator=torch.Generator().manual_seed(2))
    probs = torch.softmax(logits[0].double(), dim=-1)
    for top_p in (float(probs[:2048].sum()) + 5e-10, float(probs[:2048].sum()), 1 - 1e-15, 0.999999):
        p = SamplingParams(temperature=1.0, top_p=min(top_p, 1.0), seed=7)
        for toks in ([5, 6, 7], [2100, 2999, 0], select(logits, [p] * 3, [9, 10, 11])):
            got = selection_margins(logits, toks, p, 9)
            assert got == old_selection_margins(logits, toks, p, 9)
            assert got[1:] == selection_margins(logits[1:], toks[1:], p, 10)


def test_the_fallback_top_k_path_still_agrees() -> None:
    """With no candidate floor at all (every row takes the top-k path), the margins are the same."""
    gen = torch.Generator().manual_seed(5)
    logits = _rows("bf16", 9, 3000, gen)
    p = SamplingParams(temperature=1.0, top_p=0.9, seed=3)
    toks = select(logits, [p] * 9, list(range(9)))
    original = sampling._candidates
    try:  # no token reaches an infinite floor
        sampling._candidates = lambda probs, floor: original(probs, math.inf)  # type: ignore[assignment]
        got = selection_margins(logits + 0.01, toks, p, 0)
    finally:
        sampling._candidates = original
    assert got == old_selection_margins(logits + 0.01, toks, p, 0)


# ---- the packed scores ----


def _old_result(
    rows: Tensor,
    logits: Tensor,
    lse: Tensor,
    output_ids: Sequence[int],
    params: SamplingParams | None,
    prompt_len: int,
    top_k: int,
) -> ScoreResult:
    target = torch.tensor(list(output_ids))
    claimed = (logits.gather(-1, target[:, None])[:, 0] - lse).tolist()
    top = logits.topk(top_k, dim=-1)
    tops = tuple(
        tuple(zip(ids, vals, strict=True))
        for ids, vals in zip(top.indices.tolist(), (top.values - lse[:, None]).tolist(), strict=True)
    )
    due = [i for i in range(len(output_ids)) if fingerprint_due(i)]
    fps = fingerprints_of(rows[due], due)
    margins = None
    if params is not None:
        margins = tuple(old_selection_margins(logits, output_ids, params, prompt_len))
    return ScoreResult(logprobs=tuple(claimed), top_tokens=tops, fingerprints=tuple(fps), margins=margins)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_packed_scores_equal_the_whole_logits_computation(dtype: torch.dtype) -> None:
    """`score_packed` post-processes a few rows at a time; the scores are those computed over the
    whole ``[rows, V]`` logits at once, for requests of 1 to 40 outputs straddling the blocks."""
    model = make_tiny_llama(4).to(dtype)
    vocab = model.cfg.vocab_size
    gen = torch.Generator().manual_seed(8)
    sampled = SamplingParams(temperature=1.0, top_p=0.9, seed=4)
    requests = [
        ScoreRequest(
            [1, 2, 3, 4, 5, 6, *torch.randint(0, vocab, (k % 5 + 1,), generator=gen).tolist()],
            torch.randint(0, vocab, (n,), generator=gen).tolist(),
            None if k % 3 == 0 else SamplingParams(temperature=0.8 + k / 10, top_p=0.95, seed=k),
        )
        for k, n in enumerate([1, 17, 3, 40, 1, 15, 2])
    ]
    requests.append(ScoreRequest([1, 2, 3, 4, 5, 6, 7], [9], sampled))  # a 1-row block at the end
    prefix = prompt_kv(model, [1, 2, 3, 4, 5, 6])
    packed = score_packed(model, requests, prefix=prefix)
    # the same forward pass, then the old post-processing of the whole logits
    seen: list[Tensor] = []
    plain = model.output.forward

    def keep(x: Tensor) -> Tensor:
        seen.append(x)
        return plain(x)

    model.output.forward = keep  # type: ignore[method-assign]
    try:
        assert score_packed(model, requests, prefix=prefix) == packed
    finally:
        model.output.forward = plain  # type: ignore[method-assign]
    rows = seen[-1]
    logits = model.logits(rows)
    lse = torch.logsumexp(logits, dim=-1)
    at = 0
    for r, got in zip(requests, packed, strict=True):
        n = len(r.output_ids)
        part = slice(at, at + n)
        want = _old_result(rows[part], logits[part], lse[part], r.output_ids, r.params, len(r.prompt_ids), 5)
        assert got == want
        at += n


# ---- the decoder's elementwise work (rope without the rolled copy, in-place products) ----


def _old_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    return (x * cos + x.roll(x.shape[-1] // 2, dims=-1) * sin).to(x.dtype)


def _old_forward(model: Llama, tokens: Tensor) -> Tensor:
    """The decoder as it was: ``weight * normed``, ``silu(gate) * up``, out-of-place residuals."""

    def norm(mod: torch.nn.Module, x: Tensor) -> Tensor:
        return mod.weight * F.rms_norm(x.float(), mod.weight.shape, eps=mod.eps).to(x.dtype)

    t = tokens.shape[1]
    cos, sin = model.rope_cos[None, :t, None], model.rope_sin[None, :t, None]
    x = model.tok_embeddings(tokens)
    for blk in model.blocks:
        att, ffn = blk.attention, blk.feed_forward
        h = norm(blk.attention_norm, x)
        b, hd, nq, nkv = 1, att.head_dim, att.n_heads * att.head_dim, att.n_kv * att.head_dim
        qkv = att.wqkv(h)
        qk = _old_rope(qkv[..., : nq + nkv].view(b, t, att.n_heads + att.n_kv, hd), cos, sin)
        q, k = qk[:, :, : att.n_heads].transpose(1, 2), qk[:, :, att.n_heads :].transpose(1, 2)
        v = qkv[..., nq + nkv :].view(b, t, att.n_kv, hd).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=att.n_kv != att.n_heads)
        x = x + att.wo(y.transpose(1, 2).reshape(b, t, nq))
        gate, up = ffn.w13(norm(blk.ffn_norm, x)).split(ffn.hidden, dim=-1)
        x = x + ffn.w2(F.silu(gate) * up)
    return norm(model.norm, x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_decoder_elementwise_work_is_bit_for_bit_the_old_one(dtype: torch.dtype) -> None:
    """`apply_rope` adds the rotated half without a rolled copy (float32) and the norms, the SwiGLU
    product and the second residual work in place: the same values to the bit, in float32 and
    bfloat16."""
    gen = torch.Generator().manual_seed(11)
    cos, sin = rope_tables(TINY, 64)
    for shape in ((1, 64, 6, TINY.head_dim), (3, 64, 6, TINY.head_dim)):
        x = (torch.randn(shape, generator=gen) * 3).to(dtype)
        pos = torch.randint(0, 64, shape[:2], generator=gen)
        c, s = cos[pos].unsqueeze(2), sin[pos].unsqueeze(2)
        assert torch.equal(apply_rope(x, c, s), _old_rope(x, c, s))
    model = make_tiny_llama(6).to(dtype)
    tokens = torch.randint(0, TINY.vocab_size, (1, 40), generator=gen)
    with torch.inference_mode():
        assert torch.equal(model(tokens), _old_forward(model, tokens))
