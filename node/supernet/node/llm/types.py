"""Messages of the engine: frozen dataclasses shared by the engine, the kernel and the validator."""

from __future__ import annotations

from collections.abc import Container, Sequence
from dataclasses import dataclass, field
from typing import Literal

from supernet.node.llm.sampling import SamplingParams
from torch import Tensor

FinishReason = Literal["stop", "length", "preempted", "cancelled"]
OutputFinish = Literal["stop", "length"]
"""The finish reasons an output decides (`finish_reason_of`), the only ones a trace records:
``preempted`` and ``cancelled`` come from the engine's control (the kernel resumes a preempted
call and fails a cancelled one), never from the tokens."""


def finish_reason_of(
    output_ids: Sequence[int], budget: int, stop_ids: Container[int], stop_string: bool = False
) -> OutputFinish | None:
    """Whether a generation ends after the last of ``output_ids``, and why: the one rule of the
    engine (`LLMEngine._finish_if_done`, after every token) and of the validator
    (`supernet.validator.llm_check.check_shape`, on a recorded call).

    ``"stop"`` when the last token is a stop token (a constrained call's grammar, once complete,
    allows only the stop tokens, so its end is one too) or ``stop_string``: a stop string appears
    in the text decoded so far (the kernel's watcher ends the call at that token, `Scheduler`
    ``"stopped"``, recorded ``"stop"``, whatever the engine decided for it); else ``"length"`` once
    ``budget`` tokens are out. So a stop on the last budgeted token is ``"stop"``. ``None``: the
    generation goes on (no token yet, or none of these).
    """
    if not output_ids:
        return None
    if stop_string or output_ids[-1] in stop_ids:
        return "stop"
    if len(output_ids) >= budget:
        return "length"
    return None


FINGERPRINT_INTERVAL = 32
"""A fingerprint is taken for output tokens 0, 32, 64, ..."""
FINGERPRINT_TOP_K = 8
"""Hidden-state components per fingerprint."""


@dataclass(frozen=True)
class TokenEvent:
    """One generated token, as it comes.

    Attributes:
        token_id: The token.
        position: Its absolute position in prompt + output.
        logprob: Its log-probability under the model (temperature 1, no top-p).
        prefilled: Prompt tokens the engine computed for this sequence since its last event (its
            prefill, less what came from the prefix cache or another row: on the first token of a
            fresh prompt, else 0); what the kernel's fair share charges for prompts.
    """

    token_id: int
    position: int
    logprob: float
    prefilled: int = 0


@dataclass(frozen=True)
class Fingerprint:
    """Top-k (by magnitude) components of the final hidden state that predicted one output token.

    In the spirit of TOPLOC: cheap to store, and a validator's teacher-forced pass reproduces it
    within floating-point tolerance only when it runs the same model on the same tokens.

    Attributes:
        index: Output-token index it predicted (0, 32, 64, ...).
        indices: Hidden-state dimensions, by decreasing magnitude.
        values: The hidden state's values there.
    """

    index: int
    indices: tuple[int, ...]
    values: tuple[float, ...]


@dataclass(frozen=True)
class GenerationResult:
    """A finished (or preempted) generation.

    Attributes:
        prompt_ids: The prompt.
        output_ids: Every output token (stop token included), before and after any preemption.
        finish_reason: ``stop``, ``length``, ``preempted`` or ``cancelled``.
        logprobs: Log-probability of each output token.
        fingerprints: Activation fingerprints every ``FINGERPRINT_INTERVAL`` output tokens.
        request_id: The caller's id of the request.
    """

    prompt_ids: tuple[int, ...]
    output_ids: tuple[int, ...]
    finish_reason: FinishReason
    logprobs: tuple[float, ...]
    fingerprints: tuple[Fingerprint, ...]
    request_id: str = ""


@dataclass(frozen=True)
class SequenceSnapshot:
    """Everything needed to continue a generation exactly where it stopped.

    The RNG is counter-based, so its state is just (``params.seed``, ``next_position``).

    Attributes:
        prompt_ids: The prompt.
        output_ids: Output so far; the last token is not yet in the cache.
        logprobs: Log-probabilities of ``output_ids``.
        fingerprints: Fingerprints so far.
        params: Sampling parameters of the generation.
        model_id: Model that produced the cache (a snapshot only resumes on the same model).
        keys: Cached keys ``[n_layers, n_kv_heads, n_cached, head_dim]`` on CPU, ``None`` if none yet.
        values: Cached values, same shape.
    """

    prompt_ids: tuple[int, ...]
    output_ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    fingerprints: tuple[Fingerprint, ...]
    params: SamplingParams
    model_id: str
    keys: Tensor | None = None
    values: Tensor | None = None

    @property
    def n_cached(self) -> int:
        """Tokens whose keys/values the snapshot holds."""
        return 0 if self.keys is None else int(self.keys.shape[2])

    @property
    def next_position(self) -> int:
        """Absolute position of the next token to sample (the RNG counter)."""
        return len(self.prompt_ids) + len(self.output_ids)


@dataclass(frozen=True)
class ScoreResult:
    """Teacher-forced scores of a claimed output.

    Attributes:
        logprobs: Log-probability of each claimed output token.
        top_tokens: Per output position, the top candidates as ``(token_id, logprob)``.
        fingerprints: Fingerprints at the same output indices generation records.
        margins: Per output position, how far the claimed token is from the one the sampling rule
            picks (see ``sampling.selection_margin``); ``None`` unless sampling params were given.
        fingerprint_rows: The whole hidden row ``[len(fingerprints), dim]`` (float32, CPU) behind each
            fingerprint, so that a claimed dim outside the rescored top-k is compared with its own
            value (`scoring.compare_generation`); ``None`` when not kept.
    """

    logprobs: tuple[float, ...]
    top_tokens: tuple[tuple[tuple[int, float], ...], ...]
    fingerprints: tuple[Fingerprint, ...]
    margins: tuple[float, ...] | None = None
    fingerprint_rows: Tensor | None = field(default=None, compare=False, repr=False)
