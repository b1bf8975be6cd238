"""Adversarial review of the ``int8-weights`` format and the fused kernels that serve it.

Scope: the grid rule (`supernet.node.llm.int8`: ``quantise_rows`` / ``dequantised``), its use in
`supernet.node.llm.model` (``Fp16WeightLinear(int8=True)``, ``Int8RowsEmbedding``,
``Llama.use_fp16_weights(fused, int8)``) and the loader, the C kernels' int8 reads
(``fused.matmul_i8``, the decode step's scale table), the kernels' own worker pool
(``parallel_for``: threads argument, concurrent callers, fork, idle sleep), and the agreement of a
fused int8 node with an fbgemm int8 validator on the real model over a long context.

Found:
  * HIGH, FIXED: the grid is made on torch's *default* device, not on the weight's
    (``quantise_rows`` allocates ``q`` and the scales with no ``device=``): an int8-weights model
    built on CUDA holds CPU weights beside CUDA norms and fails at its first forward. A GPU
    validator judges a CPU node in the node's own format (``ModelScorer.for_compute`` loads the
    sibling on ``self.model.device``), and int8-weights is now every CPU node's default: each such
    receipt becomes ``local_failure`` (unverifiable, never slashed) on every GPU validator.
    Fixed: the rule runs on the CPU and the grid goes to the weight's device.
    `test_attack_the_int8_grid_is_made_on_the_default_device_not_the_weights`,
    `test_attack_an_int8_weights_model_computes_on_cuda` (needs a GPU; skipped here).
  * LOW, FIXED: ``fused.matmul_i8`` passes raw pointers to C after checking only dtypes and the
    scale's length: an ``x`` whose width is not the rows' (read at the wrong stride; narrower reads
    past its end), a float64 ``x``, a strided view of int8 rows, or strided scales all return
    wrong numbers silently (`test_attack_matmul_i8_computes_garbage_from_malformed_tensors`).
    ``fused.matmul`` has the same gaps. Fixed: both refuse any input the kernel would misread.
  * LOW (performance), FIXED: once any caller used more threads than the steady one, the idle
    extra workers are woken by a ``pthread_cond_broadcast`` at EVERY later ``parallel_for``
    (~40-120 voluntary context switches per call instead of ~0-2, 4-8x the CPU per call)
    (`test_attack_workers_left_idle_by_a_wider_caller_are_woken_at_every_later_call`). Fixed: each
    worker sleeps on its own condition variable, and a call signals only the workers it gives a range.
  * LOW, FIXED: ``quantise_rows`` refuses ``inf`` but turns a NaN weight into a NaN row scale
    (and ``q`` from an undefined NaN -> int8 cast) instead of refusing what the grid cannot hold
    (`test_attack_a_nan_weight_gets_a_nan_scale_instead_of_a_refusal`). Fixed: non-finite weights
    are refused.

Checked and holding:
  * every positive float16 value as a row maximum (all 31,7xx of them, with a negative twin, a
    scaled value and a subnormal in the row): ``q * s`` is a float16 value, within ``s / 2`` of
    the weight, ``|q| <= 127``, the 2048-row blocks do not change any row; above 65024 refused.
  * rows of extreme scales (the 2**-21 floor, float16 subnormal grid values, ~1.6e4): the fused
    int8 projection and the validator's fbgemm float16 projection over ``dequantised`` agree with
    the exact float64 product to ~1e-7 relative.
  * the threads argument of the C entry points (0, negative, 2**40, 2**31 + 3, 10,000): correct,
    bit-identical products; the up-to-63 workers it starts sleep afterwards (no idle CPU).
  * an int8 fused decode step on one thread and ``matmul_i8`` with other thread counts on
    another: each bit-identical to its result alone.
  * a fork while another thread is inside the kernels (the call mutex held): the child computes.
  * the real model, fused int8 node against the validator's fbgemm kernels over the grid, a
    224-token prompt + 32 tokens, greedy and sampled in one batch: the tight same-format check
    passes with room (worst |Δlogprob| < bound / 4); a node that runs its prefill with int8
    activations (the cheaper VNNI compute) moves the logprobs far out of the bound (~0.5 seen).
  * not a test: under CPU contention (load ~4 on 2 cores) a parallel call with 2 threads took
    ~1 ms against 63 us single-threaded (the caller spins on descheduled workers); torch's
    OpenMP matmul degraded as badly (2-15 ms), so this is no regression of the pool.
  * not a test: the grid's float64 pass costs ~5-9 s of CPU per load of SmolLM2 here (cProfile:
    ``quantise_rows`` 7.4 of a 13.8 s int8 load), paid by each node start and each validator
    sibling load; node and validator cannot disagree on its inputs (the model id hashes the
    file's tensors before the float16 rounding, and the rule is a pure function of them).
"""

from __future__ import annotations

import dataclasses
import functools
import threading
import time
from pathlib import Path

import pytest
import torch
from llm_fixtures import assert_forked_child_passes, generate_all, make_tiny_llama
from supernet.node.llm import LLMEngine, SamplingParams, fused
from supernet.node.llm.errors import WeightsFormatError
from supernet.node.llm.int8 import Q_MAX, dequantised, quantise_rows
from supernet.node.llm.kvcache import KVPool, PrefillAttention
from supernet.node.llm.model import Fp16WeightLinear
from supernet.node.llm.scoring import ScoreRequest, Tolerance, compare_generation
from torch import Tensor, nn

SMOLLM2 = Path.home() / ".cache" / "supernet" / "models" / "smollm2-135m"
INT8W = "int8-weights"
needs_kernels = pytest.mark.skipif(not fused.available(), reason="no C compiler or no AVX2/FMA/F16C CPU")


def _grid(n: int, k: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """A random float16 matrix ``[n, k]`` and its int8 rows and scales."""
    gen = torch.Generator().manual_seed(seed)
    w = (torch.randn(n, k, generator=gen) * 0.1).half()
    q, s = quantise_rows(w)
    return w, q, s


def _raw_i8(q: Tensor, s: Tensor, x: Tensor, threads: int) -> Tensor:
    """``supernet_matmul_i8`` called directly (any ``threads``, as a C caller could pass)."""
    lib = fused._library()
    assert lib is not None
    x = x.contiguous()
    out = torch.empty(x.shape[0], q.shape[0])
    ptrs = (q.data_ptr(), s.data_ptr(), x.data_ptr(), out.data_ptr())
    lib.supernet_matmul_i8(*ptrs, *out.shape, q.shape[1], threads)
    return out


# -- 1. the grid rule -------------------------------------------------------------------------------


def test_attack_the_int8_grid_is_made_on_the_default_device_not_the_weights() -> None:
    """HIGH. ``quantise_rows`` allocates ``q`` and the scales with ``torch.empty(shape, dtype)``:
    on torch's default device, whatever the weight's. On CUDA (default device CPU) the grid of a
    CUDA weight lands on the CPU, ``Fp16WeightLinear`` keeps that CPU ``weight16`` beside the
    model's CUDA norms, and the first forward fails. Who gains: every cheating int8-weights node
    (the CPU default) checked by a GPU validator: ``ModelScorer.for_compute("int8-weights")`` loads
    on the scorer's CUDA device, the scoring raises, and the receipt is a ``local_failure``
    (unverifiable, never slashed). Shown here without a GPU by making the default device ``meta``
    for a CPU weight (same cause: the outputs follow the default device).
    Fix by design: ``torch.empty(..., device=weight.device)`` for ``q`` and the scales (or make the
    grid on the CPU and move it to ``weight.device``), and a CUDA test of an int8-weights model."""
    w, _, _ = _grid(5, 16, 1)
    previous = torch.get_default_device()
    torch.set_default_device("meta")
    try:
        q, s = quantise_rows(w)
    finally:
        torch.set_default_device(previous)
    assert torch.get_default_device() == previous
    where = f"grid on {q.device}/{s.device}, weights on {w.device}"
    assert (q.device, s.device) == (w.device, w.device), where


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (a GPU validator's sibling)")
def test_attack_an_int8_weights_model_computes_on_cuda() -> None:
    """HIGH (the consequence of the test above, where a GPU exists): the same tiny model in
    int8-weights on CUDA computes the CPU model's logits. Today its weights are on the CPU and the
    forward raises. Fix: as above."""
    tokens = torch.tensor([[5, 9, 2, 7, 1]])
    cpu = make_tiny_llama(4).use_fp16_weights(int8=True)
    want = cpu.logits(cpu(tokens))
    gpu = make_tiny_llama(4).to("cuda").use_fp16_weights(int8=True)
    got = gpu.logits(gpu(tokens.cuda())).cpu()
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_attack_a_nan_weight_gets_a_nan_scale_instead_of_a_refusal() -> None:
    """LOW. The rule promises to refuse "a value the grid cannot hold in float16" and does for
    ``inf`` (the ``> 65504`` check), but a NaN makes ``amax`` NaN, every comparison false, the row
    scale NaN and ``q`` an undefined NaN -> int8 cast (0 on this x86): the rule is no longer
    defined by its text on such a file. A publisher's NaN weight then makes every call NaN, which
    the check never passes (all nodes of that model flagged; float16-weights shares that, so LOW).
    Fix by design: refuse non-finite weights (``torch.isfinite(w).all()`` per block, or a finite
    check of the scales) with `WeightsFormatError`, at load, for every weight format."""
    w = torch.tensor([[0.5, float("nan"), 0.25], [0.5, -0.25, 0.125]], dtype=torch.float16)
    with pytest.raises(WeightsFormatError):
        q, s = quantise_rows(w)
        pytest.fail(f"accepted: scales {s.tolist()}, q {q.tolist()}")
    with pytest.raises(WeightsFormatError):  # inf: refused today (the control)
        quantise_rows(torch.tensor([[1.0, float("inf")]], dtype=torch.float16))


def test_defence_every_float16_magnitude_as_a_row_maximum_lands_on_the_grid() -> None:
    """Exhaustive over the row maximum: every positive finite float16 up to 65024 (= 127 * 512,
    the largest the grid holds), each row with its negation, a scaled value and the smallest
    subnormal. ``q * s`` is a float16 value (exact in ``dequantised``), round to nearest, the
    maximum held, and quantising from another offset (other 2048-row block boundaries) gives the
    same rows. Above 65024 the rule refuses."""
    v = torch.arange(1, 0x7C00, dtype=torch.int32).to(torch.int16).view(torch.float16)
    v = v[v.double() <= 65024]
    assert v.numel() > 31000
    w = torch.stack([v, -v, (v.double() * 0.3712).half(), torch.full_like(v, 2.0**-24)], 1)
    q, s = quantise_rows(w)
    sd = s.double()[:, None]
    exact = q.double() * sd
    assert q.abs().max() <= Q_MAX
    assert torch.equal(dequantised(q, s).double(), exact)
    assert ((exact - w.double()).abs() <= sd / 2).all()
    assert (w.double().abs().amax(1) <= Q_MAX * s.double()).all()
    q2, s2 = quantise_rows(w[777:])
    assert torch.equal(q2, q[777:]) and torch.equal(s2, s[777:])
    for too_big in (65056.0, 65504.0):
        with pytest.raises(WeightsFormatError, match="too large"):
            quantise_rows(torch.tensor([[too_big, 1.0]], dtype=torch.float16))


# -- 2. the kernels' int8 reads -----------------------------------------------------------------------


@needs_kernels
def test_attack_matmul_i8_computes_garbage_from_malformed_tensors() -> None:
    """LOW. ``matmul_i8`` checks dtypes and the scale's length, then hands ``data_ptr()``s and
    ``q8.shape[1]`` to C: an ``x`` of another width is read at the rows' stride (narrower: past its
    end), a float64 ``x`` is read as float32 bits, a strided view of int8 rows or of the scales is
    read as if contiguous. Every case returns a tensor of the right shape and wrong numbers (here
    off by up to ~1e19). Reached only by the node's own modules today (well-formed tensors), but it
    is the boundary where Python hands C raw pointers. Fix by design: require ``q8.dim() == 2``,
    ``q8``, ``scale`` contiguous on the CPU, ``x`` float32 on the CPU with ``x.shape[-1] ==
    q8.shape[1]`` (raise ValueError), and the same in ``fused.matmul``."""
    _, q, s = _grid(64, 48, 2)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(3, 48, generator=gen)
    want = x @ dequantised(q, s).float().T
    strided_rows = torch.cat([torch.zeros_like(q), q], 1)[:, 48:]
    strided_scales = torch.stack([s, s * 4], 1).reshape(-1)[::2]
    assert torch.equal(strided_rows, q) and torch.equal(strided_scales, s)
    cases: dict[str, tuple[Tensor, Tensor, Tensor, Tensor | None]] = {
        "x wider than the rows": (q, s, torch.randn(3, 56, generator=gen), None),
        "float64 x": (q, s, x.double(), want),
        "strided int8 rows": (strided_rows, s, x, want),
        "strided scales": (q, strided_scales, x, want),
    }
    wrong = []
    for name, (q8, scale, xin, right) in cases.items():
        try:
            got = fused.matmul_i8(q8, scale, xin)
        except ValueError:
            continue  # refused: secure
        if right is None or not torch.allclose(got.double(), right.double(), atol=1e-4, rtol=1e-4):
            wrong.append(name)
    assert not wrong, f"matmul_i8 returned wrong products without refusing: {wrong}"


@needs_kernels
def test_defence_extreme_rows_agree_between_the_fused_node_and_the_fbgemm_validator() -> None:
    """Rows at the scale floor (2**-21, the grid values float16 subnormals), small, ordinary and
    ~1.6e4-sized rows: the node's fused int8 projection (``sum q x`` times ``s``) and the
    validator's float16 projection of ``dequantised`` (fbgemm on x86) both stay within ~1e-6 of the
    exact float64 product, relative to ``|x| @ |W|``, for small and large activations."""
    gen = torch.Generator().manual_seed(0)
    n, k = 40, 72
    mags = [3 * 2.0**-24, 2.0**-20, 2.0**-16, 2.0**-14, 1e-3, 0.05, 1.0, 300.0, 16250.0]
    base = torch.randn(n, k, generator=gen)
    w = torch.stack([base[i] / base[i].abs().max() * mags[i % len(mags)] for i in range(n)]).half()
    lin = nn.Linear(k, n, bias=False)
    with torch.no_grad():
        lin.weight.copy_(w.float())
    validator, node = Fp16WeightLinear(lin, int8=True), Fp16WeightLinear(lin, fused=True, int8=True)
    assert node.kernel == "fused" and validator.kernel != "fused"
    grid = dequantised(*quantise_rows(w)).double()
    assert (grid.abs() < 2.0**-14).logical_and(grid != 0).any()  # float16 subnormals on the grid
    for scale in (1e-3, 1.0, 100.0):
        x = torch.randn(5, k, generator=gen) * scale
        exact = x.double() @ grid.T
        size = x.double().abs() @ grid.abs().T + 1e-30
        for layer in (validator, node):
            assert ((layer(x).double() - exact).abs() / size).max() < 1e-6, (layer.kernel, scale)


# -- 3. the worker pool ---------------------------------------------------------------------------------


_POOL_SCRIPT = r"""
import json, os, sys, time, torch
from supernet.node.llm import fused
from supernet.node.llm.int8 import dequantised, quantise_rows
lib = fused._library()
gen = torch.Generator().manual_seed(4)
q, s = quantise_rows((torch.randn(301, 96, generator=gen) * 0.1).half())

def call(x, threads):
    out = torch.empty(x.shape[0], 301)
    ptrs = (q.data_ptr(), s.data_ptr(), x.data_ptr(), out.data_ptr())
    lib.supernet_matmul_i8(*ptrs, x.shape[0], 301, 96, threads)
    return out

def switches():  # voluntary context switches of every thread of this process
    n = 0
    for t in os.listdir("/proc/self/task"):
        try:
            lines = open(f"/proc/self/task/{t}/status").read().splitlines()
            n += sum(int(l.split()[1]) for l in lines if l.startswith("voluntary_ctxt"))
        except OSError:
            pass
    return n

def per_call(x, n=200):
    for _ in range(20):
        call(x, 2)
    before = switches()
    for _ in range(n):
        call(x, 2)
    return (switches() - before) / n

x1 = torch.randn(1, 96, generator=gen)
report = {"herd_before": per_call(x1), "wrong": []}
for rows in (1, 5):
    x = torch.randn(rows, 96, generator=gen)
    alone = call(x, 1)
    assert torch.allclose(alone, x @ dequantised(q, s).float().T, atol=1e-4, rtol=1e-4)
    for threads in (0, -7, 2**40, 2**31 + 3, 10_000, 3):
        if not torch.equal(call(x, threads), alone):
            report["wrong"].append([rows, threads])
report["threads"] = len(os.listdir("/proc/self/task"))
report["herd_after"] = per_call(x1)
time.sleep(0.3)  # the workers' spins (~0.3 ms each) are over
cpu = time.process_time()
time.sleep(0.5)
report["idle_cpu"] = time.process_time() - cpu
print(json.dumps(report))
"""


@functools.cache
def _pool_report() -> dict:  # type: ignore[type-arg]
    """`_POOL_SCRIPT` in a fresh process, run once for both tests: its 63 workers must not stay in
    the test session (they would slow every later fused test, see the herd test)."""
    import json
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _POOL_SCRIPT], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@needs_kernels
def test_defence_any_threads_argument_gives_the_same_products_and_the_workers_then_sleep() -> None:
    """A C caller's ``threads`` of 0, negative, past ``int`` (2**40 casts to 0, 2**31 + 3 to a
    negative) or 10,000 (capped at 64: 63 workers started on this 2-core machine): the products
    are bit-identical to one thread's (each output row is summed by one thread), nothing hangs,
    and every worker sleeps once idle (a fresh process, `_POOL_SCRIPT`)."""
    report = _pool_report()
    assert report["wrong"] == []
    assert report["threads"] >= 64
    assert report["idle_cpu"] < 0.05, "the kernels' workers burn CPU while idle"


@needs_kernels
def test_attack_workers_left_idle_by_a_wider_caller_are_woken_at_every_later_call() -> None:
    """LOW (performance). ``parallel_for`` wakes sleepers with ``pthread_cond_broadcast`` on one
    condvar whenever any worker sleeps: once a caller has used more threads than the steady one
    (another thread's torch count, ``set_num_threads`` lowered, a second engine or ``ascore``'s
    worker thread with another count, one call with a large ``threads``), the extra workers sleep
    for good and EVERY later call wakes all of them, each taking the sleep mutex and going back to
    wait: here ~40-120 voluntary context switches per 2-thread call instead of ~0-2, and 4-8x the
    CPU per call (a decode step is ~200 calls). Fix by design: wake only the workers a call
    assigns (a condvar or futex per slot, or a per-slot "asleep" flag checked after setting
    ``go``), so idle extras are never disturbed. Measured in a fresh process (`_POOL_SCRIPT`)."""
    report = _pool_report()
    assert report["herd_before"] < 8
    assert report["herd_after"] < 8, f"{report['herd_after']:.0f} wake-ups per call with 62 idle workers"


@needs_kernels
def test_defence_an_int8_step_and_a_projection_on_two_threads_each_get_their_own_result() -> None:
    """An engine's fused int8 decode step (torch's thread count) on one thread while another
    caller (a scorer, a second engine) runs ``matmul_i8`` with 5 threads: the call mutex serialises
    them and each result is bit-identical to the one computed alone (rerunning a step writes the
    same keys/values it wrote before)."""
    model = make_tiny_llama(21).use_fp16_weights(fused=True, int8=True)
    decoder = model.fused_decoder
    assert decoder is not None and decoder.int8
    prompts = [[3, 4, 5, 6, 7], [9, 8, 7]]
    pool = KVPool(model.cfg, 2, 64, torch.device("cpu"), torch.float32)
    pool.ensure_capacity(64)
    for slot, prompt in enumerate(prompts):
        model(torch.tensor([prompt]), None, PrefillAttention(pool, slot))
    tokens, positions = [11, 12], [len(p) for p in prompts]
    _, step_alone = decoder.step(pool, tokens, positions)
    _, q, s = _grid(517, 64, 6)
    x = torch.randn(3, 64, generator=torch.Generator().manual_seed(7))
    proj_alone = _raw_i8(q, s, x, 5)
    differ = [0, 0]
    barrier = threading.Barrier(2)

    def steps() -> None:
        barrier.wait()
        for _ in range(40):
            differ[0] += not torch.equal(decoder.step(pool, tokens, positions)[1], step_alone)

    def projections() -> None:
        barrier.wait()
        for _ in range(40):
            differ[1] += not torch.equal(_raw_i8(q, s, x, 5), proj_alone)

    workers = [threading.Thread(target=steps), threading.Thread(target=projections)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in workers), "the kernels deadlocked"
    assert differ == [0, 0]


@needs_kernels
def test_defence_a_fork_while_another_thread_is_inside_the_kernels_leaves_a_working_child() -> None:
    """Another thread runs the kernels in a loop (holding the pool's call mutex much of the time)
    while this one forks: the child's atfork handler resets the mutexes and the worker count, so
    the child's own parallel calls neither wait on the parent's workers nor on the copied lock."""
    _, q, s = _grid(2048, 576, 8)
    x = torch.randn(1, 576, generator=torch.Generator().manual_seed(9))
    want = _raw_i8(q, s, x, 1)
    stop, calls = threading.Event(), [0]

    def busy() -> None:
        while not stop.is_set():
            _raw_i8(q, s, x, 2)
            calls[0] += 1

    runner = threading.Thread(target=busy)
    runner.start()
    try:
        while calls[0] < 3:
            time.sleep(0.005)
        for _ in range(2):  # the child: its parallel products are right
            assert_forked_child_passes(lambda: all(torch.equal(_raw_i8(q, s, x, 2), want) for _ in range(10)))
    finally:
        stop.set()
        runner.join()


# -- 4. the real model ----------------------------------------------------------------------------------


@needs_kernels
@pytest.mark.model
@pytest.mark.skipif(not (SMOLLM2 / "model.safetensors").exists(), reason="SmolLM2 not cached")
def test_defence_a_fused_int8_node_passes_the_int8_validator_over_a_long_context() -> None:
    """T    threads = torch.get_num_threads()
        torch.set_num_threads(1)  # a light CPU footprint (spinning workers on a shared 2-core box cost more)
        try:
            _node_against_validator()
        finally:
            torch.set_num_threads(threads)


    def _node_against_validator() -> None:
    he node's fused int8 engine (the loader's conversion, ``use_fp16_weights(fused=True,
        int8=True)``, from one float32 load), a 224-token prompt and 32 tokens each (256 positions),
        greedy and sampled (T = 0.8) in one batch. The validator: fbgemm float16 projections over the
        grid's weights, which is the int8-weights scorer bit for bit (`tests/unit/test_llm_int8.py`;
        the rule is a pure function, exhaustively checked above), built from the node's rows so that
        the grid is made once (each int8 conversion of the real model costs ~5-12 s of CPU here).
        ``Tolerance.for_pair(int8, int8)``: both calls pass (logprobs, greedy margins, sampled CDF
        distances, fingerprints), the worst |Δlogprob| 4x inside the bound. The cheaper cheat of the
        format, a prefill with int8 activations (per-token absmax, what VNNI dot products need), is
        then out of the bound."""
    import copy

    from supernet.node.llm.loader import load_model
    from supernet.validator.scoring import ModelScorer

    loaded = load_model(SMOLLM2, dtype=torch.float32, device="cpu")
    assert loaded.model.cfg.tie_embeddings  # the head's grid is the table's
    node_model = copy.deepcopy(loaded.model).use_fp16_weights(fused=True, int8=True)
    with torch.no_grad():
        for name, layer in node_model.named_modules():
            if isinstance(layer, Fp16WeightLinear):
                weight = loaded.model.get_submodule(name).weight
                weight.copy_(dequantised(layer.q8, layer.scale).float())
    validator_model = loaded.model.use_fp16_weights()  # fbgemm over the grid, in float16
    scorer = ModelScorer.from_loaded(dataclasses.replace(loaded, model=validator_model))
    engine = LLMEngine(node_model, loaded.tokenizer, loaded.model_id, max_batch=2, max_seq_len=1024)
    assert engine.model.fused_decoder is not None and engine.compute == INT8W
    assert scorer.model.fused_decoder is None
    assert all(m.fbgemm for m in scorer.model.modules() if isinstance(m, Fp16WeightLinear))
    tok = engine.tokenizer
    assert tok is not None
    docs = (Path(__file__).resolve().parents[2] / "docs" / "validator.md").read_text()
    prompt = tok.encode(docs)[:224]
    greedy = SamplingParams(max_new_tokens=32, stop_token_ids=())
    sampled = SamplingParams(max_new_tokens=32, temperature=0.8, seed=3, stop_token_ids=())
    calls = [(prompt, greedy), (prompt, sampled)]

    results = generate_all(engine, calls)
    requests = [ScoreRequest(p, r.output_ids, sp) for (p, sp), r in zip(calls, results, strict=True)]
    rescored = scorer.score_many(requests)
    tol = Tolerance.for_pair(INT8W, INT8W)
    for result, score, (_, params) in zip(results, rescored, calls, strict=True):
        verdict = compare_generation(
            result, score, tol, sampled=not params.greedy, temperature=params.temperature
        )
        assert verdict.ok, verdict.mismatches[:3]
        assert verdict.max_logprob_error < tol.logprob_atol / 4
    ids = prompt + list(results[0].output_ids)

    # the cheat: int8 activations (per token) into every projection of the prompt's rows
    n_prompt = len(prompt)
    layers = [m for m in scorer.model.modules() if isinstance(m, Fp16WeightLinear)]

    def cheap(layer: Fp16WeightLinear):  # type: ignore[no-untyped-def]
        def forward(x: Tensor) -> Tensor:
            x = x.clone()
            head = x[:, :n_prompt]
            step = head.abs().amax(-1, keepdim=True).clamp_min(1e-30) / 127
            x[:, :n_prompt] = torch.round(head / step).clamp(-127, 127) * step
            return Fp16WeightLinear.forward(layer, x)

        return forward

    try:
        for layer in layers:
            layer.forward = cheap(layer)  # type: ignore[method-assign]
        with torch.inference_mode():
            logits = scorer.model.logits(scorer.model(torch.tensor([ids[:-1]])))[0]
    finally:
        for layer in layers:
            del layer.forward
    outputs = torch.tensor(ids[n_prompt:])[:, None]
    lp = torch.log_softmax(logits.float(), -1)[n_prompt - 1 :].gather(1, outputs)
    claimed = dataclasses.replace(results[0], logprobs=tuple(lp[:, 0].tolist()))
    assert not compare_generation(claimed, rescored[0], tol).ok, "int8-activation prefill passed the check"
