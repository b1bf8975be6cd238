"""An adversarial review of the signed agent profile (``agentHash`` = sha256 of the RFC 8785 JSON of
``supernet/agent-profile/v1``: agent id and code hash, limits, tool specs).

The adversaries: a cheating node (run a task under another environment than the signed one and
still verify clean), a user or a third party trying to get an honest node slashed, and a node
trying to make a client sign something it did not mean to.

Each attack was proven as a test first; ``test_defence_*``: the attack fails (the seven that
worked were closed after the review: their docstrings say how each worked, and what closed it).
Helpers come from ``tests/unit/test_validator_attacks.py`` and ``test_validator_attacks3.py``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from supernet.node.agents.base import Agent
from supernet.node.agents.context import AgentContext
from supernet.node.kernel.access import NodePolicy, PrivilegeGroup
from supernet.node.kernel.errors import KernelError
from supernet.node.kernel.kernel import Kernel, KernelConfig
from supernet.node.kernel.syscalls import TaskSpec
from supernet.node.kernel.tools import Tool, ToolRegistry, ToolSpec, check_listable
from supernet.node.service.kernel_executor import KernelExecutor
from supernet.sdk.chain.receipts import InputEncodingError
from supernet.sdk.client.types import ClientError, agent_profile
from supernet.sdk.formats.profile import AgentProfile
from supernet.sdk.formats.trace import AgentRef, Limits, ToolDescription, Trace
from supernet.sdk.node_api import AgentCard, NodeInfo
from supernet.sdk.store.cids import decode_dag, encode_dag

from tests.unit.test_validator_attacks import (
    USER,
    Calc,
    DictStore,
    MemoryQuestion,
    doc_profile,
    empty_search,
    registry,
    signed_task,
    trace_doc,
    verify,
)
from tests.unit.test_validator_attacks3 import FakeEngine, NoEmbedder, Summarizer, clean, stand_in_kernel

# -- agents ---------------------------------------------------------------------------------------------


class SchemaEcho(Agent):
    """Reports the tool schemas it is offered, as many agents put them in a prompt: ``json.dumps``
    of each tool's ``parameters`` (insertion order, Python's float spelling)."""

    agent_id = "schema-echo"
    description = "Lists its tools' parameter schemas."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        return "\n".join(f"{t.name}: {json.dumps(t.parameters)}" for t in ctx.tools.available)


class CalcDelegator(Agent):
    """Hands the expression to the ``calc`` agent (a child agent call)."""

    agent_id = "calc-delegator"

    calls_agents = ("calc",)
    description = "Delegates arithmetic to calc."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        return await ctx.agents.call("calc", input)


class NameEcho(Agent):
    """Lists the names of the tools it is offered, in the order it is offered them."""

    agent_id = "name-echo"
    description = "Lists its tools."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        return ",".join(ctx.tools.names())


EMBEDDER: Any = NoEmbedder()  # a stand-in (no model): tasks here never embed

MINE = (Calc, SchemaEcho, CalcDelegator, NameEcho, Summarizer)


# -- helpers --------------------------------------------------------------------------------------------


def kernel_of(policy: NodePolicy | None = None) -> Kernel:
    """A kernel (never started) under ``policy``: `Kernel.profile` needs no engine or store."""
    return Kernel(
        FakeEngine(), None, KernelConfig(node_policy=policy or NodePolicy()), agents=registry(MINE),
        embedder=EMBEDDER,
    )  # fmt: skip


def started_kernel(store_dir: Path, policy: NodePolicy | None = None) -> AbstractAsyncContextManager[Kernel]:
    """A started kernel of `MINE` under ``policy`` on an embedded store in ``store_dir``."""
    return stand_in_kernel(store_dir, MINE, policy=policy, embedder=EMBEDDER)


async def honest_run(
    tmp_path: Path, agent: type[Agent], task_input: Any, policy: NodePolicy | None = None
) -> tuple[Any, str, dict[str, Any]]:
    """An honest node's run of ``agent`` under ``policy``, signed for the profile it lists: the
    request, its task id and the trace the node's own kernel records (the signed hash is checked by
    `Kernel.submit`)."""
    listed = kernel_of(policy).profile(agent.agent_id).hash()
    req, task_id = signed_task(agent, task_input, listed)
    async with started_kernel(tmp_path / f"store-{agent.agent_id}-{id(policy)}", policy) as kernel:
        spec = TaskSpec(
            task_id=task_id, agent_id=agent.agent_id, input=task_input, user=USER.address, fee=100,
            agent_hash=listed,
        )  # fmt: skip
        outcome = await kernel.run_task(spec)
    assert outcome.status == "ok", outcome.error
    return req, task_id, dict(outcome.trace)


def node_info(cards: list[dict[str, Any]], agents: dict[str, str]) -> NodeInfo:
    return NodeInfo.model_validate({
        "address": "0x" + "11" * 20, "chainId": 31337, "verifyingContract": "0x" + "22" * 20,
        "taskFee": 1, "models": ["0x" + "33" * 32], "modelNames": {}, "agents": agents,
        "agentCards": [AgentCard.model_validate(c).model_dump() for c in cards],
    })  # fmt: skip


# -- a node makes the client sign another agent ---------------------------------------------------------


async def test_defence_the_client_refuses_the_profile_of_another_agent() -> None:
    """Was an attack: the client checked only that the ``agentHash`` it signs is the hash of the
    profile listed in the card of the agent it asked for, not that the profile is *of* that agent:
    a node listed, under ``id: "calc"`` (with calc's real ``codeHash``), the profile of another
    agent (``memq``, whose code hash is calc's: one source file). The client signed it for "calc",
    the node ran memq, and memq's honest trace verified clean (the request names no agent id, only
    the hash). `agent_profile` now requires the profile's id and code hash to be the card's."""
    stub_hash = doc_profile(MemoryQuestion)
    stub_profile = AgentProfile.of(
        AgentRef(MemoryQuestion.agent_id, MemoryQuestion.code_hash()),
        Limits.from_dag(
            {"memory": True, "storage": False, "max_llm_calls": 8, "max_llm_tokens": 1024,
             "max_new_tokens": 64, "max_tool_calls": 8, "max_file_bytes": 0}, "limits"),
        [],
    )  # fmt: skip
    assert stub_profile.hash() == stub_hash
    card = {
        "id": "calc",
        "codeHash": Calc.code_hash(),
        "agentHash": stub_hash,
        "profile": stub_profile.to_json(),
    }
    assert stub_profile.agent.code_hash == card["codeHash"]  # one source file: the code hash matches
    with pytest.raises(ClientError, match="the profile of agent 'memq'"):
        agent_profile(node_info([card], {"calc": stub_hash}), "calc")
    # the same profile, listed under its own id, is signed
    own = {**card, "id": "memq"}
    assert agent_profile(node_info([own], {"memq": stub_hash}), "memq")[0] == stub_hash


async def test_defence_the_client_refuses_a_listed_zero_budget_profile(tmp_path: Path) -> None:
    """Was an attack: the SDK client signed whatever profile the node listed. A node that means to
    sell answers without running the model lists (to everyone, or to one user right before they
    sign) ``max_llm_calls = 0``: the agent's LLM call is refused by the signed budget, an agent
    with a fallback (here: the text's start) answers, and the honest trace of that verifies clean.
    The client now refuses a profile below its ``min_limits`` (default `DEFAULT_MIN_LIMITS`: one
    LLM call of 16 tokens); a user who passes lower minimums gets what was signed."""
    zero = NodePolicy(max_llm_calls=0)
    listed = kernel_of(zero).profile("summarizer")
    card = {"id": "summarizer", "codeHash": Summarizer.code_hash(), "agentHash": listed.hash(),
            "profile": listed.to_json()}  # fmt: skip
    info = node_info([card], {"summarizer": listed.hash()})
    with pytest.raises(ClientError, match="max_llm_calls 0 < 1"):
        agent_profile(info, "summarizer")
    with pytest.raises(ClientError, match="max_tool_calls 64 < 100"):  # a user's own minimums
        agent_profile(node_info([{**card, "profile": kernel_of().profile("summarizer").to_json(),
                                  "agentHash": kernel_of().profile("summarizer").hash()}],
                                {"summarizer": kernel_of().profile("summarizer").hash()}),
                      "summarizer", {"max_tool_calls": 100})  # fmt: skip
    signed, _ = agent_profile(info, "summarizer", min_limits={})  # the user accepts it, knowingly
    task_input = {"text": "A long report about the quarterly numbers."}
    req, task_id, trace = await honest_run(tmp_path, Summarizer, task_input, zero)
    assert "0x" + req.agent_hash.hex() == signed
    assert trace["output"] == task_input["text"][:12]  # the fallback: what the signed budget allows
    assert clean(await verify(DictStore(), req, task_id, trace, agents=MINE))


# -- an honest node framed ----------------------------------------------------------------------------


async def test_defence_an_agent_sees_the_recorded_specs_so_an_honest_node_replays_clean(
    tmp_path: Path,
) -> None:
    """Was an attack on an honest node: the profile (and the replay) hold a tool's spec as the trace
    records it, dag-cbor's key order (``type``, ``required``, ``properties``: shortest key first),
    while the node handed the agent the *live* `ToolSpec` (``type``, ``properties``, ``required``).
    An agent that serialises a schema (``json.dumps(spec.parameters)``, into a prompt or an answer)
    answered otherwise on the node than in the replay: for the built-in calculator's spec as
    shipped, an honest node's result was a REPLAY finding (a slash). The kernel now hands agents
    the specs as recorded (`supernet.node.kernel.agent_run.seen_spec`, the replay's too)."""
    req, task_id, trace = await honest_run(tmp_path, SchemaEcho, {})
    calc_line = next(line for line in trace["output"].splitlines() if line.startswith("calculator:"))
    assert calc_line.startswith('calculator: {"type": "object", "required"')  # the recorded order
    recorded = next(t for t in decode_dag(encode_dag(trace))["tools"] if t["name"] == "calculator")
    assert list(recorded["parameters"]) == ["type", "required", "properties"]
    assert kernel_of().profile("schema-echo").hash() == "0x" + req.agent_hash.hex()  # signed = listed
    assert clean(await verify(DictStore(), req, task_id, trace, agents=MINE))


@pytest.mark.parametrize("bad", [math.nan, math.inf, 1.0, -0.0])
def test_defence_a_schema_number_without_one_spelling_is_not_listed(bad: float) -> None:
    """Was an attack: `check_listable` checked the spec *as recorded*, where NaN (and inf) become
    ``null``, so a schema with ``"maximum": NaN`` (which an MCP server's JSON may carry) registered:
    the signed profile and the replay said ``null``, the node's agent and its argument validation
    saw NaN. A float with an integer value (``1.0``) is the same class: RFC 8785 writes it as
    ``1``, so one signed hash named two schemas an agent tells apart. Such a tool is now refused
    when it is registered (and an MCP server's, skipped)."""
    odd = ToolSpec(
        "odd", "Odd schema.", {"type": "object", "properties": {"n": {"type": "number", "maximum": bad}}}
    )
    with pytest.raises(ValueError, match="cannot be listed in an agent profile"):
        check_listable(odd)
    with pytest.raises(ValueError, match="cannot be listed in an agent profile"):
        ToolRegistry().register(Tool(odd, lambda args: 0))
    check_listable(
        dataclasses.replace(odd, parameters={"type": "object", "properties": {"n": {"maximum": 0.5}}})
    )


async def test_defence_a_child_agent_narrowed_by_a_group_is_caught(tmp_path: Path) -> None:
    """Was a known limit (shown end to end by this review): the user signed the profile of
    ``calc-delegator``, which lists the calculator; the node put the *child* agent ``calc`` in a
    privilege group with no tools, which left the parent's profile unchanged: the child's
    calculator call was refused and the degraded answer verified clean. A profile now lists the
    agents its agent may call, each with what it gets (`CallableAgent`), and the replay holds each
    ``agent.call`` to its entry: the node's narrowing changes the profile (a TRACE finding against
    the signed one), and a trace that narrows a child without saying so diverges."""
    starve = NodePolicy(groups=(PrivilegeGroup("no-tools", frozenset({"calc"}), tools=()),))
    listed, starved = kernel_of().profile("calc-delegator"), kernel_of(starve).profile("calc-delegator")
    assert listed.hash() != starved.hash() and listed.tools == starved.tools  # only the child differs
    assert next(a for a in starved.agents if a.id == "calc").tools == ()
    task_input = {"expr": "6 * 7"}
    req, task_id, honest = await honest_run(tmp_path, CalcDelegator, task_input)
    assert honest["output"] == "42" and clean(await verify(DictStore(), req, task_id, honest, agents=MINE))
    async with started_kernel(tmp_path / "cheat", starve) as kernel:  # runs it, whatever was signed
        spec = TaskSpec(
            task_id=task_id, agent_id="calc-delegator", input=task_input, user=USER.address, fee=100
        )
        cheat = dict((await kernel.run_task(spec)).trace)
    assert cheat["output"].startswith("could not compute")
    verdict = await verify(DictStore(), req, task_id, cheat, agents=MINE)
    assert not verdict.ok and "trace" in {f.check.value for f in verdict.findings}, verdict.findings
    # the narrowed child, recorded under the signed profile's entries: the replay diverges
    forged = {**cheat, "agents": honest["agents"]}
    verdict = await verify(DictStore(), req, task_id, forged, agents=MINE)
    assert not verdict.ok and [f.check.value for f in verdict.findings] == ["replay"], verdict.findings
    assert "other capabilities than its profile entry gives" in verdict.findings[0].message


async def test_defence_a_trace_spelling_a_schema_integer_as_a_float_is_caught() -> None:
    """Was an attack: RFC 8785 writes ``1.0`` as ``1``, but dag-cbor keeps the float and a Python
    agent sees it (``json.dumps`` gives ``1.0`` vs ``1``), so a node listed one spelling and ran,
    per task, whichever steered a schema-reading agent, both runs verifying clean under one
    signature. A profile holding such a float now has no hash (`check_numbers`): a node's registry
    refuses the tool (above), and a trace that spells a signed integer as a float is a TRACE
    finding (its profile's hash is not the signed one)."""
    as_int = ToolDescription("limited", "A tool.", {"type": "object", "maxProperties": 1}, True, False)
    as_float = dataclasses.replace(as_int, parameters={"type": "object", "maxProperties": 1.0})
    ref, limits = (
        AgentRef(SchemaEcho.agent_id, SchemaEcho.code_hash()),
        Limits(True, False, 8, 1024, 64, 8, 0),
    )
    with pytest.raises(InputEncodingError, match="no one spelling"):
        AgentProfile.of(ref, limits, [as_float]).hash()
    signed = doc_profile(SchemaEcho, [as_int.to_dag()])
    assert signed == AgentProfile.of(ref, limits, [as_int]).hash()
    store = DictStore()
    req, task_id = signed_task(SchemaEcho, {}, signed)
    verdicts = []
    for tool in (as_int, as_float):  # the node's two runs of the one signed request
        output = f"limited: {json.dumps(dict(tool.parameters))}"
        doc = trace_doc(SchemaEcho, task_id, USER.address, {}, [], output, tools=[tool.to_dag()])
        verdicts.append(await verify(store, req, task_id, doc, agents=MINE))
    assert clean(verdicts[0])
    assert not verdicts[1].ok and {f.check.value for f in verdicts[1].findings} == {"trace"}, verdicts[1]


# -- robustness -----------------------------------------------------------------------------------------


def test_defence_a_limit_past_2_53_is_refused_in_the_policy() -> None:
    """Was a self-inflicted outage: the limits are hashed as RFC 8785 JSON, which has no integer past
    2**53, and nothing bounded them (``pricing.tokens_per_task`` becomes ``max_llm_tokens``):
    ``GET /v1/node`` and every admission failed with a 500. `NodePolicy` now refuses such a limit
    when it is made, and the setting is bounded."""
    from pydantic import ValidationError
    from supernet.node.service.config import PricingSettings

    with pytest.raises(ValueError, match="max_llm_tokens must be an integer from 0 to 2\\*\\*53 - 1"):
        NodePolicy(max_llm_tokens=2**53)
    with pytest.raises(ValidationError):
        PricingSettings(tokens_per_task=2**53)
    kernel = kernel_of(NodePolicy(max_llm_tokens=2**53 - 1))
    assert KernelExecutor.agent_hash(SimpleNamespace(kernel=kernel), "calc") == kernel.profile("calc").hash()  # type: ignore[arg-type]


# -- defences -----------------------------------------------------------------------------------------


async def test_defence_a_trace_listing_the_tools_out_of_order_replays_sorted(tmp_path: Path) -> None:
    """The profile sorts tools by name, so a trace's ``tools`` order is not signed; a node that
    reorders them (an agent listing tools in a prompt would see another order) gains nothing: the
    replay hands the agent the tools sorted by name, so the reordered trace of what the agent saw is
    a REPLAY finding, not a clean verdict (and the honest trace is clean)."""
    task_input: dict[str, Any] = {}
    req, task_id, honest = await honest_run(tmp_path, NameEcho, task_input)
    names = [t["name"] for t in honest["tools"]]
    assert names == sorted(names) and len(names) > 1 and honest["output"] == ",".join(names)
    assert clean(await verify(DictStore(), req, task_id, honest, agents=MINE))
    doc = {**honest, "tools": list(reversed(honest["tools"]))}
    doc["output"] = ",".join(reversed(names))  # what the agent answers when offered that order
    assert AgentProfile.of_trace(Trace.from_dag(doc)).hash() == "0x" + req.agent_hash.hex()
    verdict = await verify(DictStore(), req, task_id, doc, agents=MINE)
    assert not verdict.ok and {f.check.value for f in verdict.findings} == {"replay"}


@pytest.mark.parametrize(
    "edit",
    [
        lambda lim: {**lim, "max_new_tokens": 64.0},  # a float spelling of the signed integer
        lambda lim: {**lim, "max_tool_calls": True},  # a bool is no integer here
        lambda lim: {**lim, "memory": 1},
    ],
)
async def test_defence_a_limit_in_another_type_is_not_the_signed_one(edit: Any) -> None:
    """Limits are strict integers and booleans: a trace whose limits spell the signed values in
    another type (which RFC 8785 might hash the same, or a replay treat the same) is refused, never
    clean."""
    store = DictStore()
    task_input = {"q": "x"}
    req, task_id = signed_task(MemoryQuestion, task_input)
    doc = trace_doc(MemoryQuestion, task_id, USER.address, task_input, empty_search("x"), "unknown")
    assert clean(await verify(store, req, task_id, doc))
    doc["limits"] = edit(doc["limits"])
    verdict = await verify(store, req, task_id, doc)
    assert not verdict.ok


async def test_defence_a_user_asked_narrower_tool_set_is_refused_not_run(tmp_path: Path) -> None:
    """``TaskSpec.tools`` (tools a task asks for) narrows the capabilities, hence the profile: a
    task signed for the listed profile but asking for fewer tools would record a trace whose
    profile is not the signed one (an honest node framed). `Kernel.submit` refuses it up front."""
    listed = kernel_of().profile("calc").hash()
    _, task_id = signed_task(Calc, {"expr": "1"}, listed)
    async with started_kernel(tmp_path / "narrow") as kernel:
        spec = TaskSpec(task_id=task_id, agent_id="calc", input={"expr": "1"}, user=USER.address, fee=100,
                        agent_hash=listed, tools=frozenset({"calculator"}))  # fmt: skip
        with pytest.raises(KernelError, match="not the signed"):
            kernel.submit(spec)


async def test_defence_a_builtin_tool_listed_non_deterministic_is_still_re_run() -> None:
    """The profile makes the ``deterministic`` flag the user's word, and the client checks no flag:
    a node could list (and so have signed) the built-in calculator as non-deterministic, so that no
    validator re-runs it, and fabricate its results. The validator holds a tool it knows as
    deterministic to that whatever the trace (and the signed profile) say: a TOOL finding."""
    from supernet.node.kernel.agent_run import spec_record
    from supernet.validator.tool_check import RegistryRunner

    store = DictStore()
    calculator = RegistryRunner(store).spec("calculator")
    assert calculator is not None
    spec = {**spec_record(calculator), "deterministic": False}
    task_input = {"expr": "6 * 7"}
    req, task_id = signed_task(Calc, task_input, doc_profile(Calc, [spec]))  # the signed relabel
    event = {"kind": "tool", "name": "calculator", "args": {"expression": "6 * 7"},
             "deterministic": False, "result": 41, "error": None}  # fmt: skip
    doc = trace_doc(Calc, task_id, USER.address, task_input, [event], "41", tools=[spec])
    assert AgentProfile.of_trace(Trace.from_dag(doc)).hash() == "0x" + req.agent_hash.hex()
    verdict = await verify(store, req, task_id, doc, agents=MINE)
    assert not verdict.ok
    assert "tool calculator is deterministic but recorded as not" in [f.message for f in verdict.findings]
