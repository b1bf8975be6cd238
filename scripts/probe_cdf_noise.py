"""How far honest same-format re-scoring moves a sampled token's CDF: the basis of the same-format
`Tolerance.sample_margin` (node/supernet/node/llm/scoring.py).

For 16 chat prompts, 48 greedy tokens each: the node's decode-time logits (batched, through the
engine's ``run_step``) against the validator's teacher-forced re-score (``scoring.score``) in the
same format. Per position, the greatest distance between the two float64 CDFs of
``softmax(logits / T)`` in token-id order (the sampler's order) over the whole row: how far any
token's interval can move, so how far off an honest sampled token can look.

Run: ``.venv/bin/python scripts/probe_cdf_noise.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from supernet.node.llm.loader import load_model

sys.path.insert(0, str(Path(__file__).parent))
import probe_weight_formats as probe  # a sibling script: its decode and score drivers

FORMATS = ("fp32-packed", "fp16-wo")
TEMPERATURES = (1.5, 1.0, 0.7)


def cdf_distances(decoded: torch.Tensor, scored: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per row, the largest |CDF difference| of the two rows' softmax at ``temperature``."""
    a = torch.softmax(decoded.double() / temperature, -1).cumsum(-1)
    b = torch.softmax(scored.double() / temperature, -1).cumsum(-1)
    return (a - b).abs().amax(-1)


def main() -> None:
    torch.set_num_threads(2)
    loaded = load_model(probe.MODEL, device="cpu", dtype=torch.float32, max_positions=probe.MAX_POSITIONS)
    assert loaded.tokenizer is not None
    prompts = probe.chat_prompts(loaded.tokenizer)[:16]
    print("| format | T | positions | max | p99 | median |\n|---|---:|---:|---:|---:|---:|")
    for name in FORMATS:
        model = probe.BUILDERS[name](loaded.model)
        conts, _, _ = probe.decode(model, prompts, 48)
        _, decoded, _ = probe.decode(model, prompts, 48, forced=conts, keep_logits=True)
        assert decoded is not None
        scored = torch.stack(
            [probe.scored_logits(model, p, c)[0] for p, c in zip(prompts, conts, strict=True)]
        )
        vocab = decoded.shape[-1]
        for t in TEMPERATURES:
            d = cdf_distances(decoded.reshape(-1, vocab), scored.reshape(-1, vocab), t)
            print(
                f"| {name} | {t} | {d.numel()} | {d.max().item():.3g} | "
                f"{d.quantile(0.99).item():.3g} | {d.median().item():.3g} |"
            )


if __name__ == "__main__":
    main()
