"""What the band nuclei cost a validator's sampled-token margins, against the same margins without them.

The band (`supernet.node.llm.sampling._band_margin`) takes every reorder of near-tied tokens at a
nucleus cut; the rows that need it are routed to the per-row search (`_swaps_in_reach`). Measured
in one process, alternating the two rules on the same rows (vocabulary 49,152, 64 positions a
batch):

* honest rows: a node's draws from logits noised as bfloat16 rounding (1e-2) or as same-format
  rounding (1e-5), margins batched as a validator computes them;
* a cheat: tokens off their draw (per-row margins, the rows a cheating node sends).

Without the band means `_band_margin` never finds a nucleus and `_Band.reachable` never routes a
row (the rule before it). Writes docs/benchmarks/band.json and docs/benchmarks/band.md.
Reproduce: ``.venv/bin/python scripts/bench_band.py`` (about a minute on 2 cores).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from supernet.node.llm import sampling
from supernet.node.llm.sampling import SamplingParams, select, selection_margin, selection_margins

OUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks"
VOCAB, ROWS, ROUNDS = 49152, 64, 3


@contextmanager
def without_band() -> Iterator[None]:
    """The rule before the band: no band nucleus is found or routed."""
    margin, reachable = sampling._band_margin, sampling._Band.reachable
    sampling._band_margin = lambda *a, **k: math.inf
    sampling._Band.reachable = lambda self, c, *a, **k: torch.zeros_like(c, dtype=torch.bool)  # type: ignore[method-assign]
    try:
        yield
    finally:
        sampling._band_margin = margin
        sampling._Band.reachable = reachable  # type: ignore[method-assign]


def best_of(fn: Callable[[], object]) -> float:
    """The least of ``ROUNDS`` timings of ``fn`` (the machine's noise only adds)."""
    times = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def honest_case(temperature: float, top_p: float, noise: float) -> Callable[[], list[float]]:
    gen = torch.Generator().manual_seed(int(temperature * 100 + noise * 1e6))
    rows = torch.randn(ROWS, VOCAB, generator=gen) * 3
    node = rows + torch.randn(ROWS, VOCAB, generator=gen) * noise
    params = SamplingParams(temperature=temperature, top_p=top_p, seed=5)
    tokens = select(node, [params] * ROWS, list(range(ROWS)))
    return lambda: selection_margins(rows, tokens, params, 0)


def cheat_case(temperature: float, top_p: float) -> Callable[[], list[float]]:
    gen = torch.Generator().manual_seed(int(temperature * 10))
    row = torch.randn(VOCAB, generator=gen) * 3
    probs = torch.softmax(row.double() / temperature, -1)
    order = probs.argsort(descending=True)
    cut = int((probs[order].cumsum(0) < top_p).sum())
    tokens = [int(order[max(cut - 3, 0)]), int(order[cut + 2]), int(order[min(2 * cut + 5, VOCAB - 1)])]
    params = SamplingParams(temperature=temperature, top_p=top_p, seed=17)
    return lambda: [selection_margin(row, t, params, i) for i, t in enumerate(tokens)]


def main() -> None:
    torch.set_num_threads(2)
    cases = {
        "honest, bf16-like noise, T 1, top_p 0.9": honest_case(1.0, 0.9, 1e-2),
        "honest, bf16-like noise, T 0.7, top_p 0.95": honest_case(0.7, 0.95, 1e-2),
        "honest, bf16-like noise, T 2, top_p 0.95": honest_case(2.0, 0.95, 1e-2),
        "honest, same-format noise, T 1, top_p 0.9": honest_case(1.0, 0.9, 1e-5),
        "cheat (per row), T 1, top_p 0.9": cheat_case(1.0, 0.9),
        "cheat (per row), T 5, top_p 0.9": cheat_case(5.0, 0.9),
        "cheat (per row), T 0.7, top_p 0.9": cheat_case(0.7, 0.9),
    }
    results = []
    for name, run in cases.items():
        run()  # warm
        with without_band():
            before = best_of(run)
        after = best_of(run)
        with without_band():  # again, the other way round: drift weighs on both
            before = min(before, best_of(run))
        results.append(
            {
                "case": name,
                "without_s": round(before, 4),
                "with_s": round(after, 4),
                "ratio": round(after / before, 2),
            }
        )
        print(f"{name}: {before:.3f} s -> {after:.3f} s ({after / before:.2f}x)")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "band.json").write_text(
        json.dumps({"vocab": VOCAB, "rows": ROWS, "cases": results}, indent=2) + "\n"
    )
    lines = [
        "# Band nuclei: what they cost the sampled-token margins",
        "",
        "`.venv/bin/python scripts/bench_band.py`: the same margins with and without the band",
        "(`sampling._band_margin` and its routing), alternating in one process, best of "
        f"{ROUNDS}; vocabulary {VOCAB:,}, {ROWS} positions a batch for the honest rows (batched margins),",
        "three tokens off their draw for the cheat (per-row margins). 2 torch threads.",
        "",
        "| case | without (s) | with (s) | ratio |",
        "|---|---:|---:|---:|",
        *(f"| {r['case']} | {r['without_s']} | {r['with_s']} | {r['ratio']}x |" for r in results),
        "",
        "Margins are a small part of a check (the model's teacher-forced pass dominates,",
        "[verification.md](verification.md)); same-format honest rows (the default node and validator)",
        "are rarely routed at all.",
        "",
    ]
    (OUT / "band.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
