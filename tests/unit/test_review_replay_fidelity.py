"""Adversarial review of replay fidelity: does an HONEST agent (one that keeps the determinism
contract of docs/agents.md) see on a validator's replay (`supernet.node.kernel.replay`, through
`supernet.validator.replay_check` inside the whole `Verifier`) exactly what it saw on the node?
Any difference lets a user pick an input that makes an honest node's receipt a REPLAY finding.

Every end-to-end test runs the node's own kernel (dispatcher, managers, built-in tools, embedded
store: `tests.unit.test_validator_attacks3.stand_in_kernel`) on a signed task and then the whole
`Verifier` on the trace it commits. The LLM tests drive the node's `Dispatcher` with a stand-in
engine and tokenizer (the engine is not under review: what matters is what the kernel records and
hands the agent around it) and replay its trace with the same tokenizer.

Found, all fixed (each now a ``test_defence_*`` that failed before the fix):

* the task input reached the agent in RFC 8785 key order on the node (`normal_input`) and in
  dag-cbor key order (shortest key first) in the replay (the decoded trace): an agent that
  serialises or iterates its input answered otherwise. Now the kernel hands the agent (and a
  child) its input as recorded (`as_recorded`);
* a tool's error reached the agent with its cause chained on the node (documented), without it in
  the replay (`_rebuild` makes a fresh exception from the recorded text). Now every syscall
  failure reaches the agent as rebuilt from its record, on the node too (`errors.as_raised`);
* an LLM call whose ``max_new_tokens`` was a float, and a memory search whose ``k`` was a float on
  an empty memory, ran on the node and failed only when their event was recorded: the trace held a
  failure the replay refuses to reproduce (and the model work was done for nothing). Now the
  syscalls check their counts where the agent builds them (`LLMChat`, `MemorySearch`: a
  ``TypeError``, alike on both sides, before any work);
* the replay's wall-clock bound (120 s) was a fifth of the node's task bound (600 s), while a
  replay that runs out of time is a divergence. The bound is now twice the node's
  (`REPLAY_TIMEOUT_S`); a timeout stays a divergence (not "unverifiable", which would let a node
  fake traces whose replays run long): past twice the node's bound the agent could not have ended
  on the node.

Checked and holding (``test_defence_*``): tool results, file listings and memory hits in dag-cbor
order on both sides; a child agent's input in one form on both sides; a budget refusal at the same
call; a tool's error type and words; a missing file's error.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from supernet.node.agents.base import Agent
from supernet.node.agents.context import AgentContext
from supernet.node.agents.registry import AgentInfo
from supernet.node.kernel.access import AccessManager, Capabilities, NodePolicy
from supernet.node.kernel.agent_run import run_agent, task_context, task_seed
from supernet.node.kernel.dispatch import Dispatcher, TaskState
from supernet.node.kernel.errors import BudgetExceededError, ToolError
from supernet.node.kernel.kernel import Kernel, KernelConfig
from supernet.node.kernel.replay import replay
from supernet.node.kernel.syscalls import AgentCallError, GenerationOutcome, TaskSpec
from supernet.node.kernel.tools import ToolRegistry
from supernet.node.kernel.trace import TraceRecorder
from supernet.node.llm import SamplingParams
from supernet.sdk.store.cids import decode_dag, encode_dag

from tests.unit.test_review_encodings import _Tokenizer
from tests.unit.test_validator_attacks import MODEL_ID, USER, DictStore, signed_task, verify
from tests.unit.test_validator_attacks3 import FakeEngine, NoEmbedder, clean, stand_in_kernel

pytestmark = pytest.mark.timeout(120)


# -- honest agents ---------------------------------------------------------------------------------


class InputEcho(Agent):
    """Answers with its input as JSON (``json.dumps``: the keys in the order it was handed them),
    as an agent that puts its input into a prompt or a report does."""

    agent_id = "input-echo"
    description = "Echoes its input as JSON."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        return json.dumps(input)


class CauseCalc(Agent):
    """Evaluates ``input["expression"]``; a failed evaluation is explained by the error the tool
    raised (a `ToolError`, the tool's own error chained: `ToolRegistry.call`)."""

    agent_id = "cause-calc"
    description = "Arithmetic, explaining failures."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        try:
            return str(await ctx.tools.call("calculator", {"expression": input["expression"]}))
        except ToolError as exc:
            root = exc.__cause__ or exc.__context__  # (the context too: a review of the fix)
            why = "a bad expression" if isinstance(root, ValueError) else "the tool"
            return f"cannot evaluate: {why}"


class FloatK(Agent):
    """Recalls about half as many memories as the question has words (a float ``k``); a failed
    search is answered as 'nothing recalled'."""

    agent_id = "float-k"
    description = "Recalls memories."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        question = str(input["question"])
        try:
            hits = await ctx.memory.search(question, k=max(1, len(question.split()) / 2))
        except ValueError:
            return "nothing recalled"
        return "; ".join(h.text for h in hits) or "nothing recalled"


class Slow(Agent):
    """Does ``input["work"]`` rounds of its own (CPU) work, then answers: no syscall at all."""

    agent_id = "slow"
    description = "Works a while."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        total = 0
        for i in range(int(input["work"])):
            total = (total * 31 + i) % 1_000_003
            if i % 1000 == 0:
                await asyncio.sleep(0)  # a cooperative agent lets the loop run (no clock read)
        return str(total)


class ToolEcho(Agent):
    """Answers with a built-in tool's result as JSON (``json_query`` of ``input["json"]``)."""

    agent_id = "tool-echo"
    description = "Echoes a JSON query."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        result = await ctx.tools.call("json_query", {"json": input["json"], "path": input["path"]})
        return json.dumps(result)


class FilesAndMemoryEcho(Agent):
    """Writes files and a memory with metadata, then answers with the listing and the hits' metadata
    as JSON (key order as handed)."""

    agent_id = "files-memory-echo"
    description = "Lists its files and memories."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        for path in ("bb.txt", "a.txt", "ccc/d.txt"):
            await ctx.storage.put(path, path)
        await ctx.memory.add("a fact", {"zz": 1, "a": {"yy": 2, "b": 3}})
        listing = await ctx.storage.list()
        hits = await ctx.memory.search("fact", k=1)
        return json.dumps({"files": listing, "meta": [h.metadata for h in hits]})


class ChildEcho(Agent):
    """Answers with its input as JSON (called by `ParentOfEcho`)."""

    agent_id = "child-echo"
    description = "Echoes its input as JSON (a child)."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        return json.dumps(input)


class ParentOfEcho(Agent):
    """Hands ``child-echo`` a JSON object it builds itself."""

    agent_id = "parent-of-echo"

    calls_agents = ("child-echo",)
    description = "Calls child-echo."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        return await ctx.agents.call("child-echo", {"b": 1, "aa": [{"y": 1, "xx": 2}], "é": 0})


class FailingChild(Agent):
    """Raises (called by `ParentCatches`)."""

    agent_id = "failing-child"
    description = "Fails (a child)."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        raise RuntimeError("the child gives up")


class ParentCatches(Agent):
    """Calls ``failing-child`` and answers with what it caught: the API's `AgentCallError`, whose
    docs say the caller may catch it, and a schema refusal as the `ValueError` it is."""

    agent_id = "parent-catches"

    calls_agents = ("failing-child",)
    description = "Calls failing-child."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        try:
            await ctx.agents.call("failing-child", "go")
        except AgentCallError as exc:
            return f"caught {type(exc).__name__}; context {exc.__context__!r}"
        return "not caught"


class BudgetProbe(Agent):
    """Calls the calculator until its budget is spent; answers with how many calls ran and the
    refusal's words."""

    agent_id = "budget-probe"
    description = "Spends its tool budget."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        done = 0
        while True:
            try:
                await ctx.tools.call("calculator", {"expression": f"{done} + 1"})
            except BudgetExceededError as exc:
                return f"{done}: {exc}"
            done += 1


class ErrorWords(Agent):
    """Answers with a failed tool call's error type and words, and a missing file's error."""

    agent_id = "error-words"
    description = "Reports errors."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        said = []
        try:
            await ctx.tools.call("calculator", {"expression": "1/0"})
        except ToolError as exc:
            said.append(f"{type(exc).__name__}|{exc}|{exc.args}")
        try:
            await ctx.storage.get("nope.txt")
        except FileNotFoundError as exc:
            said.append(f"{type(exc).__name__}|{exc}")
        return "\n".join(said)


MINE: tuple[type[Agent], ...] = (
    InputEcho, CauseCalc, FloatK, Slow, ToolEcho, FilesAndMemoryEcho, ChildEcho, ParentOfEcho,
    BudgetProbe, ErrorWords, FailingChild, ParentCatches,
)  # fmt: skip


# -- helpers ---------------------------------------------------------------------------------------


def listed_hash(agent: type[Agent], policy: NodePolicy | None = None) -> str:
    """The ``agentHash`` the node lists for ``agent`` (what its user signs)."""
    kernel = Kernel(
        FakeEngine(), None, KernelConfig(node_policy=policy or NodePolicy()), agents=_registry(),
        embedder=NoEmbedder(),
    )  # fmt: skip
    return kernel.profile(agent.agent_id).hash()


def _registry() -> Any:
    from tests.unit.test_validator_attacks import registry

    return registry(MINE)


class _FlatEmbedder:
    """A stand-in embedder (every text the same unit vector): the ranking is not under review here
    (a validator's search check re-embeds with the real model), what the agent is handed is."""

    name = "flat"
    dim = 4

    async def embed(self, texts: list[str]) -> Any:
        return np.full((len(texts), 4), 0.5, dtype=np.float32)


async def honest_run(
    tmp_path: Path,
    agent: type[Agent],
    task_input: Any,
    policy: NodePolicy | None = None,
    embedder: Any = None,
    status: str = "ok",
) -> tuple[Any, str, dict[str, Any]]:
    """The honest node's run of ``agent`` on ``task_input``, which ends with ``status``: the signed
    request, the task id and the trace as committed (its dag-cbor round trip: what validators read
    from the store)."""
    listed = listed_hash(agent, policy)
    req, task_id = signed_task(agent, task_input, listed)
    store = tmp_path / f"store-{agent.agent_id}"
    async with stand_in_kernel(store, MINE, policy=policy, embedder=embedder) as kernel:
        spec = TaskSpec(
            task_id=task_id, agent_id=agent.agent_id, input=task_input, user=USER.address, fee=100,
            agent_hash=listed,
        )  # fmt: skip
        outcome = await kernel.run_task(spec)
    assert outcome.status == status, outcome.error
    return req, task_id, decode_dag(encode_dag(dict(outcome.trace)))


async def verdict_of(tmp_path: Path, agent: type[Agent], task_input: Any) -> tuple[dict[str, Any], Any]:
    req, task_id, trace = await honest_run(tmp_path, agent, task_input)
    return trace, await verify(DictStore(), req, task_id, trace, agents=MINE)


def replay_findings(judgement: Any) -> list[str]:
    return [f.message for f in judgement.findings]


# -- the LLM stand-ins (the dispatcher is the node's) -----------------------------------------------


class _Engine:
    model_id = MODEL_ID
    device = "cpu"
    dtype = "float32"

    def __init__(self) -> None:
        self.tokenizer = _Tokenizer()


class _Scheduler:
    """Generates until ``len(output) >= max_new_tokens`` (the engine's finish test)."""

    def __init__(self) -> None:
        self.generated = 0

    async def generate(self, job: Any, on_token: Any) -> GenerationOutcome:
        out: list[int] = []
        while len(out) < job.params.max_new_tokens:
            out.append(5)
        self.generated += len(out)
        return GenerationOutcome(tuple(out), (-0.5,) * len(out), "length", None, 0)


async def node_llm_trace(agent: type[Agent], task_input: Any) -> tuple[dict[str, Any], _Scheduler]:
    """What the node's dispatcher records for ``agent`` on ``task_input`` (no tools, memory or
    files), as the committed trace document."""
    task_id = "0x" + "5a" * 32
    caps = Capabilities(
        frozenset(), f"{USER.address.lower()}/{agent.agent_id}", False, False, 4, 4096, 64, 4, 0
    )
    engine, sched = _Engine(), _Scheduler()
    spec = TaskSpec(task_id=task_id, agent_id=agent.agent_id, input=task_input, user=USER.address, fee=100)
    recorder = TraceRecorder(
        task_id, USER.address, 100, agent.agent_id, agent.code_hash(), MODEL_ID, task_input,
        task_context(task_seed(task_id), caps, (), (), engine),
    )  # fmt: skip
    info = AgentInfo(agent.agent_id, agent.code_hash(), agent.description, agent)
    st = TaskState(spec, info, caps, recorder, (), task_seed(task_id))
    dispatcher = Dispatcher(
        engine=engine, scheduler=sched, tools=ToolRegistry(), memory=None, storage=None,
        access=AccessManager(NodePolicy()), params_type=SamplingParams, live=True,
    )  # fmt: skip

    async def syscall(call: Any) -> Any:
        return await dispatcher.handle(st, call)

    ran = await run_agent(agent, task_id, task_input, syscall, (), 30.0)
    doc = recorder.build(ran.output, ran.status, ran.error)
    return decode_dag(encode_dag(doc)), sched


class HalfBudget(Agent):
    """Summarises ``input["text"]`` in at most half as many tokens as it has characters (a float
    budget); if the model call fails, answers with the text's first line instead."""

    agent_id = "half-budget"
    description = "Summarises."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        text = str(input["text"])
        try:
            reply = await ctx.llm.chat(
                [{"role": "user", "content": f"Summarise: {text}"}], max_new_tokens=len(text) / 2
            )
        except ValueError:
            return text.splitlines()[0]
        return reply.text


# -- found -----------------------------------------------------------------------------------------


async def test_defence_the_input_reaches_the_agent_in_one_key_order_on_both_sides(tmp_path: Path) -> None:
    """Attack (a user, alone): sign an object input whose keys sort differently in RFC 8785 (UTF-16
    order: ``"aa"`` before ``"b"``) and in dag-cbor (shortest key first: ``"b"`` before ``"aa"``).
    The node runs the agent on `normal_input` (the JCS bytes read back: RFC 8785 order), the trace
    stores the input as dag-cbor, and the validator's replay runs the agent on the decoded trace
    input (dag-cbor order). Any honest agent that serialises its input (``json.dumps`` into a prompt
    or an answer) or iterates over it answers otherwise in the replay: a REPLAY finding against the
    honest node, i.e. a slash on demand for the price of one task. The same class was closed for tool
    specs (`seen_spec`) and tool results (`as_recorded`), but not for the input itself.

    Fix (by design): hand every agent its input *as recorded*: `Kernel.submit` runs the agent on
    ``as_recorded(normal_input(input))`` (and `Dispatcher._agent_call` a child on
    ``as_recorded(normal_input(call.input))``), so the node and the replay give the very value the
    decoded trace holds, key order included. (Done.)"""
    trace, judgement = await verdict_of(tmp_path, InputEcho, {"b": 1, "aa": 2, "c": {"zz": 1, "y": 2}})
    assert trace["output"] == '{"b": 1, "c": {"y": 2, "zz": 1}, "aa": 2}'  # as recorded, on the node too
    assert list(trace["input"]) == ["b", "c", "aa"]  # dag-cbor order in the trace the replay reads
    assert clean(judgement), replay_findings(judgement)


async def test_defence_a_tool_errors_cause_is_not_seen_on_either_side(tmp_path: Path) -> None:
    """Attack (a user): send an expression the calculator refuses (``1/0``) to an agent that
    explains a tool failure by its cause. `ToolRegistry.call` documents that the tool's own error
    is chained to the `ToolError` it raises (``raise ToolError(...) from exc``), and the node hands
    the agent that very exception; the replay raises a fresh ``ToolError(message)`` rebuilt from
    the recorded ``"Type: message"`` (`replay._rebuild`), whose ``__cause__`` is None. The honest
    agent answers "a bad expression" on the node and "the tool" in the replay: a REPLAY finding.

    Fix (by design): what reaches the agent is the recorded failure on both sides: the dispatcher
    raises `replay._rebuild`'s exception of the recorded text (``from None``) instead of the live
    one, so nothing but the type and the words (both recorded) is observable. (Done, for every
    syscall's failure: `errors.as_raised`.)"""
    trace, judgement = await verdict_of(tmp_path, CauseCalc, {"expression": "1/0"})
    assert trace["output"] == "cannot evaluate: the tool"  # no cause on the node either
    assert clean(judgement), replay_findings(judgement)


async def test_defence_a_float_budget_is_refused_before_the_model_runs_alike_on_replay() -> None:
    """Attack (a user): a text whose length is odd makes an agent that asks for ``len(text) / 2``
    tokens pass a float ``max_new_tokens``. `LLMClient.chat` and every check before the engine
    accept it (``min()`` keeps the float, `SamplingParams` compares it), the model generates the
    whole budget, and only recording the call fails (`fields.integer`: a `FormatError`, a
    ValueError) after the work: recorded as an ``error`` event of the ``llm`` syscall. An agent that
    falls back on a failed call (catching, which the contract allows) answers, and the node commits a
    receipt; the replay's scheduler takes a recorded LLM failure as "an LLM call recorded as failed
    that no protocol rule refuses": a REPLAY finding against the honest node (and the model work
    was done for an error).

    Fix (by design): a syscall's arguments are read through the trace format *before* any work
    (the dispatcher builds the event's typed fields, e.g. ``Sampling.from_dag`` of the params, and
    refuses a call that does not fit as a `ValueError` the replay's dispatcher raises alike), so no
    syscall can fail at recording time. (Done where the agent builds the syscall: `LLMChat` refuses
    a count that is not an int with a ``TypeError``, before any syscall, on both sides.)"""
    doc, sched = await node_llm_trace(HalfBudget, {"text": "abcdefghijklmnopq"})  # 17 characters
    assert sched.generated == 0  # no model work for a call that cannot be recorded
    assert doc["status"] == "error" and "max_new_tokens must be an int" in doc["error"], doc
    assert doc["events"] == []  # no syscall was made
    result = await replay(doc, HalfBudget, _Tokenizer())
    assert result.divergences == [], [d.message for d in result.divergences]


async def test_defence_a_float_k_is_refused_before_the_search_alike_on_replay(tmp_path: Path) -> None:
    """Attack (a user): ask a memory agent a question with an odd number of words before it has any
    memory. The agent asks for ``k = words / 2`` (a float); on an empty memory the node's manager
    returns no hits without using ``k``, then recording the search fails (``k`` must be an integer:
    `FormatError`, a ValueError), recorded as an ``error`` of ``memory.search``. The agent answers
    "nothing recalled" and the node commits it; the replay refuses any recorded failure of a memory
    syscall ("a recorded failure of memory.search the replay does not give"): a REPLAY finding
    against the honest node. (With entries, the float ``k`` fails the manager's slice: the task
    ends without a receipt, so the outcome even depends on the user's memory.)

    Fix: as for the LLM budget, read the syscall's arguments through the format before the manager
    runs (``k`` an integer, refused alike on both sides). (Done: `MemorySearch` refuses it with a
    ``TypeError`` where the agent builds the call; this agent catches only ``ValueError``, so the
    task fails on the node, whatever the memory holds, and its replay fails the same way.)"""
    _, _, trace = await honest_run(tmp_path, FloatK, {"question": "what did I say"}, status="error")
    assert "k must be an int" in trace["error"], trace["error"]
    assert trace["events"] == []  # refused before the syscall: nothing ran, nothing recorded
    result = await replay(trace, FloatK, None)
    assert result.divergences == [], [d.message for d in result.divergences]


async def test_defence_a_replay_is_bounded_by_twice_the_nodes_task_bound(
    tmp_path: Path,
) -> None:
    """Attack (a user): give an honest agent an input whose own work (parsing, formatting: no
    syscall) takes between 120 s and 600 s. The node runs a task for up to ``TaskSpec.timeout_s``
    (600 s) and commits it; the validator's replay runs the same code under `REPLAY_TIMEOUT_S`
    (120 s, a validator's machine may be slower still) and its "timeout" status is compared with the
    trace's "ok": "the task's status is not the replay's", a REPLAY finding against the honest node.
    Shown here at scale (the agent's work is ~0.3 s, the replay's bound 1/5 of that), and the two
    defaults asserted.

    Fix proposed: a replay that runs out of time proves nothing about the node: make it
    unverifiable (`ReplayUnavailable`), never a divergence; and bound the replay by at least the
    node's task timeout (the agent's own time on the node is within it).

    Done in part: the bound is twice the node's task bound (`REPLAY_TIMEOUT_S = 2 *
    TASK_TIMEOUT_S`: the agent's own work is a part of the task's; a validator may be twice as
    slow). A timeout stays a divergence by design: as "unverifiable" it would let a node commit a
    made-up trace whose replay runs long (tool results it chose, on which the agent works) and keep
    its fee; past twice the node's own bound the agent could not have ended on the node."""
    work = 1
    while True:  # find a workload of ~0.3 s on this machine
        loop = asyncio.get_running_loop()
        start = loop.time()
        await Slow().run(None, {"work": work})  # type: ignore[arg-type]
        if loop.time() - start > 0.3:
            break
        work *= 2
    _, _, trace = await honest_run(tmp_path, Slow, {"work": work})
    assert (await replay(trace, Slow, None, timeout_s=30.0)).divergences == []  # within the bound
    result = await replay(trace, Slow, None, timeout_s=0.06)
    assert [d.message for d in result.divergences] == [
        "the task's status is not the replay's",
        "the output is not what the agent returns",
    ]  # past its bound: a divergence, by design
    default = inspect.signature(replay).parameters["timeout_s"].default
    assert default == 2 * TaskSpec("t", "a", "").timeout_s == 1200.0


# -- holding ---------------------------------------------------------------------------------------


async def test_defence_tool_results_file_listings_and_memory_hits_are_in_one_key_order(
    tmp_path: Path,
) -> None:
    """Tried: a tool result, a file listing and a memory hit's metadata whose keys sort differently
    in dag-cbor and in insertion order, serialised by the agent. Holds: the dispatcher hands each
    as recorded (`as_recorded`: dag-cbor's order), and the replay answers from the decoded trace."""
    _, judgement = await verdict_of(
        tmp_path, ToolEcho, {"json": '{"x": {"bb": 1, "a": 2, "é": 3, "": 4}}', "path": "x"}
    )
    assert clean(judgement), replay_findings(judgement)
    # the memory search's scores are the validator's search check's (the real model's): here the
    # replay alone, on a stand-in embedder
    _, _, trace = await honest_run(tmp_path, FilesAndMemoryEcho, "go", embedder=_FlatEmbedder())
    out = json.loads(trace["output"])
    assert list(out["files"]) == ["a.txt", "bb.txt", "ccc/d.txt"]  # dag-cbor order, not the order written
    assert json.dumps(out["meta"]) == '[{"a": {"b": 3, "yy": 2}, "zz": 1}]'
    result = await replay(trace, FilesAndMemoryEcho, None)
    assert result.divergences == [], [d.message for d in result.divergences]


async def test_defence_a_childs_input_is_its_normal_form_on_both_sides(tmp_path: Path) -> None:
    """Tried: a parent hands a child an object whose key order differs between RFC 8785, dag-cbor
    and insertion. Holds: the dispatcher gives the child ``normal_input`` of what the parent passes
    on the node and in the replay alike (the replay runs the same dispatcher on the replayed
    parent's value, never on the recorded one)."""
    trace, judgement = await verdict_of(tmp_path, ParentOfEcho, "go")
    assert trace["output"] == '{"b": 1, "aa": [{"y": 1, "xx": 2}], "\\u00e9": 0}'  # as recorded
    assert clean(judgement), replay_findings(judgement)


async def test_defence_a_budget_refusal_trips_at_the_same_call_with_the_same_words(tmp_path: Path) -> None:
    """Tried: an agent that spends its tool budget and reports the refusal. Holds: the budget
    counters are the replay dispatcher's own (the recorded limits), so the refusal comes at the
    same call with the same words (the task id is the trace's)."""
    trace, judgement = await verdict_of(tmp_path, BudgetProbe, "go")
    assert "BudgetExceededError" in json.dumps(trace["events"][-1]) and trace["output"].startswith(
        "64: task "
    )
    assert clean(judgement), replay_findings(judgement)


async def test_defence_a_tool_errors_type_words_and_a_missing_files_error_are_the_same(
    tmp_path: Path,
) -> None:
    """Tried: an agent reporting a failed tool call's type, words and ``args``, and a missing
    file's error. Holds: `replay._rebuild` gives the recorded type (a kernel error by name) with
    the recorded words as its one argument; the missing file's words are recomputed from the root
    (`missing_file`) on both sides."""
    trace, judgement = await verdict_of(tmp_path, ErrorWords, "go")
    assert trace["output"].startswith("ToolError|tool calculator failed: division by zero|")
    assert "FileNotFoundError|no file 'nope.txt'" in trace["output"]
    assert clean(judgement), replay_findings(judgement)


class ResultRepr(Agent):
    """Answers with everything it can see of an LLM call's result (its repr: types included)."""

    agent_id = "result-repr"
    description = "Shows a chat result."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        reply = await ctx.llm.chat([{"role": "user", "content": str(input)}], max_new_tokens=3, stop=["q"])
        return repr(reply)


async def test_defence_an_llm_results_fields_and_types_are_the_same_on_replay() -> None:
    """Tried: an agent that shows the whole `ChatResult` (tuples or lists, finish reason, the
    text). Holds: the dispatcher builds it alike on both sides (prompt ids from the tokenizer,
    output ids from the record, as tuples; the scheduler's preemption count is not in it)."""
    doc, _ = await node_llm_trace(ResultRepr, "hi")
    assert doc["status"] == "ok" and doc["output"].startswith("ChatResult(text='xxx', prompt_ids=(7,")
    result = await replay(doc, ResultRepr, _Tokenizer())
    assert result.divergences == [] and result.output == doc["output"]


async def test_defence_a_rebuilt_failure_keeps_its_class_and_no_live_context(tmp_path: Path) -> None:
    """Found by a review of the fix: rebuilt by name, a child's failure came back as a class made on
    the spot, not the API's `AgentCallError` (``except AgentCallError`` no longer matched, against
    docs/agents.md), and raised inside the dispatcher's handler it held the live exception in
    ``__context__`` (an agent walking ``__cause__ or __context__`` saw the tool's own error on the
    node only). Now `errors.as_raised` knows every class a syscall can fail with (the ABI's and the
    node's, builtin bases kept) and the dispatcher raises it outside the handler."""
    trace, judgement = await verdict_of(tmp_path, ParentCatches, "go")
    assert trace["output"] == "caught AgentCallError; context None", trace["output"]
    assert clean(judgement), replay_findings(judgement)
    trace, judgement = await verdict_of(tmp_path, CauseCalc, {"expression": "1/0"})
    assert trace["output"] == "cannot evaluate: the tool"  # neither cause nor context, both sides
    assert clean(judgement), replay_findings(judgement)
