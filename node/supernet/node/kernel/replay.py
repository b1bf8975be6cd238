"""Replaying an agent against its trace: is the answer what the agent makes of the recorded work?

A validator re-scores each recorded LLM call, but that alone proves only that each call is the
model's honest work, not that the *answer* came from those calls, nor that the calls were the ones
the agent asked for. Replay closes that gap. It runs the installed agent class (the one whose code
hash the user signed) on the task's input through the node's own
`~supernet.node.kernel.dispatch.Dispatcher`, with every manager replaced by a *tape* that answers
from the recorded events in order:

- an LLM call gets the recorded output ids (their honesty is the scorer's job), its text decoded
  by the validator's tokenizer;
- a tool call gets the recorded result or error (deterministic tools are re-run separately);
- a memory or storage access gets the content-addressed blocks the recorded CIDs name, read from
  the trace's own ``witness`` (never from a store: a trace is self-contained, so withholding a
  linked block cannot make it unverifiable), checked against what the agent wrote or asked for;
  a file rollback or delete must turn its previous root into its new one by exactly that one
  appended version or tombstone, and a version list is read from its root;
- an agent call (``agent.call`` ... ``agent.return``, the child's events inline between them) must
  name the agent the replayed agent calls with the input it passes; the child, the installed class
  with the recorded code hash, is replayed on the same tape under the recorded capabilities (no
  more than the caller's), and must return exactly the recorded output.

Because the dispatcher is the node's, the replay records the trace an honest kernel would have
recorded given those results. Every event must equal the recorded one (kind, messages, prompt ids,
sampling parameters and seed, tool name and arguments, memory and storage keys), there must be
as many, and the agent's return value must be the trace's output. Anything else is a
`ReplayDivergence` naming the syscall index.

Agents must be deterministic given their syscall results (no clock, no randomness, no I/O except
through ``ctx``): see docs/agents.md.

>>> result = await replay(trace_doc, ReactAgent, tokenizer)   # doctest: +SKIP
>>> result.divergences                                              # doctest: +SKIP
[]
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from supernet.node.agents.base import Agent
from supernet.node.agents.registry import AgentInfo, AgentRegistry
from supernet.node.kernel import errors as kernel_errors
from supernet.node.kernel.access import AccessManager, Capabilities, NodePolicy, namespace_of
from supernet.node.kernel.agent_run import AgentResult, run_agent, seen_spec, task_seed
from supernet.node.kernel.dispatch import Dispatcher, TaskState
from supernet.node.kernel.memory import ROOT_TYPE as MEMORY_ROOT_TYPE
from supernet.node.kernel.memory import MemoryWrite, with_entry
from supernet.node.kernel.namespaces import root_object
from supernet.node.kernel.storage import ROOT_TYPE as FS_ROOT_TYPE
from supernet.node.kernel.storage import (
    FileChange,
    FileWrite,
    history_of,
    latest_files,
    missing_file,
    normalize_path,
    with_version,
)
from supernet.node.kernel.syscalls import TASK_TIMEOUT_S, GenerationOutcome, MemoryHit, Syscall, TaskSpec
from supernet.node.kernel.tools import ToolSpec
from supernet.node.kernel.trace import TraceRecorder, to_dag
from supernet.sdk.agents.base import code_hash_of
from supernet.sdk.chain.eip712 import Confirmation, Domain, recover_confirmation
from supernet.sdk.chain.receipts import canonical_input
from supernet.sdk.formats.fields import FormatError
from supernet.sdk.formats.trace import (
    ROOT_READS,
    AgentCallEvent,
    AgentReturnEvent,
    CallableAgent,
    ErrorEvent,
    Event,
    LlmEvent,
    MemoryAddEvent,
    MemorySearchEvent,
    StorageDeleteEvent,
    StorageGetEvent,
    StorageListEvent,
    StorageMissingEvent,
    StoragePutEvent,
    StorageRollbackEvent,
    StorageVersionsEvent,
    ToolEvent,
    Trace,
    VerifiedWitness,
)

REPLAY_TIMEOUT_S = 2 * TASK_TIMEOUT_S
"""Wall-clock bound of one replay: twice the node's bound of the whole task, since a replay that
runs out of time is a divergence (an unverifiable one would let a node fake traces whose replays
run long). The agent's own work is a part of the task's, so only an agent that could not have
ended within the node's bound at the node's speed (a validator may be twice as slow) is past it.
At a fifth of the node's bound an honest agent working 2-10 min was flagged
(tests/unit/test_review_replay_fidelity.py)."""


# Errors a node cannot report from its managers: the replay's own access checks must raise them.
_REPRODUCED_ERRORS = frozenset(
    {"BudgetExceededError", "AccessDeniedError", "ConfirmationRequiredError", "AgentNotAllowedError"}
)


class ReplayDivergence(Exception):
    """The trace is not what the agent does given its own recorded results.

    Attributes:
        index: the syscall (event index in the trace) where it diverges; ``None`` for the output.
        message: a sentence for people.
        expected: what the replay produced.
        claimed: what the trace holds.
    """

    def __init__(self, index: int | None, message: str, expected: Any = None, claimed: Any = None) -> None:
        super().__init__(message)
        self.index, self.message, self.expected, self.claimed = index, message, expected, claimed


class ReplayUnavailable(Exception):
    """The trace calls an agent (id and code hash) this replay does not have: not replayable here."""


class MalformedContext(ValueError):
    """The trace is not a well-formed ``supernet/trace/v1`` document (the message names the field)."""


class _Unavailable(BaseException):
    """Unwinds the agent when a child it calls is not installed here (`ReplayUnavailable`)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Abort(BaseException):
    """Unwinds the agent at the first divergence (a BaseException: agents may catch Exception)."""

    def __init__(self, cause: ReplayDivergence) -> None:
        super().__init__(str(cause))
        self.cause = cause


@dataclass
class ReplayResult:
    """What the replay produced, and how the trace differs from it.

    Attributes:
        output: the replayed agent's output (``""`` if it failed).
        status: ``"ok"``, ``"error"`` or ``"timeout"``.
        error: the agent's error, if any.
        events: the events the replay recorded.
        divergences: every difference from the trace, first one first.
        first_roots: ``(area, namespace) -> root CID`` (``None``: empty) that the task found at its
            first access to each memory (``"memory"``) and file (``"files"``) namespace: the roots
            the task did not write itself, whose origin `supernet.validator.origin_check` follows.
    """

    output: str
    status: str
    error: str | None
    events: list[dict[str, Any]]
    divergences: list[ReplayDivergence] = field(default_factory=list)
    first_roots: dict[tuple[str, str], str | None] = field(default_factory=dict)


def parse(doc: Mapping[str, Any] | Trace) -> Trace:
    """The typed trace (`MalformedContext` naming the field if it is not one)."""
    if isinstance(doc, Trace):
        return doc
    try:
        return Trace.from_dag(doc)
    except FormatError as exc:
        raise MalformedContext(f"trace: {exc}") from None


def context_of(doc: Mapping[str, Any] | Trace) -> tuple[int, Capabilities, tuple[ToolSpec, ...]]:
    """The seed, capabilities and tool specs a trace says its task ran with.

    Raises:
        MalformedContext: the trace is not well-formed.
    """
    trace = parse(doc)
    limits = trace.limits
    caps = Capabilities(
        tools=frozenset(t.name for t in trace.tools),
        namespace=namespace_of(trace.user, trace.agent.id),
        memory=limits.memory,
        storage=limits.storage,
        max_llm_calls=limits.max_llm_calls,
        max_llm_tokens=limits.max_llm_tokens,
        max_new_tokens=limits.max_new_tokens,
        max_tool_calls=limits.max_tool_calls,
        max_file_bytes=limits.max_file_bytes,
    )
    specs = tuple(seen_spec(t) for t in sorted(trace.tools, key=lambda t: t.name))
    return trace.seed, caps, specs


def _recorded_confirmations(trace: Trace, domain: Domain | None, tape: _Tape) -> Mapping[str, bytes]:
    """``actionHash`` -> signature of the confirmed tool calls the trace records: what the node says
    the user signed, as the replay's access manager looks it up for each irreversible call.

    A signature allows one occurrence of its action (`supernet.sdk.chain.receipts.action_hash`).
    Which one is the replay's own count: the dispatcher numbers the calls of each action as the
    agent makes them (`supernet.node.kernel.dispatch._occurrence`, one syscall of a task at a time,
    so the trace holds them in that order) and asks for the hash of the call it makes, occurrence
    included. Only the signature the recorded event of that call carries can answer it, once
    recovered to the task's user under exactly that hash (see `_TapeConfirmations`): one recovery
    per confirmed call, never a search over occurrences. One that does not recover to the user
    there (another occurrence's, another call's, unreadable) allows nothing: the replayed call is
    refused, unlike the trace's."""
    for event in trace.events:
        if isinstance(event, ToolEvent) and event.confirmation is not None:
            try:
                canonical_input(dict(event.args))
            except ValueError as exc:  # InputEncodingError: no canonical form, so no user signed it
                raise MalformedContext(f"trace: a confirmed call of {event.name}: {exc}") from None
    if domain is None:
        return {}
    request_hash = bytes.fromhex(trace.task_id.removeprefix("0x"))
    return _TapeConfirmations(tape, request_hash, trace.user, domain)


async def replay(
    doc: Mapping[str, Any] | Trace,
    agent: type[Agent],
    tokenizer: Any,
    *,
    params_type: Any = None,
    timeout_s: float = REPLAY_TIMEOUT_S,
    agents: AgentRegistry | None = None,
    domain: Domain | None = None,
) -> ReplayResult:
    """Replay ``agent`` against the trace ``doc`` (see the module docstring).

    Args:
        doc: the decoded ``supernet/trace/v1`` document (or the typed trace).
        agent: the installed agent class whose code hash the trace (and the signed request) names.
        tokenizer: the model's tokenizer (chat template and decoding, as the node's engine has).
        params_type: the engine's sampling-parameter class (default: `supernet.node.llm.SamplingParams`).
        timeout_s: bound of the whole replay.
        agents: the installed agents that agent calls in the trace may run (children are looked up
            by the recorded id and the code hash the signed profile lists; one not installed here
            at that hash is unavailable, as the task's agent would be).
        domain: the deployment's EIP-712 domain: a recorded call of an irreversible tool replays
            only if its recorded confirmation is the task user's signature in it (without a domain,
            such a call is refused, as on a node without one).

    Raises:
        MalformedContext: the trace is not well-formed (its witness included).
        ReplayUnavailable: the trace calls an agent ``agents`` does not hold at the signed code hash.
    """
    if params_type is None:
        from supernet.node.llm import SamplingParams

        params_type = SamplingParams
    trace = parse(doc)
    seed, caps, specs = context_of(trace)
    try:
        witness = VerifiedWitness(trace.witness)
    except FormatError as exc:
        raise MalformedContext(f"trace: {exc}") from None
    code_hash = code_hash_of(agent)  # reads the agent's source files: once (the registry's rule)
    recorder = TraceRecorder(
        trace.task_id, trace.user, trace.fee, agent.agent_id, code_hash, trace.model_id, trace.input
    )
    tape = _Tape(trace.events, recorder, witness)
    spec = TaskSpec(
        task_id=trace.task_id,
        agent_id=agent.agent_id,
        input=trace.input,
        user=trace.user,
        fee=0,
        confirmations=_recorded_confirmations(trace, domain, tape),
    )
    info = AgentInfo(agent.agent_id, code_hash, agent.description, agent)
    state = TaskState(spec, info, caps, recorder, specs, seed)
    dispatcher = Dispatcher(
        engine=_TapeEngine(trace.model_id, tokenizer),
        scheduler=_TapeScheduler(tape),
        tools=_TapeTools(tape, specs),
        memory=(memory := _TapeMemory(tape)),
        storage=(storage := _TapeStorage(tape)),
        access=AccessManager(NodePolicy(), domain),
        params_type=params_type,
        agents=_TapeAgents(tape, agents, trace.agents or ()),
    )

    async def syscall(call: Syscall) -> Any:
        return await dispatcher.handle(state, call)

    try:
        ran = await run_agent(agent, trace.task_id, spec.input, syscall, specs, timeout_s)
    except _Unavailable as missing:
        raise ReplayUnavailable(missing.reason) from None
    except _Abort as abort:
        return ReplayResult("", "diverged", None, recorder.events, [abort.cause])
    except kernel_errors.TaskAbort as abort:
        # a tape manager failed on what the node recorded (a root whose file history is not one):
        # the node's kernel ends such a task without a receipt (`Dispatcher._served`), so a receipt
        # for it is a divergence. The BaseException is the kernel's, never a validator's to raise:
        # it passed every `except Exception` and stopped the validator's process (review of a
        # rational node, 5).
        at = tape.index
        why = ReplayDivergence(at, f"syscall {at}: what the trace records cannot be replayed: {abort}")
        return ReplayResult("", "diverged", None, recorder.events, [why])
    result = ReplayResult(ran.output, ran.status, ran.error, recorder.events)
    result.divergences = list(_compare(result, trace))
    result.first_roots = {
        **{("memory", ns): root for ns, root in memory.first_roots().items()},
        **{("files", ns): root for ns, root in storage.first_roots().items()},
    }
    return result


def check_seed(doc: Mapping[str, Any] | Trace) -> ReplayDivergence | None:
    """The recorded base seed must be the protocol's function of the task id."""
    task_id = doc.task_id if isinstance(doc, Trace) else str(doc.get("task_id", ""))
    seed = doc.seed if isinstance(doc, Trace) else doc.get("seed")
    expected = task_seed(task_id)
    if seed != expected:
        return ReplayDivergence(None, "the task's seed is not derived from its id", expected, seed)
    return None


def _compare(result: ReplayResult, trace: Trace) -> Iterable[ReplayDivergence]:
    replayed = result.events
    recorded = [e.to_dag() for e in trace.events]
    for i, (mine, theirs) in enumerate(zip(replayed, recorded, strict=False)):
        for key in sorted(set(mine) | set(theirs)):
            if mine.get(key) != theirs.get(key):
                yield ReplayDivergence(
                    i,
                    f"syscall {i} ({mine.get('kind')}): {key} is not what the agent's call gives",
                    _short(mine.get(key)),
                    _short(theirs.get(key)),
                )
    if len(replayed) < len(recorded):
        kind = recorded[len(replayed)]["kind"]
        yield ReplayDivergence(
            len(replayed), f"syscall {len(replayed)} ({kind}) is one the agent does not make", None, kind
        )
    if (result.status != "ok" or trace.status != "ok") and result.status != trace.status:
        yield ReplayDivergence(None, "the task's status is not the replay's", result.status, trace.status)
    if result.output != trace.output:
        yield ReplayDivergence(
            None, "the output is not what the agent returns", _short(result.output), _short(trace.output)
        )


def _short(value: Any, limit: int = 300) -> Any:
    value = to_dag(value) if not isinstance(value, bytes) else "0x" + value.hex()
    text = repr(value)
    return value if len(text) <= limit else text[:limit] + "…"


# -- the tape ----------------------------------------------------------------------------------


class _Tape:
    """The recorded events, read in the order the replayed dispatcher records its own."""

    def __init__(self, events: Sequence[Event], recorder: TraceRecorder, witness: VerifiedWitness) -> None:
        self._events, self._recorder, self._witness = events, recorder, witness

    @property
    def index(self) -> int:
        """The event the current syscall must match: one event per syscall, in order."""
        return len(self._recorder.events)

    def peek(self) -> Event | None:
        i = self.index
        return self._events[i] if i < len(self._events) else None

    def next(self, kind: type[Any]) -> Any:
        """The recorded event of this ``kind`` syscall, or its recorded failure raised."""
        i = self.index
        if i >= len(self._events):
            self.diverge(
                i, f"the agent makes a {kind.kind} syscall (number {i}) the trace does not have", kind.kind
            )
        ev = self._events[i]
        if isinstance(ev, ErrorEvent) and ev.syscall == kind.kind:
            if kind.kind.startswith(("memory.", "storage.")):
                # every failure of these the protocol defines is raised by the replay itself before
                # it reads the event (a bad path, a refusal, a miss: `storage.missing`); a node
                # whose store fails ends the task (`Dispatcher._served`), so a recorded one is a
                # claim nobody can check (a note "unreadable", to hide it)
                self.diverge(
                    i,
                    f"syscall {i}: a recorded failure of {kind.kind} the replay does not give",
                    None,
                    ev.error,
                )
            raise _rebuild(i, ev.error, self)
        if not isinstance(ev, kind):
            self.diverge(
                i,
                f"syscall {i}: the agent makes a {kind.kind} call, the trace has {ev.kind}",
                kind.kind,
                ev.kind,
            )
        return ev

    def diverge(self, index: int | None, message: str, expected: Any = None, claimed: Any = None) -> NoReturn:
        raise _Abort(ReplayDivergence(index, message, expected, claimed))

    async def dag(self, cid: str) -> Any:
        try:
            return self._witness.block(cid)
        except KeyError:  # an honest kernel's trace carries every block its replay reads
            self.diverge(
                self.index,
                f"syscall {self.index} reads block {cid}, which the trace's witness lacks",
                None,
                cid,
            )

    async def file(self, cid: str) -> bytes:
        try:
            return self._witness.file(cid)
        except KeyError:
            self.diverge(
                self.index,
                f"syscall {self.index} reads file {cid}, which the trace's witness lacks",
                None,
                cid,
            )


class _TapeConfirmations(Mapping[str, bytes]):
    """The recorded confirmations as the replay's access manager reads them: ``"0x"`` actionHash ->
    signature, for the call the replay is making now.

    The access manager asks for the hash of the replayed call (its tool, arguments and occurrence,
    the replay's own count). The answer is the signature recorded on the event that call must
    match (the tape's next one) if it recovers to the task's user under that hash, and nothing
    otherwise (one ECDSA recovery per call and hash, remembered for that call: the access manager
    asks again to record it). Its keys are the actions found so far."""

    def __init__(self, tape: _Tape, request_hash: bytes, user: str, domain: Domain) -> None:
        self._tape, self._request_hash, self._user, self._domain = tape, request_hash, user.lower(), domain
        self._found: dict[str, tuple[int, bytes]] = {}  # hash -> (tape index, signature) recovered
        self._refused: set[tuple[int, str]] = set()  # (tape index, hash) a recorded signature does not sign

    def __getitem__(self, key: str) -> bytes:
        index, event = self._tape.index, self._tape.peek()
        found = self._found.get(key)
        if found is not None and found[0] == index:
            return found[1]
        if (
            not isinstance(event, ToolEvent)
            or event.confirmation is None
            or not key.startswith("0x")
            or (index, key) in self._refused
        ):
            raise KeyError(key)
        try:
            digest = bytes.fromhex(key[2:])
            signer = recover_confirmation(
                Confirmation(self._request_hash, digest), self._domain, event.confirmation
            )
        except Exception:  # not a hash, or an unreadable signature: allows nothing
            signer = ""
        if signer.lower() != self._user:
            self._refused.add((index, key))
            raise KeyError(key)
        self._found[key] = (index, event.confirmation)
        return event.confirmation

    def __iter__(self) -> Iterator[str]:
        return iter(self._found)

    def __len__(self) -> int:
        return len(self._found)


def _rebuild(index: int, error: str, tape: _Tape) -> BaseException:
    """The recorded ``"Type: message"`` failure as an exception whose ``Type: message`` is the same."""
    name = error.partition(": ")[0]
    if name in _REPRODUCED_ERRORS:  # only the replay's own checks may raise these
        return _Abort(
            ReplayDivergence(index, f"syscall {index}: a {name} the task's limits do not give", None, error)
        )
    return kernel_errors.as_raised(error)  # what the node raised into the agent too


class _TapeAgents:
    """Agent calls: the recorded ``agent.call`` must be the call the replayed agent makes, and the
    replayed child must end as the recorded ``agent.return`` says."""

    def __init__(self, tape: _Tape, agents: AgentRegistry | None, listed: Sequence[CallableAgent]) -> None:
        self._tape, self._agents = tape, agents
        # the signed profile's callable agents; a trace without them hashes as a profile that lists
        # none (no fallback to the caller's word: that would let a forged table-less trace run any)
        self._listed = {a.id: a for a in listed}
        self._calls: list[AgentCallEvent] = []

    def resolve(self, agent_id: str, task_input: Any) -> AgentInfo:
        tape, i = self._tape, self._tape.index
        ev = tape.peek()
        if isinstance(ev, ErrorEvent) and ev.syscall == AgentCallEvent.kind:
            name, _, message = ev.error.partition(": ")
            if name != "AgentNotAllowedError":
                tape.diverge(i, f"syscall {i}: an agent call refused with a {name} the replay does not give")
            if agent_id in self._listed:
                tape.diverge(
                    i, f"syscall {i}: the node refused agent {agent_id}, which the signed profile lists"
                )
            raise kernel_errors.AgentNotAllowedError(message)
        call: AgentCallEvent = tape.next(AgentCallEvent)
        entry = self._listed.get(call.agent.id)
        if entry is None:
            tape.diverge(i, f"syscall {i}: agent {call.agent.id} ran, which the signed profile does not list")
        if entry.code_hash.lower() != call.agent.code_hash.lower():
            tape.diverge(
                i, f"syscall {i}: agent {call.agent.id} ran other code than the signed profile lists",
                entry.code_hash, call.agent.code_hash,
            )  # fmt: skip
        if call.agent.id != agent_id:
            tape.diverge(
                i, f"syscall {i}: the agent calls agent {agent_id}, the trace ran {call.agent.id}", agent_id,
                call.agent.id,
            )  # fmt: skip
        if call.input != to_dag(task_input):
            tape.diverge(
                i, f"syscall {i}: the input of agent {agent_id} is not what the agent passes",
                _short(task_input), _short(call.input),
            )  # fmt: skip
        self._calls.append(call)
        return self._child(i, call)

    def _child(self, i: int, call: AgentCallEvent) -> AgentInfo:
        """The installed class of the recorded child, looked up by the code hash the signed profile
        lists for it (the recorded one, checked equal above) and the id its caller names.

        A child at a code hash this validator has installed nowhere (another version of the same
        id, or code it lacks) is unverifiable here, exactly like the task's own agent: the user
        signed that version, an honest node ran it, and another version's replay would accuse the
        node of the difference. A hash no validator replays is kept from being signed at all: the
        client signs a profile only if the validators' quorum declared every code hash in it
        (`supernet.sdk.client.signable`). A packaged child whose files changed since it was loaded
        is unverifiable too (`AgentRegistry.check_unchanged`).

        A child at a code hash installed here under other ids only is a divergence, as the same
        mismatch on the task's own agent is (`check_replay`): the hash covers the files that define
        the agents' ids (a package's, or a built-in's modules; a validator loads every installed
        entry point), so no honest node lists an id under it that is not one of them, and a node
        listing a made-up child under another agent's covered hash would otherwise never be
        scored (tests/unit/test_review_checked_ids.py).
        """
        name = f"agent {call.agent.id!r}"
        if self._agents is None:
            raise _Unavailable(f"cannot replay the call of {name}: no agents to replay it with")
        wanted = call.agent.code_hash.lower()
        here = self._agents.by_code_hash(wanted)
        mine = [a for a in here if a.agent_id == call.agent.id]
        if here and not mine:
            ids = [a.agent_id for a in here]
            self._tape.diverge(
                i, f"syscall {i}: agent {call.agent.id} is not the id of an agent with its signed code hash",
                ids[0] if len(ids) == 1 else ids, call.agent.id,
            )  # fmt: skip
        if not mine:
            installed = self._agents.installed(call.agent.id)
            other = "" if installed is None else f" (it is, at code hash {installed.code_hash})"
            raise _Unavailable(
                f"cannot replay the call of {name}: it is not installed here at the signed code hash "
                f"{wanted}{other}"
            )
        try:
            self._agents.check_unchanged(mine[0])
        except kernel_errors.AgentNotAllowedError as exc:
            raise _Unavailable(f"cannot replay the call of {name}: {exc}") from None
        return mine[0]

    def callable(self, info: AgentInfo, task_agent: str) -> CallableAgent | None:
        return self._listed.get(info.agent_id)  # the signed profile's, of the task's agent

    def child_caps(self, caps: Capabilities) -> Capabilities:
        """The recorded capabilities of the child must be exactly ``caps``: what the signed
        profile's entry for it gives of what its caller has."""
        call, i = self._calls[-1], self._tape.index
        recorded = (frozenset(call.tools), call.memory, call.storage)
        if recorded != (caps.tools, caps.memory, caps.storage):
            self._tape.diverge(
                i, f"syscall {i}: {call.agent.id} got other capabilities than its profile entry gives",
                _short({"tools": sorted(caps.tools), "memory": caps.memory, "storage": caps.storage}),
                _short({"tools": list(call.tools), "memory": call.memory, "storage": call.storage}),
            )  # fmt: skip
        return caps

    def returned(self, agent_id: str, result: AgentResult) -> None:
        tape, i = self._tape, self._tape.index
        ev = tape.peek()
        if not isinstance(ev, AgentReturnEvent):
            tape.diverge(
                i, f"syscall {i}: agent {agent_id} returns here; the trace has "
                + ("no more events" if ev is None else f"a {ev.kind} event"),
                AgentReturnEvent.kind, None if ev is None else ev.kind,
            )  # fmt: skip
        mine = (agent_id, result.status, result.output, result.error)
        if (ev.agent, ev.status, ev.output, ev.error) != mine:
            tape.diverge(
                i, f"syscall {i}: the output of agent {agent_id} is not what it returns",
                _short({"status": result.status, "output": result.output, "error": result.error}),
                _short({"agent": ev.agent, "status": ev.status, "output": ev.output, "error": ev.error}),
            )  # fmt: skip


class _TapeEngine:
    def __init__(self, model_id: str, tokenizer: Any) -> None:
        self.model_id, self.tokenizer = model_id, tokenizer


class _TapeScheduler:
    def __init__(self, tape: _Tape) -> None:
        self._tape = tape

    async def generate(self, job: Any, on_token: Any) -> GenerationOutcome:
        # The replay reaches the engine only once every refusal the protocol defines (budgets,
        # context, grammar) has passed, in the dispatcher's own code: a model call then fails on
        # an honest node only by the node's engine failing, which ends the task without a receipt
        # (`TaskAbort`). A recorded failure here is a node skipping the model.
        ev = self._tape.peek()
        if isinstance(ev, ErrorEvent) and ev.syscall == LlmEvent.kind:
            self._tape.diverge(
                self._tape.index,
                f"syscall {self._tape.index}: an LLM call recorded as failed that no protocol rule refuses",
                None,
                ev.error,
            )
        ev = self._tape.next(LlmEvent)
        return GenerationOutcome(
            output_ids=ev.output_ids,
            logprobs=tuple(float("nan") if lp is None else lp for lp in ev.logprobs),
            finish_reason=ev.finish_reason,
            fingerprints=ev.fingerprints,
            preemptions=ev.preemptions,
        )


class _TapeTools:
    def __init__(self, tape: _Tape, specs: Sequence[ToolSpec]) -> None:
        self._tape = tape
        self._specs = {s.name: s for s in specs}

    def names(self) -> list[str]:
        return sorted(self._specs)

    def spec(self, name: str) -> ToolSpec:
        return self._specs[name]  # the dispatcher asks only for tools in the task's capabilities

    async def call(self, name: str, args: Mapping[str, Any]) -> Any:
        ev: ToolEvent = self._tape.next(ToolEvent)
        if ev.error is not None:
            raise _rebuild(self._tape.index, ev.error, self._tape)
        return ev.result


class _TapeMemory:
    def __init__(self, tape: _Tape) -> None:
        self._tape = tape
        self._chain = _Chain(
            tape, "memory", MEMORY_ROOT_TYPE, ("entries", list),
            "memory of {namespace}: the root used is not a memory root of it",
        )  # fmt: skip

    def first_roots(self) -> dict[str, str | None]:
        return dict(self._chain.first)

    async def add(
        self, namespace: str, text: str, metadata: Mapping[str, Any], writer: str | None = None
    ) -> MemoryWrite:
        ev: MemoryAddEvent = self._tape.next(MemoryAddEvent)
        self._chain.follow(namespace, ev.prev_root)
        # the new root is the previous one with this entry appended, and nothing else
        prev = await self._chain.load(namespace, ev.prev_root)
        entries = with_entry(prev.get("entries", []), ev.entry)
        expected = root_object(MEMORY_ROOT_TYPE, namespace, {"entries": entries}, ev.prev_root, writer)
        if await self._chain.load(namespace, ev.root) != expected:
            self._tape.diverge(
                self._tape.index,
                f"syscall {self._tape.index}: the new memory root is not its previous root with this entry",
                _short(expected),
                None,
            )
        self._chain.current[namespace] = ev.root
        entry = await self._tape.dag(ev.entry)
        stored = (entry.get("text"), entry.get("metadata")) if isinstance(entry, Mapping) else None
        if stored != (text, to_dag(dict(metadata))):
            self._tape.diverge(
                self._tape.index,
                "the memory entry written is not the one the agent added",
                text,
                _short(stored),
            )
        return MemoryWrite(ev.entry, ev.root, ev.prev_root)

    async def search(self, namespace: str, query: str, k: int) -> tuple[str | None, list[MemoryHit]]:
        ev: MemorySearchEvent = self._tape.next(MemorySearchEvent)
        if len(ev.scores) != len(ev.hits):
            self._tape.diverge(self._tape.index, "memory.search hits and scores must be lists of one length")
        entries = [str(c) for c in (await self._chain.read(namespace, ev.root)).get("entries", [])]
        wanted = min(max(k, 0), len(entries))
        if len(ev.hits) != wanted or not set(ev.hits) <= set(entries):
            self._tape.diverge(
                self._tape.index,
                f"memory.search must return {wanted} entries of its root",
                wanted,
                len(ev.hits),
            )
        hits = []
        for cid, score in zip(ev.hits, ev.scores, strict=True):
            block = await self._tape.dag(cid)
            if not isinstance(block, Mapping):
                self._tape.diverge(self._tape.index, f"memory entry {cid} is not an object")
            hits.append(MemoryHit(cid, str(block.get("text")), score, block.get("metadata") or {}))
        return ev.root, hits


class _TapeRoots:
    def __init__(self, tape: _Tape) -> None:
        self._tape = tape

    def root(self, namespace: str) -> str | None:
        ev = self._tape.peek()
        return getattr(ev, "root", None) if isinstance(ev, ROOT_READS["files"]) else None


class _Chain:
    """The namespace roots one task has seen, so that every read and write of the task follows
    the one before: the kernel lets one task of a user at a time use the user's memory and files
    (`Dispatcher._hold_namespaces`), so within a task a namespace's root changes only by the
    task's own writes. Only a task's first access to a namespace takes its root from outside the
    task (docs/validator.md, "Known limits").

    Args:
        area: ``"memory"`` or ``"file"`` (for messages).
        root_type: The roots' ``type``; ``body`` their content field and its type.
        refusal: The divergence message of a root of another kind or namespace (``{namespace}``
            and ``{index}`` filled in).
    """

    def __init__(self, tape: _Tape, area: str, root_type: str, body: tuple[str, type], refusal: str) -> None:
        self._tape, self._area = tape, area
        self._root_type, self._body, self._refusal = root_type, body, refusal
        self.current: dict[str, str | None] = {}
        # the root each namespace had at the task's first access to it: the one root of the task
        # from outside it, which the validator follows back to the task that wrote it
        self.first: dict[str, str | None] = {}

    async def read(self, namespace: str, root_cid: str | None) -> dict[str, Any]:
        """The root a read syscall uses: the task's last one of ``namespace`` (or its first read)."""
        self.follow(namespace, root_cid)
        return await self.load(namespace, root_cid)

    async def load(self, namespace: str, root_cid: str | None) -> dict[str, Any]:
        """The root ``root_cid`` of ``namespace`` (``{}`` for none): a root of another kind or of
        another namespace (another user's memory or files) is never one an honest node uses for
        this task (the access manager names the namespace), so it is a divergence."""
        if root_cid is None:
            return {}
        root = await self._tape.dag(root_cid)
        kind = (root.get("type"), root.get("namespace")) if isinstance(root, Mapping) else None
        key, body_type = self._body
        if kind != (self._root_type, namespace) or not isinstance(root.get(key), body_type):
            self._tape.diverge(
                self._tape.index,
                self._refusal.format(namespace=namespace, index=self._tape.index),
                namespace,
                _short(kind),
            )
        return dict(root)

    def follow(self, namespace: str, root: str | None) -> None:
        """The syscall reads (or writes on top of) ``root``: the task's last root of the namespace."""
        if namespace in self.current and self.current[namespace] != root:
            self._tape.diverge(
                self._tape.index,
                f"syscall {self._tape.index}: the {self._area} root of {namespace} is not the task's last",
                self.current[namespace],
                root,
            )
        self.first.setdefault(namespace, root)
        self.current[namespace] = root


class _TapeStorage:
    def __init__(self, tape: _Tape) -> None:
        self._tape = tape
        self.roots = _TapeRoots(tape)
        self._chain = _Chain(
            tape, "file", FS_ROOT_TYPE, ("files", Mapping),
            "syscall {index}: the file root used is not a file root of {namespace}",
        )  # fmt: skip

    def first_roots(self) -> dict[str, str | None]:
        return dict(self._chain.first)

    async def put(self, namespace: str, path: str, data: bytes, writer: str | None = None) -> FileWrite:
        path = normalize_path(path)
        ev: StoragePutEvent = self._tape.next(StoragePutEvent)
        if await self._tape.file(ev.cid) != data:
            self._tape.diverge(self._tape.index, f"the file stored for {path} is not what the agent wrote")
        await self._check_append(namespace, ev.prev_root, ev.root, path, ev.cid, ev.version, writer)
        return FileWrite(ev.cid, ev.root, ev.prev_root, ev.version)

    async def get(self, namespace: str, path: str, version: str | None = None) -> tuple[str, bytes]:
        path = normalize_path(path)
        await self._check_missing(StorageGetEvent.kind, namespace, path, version)
        ev: StorageGetEvent = self._tape.next(StorageGetEvent)
        history = history_of(await self._chain.read(namespace, ev.root), path)
        wanted = (history[-1] if history else None) if version is None else version
        if ev.cid != wanted or wanted not in history:
            self._tape.diverge(
                self._tape.index, f"storage.get {path}: not the version its root holds", wanted, ev.cid
            )
        return ev.cid, await self._tape.file(ev.cid)

    async def list_files(self, namespace: str) -> dict[str, str]:
        ev: StorageListEvent = self._tape.next(StorageListEvent)
        return latest_files(await self._chain.read(namespace, ev.root))

    async def versions(self, namespace: str, path: str) -> list[str | None]:
        path = normalize_path(path)
        ev: StorageVersionsEvent = self._tape.next(StorageVersionsEvent)
        # the recorded list must be the root's
        return history_of(await self._chain.read(namespace, ev.root), path)

    async def rollback(
        self, namespace: str, path: str, version: str, writer: str | None = None
    ) -> FileChange:
        path = normalize_path(path)
        await self._check_missing(StorageRollbackEvent.kind, namespace, path, version)
        ev: StorageRollbackEvent = self._tape.next(StorageRollbackEvent)
        history = history_of(await self._chain.load(namespace, ev.prev_root), path)
        if missing_file(ev.kind, history, path, version) is not None:
            self._tape.diverge(
                self._tape.index, f"storage.rollback {path}: not a version its root holds", history, version
            )
        await self._check_append(namespace, ev.prev_root, ev.root, path, version, ev.version, writer)
        return FileChange(version, ev.root, ev.prev_root, ev.version)

    async def delete(self, namespace: str, path: str, writer: str | None = None) -> FileChange:
        path = normalize_path(path)
        await self._check_missing(StorageDeleteEvent.kind, namespace, path, None)
        ev: StorageDeleteEvent = self._tape.next(StorageDeleteEvent)
        history = history_of(await self._chain.load(namespace, ev.prev_root), path)
        if missing_file(ev.kind, history, path, None) is not None:
            self._tape.diverge(self._tape.index, f"storage.delete {path}: no such file in its root", path)
        await self._check_append(namespace, ev.prev_root, ev.root, path, None, ev.version, writer)
        return FileChange(None, ev.root, ev.prev_root, ev.version)

    async def _check_missing(self, op: str, namespace: str, path: str, version: str | None) -> None:
        """A recorded ``storage.missing`` of this syscall: the file (or version) must be missing
        from the root it was judged under, which must be the task's last root of the namespace (on
        the task's first access, its first root: followed back by the origin check like any other),
        and the agent gets the error the node's own check gives for that root, whatever text the
        trace records (a node's words never reach the agent)."""
        ev = self._tape.peek()
        if not isinstance(ev, StorageMissingEvent):
            return
        missing = missing_file(
            op, history_of(await self._chain.read(namespace, ev.root), path), path, version
        )
        if missing is None:
            self._tape.diverge(
                self._tape.index,
                f"syscall {self._tape.index}: {path} is in the root it was looked up in, not missing",
                path,
                ev.error,
            )
        raise FileNotFoundError(missing)

    async def _check_append(
        self,
        namespace: str,
        prev_cid: str | None,
        root_cid: str,
        path: str,
        entry: str | None,
        version: int,
        writer: str | None,
    ) -> None:
        """``root`` must be ``prev`` (the task's last root of ``namespace``, or none) with ``entry``
        appended to ``path``'s history, and nothing else, written by ``writer`` (this task); the
        task's root is then ``root``."""
        self._chain.follow(namespace, prev_cid)
        prev, root = await self._chain.load(namespace, prev_cid), await self._chain.load(namespace, root_cid)
        files = with_version(prev.get("files") or {}, path, entry)
        expected = root_object(FS_ROOT_TYPE, namespace, {"files": files}, prev_cid, writer)
        if root != expected or version != len(files[path]):
            self._tape.diverge(
                self._tape.index,
                f"syscall {self._tape.index}: the new root is not its previous root with this change",
                _short(expected),
                _short(root),
            )
        self._chain.current[namespace] = root_cid
