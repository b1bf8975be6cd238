"""Adversarial review: a RATIONAL CHEATING NODE (second pass) at the seams between what the node
records, what the validator's checks read and what the service does with a verdict.

Scope: `supernet.validator.verifier` (``_stage`` / ``_decider`` / ``_conclude``: which outcomes are
findings, which are a final "unverifiable" and which a local failure that is checked again),
`supernet.validator.chain_check` (a recorded ``chain_read`` re-read at the block its result names),
`supernet.node.kernel.replay._recorded_confirmations` (which occurrence each recorded confirmation
signs), `supernet.validator.llm_check.check_shape` (finish reasons), `Validator._settle` (a verdict
without findings and without ``local`` is recorded as checked and never looked at again). The node
wants its cheat to end as such a final "unverifiable", or to cost every validator more than the
receipt's window holds. Real parts: the whole `Verifier` over traces committed as an honest-looking
node commits them (helpers of ``tests/unit/test_validator_attacks.py``), the validator's
`RegistryRunner` re-reading a real Anvil, the real replay with real EIP-712 signatures. The scorer is
the stand-in of those tests (no LLM call in these traces), and where a validator's own failure is
the point, one whose second format cannot load (what a validator that holds one copy of the
weights meets).

Found (``test_attack_*``, failing until fixed):

1. HIGH, FIXED (`test_defence_a_chain_read_pinned_past_every_final_block_is_judged`): a
   ``chain_read`` of ``latest`` whose result names a block number beyond any chain's head is "not
   final here yet": the receipt is *unverifiable* (the docstring of `chain_check` says "retried
   later"), but the verdict carries neither a finding nor ``local``, so `Validator._settle`
   records it as checked and it is never read again nor challenged. The node shows the agent any
   balance or ``eth_call`` answer (an oracle price, an allowance) and every validator clears it:
   the very hole the pinned design closed. Fixed by design: a read precedes its batch's commit,
   so a block at or past the commit block (`Manifest.commit_block`) is a ``tool`` finding decided
   without any RPC (tests/unit/test_chain_read_commit_block.py); what the validator cannot
   re-read is its own state (`evidence.OwnSide`): a local failure, checked again.
2. MEDIUM, FIXED (`test_defence_recorded_confirmations_cost_the_replay_linear_time`): the replay
   finds each recorded confirmation's occurrence by trying every occurrence below the number of
   tool calls, an EIP-712 hash and an ECDSA recovery each, synchronously on the validator's event
   loop. A trace that replays clean (a packaged agent that repeats one irreversible payment E
   times, its own user confirming each) costs E(E+1)/2 recoveries where the node did E: at
   ``MAX_TRACE_EVENTS`` (1,024) 524,800, ~140 s of a blocked loop per receipt (the reveal loop
   included), and every validator pays it for every such trace that also writes (`WriteLog`).
   Fixed by design: the occurrence is the replay's own count, so each recorded signature is
   recovered once, under the hash of the call the replay makes (`replay._TapeConfirmations`;
   tests/unit/test_replay_confirmation_cost.py).
3. MEDIUM, FIXED (`test_defence_a_format_the_validator_cannot_load_is_checked_again`): a
   validator declares on chain every compute format of its weights (`_declare_models`, so clients
   sign them), loads a format other than its own on first use, and when that load fails (memory:
   a second copy of a large model) the receipt is a *final* unverifiable, not a local failure. A
   node that serves the format validators cannot hold escapes every check. Fixed: a load failure
   is a local failure, and the format leaves the validator's declaration (`Verifier.unloadable`,
   `Validator._declare_models(without=)`; tests/unit/test_validator_unloadable_format.py).
4. LOW, FIXED (`test_defence_finish_length_on_a_stop_token_is_refused`): ``finish_reason
   "length"`` is accepted for an output whose last token is a stop token, which the engine always
   reports as ``"stop"`` (it checks the stop token first). The node flips what the agent reads
   (`ChatResult.finish_reason`) and what the OpenAI gateway returns. Fixed: one finish rule for
   the engine and the validator (`supernet.node.llm.types.finish_reason_of`); any other recorded
   value is a finding (tests/unit/test_finish_reason_rule.py).

Checked and holding (``test_defence_*``): a ``chain_read`` pinned to a real final block with another
value is a finding (the control of 1); recorded confirmations of occurrences the agent's calls do
not have are a replay finding; the task seed is the same for every spelling (case) of the task id,
so the node cannot shop for sampled draws through the id's letters.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from chain_fixtures import Actors
from supernet.node.agents.base import Agent
from supernet.node.agents.context import AgentContext
from supernet.node.kernel import replay as replay_module
from supernet.node.kernel.agent_run import recorded_tool, task_seed
from supernet.node.kernel.builtin_tools import builtin_tools
from supernet.node.kernel.tools import ToolRegistry
from supernet.sdk.chain.anvil import Anvil
from supernet.sdk.chain.eip712 import Confirmation, TaskRequest, sign_confirmation
from supernet.sdk.chain.receipts import action_hash
from supernet.sdk.formats.profile import AgentProfile
from supernet.sdk.formats.trace import AgentRef, Limits, ToolDescription
from supernet.sdk.models import served_model_id
from supernet.validator.llm_check import check_shape
from supernet.validator.tool_check import RegistryRunner
from supernet.validator.trace_view import LLMCall
from supernet.validator.verifier import Manifest, Verifier

from tests.unit.test_validator_attacks import (
    DOMAIN,
    MODEL_ID,
    NODE,
    TRANSFER_TOOL,
    USER,
    WEIGHTS,
    DictStore,
    MemoryQuestion,
    StandInScorer,
    commit_entry,
    empty_search,
    signed_task,
)

VALIDATOR = "0x" + "44" * 20


class BalanceOracle(Agent):
    """Answers with an address's balance read by the built-in ``chain_read`` (latest final block)."""

    agent_id = "balance-oracle"
    description = "Tells the balance of an address."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        read = await ctx.tools.call("chain_read", {"method": "balance", "address": input["address"]})
        return f"balance {read['value']}"


class RepeatPayer(Agent):
    """Makes one irreversible payment ``times`` times (an operator's packaged agent: a standing order)."""

    agent_id = "repeat-payer"
    description = "Pays the same amount to the same address several times."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        for _ in range(int(input["times"])):
            await ctx.tools.call("bank.transfer", {"to": input["to"], "amount": input["amount"]})
        return "paid"


def limits(tool_calls: int) -> dict[str, Any]:
    return {
        "memory": True,
        "storage": False,
        "max_llm_calls": 8,
        "max_llm_tokens": 1024,
        "max_new_tokens": 64,
        "max_tool_calls": tool_calls,
        "max_file_bytes": 0,
    }


def signed(
    agent: type[Agent], task_input: Any, tools: list[dict[str, Any]], lim: dict[str, Any], model_id: str
) -> tuple[TaskRequest, str]:
    """The user's request (its profile: ``agent`` under ``lim`` offered ``tools``) and its task id."""
    profile = AgentProfile.of(
        AgentRef(agent.agent_id, agent.code_hash()),
        Limits.from_dag(lim, "limits"),
        [ToolDescription.from_dag(t, "tool") for t in tools],
    ).hash()
    return signed_task(agent, task_input, profile, model_id)


def doc(
    agent: type[Agent],
    task_id: str,
    task_input: Any,
    events: list[dict[str, Any]],
    output: str,
    tools: list[dict[str, Any]],
    lim: dict[str, Any],
    model_id: str = MODEL_ID,
    dtype: str = "float32",
) -> dict[str, Any]:
    """The trace an honest-looking node commits (every head field bound to the signed request)."""
    return {
        "type": "supernet/trace/v1",
        "task_id": task_id,
        "user": USER.address,
        "fee": 100,
        "agent": {"id": agent.agent_id, "code_hash": agent.code_hash()},
        "model_id": model_id,
        "input": task_input,
        "seed": task_seed(task_id),
        "limits": lim,
        "tools": tools,
        "engine": {"device": "cpu", "dtype": dtype},
        "output": output,
        "status": "ok",
        "error": None,
        "events": events,
        "witness": {"blocks": [], "files": []},
    }


async def verify(
    store: DictStore,
    req: TaskRequest,
    task_id: str,
    trace: dict[str, Any],
    agent: type[Agent],
    rpc: str | None = None,
    scorer: Any = None,
) -> Any:
    """Commit ``trace`` as entry 0 of a batch and run the whole `Verifier` on it."""
    from supernet.node.agents.registry import AgentRegistry

    agents = AgentRegistry()
    agents.register(agent)
    entry = commit_entry(store, req, task_id, trace)
    verifier = Verifier(
        store,
        scorer if scorer is not None else StandInScorer(),
        RegistryRunner(store, rpc),
        DOMAIN,
        VALIDATOR,
        agents=agents,
    )
    return await verifier.verify(1, NODE.address, 0, Manifest({0: entry}))


def final_unverifiable(verdict: Any) -> bool:
    """What `Validator._settle` records as checked, never challenged and never checked again."""
    return not verdict.findings and verdict.unverifiable is not None and not verdict.local_failure


# -- 1. a chain_read pinned past every final block ---------------------------------------------------


def chain_read_record(rpc: str) -> dict[str, Any]:
    registry = ToolRegistry()
    for tool in builtin_tools(None, rpc):
        registry.register(tool)
    return recorded_tool(registry.spec("chain_read")).to_dag()


async def honest_read(rpc: str, args: dict[str, Any]) -> dict[str, Any]:
    registry = ToolRegistry()
    for tool in builtin_tools(None, rpc):
        registry.register(tool)
    return dict(await registry.call("chain_read", args))


@pytest.mark.anvil
async def test_defence_a_chain_read_pinned_past_every_final_block_is_judged(
    anvil: Anvil, actors: Actors
) -> None:
    """HIGH. Who gains: the node (and whoever pays it for an answer): it shows the agent any
    balance or contract answer it likes and is cleared by every validator.

    Attack: the agent reads ``balance`` at ``latest`` (no ``block`` argument, so no block is asked
    for and any pinned number passes `check_chain_read`'s "asked" test). The node records a result
    pinned to block ``head + 10**6`` with a made-up hash and the value of its choice. The validator
    finds the block "not final here yet" and returns *unverifiable* for the receipt, without a
    finding and without ``local``: `Validator._settle` records it as checked (``ok or
    unverifiable``), so it is never re-read, never challenged, never voted on. The same holds for
    "could not be re-read here" (the validator's RPC failing at that moment) and for a validator
    with no RPC configured. The control shows the same lie pinned to a real final block is caught.

    Fix (by design): a read happened before the task's receipt was committed, and a block final
    then is below the batch's commit block, which the validator knows from the chain: a pinned
    number at or above the commit block is a finding (``tool``), decided without any RPC. What is
    left ("not final here yet" below the commit block, the validator's RPC failing) is this
    validator's state, not the node's word: return it as a local failure (``local=True``), so the
    entry is checked again with back-off while its window is open (`recheck_at`), as a scoring
    failure is.
    """
    address = "0x" + "5a" * 20  # no ether: any other value is the node's lie
    task_input = {"address": address}
    args = {"method": "balance", "address": address}
    tools = [chain_read_record(anvil.url)]
    lim = limits(4)
    req, task_id = signed(BalanceOracle, task_input, tools, lim, MODEL_ID)
    honest = await honest_read(anvil.url, args)
    forged_value = type(honest["value"])(10**21)

    def trace_with(result: dict[str, Any]) -> dict[str, Any]:
        event = {
            "kind": "tool",
            "name": "chain_read",
            "args": args,
            "deterministic": False,
            "result": result,
            "error": None,
        }
        return doc(BalanceOracle, task_id, task_input, [event], f"balance {result['value']}", tools, lim)

    store = DictStore()
    clean = await verify(store, req, task_id, trace_with(honest), BalanceOracle, anvil.url)
    assert clean.ok and clean.unverifiable is None, (clean.findings, clean.unverifiable)
    # the lie pinned to the real final block: caught (the pinned design holds there)
    caught = await verify(
        store, req, task_id, trace_with({**honest, "value": forged_value}), BalanceOracle, anvil.url
    )
    assert [f.check.value for f in caught.findings] == ["tool"], caught.findings
    # the same lie pinned past every final block: a final "unverifiable", recorded as checked
    ahead = {
        **honest,
        "block": honest["block"] + 10**6,
        "block_hash": "0x" + "ab" * 32,
        "value": forged_value,
    }
    verdict = await verify(store, req, task_id, trace_with(ahead), BalanceOracle, anvil.url)
    assert "not final here yet" in str(verdict.unverifiable) or verdict.findings
    assert not final_unverifiable(verdict), (
        "a chain_read the node pinned past every final block ends as a final unverifiable verdict: "
        f"{verdict.unverifiable}"
    )


# -- 2. recorded confirmations: a quadratic search on the event loop ----------------------------------


def repeat_payer_trace(times: int) -> tuple[TaskRequest, str, dict[str, Any]]:
    """A clean trace of `RepeatPayer` paying ``times`` times, each call confirmed by its user."""
    task_input = {"to": "0x" + "99" * 20, "amount": 5, "times": times}
    args = {"to": task_input["to"], "amount": 5}
    lim = limits(times)
    req, task_id = signed(RepeatPayer, task_input, [TRANSFER_TOOL], lim, MODEL_ID)
    request_hash = bytes.fromhex(task_id[2:])
    events = []
    for k in range(times):  # occurrence k of one action: the user signed each one
        signature = sign_confirmation(
            Confirmation(request_hash, action_hash("bank.transfer", args, k)), DOMAIN, USER
        )
        events.append(
            {
                "kind": "tool",
                "name": "bank.transfer",
                "args": args,
                "deterministic": False,
                "result": "sent",
                "error": None,
                "confirmation": "0x" + signature.hex(),
            }
        )
    return req, task_id, doc(RepeatPayer, task_id, task_input, events, "paid", [TRANSFER_TOOL], lim)


async def test_defence_recorded_confirmations_cost_the_replay_linear_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """MEDIUM. Who gains: a node (with a user account of its own) that wants validators to give up:
    receipts that replay clean and are never challenged, so nothing is slashed, yet hold each
    validator's event loop for minutes, past reveal phases (vote bonds lost) and past the windows of
    the receipts a colluding node cheats in.

    `_recorded_confirmations` finds, for each recorded signature, the occurrence it recovers to the
    user under, trying ``k = 0, 1, ...`` up to the number of tool calls: one ``action_hash`` and one
    EIP-712 recovery each (~0.27 ms here), synchronously inside the async replay. For E calls of one
    action the k-th signature is found at its k-th try: E(E+1)/2 recoveries for the E the node made.
    At ``MAX_TRACE_EVENTS`` (1,024 calls, ~280 KB of trace, under the 384 KiB cap): 524,800, ~140 s
    per receipt; signatures by another key (a trace that then diverges) never stop early: E^2,
    ~280 s. A trace that also writes memory is replayed by every validator, sampled or not
    (`WriteLog._replay_writer`), and again in full when checked. Measured here on 64 calls (counted,
    not timed).

    Fix (by design): record the occurrence with the call (``"occurrence"`` in the tool event, as the
    dispatcher computes it; the replay's own count must equal it, a divergence otherwise), so each
    signature is recovered once, under the one action hash it must sign: linear, as on the node. (A
    per-trace bound on confirmed calls would cap the harm without closing it.)
    """
    times = 64
    req, task_id, trace = repeat_payer_trace(times)
    real = replay_module.recover_confirmation
    recoveries = 0

    def counted(*a: Any, **k: Any) -> str:
        nonlocal recoveries
        recoveries += 1
        return real(*a, **k)

    monkeypatch.setattr(replay_module, "recover_confirmation", counted)
    started = time.perf_counter()
    verdict = await verify(DictStore(), req, task_id, trace, RepeatPayer)
    spent = time.perf_counter() - started
    assert verdict.ok and verdict.unverifiable is None, verdict.findings  # an honest-looking receipt
    assert recoveries <= 2 * times, (
        f"{recoveries} signature recoveries ({spent:.1f} s) to replay {times} confirmed calls: "
        f"quadratic (at 1,024 calls ~{1024 * 1025 // 2} recoveries on the event loop)"
    )


async def test_defence_a_confirmation_of_an_occurrence_the_agent_does_not_make_is_caught() -> None:
    """The control of 2: the same trace with the first two signatures swapped (each names another
    occurrence than its call's) is refused by the replay, so the search above is not where a cheat
    hides, only where the cost is."""
    req, task_id, trace = repeat_payer_trace(3)
    events = list(trace["events"])
    events[0], events[1] = (
        {**events[0], "confirmation": events[1]["confirmation"]},
        {**events[1], "confirmation": events[0]["confirmation"]},
    )
    verdict = await verify(DictStore(), req, task_id, {**trace, "events": events}, RepeatPayer)
    assert not verdict.ok and verdict.unverifiable is None
    assert {f.check.value for f in verdict.findings} == {"replay"}, verdict.findings


# -- 3. a format this validator cannot load ------------------------------------------------------------


class OneCopyScorer(StandInScorer):
    """A validator that holds its weights in float32 only: loading a second format fails, as it
    does where memory holds one copy of a large model (the real `ModelScorer.for_compute` loads
    the whole model again in that format, on first use)."""

    def for_compute(self, compute: str) -> Any:
        if compute == self.dtype:
            return self
        raise MemoryError(f"cannot hold a {compute} copy of the weights beside the float32 one")


async def test_defence_a_format_the_validator_cannot_load_is_checked_again() -> None:
    """MEDIUM. Who gains: a node that serves its model in the format validators struggle to hold
    (e.g. float32 beside their float16-weights, or float16-weights beside a bfloat16 screen).

    A validator declares on chain the served ids of *every* compute format of its weights
    (`Validator._declare_models`: ``COMPUTE_PRECISIONS``) without loading any but its own, so a
    client signs any of them (`coverage`). The first receipt of another format makes `_decider`
    load that format (`ModelScorer.for_compute`); when the load fails, `_stage` returns
    "cannot score in ... here" as a plain *unverifiable* verdict, not a local failure, so
    `_settle` records it as checked: never retried, never challenged. Where the load always fails
    (memory), every receipt of that format is cleared by that validator; scoring failures, by
    contrast, are local (`_score`) and checked again.

    Fix (by design): a validator declares only the formats it has loaded (or loads them at start and
    drops from its declaration those that fail), and a load failure at check time is a local failure
    (``local=True``: checked again with back-off while the window is open, `recheck_at`).
    """
    f16 = served_model_id(WEIGHTS, "float16-weights")
    task_input = {"q": "where are my keys?"}
    ns_events = empty_search("where are my keys?")
    lim = limits(8)
    req, task_id = signed(MemoryQuestion, task_input, [], lim, f16)
    trace = doc(MemoryQuestion, task_id, task_input, ns_events, "unknown", [], lim, f16, "float16-weights")
    verdict = await verify(DictStore(), req, task_id, trace, MemoryQuestion, scorer=OneCopyScorer())
    assert "cannot score in float16-weights here" in str(verdict.unverifiable), verdict
    assert not final_unverifiable(verdict), (
        "the validator's own failure to load a format it declared is recorded as checked: "
        f"{verdict.unverifiable}"
    )


# -- 4. finish reasons ----------------------------------------------------------------------------------


def call(output: tuple[int, ...], finish: str, max_new: int) -> LLMCall:
    return LLMCall(
        call=0,
        model_id=MODEL_ID,
        prompt_ids=(5, 6, 7),
        output_ids=output,
        logprobs=tuple(-0.1 for _ in output),
        fingerprints=None,
        temperature=0.0,
        top_p=1.0,
        seed=1,
        max_new_tokens=max_new,
        stop_token_ids=None,
        finish_reason=finish,
        text=None,
    )


def test_defence_finish_length_on_a_stop_token_is_refused() -> None:
    """LOW. Who gains: the node chooses, for every call whose output ends on its stop token at
    exactly its budget, whether the agent reads ``"stop"`` or ``"length"`` (`ChatResult
    .finish_reason`, documented to agents: an agent that asks again or continues on ``"length"``
    does more paid work, one that reports "truncated" answers otherwise); the OpenAI gateway
    returns it to the caller (`chat_result.finish_reason`), whose client may retry with a new task.

    The engine checks the stop token first (`LLMEngine._finish_if_done`: ``stop`` before
    ``length``), so no honest node records ``"length"`` on an output that ends on one; the replay
    takes the finish reason from the tape, and `check_shape` asks of ``"length"`` only that the
    output holds ``max_new_tokens`` tokens.

    Fix (by design): ``finish_reason`` is a function of the output, the budget and the stop tokens
    and strings, as the engine decides it: `check_shape` derives it (stop token or stop string at
    the end -> ``"stop"``, else the budget reached -> ``"length"``) and flags any other value.
    """
    eos = (0,)
    honest = check_shape(call((9, 8, 0), "stop", 3), eos)
    assert honest == []
    # the control: "stop" without a stop token at the end is caught (truncation)
    assert [f.check.value for f in check_shape(call((9, 8, 7), "stop", 4), eos)] == ["llm.finish"]
    flipped = check_shape(call((9, 8, 0), "length", 3), eos)
    assert flipped, "finish 'length' on an output that ends on its stop token is accepted"


def test_defence_the_task_seed_does_not_depend_on_how_the_id_is_spelt() -> None:
    """A node writes the task id into the trace (bound to the receipt case-insensitively), and the
    replay derives the base seed from that text: were the seed case-sensitive, the node could pick
    among up to 2^64 spellings for the sampled draws it likes. `task_seed` reads the hex as a
    number, so every spelling gives one seed."""
    task_id = "0x" + "ab" * 32
    assert task_seed(task_id) == task_seed(task_id.upper().replace("0X", "0x")) == task_seed("0x" + "AB" * 32)
    assert task_seed(task_id) == int("ab" * 8, 16)
