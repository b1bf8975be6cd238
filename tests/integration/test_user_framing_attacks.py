"""Can a user (alone, or with a validator) make an HONEST node's receipt look faulty?

Adversarial review: every test runs the honest node's real code path (the real kernel on the real
SmolLM2 engine, the real agents, the embedded store) on a hostile but *admissible* task input,
then the whole real `Verifier` (receipt, signatures, trace, agent replay, LLM re-scoring, tool
re-runs) on the receipt, exactly as a validator does, and asserts the honest receipt gets no
finding (a finding is a fraud challenge, i.e. a slash of an honest node).

The tests that say "was an attack" worked once (the honest node was accused) and are fixed by
design; the others are attacks that were tried and failed. All are kept as regression tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from supernet.node.agents.base import Agent
from supernet.node.agents.chat import ChatAgent
from supernet.node.agents.context import AgentContext
from supernet.node.agents.registry import AgentRegistry
from supernet.node.kernel.syscalls import TaskSpec
from supernet.sdk.chain.eip712 import Domain, TaskRequest, hash_task_request, sign_task_request
from supernet.sdk.chain.receipts import Receipt, input_hash, output_hash, sign_receipt, trace_hash
from supernet.sdk.formats.manifest import ManifestEntry
from supernet.sdk.formats.trace import MAX_CONTEXT_TOKENS
from supernet.validator.tool_check import RegistryRunner
from supernet.validator.verifier import Manifest, Verifier

pytestmark = [pytest.mark.model, pytest.mark.timeout(600)]

DOMAIN = Domain(chain_id=31337, verifying_contract="0x" + "33" * 20)
USER = Account.from_key("0x" + "a1" * 32)
NODE = Account.from_key("0x" + "a2" * 32)


class JsonPick(Agent):
    """An ordinary (packaged) agent: picks a value out of the user's JSON with the built-in
    ``json_query`` tool and answers with it (catching a tool failure, as careful agents do)."""

    agent_id = "jsonpick"
    description = "Picks a value out of a JSON document."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        try:
            value = await ctx.tools.call("json_query", {"json": input["json"], "path": input.get("path", "")})
        except Exception as exc:
            return f"error: {type(exc).__name__}"
        return f"value: {value!r}"[:200]


class Calc(Agent):
    """An ordinary agent: the calculator on the user's expression."""

    agent_id = "calc"
    description = "Evaluates the user's expression."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        try:
            value = await ctx.tools.call("calculator", {"expression": input["expr"]})
        except Exception as exc:
            return f"error: {type(exc).__name__}"
        return f"value: {value!r}"


def registry() -> AgentRegistry:
    r = AgentRegistry()
    for cls in (ChatAgent, JsonPick, Calc):
        r.register(cls)
    return r


@pytest.fixture(scope="module")
def scorer(smollm2_dir: Path) -> Any:
    """A validator's float32 scorer (its own load of the model: all its positions, as in production)."""
    from supernet.validator.scoring import ModelScorer

    return ModelScorer.load(str(smollm2_dir), dtype="float32", device="cpu")


_nonce = iter(range(1, 10**6))


async def honest_verdict(
    kernel: Any, store: Any, scorer: Any, agent: type[Agent], task_input: Any, signed_for: str | None = None
) -> Any:
    """Run ``task_input`` on the honest node's kernel, commit the receipt as a node does and return
    the verdict of a validator with the same agents. Returns (trace, verdict).

    ``signed_for``: the ``agentHash`` the user signed, when it is not this kernel's profile of the
    agent (a node that runs the task anyway, under its own profile: the kernel is not told)."""
    nonce = next(_nonce)
    model_id = bytes.fromhex(kernel.model_id[2:])
    agent_hash = bytes.fromhex((signed_for or kernel.profile(agent.agent_id).hash())[2:])
    req = TaskRequest(
        user=USER.address,
        node=NODE.address,
        model_id=model_id,
        agent_hash=agent_hash,
        input_hash=input_hash(task_input),
        max_fee=100,
        nonce=nonce,
        deadline=2**40,
    )
    rh = hash_task_request(req, DOMAIN)
    request_signature = sign_task_request(req, DOMAIN, USER)
    spec = TaskSpec(
        task_id="0x" + rh.hex(),
        agent_id=agent.agent_id,
        input=task_input,
        user=USER.address,
        fee=100,
        agent_hash=None if signed_for else "0x" + agent_hash.hex(),
        request=req.to_json(),
        request_signature="0x" + request_signature.hex(),
        model_id=kernel.model_id,
    )
    outcome = await kernel.run_task(spec)
    trace = await store.get_dag(outcome.trace_cid)
    receipt = Receipt(
        request_hash=rh,
        user=USER.address,
        model_id=model_id,
        input_hash=req.input_hash,
        output_hash=output_hash(outcome.output if outcome.output is not None else trace["output"]),
        trace_hash=trace_hash(outcome.trace_cid),
        fee=100,
    )
    entry = ManifestEntry(
        receipt,
        receipt.leaf(),
        sign_receipt(receipt, NODE),
        outcome.trace_cid,
        agent.agent_id,
        req,
        request_signature,
    )
    verifier = Verifier(store, scorer, RegistryRunner(store), DOMAIN, "0x" + "44" * 20, agents=registry())
    verdict = await verifier.verify(1, NODE.address, 0, Manifest({0: entry}))
    return trace, verdict


def describe(verdict: Any) -> list[tuple[str, str]]:
    return [(f.check.value, f.message) for f in verdict.findings]


def llm_events(trace: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [e for e in trace["events"] if e["kind"] == "llm"]


# -- controls -----------------------------------------------------------------------------------


async def test_control_an_honest_chat_verifies(make_kernel: Any, store_client: Any, scorer: Any) -> None:
    kernel = await make_kernel(agents=registry())
    trace, verdict = await honest_verdict(
        kernel,
        store_client,
        scorer,
        ChatAgent,
        {"messages": [{"role": "user", "content": "Name a colour."}], "max_new_tokens": 8},
    )
    assert trace["status"] == "ok"
    assert verdict.findings == () and verdict.ok, describe(verdict)


# -- attack 1: a prompt that fills the node's context ---------------------------------------------


async def test_prompt_near_the_context_limit_is_not_a_truncation(
    make_kernel: Any, store_client: Any, scorer: Any
) -> None:
    """Was an attack: a user signs a chat whose prompt leaves fewer positions in the context than
    ``max_new_tokens``; the engine stopped at the context's end with finish "length" while the
    trace recorded the requested budget, and `check_shape` (exactly ``max_new_tokens`` tokens for
    "length") accused the node. Fixed by design: the kernel caps the recorded budget at the
    protocol's context, ``MAX_CONTEXT_TOKENS - len(prompt)`` (`Dispatcher._llm`), which the replay
    re-derives; the call ends "length" after exactly its recorded budget. The validator's scorer
    holds all 8192 positions of the model, so the call is scored (not unverifiable)."""
    kernel = await make_kernel(agents=registry())
    tok = kernel.engine.tokenizer
    room = MAX_CONTEXT_TOKENS
    assert kernel.engine.max_seq_len >= room
    # about 2020 prompt tokens; 16 KiB of input is far more than that
    words = " ".join(["river"] * 2000)
    base = len(tok.apply_chat_template([{"role": "user", "content": ""}], add_generation_prompt=True))
    content = tok.decode(tok.encode(words)[: room - base - 24])
    task_input = {"messages": [{"role": "user", "content": content}], "max_new_tokens": 64}
    assert len(str(task_input)) < 16 * 1024  # under the API's max_input_chars
    trace, verdict = await honest_verdict(kernel, store_client, scorer, ChatAgent, task_input)
    call = llm_events(trace)[0]
    assert trace["status"] == "ok"
    budget = call["params"]["max_new_tokens"]
    assert budget < 64 and len(call["prompt_ids"]) + budget == MAX_CONTEXT_TOKENS  # capped, recorded
    assert call["finish_reason"] == "length" and len(call["output_ids"]) == budget
    assert verdict.findings == (), describe(verdict)


# -- attack 2: tool results a trace cannot hold ---------------------------------------------------


async def test_json_query_big_integer_is_not_a_tool_mismatch(
    make_kernel: Any, store_client: Any, scorer: Any
) -> None:
    kernel = await make_kernel(agents=registry())
    trace, verdict = await honest_verdict(
        kernel, store_client, scorer, JsonPick, {"json": '{"a": 123456789012345678901234567890}', "path": "a"}
    )
    tool = next(e for e in trace["events"] if e["kind"] == "tool")
    assert tool["error"] is not None and "cannot hold" in tool["error"]  # the honest node's record
    assert verdict.findings == (), describe(verdict)


async def test_json_query_lone_surrogate_is_not_a_tool_mismatch(
    make_kernel: Any, store_client: Any, scorer: Any
) -> None:
    kernel = await make_kernel(agents=registry())
    # the input is plain ASCII (canonical, admitted): the escape is decoded only by the tool
    trace, verdict = await honest_verdict(
        kernel, store_client, scorer, JsonPick, {"json": '{"a": "\\ud800"}', "path": "a"}
    )
    tool = next(e for e in trace["events"] if e["kind"] == "tool")
    assert tool["error"] is not None
    assert verdict.findings == (), describe(verdict)


async def test_json_query_deeply_nested_result_is_not_a_tool_mismatch(
    make_kernel: Any, store_client: Any, scorer: Any
) -> None:
    """Tried and failed: a JSON document nested near / past the recursion limit (the node's
    recursive ``to_dag``/encode vs the validator's re-run at another stack depth): both sides
    parse and record it, or both fail."""
    kernel = await make_kernel(agents=registry())
    for depth in (990, 3000):
        doc = '{"a": ' + "[" * depth + "]" * depth + "}"
        _, verdict = await honest_verdict(kernel, store_client, scorer, JsonPick, {"json": doc, "path": "a"})
        assert verdict.findings == (), (depth, describe(verdict))


async def test_calculator_extremes_are_not_tool_mismatches(
    make_kernel: Any, store_client: Any, scorer: Any
) -> None:
    """Tried and failed: the calculator's huge / >64-bit results and errors (the calculator returns
    floats past 2**63, bounds magnitudes; an error is compared as "an error", not by its text)."""
    kernel = await make_kernel(agents=registry())
    for expr in ("2**62 * 3", "-(2**63)", "10**100", "round(2.5)", "0.1+0.2", "1/0", "sqrt(-1)"):
        _, verdict = await honest_verdict(kernel, store_client, scorer, Calc, {"expr": expr})
        assert verdict.findings == (), (expr, describe(verdict))


# -- attack 3: non-finite tool results -------------------------------------------------------------


@pytest.mark.parametrize(
    ("agent", "task_input"),
    [(Calc, {"expr": "1e400"}), (JsonPick, {"json": '{"a": NaN}', "path": "a"})],
    ids=["calculator-inf", "json_query-nan"],
)
async def test_non_finite_tool_result_replays_as_the_node_ran_it(
    make_kernel: Any, store_client: Any, scorer: Any, agent: type[Agent], task_input: Any
) -> None:
    """Was an attack: ``calculator("1e400")`` gave ``inf`` (``json_query`` of ``NaN`` gives
    ``nan``); `Dispatcher._tool` recorded ``to_dag(result)`` (``null``) but returned the live value
    to the agent, while the replay's tape answers the recorded ``null``: the agent's output differed
    in replay, a ``replay`` finding on an honest node. Fixed by design: the kernel hands the agent
    the recorded value (`as_recorded`), and the calculator refuses non-finite numbers."""
    kernel = await make_kernel(agents=registry())
    trace, verdict = await honest_verdict(kernel, store_client, scorer, agent, task_input)
    tool = next(e for e in trace["events"] if e["kind"] == "tool")
    if agent is Calc:  # a clear error on both sides, never a silent null
        assert tool["error"] is not None and "non-finite" in tool["error"]
        assert trace["output"] == "error: ToolError"
    else:  # recorded as null, and the agent saw what the trace holds
        assert tool["error"] is None and tool["result"] is None
        assert trace["output"] == "value: None"
    assert verdict.findings == (), describe(verdict)


# -- tried and failed: sampling-parameter and stop-string extremes --------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"temperature": 1e308, "seed": 2**53 - 1},
        {"temperature": 1.0, "top_p": 5e-324},
        {"temperature": 2.5e-6, "top_p": 1.0},
        {"temperature": 0.7, "top_p": 0.999999999999},
        {"seed": -1, "temperature": 1.0},
        {"stop": ["", "x"]},
        {"stop": ["\ufffd"], "temperature": 1.0},
        {"stop": ["<|im_end|>", "\n"]},
    ],
    ids=[
        "huge-temp",
        "subnormal-top_p",
        "near-min-temp",
        "top_p-near-1",
        "negative-seed",
        "empty-stop",
        "replacement-char-stop",
        "special-token-stop",
    ],
)
async def test_sampling_extremes_verify(
    make_kernel: Any, store_client: Any, scorer: Any, options: dict[str, Any]
) -> None:
    kernel = await make_kernel(agents=registry())
    task_input = {
        "messages": [{"role": "user", "content": "Write the word 'café' in Japanese and Greek."}],
        "max_new_tokens": 12,
        **options,
    }
    _, verdict = await honest_verdict(kernel, store_client, scorer, ChatAgent, task_input)
    assert verdict.findings == (), describe(verdict)


@pytest.mark.parametrize(
    "options",
    [
        {"response_format": {"type": "json_object"}, "max_new_tokens": 5},
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "x",
                    "schema": {
                        "type": "object",
                        "properties": {"w": {"enum": ["café", "日本語", "\u0000", 'a"b']}},
                        "required": ["w"],
                    },
                },
            },
            "temperature": 1.0,
            "max_new_tokens": 24,
        },
        {
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "f",
                        "parameters": {
                            "type": "object",
                            "properties": {"n": {"type": "integer"}},
                            "required": ["n"],
                        },
                    },
                }
            ],
            "tool_choice": "required",
            "max_new_tokens": 3,
        },
    ],
    ids=["json-truncated", "schema-unicode-enum", "tool-call-truncated"],
)
async def test_constrained_edge_cases_verify(
    make_kernel: Any, store_client: Any, scorer: Any, options: dict[str, Any]
) -> None:
    kernel = await make_kernel(agents=registry())
    task_input = {"messages": [{"role": "user", "content": "Give me a word as JSON."}], **options}
    trace, verdict = await honest_verdict(kernel, store_client, scorer, ChatAgent, task_input)
    assert trace["status"] == "ok", trace["error"]
    assert verdict.findings == (), describe(verdict)
