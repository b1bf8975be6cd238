"""Review of this session's changes (ef05352..HEAD): the tokenizer in the model id, the leaving-node
claim window, the grammar budget and packed masks, the validator budgets.

Tried, found (all fixed; their tests are now ``test_defence_*``):

1. FIXED: `_check_template` refused only ``strftime_now``; Jinja's ``random`` filter and ``lipsum``
   global are random as well (a template rendered another prompt each time). Now `UNREPEATABLE`
   refuses all three.
2. FIXED (regression): `_check_template` parsed with a plain ``jinja2.Environment()`` and refused
   ``{% break %}`` templates transformers renders. It is now a textual check, no parse.
3. FIXED: the walk cache kept refused walks with their whole key at zero counted cost. Budget
   refusals are not cached, keys are 32-byte digests and the entries are capped.
4. FIXED: `Verdict.local_failure` was read from the text of ``unverifiable`` (which may quote an
   agent id or a tool's error). It is now the typed ``Verdict.local`` flag the verifier sets.
5. FIXED (regression): `WriteLog.step` read every due trace before seeing its window was over.
   Headers are read first and expired entries closed without a read.
6. holds: `pack_masks` / `unpack_masks` round-trip for vocabularies not divisible by 8, and a packed
   mask masks logits exactly like the bool one.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import torch
from supernet.node.llm.grammar import MAX_GRAMMAR_BYTES, masked, pack_masks, unpack_masks
from supernet.validator import grammar_check
from supernet.validator.db import ReceiptRow
from supernet.validator.evidence import Check, Finding, Verdict
from supernet.validator.trace_view import LLMCall
from supernet.validator.writes import WriteLog

from tests.unit.test_review_cheating_node import SMOLLM2

HAS_MODEL = (SMOLLM2 / "tokenizer.json").exists()
CHAT = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "<|im_start|>assistant\n"
)


def _template_copy(dest: Path, template: str) -> Path:
    from tests.unit.test_review_tokenizer_id import _tokenizer_copy

    return _tokenizer_copy(dest, files={"chat_template.jinja": template})


@pytest.mark.skipif(not HAS_MODEL, reason="SmolLM2 not cached")
@pytest.mark.parametrize(
    "head",
    [
        '{{ ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"] | random }}',
        "{{ lipsum(1, html=False, min=5, max=8) }}",
    ],
)
def test_defence_a_template_that_renders_at_random_is_refused(tmp_path: Path, head: str) -> None:
    """Attack: a model registered with a template that draws at random (``random``, ``lipsum``)
    renders a different prompt each time: an honest node's recorded prompt differs from a
    validator's replay and the node is accused. `Tokenizer` refuses it at load, as the clock."""
    from supernet.node.llm.tokenizer import Tokenizer, TokenizerError

    with pytest.raises(TokenizerError, match="renders differently each time"):
        Tokenizer(_template_copy(tmp_path / "t", f"<|im_start|>system\n{head}<|im_end|>\n" + CHAT))


@pytest.mark.skipif(not HAS_MODEL, reason="SmolLM2 not cached")
def test_defence_a_template_with_loop_controls_loads(tmp_path: Path) -> None:
    """A model whose template uses ``{% break %}`` (jinja's loopcontrols, which transformers enables)
    loads, and renders as transformers renders it (a plain Jinja parse refused it)."""
    from supernet.node.llm.tokenizer import Tokenizer
    from transformers import AutoTokenizer

    template = (
        "{% for m in messages %}{% if loop.index > 8 %}{% break %}{% endif %}"
        "<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}<|im_start|>assistant\n"
    )
    folder = _template_copy(tmp_path / "t", template)
    chat = [{"role": "user", "content": "hi"}]
    rendered = AutoTokenizer.from_pretrained(str(folder)).apply_chat_template(chat, tokenize=False)
    assert "<|im_start|>user\nhi" in rendered
    tok = Tokenizer(folder)
    assert tok.decode(tok.apply_chat_template(chat)) == rendered


class _NamedTokenizer:
    """A tokenizer as the walk cache keys it (by `digest`); never reached for a refused grammar."""

    def digest(self) -> str:
        return "f" * 64


def test_defence_refused_walks_are_not_kept_and_the_cache_is_bounded() -> None:
    """Attack: a node commits receipts whose constrained calls record distinct over-budget grammars
    (a trace may hold ~384 KiB). Each walk was cached with its whole key at 0 counted bytes and
    never evicted. Now a budget refusal is not cached (it costs a length check), keys are 32-byte
    digests, and the cache holds at most ``WALK_CACHE_ENTRIES`` walks."""
    saved = grammar_check._walks.copy()
    grammar_check._walks.clear()
    try:
        n, size = 40, MAX_GRAMMAR_BYTES + 1024
        for k in range(n):
            grammar = '{"grammars":[{"lark_grammar":"start: \\"' + f"{k:04d}" + "x" * size + '\\""}]}'
            ids = (5,) * 16
            call = LLMCall(
                0, "0x00", (1,), ids, (0.0,) * 16, None, 0.0, 1.0, 0, 16, None, "stop", None, grammar=grammar
            )
            refused, masks, _ = grammar_check.walk(call, _NamedTokenizer(), 1000, (2,))
            assert refused is not None and masks is None
        assert len(grammar_check._walks) == 0  # nothing kept
        assert all(len(key) == 32 for key in grammar_check._walks)
        assert grammar_check.WALK_CACHE_ENTRIES <= 256
    finally:
        grammar_check._walks.clear()
        grammar_check._walks.update(saved)


def test_defence_a_local_failure_is_a_typed_flag_not_text() -> None:
    """Attack: an unverifiable reason that quotes outside text (an agent id, a tool's error)
    containing the mark was taken for this validator's own failure: never recorded, re-verified
    each step. Now `Verdict.local_failure` is the typed ``local`` flag only the verifier sets."""
    agent_id = "helper failed on this validator"  # any id the agent's code was asked to call
    reason = f"cannot replay the call of agent {agent_id!r}: it is not installed here"
    assert not Verdict(1, 0, b"\0" * 32, unverifiable=reason).local_failure
    assert Verdict(1, 0, b"\0" * 32, unverifiable="scoring failed", local=True).local_failure
    found = Finding(Check.LLM_TOKEN, "a wrong token", call=0)
    assert not Verdict(1, 0, b"\0" * 32, findings=(found,), local=True).local_failure  # findings count


class _SlowStore:
    def __init__(self) -> None:
        self.reads = 0

    async def get_block(self, cid: str) -> bytes:
        self.reads += 1
        await asyncio.sleep(0.3)  # a node's store drip-feeding (READ_DEADLINE_S in the worst case)
        raise LookupError(cid)


class _Header:
    committed_at = 1_000


class _Params:
    challenge_window = 600


class _Chain:
    def params(self) -> _Params:
        return _Params()

    def batch(self, batch_id: int) -> _Header:
        return _Header()


class _Db:
    def __init__(self, rows: list[tuple[ReceiptRow, int]]) -> None:
        self.rows, self.closed = rows, []

    def first_unread_batch(self) -> int | None:
        return 1

    def unread_traces(self, from_batch: int, now: float) -> list[tuple[ReceiptRow, int]]:
        return list(self.rows)

    def record_writes(self, batch_id: int, index: int, writes: Any, status: str) -> None:
        self.closed.append((index, status))


async def test_defence_the_write_log_closes_entries_past_their_window_without_reading() -> None:
    """Attack (a regression found in review): after a backlog, every due entry of a batch already
    out of its window was read first (up to ``READ_DEADLINE_S`` per chunk of 8) and only then closed
    ``expired``: a drip-feeding node's old entries held the step. Headers are now read first and
    expired entries closed without a read."""
    rows = [(ReceiptRow(1, i, "0xn", "0x00", "0xu", f"cid{i}"), 0) for i in range(8)]
    db, store = _Db(rows), _SlowStore()
    log = WriteLog(_Chain(), db, store, index=None, availability=None)  # type: ignore[arg-type]
    await log.step(chain_now=_Header.committed_at + _Params.challenge_window + 5)  # window over
    assert db.closed == [(i, "expired") for i in range(8)]
    assert store.reads == 0  # nothing read: nothing read could be used


def test_defence_packed_masks_round_trip_for_any_vocabulary_width() -> None:
    """`pack_masks` pads to a byte and `unpack_masks` cuts back: 1 to 17 and 49,153 tokens."""
    gen = torch.Generator().manual_seed(7)
    for width in (*range(1, 18), 49_153):
        rows = torch.rand((3, width), generator=gen) > 0.5
        assert torch.equal(unpack_masks(pack_masks(rows), width), rows)
        logits = torch.randn((3, width), generator=gen)
        assert torch.equal(masked(logits, pack_masks(rows)), masked(logits, rows))
