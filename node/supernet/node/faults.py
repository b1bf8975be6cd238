"""Fault injection: make a node cheat on purpose, so tests and the demo can show validators catch it.

``supernet node run --fault KIND:RATE`` (repeatable) builds one `FaultInjector`. It is a pure
module: the kernel and the node service call its hooks at fixed points, and with no faults every
hook returns its input unchanged. Whether a fault fires is a deterministic function of
``(seed, kind, key)``, so a run is reproducible and a test knows which calls were faulty.

Where each kind applies (the hook points):

========== ============================== =========================================================
kind       hook                           what the node then reports
========== ============================== =========================================================
model      `perturb_model` at load (rate  a different model: with rate 1 the weights are
           1) or `on_generation` (< 1)    perturbed in place (every call runs a perturbed model);
                                          with rate < 1 the call's logprobs and fingerprints are
                                          those of a perturbed model (noise), tokens unchanged
tokens     `on_generation`                some output tokens replaced by other ids (the agent,
                                          the trace and the output all see the corrupted tokens)
truncate   `on_generation`                output cut to about half, claimed ``finish_reason="stop"``
seed       `on_generation` (sampled calls the tokens were drawn with another seed than the one
           only)                          recorded in the trace
tool       `on_tool_result`               a deterministic tool's result is fabricated
trace      `on_output` (node service,     the output in the receipt differs from the output in
           before the receipt is built)   the trace (the trace no longer matches the receipt)
answer     `on_answer` (kernel, after the the answer is the node's own text; trace and receipt
           agent returns)                 both carry it (consistent, but not what the agent said)
skip       `skips` (dispatcher, per task) no LLM call of the task runs: the agent gets a made-up
                                          reply and the trace records no ``llm`` event
prompt     `on_prompt` (dispatcher)       the model runs on a cheaper prompt than the agent built
                                          (last message cut in half); the trace records that prompt
withhold   `withholds` (kernel, per task) the trace's CID goes into the receipt but the trace is
                                          never put in the store
search     `on_search` (dispatcher)       a memory search shows the agent the entries *least*
                                          related to the query (their true scores), worst first
========== ============================== =========================================================

The first six are what a sloppy node does; the last five are what a *rational* cheater does: each
keeps the receipt, the trace and the signatures consistent, so only replaying the agent (answer,
skip, prompt), the availability challenge (withhold) or ranking the searched memory again
(search) catches it.

``on_generation`` runs after the engine returns and *before* the kernel decodes, records or
returns the call, with ``key = f"{task_id}:{call_index}"``; ``on_tool_result`` likewise for
tool calls; ``on_output`` with ``key = task_id``.

>>> inj = FaultInjector.from_cli(["tokens:1.0"])
>>> gen = Generation(prompt_ids=(1, 2, 3), output_ids=(5, 6, 7, 8), logprobs=(-0.1,) * 4)
>>> inj.on_generation("t:0", gen).output_ids != gen.output_ids
True
>>> FaultInjector.from_cli([]).on_output("t", "hello")
'hello'
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

MODEL_NOISE = 0.05
"""Relative scale of the weight (or logprob) noise of the ``model`` fault."""


class FaultKind(StrEnum):
    """The ways a node can cheat (see the module docstring for where each applies)."""

    MODEL = "model"
    TOKENS = "tokens"
    TRUNCATE = "truncate"
    SEED = "seed"
    TOOL = "tool"
    TRACE = "trace"
    ANSWER = "answer"
    SKIP = "skip"
    PROMPT = "prompt"
    WITHHOLD = "withhold"
    SEARCH = "search"


@dataclass(frozen=True)
class FaultSpec:
    """One ``KIND:RATE`` option: the fault fires on a ``rate`` fraction of eligible calls."""

    kind: FaultKind
    rate: float

    @classmethod
    def parse(cls, text: str) -> FaultSpec:
        """Parse ``"KIND:RATE"`` (``"KIND"`` alone means rate 1).

        Raises:
            ValueError: unknown kind or a rate outside [0, 1].
        """
        kind, _, rate = text.strip().partition(":")
        try:
            spec = cls(FaultKind(kind.strip().lower()), float(rate) if rate else 1.0)
        except ValueError:
            kinds = ", ".join(k.value for k in FaultKind)
            raise ValueError(f"bad fault {text!r}: expected KIND:RATE with KIND one of {kinds}") from None
        if not 0.0 <= spec.rate <= 1.0:
            raise ValueError(f"bad fault {text!r}: RATE must be in [0, 1]")
        return spec


@dataclass(frozen=True)
class Generation:
    """One LLM call's result as the kernel records it (the part a fault may change)."""

    prompt_ids: tuple[int, ...]
    output_ids: tuple[int, ...]
    logprobs: tuple[float, ...] = ()
    fingerprints: Any = None
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    finish_reason: str = "stop"
    stop_ids: tuple[int, ...] = ()
    """The call's stop tokens (a fault leaves them where they are: `_corrupt_tokens`)."""


@dataclass(frozen=True)
class FaultInjector:
    """Decides deterministically which calls cheat, and how.

    Args:
        specs: the faults and their rates (at most one per kind; the last wins).
        seed: makes the choice of faulty calls reproducible.
    """

    specs: Mapping[FaultKind, float] = field(default_factory=dict)
    seed: int = 0
    decoys: set[str] = field(default_factory=set)
    """Task ids of the node's own decoys (`supernet.node.service.decoys`): ``tokens`` always fires
    on their LLM calls, whatever the specs say."""
    fired: set[str] = field(default_factory=set)
    """Task ids a fault of the specs fired on (not the decoys'): the node's ``supernet_fault_tasks``
    metric, which tells a test network (the devnet demo) that its faulty node did cheat."""

    @classmethod
    def from_cli(cls, values: Iterable[str], seed: int = 0) -> FaultInjector:
        """Build from ``--fault`` option values."""
        return cls({s.kind: s.rate for s in map(FaultSpec.parse, values)}, seed)

    @property
    def active(self) -> bool:
        """Whether any fault can fire."""
        return any(rate > 0 for rate in self.specs.values())

    def fires(self, kind: FaultKind, key: str) -> bool:
        """Whether ``kind`` fires for ``key`` (a pure function of seed, kind and key)."""
        if kind is FaultKind.TOKENS and key.partition(":")[0] in self.decoys:
            return True
        rate = self.specs.get(kind, 0.0)
        if rate <= 0.0:
            return False
        if rate >= 1.0 or _unit(self.seed, kind.value, key) < rate:
            self.fired.add(key.partition(":")[0])
            return True
        return False

    # -- hooks -----------------------------------------------------------------------------------

    def perturb_model(self, module: Any) -> bool:
        """At load: perturb the weights in place when ``model`` fires on every call (rate 1).

        Args:
            module: a ``torch.nn.Module`` (the engine's decoder).

        Returns:
            Whether the weights were perturbed (then `on_generation` leaves ``model`` alone).
        """
        if self.specs.get(FaultKind.MODEL, 0.0) < 1.0:
            return False
        perturb_weights(module, MODEL_NOISE, self.seed)
        return True

    def on_generation(self, key: str, gen: Generation, model_perturbed: bool = False) -> Generation:
        """Apply the generation faults that fire for ``key`` (``"task_id:call_index"``)."""
        rng = random.Random(f"{self.seed}:{key}")
        if not model_perturbed and self.fires(FaultKind.MODEL, key):
            gen = _noisy_scores(gen, rng)
        if self.fires(FaultKind.TOKENS, key) and gen.output_ids:
            gen = _corrupt_tokens(gen, rng)
        if self.fires(FaultKind.TRUNCATE, key) and len(gen.output_ids) >= 2:
            keep = len(gen.output_ids) // 2
            gen = replace(
                gen,
                output_ids=gen.output_ids[:keep],
                logprobs=gen.logprobs[:keep],
                fingerprints=_cut(gen.fingerprints, keep),
                finish_reason="stop",
            )
        if gen.temperature > 0 and self.fires(FaultKind.SEED, key):
            gen = replace(gen, seed=(gen.seed + 1 + rng.randrange(1 << 32)) % (1 << 64))
        return gen

    def on_tool_result(
        self, key: str, name: str, args: Mapping[str, Any], result: Any, deterministic: bool = True
    ) -> Any:
        """Fabricate a deterministic tool's result when ``tool`` fires for ``key``."""
        if not deterministic or not self.fires(FaultKind.TOOL, key):
            return result
        return fabricate(result)

    def on_answer(self, task_id: str, output: str) -> str:
        """The task's answer as the node reports it everywhere: its own text when ``answer`` fires."""
        if not self.fires(FaultKind.ANSWER, task_id):
            return output
        return f"The answer is {_unit(self.seed, 'answer-text', task_id) * 1000:.0f}."

    def skips(self, task_id: str) -> bool:
        """Whether the task's LLM calls are skipped (``skip``)."""
        return self.fires(FaultKind.SKIP, task_id)

    def fabricated_reply(self, key: str) -> str:
        """The made-up reply a skipping node hands its agent instead of running the model."""
        return "Final Answer: 42"

    def on_prompt(self, key: str, messages: list[dict[str, str]]) -> list[dict[str, str]]:
        """The prompt the model actually runs on: the last message cut in half when ``prompt`` fires."""
        if not self.fires(FaultKind.PROMPT, key) or not messages:
            return messages
        last = messages[-1]
        content = last["content"]
        return [*messages[:-1], {**last, "content": content[: max(1, len(content) // 2)]}]

    def withholds(self, task_id: str) -> bool:
        """Whether the node keeps the task's trace to itself (``withhold``)."""
        return self.fires(FaultKind.WITHHOLD, task_id)

    @property
    def searches(self) -> bool:
        """Whether ``search`` may fire (the dispatcher then asks its memory for every entry ranked)."""
        return self.specs.get(FaultKind.SEARCH, 0.0) > 0.0

    def on_search(self, key: str, ranked: Sequence[Any], k: int) -> list[Any]:
        """The hits the agent is shown, of every entry ``ranked`` best first: the ``k`` best, or,
        when ``search`` fires for ``key`` (``"task_id:syscall_index"``), the ``k`` worst, worst
        first. It fires only where that changes what the agent sees (two entries or more)."""
        if len(ranked) > 1 and k > 0 and self.fires(FaultKind.SEARCH, key):
            return list(ranked[::-1][:k])
        return list(ranked[: max(k, 0)])

    def on_output(self, key: str, output: str) -> str:
        """The output the receipt hashes: altered when ``trace`` fires for ``key`` (the task id)."""
        if not self.fires(FaultKind.TRACE, key):
            return output
        return output + " [edited after the trace was stored]"


# -- the faults themselves -----------------------------------------------------------------------


def _unit(seed: int, kind: str, key: str) -> float:
    digest = hashlib.sha256(f"{seed}:{kind}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def _cut(fingerprints: Any, keep: int) -> Any:
    if isinstance(fingerprints, Sequence) and not isinstance(fingerprints, str | bytes):
        return (
            type(fingerprints)(fingerprints[:keep])
            if isinstance(fingerprints, tuple | list)
            else fingerprints
        )
    return fingerprints


def _noisy_scores(gen: Generation, rng: random.Random) -> Generation:
    """Logprobs and fingerprints as a perturbed model would report them."""
    lps = tuple(min(0.0, lp - abs(rng.gauss(0.5, 0.25))) for lp in gen.logprobs)
    return replace(gen, logprobs=lps, fingerprints=_jitter(gen.fingerprints, rng))


def _jitter(value: Any, rng: random.Random) -> Any:
    if isinstance(value, float):
        return value + (abs(value) + 1.0) * rng.gauss(0.0, MODEL_NOISE * 4)
    if isinstance(value, list | tuple):
        return type(value)(_jitter(v, rng) for v in value)
    if isinstance(value, dict):
        return {k: _jitter(v, rng) for k, v in value.items()}
    return value


def _corrupt_tokens(gen: Generation, rng: random.Random) -> Generation:
    """Replace one to three output tokens by other ids of the same output, as a rational cheat
    edits an answer: never a stop token nor by one, and never the last token (whose place the stop
    rule fixes), so that only a re-score finds it, not the model-free shape check (a node's decoys
    are this fault: tests/unit/test_review_decoy_tells.py). An output with no such place (a lone
    stop token) is corrupted anywhere, so that the fault always changes the call."""
    out = list(gen.output_ids)
    stops = set(gen.stop_ids)
    places = [i for i in range(len(out) - 1) if out[i] not in stops] or list(range(len(out)))
    pool = sorted(set(out) - stops) or sorted(set(gen.prompt_ids) - stops) or [0]
    for pos in rng.sample(places, k=min(len(places), rng.randint(1, 3))):
        choices = [t for t in pool if t != out[pos]] or [out[pos] + 1]
        out[pos] = rng.choice(choices)
    return replace(gen, output_ids=tuple(out))


def fabricate(result: Any) -> Any:
    """A plausible but wrong tool result of the same shape."""
    if isinstance(result, bool):
        return not result
    if isinstance(result, int | float):
        return result + 1 if isinstance(result, int) or math.isfinite(result) else 0
    if isinstance(result, str):
        return result + " (fabricated)"
    if isinstance(result, dict):
        if not result:
            return {"fabricated": True}
        first = sorted(result)[0]
        return {**result, first: fabricate(result[first])}
    if isinstance(result, list | tuple):
        return [*result, "fabricated"]
    return "fabricated"


def perturb_weights(module: Any, scale: float, seed: int) -> None:
    """Add Gaussian noise of ``scale`` times each tensor's std to every floating parameter, in place."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            if not param.is_floating_point() or param.numel() < 2:
                continue
            noise = torch.randn(param.shape, generator=gen, dtype=torch.float32)
            param.add_((noise * float(param.float().std()) * scale).to(param.dtype).to(param.device))
