"""The float16-weights format's C kernels (`supernet.node.llm.fused`): the fused decode step and
the projections compute what the torch path computes (same formulas, another summation order),
refuse what they cannot do without writing anything, and step aside where they do not build.

Real compiler, real kernels: the library is built here as the node builds it."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
import torch
from llm_fixtures import TINY, make_tiny_llama
from supernet.node.llm import LLMEngine, SamplingParams, fused
from supernet.node.llm.kvcache import DecodeAttention, KVPool, PrefillAttention
from supernet.node.llm.model import Fp16WeightLinear, Llama

pytestmark = pytest.mark.skipif(not fused.available(), reason="no C compiler or no AVX2/FMA/F16C CPU here")


def _models(seed: int) -> tuple[Llama, Llama]:
    """The same random tiny model in float16-weights twice: on the torch path and fused."""
    return make_tiny_llama(seed).use_fp16_weights(), make_tiny_llama(seed).use_fp16_weights(fused=True)


def _prefilled(model: Llama, prompts: list[list[int]], capacity: int = 64) -> KVPool:
    pool = KVPool(model.cfg, len(prompts), capacity, torch.device("cpu"), torch.float32)
    pool.ensure_capacity(capacity)
    for slot, prompt in enumerate(prompts):
        model(torch.tensor([prompt]), None, PrefillAttention(pool, slot))
    return pool


def test_a_fused_model_keeps_one_float16_copy_and_a_decoder() -> None:
    plain, fast = _models(1)
    assert plain.fused_decoder is None and fast.fused_decoder is not None
    assert all(b.feed_forward.w13.kernel == "fused" for b in fast.blocks)
    # the tied embedding table is the head's own float16 weight, not a second copy
    head, plain_head = fast.output, plain.output
    assert isinstance(head, Fp16WeightLinear) and isinstance(plain_head, Fp16WeightLinear)
    assert fast.tok_embeddings.weight.data_ptr() == head.weight16.data_ptr()
    assert plain_head.fbgemm and not head.fbgemm


@pytest.mark.parametrize("rows", [1, 3, 6])
def test_the_fused_step_computes_the_torch_step(rows: int) -> None:
    """Rows of different lengths (the masked case of `DecodeAttention`), several steps: hidden
    states, logits and the keys/values written agree to float32 rounding, greedy picks equal."""
    plain, fast = _models(2)
    gen = torch.Generator().manual_seed(5)
    prompts = [torch.randint(1, TINY.vocab_size, (5 + 4 * r,), generator=gen).tolist() for r in range(rows)]
    pools = _prefilled(plain, prompts), _prefilled(fast, prompts)
    tokens, lengths = [p[-1] for p in prompts], [len(p) for p in prompts]
    with torch.inference_mode():
        for _ in range(6):
            pos = torch.tensor(lengths)
            hidden = plain(torch.tensor(tokens)[:, None], pos[:, None], DecodeAttention(pools[0], pos))[:, 0]
            logits = plain.logits(hidden)
            assert fast.fused_decoder is not None
            f_hidden, f_logits = fast.fused_decoder.step(pools[1], tokens, lengths)
            torch.testing.assert_close(f_hidden, hidden, atol=2e-4, rtol=1e-4)
            torch.testing.assert_close(f_logits, logits, atol=2e-4, rtol=1e-4)
            assert f_logits.argmax(-1).tolist() == logits.argmax(-1).tolist()
            tokens, lengths = logits.argmax(-1).tolist(), [n + 1 for n in lengths]
    for theirs, ours in ((pools[0].k, pools[1].k), (pools[0].v, pools[1].v)):
        for slot, n in enumerate(lengths):
            torch.testing.assert_close(ours[:, slot, :, :n], theirs[:, slot, :, :n], atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize(
    ("rows", "n_out", "cols"), [(1, 7, 13), (2, 96, 64), (4, 101, 64), (5, 33, 40), (9, 8, 96)]
)
def test_the_fused_projection_computes_the_widened_weight(rows: int, n_out: int, cols: int) -> None:
    gen = torch.Generator().manual_seed(rows * 1000 + n_out)
    weight = (torch.randn(n_out, cols, generator=gen) * 0.3).to(torch.float16)
    x = torch.randn(2, rows, cols, generator=gen)
    ours = fused.matmul(weight, x)
    assert ours.shape == (2, rows, n_out)
    torch.testing.assert_close(ours, x @ weight.float().T, atol=1e-4, rtol=1e-4)


def test_an_input_the_kernel_cannot_take_is_refused_and_nothing_is_written() -> None:
    _, fast = _models(3)
    pool = _prefilled(fast, [[3, 4, 5]], capacity=8)
    keys, values = pool.k.clone(), pool.v.clone()
    assert fast.fused_decoder is not None
    for tokens, positions in (([1], [8]), ([TINY.vocab_size], [3]), ([-1], [3]), ([1], [-1])):
        with pytest.raises(fused.FusedKernelError, match="refused"):
            fast.fused_decoder.step(pool, tokens, positions)
    assert torch.equal(pool.k, keys) and torch.equal(pool.v, values)


def test_switched_off_or_unbuildable_the_torch_path_serves(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``SUPERNET_FUSED=0``, and a library that does not compile (a real compiler error on a
    broken source): the model is the torch path's, with a warning for the second."""
    try:
        monkeypatch.setenv(fused.ENV_SWITCH, "0")
        fused._library.cache_clear()
        assert not fused.available()
        assert make_tiny_llama(4).use_fp16_weights(fused=True).fused_decoder is None
        monkeypatch.delenv(fused.ENV_SWITCH)
        broken = tmp_path / "decode_step.c"
        broken.write_text("int supernet_decode_step( {\n")
        monkeypatch.setattr(fused, "SOURCE", broken)
        monkeypatch.setenv("SUPERNET_KERNEL_DIR", str(tmp_path / "kernels"))
        fused._library.cache_clear()
        with caplog.at_level(logging.WARNING, logger=fused.__name__):
            assert not fused.available()
        assert "unavailable" in caplog.text and "error" in caplog.text
        model = make_tiny_llama(4).use_fp16_weights(fused=True)
        assert model.fused_decoder is None and isinstance(model.output, Fp16WeightLinear)
        assert model.output.fbgemm
    finally:
        monkeypatch.undo()
        fused._library.cache_clear()
    assert fused.available()


def test_the_library_is_built_once_per_source(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SUPERNET_KERNEL_DIR", str(tmp_path))
    first = fused._build()
    stamp = first.stat().st_mtime_ns
    assert fused._build() == first and first.stat().st_mtime_ns == stamp  # cached, not rebuilt
    # the library and its digest, no temporary left behind
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert kept == sorted([first.name, first.with_suffix(".sha256").name])


@pytest.mark.model
def test_the_engine_generates_the_same_tokens_fused(smollm2_dir: Path) -> None:
    """The node's engine on the real model: greedy generations of one and of three sequences
    together (decode steps fused, prefill steps through the fused projections) are the torch
    engine's tokens, their logprobs equal to float32 rounding."""

    Run = list[tuple[tuple[int, ...], list[float]]]

    async def generate(engine: LLMEngine, prompts: list[list[int]]) -> Run:
        await engine.start()
        try:
            params = SamplingParams(max_new_tokens=24)
            results = await asyncio.gather(*(engine.submit(p, params).result() for p in prompts))
        finally:
            await engine.stop()
        return [(r.output_ids, list(r.logprobs)) for r in results]

    runs = {}
    for on in (False, True):
        engine = LLMEngine.load(smollm2_dir, compute="float16-weights", fused=on, max_batch=4)
        assert (engine.model.fused_decoder is not None) is on
        tok = engine.tokenizer
        assert tok is not None
        texts = ["Name three colours.", "What is 2 + 2?", "Write a haiku about rain."]
        chats = [[{"role": "user", "content": t}] for t in texts]
        prompts = [tok.apply_chat_template(c, add_generation_prompt=True) for c in chats]
        runs[on] = asyncio.run(generate(engine, prompts[:1])) + asyncio.run(generate(engine, prompts))
    for (ids, lps), (f_ids, f_lps) in zip(runs[False], runs[True], strict=True):
        assert f_ids == ids
        assert max(abs(a - b) for a, b in zip(lps, f_lps, strict=True)) < 1e-3
