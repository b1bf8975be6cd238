"""Re-checking a constrained LLM call: its tokens must walk its grammar, and be chosen under its mask.

A constrained call (``response_format`` ``json_schema`` / ``json_object``) records its grammar in
the trace (``params.grammar``); the agent replay has already checked that it is the grammar the
signed input asks for. The token mask at each position is a deterministic function of the grammar,
the tokenizer and the tokens before it (`supernet.node.llm.grammar`), so the validator rebuilds it
exactly and checks two things:

* **the walk** (`check_grammar`, no model needed, no tolerance): every recorded token, the stop
  token included, is one the mask allows at its position. A node that ignored the mask, or edited
  a token to one the grammar forbids, fails here at that position (`Check.LLM_TOKEN`).
* **the choice** (`grammar_masks`, handed to the teacher-forced pass as
  `supernet.node.llm.scoring.ScoreRequest.allowed`): the selection margins are computed on the
  logits with the disallowed tokens at ``-inf``, the distribution the node's sampler drew from,
  so a token that is allowed but not the rule's choice under the mask is caught as in any call.

Recorded logprobs are the model's own (unmasked) and are compared as in any call.

Both come from one walk (`walk`), kept in a small cache between the check and the scoring passes
(a screen and its arbiter score a call twice): a grammar is compiled and walked once per call, and
its masks are held at a bit per token (`supernet.node.llm.grammar.pack_masks`). A grammar over the
protocol's budget (`supernet.node.llm.grammar.check_budget`) is never compiled: an honest engine
refuses it, so one in a trace is the node's doing.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Any

from supernet.node.llm.grammar import GrammarConstraint, GrammarError, allowed_masks, check_budget
from supernet.validator.evidence import Check, Finding
from supernet.validator.trace_view import LLMCall
from torch import Tensor

WALK_CACHE_BYTES = 256 * 1024 * 1024
"""Most bytes of packed masks the walk cache holds (the oldest walks go first)."""
WALK_CACHE_ENTRIES = 256
"""Most walks the cache holds (each keyed by a 32-byte digest)."""

_walks: OrderedDict[bytes, tuple[GrammarError | None, Tensor | None, int | None]] = OrderedDict()
_walks_lock = threading.Lock()


def walk(
    call: LLMCall, tokenizer: Any, vocab_size: int, eos_ids: tuple[int, ...]
) -> tuple[GrammarError | None, Tensor | None, int | None]:
    """The grammar walk over a constrained call's output: ``(why the grammar is refused, or None;
    the packed masks at each position, or None; the first position outside the grammar, or
    None)``, computed once per call (`WALK_CACHE_BYTES`)."""
    assert call.grammar is not None
    stops = call.stop_token_ids if call.stop_token_ids is not None else eos_ids
    try:
        check_budget(call.grammar)  # cheap: a refusal is not worth keeping
    except GrammarError as exc:
        return exc, None, None
    # a fixed-size key of everything the walk reads; the tokenizer by its content
    # (`Tokenizer.digest`: an id() can be reused by a later object)
    who = tokenizer.digest() if callable(getattr(tokenizer, "digest", None)) else str(id(tokenizer))
    seen = repr((call.grammar, tuple(call.output_ids), tuple(sorted(stops)), vocab_size, who))
    key = hashlib.sha256(seen.encode()).digest()
    with _walks_lock:
        if key in _walks:
            _walks.move_to_end(key)
            return _walks[key]
    try:
        constraint = GrammarConstraint(tokenizer, call.grammar, vocab_size, stops)
    except GrammarError as exc:  # not compiling: an honest engine refuses it
        result: tuple[GrammarError | None, Tensor | None, int | None] = (exc, None, None)
    else:
        masks, bad = allowed_masks(constraint, call.output_ids, packed=True)
        result = (None, masks, bad)
    with _walks_lock:
        _walks[key] = result
        held = sum(0 if m is None else m.numel() for _, m, _ in _walks.values())
        while len(_walks) > 1 and (held > WALK_CACHE_BYTES or len(_walks) > WALK_CACHE_ENTRIES):
            _, (_, old, _) = _walks.popitem(last=False)
            held -= 0 if old is None else old.numel()
    return result


def check_grammar(call: LLMCall, tokenizer: Any, vocab_size: int, eos_ids: tuple[int, ...]) -> list[Finding]:
    """Findings of the grammar walk over a constrained call's output (none for other calls)."""
    if call.grammar is None:
        return []
    refused, _, bad = walk(call, tokenizer, vocab_size, eos_ids)
    if refused is not None:
        return [Finding(Check.LLM_SHAPE, f"the recorded grammar: {refused}", call=call.call)]
    if bad is None:
        return []
    return [
        Finding(
            Check.LLM_TOKEN,
            "a token the call's grammar does not allow at this position",
            call=call.call,
            position=bad,
            claimed=call.output_ids[bad],
        )
    ]


def grammar_masks(call: LLMCall, tokenizer: Any, vocab_size: int, eos_ids: tuple[int, ...]) -> Tensor | None:
    """The allowed tokens at each output position of a constrained call (packed, a bit per token:
    `supernet.node.llm.grammar.pack_masks`), for the selection margins; ``None`` for an
    unconstrained call or a refused grammar. From the first token outside the grammar on (a
    `check_grammar` finding already), every token is allowed: the rest of the call is judged as
    the model's work alone."""
    if call.grammar is None:
        return None
    refused, masks, bad = walk(call, tokenizer, vocab_size, eos_ids)
    if refused is not None or masks is None:
        return None
    if bad is not None:
        masks = masks.clone()
        masks[bad] = 255
    return masks
