"""Adversarial review from the USER's side: a rational or malicious user (alone, or with a validator
or another node) who wants free work, a refund for work that was done, or an HONEST node slashed,
fined or unpaid, through what it signs (the task input's values and shape, sampling parameters,
budgets) and when it pays or withdraws.

Read for it: README "Design", docs/protocol.md, docs/validator.md, docs/agents.md, the SDK client,
the node's task path (`routes_tasks`, `auth`, `worker`, `redeemer`, `runner`), the built-in agents
(`supernet.node.agents`) and the validator's checks. The earlier reviews' attacks are not repeated
(framing through stop strings, seeds, near-ties, grammars, unicode, budgets, confirmations,
promises, claim deposits, encodings, withdrawal races: see their module docstrings).

Real parts: the node's own `Kernel` on the real SmolLM2-135M engine and embedded store
(`tests/kernel_fixtures.py` ``make_kernel``), the built-in agents, the RFC 8785 / dag-cbor code the
node and validators share. No fakes.

Found:

1. HIGH — one signed task freezes the whole node process (and so gets it slashed).
   `ReactAgent` takes ``max_steps`` from the signed input (schema: an integer >= 1, no maximum;
   RFC 8785 admits up to 2**53 - 1) and, after every step whose reply names a tool, plans the
   observation with `react.observation_bytes(used, max_steps - done)`, whose
   ``while shares > 1 and ...: shares -= 1`` (node/supernet/node/agents/react.py, in
   `observation_bytes`) counts down from ``max_steps`` one by one: ~0.1 us a turn, so 2**53 turns are
   ~28 years. It is plain synchronous Python inside the agent's coroutine, on the event loop that
   also runs the node's API, batcher, redeemer and availability responder (`NodeService.run_forever`
   gathers them in one loop). From that step on the node answers no request, commits no batch
   (every receipt already promised falls due: `OmissionManager` claims by every other user, each a
   `SLASH_AMOUNT`), answers no availability or manifest claim, and a restart re-runs the same task
   (`TaskWorker.resume`, its deadline still ahead) and freezes again. The user pays one task fee
   (never billed, the task never ends) for a node-wide stall; the question is any that makes the
   model name a tool (`QUESTION`; any reply holding an ``Action:`` line that
   mentions a tool name will do, readable arguments or not). A node that somehow finished
   such a task would freeze every validator replaying it the same way.
   `test_defence_react_max_steps_freezes_the_nodes_event_loop` (the safe behaviour asserted: the
   loop is never blocked for more than 3 s and the task ends; before the fix a watchdog had to
   break the loop after 3 s of silence).
   FIXED: ``max_steps`` has a maximum in the schema (`react.MAX_STEPS`, 64: more steps than the
   context holds), refused at admission, and `observation_bytes` computes the share in closed form
   (equal to the countdown for every count it can run; a count of 2**53 takes microseconds).
   Known limit: agents' code still runs on the node's serving loop, so an *installed* agent (the
   operator's choice, its code hash signed by the user) with unbounded synchronous work stalls the
   node; the shipped agents have none that an input controls (each reviewed).
   Fix (by design): bound ``max_steps`` in the agent's input schema (the schema is refused at
   admission, 400, before any work) and compute the share in closed form, not by counting down;
   more generally, run agents' code off the node's serving loop (a worker thread or process with a
   wall-clock limit), so no agent can stall the node's duties.

Checked and holding:

- Key order of object inputs: JCS sorts keys by UTF-16 code units, dag-cbor by length then bytes,
  so the input a node parses and the input a validator decodes from the trace have different key
  orders; the kernel hands the agent the recorded form on both sides (`as_recorded(normal_input)` in
  `Kernel.run_task`), so an agent iterating an input dict replays the same prompt
  (`test_defence_an_agent_sees_the_inputs_keys_in_the_recorded_order_on_both_sides`).
- Recursion limits: a chat input whose ``tool_calls[].function.arguments`` string is a JSON array
  nested as deep as the 16 KiB input allows (~8,000) is parsed by `tool_calls._arguments` on the
  node and again in every replay; both processes import eth_account, whose py_ecc raises the
  recursion limit to 100,000, so neither raises (nor crashes) and the rendered prompt is the same
  from the admitted and the recorded input
  (`test_defence_deeply_nested_tool_call_arguments_render_the_same_from_the_recorded_input`).
- Inputs whose values differ between the signed and the stored form (``8.0`` vs ``8``, ``-0.0``,
  floats spelled as integers past 2**53): admission runs the normal form; a dict input's SQLite
  round trip (`NewTask.input_json`) keeps a string that spells JSON a string
  (`test_defence_a_string_spelling_json_is_stored_and_reread_as_the_string`).
- A withdrawal requested while a task runs (the node then holds a voucher the channel may no
  longer pay): bounded by the one-day ``WITHDRAWAL_DELAY`` against a task's confirmation waits
  (300 s x 64 tool calls x 4 per-user slots ~ 21 h); already documented in
  tests/unit/test_review_payments_many_nodes.py, not repeated.
- Batch slots a user could exhaust by a trickle of one-task batches: the node takes a new slot
  (22,100 gas) when every slot is held (`BatchSlots.pick`), never waits for one; no omission.
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from typing import Any

import pytest
from supernet.node.agents.chat import ChatAgent
from supernet.node.agents.react import MAX_STEPS, ReactAgent, observation_bytes
from supernet.node.agents.registry import AgentRegistry
from supernet.node.agents.tool_calls import render_messages
from supernet.node.kernel.syscalls import TaskSpec
from supernet.node.kernel.trace import as_recorded
from supernet.node.service.models import NewTask
from supernet.sdk.chain.receipts import canonical_input, normal_input

ALICE = "0x" + "a1" * 20
QUESTION = "Which tool should be used to multiply numbers? Answer with one line starting with 'Action:'."
"""A question greedy SmolLM2 answers with ``Action: one tool name from [calculator, ...]``, which
`react_parse.match_tool` reads as ``calculator`` (a name containing a tool's): a step with an action,
so the agent plans the next observation (`observation_bytes`) even though the arguments are
unreadable (the error is the observation)."""
MAX_SAFE = 2**53 - 1
"""The largest integer RFC 8785 (and so admission, `canonical_input`) takes."""


class _LoopStalled(Exception):
    """Raised into the event loop's thread by the watchdog when the loop went silent."""


def _registry() -> AgentRegistry:
    r = AgentRegistry()
    for cls in (ChatAgent, ReactAgent):
        r.register(cls)
    return r


@pytest.mark.model
@pytest.mark.timeout(120)
async def test_defence_react_max_steps_freezes_the_nodes_event_loop(make_kernel: Any) -> None:
    """The attack of finding 1, on the node's real kernel and model: a react task with
    ``max_steps`` = 2**53 - 1 (a value admission takes: it has an RFC 8785 form and matches the
    agent's schema) and a question the model answers with a tool call. A heartbeat runs on the
    kernel's event loop (the loop a node's API, batcher and availability responder share); a
    watchdog thread breaks the loop (SIGUSR1 -> an exception in the loop's thread) once the
    heartbeat has been silent for 3 s, so that the test ends. Safe: the loop never goes silent
    that long and the task ends (refused, or run with a bounded number of steps)."""
    from supernet.sdk.agents.input_schema import input_problem

    task_input = {"question": QUESTION, "max_steps": MAX_SAFE}
    canonical_input(task_input)  # admission's first check: it has a canonical form
    assert normal_input(task_input) == task_input
    assert input_problem(ReactAgent.input_schema, task_input) is not None, "refused at admission (400)"
    started = time.perf_counter()  # and the share is computed in closed form, whatever the count
    assert observation_bytes(300, MAX_SAFE) == observation_bytes(300, MAX_STEPS)
    assert time.perf_counter() - started < 0.5
    task_input = {"question": QUESTION, "max_steps": MAX_STEPS}  # the most the schema admits
    assert input_problem(ReactAgent.input_schema, task_input) is None

    kernel = await make_kernel(agents=_registry())
    loop = asyncio.get_running_loop()
    last_beat = [time.monotonic()]
    worst_gap = [0.0]
    stalled = [False]
    where: list[str] = []
    done = threading.Event()

    async def heartbeat() -> None:
        while True:
            now = time.monotonic()
            worst_gap[0] = max(worst_gap[0], now - last_beat[0])
            last_beat[0] = now
            await asyncio.sleep(0.05)

    def on_usr1(signum: int, frame: Any) -> None:
        stalled[0] = True
        where.append(frame.f_code.co_name if frame is not None else "?")
        raise _LoopStalled("the event loop was blocked for 3 s")

    main = threading.main_thread().ident
    assert main is not None and threading.get_ident() == main, "the loop runs in the main thread"

    def watchdog() -> None:
        while not done.wait(0.2):
            if time.monotonic() - last_beat[0] > 3.0 and not stalled[0]:
                signal.pthread_kill(main, signal.SIGUSR1)

    previous = signal.signal(signal.SIGUSR1, on_usr1)
    beat = loop.create_task(heartbeat())
    dog = threading.Thread(target=watchdog, daemon=True)
    dog.start()
    started = time.monotonic()
    try:
        outcome = await asyncio.wait_for(
            kernel.run_task(TaskSpec("0x" + "5e" * 32, "react", task_input, user=ALICE)), 60
        )
    finally:
        done.set()
        dog.join()
        beat.cancel()
        signal.signal(signal.SIGUSR1, previous)
    elapsed = time.monotonic() - started
    assert not stalled[0], (
        f"one signed task blocked the node's event loop (API, batcher, claim answers) for over 3 s "
        f"(worst heartbeat gap {worst_gap[0]:.1f} s; the watchdog broke it in {where}: "
        f"{outcome.status} {outcome.error})"
    )
    assert elapsed < 30 and worst_gap[0] < 3.0
    calls = [e for e in outcome.trace["events"] if e["kind"] == "llm"]
    assert len(calls) >= 2, f"control: the reply named a tool and a next step ran ({outcome.status})"


def test_defence_an_agent_sees_the_inputs_keys_in_the_recorded_order_on_both_sides() -> None:
    """Attack: an input object whose keys sort differently under RFC 8785 (UTF-16 code units: "aa"
    before "b") and dag-cbor (length first: "b" before "aa"). The node parses the signed JSON; a
    validator decodes the trace. An agent that walks the dict (``", ".join(input)``) would write
    another prompt in the replay, and the honest node's trace would diverge. Defence: the kernel runs
    the agent on ``as_recorded(normal_input(x))`` (`Kernel.run_task`), the order the replay decodes."""
    signed = {"aa": 1, "b": 2, "\u00e9": 3, "z\U0001f600": 4, "zz": 5}
    parsed = json.loads(canonical_input(signed))
    node_sees = as_recorded(normal_input(signed))
    replay_sees = as_recorded(node_sees)  # what a validator decodes from the trace block
    assert list(parsed) != list(node_sees), "the two orders do differ"
    assert list(node_sees) == list(replay_sees)


def test_defence_deeply_nested_tool_call_arguments_render_the_same_from_the_recorded_input() -> None:
    """Attack: a chat input (16 KiB, the node's limit) whose assistant message carries a tool call
    with ``arguments`` a JSON array nested ~7,900 deep, parsed by `tool_calls._arguments` with
    ``json.loads`` on the node and in every replay: a recursion limit that differed between the two
    processes would make one side raise and the honest node's trace diverge. Both import
    eth_account (py_ecc sets 100,000), the parse succeeds on both, and the prompt rendered from the
    recorded input equals the node's."""
    depth = 7_900
    args = "[" * depth + "]" * depth
    task_input = {
        "messages": [
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"function": {"name": "f", "arguments": args}}],
            },
            {"role": "user", "content": "go on"},
        ]
    }
    assert len(canonical_input(task_input)) <= 16 * 1024
    node_input = as_recorded(normal_input(task_input))
    replay_input = as_recorded(node_input)
    node_messages = render_messages(node_input["messages"], None, None)
    assert node_messages == render_messages(replay_input["messages"], None, None)
    assert node_messages[1]["content"].startswith('{"name":"f","arguments":[[[')


def test_defence_a_string_spelling_json_is_stored_and_reread_as_the_string() -> None:
    """Attack: a string input that spells an object (``'{"a": 1}'``), stored by the node between
    admission and the run. Were it stored raw and parsed back, the agent would run the object while
    the user signed the string (a trace whose input is not the signed value: the honest node
    accused). The node stores JSON of the value (`NewTask.input_json`) and reads it back typed."""
    for value in ('{"a": 1}', "8", "null", "\u2028\x00"):
        task = NewTask(
            id="0x" + "11" * 32,
            user=ALICE,
            nonce=1,
            model_id="0x" + "22" * 32,
            agent="chat",
            agent_hash="0x" + "33" * 32,
            input=value,
            input_hash="0x" + "44" * 32,
            max_fee=1,
            fee=1,
            deadline=1,
            signature="0x",
            voucher_amount=1,
            voucher_signature="0x",
        )
        assert json.loads(task.input_json) == value
