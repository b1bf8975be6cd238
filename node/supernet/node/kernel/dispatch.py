"""Syscall dispatch: checks access, runs the manager, records the trace, for every agent call.

The kernel creates one :class:`TaskState` per task and binds :meth:`Dispatcher.handle` to it;
that bound function is the only door from an agent into the kernel, so the task's identity,
capabilities and budgets come from the kernel, never from the agent's arguments. Every
syscall, failed ones included, leaves an event in the task's trace; a failure is raised to
the agent (as a :class:`~supernet.node.kernel.errors.KernelError` or the manager's own
error), never swallowed.

Every block a memory or file write puts in the store is granted here to the task's namespace
(the access manager's ownership index), and tools run "acting for" the task, so a scoped tool
(``store_read``) reads only blocks of that namespace. A syscall that writes new blocks must
grant them here too.

An agent call (:class:`~supernet.node.kernel.syscalls.AgentCall`) runs another agent of the node as
a child of the task: a child :class:`TaskState` with the child's namespace and capabilities (the
caller's, narrowed by the access manager for the child agent), sharing the task's budget counters,
trace and token stream. Its events are recorded inline between an ``agent.call`` and an
``agent.return`` event (docs/protocol.md "Agent calls").

An LLM call goes to the LLM core (engine and batch) of the task's model id
(:class:`~supernet.node.kernel.cores.LLMCores`); every other manager is one for all models. A call
with a ``response_format`` is constrained: its grammar (`supernet.node.llm.grammar.grammar_of`)
goes to the engine with the sampling parameters and into the trace's ``params.grammar``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from supernet.node.agents.registry import AgentInfo
from supernet.node.faults import FaultInjector, Generation
from supernet.node.kernel.access import AccessManager, Capabilities, namespace_of
from supernet.node.kernel.agent_run import (
    AgentResult,
    child_capabilities,
    derive_seed,
    run_agent,
)
from supernet.node.kernel.builtin_tools import LOCAL_PURE_TOOLS
from supernet.node.kernel.cores import LLMCore, LLMCores
from supernet.node.kernel.errors import (
    AccessDeniedError,
    AgentNotAllowedError,
    BudgetExceededError,
    KernelError,
    LLMError,
    TaskAbort,
    ToolTimeoutError,
    as_raised,
)
from supernet.node.kernel.memory import MemoryManager, check_entry
from supernet.node.kernel.namespaces import NamespaceRoots
from supernet.node.kernel.scheduler import LLMJob, Scheduler
from supernet.node.kernel.slots import Slot, TaskSlots
from supernet.node.kernel.storage import StorageManager
from supernet.node.kernel.syscalls import (
    MAX_AGENT_CALL_DEPTH,
    AgentCall,
    AgentCallError,
    ChatResult,
    LLMChat,
    MemoryAdd,
    MemorySearch,
    StorageDelete,
    StorageGet,
    StorageList,
    StoragePut,
    StorageRollback,
    StorageVersions,
    Syscall,
    TaskSpec,
    TokenChunk,
    ToolCall,
)
from supernet.node.kernel.tools import ToolRegistry, ToolSpec, recorded_result
from supernet.node.kernel.trace import (
    MAX_TRACE_EVENTS,
    TOKEN_BYTES_DEFAULT,
    TraceRecorder,
    as_recorded,
    check_encodable,
    cid_link,
    llm_record_bound,
    to_dag,
)
from supernet.node.llm.grammar import grammar_of
from supernet.sdk.chain.receipts import canonical_input, normal_input
from supernet.sdk.formats.trace import MAX_CONTEXT_TOKENS, MAX_TRACE_BYTES, STORE_READ, CallableAgent
from supernet.sdk.store.cids import compute_cid, encode_dag
from supernet.sdk.store.files import split_chunks

_T = TypeVar("_T")

ENTRY_OVERHEAD = 2048
"""A memory entry block beyond its text and metadata: its 384-float embedding (1,536 bytes), the
model's name and the field names."""
ROOT_GROWTH = 1024
"""What a write's new root block and its trace record add beyond the previous root's bytes: one
link, the writer's id, the record's fields."""

log = logging.getLogger(__name__)


@dataclass(eq=False)
class TaskState:
    """One running task as the kernel sees it (kernel-private, mutable counters)."""

    spec: TaskSpec
    agent: AgentInfo
    caps: Capabilities
    trace: TraceRecorder
    tools: tuple[ToolSpec, ...]
    seed: int
    stream: asyncio.Queue[TokenChunk | None] = field(default_factory=asyncio.Queue)
    llm_calls: int = 0
    llm_tokens: int = 0
    tool_calls: int = 0
    parent: TaskState | None = None  # set on an agent call's child: the budgets are the root's
    # the user's namespace lock, once the task first touched memory or files (`Dispatcher.release`);
    # `gate` makes a task's concurrent syscalls take it once; `ended` refuses syscalls after the end
    namespaces: asyncio.Lock | None = None
    gate: asyncio.Lock = field(default_factory=asyncio.Lock)
    slot: Slot | None = None  # the kernel slot the task runs in, given up while it waits for the lock
    # the user's memory and file roots when the task took the lock: where a failed task leaves them
    marked: tuple[dict[str, str], dict[str, str]] | None = None
    # set once the task succeeded and the node stores its receipt: its writes may be persisted
    # (`Kernel.namespace_roots`); before, a crash must not leave them without a receipt
    receipted: bool = False
    # syscalls of the task in flight (one an agent left running when it returned included)
    inflight: int = 0
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    # one syscall of this agent at a time (`Dispatcher.handle`): the trace records them in the
    # order the agent makes them, whatever each one waits for, and the replay makes them alike
    turn: asyncio.Lock = field(default_factory=asyncio.Lock)
    ended: bool = False
    # why the node aborted the task (`TaskAbort`), kept here too: an agent that swallows the
    # exception (``gather(..., return_exceptions=True)``) must not turn it into an answer
    aborted: str | None = None
    # calls so far of each irreversible action (tool and canonical arguments), in the order the
    # agent made them: the occurrence a confirmation signs (`supernet.sdk.chain.receipts.action_hash`)
    actions: dict[str, int] = field(default_factory=dict)
    # store-read grants this task's writes added (namespace, CID): taken back if its writes are
    # undone (`Dispatcher.release`), so an unbilled task leaves no grant behind
    granted: list[tuple[str, str]] = field(default_factory=list)

    @property
    def root(self) -> TaskState:
        """The task's own state, whose counters every agent call of the task charges."""
        st = self
        while st.parent is not None:
            st = st.parent
        return st

    @property
    def chain(self) -> tuple[str, ...]:
        """Agent ids from the task's agent down to this one (agent calls nest)."""
        up = () if self.parent is None else self.parent.chain
        return (*up, self.agent.agent_id)


class RegistryAgents:
    """The agents an agent call may run on the node: the kernel's registry (allowed agents), those
    the task's agent's profile lists as callable (``callable_agents(task agent id)``)."""

    def __init__(
        self, registry: Any, callable_agents: Callable[[str], Sequence[CallableAgent]] = lambda _: ()
    ) -> None:
        self._registry = registry
        self._callable = callable_agents

    def resolve(self, agent_id: str, task_input: Any) -> AgentInfo:
        """The allowed agent ``agent_id`` (``AgentNotAllowedError`` otherwise)."""
        info: AgentInfo = self._registry.get(agent_id)
        return info

    def callable(self, info: AgentInfo, task_agent: str) -> CallableAgent | None:
        """What ``info`` gets when called in a task of ``task_agent``: its entry in that agent's
        profile's callable agents (``None``: the profile does not list it)."""
        return next((a for a in self._callable(task_agent) if a.id == info.agent_id), None)

    def child_caps(self, caps: Capabilities) -> Capabilities:
        """The child's capabilities (the replay takes the recorded ones, checked against these)."""
        return caps

    def returned(self, agent_id: str, result: AgentResult) -> None:
        """The child ended, before its ``agent.return`` is recorded (the replay checks it here)."""


def stop_text(tokenizer: Any, ids: Sequence[int]) -> str:
    """The text stop strings are looked for in: special tokens skipped (docs/protocol.md "Token
    selection"). One rule for the node (`_StopWatcher`) and validators (`ModelScorer.decode`): an
    honest stop on a string that spans a special token must verify."""
    return str(tokenizer.decode(list(ids), skip_special_tokens=True))


_DECODE_CONTEXT = 4
"""Tokens before the new ones that `_StopWatcher` decodes with them: a decoder's rules at the start
of a text (a leading space dropped, a word-piece joined) then apply to the context as in the
whole text, and the new tokens' text is what they add to it."""


class _StopWatcher:
    """Streams a call's tokens as text and spots the caller's stop strings.

    Per token it decodes only the tokens since the text last ended on a whole character (the
    anchor) and a few before them (`_DECODE_CONTEXT`), and looks for the stop strings only in the
    end of the text a new token can complete: the last ``len(longest stop) - 1`` characters before
    the anchor and the text after it (an earlier occurrence would have stopped the call at an
    earlier token). So a token costs the same whatever the output's length, and the text, the
    stream and the stop are those of decoding the whole output each time (`stop_text`); where a
    tokenizer's decode of the window does not extend its context's text, the watcher goes back to
    that whole decode for the rest of the call.
    """

    def __init__(self, tokenizer: Any, stops: tuple[str, ...], emit: Callable[[int, str], None]) -> None:
        self._tokenizer, self._stops, self._emit = tokenizer, stops, emit
        self._longest = max((len(s) for s in stops), default=0)
        self._ids: list[int] = []
        self._head = ""  # the text of the tokens before the anchor (all streamed)
        self._tail = ""  # what has been streamed of the text after it
        self._anchor = 0  # tokens whose text ends on a whole character
        self._context = 0  # first token of the decoded window
        self._context_text = ""  # the text of the window's tokens before the anchor
        self._whole = False  # decode the whole output each time (the window was inconsistent)

    def on_token(self, index: int, token_id: int) -> bool:
        self._ids.append(token_id)
        if self._whole:
            return self._on_whole(token_id)
        window = stop_text(self._tokenizer, self._ids[self._context :])
        if not window.startswith(self._context_text):
            self._whole = True
            return self._on_whole(token_id)
        tail = window[len(self._context_text) :]
        # a trailing U+FFFD may be a character whose bytes the next token completes: held back,
        # so the stream only ever grows by whole characters (the user's client reads the stream
        # as a prefix of the output, `supernet.sdk.client.streaming.stream_problem`)
        stable = tail.rstrip("\ufffd")
        delta = stable[len(self._tail) :] if stable.startswith(self._tail) else ""
        self._emit(token_id, delta)
        before = self._head[-(self._longest - 1) :] if self._longest > 1 else ""
        stopped = any(stop in before + tail for stop in self._stops)
        if stable == tail:  # a whole character at the end: the anchor moves here
            self._head += tail
            self._tail = ""
            self._move_anchor()
        else:
            self._tail = stable
        return stopped

    def _move_anchor(self) -> None:
        self._anchor = start = len(self._ids)
        self._context_text = ""
        while start > 0 and not self._context_text:  # special tokens decode to no text: back further
            start = max(0, start - _DECODE_CONTEXT)
            self._context_text = stop_text(self._tokenizer, self._ids[start : self._anchor])
        self._context = start

    def _on_whole(self, token_id: int) -> bool:
        text = stop_text(self._tokenizer, self._ids)
        stable = text.rstrip("\ufffd")
        done = self._head + self._tail
        delta = stable[len(done) :] if stable.startswith(done) else ""
        self._head, self._tail = stable, ""
        self._emit(token_id, delta)
        return any(stop in text for stop in self._stops)

    def final_text(self, output_ids: tuple[int, ...]) -> str:
        text = stop_text(self._tokenizer, output_ids)
        cuts = [i for i in (text.find(s) for s in self._stops) if i != -1]
        return text[: min(cuts)] if cuts else text


def first_stop(tokenizer: Any, ids: Sequence[int], stops: tuple[str, ...]) -> int | None:
    """The fewest leading tokens of ``ids`` whose text (`stop_text`) holds one of ``stops``, or None:
    where the engine's watcher ends a call on these tokens. Costs what the watcher does per
    token (a window's decode), not a decode of every prefix (what a validator checks a recorded
    output against: `supernet.validator.llm_check`)."""
    watcher = _StopWatcher(tokenizer, stops, lambda _i, _t: None)
    return next((i + 1 for i, t in enumerate(ids) if watcher.on_token(i, t)), None)


class Dispatcher:
    """Routes each syscall of a task to its manager under the access manager's rules."""

    def __init__(
        self,
        *,
        engine: Any = None,
        scheduler: Scheduler | Any = None,
        cores: LLMCores | None = None,
        tools: ToolRegistry | Any,
        memory: MemoryManager | Any | None,
        storage: StorageManager | Any | None,
        access: AccessManager,
        params_type: Callable[..., Any],
        faults: FaultInjector | None = None,
        model_perturbed: bool = False,
        agents: RegistryAgents | Any | None = None,
        slots: TaskSlots | None = None,
        revert_failed: bool = False,
        trace_size: Callable[[TraceRecorder], Awaitable[int]] | None = None,
        live: bool = False,
    ) -> None:
        # the node's own run of a task (not a replay's): a pure tool's timeout is its load's word,
        # so it ends the task without a receipt rather than being recorded (`_tool`)
        self._live = live
        # what the task's trace weighs so far (`trace.trace_size`): a node refuses an LLM call whose
        # record could take it past MAX_TRACE_BYTES before generating a token (None: no check,
        # as in a replay, which re-runs only tasks whose trace was within the limit)
        self._trace_size = trace_size
        self._agents = agents
        self._slots = slots
        # the node's kernel: a failed task's writes are undone (`release`)
        self._undo: tuple[NamespaceRoots, NamespaceRoots] | None = (
            (memory.roots, storage.roots)
            if revert_failed and memory is not None and storage is not None
            else None
        )
        # One LLM core per served model; a replay (or a one-model kernel) passes engine + scheduler.
        self._cores = cores if cores is not None else LLMCores([LLMCore(engine, scheduler)])
        self._tools = tools
        self._memory = memory
        self._storage = storage
        self._access = access
        self._params_type = params_type
        self._faults = faults
        self._model_perturbed = model_perturbed
        # One task of a user at a time touches that user's memory and files, from its first such
        # syscall to its end: a task's namespace roots then change only by its own writes, so a
        # replay can chain every read and write of the task to the one before (a node cannot feed
        # a read from a root the task never had). Tasks that use neither still run side by side.
        self._user_locks: dict[str, tuple[asyncio.Lock, int]] = {}

    async def handle(self, st: TaskState, call: Syscall) -> Any:
        """Run one syscall of task ``st``; record it (or its failure) in the trace."""
        root = st.root
        if root.ended:  # its agent returned: nothing of it may start any more
            raise KernelError(f"task {root.spec.task_id} has ended")
        root.inflight += 1
        root.settled.clear()
        try:
            # Concurrent syscalls of one agent (``asyncio.gather``) would be recorded as each
            # ends, an order that depends on timing (a user answering confirmations in another
            # order, a slow tool) and that no replay reproduces: an honest node's trace flagged
            # (tests/unit/test_review_occurrences.py). They take turns instead, in call order.
            # An agent call too, for the whole of the child's run (the child's syscalls take
            # turns of its own state): concurrent children interleaved their events and each read
            # the task's token budget before the others spent it (an overrun, and a trace no
            # replay reproduces: tests/unit/test_review_chat_and_scheduling.py).
            async with st.turn:
                return await self._handle(st, call)
        finally:
            root.inflight -= 1
            if root.inflight == 0:
                root.settled.set()

    async def settle(self, st: TaskState) -> None:
        """Wait until no syscall of the task is in flight (the task has ended: none starts any
        more). A syscall the agent left running when it returned (``create_task``) ends within its
        own limits; the kernel builds the trace, and keeps or undoes the task's writes, after it, so
        every write of the task is in its trace and none lands after the user's lock moved on."""
        st.ended = True
        if st.inflight:
            await st.settled.wait()

    async def _handle(self, st: TaskState, call: Syscall) -> Any:
        recorded = len(st.trace.events)
        # each agent call open on the chain keeps one event for its agent.return, a new call two
        limit = MAX_TRACE_EVENTS - (len(st.chain) - 1) - (1 if isinstance(call, AgentCall) else 0)
        if recorded >= limit:  # a full trace: refused, and not recorded
            raise BudgetExceededError(f"task {st.spec.task_id} made its {MAX_TRACE_EVENTS} syscalls")
        try:
            if isinstance(call, AgentCall):  # the child's own syscalls hold the task's slot
                return await self._agent_call(st, call)
            async with self._running(st):
                if isinstance(call, LLMChat):
                    return await self._llm(st, call)
                if isinstance(call, ToolCall):
                    return await self._tool(st, call)
                if isinstance(call, MemoryAdd | MemorySearch):
                    return await self._memory_call(st, call)
                if isinstance(call, _STORAGE_CALLS):
                    return await self._storage_call(st, call)
            raise TypeError(f"not a syscall: {type(call).__name__}")
        except Exception as exc:
            error = _error(exc)
            if len(st.trace.events) == recorded:  # refused or failed before its own event
                st.trace.record("error", syscall=_kind(call), error=error, call=_describe(call))
            log.debug("task %s: %s failed", st.spec.task_id, _kind(call), exc_info=exc)  # the live one
        # The failure as recorded, which is all a validator's replay can raise: no live cause,
        # context or attribute reaches the agent (an honest agent reading them was flagged). Raised
        # outside the handler, so that not even ``__context__`` holds the live exception.
        raise as_raised(error)

    def _running(self, st: TaskState) -> AbstractAsyncContextManager[None]:
        """One syscall of the task runs in the task's kernel slot (`TaskSlots.running`)."""
        return nullcontext() if self._slots is None else self._slots.running(st.root.slot)

    async def _llm(self, st: TaskState, call: LLMChat) -> ChatResult:
        spec, caps, use = st.spec, st.caps, st.root  # an agent call's child charges the task
        self._access.check_budget(spec, "LLM calls", use.llm_calls, caps.max_llm_calls)
        self._access.check_budget(spec, "LLM tokens", use.llm_tokens, caps.max_llm_tokens)
        core = self._cores.get(spec.model_id)  # the engine of the model the user signed for
        index = use.llm_calls
        use.llm_calls += 1
        tokenizer = core.engine.tokenizer
        messages = [{"role": m.role, "content": m.content} for m in call.messages]
        if self._faults is not None:
            key = f"{spec.task_id}:{index}"
            if self._faults.skips(spec.task_id):  # a cheat: no model work, nothing recorded
                return ChatResult(self._faults.fabricated_reply(key), (), (), "stop")
            messages = self._faults.on_prompt(key, messages)
        prompt_ids = tuple(tokenizer.apply_chat_template(messages, add_generation_prompt=True))
        seed = call.seed if call.seed is not None else derive_seed(st.seed, index)
        # The budget is capped by the protocol's context (MAX_CONTEXT_TOKENS, never the engine's own
        # max_seq_len: a node-chosen number would let a node claim a tiny context to skip work), so
        # it is re-derived by the replay (which runs this code) and a call that reaches the end of
        # the context finishes "length" with exactly the recorded max_new_tokens.
        room = MAX_CONTEXT_TOKENS - len(prompt_ids)
        if room < 1:
            raise LLMError(
                f"a prompt of {len(prompt_ids)} tokens fills the {MAX_CONTEXT_TOKENS}-token context"
            )
        max_new = max(
            1, min(call.max_new_tokens, caps.max_new_tokens, caps.max_llm_tokens - use.llm_tokens, room)
        )
        held = getattr(core.engine, "max_seq_len", None)  # a replay's tape engine has none: the tape answers
        if held is not None and len(prompt_ids) + max_new > held:  # never cut short, never a receipt
            raise self._abort(
                st, f"{len(prompt_ids)} + {max_new} tokens exceed this engine's {held} positions"
            )
        grammar = grammar_of(call.response_format)  # GrammarError (a ValueError) fails the call
        if self._trace_size is not None:
            # A trace over MAX_TRACE_BYTES fails its task after the fact, unbilled: the tokens
            # streamed meanwhile would be free work (a user could bloat the witness with memory
            # adds before the answer). So the call runs only if its largest record still fits.
            used = await self._trace_size(st.root.trace)
            token_bytes = getattr(tokenizer, "max_token_bytes", TOKEN_BYTES_DEFAULT)  # a test engine's: none
            need = llm_record_bound(messages, prompt_ids, max_new, token_bytes, grammar, call.stop)
            if used + need > MAX_TRACE_BYTES:
                raise self._abort(
                    st,
                    f"the trace holds {used} bytes and this call's record may take {need} more, past "
                    f"the protocol's {MAX_TRACE_BYTES}-byte trace limit: refused before any token",
                )
        constraint = {} if grammar is None else {"grammar": grammar}  # unconstrained: as before
        params = self._params_type(
            max_new_tokens=max_new, temperature=call.temperature, top_p=call.top_p, seed=seed, **constraint
        )

        def emit(token_id: int, text: str) -> None:
            st.stream.put_nowait(TokenChunk(spec.task_id, index, token_id, text))

        watcher = _StopWatcher(tokenizer, call.stop, emit)
        job = LLMJob(f"{spec.task_id}/llm/{index}", spec.task_id, spec.user, spec.fee, prompt_ids, params)
        try:
            outcome = await core.scheduler.generate(job, watcher.on_token)
        except Exception as exc:  # the engine's failure: the node's, not one the protocol defines
            raise self._abort(st, f"the engine failed: {type(exc).__name__}: {exc}") from exc
        use.llm_tokens += len(outcome.output_ids)
        gen = Generation(
            prompt_ids=prompt_ids,
            output_ids=outcome.output_ids,
            logprobs=outcome.logprobs,
            fingerprints=outcome.fingerprints,
            temperature=call.temperature,
            top_p=call.top_p,
            seed=seed,
            finish_reason="stop" if outcome.finish_reason == "stopped" else outcome.finish_reason,
        )
        if self._faults is not None:
            # the stop tokens the call ran with (none named: the model's end of sequence), which a
            # fault leaves where they are (a decoy must look like a rational cheat's edit)
            stops = params.stop_token_ids
            stops = core.engine.eos_token_ids if stops is None else stops
            gen = dataclasses.replace(gen, stop_ids=tuple(stops))
            gen = self._faults.on_generation(f"{spec.task_id}:{index}", gen, self._model_perturbed)
        text = watcher.final_text(gen.output_ids)
        st.trace.record(
            "llm",
            index=index,
            model_id=core.engine.model_id,
            messages=messages,
            prompt_ids=gen.prompt_ids,
            output_ids=gen.output_ids,
            params={
                "max_new_tokens": max_new,
                "temperature": gen.temperature,
                "top_p": gen.top_p,
                "seed": gen.seed,
                "stop_token_ids": params.stop_token_ids,
                "stop": call.stop,
                **constraint,
            },
            finish_reason=gen.finish_reason,
            logprobs=gen.logprobs,
            fingerprints=gen.fingerprints,
            text=text,
            preemptions=outcome.preemptions,
        )
        return ChatResult(text, prompt_ids, gen.output_ids, gen.finish_reason)  # what a replay rebuilds

    async def _tool(self, st: TaskState, call: ToolCall) -> Any:
        use = st.root
        self._access.check_budget(st.spec, "tool calls", use.tool_calls, st.caps.max_tool_calls)
        use.tool_calls += 1
        if call.name not in st.caps.tools:  # before the lookup: the answer must not depend on which
            # other tools this node has installed (a validator's replay knows only the task's)
            raise self._access.deny(st.spec, "tool", call.name, "not in this task's capabilities")
        tool = self._tools.spec(call.name)
        occurrence = _occurrence(st.root, call) if tool.irreversible else 0
        # may pause for the user's confirmation, without a kernel slot meanwhile
        idle = None if self._slots is None else partial(self._slots.away, st.root.slot)
        await self._access.authorize_tool(st.spec, st.caps, tool, call.args, idle, occurrence)
        record: dict[str, Any] = {
            "name": call.name,
            "args": dict(call.args),
            "deterministic": tool.deterministic,
        }
        if tool.irreversible:  # the user's signature that allowed it: a replay checks it again
            signature = self._access.confirmation_of(st.spec, call.name, call.args, occurrence)
            if signature is not None:
                record["confirmation"] = "0x" + bytes(signature).hex()
            ran = self._access.begin_irreversible(st.spec, call.name, call.args, occurrence)
            if ran is not None:  # on disk before the call: a re-run of the task never repeats it
                raise self._abort(
                    st,
                    f"tool {call.name}'s action {ran} already ran (or began) in an earlier run of this "
                    "task: it is not done twice on one confirmation; the task ends without a receipt",
                )
        try:
            with self._access.acting_for(st.spec, st.caps):
                # a ToolRegistry returns the result as recorded (an unrecordable one is its
                # ToolError), the rule a validator's re-run shares; again here for any other manager
                result = recorded_result(call.name, await self._tools.call(call.name, call.args))
        except Exception as exc:  # recorded as the tool's answer: a validator re-runs it and expects it too
            if self._live and isinstance(exc, ToolTimeoutError) and call.name in LOCAL_PURE_TOOLS:
                # this node's load, not the arguments, made it late, and validators re-run it: a
                # recorded timeout would be an honest node's fault (a user could cause it by load)
                raise self._abort(st, f"{exc} on this node: the task ends without a receipt") from None
            st.trace.record("tool", **record, result=None, error=_error(exc))
            raise
        if self._faults is not None:
            key = f"{st.spec.task_id}:{len(st.trace.events)}"
            result = self._faults.on_tool_result(key, call.name, call.args, result, tool.deterministic)
            result = as_recorded(result)
        st.trace.record("tool", **record, result=result, error=None)
        if call.name == STORE_READ and self._trace_size is not None:
            # what it read goes into the witness whole (whatever ``max_bytes`` showed the agent):
            # a trace past the cap now would fail the task after its work, so it ends here
            used = await self._trace_size(st.root.trace)
            if used > MAX_TRACE_BYTES:
                raise self._abort(
                    st,
                    f"the trace holds {used} bytes with what store_read just read, past the protocol's "
                    f"{MAX_TRACE_BYTES}-byte trace limit (a read goes into the trace whole)",
                )
        return result  # exactly what the replay's tape answers: the recorded value, never the live one

    async def _hold_namespaces(self, st: TaskState) -> None:
        """Take the task user's namespace lock, if this task does not hold it yet (once, however
        many of its syscalls ask at the same time)."""
        root = st.root
        async with root.gate:
            if root.ended:  # a syscall the agent left running past its task's end
                raise KernelError(f"task {root.spec.task_id} has ended")
            if root.namespaces is not None:
                return
            user = root.spec.user.lower()
            lock, waiting = self._user_locks.get(user, (asyncio.Lock(), 0))
            self._user_locks[user] = (lock, waiting + 1)
            try:
                if self._slots is None or not lock.locked():
                    await lock.acquire()
                    self._held(root, lock)
                else:  # another task of the user holds it: wait without a kernel slot (`slots`)
                    async with self._slots.away(root.slot):
                        await lock.acquire()
                        self._held(root, lock)  # from here on `release` frees it, come what may
            except BaseException:
                if root.namespaces is None:
                    self._drop_user(user)
                raise

    def _held(self, root: TaskState, lock: asyncio.Lock) -> None:
        root.namespaces = lock
        prefix = root.spec.user.lower() + "/"
        if self._undo is not None:
            root.marked = (self._undo[0].mark(prefix), self._undo[1].mark(prefix))

    async def release(self, st: TaskState, keep: bool) -> None:
        """The task ended: its user's namespace lock goes to the next task of that user. A task
        that did not succeed (``keep`` false: no receipt will name it) first puts the user's memory
        and files back where it found them: a task's writes take effect with its result, so the
        next task of the user starts from roots only receipted tasks made."""
        await self.settle(st)
        if st.namespaces is None:
            return
        try:
            if not keep and st.marked is not None and self._undo is not None:
                prefix = st.spec.user.lower() + "/"
                await self._undo[0].revert(prefix, st.marked[0])
                await self._undo[1].revert(prefix, st.marked[1])
                # its grants too: kept, they outlived the writes, and every task's end persists
                # them all (an unbilled task grew that for free: test_review_aios_kernel.py)
                self._access.owned.revoke(st.root.granted)
        finally:
            st.namespaces.release()
            st.namespaces = None
            st.marked = None
            self._drop_user(st.spec.user.lower())

    async def _served(self, st: TaskState, work: Awaitable[_T]) -> _T:
        """A memory or storage manager's work. What the protocol defines reaches the agent (a bad
        path, a file or version not in the root: the replay gives the same from the trace); any
        other failure (the store or the embedder failed on this node) ends the task: passed on,
        it would be a claim no validator can check (a note "unreadable", to hide it)."""
        try:
            return await work
        except (ValueError, FileNotFoundError):
            raise
        except Exception as exc:
            raise self._abort(st, f"{type(exc).__name__}: {exc}") from exc

    def _abort(self, st: TaskState, why: str) -> TaskAbort:
        st.root.aborted = st.root.aborted or why
        return TaskAbort(why)

    def _drop_user(self, user: str) -> None:
        lock, waiting = self._user_locks[user]
        if waiting <= 1:
            del self._user_locks[user]  # nobody holds or waits: no lock kept per user ever seen
        else:
            self._user_locks[user] = (lock, waiting - 1)

    async def _write_fits(
        self, st: TaskState, manager: Any, ns: str, payload: Callable[[], int], what: str
    ) -> None:
        """End the task before a memory or file write its trace could not hold: the write puts its
        content, the previous root (unless the trace has it) and the new root into the witness. A
        trace past MAX_TRACE_BYTES fails its task unbilled after the fact, so without this a task
        kept writing (and pinning) once its trace was full."""
        roots = getattr(manager, "roots", None)
        if self._trace_size is None or not isinstance(roots, NamespaceRoots):
            return  # a replay's tape managers: a task ended here never has a receipt to replay
        used = await self._trace_size(st.root.trace)  # fills the witness cache with what it holds
        prev = roots.root(ns)
        prev_bytes = 0 if prev is None else len(await roots.store.get_block(prev))
        known = prev is not None and ("block", prev) in st.root.trace.witness_cache
        need = payload() + (0 if known else prev_bytes) + prev_bytes + ROOT_GROWTH
        if used + need > MAX_TRACE_BYTES:
            raise self._abort(
                st,
                f"the trace holds {used} bytes and this {what} would add about {need} more, past the "
                f"protocol's {MAX_TRACE_BYTES}-byte trace limit: refused before writing",
            )

    def _grant(self, st: TaskState, ns: str, cids: Iterable[str]) -> None:
        """Let ``ns`` read the blocks a write of the task put in the store (`OwnershipIndex.grant`),
        noting on the task those it did not hold before."""
        st.root.granted.extend((ns, cid) for cid in self._access.owned.grant(ns, cids))

    async def _memory_call(self, st: TaskState, call: MemoryAdd | MemorySearch) -> Any:
        write = isinstance(call, MemoryAdd)
        self._access.check_area(st.spec, st.caps, "memory", write=write)
        if self._memory is None:
            raise AccessDeniedError("this node runs no memory manager")
        await self._hold_namespaces(st)
        ns = st.caps.namespace
        if isinstance(call, MemoryAdd):
            check_entry(call.text)  # here, not in the manager only: the replay runs this code
            await self._write_fits(st, self._memory, ns, lambda: _entry_bytes(call), "memory.add")
            w = await self._served(st, self._memory.add(ns, call.text, call.metadata, st.root.spec.task_id))
            self._grant(st, ns, (w.entry_cid, w.root_cid))
            st.trace.record(
                "memory.add",
                namespace=ns,
                entry=cid_link(w.entry_cid),
                root=cid_link(w.root_cid),
                prev_root=cid_link(w.prev_root),
            )
            return w.entry_cid
        if self._faults is not None and self._faults.searches:  # a cheat picks among every entry
            root, ranked = await self._served(st, self._memory.search(ns, call.query, 1 << 30))
            hits = self._faults.on_search(f"{st.spec.task_id}:{len(st.trace.events)}", ranked, call.k)
        else:
            root, hits = await self._served(st, self._memory.search(ns, call.query, call.k))
        st.trace.record(
            "memory.search",
            namespace=ns,
            query=call.query,
            k=call.k,
            root=cid_link(root),
            hits=[cid_link(h.cid) for h in hits],
            scores=[h.score for h in hits],
        )
        # the hits as the replay rebuilds them from the record (score NaN -> None, metadata as stored)
        return [
            dataclasses.replace(h, score=as_recorded(h.score), metadata=as_recorded(h.metadata) or {})
            for h in hits
        ]

    async def _storage_call(self, st: TaskState, call: _StorageCall) -> Any:
        write = isinstance(call, StoragePut | StorageRollback | StorageDelete)
        self._access.check_area(st.spec, st.caps, "storage", write=write)
        if self._storage is None:
            raise AccessDeniedError("this node runs no storage manager")
        await self._hold_namespaces(st)
        ns = st.caps.namespace
        if isinstance(call, StoragePut):
            if len(call.data) > st.caps.max_file_bytes:
                raise self._access.deny(st.spec, "storage.write", call.path, "file over the size limit")
            await self._write_fits(st, self._storage, ns, lambda: len(call.data) + 64, "storage.put")
            w = await self._served(st, self._storage.put(ns, call.path, call.data, st.root.spec.task_id))
            chunks = (compute_cid(chunk) for chunk in split_chunks(call.data))  # as add_file cut them
            self._grant(st, ns, (w.cid, *chunks, w.root_cid))
            st.trace.record(
                "storage.put",
                namespace=ns,
                path=call.path,
                cid=cid_link(w.cid),
                root=cid_link(w.root_cid),
                prev_root=cid_link(w.prev_root),
                version=w.version,
            )
            return w.cid
        root = self._storage.roots.root(ns)
        if isinstance(call, StorageRollback | StorageDelete | StorageGet):
            try:
                return await self._storage_read_or_change(st, self._storage, call, root)
            except FileNotFoundError as exc:  # judged under ``root``: recorded so a replay checks it
                st.trace.record(
                    "storage.missing",
                    namespace=ns,
                    op=_kind(call),
                    path=call.path,
                    version=_version_asked(call),
                    root=cid_link(root),
                    error=_error(exc),
                )
                raise
        if isinstance(call, StorageVersions):
            versions = await self._served(st, self._storage.versions(ns, call.path))
            st.trace.record(
                "storage.versions",
                namespace=ns,
                path=call.path,
                root=cid_link(root),
                versions=[cid_link(v) for v in versions],
            )
            return versions
        files = await self._served(st, self._storage.list_files(ns))
        st.trace.record("storage.list", namespace=ns, root=cid_link(root))
        return as_recorded(files)  # in the order the replay reads them from the decoded root

    async def _storage_read_or_change(
        self,
        st: TaskState,
        storage: StorageManager | Any,
        call: StorageGet | StorageRollback | StorageDelete,
        root: str | None,
    ) -> Any:
        """A read (returns the file's bytes), a rollback (returns the new version number) or a
        delete (returns ``None``); each may find no such file (`FileNotFoundError`)."""
        ns = st.caps.namespace
        if isinstance(call, StorageGet):
            cid, data = await self._served(st, storage.get(ns, call.path, call.version))
            st.trace.record(
                "storage.get", namespace=ns, path=call.path, cid=cid_link(cid), root=cid_link(root)
            )
            return data
        # a rollback or delete writes and pins a new root as a put does: the same gate, or a task
        # past the trace cap kept writing roots for nothing (its trace then fails it unbilled)
        what = "storage.rollback" if isinstance(call, StorageRollback) else "storage.delete"
        await self._write_fits(st, storage, ns, lambda: 0, what)
        if isinstance(call, StorageRollback):
            c = await self._served(st, storage.rollback(ns, call.path, call.version, st.root.spec.task_id))
        else:
            c = await self._served(st, storage.delete(ns, call.path, st.root.spec.task_id))
        self._grant(st, ns, (c.root_cid,))  # the one new block: the version was granted at its put
        roots = {"root": cid_link(c.root_cid), "prev_root": cid_link(c.prev_root)}
        if isinstance(call, StorageRollback):
            st.trace.record(
                "storage.rollback",
                namespace=ns,
                path=call.path,
                cid=cid_link(c.cid),
                **roots,
                version=c.version,
            )
            return c.version
        st.trace.record("storage.delete", namespace=ns, path=call.path, **roots, version=c.version)
        return None

    async def _agent_call(self, st: TaskState, call: AgentCall) -> str:
        """Run another agent as a child of the task: its events inline, its output returned."""
        spec, use = st.spec, st.root
        if self._agents is None:
            raise AccessDeniedError("this node runs no agent calls")
        chain = st.chain
        if call.agent_id in chain:
            raise self._access.deny(
                spec, "agent.call", call.agent_id, f"a cycle: {' -> '.join((*chain, call.agent_id))}"
            )
        if len(chain) > MAX_AGENT_CALL_DEPTH:
            raise self._access.deny(
                spec, "agent.call", call.agent_id, f"agent calls nest at most {MAX_AGENT_CALL_DEPTH} deep"
            )
        self._access.check_budget(spec, "LLM calls", use.llm_calls, st.caps.max_llm_calls)
        self._access.check_budget(spec, "LLM tokens", use.llm_tokens, st.caps.max_llm_tokens)
        try:  # the child gets its input as a task would: its normal form (`normal_input`), as recorded
            child_input = as_recorded(normal_input(call.input))
        except ValueError as exc:  # InputEncodingError is one
            raise AgentCallError(f"agent {call.agent_id}: {exc}") from None
        info = self._agents.resolve(call.agent_id, child_input)
        child_spec = dataclasses.replace(spec, agent_id=info.agent_id, agent_hash=None)
        entry = self._agents.callable(info, st.root.agent.agent_id)  # the signed profile's entry
        if entry is None:
            raise AgentNotAllowedError(f"agent {info.agent_id!r} is not among the agents this task may call")
        caps = child_capabilities(st.caps, entry, namespace_of(spec.user, info.agent_id))
        caps = self._agents.child_caps(caps)
        tools = tuple(t for t in st.tools if t.name in caps.tools)
        self._access.audit(spec, "agent.call", info.agent_id, True)
        st.trace.record(
            "agent.call",
            agent={"id": info.agent_id, "code_hash": info.code_hash},
            input=child_input,
            depth=len(chain),
            tools=sorted(caps.tools),
            memory=caps.memory,
            storage=caps.storage,
        )
        child = TaskState(child_spec, info, caps, st.trace, tools, st.seed, st.stream, parent=st)

        async def syscall(c: Syscall) -> Any:
            return await self.handle(child, c)

        ran = await run_agent(info.cls, spec.task_id, child_input, syscall, tools, spec.timeout_s)
        self._agents.returned(info.agent_id, ran)
        st.trace.record(
            "agent.return", agent=info.agent_id, output=ran.output, status=ran.status, error=ran.error
        )
        if ran.status != "ok":
            raise AgentCallError(f"agent {info.agent_id} failed: {ran.error}")
        return ran.output


_StorageCall = StoragePut | StorageGet | StorageList | StorageRollback | StorageDelete | StorageVersions


def _entry_bytes(call: MemoryAdd) -> int:
    """What a memory entry block of ``call`` takes, at most (its metadata unencodable: the manager
    refuses the write, as it always did)."""
    try:
        metadata = len(encode_dag(to_dag(dict(call.metadata))))
    except (TypeError, ValueError):
        metadata = 0
    return len(call.text.encode()) + metadata + ENTRY_OVERHEAD


_STORAGE_CALLS = (StoragePut, StorageGet, StorageList, StorageRollback, StorageDelete, StorageVersions)


_KINDS = {
    LLMChat: "llm",
    ToolCall: "tool",
    MemoryAdd: "memory.add",
    MemorySearch: "memory.search",
    StoragePut: "storage.put",
    StorageGet: "storage.get",
    StorageList: "storage.list",
    StorageRollback: "storage.rollback",
    StorageDelete: "storage.delete",
    StorageVersions: "storage.versions",
    AgentCall: "agent.call",
}


def _version_asked(call: StorageGet | StorageRollback | StorageDelete) -> str | None:
    """The version a file syscall names, as text (an agent may pass anything)."""
    version = getattr(call, "version", None)
    return None if version is None else str(version)


def _occurrence(root: TaskState, call: ToolCall) -> int:
    """Which call of this action (tool and arguments) of the task this one is, from 0, counted as
    the agent makes them (a refused one included): what its confirmation signs."""
    try:
        key = canonical_input({"tool": call.name, "args": dict(call.args)}).decode()
    except ValueError:  # no canonical form: no actionHash either, and the call is refused as such
        return 0
    seen = root.actions.get(key, 0)
    root.actions[key] = seen + 1
    return seen


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _kind(call: Any) -> str:
    return _KINDS.get(type(call), "unknown")


def _describe(call: Any) -> dict[str, Any]:
    """The failed call's arguments for the trace (file contents by size only)."""
    if isinstance(call, StoragePut):
        return {"path": call.path, "size": len(call.data)}
    if isinstance(call, LLMChat):
        return {"messages": [{"role": m.role, "content": m.content} for m in call.messages]}
    if isinstance(call, AgentCall):
        try:
            check_encodable(call.input)
            recorded = call.input
        except ValueError:
            recorded = None  # refused for its input: a trace cannot hold it either
        return {"agent_id": call.agent_id, "input": recorded}
    if hasattr(call, "__dataclass_fields__"):
        return {name: getattr(call, name) for name in call.__dataclass_fields__}
    return {"type": type(call).__name__}
