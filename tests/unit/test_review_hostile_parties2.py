"""Adversarial review (second pass): hostile users and validators against an HONEST node.

Scope: (1) a malicious USER who wants an honest node challenged, slashed or working unpaid
through what it signs (messages, sampling parameters, stop strings, structured-output grammars,
tool arguments, payment timing); (2) a malicious VALIDATOR or minority coalition that wants to
win a challenge against an honest node, weigh more than its stake, time votes and reveals to
block a quorum, or take others' bonds. The availability-claim griefing of
tests/unit/test_review_hostile_parties.py is not repeated, nor the attacks the earlier reviews
list (framing through stop strings, seeds, near-ties, unicode, grammars' compile cost, budgets,
confirmations, sealed votes, re-challenges of a cleared leaf, voucher replay and withdrawal races).

Real parts: the node's own kernel (dispatcher, managers, built-in tools, embedded store) and the
real SmolLM2-135M engine where an LLM call matters; the validator's whole `Verifier` with its
`RegistryRunner` (the tool re-runs).

Found:

1. MEDIUM, FIXED (`test_defence_a_pure_tool_late_on_a_busy_validator_is_checked_again`):
   a validator's re-run of a pure local tool (``calculator``, ``json_query``, ``text``) runs
   under the tool's 2 s wall-clock timeout around ``asyncio.to_thread``, so the wait for a free
   worker of the validator's default executor (shared with its scoring, grammar walks, chain
   calls) counts against it. A re-run that times out there is reported as "could not be re-run
   here": a FINAL unverifiable verdict (not `OwnSide`, ``local`` False), recorded as checked and
   never looked at again; in a vote, the honest voter abstains. The node-side mirror was fixed
   (tests/unit/test_review_framing.py: a pure tool late on the node aborts the task); the
   validator side was left with the old rule. Who gains: a cheating node (a lied calculator
   result is accepted by every validator it keeps busy when its receipt is checked: it commits it
   among receipts that are expensive to score), and a minority coalition against an honest node
   (each honest voter whose re-run is late abstains, and a coalition of QUORUM_BPS of the stake
   decides the challenge alone). Fixed: a re-run that fails for the validator's moment (timeout,
   unavailable) is `OwnSide` (`tool_check._rerun`): a local failure, checked again while the
   window is open (and a voter re-checks at its next step).
2. LOW, FIXED (`test_defence_an_llm_calls_record_stays_within_the_trace_gate_bound`): the trace gate
   (`Dispatcher._llm`, `supernet.node.kernel.trace.llm_record_bound`) lets an LLM call run only if
   its "upper bound" still fits under MAX_TRACE_BYTES, but the bound leaves out the call's
   grammar (recorded in its params, up to MAX_GRAMMAR_BYTES = 32 KiB) and assumes tokens of at
   most 32 UTF-8 bytes (SmolLM2 has 47 longer ones, up to 81 bytes; a grammar makes the model
   emit them): measured, 18,380 bytes added against a bound of 6,351. A user whose task's trace
   is near the cap (memory or files read earlier in it)
   gets the whole call run, streamed to it, and the task then failed unbilled at `save_trace`:
   the honest node's work is unpaid. Fixed: the bound counts the call's grammar and stop strings
   and each token's text at the served vocabulary's longest token (`Tokenizer.max_token_bytes`).

Checked and holding (read, or tried in a probe; no separate test):

* TaskManager's vote weights: a sealed vote weighs ``min(sealed stake, stake at reveal)``; the
  challenger's weight is its stake at the challenge and stays in ``fraudStake`` if it unbonds,
  but that stake is locked to the vote's end and cannot vote again under another address; the
  quorum base is snapshotted at the challenge's second; no sequence of deregister / re-register
  / addStake / requestUnbond counts one ether twice in a tally.
* Bonds and pools: ``_unopened`` burns what a sealed-but-unopened vote posted, losing votes fund
  the winners' pool, a revealed vote of weight 0 gets its bond back and no share; a decoy returns
  every sealed bond. Nothing a voter or the challenger does reaches another voter's bond.
* Redemption riding on a commit (`Payments.settle` inside ``commitBatch``): a user cannot make
  its own voucher revert there (a withdrawn channel pays 0, it does not revert), so it cannot block
  an honest node's commits and let its promises fall due.
* The finish rule being rewritten in the working tree (`types.finish_reason_of`,
  `llm_check._check_finish`): the kernel's watcher stops a call whose last budgeted token completes
  a stop string and records ``"stop"`` (`Scheduler._finish_stopped`), which is what the rule
  expects; a stop token on the last budgeted token is ``"stop"`` on both sides.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from supernet.node.kernel.dispatch import stop_text
from supernet.node.kernel.syscalls import TaskSpec
from supernet.node.kernel.trace import llm_record_bound
from supernet.sdk.store.cids import encode_dag

from tests.unit.test_review_framing import check, honest_run
from tests.unit.test_validator_attacks import USER
from tests.unit.test_validator_attacks3 import NoEmbedder

SMOLLM2 = Path.home() / ".cache" / "supernet" / "models" / "smollm2-135m"


async def _verdict_on_a_busy_validator(req: Any, task_id: str, trace: dict[str, Any], hold_s: float) -> Any:
    """The whole `Verifier`'s verdict while the validator's default executor (one worker here,
    standing in for a pool saturated by its scoring, grammar walks and chain calls) is held by
    other work for ``hold_s`` seconds."""
    loop = asyncio.get_running_loop()
    busy = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    release = threading.Event()
    loop.set_default_executor(busy)
    try:
        blocker = loop.run_in_executor(None, release.wait, hold_s)
        verdict = await check(req, task_id, trace)
        release.set()
        await blocker
    finally:
        release.set()
        busy.shutdown(wait=True)
        loop.set_default_executor(concurrent.futures.ThreadPoolExecutor())
    return verdict


async def test_defence_a_pure_tool_late_on_a_busy_validator_is_checked_again(tmp_path: Path) -> None:
    """Attack: a node lies in a pure tool's result (``calculator`` answers 41 to ``6 * 7``) and
    commits that receipt among receipts that keep the validators' thread pools busy (calls that
    are expensive to score, constrained calls whose grammar walk runs in a thread). The validator
    re-runs every `LOCAL_PURE_TOOLS` call through `ToolRegistry.call`, whose 2 s timeout wraps
    ``asyncio.to_thread``: the wait for a worker counts, the re-run times out, and `_rerun`
    returns "could not be re-run here" as a plain reason. `Verifier._conclude` makes that a FINAL
    unverifiable verdict (``local`` is set only for an `OwnSide` reason), `Validator._settle`
    records it as checked, and the lie is never looked at again. The same verdict makes an honest
    voter abstain on a challenge of an honest node's receipt (`Disputes._vote_one`), which a
    coalition of QUORUM_BPS of the stake then decides alone.

    Severity: MEDIUM. Who gains: a cheating node (its tool lies pass wherever it keeps validators
    busy); a minority coalition against an honest node (honest voters abstain).

    Fix by design: a pure tool's time must not be the validator's word either (the node-side fix,
    tests/unit/test_review_framing.py, made it never the node's): run the pure tools on the
    validator inline or in a pool of their own with the timeout started when the tool starts, and
    make an environmental failure of a re-run of a `LOCAL_PURE_TOOLS` call an `OwnSide` reason
    (``local``: checked again with back-off while the window is open, never recorded as checked).
    """
    task_input = {"tool": "calculator", "args": {"expression": "6 * 7"}}
    req, task_id, honest = await honest_run(tmp_path, task_input, "honest")
    assert honest["output"] == "42"
    lie = {**honest, "events": [{**honest["events"][0], "result": 41}], "output": "41"}

    # control: an idle validator catches the lie
    idle = await check(req, task_id, lie)
    assert not idle.ok and idle.unverifiable is None
    assert [(f.check.value, f.message) for f in idle.findings] == [
        ("tool", "tool calculator returned another result on re-run")
    ]

    busy = await _verdict_on_a_busy_validator(req, task_id, lie, hold_s=3.0)
    # the secure outcome: the lie is a finding, or at least a local failure checked again later
    assert busy.findings or busy.local, (
        f"a lied calculator result is a final 'unverifiable' on a busy validator: {busy.unverifiable!r} "
        f"(local={busy.local}): recorded as checked, never re-checked"
    )


# -- the trace gate's bound ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine() -> Any:
    from supernet.node.llm import LLMEngine

    return LLMEngine.load(SMOLLM2)


@pytest_asyncio.fixture
async def kernel(engine: Any, store_client: Any) -> AsyncIterator[Any]:
    from supernet.node.agents.chat import ChatAgent
    from supernet.node.agents.registry import AgentRegistry
    from supernet.node.kernel.kernel import Kernel

    agents = AgentRegistry()
    agents.register(ChatAgent)
    k = Kernel(engine, store_client, None, embedder=NoEmbedder(), agents=agents)
    await k.setup()
    yield k
    await k.stop()


@pytest.mark.model
@pytest.mark.skipif(not (SMOLLM2 / "model.safetensors").exists(), reason="SmolLM2 not cached")
async def test_defence_an_llm_calls_record_stays_within_the_trace_gate_bound(
    engine: Any, kernel: Any, store_client: Any
) -> None:
    """Attack: the kernel runs an LLM call only if the trace so far plus `llm_record_bound`
    (messages at 4 bytes a character, 5 bytes a prompt token, `LLM_RECORD_BYTES_PER_TOKEN` = 96
    a new token, 1 KiB of slack) fits MAX_TRACE_BYTES, "so the call runs only if its largest
    record still fits" (`Dispatcher._llm`). The record it then writes holds more than that bound:

    * the call's grammar, in its params, up to MAX_GRAMMAR_BYTES (32 KiB), counted nowhere;
    * each new token's text twice (in the call and in the task's output), assumed at most 32
      bytes, while SmolLM2 has 47 tokens longer than that (up to 81 bytes) and a grammar such as
      ``{"pattern": "^#{4000}$"}`` makes the model emit its 64-byte ``#`` token every step.

    Here a chat of 40 new tokens with a 12 KB schema (a ``description``) added 18,380 bytes to
    the trace against a bound of 6,351 (the grammar uncounted; 37 of the 40 tokens over 32 bytes,
    ~44 bytes a token above the allowance, which at a 2,000-token budget is ~88 KB more).
    A user sizes its task so that the trace before the call is within
    the bound of the cap (a task that read memory or files the user wrote earlier, whose witness
    fills the trace): the gate lets the call run, every token streams to the user, and
    `save_trace` then raises `TraceTooLargeError`: the task fails unbilled after the model's work.

    Severity: LOW (one call's tokens unpaid per task; the user needs a task whose trace is near
    the cap). Who gains: the user (streamed output for free); the node pays.

    Fix by design: count everything the record holds in the bound: the call's grammar and stop
    strings (``len(grammar.encode())``), and the output's text at the longest token of the served
    vocabulary (``max_token_bytes`` of the tokenizer, 81 for SmolLM2) twice, instead of a fixed 32.
    """
    from supernet.node.agents.chat import ChatAgent

    schema = {
        "type": "object",
        "description": "x" * 12_000,
        "properties": {"a": {"type": "string", "pattern": "^#{4000}$"}},
        "required": ["a"],
    }
    max_new = 40
    task_input = {
        "messages": [{"role": "user", "content": "#" * 320}],
        "max_new_tokens": max_new,
        "temperature": 0,
        "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}},
    }
    spec = TaskSpec(
        task_id="0x" + "ab" * 32, agent_id=ChatAgent.agent_id, input=task_input, user=USER.address, fee=100
    )
    outcome = await kernel.run_task(spec)
    assert outcome.status == "ok", outcome.error
    trace = await store_client.get_dag(outcome.trace_cid)
    [event] = [e for e in trace["events"] if e["kind"] == "llm"]
    assert len(event["output_ids"]) == max_new  # the model really ran its whole budget
    # what the gate measured before the call (`trace_size`: no events yet, an empty output) and
    # what the call added once it ended (its event and the task's output)
    before = len(encode_dag({**trace, "events": [], "output": ""}))
    added = len(encode_dag(trace)) - before
    params = event["params"]
    bound = llm_record_bound(
        event["messages"],
        event["prompt_ids"],
        params["max_new_tokens"],
        engine.tokenizer.max_token_bytes,
        params["grammar"],
        params.get("stop") or (),
    )
    long_tokens = sum(1 for i in event["output_ids"] if len(stop_text(engine.tokenizer, [i]).encode()) > 32)
    assert long_tokens >= max_new // 2, "the grammar made the model emit its long tokens"
    assert engine.tokenizer.max_token_bytes == 81  # SmolLM2's longest token
    assert added <= bound, (
        f"the call added {added} bytes to the trace, its gate's bound was {bound} "
        f"({long_tokens} tokens over 32 bytes; a {len(event['params']['grammar'])}-byte grammar uncounted)"
    )
