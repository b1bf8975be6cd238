"""The agent profile (``supernet/agent-profile/v1``): what a signed ``agentHash`` covers, and the
client's check of what it signs.

The profile binds the limits and tool specs a replay re-applies to the user's signature (they used
to be the node's word per task: `tests/unit/test_validator_attacks3.py`
``test_a_budget_error_from_self_chosen_limits_is_caught``). Here: every part of it changes the
hash, one profile has one hash whatever order its tools come in, reading is strict, a kernel's
listed profile is the one its traces hash to, and a client refuses to sign a hash that is not the
listed profile's.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from supernet.node.kernel.access import NodePolicy
from supernet.node.kernel.kernel import Kernel, KernelConfig
from supernet.sdk.client.types import ClientError, agent_profile
from supernet.sdk.formats.fields import FormatError
from supernet.sdk.formats.profile import AgentProfile
from supernet.sdk.formats.trace import AgentRef, Limits, ToolDescription, Trace
from supernet.sdk.node_api import AgentCard, NodeInfo

from tests.unit.test_validator_attacks import registry
from tests.unit.test_validator_attacks3 import AGENTS, Calc, FakeEngine, NoEmbedder, node_task, node_trace

CALC = ToolDescription("calculator", "Arithmetic.", {"type": "object"}, True, False)
PAY = ToolDescription("bank.transfer", "Send money.", {"type": "object"}, False, True)
PROFILE = AgentProfile.of(
    AgentRef("calc", "0x" + "ab" * 32), Limits(True, False, 8, 1024, 64, 8, 0), [CALC, PAY]
)


def test_one_profile_one_hash_whatever_the_tool_order() -> None:
    shuffled = AgentProfile.of(PROFILE.agent, PROFILE.limits, [PAY, CALC])
    assert shuffled == PROFILE and shuffled.hash() == PROFILE.hash()
    assert [t.name for t in PROFILE.tools] == ["bank.transfer", "calculator"]
    assert AgentProfile.from_json(PROFILE.to_json()) == PROFILE


@pytest.mark.parametrize(
    "change",
    [
        {"agent": AgentRef("calc-v2", "0x" + "ab" * 32)},  # the id names the memory namespace
        {"agent": AgentRef("calc", "0x" + "cd" * 32)},
        *({"limits": dataclasses.replace(PROFILE.limits, **{f.name: v})} for f, v in zip(
            dataclasses.fields(Limits), (False, True, 7, 1023, 1, 0, 1), strict=True)),
        {"tools": (PROFILE.tools[0], dataclasses.replace(CALC, description="Arithmetic!"))},
        {"tools": (PROFILE.tools[0], dataclasses.replace(CALC, parameters={"type": "array"}))},
        {"tools": (dataclasses.replace(PAY, irreversible=False), CALC)},  # relabelled reversible
        {"tools": (PROFILE.tools[0], dataclasses.replace(CALC, deterministic=False))},  # never re-run
        {"tools": (CALC,)},  # a tool left out
    ],
)  # fmt: skip
def test_every_part_of_the_profile_changes_the_hash(change: dict[str, Any]) -> None:
    assert dataclasses.replace(PROFILE, **change).hash() != PROFILE.hash()


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: {**d, "type": "supernet/agent-profile/v0"}, "profile.type"),
        (lambda d: {**d, "extra": 1}, "extra"),
        (lambda d: {k: v for k, v in d.items() if k != "limits"}, "limits"),
        (lambda d: {**d, "limits": {**d["limits"], "max_new_tokens": "512"}}, "max_new_tokens"),
        (lambda d: {**d, "limits": {**d["limits"], "max_new_tokens": -1}}, "max_new_tokens"),
        (lambda d: {**d, "tools": [d["tools"][0], d["tools"][0]]}, "twice"),
        (lambda d: {**d, "tools": [{**d["tools"][0], "irreversible": "no"}]}, "irreversible"),
    ],
)
def test_reading_a_profile_is_strict(edit: Any, match: str) -> None:
    with pytest.raises(FormatError, match=match):
        AgentProfile.from_json(edit(PROFILE.to_json()))


async def test_a_kernels_listed_profile_is_the_one_its_traces_hash_to(tmp_path: Any) -> None:
    """What a node lists (`Kernel.profile`) is what a validator recomputes from the node's trace;
    another policy lists another profile (so a user signing one can tell)."""
    listed = stand_in(NodePolicy()).profile("calc")
    _, task_id = node_task(Calc, {"expr": "6 * 7"})
    trace = Trace.from_dag(await node_trace(tmp_path, Calc, {"expr": "6 * 7"}, task_id))
    assert AgentProfile.of_trace(trace) == listed
    assert "calculator" in {t.name for t in listed.tools}
    for policy in (
        NodePolicy(max_new_tokens=1),
        NodePolicy(allowed_tools=frozenset()),
        NodePolicy(allow_memory=False),
    ):
        assert stand_in(policy).profile("calc").hash() != listed.hash()


def stand_in(policy: NodePolicy) -> Kernel:
    """A kernel under ``policy`` (never started: `Kernel.profile` needs no engine or store)."""
    return Kernel(
        FakeEngine(), None, KernelConfig(node_policy=policy), agents=registry(AGENTS), embedder=NoEmbedder()
    )


def node_info(cards: list[dict[str, Any]], agents: dict[str, str]) -> NodeInfo:
    return NodeInfo(
        address="0x" + "11" * 20, chainId=31337, verifyingContract="0x" + "22" * 20, taskFee=1,
        models=["0x" + "33" * 32], modelNames={}, agents=agents,
        agentCards=[AgentCard.model_validate(c) for c in cards],
    )  # fmt: skip


def card(profile: dict[str, Any] | None, agent_hash: str) -> dict[str, Any]:
    return {"id": "calc", "codeHash": "0x" + "ab" * 32, "agentHash": agent_hash, "profile": profile}


def test_the_client_signs_only_the_hash_of_the_listed_profile() -> None:
    """A node that lists a generous profile but asks for the hash of a stingier one (the one it
    means to run) is refused before anything is signed; so is one that lists none."""
    honest = PROFILE.hash()
    assert agent_profile(node_info([card(PROFILE.to_json(), honest)], {"calc": honest}), "calc") == (
        honest,
        PROFILE,
    )
    stingy = dataclasses.replace(PROFILE, limits=dataclasses.replace(PROFILE.limits, max_new_tokens=1)).hash()
    cases = [
        (node_info([card(PROFILE.to_json(), honest)], {"calc": stingy}), "not the hash of the profile"),
        (node_info([card(None, honest)], {"calc": honest}), "lists no profile"),
        (node_info([], {"calc": honest}), "lists no profile"),
        (
            node_info([card({**PROFILE.to_json(), "tools": 1}, honest)], {"calc": honest}),
            "unreadable profile",
        ),
        (node_info([card(PROFILE.to_json(), honest)], {}), "does not run agent"),
    ]
    for info, match in cases:
        with pytest.raises(ClientError, match=match):
            agent_profile(info, "calc")
