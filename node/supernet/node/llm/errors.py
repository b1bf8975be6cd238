"""Errors of the LLM engine, rooted at the one Supernet error tree."""

from __future__ import annotations

from supernet.sdk.errors import SupernetError


class LLMError(SupernetError):
    """Root of every error the LLM engine raises."""


class ModelNotFoundError(LLMError, FileNotFoundError):
    """A model name is not in the catalog and is not a local model directory or file."""


class WeightsFormatError(LLMError, ValueError):
    """A weights file or config cannot be read as a Llama-family model."""


class EngineStoppedError(LLMError, RuntimeError):
    """The engine is not running (never started, stopped, or its loop failed)."""


class SequenceFinishedError(LLMError, RuntimeError):
    """A preempt was requested for a sequence that had already finished; read its result instead."""


class ContextOverflowError(LLMError, ValueError):
    """A prompt (plus resumed output) does not fit the engine's maximum sequence length."""
