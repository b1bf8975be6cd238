"""One engine step, run in a worker thread: decode the running sequences, prefill the new ones.

The batch arrives ordered by slot: first the sequences that already have output (slots
``0..D-1``, decoded together, one token each), then the new ones (slots ``D..``, prefilled
together; a prompt whose leading tokens are in the engine's prefix cache has them loaded into its
slot and prefills only the rest). A step with new prompts runs the decode tokens and the prompts'
tokens as one packed forward pass (`PackedStepAttention`): every weight is read once per step,
not once for the decode and again for the prefill. A step of decode tokens only runs whole in the
fused C kernel where the model has one (`supernet.node.llm.fused`, float16-weights on a CPU).
Both yield final hidden states; one lm-head
matmul, one log-softmax and one selection call serve all rows (a constrained row's selection runs
on its grammar's mask, `supernet.node.llm.grammar`). Nothing here touches asyncio state: the loop
applies the returned ``StepOutput``s.
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
    """What one step produced for one sequence."""

    token: int
    logprob: float
    fingerprint: Fingerprint | None
    cached: int


@torch.inference_mode()
def run_step(model: Llama, pool: KVPool, batch: list[Sequence]) -> list[StepOutput]:
    """Advance every sequence of ``batch`` by one token (see the module docstring)."""
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
    if not fresh and model.fused_decoder is not None:  # the whole step in one C call
        rows, logits = model.fused_decoder.step(pool, [s.output[-1] for s in decode], lengths)
        cached = [n + 1 for n in lengths]
    elif not fresh:
        pos = torch.tensor(lengths, device=device)
        tokens = torch.tensor([s.output[-1] for s in decode], device=device)[:, None]
        rows = model(tokens, pos[:, None], DecodeAttention(pool, pos))[:, 0]
        logits = model.logits(rows)
        cached = [n + 1 for n in lengths]
    else:
        rows, cached = _decode_and_prefill(model, pool, decode, lengths, fresh, live)
        logits = model.logits(rows)
    positions = [len(s.prompt) + len(s.output) for s in batch]
    chosen = select(_constrained(logits, batch), [s.params for s in batch], positions)
    logprobs = chosen_logprobs(logits, chosen)
    fps = _fingerprints(rows, batch)
    for seq, token in zip(batch, chosen, strict=True):
        # a token the mask allowed and the matcher then refuses would be a grammar-engine bug; a
        # validator's walk would find it outside the grammar, so the call ends there, unrecorded
        if seq.constraint is not None and not seq.constraint.advance(token):
            seq.grammar_refused = True
    return [
        StepOutput(token=t, logprob=lp, fingerprint=fps.get(r), cached=c)
        for r, (t, lp, c) in enumerate(zip(chosen, logprobs, cached, strict=True))
    ]


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
    fresh: list[Sequence],
    live: int,
) -> tuple[Tensor, list[int]]:
    """One forward pass over the decode tokens and the fresh prompts packed into one row
    (`PackedStepAttention`); the final hidden state of every sequence and its cached length after."""
    device = pool.device
    starts = [0 if s.prefix is None else s.prefix[0].shape[2] for s in fresh]
    _prefill_shared(model, pool, fresh, starts, live)
    lens = [len(s.prompt) for s in fresh]
    width = max(n - p for n, p in zip(lens, starts, strict=True))
    if any(starts) and max(starts) + width > pool.max_capacity:  # too wide together: prefill all
        starts = [0] * len(fresh)
        width = max(lens)
    # before any attention indexes the pool's layout
    pool.ensure_capacity(max(starts) + width, live)
    for r, s in enumerate(fresh):
        if starts[r] and s.prefix is not None and starts[r] == s.prefix[0].shape[2]:  # else: shared above
            pool.load(s.slot, *s.prefix, live)
    prefill: PrefillAttention | PrefixPrefillAttention
    if any(starts):
        first = torch.tensor(starts, device=device)
        prefill = PrefixPrefillAttention(pool, len(decode), first, width)
    else:
        prefill = PrefillAttention(pool, len(decode))
    ids = [s.output[-1] for s in decode]
    positions = list(lengths)
    for r, s in enumerate(fresh):
        ids += s.prompt[starts[r] :]
        positions += range(starts[r], lens[r])
    pos = torch.tensor(positions, device=device)
    attention = PackedStepAttention(
        DecodeAttention(pool, pos[: len(decode)]) if decode else None,
        len(decode),
        prefill,
        [n - p for n, p in zip(lens, starts, strict=True)],
        device,
    )
    h = model(torch.tensor([ids], device=device), pos[None], attention)[0]
    # each sequence's row: its decode token, or its prompt's last token
    last = [*range(len(decode)), *(end - 1 for end in attention.prompt_ends)]
    return h[torch.tensor(last, device=device)], [n + 1 for n in lengths] + lens


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


def _prefill_shared(model: Llama, pool: KVPool, fresh: list[Sequence], starts: list[int], live: int) -> None:
    """Prefill once a prefix that several fresh rows share and no cache entry holds (``Sequence.share``).

    Its keys/values go into the first such row's slot and are copied into the others'; their
    ``starts`` become its length, so the batch's prefill computes only the rest of each prompt.
    Rows whose prompts already start with a shorter cached prefix take part too (agents' calls
    share a chat template's system turn, then often an instruction): the first row loads that
    prefix and computes only the rest of the shared one.
    """
    device = pool.device
    proposed = sorted({s.prompt[: s.share] for s in fresh if s.share}, key=len, reverse=True)
    for prefix in proposed:
        n = len(prefix)
        rows = [
            r for r, s in enumerate(fresh) if starts[r] < n and len(s.prompt) > n and s.prompt[:n] == prefix
        ]
        if len(rows) < 2:
            continue
        lead, have = fresh[rows[0]], starts[rows[0]]
        pool.ensure_capacity(n, live)
        if have and lead.prefix is not None:
            pool.load(lead.slot, *lead.prefix, live)
            at = torch.arange(have, n, device=device)[None]
            attention = PrefixPrefillAttention(pool, lead.slot, torch.tensor([have], device=device), n - have)
            model(torch.tensor([prefix[have:]], device=device), at, attention)
        else:
            model(torch.tensor([prefix], device=device), None, PrefillAttention(pool, lead.slot))
        for r in rows:
            if fresh[r].slot != lead.slot:
                pool.move(lead.slot, fresh[r].slot, n)
            starts[r] = n
