"""Review: a cheating node (or one with a hostile user) baiting the validator.

Scope: everything a validator reads comes from the node (manifest, trace blocks, LLM calls' token
ids, logprobs, sampling params and stop strings, tool arguments, chat messages); what of it can
stall a validator's step, make it spend unbounded CPU or memory, crash the step outside the
per-receipt barrier, accuse an honest node or accept a cheat. Aimed at what came after the earlier
reviews (test_review_validator_budgets.py, test_review_replay_fidelity.py,
test_review_cheating_node.py, test_review_framing*.py): the drop-in's facts rule
(`supernet.sdk.formats.chat_facts`, `supernet.sdk.openai_compat.answer_facts`),
`Tokenizer.token_bytes`, header-based sampling (`TaskManagerClient.batch_seed`) and the seams
between the trace format and the LLM checks. Real parts: SmolLM2 in the node's `Kernel` (an
honest `ChatAgent` run) and in the validator's `ModelScorer`, the embedded content store, the
whole `Verifier` (`tests.unit.test_review_cheating_node.verdict_of`).

Found:

* HIGH (stall, no slash): an LLM call's recorded stop strings are unbounded (the trace format
  reads ``params.stop`` with no bound; only `ChatAgent`'s schema caps a chat at 4 x 64 chars).
  With one of them holding U+FFFD, `llm_check._past_stop_string` decodes every proper prefix of
  the output and searches every stop string in each (``O(S * n * m)``), synchronously on the
  validator's event loop (`Verifier._conclude` -> `check_shape`). 100 two-character needles over
  626 64-character tokens hold the loop ~3.4 s here (one needle: 0.14 s); at the caps (2,047
  tokens, ~45,000 needles in 384 KiB) ~4 h per receipt. A group's verdicts are settled after the
  whole group (8 receipts, which may all name one trace): past the 1-day challenge window, so
  the node is never challenged, and meanwhile the validator runs nothing else (no reveals, votes,
  settlements, other nodes' batches). Without U+FFFD the list still costs one full decode per
  stop string in `_check_finish` (``any(s in decode(ids) for s in stop_strings)``: ~1 ms a string
  at 2,047 tokens, ~2 min per receipt at the cap, measured, not tested).
  `test_attack_a_recorded_stop_list_freezes_the_validators_event_loop`, now
  `test_defence_a_recorded_stop_list_does_not_freeze_the_validators_event_loop`.
  FIXED by design: a call's stop strings are a protocol bound (`MAX_STOP_STRINGS` = 4 of at most
  `MAX_STOP_CHARS` = 64 characters, in `supernet.sdk.formats.trace`): the SDK's `LLMChat` refuses
  more and a trace recording more is malformed; the U+FFFD scan is the engine's own watcher
  (`dispatch.first_stop`: a window's decode per token), `_check_finish` decodes once, and the
  shape checks run off the event loop (`verifier._shapes` in a thread).

Checked and holding:

* a NaN or infinite float written by hand into the committed trace block (dag-cbor has neither)
  is a malformed trace, never a logprob compared with NaN
  (`test_defence_a_non_finite_logprob_in_the_committed_block_is_a_trace_finding`);
* (read, not tested here) `Tokenizer.token_bytes` and the facts rule are not on the validator's
  path (only the node's answer and the user's drop-in use them; the drop-in reads the trace bounded
  and CID-checked, `trace_problem` before `facts_problem`); a NaN claimed logprob or fingerprint
  value is a mismatch (`compare_generation`, `claimed_fingerprints`); out-of-range sampling
  params are clamped alike on both sides and the replay compares them with the agent's call;
  header-based sampling reads the seed from a header rebuilt against the block hash (a node cannot
  forge the mix), a `HeaderError` defers only that batch (`Validator._turn`), and a sample taken
  before the seed expired is kept; other validators' evidence is never trusted by a voter.
"""

from __future__ import annotations

import asyncio
import copy
import struct
import time
from pathlib import Path
from typing import Any

import pytest
from supernet.node.agents.chat import ChatAgent
from supernet.sdk.agents.syscalls import LLMChat, Message
from supernet.sdk.formats.trace import MAX_CONTEXT_TOKENS, MAX_STOP_CHARS, MAX_STOP_STRINGS, MAX_TRACE_BYTES
from supernet.sdk.store.cids import encode_dag

from tests.unit.test_review_cheating_node import (  # noqa: F401  (fixtures)
    engine,
    make_node,
    run_signed,
    scorer,
    verdict_of,
)

SMOLLM2 = Path.home() / ".cache" / "supernet" / "models" / "smollm2-135m"
pytestmark = [
    pytest.mark.model,
    pytest.mark.timeout(120),
    pytest.mark.skipif(not (SMOLLM2 / "model.safetensors").exists(), reason="SmolLM2 not cached"),
]


async def _max_loop_stall(work: Any) -> tuple[Any, float]:
    """Run ``work`` (a coroutine) while a ticker measures the longest the event loop went without
    running it: what a validator's other duties on the same loop (`Validator._reveals`, the step's
    votes and settlement) wait meanwhile."""
    worst = 0.0
    done = asyncio.Event()

    async def tick() -> None:
        nonlocal worst
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.02)
            now = time.perf_counter()
            worst = max(worst, now - last)
            last = now

    ticker = asyncio.create_task(tick())
    try:
        result = await work
    finally:
        done.set()
        await ticker
    return result, worst


# -- 1. stop strings: a quadratic scan on the event loop ------------------------------------------


def _llm_event(trace: dict[str, Any]) -> dict[str, Any]:
    return next(e for e in trace["events"] if e["kind"] == "llm")


async def test_defence_a_recorded_stop_list_does_not_freeze_the_validators_event_loop(
    make_node: Any,  # noqa: F811  (the fixtures of tests/unit/test_review_cheating_node.py)
    scorer: Any,  # noqa: F811
    store_client: Any,
) -> None:
    """Was an attack (cheating node, stall; FIXED, see the module): the trace's ``params.stop``
    was a list of any length (`Sampling.from_dag` read it with ``items`` and no bound; only
    `ChatAgent`'s input schema capped a chat at 4 strings of 64 characters, the kernel's `LLMChat`
    took any tuple). When one
    recorded stop string holds U+FFFD, `llm_check._past_stop_string` decodes every proper prefix
    of the output and looks for EVERY stop string in each: ``S * n`` substring searches over texts
    up to the whole output, i.e. ``O(S * n * m)``. It runs from `Verifier._conclude`
    (`check_shape` with the scorer's decoder), synchronously, on the validator's event loop.

    The node picks long tokens (``"="`` runs: 64 characters a token) and a two-character needle
    (``"\\ufffd\\ufffd"``, 7 bytes of dag-cbor) that no prefix holds, so no search stops early. Here
    150 strings over 626 tokens hold the loop for seconds; at the protocol's caps (2,047 output
    tokens, ~45,000 such strings in a 384 KiB trace) the projection is hours per receipt. The
    verdict of a group (`RECEIPTS_PER_PASS` = 8) is settled only after all of it, so eight such
    receipts (the node may name one trace from many receipts) outlast the 1-day challenge window:
    no challenge, no slash, and meanwhile the whole validator is frozen (no reveal, vote or
    settlement, no other node's batch checked).

    Root cause: validator/supernet/validator/llm_check.py `_past_stop_string` (the linear U+FFFD
    scan, each step ``any(s in text for s in stop_strings)``), fed an unbounded
    ``LLMCall.stop_strings`` (sdk/supernet/sdk/formats/trace.py `Sampling.from_dag`), called on
    the event loop (validator/supernet/validator/verifier.py `Verifier._conclude`).
    Fix by design: a protocol bound on a call's stop strings (count and characters, the chat's 4 x
    64 or near it) enforced by the kernel's `LLMChat` and by the trace format / `check_tokens` as
    an ``llm.shape`` finding before any decode; and a scan that costs ``O(n)`` decodes of a
    window (as the node's `_StopWatcher`), off the event loop."""
    task_input = {"messages": [{"role": "user", "content": "Say hi."}], "max_new_tokens": 2}
    node = await make_node()
    honest, req, sig = await run_signed(node, ChatAgent, task_input)
    assert honest["status"] == "ok", honest.get("error")

    ids = list(scorer.tokenizer.encode("\u2014" + "=" * 40000))  # a UCS-2 character, then 64-char tokens

    def bait(stops: int) -> dict[str, Any]:
        trace = copy.deepcopy(honest)
        ev = _llm_event(trace)
        ev["output_ids"] = ids
        ev["logprobs"] = [0.0] * len(ids)
        ev["finish_reason"] = "length"
        ev["params"]["max_new_tokens"] = len(ids)
        ev["params"]["stop"] = ["\ufffd\ufffd"] * stops
        ev["text"] = scorer.decode(ids)
        trace["output"] = ev["text"]
        assert len(ids) + len(ev["prompt_ids"]) <= MAX_CONTEXT_TOKENS
        assert len(encode_dag(trace)) <= MAX_TRACE_BYTES
        return trace

    # control: one stop string (what an honest chat may record), the same 626 tokens
    verdict, one = await _max_loop_stall(verdict_of(store_client, scorer, bait(1), req, sig))
    assert not verdict.ok and one < 1.0, one  # faulty (the replay diverges); the loop kept running

    stops = 100
    trace = bait(stops)
    verdict, stall = await _max_loop_stall(verdict_of(store_client, scorer, trace, req, sig))
    assert not verdict.ok  # caught in the end: the stall comes first
    assert any("stop" in f.message and "more than 4" in f.message for f in verdict.findings), verdict.findings

    # what the caps allow: the rest of the 384 KiB in 7-byte needles, 2,047 output tokens
    per_needle = stall / stops
    room = MAX_TRACE_BYTES - len(encode_dag(trace)) - (MAX_CONTEXT_TOKENS - len(ids)) * 12
    at_cap = per_needle * (stops + room // 7) * (MAX_CONTEXT_TOKENS / len(ids)) ** 2
    assert stall < 1.0, (
        f"the event loop was held {stall:.1f} s by {stops} recorded stop strings over {len(ids)} "
        f"tokens (1 string: {one:.2f} s); at the protocol's caps ~{at_cap / 3600:.1f} h per receipt"
    )


# -- 2. numeric edge cases in a trace block --------------------------------------------------------


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_defence_a_non_finite_logprob_in_the_committed_block_is_a_trace_finding(value: float) -> None:
    """Tried: dag-cbor's data model has no NaN or infinity, but a node writes its block by hand: the
    recorded log-probability ``-0.5`` of the example trace's LLM call replaced in the encoded bytes
    by a NaN or an infinity (the CBOR float64 head ``0xfb``), so that a comparison with it is
    never true (a logprob check that reads ``abs(a - b) > tol`` would pass a NaN). Holds: the
    committed block is parsed by `parse_trace_block` (strict `number`: finite only), so the node's
    receipt gets a ``trace.malformed`` finding (`Verifier._stage`), never a scoring."""
    from supernet.sdk.formats.trace import example_dag
    from supernet.validator.trace_view import MalformedTrace, parse_trace_block

    raw = encode_dag(example_dag())
    honest = b"\xfb" + struct.pack(">d", -0.5)
    assert raw.count(honest) == 1
    parse_trace_block(raw)  # control: the example parses
    with pytest.raises(MalformedTrace, match=r"finite|dag-cbor"):
        parse_trace_block(raw.replace(honest, b"\xfb" + struct.pack(">d", value)))


async def test_defence_the_stop_strings_the_protocol_allows_cost_a_linear_scan_off_the_loop(
    make_node: Any,  # noqa: F811
    scorer: Any,  # noqa: F811
    store_client: Any,
) -> None:
    """Within the bound (4 stop strings, each holding U+FFFD: the scan of every proper prefix)
    and at the context's cap (the whole context of output tokens of 64 characters each), the
    validator's check of the call costs a window's decode per token, off the event loop: the
    loop is never held for long, and the verdict still finds the fabricated output."""
    task_input = {"messages": [{"role": "user", "content": "Say hi."}], "max_new_tokens": 2}
    node = await make_node()
    honest, req, sig = await run_signed(node, ChatAgent, task_input)
    assert honest["status"] == "ok", honest.get("error")
    trace = copy.deepcopy(honest)
    ev = _llm_event(trace)
    room = MAX_CONTEXT_TOKENS - len(ev["prompt_ids"])
    ids = list(scorer.tokenizer.encode("\u2014" + "=" * (64 * room)))[:room]
    ev["output_ids"] = ids
    ev["logprobs"] = [0.0] * len(ids)
    ev["finish_reason"] = "length"
    ev["params"]["max_new_tokens"] = len(ids)
    ev["params"]["stop"] = ["\ufffd\ufffd" + str(i) for i in range(MAX_STOP_STRINGS)]
    ev["text"] = scorer.decode(ids)
    trace["output"] = ev["text"]
    assert len(encode_dag(trace)) <= MAX_TRACE_BYTES
    verdict, stall = await _max_loop_stall(verdict_of(store_client, scorer, trace, req, sig))
    assert not verdict.ok
    assert stall < 0.5, f"the event loop was held {stall:.2f} s"


def test_defence_an_agent_cannot_ask_for_stop_strings_beyond_the_protocols_bound() -> None:
    """The bound is the SDK's `LLMChat`'s too, so an honest node never records a call a validator
    would read as malformed: an agent asking for more strings, or longer ones, gets an
    error from its own syscall (the replay raises the same one at the same call). (An empty string,
    which ends a call at its first token, stays allowed: an honest kernel ran and verified it.)"""
    chat = (Message("user", "hi"),)
    assert LLMChat(chat, stop=tuple("x" * MAX_STOP_CHARS for _ in range(MAX_STOP_STRINGS))).stop
    assert LLMChat(chat, stop=("",)).stop == ("",)
    for stop in (("x",) * (MAX_STOP_STRINGS + 1), ("x" * (MAX_STOP_CHARS + 1),)):
        with pytest.raises(ValueError, match="stop string"):
            LLMChat(chat, stop=stop)
    with pytest.raises(TypeError):
        LLMChat(chat, stop=["a list"])  # type: ignore[arg-type]
