"""What a validator's replay pays for the user confirmations a trace records, and what it still
refuses (`supernet.node.kernel.replay._recorded_confirmations`, `_TapeConfirmations`).

A recorded confirmation is the user's EIP-712 signature of one occurrence of an irreversible call
(`supernet.sdk.chain.receipts.action_hash`). The replay numbers the calls of each action itself (the
dispatcher's count, as on the node) and checks each recorded signature under the one hash its call
must sign: one recovery per confirmed call, where it used to try every occurrence below the number of
tool calls (E(E+1)/2 recoveries for E repeats of one payment, ~140 s of a blocked event loop at
``MAX_TRACE_EVENTS``: tests/unit/test_review_rational_node2.py). A signature moved onto another
occurrence or call, a missing one and one by another key are refused, as before.
"""

from __future__ import annotations

from typing import Any

import pytest
from eth_account import Account
from supernet.node.agents.base import Agent
from supernet.node.agents.context import AgentContext
from supernet.node.agents.registry import AgentRegistry
from supernet.node.kernel import access as access_module
from supernet.node.kernel import replay as replay_module
from supernet.node.kernel.agent_run import task_seed
from supernet.sdk.chain.eip712 import Confirmation, TaskRequest, sign_confirmation
from supernet.sdk.chain.receipts import action_hash
from supernet.sdk.formats.profile import AgentProfile
from supernet.sdk.formats.trace import AgentRef, Limits, ToolDescription
from supernet.validator.tool_check import RegistryRunner
from supernet.validator.verifier import Manifest, Verifier

from tests.unit.test_validator_attacks import (
    DOMAIN,
    MODEL_ID,
    NODE,
    TRANSFER_TOOL,
    USER,
    DictStore,
    StandInScorer,
    commit_entry,
)
from tests.unit.test_validator_attacks import signed_task as signed_request

VALIDATOR = "0x" + "44" * 20
TO = "0x" + "99" * 20


class Payer(Agent):
    """Pays ``amounts[i]`` to ``to`` in order (an amount repeated: one action made several times)."""

    agent_id = "confirmed-payer"
    description = "Pays each amount of a list to one address."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        for amount in input["amounts"]:
            await ctx.tools.call("bank.transfer", {"to": input["to"], "amount": amount})
        return "paid"


def limits(tool_calls: int) -> dict[str, Any]:
    return {
        "memory": False,
        "storage": False,
        "max_llm_calls": 1,
        "max_llm_tokens": 16,
        "max_new_tokens": 16,
        "max_tool_calls": tool_calls,
        "max_file_bytes": 0,
    }


def signed_task(amounts: list[int]) -> tuple[TaskRequest, str, dict[str, Any], dict[str, Any]]:
    """The user's signed request for `Payer` paying ``amounts``: (request, task id, input, limits)."""
    task_input = {"to": TO, "amounts": amounts}
    lim = limits(len(amounts))
    profile = AgentProfile.of(
        AgentRef(Payer.agent_id, Payer.code_hash()),
        Limits.from_dag(lim, "limits"),
        [ToolDescription.from_dag(TRANSFER_TOOL, "tool")],
    ).hash()
    req, task_id = signed_request(Payer, task_input, profile)
    return req, task_id, task_input, lim


def confirmation(task_id: str, args: dict[str, Any], occurrence: int, key: Any = USER) -> str:
    digest = action_hash("bank.transfer", args, occurrence)
    return "0x" + sign_confirmation(Confirmation(bytes.fromhex(task_id[2:]), digest), DOMAIN, key).hex()


def clean_trace(amounts: list[int]) -> tuple[TaskRequest, str, dict[str, Any]]:
    """The trace an honest node records: every call confirmed by the user, for its occurrence."""
    req, task_id, task_input, lim = signed_task(amounts)
    seen: dict[int, int] = {}
    events = []
    for amount in amounts:
        args = {"to": TO, "amount": amount}
        occurrence = seen.get(amount, 0)
        seen[amount] = occurrence + 1
        events.append(
            {
                "kind": "tool",
                "name": "bank.transfer",
                "args": args,
                "deterministic": False,
                "result": "sent",
                "error": None,
                "confirmation": confirmation(task_id, args, occurrence),
            }
        )
    trace = {
        "type": "supernet/trace/v1",
        "task_id": task_id,
        "user": USER.address,
        "fee": 100,
        "agent": {"id": Payer.agent_id, "code_hash": Payer.code_hash()},
        "model_id": MODEL_ID,
        "input": task_input,
        "seed": task_seed(task_id),
        "limits": lim,
        "tools": [TRANSFER_TOOL],
        "engine": {"device": "cpu", "dtype": "float32"},
        "output": "paid",
        "status": "ok",
        "error": None,
        "events": events,
        "witness": {"blocks": [], "files": []},
    }
    return req, task_id, trace


def unconfirmed(digest: str) -> str:
    """The replayed refusal of a call without a valid confirmation (an honest node's words too)."""
    refusal = f"tool bank.transfer is irreversible: no confirmation for action 0x{digest}"
    return f"ConfirmationRequiredError: {refusal}"


async def verify(req: TaskRequest, task_id: str, trace: dict[str, Any]) -> Any:
    """Commit ``trace`` as entry 0 of a batch and run the whole `Verifier` on it."""
    agents = AgentRegistry()
    agents.register(Payer)
    store = DictStore()
    entry = commit_entry(store, req, task_id, trace)
    verifier = Verifier(store, StandInScorer(), RegistryRunner(store, None), DOMAIN, VALIDATOR, agents=agents)
    return await verifier.verify(1, NODE.address, 0, Manifest({0: entry}))


async def replayed(trace: dict[str, Any]) -> replay_module.ReplayResult:
    return await replay_module.replay(trace, Payer, None, domain=DOMAIN)


def count_recoveries(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts the ECDSA recoveries of confirmations: the replay's own and its access manager's."""
    counts = {"replay": 0, "access": 0}
    for name, module in (("replay", replay_module), ("access", access_module)):
        real = module.recover_confirmation

        def counted(*a: Any, _name: str = name, _real: Any = real, **k: Any) -> str:
            counts[_name] += 1
            return str(_real(*a, **k))

        monkeypatch.setattr(module, "recover_confirmation", counted)
    return counts


@pytest.mark.parametrize("times", [1, 8, 64])
async def test_each_recorded_confirmation_is_recovered_once(
    monkeypatch: pytest.MonkeyPatch, times: int
) -> None:
    """E repeats of one payment, each confirmed: the replay recovers E signatures (each under the
    hash of its own occurrence), and its access manager checks each call once, as on the node."""
    req, task_id, trace = clean_trace([5] * times)
    counts = count_recoveries(monkeypatch)
    verdict = await verify(req, task_id, trace)
    assert verdict.ok and verdict.unverifiable is None, verdict.findings
    assert counts == {"replay": times, "access": times}


async def test_distinct_actions_and_repeats_replay_clean_linearly(monkeypatch: pytest.MonkeyPatch) -> None:
    """Interleaved actions (each with its own count of occurrences) replay clean, one recovery each."""
    amounts = [5, 7, 5, 9, 7, 5, 5]
    _, _, trace = clean_trace(amounts)
    counts = count_recoveries(monkeypatch)
    result = await replayed(trace)
    assert result.divergences == [] and result.status == "ok", result.divergences
    assert counts == {"replay": len(amounts), "access": len(amounts)}
    assert [e.get("confirmation") for e in result.events] == [e["confirmation"] for e in trace["events"]]


async def test_a_confirmation_moved_onto_another_occurrence_is_a_replay_finding() -> None:
    """The first two signatures swapped: each names the other's occurrence of the same call."""
    req, task_id, trace = clean_trace([5, 5, 5])
    events = list(trace["events"])
    events[0], events[1] = (
        {**events[0], "confirmation": events[1]["confirmation"]},
        {**events[1], "confirmation": events[0]["confirmation"]},
    )
    moved = {**trace, "events": events}
    verdict = await verify(req, task_id, moved)
    assert not verdict.ok and verdict.unverifiable is None
    assert {f.check.value for f in verdict.findings} == {"replay"}, verdict.findings
    result = await replayed(moved)
    assert result.divergences and result.divergences[0].index == 0
    # refused as a call without a confirmation (the words of an honest node's refusal)
    digest = action_hash("bank.transfer", {"to": TO, "amount": 5}, 0).hex()
    assert result.events[0]["kind"] == "error"
    assert result.events[0]["error"] == unconfirmed(digest)


async def test_a_confirmation_moved_onto_another_call_is_a_replay_finding() -> None:
    """A signature of one payment recorded on another (other arguments, same occurrence number)."""
    req, task_id, trace = clean_trace([5, 7])
    events = list(trace["events"])
    events[1] = {**events[1], "confirmation": events[0]["confirmation"]}
    verdict = await verify(req, task_id, {**trace, "events": events})
    assert not verdict.ok and verdict.unverifiable is None
    assert {f.check.value for f in verdict.findings} == {"replay"}, verdict.findings


async def test_a_later_occurrence_signed_for_the_first_call_is_refused() -> None:
    """A node that drops the first call's event cannot let the second one's signature stand for it."""
    _, _, trace = clean_trace([5, 5])
    events = [trace["events"][1], trace["events"][1]]  # occurrence 1's signature on both calls
    result = await replayed({**trace, "events": events})
    assert result.divergences and result.divergences[0].index == 0


@pytest.mark.parametrize("change", ["missing", "other key", "unreadable"])
async def test_a_missing_or_invalid_confirmation_is_a_replay_finding(
    monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    """No signature, one by another key, or bytes that are none: the call is refused at once
    (the agent stops there), with a linear number of recoveries even for a long trace."""
    times = 32
    req, task_id, trace = clean_trace([5] * times)
    events = list(trace["events"])
    last = events[-1]
    if change == "missing":
        last = {k: v for k, v in last.items() if k != "confirmation"}
    elif change == "other key":
        other = Account.from_key("0x" + "07" * 32)
        last = {**last, "confirmation": confirmation(task_id, last["args"], times - 1, other)}
    else:
        last = {**last, "confirmation": "0x" + "00" * 65}
    events[-1] = last
    broken = {**trace, "events": events}
    counts = count_recoveries(monkeypatch)
    verdict = await verify(req, task_id, broken)
    assert not verdict.ok and verdict.unverifiable is None
    assert {f.check.value for f in verdict.findings} == {"replay"}, verdict.findings
    assert counts["replay"] <= times and counts["access"] <= times, counts
    result = await replayed(broken)
    assert result.divergences and result.divergences[0].index == times - 1
    digest = action_hash("bank.transfer", last["args"], times - 1).hex()
    assert result.events[-1]["error"] == unconfirmed(digest)


async def test_without_a_domain_a_confirmed_call_is_refused() -> None:
    """A validator without the deployment's domain checks no signature and allows no such call."""
    _, _, trace = clean_trace([5])
    result = await replay_module.replay(trace, Payer, None)
    assert result.divergences and result.divergences[0].index == 0
    digest = action_hash("bank.transfer", {"to": TO, "amount": 5}, 0).hex()
    assert result.events[0]["error"] == unconfirmed(digest)
