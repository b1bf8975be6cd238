"""The float16-weights and int8-weights formats' C kernels (`supernet.node.llm.fused`): the fused
decode step and the projections compute what the torch path computes (same formulas, another
summation order), refuse what they cannot do without writing anything, and step aside where they
do not build.

Real compiler, real kernels: the library is built here as the node builds it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from llm_fixtures import TINY, assert_forked_child_passes, generate_all, make_tiny_llama
from supernet.node.llm import LLMEngine, SamplingParams, fused, kernel_build
from supernet.node.llm.int8 import dequantised, quantise_rows
from supernet.node.llm.kvcache import DecodeAttention, KVPool, PrefillAttention
from supernet.node.llm.model import Fp16WeightLinear, Int8RowsEmbedding, Llama

pytestmark = pytest.mark.skipif(not fused.available(), reason="no C compiler or no AVX2/FMA/F16C CPU here")


def _models(seed: int, int8: bool = False) -> tuple[Llama, Llama]:
    """The same random tiny model in float16-weights (or int8-weights) twice: on the torch path
    and fused."""
    plain = make_tiny_llama(seed).use_fp16_weights(int8=int8)
    return plain, make_tiny_llama(seed).use_fp16_weights(fused=True, int8=int8)


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


def test_a_fused_int8_model_keeps_int8_rows_only_and_its_torch_twin_the_same_weights() -> None:
    """int8-weights fused: every matrix is int8 rows and scales (no float16 copy), the tied table
    is the head's rows; on the torch path the same weights are held in float16, exactly."""
    plain, fast = _models(1, int8=True)
    assert fast.compute == plain.compute == "int8-weights" and fast.fused_decoder is not None
    layers = [fast.output] + [m for b in fast.blocks for m in (b.attention.wqkv, b.feed_forward.w2)]
    for layer in layers:
        assert isinstance(layer, Fp16WeightLinear) and layer.q8.dtype == torch.int8
        assert not hasattr(layer, "weight16")
    assert isinstance(fast.tok_embeddings, Int8RowsEmbedding)
    assert isinstance(fast.output, Fp16WeightLinear)
    assert fast.tok_embeddings.q8.data_ptr() == fast.output.q8.data_ptr()
    twin = make_tiny_llama(1).use_fp16_weights(int8=True, fused=False)
    assert isinstance(twin.output, Fp16WeightLinear) and twin.output.kernel in ("fbgemm", "widen")
    grid = dequantised(fast.output.q8, fast.output.scale)
    torch.testing.assert_close(twin.tok_embeddings.weight, grid, atol=0, rtol=0)
    tokens = torch.tensor([[3, 1, 4, 1, 5]])
    torch.testing.assert_close(fast.tok_embeddings(tokens), grid[tokens].float(), atol=0, rtol=0)


@pytest.mark.parametrize("int8", [False, True], ids=["float16", "int8"])
@pytest.mark.parametrize("rows", [1, 3, 6])
def test_the_fused_step_computes_the_torch_step(rows: int, int8: bool) -> None:
    """Rows of different lengths (the masked case of `DecodeAttention`), several steps: hidden
    states, logits and the keys/values written agree to float32 rounding, greedy picks equal."""
    plain, fast = _models(2, int8)
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
    q8, scale = quantise_rows(weight)
    ours8 = fused.matmul_i8(q8, scale, x)
    torch.testing.assert_close(ours8, x @ dequantised(q8, scale).float().T, atol=1e-4, rtol=1e-4)


def test_the_int8_projection_refuses_what_is_not_int8_rows_and_their_scales() -> None:
    q8, scale = quantise_rows(torch.randn(6, 32).to(torch.float16))
    x = torch.randn(2, 32)
    for bad in ((q8.float(), scale), (q8, scale.double()), (q8, scale[:5])):
        with pytest.raises(ValueError, match="int8 rows"):
            fused.matmul_i8(*bad, x)


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
    first = kernel_build.build()
    stamp = first.stat().st_mtime_ns
    assert kernel_build.build() == first and first.stat().st_mtime_ns == stamp  # cached, not rebuilt
    # the library and its digest, no temporary left behind
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert kept == sorted([first.name, first.with_suffix(".sha256").name])


@pytest.mark.model
@pytest.mark.parametrize("compute", ["float16-weights", "int8-weights"])
def test_the_engine_generates_the_same_tokens_fused(smollm2_dir: Path, compute: str) -> None:
    """The node's engine on the real model: greedy generations of one and of three sequences
    together (decode steps fused, prefill steps through the fused projections) are the torch
    engine's tokens, their logprobs equal to float32 rounding."""

    params = SamplingParams(max_new_tokens=24)
    runs = {}
    for on in (False, True):
        engine = LLMEngine.load(smollm2_dir, compute=compute, fused=on, max_batch=4)
        assert (engine.model.fused_decoder is not None) is on
        tok = engine.tokenizer
        assert tok is not None
        texts = ["Name three colours.", "What is 2 + 2?", "Write a haiku about rain."]
        chats = [[{"role": "user", "content": t}] for t in texts]
        prompts = [tok.apply_chat_template(c, add_generation_prompt=True) for c in chats]
        alone, together = (
            generate_all(engine, [(prompts[0], params)]),
            generate_all(engine, [(p, params) for p in prompts]),
        )
        runs[on] = [(r.output_ids, list(r.logprobs)) for r in alone + together]
    for (ids, lps), (f_ids, f_lps) in zip(runs[False], runs[True], strict=True):
        assert f_ids == ids
        assert max(abs(a - b) for a, b in zip(lps, f_lps, strict=True)) < 1e-3


def test_an_untied_int8_model_keeps_its_own_table_on_the_grid() -> None:
    """Without tied embeddings the table is put on the grid by itself (its own rows and scales):
    the fused model's lookups, prefill and decode step equal the torch path's."""
    from dataclasses import replace

    untied = replace(TINY, tie_embeddings=False)
    plain = make_tiny_llama(6, untied).use_fp16_weights(int8=True)
    fast = make_tiny_llama(6, untied).use_fp16_weights(fused=True, int8=True)
    assert isinstance(fast.tok_embeddings, Int8RowsEmbedding) and isinstance(fast.output, Fp16WeightLinear)
    assert fast.tok_embeddings.q8.data_ptr() != fast.output.q8.data_ptr()
    tokens = torch.tensor([[7, 3, 9, 100]])
    torch.testing.assert_close(
        fast.tok_embeddings(tokens), plain.tok_embeddings(tokens).float(), atol=0, rtol=0
    )
    prompt = tokens[0].tolist()
    pools = _prefilled(plain, [prompt]), _prefilled(fast, [prompt])
    pos = torch.tensor([len(prompt)])
    with torch.inference_mode():
        hidden = plain(torch.tensor([[5]]), pos[:, None], DecodeAttention(pools[0], pos))[:, 0]
    assert fast.fused_decoder is not None
    _, f_logits = fast.fused_decoder.step(pools[1], [5], [len(prompt)])
    torch.testing.assert_close(f_logits, plain.logits(hidden), atol=2e-4, rtol=1e-4)


def test_the_kernels_workers_sleep_when_idle() -> None:
    """The kernels' worker threads spin between a step's loops, then sleep: an idle node burns no
    CPU (a spinning worker would take a whole core for as long as the node runs)."""
    import time

    weight = torch.randn(512, 256).to(torch.float16)
    x = torch.randn(1, 256)
    for _ in range(50):
        fused.matmul(weight, x)
    time.sleep(0.1)  # past the spin (~0.3 ms)
    before = time.process_time()
    time.sleep(0.5)
    assert time.process_time() - before < 0.05


def test_callers_on_several_threads_each_get_their_own_products() -> None:
    """The engine steps on a worker thread, a validator's scorer or a second engine on others: the
    kernels' one set of workers serves them in turn, and nobody gets another caller's rows."""
    from concurrent.futures import ThreadPoolExecutor

    gen = torch.Generator().manual_seed(11)
    weight = (torch.randn(300, 96, generator=gen) * 0.2).to(torch.float16)
    q8, scale = quantise_rows(weight)
    inputs = [torch.randn(r % 5 + 1, 96, generator=gen) for r in range(8)]

    def work(i: int) -> bool:
        x = inputs[i]
        want16, want8 = x @ weight.float().T, x @ dequantised(q8, scale).float().T
        return all(
            torch.allclose(fused.matmul(weight, x), want16, atol=1e-4, rtol=1e-4)
            and torch.allclose(fused.matmul_i8(q8, scale, x), want8, atol=1e-4, rtol=1e-4)
            for _ in range(30)
        )

    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(work, range(len(inputs))))


def test_a_forked_child_starts_its_own_workers() -> None:
    """A child forked after the kernels ran has none of the parent's worker threads: it must not
    wait for them (it would hang), it starts its own."""

    weight = torch.randn(64, 32).to(torch.float16)
    x = torch.randn(1, 32)
    want = fused.matmul(weight, x)  # the parent's workers exist now
    assert_forked_child_passes(lambda: torch.allclose(fused.matmul(weight, x), want, atol=1e-5))


def test_an_image_build_step_builds_the_library_the_node_loads(tmp_path: Path) -> None:
    """The Docker builder stage (a compiler, no torch) runs `kernel_build` as a plain script; the
    final image (no compiler) then loads that build: same name, intact digest, no rebuild."""
    import subprocess
    import sys

    script = Path(kernel_build.__file__)
    out = tmp_path / "kernels"
    done = subprocess.run(
        [sys.executable, "-I", "-S", str(script), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )  # -S: no site-packages, so no torch
    assert done.returncode == 0, done.stderr
    built = Path(done.stdout.strip())
    assert built.parent == out and built.name == kernel_build.library_name()
    stamp = built.stat().st_mtime_ns
    assert kernel_build.build(out) == built and built.stat().st_mtime_ns == stamp
