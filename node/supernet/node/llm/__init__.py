"""The LLM engine: a Llama-family decoder with continuous batching, reproducible sampling and scoring.

Names are imported lazily (PEP 562) so that light users such as ``supernet model list`` do not
pay for importing torch.

>>> from supernet.node.llm import LLMEngine, SamplingParams  # doctest: +SKIP
>>> engine = LLMEngine.load("smollm2-135m")  # doctest: +SKIP
>>> await engine.start()  # doctest: +SKIP
>>> handle = engine.submit(engine.tokenizer.encode("Hi"), SamplingParams(max_new_tokens=8))  # doctest: +SKIP
>>> (await handle.result()).output_ids  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from supernet.node.llm.engine import LLMEngine
    from supernet.node.llm.errors import (
        ContextOverflowError,
        EngineStoppedError,
        LLMError,
        ModelNotFoundError,
        SequenceFinishedError,
        WeightsFormatError,
    )
    from supernet.node.llm.handle import GenerationHandle
    from supernet.node.llm.sampling import SamplingParams
    from supernet.node.llm.types import (
        Fingerprint,
        GenerationResult,
        ScoreResult,
        SequenceSnapshot,
        TokenEvent,
    )

_EXPORTS = {
    "LLMEngine": "engine",
    "GenerationHandle": "handle",
    "SamplingParams": "sampling",
    "ContextOverflowError": "errors",
    "EngineStoppedError": "errors",
    "LLMError": "errors",
    "ModelNotFoundError": "errors",
    "SequenceFinishedError": "errors",
    "WeightsFormatError": "errors",
    "Fingerprint": "types",
    "GenerationResult": "types",
    "ScoreResult": "types",
    "SequenceSnapshot": "types",
    "TokenEvent": "types",
}
__all__ = [
    "ContextOverflowError",
    "EngineStoppedError",
    "Fingerprint",
    "GenerationHandle",
    "GenerationResult",
    "LLMEngine",
    "LLMError",
    "ModelNotFoundError",
    "SamplingParams",
    "ScoreResult",
    "SequenceFinishedError",
    "SequenceSnapshot",
    "TokenEvent",
    "WeightsFormatError",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"supernet.node.llm.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'supernet.node.llm' has no attribute {name!r}")
