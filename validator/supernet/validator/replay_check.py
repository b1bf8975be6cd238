"""Replaying the task's agent against the trace, as verdict findings (see `supernet.node.kernel.replay`).

This is what binds the answer to the model's work: the scorer proves each recorded LLM call is the
model's, the replay proves those are the calls the agent makes on the signed input (prompts,
parameters, seeds, tool arguments, memory and storage keys, in order) and that the answer is what
the agent returns given their results. A node that fabricates the answer, drops or adds calls, or
runs the model on another prompt than the agent built gets a `Check.REPLAY` finding naming the
syscall.

The validator replays only agents it has installed: the registry must hold a class with the code
hash the user signed (the built-ins, or the operator's own agents registered the same way on
nodes and validators), looked up by that hash alone. Another hash makes the receipt
*unverifiable* to this validator; a trace naming the agent by another id than the installed one of
that hash is a `Check.TRACE` finding (the id is the node's word; it must not decide whether the
trace is checked). An agent call (``agent.call`` event) is looked up the same way, by the code hash
the signed profile lists for the child (and the caller's id): a child at a hash installed nowhere
here (another version of the id, or code this validator lacks) makes the receipt unverifiable, as
for the top agent; a child named by an id that is not one of the agents installed at its hash is a
`Check.REPLAY` finding, as the id mismatch on the top agent is a `Check.TRACE` one. A
packaged agent whose files changed since this validator loaded it is unverifiable too
(`AgentRegistry.check_unchanged`: its imported code is not the code its files hash to).
The children's events are inline in the trace: their LLM calls are scored like the caller's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from supernet.node.agents.registry import AgentRegistry
from supernet.node.kernel.agent_run import spec_record
from supernet.node.kernel.errors import AgentNotAllowedError
from supernet.node.kernel.replay import MalformedContext, ReplayUnavailable, check_seed, context_of, replay
from supernet.sdk.chain.eip712 import Domain
from supernet.sdk.formats.trace import Trace
from supernet.validator.evidence import Check, Finding
from supernet.validator.tool_check import is_mcp


@dataclass(frozen=True)
class ReplayOutcome:
    """Findings of the replay, or why it could not run (``unverifiable``); the roots the task
    started from (`ReplayResult.first_roots`), for `supernet.validator.origin_check`."""

    findings: tuple[Finding, ...] = ()
    unverifiable: str | None = None
    first_roots: dict[tuple[str, str], str | None] = field(default_factory=dict)


async def check_replay(
    trace: Trace, agents: AgentRegistry, tokenizer: Any, tools: Any = None, domain: Domain | None = None
) -> ReplayOutcome:
    """Replay the trace's agent; findings for every divergence.

    Args:
        trace: the typed trace (well-formed: `supernet.validator.trace_view.parse_trace` read it).
        agents: the agents this validator has installed.
        tokenizer: the model's tokenizer.
        tools: the validator's tool runner: a recorded spec of a tool it knows must equal its own.
        domain: the deployment's EIP-712 domain, in which recorded confirmations of irreversible
            tool calls must be the task user's signatures.
    """
    # by the code hash alone (`check_trace` binds the trace's to the signed one): the trace's id
    # is the node's word, and a made-up id must be a finding, not a reason to skip the replay
    candidates = agents.by_code_hash(trace.agent.code_hash)
    if not candidates:
        return ReplayOutcome(
            unverifiable=f"cannot replay: no agent with code hash {trace.agent.code_hash} is installed here"
        )
    findings: list[Finding] = []
    named = [c for c in candidates if c.agent_id == trace.agent.id]
    if not named:
        ids = [c.agent_id for c in candidates]
        findings.append(
            Finding(
                Check.TRACE,
                "trace agent id is not the id of an agent with the signed code hash",
                expected=ids[0] if len(ids) == 1 else ids,
                claimed=trace.agent.id,
            )
        )
        if len(candidates) > 1:  # a bundle of several agents: the id was the only way to choose
            return ReplayOutcome(tuple(findings))
    info = named[0] if named else candidates[0]
    try:
        agents.check_unchanged(info)
    except AgentNotAllowedError as exc:  # an in-place upgrade here: the loaded code is not the hashed
        if findings:
            return ReplayOutcome(tuple(findings))
        return ReplayOutcome(unverifiable=f"cannot replay: {exc}")
    _, _, specs = context_of(trace)
    if (bad_seed := check_seed(trace)) is not None:
        findings.append(
            Finding(Check.REPLAY, bad_seed.message, expected=bad_seed.expected, claimed=bad_seed.claimed)
        )
    own_spec = getattr(tools, "spec", None)
    for spec in specs:
        if is_mcp(spec.name):
            continue  # an operator's local label: another operator's server of that name is no reference
        mine = own_spec(spec.name) if own_spec is not None else None
        if mine is not None and spec_record(mine) != spec_record(spec):
            findings.append(
                Finding(
                    Check.REPLAY,
                    f"tool {spec.name} is not described to the agent as this protocol's tool is",
                    expected=spec_record(mine),
                    claimed=spec_record(spec),
                )
            )
    try:
        result = await replay(trace, info.cls, tokenizer, agents=agents, domain=domain)
    except ReplayUnavailable as exc:  # it calls an agent this validator does not have installed
        return ReplayOutcome(unverifiable=str(exc)) if not findings else ReplayOutcome(tuple(findings))
    except MalformedContext as exc:  # the witness: blocks that are not dag-cbor
        return ReplayOutcome((*findings, Finding(Check.TRACE_MALFORMED, str(exc))))
    findings += [
        Finding(Check.REPLAY, d.message, call=d.index, expected=d.expected, claimed=d.claimed)
        for d in result.divergences
    ]
    return ReplayOutcome(tuple(findings), first_roots=result.first_roots)
