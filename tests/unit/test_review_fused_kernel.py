"""Adversarial review of the float16-weights C kernels (`supernet.node.llm.fused`,
``node/supernet/node/llm/csrc/decode_step.c``): the node's engine decodes with them by default,
validators re-score with the torch/fbgemm path.

Scope: (1) framing an honest fused node through numerics (long contexts, batches, sampled calls,
fingerprints) against the validator's exact-pair tolerance; (2) memory safety of what reaches the C
code (positions at the cache's and the rope table's end, full slots, one-token prompts, pool growth
between steps, preempted/resumed sequences, prefix-cache loads, model configs); (3) threads;
(4) the build cache (``~/.cache/supernet/kernels``, ``SUPERNET_KERNEL_DIR``).

Found:

* MEDIUM, FIXED: a model whose ``intermediate_size`` is below half its ``hidden_size`` made every
  fused decode step write past its scratch buffer (heap overflow: the attention output
  ``[rows, n_heads * head_dim]`` went into the ``act`` area sized ``rows * 2 * hidden``), and the
  logits came out wrong by ~2 (``test_defence_a_narrow_feed_forward_config_overflows_the_scratch``).
  Now the attention output has its own area of the scratch, and an architecture the kernel does
  not cover (odd or > 256-wide heads) is served by the torch path (`FusedDecoder.supports`).
* MEDIUM, FIXED: a truncated cached library killed the node with SIGBUS inside ``dlopen`` at every
  start (``test_defence_a_truncated_cached_library_crashes_the_node_at_load``). Now a build is
  fsynced before it is renamed into place, a sha256 sidecar is written with it, and a cached file
  whose digest does not match is built again.
* LOW, FIXED: the cache directory was trusted as it was: a library planted in a directory others
  can write ran as the node (``test_defence_a_library_planted_in_a_world_writable_kernel_dir_is_loaded``).
  Now the cache is used only when the directory and file are the node user's and writable by
  nobody else (else the build goes to a private temporary directory).
* LOW, FIXED: `FusedDecoder` kept one scratch buffer per model: two engines on one model decoded
  into the same buffer (``test_defence_two_engines_on_one_fused_model_corrupt_each_other``). Now
  the scratch is per calling thread.

Checked and holding:

* Numerics: over 8 rows x 147 fused decode steps on the real model (docs text and a repetitive
  text, positions up to 2047, i.e. the rope table's and the cache's last slot), the largest
  |Δlogprob| of ANY vocabulary token against the validator's fbgemm pass was 1.3e-4 and the largest
  relative fingerprint deviation 1.4e-5 (measured once; the test below samples it down): 15x inside
  ``logprob_atol`` 2e-3, 18x inside ``hidden_rtol``, and 2 x 1.3e-4 < the greedy bound 1e-3, so no
  near-tie can be flipped far enough to be flagged, and a sampled call's margin (log-odds below
  T = 1, CDF mass above) moves by at most ~d/2 < 2e-4.
* The kernel bounds every index a caller passes (position < capacity and < rope rows, token <
  vocabulary, slot < slots, rows >= 1) and writes only the (layer, slot, head, position) cells of
  its rows, at the cache's last position and the rope table's last row too.
* The engine re-reads the pool's pointer and capacity at every call (growth between steps,
  preempt/resume, prefix-cache loads): its recorded values pass the validator's exact check.
* A corrupt (not truncated) cached library is built again (it was a known limit: the node stayed
  on the torch path until the file was deleted; ``test_defence_a_corrupt_cached_library_is_built_again``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from llm_fixtures import TINY, generate_all, make_tiny_llama
from supernet.node.llm import LLMEngine, SamplingParams, fused, kernel_build, scoring
from supernet.node.llm.kvcache import DecodeAttention, KVPool, PrefillAttention
from supernet.node.llm.model import Llama
from supernet.node.llm.scoring import ScoreRequest, Tolerance, compare_generation

pytestmark = pytest.mark.skipif(not fused.available(), reason="no C compiler or no AVX2/FMA/F16C CPU here")

SMOLLM2 = Path.home() / ".cache" / "supernet" / "models" / "smollm2-135m"
FP16W = "float16-weights"
WEIGHTS_ID = "ab" * 32


def _pair(seed: int, cfg: object = TINY) -> tuple[Llama, Llama]:
    """The same random model in float16-weights on the torch path and fused."""
    plain = make_tiny_llama(seed, cfg).use_fp16_weights()  # type: ignore[arg-type]
    fast = make_tiny_llama(seed, cfg).use_fp16_weights(fused=True)  # type: ignore[arg-type]
    return plain, fast


def _filled_pool(cfg: object, slots: int, capacity: int, seed: int) -> KVPool:
    pool = KVPool(cfg, slots, capacity, torch.device("cpu"), torch.float32)  # type: ignore[arg-type]
    pool.ensure_capacity(capacity)
    gen = torch.Generator().manual_seed(seed)
    pool.k.copy_(torch.randn(pool.k.shape, generator=gen))
    pool.v.copy_(torch.randn(pool.v.shape, generator=gen))
    return pool


# -- 2. memory safety ---------------------------------------------------------------------------------


def test_defence_the_step_writes_only_its_cells_at_the_cache_and_rope_end() -> None:
    """All slots full, one row at position cap - 1 (= the rope table's last row), one at 0, the
    vocabulary's last and first token: the pool changes exactly at each row's (layer, slot, head,
    position) cells, the numbers are the torch step's; past the rope table, past the slots, past
    the cache: refused with nothing written."""
    cap = 32
    cfg = dataclasses.replace(TINY, max_position=cap)
    plain, fast = _pair(11, cfg)
    assert fast.fused_decoder is not None and fast.rope_cos.shape[0] == cap
    ours, theirs = _filled_pool(cfg, 4, cap, 1), _filled_pool(cfg, 4, cap, 1)
    before = ours.k.clone(), ours.v.clone()
    tokens, positions = [cfg.vocab_size - 1, 0, 5, 50], [cap - 1, 0, cap - 2, 17]
    hidden, logits = fast.fused_decoder.step(ours, tokens, positions)
    with torch.inference_mode():
        pos = torch.tensor(positions)
        ref = plain(torch.tensor(tokens)[:, None], pos[:, None], DecodeAttention(theirs, pos))[:, 0]
        torch.testing.assert_close(hidden, ref, atol=2e-4, rtol=1e-4)
        torch.testing.assert_close(logits, plain.logits(ref), atol=2e-4, rtol=1e-4)
    for now, was, other in ((ours.k, before[0], theirs.k), (ours.v, before[1], theirs.v)):
        expected = torch.zeros_like(now, dtype=torch.bool)
        for slot, p in enumerate(positions):
            expected[:, slot, :, p] = True
        changed = now != was
        assert torch.equal(changed | expected, expected)  # nothing outside the rows' cells
        torch.testing.assert_close(now, other, atol=2e-4, rtol=1e-4)  # the cells: the torch step's
    # a pool longer than the rope table, a batch wider than the slots: refused, nothing written
    wide = _filled_pool(cfg, 4, 2 * cap, 2)
    snapshot = wide.k.clone(), wide.v.clone()
    for toks, where in (([1], [cap]), ([1] * 5, [3] * 5), ([1], [2 * cap])):
        with pytest.raises(fused.FusedKernelError, match="refused"):
            fast.fused_decoder.step(wide, toks, where)
    assert torch.equal(wide.k, snapshot[0]) and torch.equal(wide.v, snapshot[1])


async def test_defence_a_fused_engine_at_the_context_end_passes_the_exact_check() -> None:
    """The fused engine with every slot taken: a one-token prompt and prompts that run to
    ``max_seq_len`` (the pool grows 256 -> 300 while rows decode; the last decode feeds position
    298 of a 300-row rope table), one preempted mid-way and resumed, two prompts sharing a
    200-token prefix in one batch (prefilled once, copied), then a third loading it from the
    prefix cache. Every result passes the validator's exact-pair check against the torch path's
    teacher-forced re-score (tokens, logprobs, greedy margins, fingerprints)."""
    cfg = dataclasses.replace(TINY, max_position=300)
    plain, fast = _pair(12, cfg)
    engine = LLMEngine(fast, None, WEIGHTS_ID, max_batch=4, max_seq_len=300)
    assert engine.model.fused_decoder is not None
    gen = torch.Generator().manual_seed(3)

    def rand(n: int) -> list[int]:
        return torch.randint(1, cfg.vocab_size, (n,), generator=gen).tolist()

    shared = rand(200)
    greedy = SamplingParams(max_new_tokens=400, stop_token_ids=())
    sampled = SamplingParams(max_new_tokens=400, temperature=0.8, seed=5, stop_token_ids=())
    first = [([7], greedy), (rand(250), sampled), (rand(296), greedy), (shared + rand(30), greedy)]
    second = [(shared + rand(40), greedy), (shared + rand(60), sampled)]  # shared in one batch
    third = (shared + rand(20), greedy)
    results = []
    await engine.start()
    try:
        handles = [engine.submit(p, s) for p, s in first]
        cut = handles[3]
        async for _ in cut:
            break
        snap = await cut.preempt()
        assert 0 < len(snap.output_ids) < 70
        results += [await h.result() for h in handles[:3]]
        results.append(await engine.submit(first[3][0], greedy, resume=snap).result())
        results += await asyncio.gather(*(engine.submit(p, s).result() for p, s in second))
        results.append(await engine.submit(*third).result())  # the shared prefix from the cache
    finally:
        await engine.stop()
    assert engine.prefixes is not None and engine.prefixes.hits >= 1  # the third call: a cache hit
    assert engine.pool.capacity == 300  # grown from 256 while the rows ran
    for result, (prompt, params) in zip(results, [*first, *second, third], strict=True):
        assert len(prompt) + len(result.output_ids) == 300, result.finish_reason  # ran to the end
        rescored = scoring.score(plain, prompt, result.output_ids, params)
        verdict = compare_generation(
            result, rescored, Tolerance(), sampled=not params.greedy, temperature=params.temperature
        )
        assert verdict.ok, verdict.mismatches[:3]
        assert verdict.max_logprob_error < 5e-4


def test_defence_a_narrow_feed_forward_config_overflows_the_scratch() -> None:
    """MEDIUM. A model file whose ``intermediate_size`` is below half its ``hidden_size`` (here 64
    and 8): the fused step writes the attention output (``rows * n_heads * head_dim`` floats) into
    the scratch's ``act`` area, sized ``rows * 2 * hidden``, and on past the end of the buffer that
    ``supernet_decode_scratch`` asked for: a heap overflow in the node at every decode step, and
    logits ~2 off the torch path's (an honest node flagged on a model it was told it serves).
    Who gains: whoever gets an operator to load such a model (a GGUF from the internet).
    Fix by design: give the attention output its own area in the scratch (``rows * nh * hd``), or
    have `FusedDecoder` refuse (torch path) any config the C code's layout does not cover, checked
    once in C beside the other refusals. Here the scratch is pre-sized with a sentinel tail so the
    overflow lands in the test's own memory."""
    cfg = dataclasses.replace(TINY, hidden_dim=8)
    plain, fast = _pair(13, cfg)
    decoder = fast.fused_decoder
    if decoder is None:  # refused at load: the torch path serves, the secure outcome
        return
    need = decoder._lib.supernet_decode_scratch(decoder._cfg, 1, 1)
    sentinel = 12345.0
    decoder._scratch = torch.full((need + 256,), sentinel)
    ours, theirs = _filled_pool(cfg, 1, 16, 4), _filled_pool(cfg, 1, 16, 4)
    try:
        _, logits = decoder.step(ours, [5], [0])
    except fused.FusedKernelError:
        return  # refused per step: secure too
    written_past = int((decoder._scratch[need:] != sentinel).sum())
    with torch.inference_mode():
        pos = torch.tensor([0])
        ref = plain.logits(plain(torch.tensor([[5]]), pos[:, None], DecodeAttention(theirs, pos))[:, 0])
    assert written_past == 0, f"{written_past} floats written past the scratch the kernel asked for"
    torch.testing.assert_close(logits, ref, atol=2e-4, rtol=1e-4)


# -- 3. threads -----------------------------------------------------------------------------------------


def test_defence_two_engines_on_one_fused_model_corrupt_each_other() -> None:
    """LOW. Two `LLMEngine`s built on one fused model (each steps in its own worker thread) share
    the model's `FusedDecoder` and so its one scratch buffer: both write their activations into it
    at once, and every sequence records wrong tokens and logprobs (8 of 8 in every run here). A
    growth of the buffer while the other thread is inside the kernel would free memory it writes
    (pre-grown here, so the test shows the wrong numbers without risking the process). The torch
    path keeps no such state, so one model serving two engines (or any two callers) was safe.
    Not reachable in the node today (one model per engine). Fix by design: the scratch per call
    (``torch.empty(need)``, negligible beside a step) or per thread, or a lock in ``step``."""
    cfg = dataclasses.replace(TINY, dim=256, n_layers=4, hidden_dim=512, vocab_size=2000, max_position=64)
    model = make_tiny_llama(3, cfg).use_fp16_weights(fused=True)
    assert model.fused_decoder is not None
    model.fused_decoder.step(_filled_pool(cfg, 4, 64, 0), [0] * 4, [63] * 4)  # the scratch at its largest
    prompts = [[1 + i, 7, 9, 11 * i + 3] for i in range(4)]
    params = SamplingParams(max_new_tokens=40, stop_token_ids=())

    async def run(n_engines: int) -> list[tuple[tuple[int, ...], tuple[float, ...]]]:
        engines = [LLMEngine(model, None, WEIGHTS_ID, max_batch=4, max_seq_len=64) for _ in range(n_engines)]
        for e in engines:
            await e.start()
        try:
            res = await asyncio.gather(*(e.submit(p, params).result() for e in engines for p in prompts))
        finally:
            for e in engines:
                await e.stop()
        return [(r.output_ids, r.logprobs) for r in res]

    alone = asyncio.run(run(1))
    together = asyncio.run(run(2))
    wrong = sum(a != b for a, b in zip(alone * 2, together, strict=True))
    assert wrong == 0, f"{wrong} of {len(together)} sequences differ from the same engine run alone"


def test_defence_the_projection_is_safe_from_two_threads() -> None:
    """`fused.matmul` (the prefill and scoring projections, e.g. ``engine.score`` in a thread while
    a step runs) keeps no state: two threads at once get what each gets alone."""
    gen = torch.Generator().manual_seed(9)
    weight = (torch.randn(512, 256, generator=gen) * 0.1).to(torch.float16)
    xs = [torch.randn(7, 256, generator=gen) for _ in range(2)]
    refs = [fused.matmul(weight, x) for x in xs]
    outs: list[list[torch.Tensor]] = [[], []]
    barrier = threading.Barrier(2)

    def work(i: int) -> None:
        barrier.wait()
        outs[i] += [fused.matmul(weight, xs[i]) for _ in range(200)]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(torch.equal(o, refs[i]) for i in range(2) for o in outs[i])


# -- 4. the build cache -------------------------------------------------------------------------------


def _cached_name(monkeypatch: pytest.MonkeyPatch) -> str:
    """The file name the node loads (source, flags and compiler hash): the default cache's build."""
    monkeypatch.delenv("SUPERNET_KERNEL_DIR", raising=False)
    return kernel_build.build().name


def test_defence_a_truncated_cached_library_crashes_the_node_at_load(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """MEDIUM (availability). A cached ``decode_step-<key>.so`` cut short (the build is renamed into
    place without an fsync of its data, so a crash or power loss after the rename can leave one;
    a partial copy or restore of ~/.cache): ``fused.available()`` dlopens it and the process dies
    of SIGBUS, at every start, before any log line; the node never gets to the torch path.
    Fix by design: fsync the built file before ``os.replace`` (and the directory after), and check
    a cached library before loading it (its size and sha256 against a sidecar written with it);
    on a mismatch rebuild, on a second failure serve the torch path."""
    monkeypatch.delenv("SUPERNET_KERNEL_DIR", raising=False)
    data = kernel_build.build().read_bytes()  # the node's own build, from the default cache
    name = kernel_build.build().name
    (tmp_path / name).write_bytes(data[: len(data) // 2])
    env = {**os.environ, "SUPERNET_KERNEL_DIR": str(tmp_path)}
    code = "from supernet.node.llm import fused; print(fused.available())"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"the node died loading a truncated cached kernel (exit {done.returncode})"


def test_defence_a_library_planted_in_a_world_writable_kernel_dir_is_loaded(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """LOW. ``SUPERNET_KERNEL_DIR`` on a directory others can write (mode 0777, e.g. a path under
    /tmp shared by a host's users): a library planted there under the name the node computes (its
    source, flags and ``cc --version`` are public) is dlopened as is, its constructor running as
    the node. ``mkdir(exist_ok=True)`` accepts an existing directory of any owner and mode.
    Fix by design: use the cache only when the directory and the file are owned by the node's
    user and not writable by group or others (as ssh's StrictModes), else build into a private
    temporary directory."""
    name = _cached_name(monkeypatch)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    marker = tmp_path / "planted-code-ran"
    src = tmp_path / "plant.c"
    src.write_text(
        "#include <stdio.h>\n#include <stdint.h>\n"
        f'__attribute__((constructor)) static void run(void) {{ FILE *f = fopen("{marker}", "w");'
        ' if (f) { fputs("ran", f); fclose(f); } }\n'
        "int supernet_decode_step(void) { return -1; }\n"
        "int64_t supernet_decode_scratch(void) { return 0; }\nvoid supernet_matmul_f16(void) {}\n"
    )
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(shared / name), str(src)], check=True)
    assert stat.S_IMODE(shared.stat().st_mode) & stat.S_IWOTH
    monkeypatch.setenv("SUPERNET_KERNEL_DIR", str(shared))
    fused._library.cache_clear()
    try:
        fused.available()
    finally:
        fused._library.cache_clear()
        monkeypatch.undo()
    assert fused.available()  # the real library again for the tests after this one
    assert not marker.exists(), "the node ran a library planted in a world-writable kernel directory"


def test_defence_a_corrupt_cached_library_is_built_again(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A cached library that is not an ELF file (garbage of the right name, with or without a
    sidecar): its sha256 does not match what was built, so the node builds it again (a warning)
    and serves fused. It was the known limit here: the garbage stayed and every start served on
    the slower torch path."""
    name = _cached_name(monkeypatch)
    (tmp_path / name).write_bytes(b"\x7fELF not really" * 100)
    monkeypatch.setenv("SUPERNET_KERNEL_DIR", str(tmp_path))
    fused._library.cache_clear()
    try:
        with caplog.at_level("WARNING", logger=fused.__name__):
            assert fused.available()
        model = make_tiny_llama(4).use_fp16_weights(fused=True)
        assert model.fused_decoder is not None and "damaged" not in caplog.text  # no sidecar: rebuilt
        # now beside a real sidecar; a new file renamed over it (the loaded library's own pages,
        # mapped in this process, must not be written: that is a SIGBUS here, not in the node)
        (tmp_path / "garbage").write_bytes(b"\x7fELF not really" * 100)
        os.replace(tmp_path / "garbage", tmp_path / name)
        fused._library.cache_clear()
        with caplog.at_level("WARNING", logger=fused.__name__):
            assert fused.available()
        assert "damaged" in caplog.text
    finally:
        fused._library.cache_clear()
        monkeypatch.undo()
    assert not (tmp_path / name).read_bytes().startswith(b"\x7fELF not really")  # replaced
    assert fused.available()


# -- 1. numerics against the validator -----------------------------------------------------------------


@pytest.mark.model
@pytest.mark.skipif(not (SMOLLM2 / "model.safetensors").exists(), reason="SmolLM2 not cached")
def test_defence_a_fused_node_passes_the_validators_exact_check_on_the_real_model() -> None:
    """The real model: the node's fused engine (default) with four rows in one batch (a 200-token
    docs prompt, a one-token prompt, a chat prompt, a sampled call at T = 0.7), 34 tokens each so a
    fused decode step records the fingerprint at index 32; the validator's own float16-weights
    scorer (fbgemm) re-scores them, judged by ``Tolerance.for_pair(fp16w, fp16w)``: all pass, the
    worst |Δlogprob| at least 5x inside the bound. Then, at the decode step of the long row, the
    logprob of EVERY vocabulary token (not only the chosen one) is within half the greedy bound of
    the validator's: no near-tie anywhere can be flipped far enough to be flagged."""
    from supernet.validator.scoring import ModelScorer

    engine = LLMEngine.load(SMOLLM2, compute=FP16W, max_batch=4, max_seq_len=2048)
    assert engine.model.fused_decoder is not None
    scorer = ModelScorer.load(str(SMOLLM2), dtype=FP16W, device="cpu")
    assert scorer.model.fused_decoder is None
    tok = engine.tokenizer
    assert tok is not None
    docs = (Path(__file__).resolve().parents[2] / "docs" / "validator.md").read_text()
    long_prompt = tok.encode(docs)[:200]
    chat = tok.apply_chat_template(
        [{"role": "user", "content": "Name three colours."}], add_generation_prompt=True
    )
    greedy = SamplingParams(max_new_tokens=34, stop_token_ids=())
    sampled = SamplingParams(max_new_tokens=34, temperature=0.7, seed=7, stop_token_ids=())
    calls = [(long_prompt, greedy), ([long_prompt[0]], greedy), (chat, greedy), (chat, sampled)]

    results = generate_all(engine, calls)
    requests = [ScoreRequest(p, r.output_ids, s) for (p, s), r in zip(calls, results, strict=True)]
    rescored = scorer.score_many(requests)
    tol = Tolerance.for_pair(FP16W, FP16W)
    for result, score, (_, params) in zip(results, rescored, calls, strict=True):
        assert any(f.index == 32 for f in result.fingerprints)
        verdict = compare_generation(
            result, score, tol, sampled=not params.greedy, temperature=params.temperature
        )
        assert verdict.ok, verdict.mismatches[:3]
        assert verdict.max_logprob_error < tol.logprob_atol / 5
    # every token's logprob at the long row's last fused step, against the validator's model
    ids = long_prompt + list(results[0].output_ids)
    with torch.inference_mode():
        val = torch.log_softmax(scorer.model.logits(scorer.model(torch.tensor([ids[:-1]]))[0, -1]), -1)
        pool = KVPool(engine.model.cfg, 1, 1024, torch.device("cpu"), torch.float32)
        pool.ensure_capacity(len(ids))
        engine.model(torch.tensor([ids[:-2]]), None, PrefillAttention(pool, 0))
        _, node_logits = engine.model.fused_decoder.step(pool, [ids[-2]], [len(ids) - 2])
    worst = (torch.log_softmax(node_logits[0], -1) - val).abs().max().item()
    assert worst < tol.selection_margin / 2, worst
