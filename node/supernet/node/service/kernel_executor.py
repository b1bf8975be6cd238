"""The node's executor on the real kernel (``supernet.node.kernel.Kernel``) and LLM engine.

Each job becomes a ``TaskSpec``: the kernel runs the agent, schedules its LLM calls into the
continuous batch of the engine serving the job's model id (one LLM core per configured model,
``[[engine.models]]``), records the trace and stores it; the executor forwards the token stream
and returns the output and trace CID. The task's base seed derives from the task id, so
a task re-run after a restart samples the same way.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from supernet.node.agents.registry import default_registry
from supernet.node.faults import FaultInjector
from supernet.node.kernel.access import NodePolicy, PendingConfirmation, PrivilegeGroup
from supernet.node.kernel.errors import AgentNotAllowedError
from supernet.node.kernel.kernel import Kernel, KernelConfig
from supernet.node.kernel.mcp_tools import MCPServerConfig, MCPTools
from supernet.node.kernel.syscalls import TaskOutcome, TaskSpec
from supernet.node.service.config import AccessSettings, McpServerSettings, ModelSettings, NodeSettings
from supernet.node.service.db import Database
from supernet.node.service.metrics import METRICS
from supernet.node.service.ports import EventSink, Job, JobResult, ResultSink, RootsSnapshot, TokenSink
from supernet.sdk.chain.deployment import Deployment
from supernet.sdk.chain.eip712 import Domain

log = logging.getLogger(__name__)


class TaskFailedError(RuntimeError):
    """The agent ended with an error or a timeout (the task is not charged)."""


class KernelExecutor:
    """:class:`~supernet.node.service.ports.Executor` on the kernel."""

    def __init__(
        self,
        kernel: Kernel,
        model_names: str | Mapping[str, str],
        task_fee: int,
        db: Database | None = None,
    ) -> None:
        self.kernel = kernel
        # model id -> name; a str: the one name of a one-model kernel's model
        self._names = {} if isinstance(model_names, str) else {m.lower(): n for m, n in model_names.items()}
        self._one_name = model_names if isinstance(model_names, str) else None
        self._task_fee = task_fee
        # the node's database: each task's access decisions, and the namespace roots (agents' memory
        # and files survive restarts; stored with each receipt, `JobResult.roots`)
        self.db = db
        if db is not None:  # irreversible calls on disk before they run: a re-run never repeats one
            kernel.access.journal = db.begin_irreversible
        self._roots_seq = 0
        self._mcp: MCPTools | None = None
        saved = db.load_roots() if db is not None else None
        if saved is not None:
            kernel.restore_namespace_roots(saved.roots)
            self._roots_seq = saved.seq

    def _roots_snapshot(self, receipting: str | None = None) -> RootsSnapshot:
        """The roots now, numbered after every snapshot taken before (`RootsSnapshot`)."""
        self._roots_seq += 1
        return RootsSnapshot(self._roots_seq, self.kernel.namespace_roots(receipting))

    def _save_roots(self, snapshot: RootsSnapshot | None = None) -> None:
        """Persist the roots (inline, like every other write of the node's database: one short
        fsynced transaction) before the task is acknowledged as done or failed."""
        if self.db is not None:
            self.db.save_roots(snapshot or self._roots_snapshot())

    @classmethod
    async def create(
        cls, settings: NodeSettings, store: Any, faults: FaultInjector | None = None
    ) -> KernelExecutor:
        """Load the models (in a thread: seconds each), build and start the kernel.

        Raises:
            ValueError: two configured models serve one model id, or two get one name.
        """
        from supernet.node.llm import LLMEngine
        from supernet.node.llm.loader import default_compute, default_device

        served = settings.engine.served()
        engines = []
        for entry in served:
            compute = default_compute(default_device()) if entry.dtype == "auto" else entry.dtype
            engines.append(await asyncio.to_thread(LLMEngine.load, entry.model, compute=compute))
        names = model_names(served, engines)
        METRICS.watch_engine(lambda: summed_stats(engines))
        if faults is not None:
            for engine in engines:  # the `model` fault at rate 1: a different model
                faults.perturb_model(engine.model)
        # One set of caps, from the config, and the task budget is what the fee pays for:
        # `engine.max_new_tokens` per LLM call, `pricing.tokens_per_task` per task.
        policy = NodePolicy(
            max_new_tokens=settings.engine.max_new_tokens,
            max_llm_tokens=settings.pricing.tokens_per_task,
            **access_policy(settings.access),
        )
        config = KernelConfig(
            chain_rpc_url=settings.chain.rpc_url,
            node_policy=policy,
            eip712_domain=node_domain(settings),  # users' confirmations are signed in it
            policy=settings.engine.policy,
            memory_working_set=settings.kernel.memory_working_set,
            memory_resident_entries=settings.kernel.memory_resident_entries,
            memory_k=settings.kernel.memory_k,
        )
        extra: dict[str, Any] = {"faults": faults} if faults is not None else {}
        # built-ins by [engine] agents; packaged agents only those [agents] allow names, at their hash
        agents = default_registry(allowed=settings.engine.agents, packages=settings.agents.allow)
        kernel = Kernel(engines, store, config, agents=agents, **extra)
        mcp = MCPTools([mcp_config(s) for s in settings.mcp.servers])
        await mcp.start()  # a server that is down is logged and its tools are absent
        try:
            mcp.register(kernel.tools)
        except Exception:
            await mcp.close()
            raise
        await kernel.setup()
        db = Database.open(settings.data_dir / "node.sqlite3")  # the node's own database
        adopt_roots_file(db, settings.data_dir / "namespace_roots.json")
        executor = cls(kernel, names, settings.pricing.task_fee_wei, db)
        executor._mcp = mcp
        return executor

    def model_ids(self) -> Sequence[str]:
        """Every model this node serves (one LLM core each), the default first."""
        return self.kernel.model_ids

    def model_name(self, model_id: str) -> str:
        """The model's name (configured, or its catalog or directory name); the id if unknown."""
        return self._names.get(model_id.lower()) or self._one_name or model_id

    def model_format(self, model_id: str) -> tuple[str, str]:
        """(weights id, compute format) of the served id ``model_id``: its engine's."""
        engine = self.kernel.engine_for(model_id)
        return engine.weights_id, engine.compute

    def engine(self, model_id: str) -> Any:
        """The engine serving ``model_id`` (its tokenizer and scoring pass).

        Raises:
            ModelNotServedError: no core serves ``model_id``.
        """
        return self.kernel.engine_for(model_id)

    def agent_hash(self, agent: str) -> str | None:
        """The ``agentHash`` a user signs for an allowed agent (its profile's hash), None otherwise."""
        try:
            return self.kernel.profile(agent).hash()
        except AgentNotAllowedError:
            return None

    def agent_input_schema(self, agent: str) -> Mapping[str, Any] | None:
        """The JSON schema an allowed agent's input must match, None for an agent not run here."""
        try:
            return self.kernel.agents.get(agent).input_schema
        except AgentNotAllowedError:
            return None

    def agent_cards(self) -> list[dict[str, Any]]:
        """Every agent this node runs: id, code hash, profile and its hash (the signed
        ``agentHash``), description, input JSON schema, package."""
        return [
            {
                "id": a.agent_id,
                "codeHash": a.code_hash,
                "agentHash": (profile := self.kernel.profile(a.agent_id)).hash(),
                "profile": profile.to_json(),
                "description": a.description,
                "inputSchema": dict(a.input_schema),
                "package": a.package,
            }
            for a in self.kernel.agents.list()
        ]

    async def run(
        self,
        job: Job,
        on_token: TokenSink,
        on_event: EventSink | None = None,
        on_result: ResultSink | None = None,
    ) -> JobResult:
        """Run the job's agent to its end, streaming generated text to ``on_token``; a call that
        waits for the user's confirmation is announced to ``on_event``.

        Raises:
            TaskFailedError: The agent's profile is no longer the one its user signed (the operator
                upgraded the package or changed the policy while the task waited, e.g. across a
                restart): running it would return a result no validator could replay against the
                signed hash.
        """
        signed = (job.request or {}).get("agentHash")
        running = self.agent_hash(job.agent)
        if signed is not None and (running is None or running.lower() != signed.lower()):
            raise TaskFailedError(
                f"agent {job.agent!r} now runs under profile {running}, not the {signed} its user signed"
            )
        spec = TaskSpec(
            task_id=job.task_id,
            agent_id=job.agent,
            input=job.input,
            user=job.user,
            fee=job.fee or self._task_fee,  # what the task pays: the fair policy's weight
            request=job.request,
            request_signature=job.request_signature,
            model_id=job.model_id,  # the signed modelId: the core whose engine runs the LLM calls
        )

        async def succeeded(outcome: TaskOutcome) -> None:
            # before the user's next task may start from this task's writes: its receipt is stored
            # (docs/validator.md, "Where a task's roots come from"), with the roots holding them
            self._save_audit(job.task_id)
            roots = self._roots_snapshot(receipting=job.task_id)
            if on_result is not None:
                await on_result(JobResult(outcome.output, outcome.trace_cid, roots))
            else:
                self._save_roots(roots)

        run = self.kernel.submit(spec, on_success=succeeded)
        if on_event is not None:
            push_event = on_event

            def announce(pending: PendingConfirmation) -> None:
                push_event("confirmation_required", pending.to_json())

            self.kernel.access.watch(spec, announce)
        async for chunk in run.tokens():
            on_token(chunk.text)
        outcome = await run.outcome()
        self._save_roots()  # grants and pins as the task left them (its writes kept, or undone)
        if outcome.status != "ok":
            self._save_audit(job.task_id)  # before the worker acknowledges the failure
            raise TaskFailedError(outcome.error or outcome.status)
        return JobResult(output=outcome.output, trace_cid=outcome.trace_cid)

    async def close(self) -> None:
        """Stop the kernel and its engine, and close the MCP sessions."""
        await self.kernel.stop()
        self._save_roots()  # the roots the stopped tasks left (their writes undone, unpinned)
        if self._mcp is not None:
            await self._mcp.close()
        if self.db is not None:
            self.db.close()

    def confirm(self, task_id: str, action: str, signature: bytes) -> bool:
        """Hand the user's confirmation to a paused call (:meth:`AccessManager.confirm`)."""
        return self.kernel.access.confirm(task_id, action, signature)

    def pending_confirmations(self, task_id: str) -> list[dict[str, Any]]:
        """The calls of ``task_id`` waiting for a confirmation now (``confirmation_required`` data)."""
        return [p.to_json() for p in self.kernel.access.pending(task_id)]

    def _save_audit(self, task_id: str) -> None:
        if self.db is not None:
            self.db.save_audit(task_id, [e.to_json() for e in self.kernel.audit_log(task_id)])


def adopt_roots_file(db: Database, path: Path) -> None:
    """Move the roots a node kept in ``namespace_roots.json`` (before they were stored with the
    receipts) into its database, once; the file is renamed so it is never read again."""
    if path.is_file():
        if db.load_roots() is None:
            db.save_roots(RootsSnapshot(1, json.loads(path.read_text())))
        path.rename(path.with_suffix(".json.adopted"))


def model_names(served: Sequence[ModelSettings], engines: Sequence[Any]) -> dict[str, str]:
    """Served model id -> name: the configured name, else the catalog or directory name, with
    ``@<compute format>`` added where two models would share it (``smollm2-135m@bfloat16``).

    Raises:
        ValueError: two models serve one id, or two end up with one name.
    """
    base = [m.name or Path(m.model).name for m in served]
    names: dict[str, str] = {}
    for m, name, engine in zip(served, base, engines, strict=True):
        model_id = str(engine.model_id).lower()
        if model_id in names:
            raise ValueError(f"engine.models: {m.model} ({m.dtype}) serves {model_id} a second time")
        if m.name is None and base.count(name) > 1:
            name = f"{name}@{engine.compute}"
        names[model_id] = name
    if len(set(names.values())) != len(names):
        raise ValueError(f"engine.models: two models share a name ({sorted(names.values())}); set `name`")
    return names


def summed_stats(engines: Sequence[Any]) -> dict[str, int]:
    """The engines' ``load_stats`` added up (what /metrics reports for the node)."""
    total: dict[str, int] = {}
    for engine in engines:
        for key, value in engine.load_stats.items():
            total[key] = total.get(key, 0) + int(value)
    return total


def access_policy(s: AccessSettings) -> dict[str, Any]:
    """The ``NodePolicy`` fields of the ``[access]`` section."""
    groups = tuple(
        PrivilegeGroup(g.name, frozenset(g.agents), tuple(g.tools), g.memory, g.storage) for g in s.groups
    )
    return {
        "groups": groups,
        "confirmation_timeout_s": s.confirmation_timeout_s,
        "max_paused_calls": s.max_paused_calls,
    }


def node_domain(settings: NodeSettings) -> Domain:
    """The EIP-712 domain of this node's deployment (as the node service's ``domain``)."""
    if settings.chain.enabled and settings.chain.deployment is not None:
        return Deployment.load(settings.chain.deployment).domain
    return Domain(chain_id=settings.chain.chain_id, verifying_contract="0x" + "00" * 20)


def mcp_config(s: McpServerSettings) -> MCPServerConfig:
    """The kernel's view of one ``[[mcp.servers]]`` entry."""
    return MCPServerConfig(
        name=s.name,
        transport=s.transport,
        command=s.command,
        args=tuple(s.args),
        env=dict(s.env),
        url=s.url,
        timeout_s=s.timeout_s,
        connect_timeout_s=s.connect_timeout_s,
        max_concurrency=s.max_concurrency,
        deterministic=frozenset(s.deterministic),
        irreversible=frozenset(s.irreversible),
        allow=None if s.allow is None else frozenset(s.allow),
        max_result_bytes=s.max_result_bytes,
    )
