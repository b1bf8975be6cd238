"""One engine step, run in a worker thread: decode the running sequences, prefill (a chunk of) the new ones.

The batch arrives ordered by slot: first the sequences that already have output (slots
``0..D-1``, decoded together, one token each), then the ones whose prompt is not all in their
slot yet (slots ``D..``), each computing its ``Sequence.chunk`` of prompt tokens (the engine
shares a budget of prompt tokens per step among them, `LLMEngine.prefill_chunk`). A prompt
longer than its chunk is prefilled over several steps, each chunk attending to the chunks before
it already in its slot (`PrefixPrefillAttention`, as a prompt whose leading tokens come from the
engine's prefix cache), and samples its first token in the step that computes its last prompt
token; so a running sequence waits for at most one budget of other users' prompts between two of
its tokens, and the keys/values, hence the logits, are the unchunked prefill's up to float32
rounding. A step with prompt tokens runs the decode tokens and the chunks as one packed forward
pass (`PackedStepAttention`): every weight is read once per step, not once for the decode and
again for the prefill. A step of decode tokens only runs whole in the fused C kernel where the
model has one (`supernet.node.llm.fused`, float16-weights and int8-weights on a CPU). Both yield final hidden
states; one lm-head matmul and one log-softmax serve all rows, and one selection call the rows
that produce a token (a constrained row's selection runs on its grammar's mask,
`supernet.node.llm.grammar`). Nothing here touches asyncio state: the loop applies the returned
``StepOutput``s.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from supernet.node.llm.grammar import masked
from supernet.node.llm.handle import Sequence
from supernet.node.llm.kvcache import (
    DecodeAttention,
    KVPool,
    PackedStepAttention,
    PrefillAttention,
    PrefixPrefillAttention,
)
from supernet.node.llm.model import Llama
from supernet.node.llm.sampling import chosen_logprobs, select
from supernet.node.llm.scoring import fingerprint_due, fingerprints_of
from supernet.node.llm.types import Fingerprint
from torch import Tensor


@dataclass(frozen=True)
class StepOutput:
    """What one step produced for one sequence.

    Attributes:
        token: The sampled token; ``None`` while the sequence's prompt is not all prefilled (this
            step computed a chunk of it, or none where the step's budget ran out before it).
        logprob: The token's log-probability (0.0 without a token).
        fingerprint: Its fingerprint, when one is due.
        cached: Tokens whose keys/values the sequence's slot holds after the step.
        prefilled: Prompt tokens the step computed for the sequence (a prefix-cache hit or a
            prefix copied from another row excluded).
    """

    token: int | None
    logprob: float
    fingerprint: Fingerprint | None
    cached: int
    prefilled: int = 0


@torch.inference_mode()
def run_step(model: Llama, pool: KVPool, batch: list[Sequence]) -> list[StepOutput]:
    """Advance every decoding sequence of ``batch`` by one token and every other one by its chunk
    of prompt tokens (see the module docstring)."""
    device = pool.device
    live = _live_slots(batch)
    for seq in batch:
        if seq.resume is not None and seq.resume.keys is not None:
            pool.load(seq.slot, seq.resume.keys, seq.resume.values, live)  # type: ignore[arg-type]
    decode = [s for s in batch if s.output]
    fresh = batch[len(decode) :]
    lengths = [len(s.prompt) + len(s.output) - 1 for s in decode]
    if decode:
        pool.ensure_capacity(max(lengths) + 1, live)
    plan = _Plan(fresh)
    _prefill_shared(model, pool, fresh, plan, live)
    for r, s in enumerate(fresh):
        rest = len(s.prompt) - plan.starts[r]
        plan.chunks.append(rest if s.chunk is None else min(s.chunk, rest))
        plan.computed[r] += plan.chunks[r]
    if any(n < 1 for n in plan.chunks):
        raise ValueError("a prefilling sequence of the step has no prompt token to compute")
    # the rows that sample a token: the decoding ones, then the prompts whose last chunk this is
    # (the engine gives the budget first come first served: all but the last prompt end here)
    producing = decode + [s for r, s in enumerate(fresh) if plan.starts[r] + plan.chunks[r] == len(s.prompt)]
    if producing != batch[: len(producing)]:
        raise ValueError("a prompt's last chunk follows a prompt still in progress")
    if fresh:
        hidden = _decode_and_prefill(model, pool, decode, lengths, fresh, plan, live)
        logits = model.logits(hidden)  # every row's: the caller's instrumentation reads them by row
    elif model.fused_decoder is not None:  # the whole step in one C call
        hidden, logits = model.fused_decoder.step(pool, [s.output[-1] for s in decode], lengths)
    else:
        pos = torch.tensor(lengths, device=device)
        tokens = torch.tensor([s.output[-1] for s in decode], device=device)[:, None]
        hidden = model(tokens, pos[:, None], DecodeAttention(pool, pos))[:, 0]
        logits = model.logits(hidden)
    n = len(producing)
    chosen: list[int] = []
    logprobs: list[float] = []
    if n:
        hidden, logits = (hidden[:n], logits[:n]) if n < len(batch) else (hidden, logits)
        positions = [len(s.prompt) + len(s.output) for s in producing]
        chosen = select(_constrained(logits, producing), [s.params for s in producing], positions)
        logprobs = chosen_logprobs(logits, chosen)
    fps = _fingerprints(hidden, producing)
    for seq, token in zip(producing, chosen, strict=True):
        # a token the mask allowed and the matcher then refuses would be a grammar-engine bug; a
        # validator's walk would find it outside the grammar, so the call ends there, unrecorded
        if seq.constraint is not None and not seq.constraint.advance(token):
            seq.grammar_refused = True
    outputs = []
    for r, s in enumerate(batch):
        f = r - len(decode)  # its row among the prefilling ones
        cached = len(s.prompt) + len(s.output) if f < 0 else plan.starts[f] + plan.chunks[f]
        prefilled = 0 if f < 0 else plan.computed[f]
        if r < n:
            outputs.append(StepOutput(chosen[r], logprobs[r], fps.get(r), cached, prefilled))
        else:  # its prompt is not all in yet
            outputs.append(StepOutput(None, 0.0, None, cached, prefilled))
    return outputs


class _Plan:
    """What a step prefills of each not yet decoding row: ``starts[r]``, the prompt tokens its slot
    holds or will hold before its chunk (its earlier chunks, a prefix-cache hit loaded now, or a
    prefix shared with other rows, copied in); ``in_slot[r]``, whether they are in the slot
    already; ``chunks[r]``, the tokens it computes in the packed pass; ``computed[r]``, the prompt
    tokens the step computes for it in all."""

    def __init__(self, fresh: list[Sequence]) -> None:
        self.starts = [s.prompt_ready for s in fresh]
        self.in_slot = [s.cached > 0 for s in fresh]
        self.chunks: list[int] = []
        self.computed = [0] * len(fresh)


def _live_slots(seqs: list[Sequence]) -> int:
    """How many leading pool slots hold cached tokens: the engine keeps every active sequence in
    the slots ``0..B-1`` and steps them all, so the highest slot of a step's batch bounds them."""
    return max(s.slot for s in seqs) + 1


def _fingerprints(rows: Tensor, batch: list[Sequence]) -> dict[int, Fingerprint]:
    """Fingerprints of the rows whose token is due one (every ``FINGERPRINT_INTERVAL``-th), by row;
    most steps have none, and then index no tensor."""
    due = [r for r, s in enumerate(batch) if fingerprint_due(len(s.output))]
    if not due:
        return {}
    return dict(zip(due, fingerprints_of(rows[due], [len(batch[r].output) for r in due]), strict=True))


def _decode_and_prefill(
    model: Llama,
    pool: KVPool,
    decode: list[Sequence],
    lengths: list[int],
    rows: list[Sequence],
    plan: _Plan,
    live: int,
) -> Tensor:
    """One forward pass over the decode tokens and the rows' prompt chunks packed into one row
    (`PackedStepAttention`); the final hidden state of every decode token and of each row's last
    computed token, in that order."""
    device = pool.device
    starts, chunks = plan.starts[: len(rows)], plan.chunks
    ends = [p + n for p, n in zip(starts, chunks, strict=True)]
    # before any attention indexes the pool's layout
    pool.ensure_capacity(max(ends), live)
    for r, s in enumerate(rows):
        if starts[r] and not plan.in_slot[r]:  # a prefix-cache hit, loaded for its first chunk
            assert s.prefix is not None
            pool.load(s.slot, *s.prefix, live)
    prefill: PrefillAttention | PrefixPrefillAttention
    if any(starts):
        first = torch.tensor(starts, device=device)
        prefill = PrefixPrefillAttention(pool, len(decode), first, max(chunks), chunks)
    else:
        prefill = PrefillAttention(pool, len(decode))
    ids = [s.output[-1] for s in decode]
    positions = list(lengths)
    for r, s in enumerate(rows):
        ids += s.prompt[starts[r] : ends[r]]
        positions += range(starts[r], ends[r])
    pos = torch.tensor(positions, device=device)
    attention = PackedStepAttention(
        DecodeAttention(pool, pos[: len(decode)]) if decode else None, len(decode), prefill, chunks, device
    )
    h = model(torch.tensor([ids], device=device), pos[None], attention)[0]
    # each sequence's row: its decode token, or its chunk's last token
    last = [*range(len(decode)), *(end - 1 for end in attention.prompt_ends)]
    return h[torch.tensor(last, device=device)]


def _constrained(logits: Tensor, batch: list[Sequence]) -> Tensor:
    """``logits`` with each constrained row's disallowed tokens at ``-inf`` (a copy when any is):
    the selection rule runs on these, the recorded logprobs stay the model's own."""
    rows = [r for r, s in enumerate(batch) if s.constraint is not None]
    if not rows:
        return logits
    out = logits.clone()
    for r in rows:
        constraint = batch[r].constraint
        assert constraint is not None
        out[r] = masked(out[r], constraint.allowed())
    return out


def _prefill_shared(model: Llama, pool: KVPool, fresh: list[Sequence], plan: _Plan, live: int) -> None:
    """Prefill once a prefix that several new rows share and no cache entry holds (``Sequence.share``).

    Its keys/values go into the first such row's slot and are copied into the others'; their
    starts become its length, so the step computes only the rest of each prompt. Rows whose
    prompts already start with a shorter cached prefix take part too (agents' calls share a chat
    template's system turn, then often an instruction): the first row loads that prefix and
    computes only the rest of the shared one. Only rows with nothing in their slot yet whose whole
    prompt goes in this step take part: the step then computes less than their chunks, never more.
    """
    device = pool.device
    starts = plan.starts
    whole = [  # nothing in its slot yet, and the rest of its prompt all in this step
        not s.cached and (s.chunk is None or s.chunk >= len(s.prompt) - starts[r])
        for r, s in enumerate(fresh)
    ]
    proposed = sorted({s.prompt[: s.share] for s in fresh if s.share}, key=len, reverse=True)
    for prefix in proposed:
        n = len(prefix)
        rows = [
            r
            for r, s in enumerate(fresh)
            if whole[r] and starts[r] < n and len(s.prompt) > n and s.prompt[:n] == prefix
        ]
        if len(rows) < 2:
            continue
        lead, have = fresh[rows[0]], starts[rows[0]]
        pool.ensure_capacity(n, live)
        if have:  # the lead's cached prefix (nothing is in its slot yet): loaded, then the rest
            assert lead.prefix is not None
            pool.load(lead.slot, *lead.prefix, live)
            at = torch.arange(have, n, device=device)[None]
            attention = PrefixPrefillAttention(pool, lead.slot, torch.tensor([have], device=device), n - have)
            model(torch.tensor([prefix[have:]], device=device), at, attention)
        else:
            model(torch.tensor([prefix], device=device), None, PrefillAttention(pool, lead.slot))
        plan.computed[rows[0]] += n - have
        for r in rows:
            if fresh[r].slot != lead.slot:
                pool.move(lead.slot, fresh[r].slot, n)
            starts[r] = n
            plan.in_slot[r] = True
