"""The kernel: admits tasks, runs their agents, and builds the managers they call through.

Lifecycle as every long-running service of the node: ``setup`` / ``run_forever`` / ``stop``.
The node service calls :meth:`Kernel.run_task` (or :meth:`Kernel.submit` to stream tokens):

>>> kernel = Kernel(engine, store, KernelConfig(policy="fair"))  # doctest: +SKIP
>>> await kernel.setup()  # doctest: +SKIP
>>> run = kernel.submit(TaskSpec(task_id="0x…", agent_id="chat", input="Hi", user="0x…", fee=10**12))
>>> async for chunk in run.tokens():  # doctest: +SKIP
...     print(chunk.text, end="")
>>> outcome = await run.outcome()  # doctest: +SKIP  (output, trace_cid, trace_hash, trace ...)

Several models: ``Kernel([fp32_engine, bf16_engine], store)`` gives one LLM core (engine, batch,
scheduler) per model id (`supernet.node.kernel.cores`) and ``TaskSpec.model_id`` picks the core a
task's LLM calls go to; memory, storage, tools and access stay one for all models, so a user's
memory is the same whichever model a task of theirs runs on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from supernet.node.agents.registry import AgentRegistry, default_registry
from supernet.node.faults import FaultInjector
from supernet.node.kernel.access import AccessManager, AuditEntry, Capabilities, NodePolicy
from supernet.node.kernel.agent_run import (
    AgentResult,
    callable_agent,
    profile_of,
    recorded_tool,
    run_agent,
    seen_spec,
    task_context,
    task_seed,
)
from supernet.node.kernel.builtin_tools import builtin_tools
from supernet.node.kernel.cores import LLMCore, LLMCores
from supernet.node.kernel.dispatch import Dispatcher, RegistryAgents, TaskState
from supernet.node.kernel.embeddings import token_count
from supernet.node.kernel.errors import AgentNotAllowedError, KernelError, KernelStoppedError, TaskAbort
from supernet.node.kernel.memory import (
    DEFAULT_K,
    DEFAULT_RESIDENT_LIMIT,
    DEFAULT_WORKING_SET,
    Embedder,
    MemoryManager,
)
from supernet.node.kernel.policies import PolicyName, make_policy
from supernet.node.kernel.scheduler import Scheduler
from supernet.node.kernel.slots import TaskSlots
from supernet.node.kernel.storage import StorageManager
from supernet.node.kernel.syscalls import Syscall, TaskOutcome, TaskSpec, TokenChunk
from supernet.node.kernel.tools import ToolRegistry, ToolSpec
from supernet.node.kernel.trace import (
    TraceRecorder,
    TraceTooLargeError,
    as_recorded,
    collect_witness,
    save_trace,
    trace_size,
)
from supernet.sdk.chain.eip712 import Domain
from supernet.sdk.chain.receipts import normal_input
from supernet.sdk.formats.profile import AgentProfile
from supernet.sdk.formats.trace import CallableAgent

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KernelConfig:
    """How the kernel schedules and what it allows.

    Attributes:
        policy: ``"fifo"``, ``"rr"`` (round robin) or ``"fair"`` (fee priority, fair share).
        max_active: LLM calls in the engine's batch at once.
        time_slice_tokens: Tokens before a call may be preempted (rr and fair; ``None``: never).
        max_concurrent_tasks: Agents running at once; more tasks wait for a slot.
        node_policy: The operator's access policy.
        chain_rpc_url: RPC of the ``chain_read`` tool (``None``: the tool reports no chain).
        eip712_domain: Domain of the task owners' confirmations (``None``: irreversible tools refused).
        memory_working_set: Memory entries of one namespace held in RAM at most (K-LRU working
            set; evicted entries stay in the store and are paged back in). ``None``: unbounded.
        memory_k: The K of the memory working sets' LRU-K replacement (1: plain LRU).
        memory_resident_entries: Memory entries held in RAM at most, all namespaces together.
    """

    policy: PolicyName = "fair"
    max_active: int = 16
    time_slice_tokens: int | None = 32
    max_concurrent_tasks: int = 64
    node_policy: NodePolicy = field(default_factory=NodePolicy)
    chain_rpc_url: str | None = None
    eip712_domain: Domain | None = None
    memory_working_set: int | None = DEFAULT_WORKING_SET
    memory_k: int = DEFAULT_K
    memory_resident_entries: int | None = DEFAULT_RESIDENT_LIMIT


class TaskRun:
    """A submitted task: its token stream and its outcome."""

    def __init__(self, spec: TaskSpec, state: TaskState, task: asyncio.Task[TaskOutcome]) -> None:
        self.spec = spec
        self._state = state
        self._task = task

    @property
    def task_id(self) -> str:
        return self.spec.task_id

    @property
    def state(self) -> TaskState:
        """The kernel's state of the task (kernel-internal)."""
        return self._state

    async def tokens(self) -> AsyncIterator[TokenChunk]:
        """Every generated token of every LLM call of the task, as it comes (one consumer)."""
        while (chunk := await self._state.stream.get()) is not None:
            yield chunk

    async def outcome(self) -> TaskOutcome:
        """Wait for the task's end.

        Raises:
            KernelStoppedError: The kernel stopped before the task ended.
        """
        try:
            return await asyncio.shield(self._task)
        except asyncio.CancelledError:
            if self._task.cancelled():
                raise KernelStoppedError(f"task {self.task_id} was stopped with the kernel") from None
            raise

    def done(self) -> bool:
        """Whether the task has ended."""
        return self._task.done()


class Kernel:
    """The AIOS-style kernel of a node.

    Args:
        engine: The LLM engine (``supernet.node.llm.LLMEngine``), or a sequence of engines: one
            LLM core each (its own batch and scheduler), routed by the task's model id; the first
            serves tasks that name no model. The kernel starts and stops them.
        store: The content-store client (``supernet.sdk.store.StoreClient``).
        config: Scheduling and access configuration.
        agents: The agents the operator allows (default: the built-ins).
        tools: The tool registry (default: the built-ins).
        embedder: The memory's sentence embedder (default: all-MiniLM-L6-v2, loaded on first use).
        params_type: Sampling-parameter class of the engine (default: ``supernet.node.llm.SamplingParams``).
        faults: Fault injection for tests and the demo (a node that cheats on purpose); ``None`` in
            production.
        model_perturbed: Whether ``faults`` already perturbed the engine's weights at load.
    """

    def __init__(
        self,
        engine: Any,
        store: Any,
        config: KernelConfig | None = None,
        *,
        agents: AgentRegistry | None = None,
        tools: ToolRegistry | None = None,
        embedder: Embedder | None = None,
        params_type: Any = None,
        faults: FaultInjector | None = None,
        model_perturbed: bool = False,
    ) -> None:
        self.config = config = config or KernelConfig()
        engines = list(engine) if isinstance(engine, list | tuple) else [engine]
        self.engine = engines[0]  # the default core's (one-model callers use it as before)
        self.store = store
        self.agents = agents or default_registry()
        # a group naming no agent run here would confine nobody: the node does not start
        config.node_policy.check_group_agents(self.agents.ids())
        self.access = AccessManager(config.node_policy, config.eip712_domain)
        if tools is None:
            tools = ToolRegistry()
            for tool in builtin_tools(store, config.chain_rpc_url, self.access):  # store_read: scoped
                tools.register(tool)
        self.tools = tools
        self._own_embedder = embedder is None
        if embedder is None:
            from supernet.node.kernel.embeddings import MiniLMEmbedder

            embedder = MiniLMEmbedder()
        self._embedder = embedder
        if params_type is None:
            from supernet.node.llm import SamplingParams

            params_type = SamplingParams
        slice_tokens = None if config.policy == "fifo" else config.time_slice_tokens

        def core(e: Any) -> LLMCore:  # each model: its own batch, fed by its own scheduler
            max_active = min(config.max_active, getattr(e, "max_batch", config.max_active))
            policy = make_policy(config.policy)
            return LLMCore(e, Scheduler(e, policy, max_active=max_active, time_slice_tokens=slice_tokens))

        self.cores = LLMCores([core(e) for e in engines])
        self.scheduler = self.cores.default.scheduler
        self.memory = MemoryManager(
            store,
            embedder,
            working_set=config.memory_working_set,
            k=config.memory_k,
            resident_limit=config.memory_resident_entries,
        )
        self.storage = StorageManager(store)
        self._faults = faults
        self._slots = TaskSlots(config.max_concurrent_tasks)
        self._dispatcher = Dispatcher(
            cores=self.cores,
            tools=tools,
            memory=self.memory,
            storage=self.storage,
            access=self.access,
            params_type=params_type,
            faults=faults,
            model_perturbed=model_perturbed,
            agents=RegistryAgents(self.agents, self.callable_agents),  # the node's allowed agents
            slots=self._slots,
            revert_failed=True,
            trace_size=partial(trace_size, store),
            live=True,
        )
        self._runs: dict[str, TaskRun] = {}
        self._running = False
        self._stopped = asyncio.Event()

    @property
    def model_id(self) -> str:
        """The default core's served model id (``supernet.sdk.models.served_model_id``)."""
        return str(self.engine.model_id)

    @property
    def model_ids(self) -> list[str]:
        """Every served model id (lower-case ``0x`` hex), the default first."""
        return self.cores.model_ids

    def engine_for(self, model_id: str | None) -> Any:
        """The engine of ``model_id``'s core (``None``: the default).

        Raises:
            ModelNotServedError: no core serves ``model_id``.
        """
        return self.cores.get(model_id).engine

    # -- lifecycle ------------------------------------------------------------------------------

    async def setup(self) -> None:
        """Start every core's batching loop; then tasks are accepted."""
        for c in self.cores:
            await c.engine.start()
        # the entry-length rule's tokenizer, loaded here rather than inside a task's first add
        await asyncio.to_thread(token_count, "")
        self._running = True
        self._stopped.clear()

    async def run_forever(self) -> None:
        """Wait until :meth:`stop` (the kernel does its work in the tasks it admits)."""
        await self._stopped.wait()

    async def stop(self) -> None:
        """Stop accepting tasks, end the running ones, stop the engine."""
        self._running = False
        for c in self.cores:
            c.scheduler.close()
        runs = [r for r in self._runs.values() if not r.done()]
        for run in runs:
            run._task.cancel()
        await asyncio.gather(*(r._task for r in runs), return_exceptions=True)
        for c in self.cores:
            await c.engine.stop()
        close = getattr(self._embedder, "close", None)
        if self._own_embedder and close is not None:
            close()
        self._stopped.set()

    # -- tasks ----------------------------------------------------------------------------------

    def submit(
        self, spec: TaskSpec, on_success: Callable[[TaskOutcome], Awaitable[None]] | None = None
    ) -> TaskRun:
        """Admit ``spec`` and start its agent (it may wait for a task slot).

        ``on_success`` is awaited with the outcome of a successful task before its writes become
        its user's memory and files for the next task (the user's namespaces stay held until it
        returns; if it raises, the writes are undone and the task fails): the node stores the
        task's receipt there, so a root a task starts from was written by a task whose receipt
        was stored first, and is committed no later (docs/validator.md, "Where a task's roots
        come from"). Once it returns, the writes stay whatever happens next. It should store and
        return: the user's namespaces wait for it.

        Raises:
            KernelStoppedError: The kernel is not running.
            AgentNotAllowedError: The node does not run this agent, or not under the signed profile.
            ModelNotServedError: No core serves the task's model id.
            KernelError: A task with this id is running already.
        """
        if not self._running:
            raise KernelStoppedError("the kernel is not running")
        previous = self._runs.get(spec.task_id)
        if previous is not None and not previous.done():
            raise KernelError(f"task {spec.task_id} is already running")
        info = self.agents.get(spec.agent_id)
        core = self.cores.get(spec.model_id)
        try:  # the trace records the value the signed inputHash names (docs/protocol.md, inputHash),
            # and the agent gets it as recorded (dag-cbor's key order), as a validator's replay does
            spec = replace(spec, input=as_recorded(normal_input(spec.input)))
        except ValueError as exc:  # InputEncodingError is one
            raise KernelError(f"task {spec.task_id}: {exc}") from None
        caps, tools = self._environment(spec)
        callable_agents = self.callable_agents(info.agent_id)
        if spec.agent_hash is not None:  # the user signed the profile, not only the code
            running = profile_of(info.agent_id, info.code_hash, caps, tools, callable_agents).hash()
            if running != spec.agent_hash.lower():
                raise AgentNotAllowedError(
                    f"agent {spec.agent_id!r} runs here under profile {running}, not the signed "
                    f"{spec.agent_hash} (its code, limits or tools differ)"
                )
        seed = task_seed(spec.task_id)
        trace = TraceRecorder(
            spec.task_id,
            spec.user,
            spec.fee,
            info.agent_id,
            info.code_hash,
            str(core.engine.model_id),
            spec.input,
            {
                **task_context(seed, caps, tools, callable_agents, core.engine),
                **({"request": dict(spec.request)} if spec.request is not None else {}),
                **({"request_signature": spec.request_signature} if spec.request_signature else {}),
            },
        )
        state = TaskState(spec, info, caps, trace, tuple(tools), seed)
        task = asyncio.get_running_loop().create_task(
            self._execute(state, on_success), name=f"task:{spec.task_id}"
        )
        run = TaskRun(spec, state, task)
        self._runs[spec.task_id] = run
        task.add_done_callback(lambda _t: self._forget(run))
        return run

    def _environment(self, spec: TaskSpec) -> tuple[Capabilities, list[ToolSpec]]:
        caps = self.access.capabilities(spec, frozenset(self.tools.names()))
        return caps, [seen_spec(recorded_tool(self.tools.spec(name))) for name in sorted(caps.tools)]

    def profile(self, agent_id: str) -> AgentProfile:
        """The profile every task of ``agent_id`` runs under here (code, limits, tools, callable
        agents): its hash is the ``agentHash`` a user signs for it.

        Raises:
            AgentNotAllowedError: the node does not run ``agent_id``.
        """
        info = self.agents.get(agent_id, check_files=False)  # the registered hash: nothing re-read
        caps, tools = self._environment(TaskSpec(task_id="", agent_id=info.agent_id, input=""))
        return profile_of(info.agent_id, info.code_hash, caps, tools, self.callable_agents(info.agent_id))

    def callable_agents(self, agent_id: str) -> list[CallableAgent]:
        """The agents a task of ``agent_id`` may call, by id: the allowed agents its class names
        in ``calls_agents`` and, in turn, those they name (``"*"``: every allowed agent), each with
        what it gets when another agent calls it (the same for every caller, before keeping only
        what the caller has): part of the agent's profile. An agent that calls none (chat) lists
        none, so a package the validators lack refuses only the agents that can reach it."""
        allowed = {a.agent_id: a for a in self.agents.list()}
        reach: set[str] = set()
        todo = [agent_id]
        while todo:
            info = allowed.get(todo.pop())
            if info is None:
                continue
            calls = info.cls.calls_agents
            named = allowed if calls == "*" else (calls,) if isinstance(calls, str) else calls
            for child in named:
                if child in allowed and child not in reach:
                    reach.add(child)
                    todo.append(child)
        registered = frozenset(self.tools.names())
        return [
            callable_agent(
                a.agent_id, a.code_hash, self.access.capabilities(TaskSpec("", a.agent_id, ""), registered)
            )
            for a in (allowed[i] for i in sorted(reach))
        ]

    async def run_task(self, spec: TaskSpec) -> TaskOutcome:
        """Run ``spec`` to its end: its output, trace CID, trace hash and trace."""
        return await self.submit(spec).outcome()

    def audit_log(self, task_id: str | None = None) -> list[AuditEntry]:
        """The access manager's decisions (of one task when ``task_id`` is given)."""
        return self.access.audit_log(task_id)

    def namespace_roots(self, receipting: str | None = None) -> dict[str, Any]:
        """Latest memory and file roots per namespace, for the node to persist, and with
        ``receipting`` the store-read grants its writes added (``granted``: [namespace, CID] pairs
        of the access manager's ownership index), which the node adds to what it keeps.

        The namespaces of a user whose task is still running are given as that task found them:
        its writes are persisted only with its receipt (a crash must never leave a root whose
        writer has no receipt: validators would find no committed writer for it). ``receipting``:
        the task whose receipt is being stored with these roots (its writes are included). Grants
        go the same way, one task's at a time: the whole index, written at every task's end, grew
        with every paid write the node ever made (docs/node.md)."""
        memory, storage = self.memory.roots.snapshot(), self.storage.roots.snapshot()
        for run in self._runs.values():
            st = run.state
            if st.marked is None or st.receipted or st.spec.task_id == receipting:
                continue
            prefix = st.spec.user.lower() + "/"
            for roots, found in ((memory, st.marked[0]), (storage, st.marked[1])):
                for ns in [ns for ns in roots if ns.startswith(prefix)]:
                    del roots[ns]
                roots.update(found)
        saved: dict[str, Any] = {"memory": memory, "storage": storage}
        receipted = self._runs.get(receipting) if receipting is not None else None
        if receipted is not None:
            saved["granted"] = [list(grant) for grant in receipted.state.root.granted]
        return saved

    def restore_namespace_roots(self, roots: Mapping[str, Any]) -> None:
        """Continue from roots saved by :meth:`namespace_roots` (after a restart), and the grants
        kept (``grants``: namespace -> CIDs, as the node's database gathers them)."""
        self.memory.roots.restore(roots.get("memory", {}))
        self.storage.roots.restore(roots.get("storage", {}))
        self.access.owned.restore(roots.get("grants", {}))

    def _forget(self, run: TaskRun) -> None:
        if self._runs.get(run.task_id) is run:
            del self._runs[run.task_id]
            self.access.forget(run.task_id)  # its paused calls and confirmations end with it

    async def _execute(
        self, st: TaskState, on_success: Callable[[TaskOutcome], Awaitable[None]] | None = None
    ) -> TaskOutcome:
        spec = st.spec
        loop = asyncio.get_running_loop()
        started = loop.time()

        async def syscall(call: Syscall) -> Any:
            return await self._dispatcher.handle(st, call)

        try:
            async with self._slots.hold() as st.slot:
                ran = await run_agent(
                    st.agent.cls, spec.task_id, spec.input, syscall, st.tools, spec.timeout_s
                )
        except TaskAbort as exc:  # failed, whatever the agent would have made of it
            st.aborted = st.aborted or str(exc)
        except BaseException:
            await self._dispatcher.release(st, keep=False)
            raise
        finally:
            st.ended = True  # no syscall of it starts any more (`Dispatcher.settle` waits for the rest)
            st.stream.put_nowait(None)
        if st.aborted is not None:  # raised, or swallowed by the agent
            ran = AgentResult("", "error", f"TaskAbort: {st.aborted}")
        output = ran.output
        if ran.status == "ok" and self._faults is not None:
            output = self._faults.on_answer(spec.task_id, output)
        kept = False  # the user's memory and files keep the task's writes only if it succeeds
        try:
            await self._dispatcher.settle(st)  # a syscall the agent left running: in the trace too
            witness = await collect_witness(self.store, st.trace.typed, st.trace.witness_cache)
            trace = st.trace.build(output, ran.status, ran.error, witness)
            try:
                cid, trace_hash = await save_trace(
                    self.store, trace, publish=not self._withholds(spec.task_id)
                )
            except TraceTooLargeError as exc:  # say why the task failed first, not only the trace's size
                if ran.error is None:
                    raise
                raise TraceTooLargeError(f"{ran.error}; then: {exc}") from None
            outcome = TaskOutcome(
                task_id=spec.task_id,
                status=ran.status,
                output=output,
                error=ran.error,
                trace_cid=cid,
                trace_hash=trace_hash,
                trace=trace,
                latency_s=loop.time() - started,
                llm_tokens=st.llm_tokens,
            )
            if ran.status == "ok" and on_success is not None:
                await on_success(outcome)  # the receipt, stored before the user's next task starts
            st.receipted = kept = ran.status == "ok"  # from here on the writes stay, and may be persisted
        finally:
            await self._dispatcher.release(st, keep=kept)
        return outcome

    def _withholds(self, task_id: str) -> bool:
        return self._faults is not None and self._faults.withholds(task_id)
