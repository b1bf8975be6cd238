"""The validator's model: teacher-forced scoring with the node's own decoder and scoring code.

The validator does not need the continuous-batching engine, only one forward pass per recorded
call (`supernet.node.llm.scoring.score`); it loads the same weights the same way
(`supernet.node.llm.loader.load_model`) so the model id it computes is the one receipts carry.

>>> scorer = ModelScorer.load("smollm2-135m", threads=1)   # doctest: +SKIP
>>> scorer.model_id                                        # doctest: +SKIP
'0x…'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from supernet.node.llm.loader import LoadedModel, load_model
from supernet.node.llm.model import Llama
from supernet.node.llm.sampling import SamplingParams
from supernet.node.llm.scoring import score
from supernet.node.llm.types import ScoreResult


@dataclass
class ModelScorer:
    """A loaded model that re-scores claimed generations (implements `verifier.Scorer`)."""

    model: Llama
    loaded: LoadedModel
    model_id: str
    eos_ids: tuple[int, ...]

    @classmethod
    def load(cls, name_or_path: str, threads: int | None = None, device: str | None = None) -> ModelScorer:
        """Load weights and tokenizer; ``threads`` sets torch's intra-op threads (None: keep)."""
        if threads:
            torch.set_num_threads(threads)
        loaded = load_model(name_or_path, device=device)
        return cls.from_loaded(loaded)

    @classmethod
    def from_loaded(cls, loaded: LoadedModel) -> ModelScorer:
        """Wrap an already loaded model (tests share one load with the node)."""
        return cls(loaded.model, loaded, loaded.model_id, eos_ids_of(loaded))

    def score(
        self, prompt_ids: Sequence[int], output_ids: Sequence[int], params: SamplingParams | None
    ) -> ScoreResult:
        """One teacher-forced pass; margins of the recorded sampling rule when ``params`` is given."""
        return score(self.model, list(prompt_ids), list(output_ids), params)

    def decode(self, ids: Sequence[int]) -> str:
        """Token ids to text (special tokens kept, as the kernel sees them)."""
        tok = self.loaded.tokenizer
        return tok.decode(list(ids)) if tok is not None else ""


def eos_ids_of(loaded: LoadedModel) -> tuple[int, ...]:
    """The model's end-of-sequence tokens (what ``stop_token_ids=None`` means to the engine)."""
    return tuple(int(t) for t in loaded.model.cfg.eos_token_ids)
