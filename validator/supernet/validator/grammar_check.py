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
"""

from __future__ import annotations

from typing import Any

from supernet.node.llm.grammar import GrammarConstraint, GrammarError, allowed_masks
from supernet.validator.evidence import Check, Finding
from supernet.validator.trace_view import LLMCall
from torch import Tensor


def _constraint(
    call: LLMCall, tokenizer: Any, vocab_size: int, eos_ids: tuple[int, ...]
) -> GrammarConstraint:
    assert call.grammar is not None
    stops = call.stop_token_ids if call.stop_token_ids is not None else eos_ids
    return GrammarConstraint(tokenizer, call.grammar, vocab_size, stops)


def check_grammar(call: LLMCall, tokenizer: Any, vocab_size: int, eos_ids: tuple[int, ...]) -> list[Finding]:
    """Findings of the grammar walk over a constrained call's output (none for other calls)."""
    if call.grammar is None:
        return []
    try:
        constraint = _constraint(call, tokenizer, vocab_size, eos_ids)
    except GrammarError as exc:  # an honest engine refuses such a call before generating
        return [Finding(Check.LLM_SHAPE, f"the recorded grammar: {exc}", call=call.call)]
    _, bad = allowed_masks(constraint, call.output_ids)
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
    """The allowed tokens at each output position of a constrained call (``[n, V]`` bool), for the
    selection margins; ``None`` for an unconstrained call. From the first token outside the
    grammar on (a `check_grammar` finding already), every token is allowed: the rest of the call
    is judged as the model's work alone."""
    if call.grammar is None:
        return None
    try:
        constraint = _constraint(call, tokenizer, vocab_size, eos_ids)
    except GrammarError:
        return None
    masks, bad = allowed_masks(constraint, call.output_ids)
    if bad is not None:
        masks[bad] = True
    return masks
