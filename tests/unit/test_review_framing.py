"""An adversarial review: can a user (alone, or with a validator) make an HONEST node commit a
receipt that validators flag as faulty, so the honest node gets slashed?

Each test runs the node's own kernel (dispatcher, managers, built-in tools, embedded store:
`tests.unit.test_validator_attacks3.stand_in_kernel`) on a task whose input the user controls,
then the whole `Verifier` (receipt, signatures, trace, agent replay, tool re-runs) on the trace
the node commits. ``test_known_limit_*``: the honest node's work is flagged (the hole is open;
the docstring says who profits and the fix). ``test_defence_*``: node and validator agree, the
honest receipt verifies clean.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from pathlib import Path
from typing import Any

import pytest
from supernet.node.agents.base import Agent
from supernet.node.agents.context import AgentContext
from supernet.node.kernel import tools as tools_module
from supernet.node.kernel.access import NodePolicy
from supernet.node.kernel.errors import KernelError
from supernet.node.kernel.kernel import Kernel, KernelConfig
from supernet.node.kernel.syscalls import TaskSpec

from tests.unit.test_validator_attacks import USER, DictStore, registry, signed_task, verify
from tests.unit.test_validator_attacks3 import FakeEngine, NoEmbedder, stand_in_kernel


class Tooler(Agent):
    """Calls the built-in tool the input names with the input's arguments; an error becomes the
    answer's text (as ReAct's observations do)."""

    agent_id = "tooler"
    description = "Calls one built-in tool and reports its result or error."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        try:
            return repr(await ctx.tools.call(str(input["tool"]), dict(input["args"])))
        except (KernelError, ValueError) as exc:
            return f"Error: {type(exc).__name__}: {exc}"


AGENTS: tuple[type[Agent], ...] = (Tooler,)


def clean(verdict: Any) -> bool:
    return verdict.ok and verdict.findings == () and verdict.unverifiable is None


def profile_hash(agent: type[Agent]) -> str:
    """The ``agentHash`` an honest `stand_in_kernel` (default policy) asks its users to sign."""
    kernel = Kernel(FakeEngine(), None, KernelConfig(node_policy=NodePolicy()), agents=registry(AGENTS),
                    embedder=NoEmbedder())  # fmt: skip
    return kernel.profile(agent.agent_id).hash()


async def honest_run(tmp_path: Path, task_input: Any, name: str = "store") -> tuple[Any, str, dict[str, Any]]:
    """The user's signed request for `Tooler` on ``task_input``, its task id, and the trace the
    node's own kernel records for it (what an honest node commits)."""
    req, task_id = signed_task(Tooler, task_input, profile_hash(Tooler))
    async with stand_in_kernel(tmp_path / name, AGENTS) as kernel:
        spec = TaskSpec(task_id=task_id, agent_id="tooler", input=task_input, user=USER.address, fee=100)
        outcome = await kernel.run_task(spec)
    trace: dict[str, Any] = outcome.trace
    return req, task_id, trace


async def check(req: Any, task_id: str, trace: dict[str, Any]) -> Any:
    return await verify(DictStore(), req, task_id, trace, agents=AGENTS)


# -- known limits ------------------------------------------------------------------------------------


async def test_defence_a_pure_tool_late_under_load_ends_the_task_without_a_receipt(tmp_path: Path) -> None:
    """Attack: the pure local tools (``calculator``, ``json_query``, ``text``) run under a
    wall-clock timeout (2 s, `ToolRegistry.call`: ``asyncio.timeout`` around
    ``asyncio.to_thread``), and the wait for a free worker of the event loop's default executor
    counts against it. That pool (min(32, cores + 4) threads: 6 on a 2-core node) is shared with
    the node's other blocking work (chain calls and receipt waits in `service/chain.py`, llguidance
    tokenizer builds, `engine.ascore`, other tasks' tool calls). A user floods the node with tasks
    (or just times one when the node commits batches): the honest node's calculator call times out,
    and the kernel records ``ToolTimeoutError`` as the call's answer. `tool_check.check_tools`
    re-runs every `LOCAL_PURE_TOOLS` call whatever the node recorded (to stop a node dropping
    calls it dislikes as "timed out"), gets a result on the idle validator, and reports "error on
    one side only": a TOOL finding, a challenge, the node's stake slashed.

    Who profits: the challenging validator (the bond and the slash), a user colluding with it (the
    fee refunded), a competing node (the victim's reputation). Impact: any honest node under load
    is slashable on any task that calls a pure tool; the user needs no special input.

    Here the node's default executor is busy (one worker, held 2.5 s by other work, standing in for
    a node's pool saturated by its other jobs) while a task calls ``calculator``; the node's own
    kernel records a timeout; the whole verifier flags it.

    Fix (design): a pure local tool's time must not be the node's word in a trace. Either run the
    pure tools inline on the event loop (they are bounded to microseconds: `calculator` limits,
    `json_query` / `text` on inputs of bounded size) or in a dedicated pool, with the timeout
    started when the tool actually starts; and, when one still times out on the node, end the
    task without a receipt (`TaskAbort`, as for an engine failure) instead of recording
    ``ToolTimeoutError``: a timeout of a pure tool is then never in an honest trace, and the
    validator's rule (a recorded timeout of a pure tool is a fault) becomes sound.

    Defence (the second part of that fix): `Dispatcher._tool` never records a timeout of one of
    `LOCAL_PURE_TOOLS`; the task is aborted (`TaskAbort`): failed, no receipt, not billed, so there
    is nothing to challenge. The validator's rule is unchanged, and now only a dishonest node's
    trace can hold such a timeout (pinned by the verdict on the timeout recorded by hand below).
    The first part since too: synchronous tools run in threads of their own
    (`tools._TOOL_THREADS`), so a busy default executor no longer delays them (a validator's
    re-runs timed out the same way under its scoring: tests/unit/test_review_hostile_parties2.py)."""
    task_input = {"tool": "calculator", "args": {"expression": "6 * 7"}}
    _, task_id = signed_task(Tooler, task_input, profile_hash(Tooler))
    loop = asyncio.get_running_loop()

    async def run_while_busy(pool: concurrent.futures.ThreadPoolExecutor, name: str) -> Any:
        release = threading.Event()
        try:
            async with stand_in_kernel(tmp_path / name, AGENTS) as kernel:
                blocker = loop.run_in_executor(pool, release.wait, 2.5)  # other work holds the pool
                spec = TaskSpec(
                    task_id=task_id, agent_id="tooler", input=task_input, user=USER.address, fee=100
                )
                outcome = await kernel.run_task(spec)
            release.set()
            await blocker
        finally:
            release.set()
        return outcome

    # the first part of the fix: tools run in threads of their own, so the default executor's
    # being busy no longer delays them (the call answers at once)
    busy = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    loop.set_default_executor(busy)
    try:
        unaffected = await run_while_busy(busy, "store-default")
    finally:
        busy.shutdown(wait=True)
        loop.set_default_executor(concurrent.futures.ThreadPoolExecutor())
    assert unaffected.status == "ok" and unaffected.trace["output"] == "42", unaffected.error
    # the second part: where a pure tool is late all the same (here its own pool is held), the
    # task ends without a receipt rather than with a recorded timeout
    held = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    saved, tools_module._TOOL_THREADS = tools_module._TOOL_THREADS, held
    try:
        outcome = await run_while_busy(held, "store-tools")
    finally:
        tools_module._TOOL_THREADS = saved
        held.shutdown(wait=True)
    honest: dict[str, Any] = outcome.trace
    assert outcome.status == "error" and "TaskAbort" in (outcome.error or ""), outcome.error
    assert "timed out" in (outcome.error or "") and "without a receipt" in (outcome.error or "")
    assert [e["kind"] for e in honest["events"]] == []  # no timeout recorded: nothing to accuse
    # what the node now never commits: the same call with the timeout recorded, the old trace
    req3, task_id3, forged = await honest_run(tmp_path, task_input, "forged")
    forged["events"][0] = {**forged["events"][0], "result": None, "error": "ToolTimeoutError: late"}
    forged["output"] = "Error: ToolTimeoutError: late"
    verdict = await check(req3, task_id3, forged)
    assert not verdict.ok and verdict.unverifiable is None
    assert [(f.check.value, f.message) for f in verdict.findings] == [
        ("tool", "tool calculator: error on one side only")
    ]
    assert verdict.findings[0].expected == 42  # the idle validator's re-run
    # control: the same task on an idle node runs and verifies clean
    req2, task_id2, idle = await honest_run(tmp_path, task_input, "idle")
    assert idle["output"] == "42" and clean(await check(req2, task_id2, idle))


# -- defences ----------------------------------------------------------------------------------------

EDGE_CALLS = [
    # calculator: errors the calculator words itself, the same on every side
    ("calculator", {"expression": "1" + "0" * 400}),  # an integer literal past float range
    ("calculator", {"expression": "1e400"}),  # a float literal that parses to inf
    ("calculator", {"expression": "2 ** 70"}),  # an integer past 64 bits: returned as a float
    ("calculator", {"expression": "(10 ** 100) ** 999"}),  # huge, refused after the fact
    ("calculator", {"expression": "round(2.675, 2) + sin(1e22)"}),  # float edge cases (same libm)
    ("calculator", {"expression": "1/0"}),
    ("calculator", {"expression": "__import__('os')"}),
    ("calculator", {"expression": "9" * 501}),  # over the length bound
    ("calculator", {"expression": "\u0661 + 1"}),  # an Arabic-Indic digit: Python's parser takes it
    # json_query: NaN / Infinity (Python's json takes them), huge ints, deep nesting, odd keys
    ("json_query", {"json": '{"a": NaN, "b": [Infinity, -Infinity]}'}),
    ("json_query", {"json": '{"a": ' + "9" * 30 + "}", "path": "a"}),  # past 64 bits: not recordable
    ("json_query", {"json": "[" * 3000 + "]" * 3000}),  # deep nesting
    ("json_query", {"json": '{"b": 1, "aa": 2, "\u00e9": 3, "": 4}'}),  # dag-cbor key order
    ("json_query", {"json": '{"a": 1, "a": 2}', "path": "a"}),  # a repeated key: the last wins
    ("json_query", {"json": '"\\ud800"'}),  # a lone surrogate: not recordable
    ("json_query", {"json": "1.0"}),  # a float that is an integer
    ("json_query", {"json": '{"x": [1, 2]}', "path": "x[-1]"}),
    ("json_query", {"json": "{bad"}),
    # text: unicode case mappings and grapheme-splitting reversal
    ("text", {"text": "stra\u00dfe \u0130 \ufb03 e\u0301", "op": "upper"}),
    ("text", {"text": "\U0001f469\u200d\U0001f4bb a\u0301", "op": "reverse"}),
    ("text", {"text": "a\u00a0b\u2003c\u200bd", "op": "words"}),
    ("text", {"text": "aaaa", "op": "count", "needle": ""}),
    # bad arguments: jsonschema's message quotes the user's value, the same on the re-run
    ("calculator", {"expression": 12345}),
    ("text", {"text": "x", "op": "shout"}),
]


async def test_defence_pure_tools_on_edge_inputs_agree(tmp_path: Path) -> None:
    """Attack: a user picks arguments of a pure tool where the node's run and the validator's
    re-run could differ (numbers past float or 64-bit range, NaN / Infinity in JSON, deep
    nesting, repeated keys, lone surrogates, unicode case mappings, a schema violation whose
    message quotes the value), hoping an honest node's recorded result or error is not the
    re-run's. Defence: one `ToolRegistry.call` on both sides, results as recorded
    (`recorded_result`: dag-cbor round trip, unrecordable results a `ToolError` on both sides),
    error texts the tools' own: every honest trace verifies clean (same Python and libm assumed;
    see the report on cross-platform float functions)."""
    flagged = []
    for i, (tool, args) in enumerate(EDGE_CALLS):
        task_input = {"tool": tool, "args": args}
        req, task_id, honest = await honest_run(tmp_path, task_input, f"s{i}")
        verdict = await check(req, task_id, honest)
        if not clean(verdict):
            flagged.append((tool, str(args)[:60], verdict.findings, verdict.unverifiable))
    assert flagged == []


def test_defence_json_nested_past_the_limit_is_refused_before_parsing() -> None:
    """Attack (a user against a node, or a node against every validator that re-runs its trace):
    a `json_query` call on an array nested ~99,000 deep. The process's recursion limit is raised by
    a dependency, so ``json.loads`` crashed the interpreter (a segmentation fault, not an error).
    Defence: `json_query` measures the nesting first (brackets inside strings not counted) and
    refuses past `MAX_JSON_DEPTH`, the same error on every side; at the limit it still parses."""
    from supernet.node.kernel.builtin_tools import MAX_JSON_DEPTH, _json_query, _nesting
    from supernet.node.kernel.errors import ToolError

    deep = "[" * 99_000 + "]" * 99_000
    with pytest.raises(ToolError, match="nests deeper"):
        _json_query({"json": deep})
    at_limit = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert _nesting(at_limit) == MAX_JSON_DEPTH and _json_query({"json": at_limit}) is not None
    assert _nesting('{"a": "[[[[\\"]]", "b": [1]}') == 2  # brackets in strings are text
