"""The agent profile, ``supernet/agent-profile/v1``: what a signed ``agentHash`` names.

A task's result depends on the agent's code and on the environment the node runs it in: the
budget (LLM calls, tokens per call and per task, tool calls, file size, memory and files on or off),
the tools it is offered, with whether each is deterministic (validators re-run it) and
irreversible (it needs the user's confirmation), and the agents it may call with what each gets.
If only the code were signed, the environment would be the node's word per task: a node could run
one task with ``max_new_tokens = 1`` and its one-token answer would replay clean, or relabel an
irreversible tool as reversible and call it without a confirmation. So the signed ``agentHash`` is
the hash of the whole profile:

    agentHash = sha256(RFC 8785 JSON of the profile)

A node lists each agent's profile and its hash (``GET /v1/node``, ``agentCards``); a client checks
the hash, may check the limits against its own minimums, and signs it. The node runs the task under
exactly that profile or refuses it; a trace records the profile's parts (``agent``, ``limits``,
``tools``, ``agents``), and a validator recomputes the hash from them, so a trace whose environment is not the
signed one is a finding, whatever the replay of it says. The replay holds a called agent to the
profile's entry for it: its code hash, and the tools, memory and files it gets (what its caller
has, narrowed by the entry).

>>> from supernet.sdk.formats.trace import Trace, example_dag
>>> p = AgentProfile.of_trace(Trace.from_dag(example_dag()))
>>> AgentProfile.from_json(p.to_json()) == p, p.hash() == p.hash(), len(p.hash())
(True, True, 66)
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from supernet.sdk.chain.receipts import InputEncodingError, canonical_input
from supernet.sdk.formats.fields import FormatError, items, record
from supernet.sdk.formats.trace import AgentRef, CallableAgent, Limits, ToolDescription, callable_agents

if TYPE_CHECKING:
    from supernet.sdk.formats.trace import Trace

PROFILE_TYPE = "supernet/agent-profile/v1"


@dataclass(frozen=True)
class AgentProfile:
    """One agent as a node runs it: code, limits and tools (sorted by name).

    Attributes:
        agent: The agent's id (it names the task's memory and file namespace) and code hash.
        limits: The budget and the memory/files switches every task of the agent runs under.
        tools: The tools the agent is offered, as it sees them.
        agents: The agents it may call (``ctx.agents.call``), each with what it gets when called
            (by id; one it may not call is not listed). A node lists the same for every agent.
    """

    agent: AgentRef
    limits: Limits
    tools: tuple[ToolDescription, ...]
    agents: tuple[CallableAgent, ...] = ()

    @classmethod
    def of(
        cls,
        agent: AgentRef,
        limits: Limits,
        tools: Sequence[ToolDescription],
        agents: Sequence[CallableAgent] = (),
    ) -> AgentProfile:
        """The profile with its tools and callable agents in the one order that is hashed."""
        return cls(
            agent,
            limits,
            tuple(sorted(tools, key=lambda t: t.name)),
            tuple(sorted(agents, key=lambda a: a.id)),
        )

    @classmethod
    def of_trace(cls, trace: Trace) -> AgentProfile:
        """The profile a trace says its task ran under."""
        return cls.of(trace.agent, trace.limits, trace.tools, trace.agents or ())

    def code_hashes(self) -> tuple[str, ...]:
        """The code hashes a user signs with the profile: its agent's, then every callable
        agent's (by id), each once. A client signs only if validators replay them all
        (`supernet.sdk.client.signable`)."""
        hashes = [self.agent.code_hash.lower(), *(a.code_hash.lower() for a in self.agents)]
        return tuple(dict.fromkeys(hashes))

    def to_json(self) -> dict[str, Any]:
        """The profile as JSON (what is hashed, and what ``agentCards`` list)."""
        return {
            "type": PROFILE_TYPE,
            "agent": self.agent.to_dag(),
            "limits": self.limits.to_dag(),
            "tools": [t.to_dag() for t in self.tools],
            "agents": [a.to_dag() for a in self.agents],
        }

    @classmethod
    def from_json(cls, obj: Any) -> AgentProfile:
        """Read a listed profile (`FormatError` naming the field that is not one)."""
        r = record(obj, "profile", ("type", "agent", "limits", "tools", "agents"))
        if r["type"] != PROFILE_TYPE:
            raise FormatError(f"profile.type must be {PROFILE_TYPE!r}, not {r['type']!r}")
        tools = items(r["tools"], "profile.tools", ToolDescription.from_dag)
        if len({t.name for t in tools}) != len(tools):
            raise FormatError("profile.tools lists a tool twice")
        return cls.of(
            AgentRef.from_dag(r["agent"], "profile.agent"),
            Limits.from_dag(r["limits"], "profile.limits"),
            tools,
            callable_agents(r["agents"], "profile.agents"),
        )

    def hash(self) -> str:
        """``0x`` hex of sha256 over the profile's RFC 8785 JSON: the signed ``agentHash``.

        Raises:
            InputEncodingError: a tool's parameter schema has no canonical JSON form, or a number
                of which RFC 8785 would hide the type (`check_numbers`); a node's tool registry
                refuses such a tool, so only a forged profile (or trace) has one.
        """
        doc = self.to_json()
        check_numbers(doc)
        return "0x" + hashlib.sha256(canonical_input(doc)).hexdigest()


def check_numbers(value: Any, depth: int = 0) -> None:
    """Raise `InputEncodingError` if ``value`` holds a float that is not finite, or whose value is
    an integer: RFC 8785 writes ``1.0`` and ``1`` (and ``0``, ``0.0``, ``-0.0``) alike, while the
    trace's dag-cbor and an agent reading a schema tell them apart, so one hash would name several
    environments and a node could pick among them per task."""
    if depth > 64:
        raise InputEncodingError("the profile nests deeper than 64 levels")
    if isinstance(value, float) and (not math.isfinite(value) or value.is_integer()):
        raise InputEncodingError(f"the float {value!r} has no one spelling: write an integer as one")
    if isinstance(value, Mapping):
        for item in value.values():
            check_numbers(item, depth + 1)
    elif isinstance(value, list | tuple):
        for item in value:
            check_numbers(item, depth + 1)


def profile_hash_or_reason(profile: AgentProfile) -> str:
    """The profile's hash, or why it has none (a reason never equals a hash, so comparing the two
    reports the mismatch)."""
    try:
        return profile.hash()
    except InputEncodingError as exc:
        return f"no canonical form: {exc}"


def profiles_of(cards: Sequence[Mapping[str, Any]]) -> dict[str, AgentProfile]:
    """Agent id -> profile of the ``agentCards`` that list one (unreadable ones are left out)."""
    out: dict[str, AgentProfile] = {}
    for card in cards:
        try:
            out[str(card["id"])] = AgentProfile.from_json(card["profile"])
        except (FormatError, KeyError, TypeError):
            continue
    return out
