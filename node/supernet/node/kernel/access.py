"""The access manager: what each running agent may do, confirmations, and the audit log.

Capabilities are derived from two things only: the task the user signed (agent, tools asked
for) and the node operator's policy. The memory and file namespace of a task is derived
from its owner and agent (``"<user>/<agent id>"``), so one agent never reaches another's
memory or files: the namespace never comes from an argument the agent passes.

Irreversible tools need the task owner's EIP-712 ``Confirmation`` (docs/protocol.md):
``requestHash`` = the task id, ``actionHash`` = sha256 of the canonical JSON of
``{"tool": name, "args": args}``, signed by the task's user.

Reading the content store by CID (the ``store_read`` tool) is scoped the same way: a block
carries no namespace and a CID is no secret (public traces name every entry, root and file a
task touches), so the access manager keeps an :class:`OwnershipIndex` of the blocks each
namespace's own writes made, and a task reads only those (:meth:`AccessManager.check_store_read`).

Privilege groups (:class:`PrivilegeGroup`, ``[[access.groups]]`` of the node config) narrow what
an agent gets on top of those rules: an agent named by one or more groups may use only the tools
their patterns match (``fnmatch`` globs: ``"mcp_files.*"``) and a memory or files only if one of
its groups allows it; an agent in no group keeps the node policy's defaults. Groups shape the
task's capabilities, which the trace records (``tools``, ``limits``), so a denial replays exactly.
A group names agent ids exactly, in any case (as ``[engine] agents`` does; no globs), and the
kernel refuses to start with a group naming an agent it does not run
(:meth:`NodePolicy.check_group_agents`): a group that silently confined nobody would leave the
agent the operator meant to confine with the defaults.

A call of an irreversible tool without its confirmation may *pause* instead of failing
(``NodePolicy.confirmation_timeout_s``): the access manager announces a
:class:`PendingConfirmation` to the task's watcher (the node's event stream), and the call goes on
once :meth:`AccessManager.confirm` gets the task user's valid signature, or fails with
``ConfirmationRequiredError`` when the wait times out.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from typing import Any

from supernet.node.kernel.errors import (
    AccessDeniedError,
    BudgetExceededError,
    ConfirmationRequiredError,
    ToolUnavailableError,
)
from supernet.node.kernel.syscalls import TaskSpec
from supernet.node.kernel.tools import ToolSpec
from supernet.sdk.chain.eip712 import Confirmation, Domain, recover_confirmation, typed_data
from supernet.sdk.chain.receipts import action_hash
from supernet.sdk.store.cids import canonical_cid

log = logging.getLogger(__name__)

TASK_AUDIT_SIZE = 4 * 1024
"""A task's audit entries kept (the oldest go first): four per trace event at the trace's
1,024-event cap, more than a task's syscalls can decide."""
ENDED_AUDITS = 1024
"""Ended tasks whose audit stays in memory (the node saves each with its task as it ends)."""


@dataclass(frozen=True)
class PrivilegeGroup:
    """An operator-defined group of agents and what its members may use.

    Attributes:
        name: The group's name (the operator's label; unique in the config).
        agents: Agent ids in the group, matched ignoring case (kept in lower case); no globs.
        tools: Tool names or ``fnmatch`` globs (``"mcp_files.*"``) the members may use.
        memory: Whether members get a memory.
        storage: Whether members get files.
    """

    name: str
    agents: frozenset[str]
    tools: tuple[str, ...] = ()
    memory: bool = False
    storage: bool = False

    def __post_init__(self) -> None:
        globs = sorted(a for a in self.agents if any(c in a for c in GLOB_CHARS))
        if globs:
            raise ValueError(
                f"access group {self.name!r}: agents {globs} look like globs; a group names agent ids "
                "exactly (only its tools may be globs)"
            )
        object.__setattr__(self, "agents", frozenset(a.lower() for a in self.agents))

    def names(self, agent_id: str) -> bool:
        """Whether the group names ``agent_id`` (ignoring case, as ``[engine] agents`` does)."""
        return agent_id.lower() in self.agents

    def allows_tool(self, tool: str) -> bool:
        """Whether one of the group's patterns matches ``tool``."""
        return any(fnmatch.fnmatchcase(tool, pattern) for pattern in self.tools)


GLOB_CHARS = "*?[]"
"""Characters of an ``fnmatch`` glob, refused in a group's agent ids (no agent id holds one)."""

MAX_LIMIT = 2**53 - 1
"""The largest value of a policy limit: the largest integer RFC 8785 JSON (the signed profile) holds."""


@dataclass(frozen=True)
class NodePolicy:
    """The node operator's rules for every task.

    Attributes:
        allowed_tools: Tools tasks may use (``None``: every registered tool).
        max_llm_calls: LLM calls per task.
        max_llm_tokens: Output tokens per task, over all its LLM calls.
        max_new_tokens: Cap of one LLM call's ``max_new_tokens``.
        max_tool_calls: Tool calls per task.
        allow_memory: Whether agents get a memory.
        allow_storage: Whether agents get files.
        max_file_bytes: Largest file an agent may write. A trace carries the files its task reads
            and writes (its witness), and a written file's text twice (the call and the witness),
            within the protocol's 384 KiB (`MAX_TRACE_BYTES`), hence the 64 KiB default, which
            leaves most of the trace to the LLM calls.
        groups: Privilege groups; an agent in at least one gets the union of their tools, memory
            and files (within the rest of the policy); an agent in none keeps the defaults above.
        confirmation_timeout_s: How long a tool call missing its confirmation waits for the task
            user to send one (``None``: no wait, the call is refused at once).
        max_paused_calls: Calls waiting for their users at once, over all tasks; one more is
            refused at once, as without a wait. A paused task keeps its worker slot, and users who
            never confirm (free keys, each task failing unbilled) could otherwise hold every slot
            for the whole timeout (tests/unit/test_review_confirmations.py).
    """

    allowed_tools: frozenset[str] | None = None
    max_llm_calls: int = 32
    max_llm_tokens: int = 8192
    max_new_tokens: int = 512
    max_tool_calls: int = 64
    allow_memory: bool = True
    allow_storage: bool = True
    max_file_bytes: int = 64 << 10
    groups: tuple[PrivilegeGroup, ...] = ()
    confirmation_timeout_s: float | None = None
    max_paused_calls: int = 8

    def __post_init__(self) -> None:
        # every limit is part of each agent's signed profile, hashed as RFC 8785 JSON: an integer
        # it cannot write would leave the node unable to list an agent or admit a task
        for name in ("max_llm_calls", "max_llm_tokens", "max_new_tokens", "max_tool_calls", "max_file_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_LIMIT:
                raise ValueError(f"policy {name} must be an integer from 0 to 2**53 - 1, not {value!r}")

    def groups_of(self, agent_id: str) -> tuple[PrivilegeGroup, ...]:
        """The groups naming ``agent_id`` (empty: the agent keeps the policy's defaults)."""
        return tuple(g for g in self.groups if g.names(agent_id))

    def check_group_agents(self, running: Iterable[str]) -> None:
        """Refuse groups naming an agent that is not ``running`` (the node's agent ids).

        Raises:
            ValueError: A group names an agent id the node does not run (case aside).
        """
        ids = sorted(running)
        known = {a.lower() for a in ids}
        problems = [
            f"access group {g.name!r} names agents {sorted(g.agents - known)}"
            for g in self.groups
            if g.agents - known
        ]
        if problems:
            raise ValueError(
                f"{'; '.join(problems)}, which this node does not run (it runs {ids}): a group "
                "names agent ids exactly, so it would confine nobody"
            )


@dataclass(frozen=True)
class Capabilities:
    """What one task's agent may do (derived, never requested by the agent at run time)."""

    tools: frozenset[str]
    namespace: str
    memory: bool
    storage: bool
    max_llm_calls: int
    max_llm_tokens: int
    max_new_tokens: int
    max_tool_calls: int
    max_file_bytes: int


@dataclass(frozen=True)
class AuditEntry:
    """One access decision."""

    time: float
    task_id: str
    agent_id: str
    user: str
    action: str
    target: str
    allowed: bool
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        """The entry as JSON (the node persists and serves it)."""
        return asdict(self)


@dataclass(eq=False)
class PendingConfirmation:
    """A paused tool call waiting for its user's signed ``Confirmation``.

    Attributes:
        task_id: The task (``requestHash``).
        action_hash: ``0x`` hex of the call's ``actionHash``.
        tool: The tool's name.
        args: The call's arguments.
        occurrence: Which call of this tool with these arguments in the task (0: the first).
        typed_data: The EIP-712 document the user signs (``eth_signTypedData_v4``).
    """

    task_id: str
    action_hash: str
    tool: str
    args: dict[str, Any]
    typed_data: dict[str, Any]
    occurrence: int = 0
    done: asyncio.Future[bytes] = field(
        repr=False, default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def to_json(self) -> dict[str, Any]:
        """The ``confirmation_required`` event's data (bytes as ``0x`` hex)."""
        return {
            "taskId": self.task_id,
            "actionHash": self.action_hash,
            "tool": self.tool,
            "args": self.args,
            "occurrence": self.occurrence,
            "typedData": _hexed(self.typed_data),
        }


class UnknownActionError(LookupError):
    """No call of this task waits for a confirmation of this action."""


class ConfirmationRejectedError(PermissionError):
    """The confirmation is not the task user's signature of this action."""


def _hexed(value: Any) -> Any:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, dict):
        return {k: _hexed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_hexed(v) for v in value]
    return value


def namespace_of(user: str, agent_id: str) -> str:
    """The memory and file namespace of ``agent_id`` running for ``user``."""
    return f"{user.lower()}/{agent_id}"


class OwnershipIndex:
    """Which content-store blocks each namespace may read: exactly the blocks its own writes made.

    The dispatcher grants a namespace, as each write succeeds, every block that write put in the
    store: a memory entry and the new memory root; a file's root, its chunks and the new file-tree
    root. Links are never followed to grant (a block may link anything, a foreign block included),
    and a CID named in a task's input grants nothing. Two namespaces that wrote the same bytes hold
    the same CID, and both may read it: each already had the content. CIDs are kept canonical
    (CIDv1, base32), so another spelling of a granted CID is the same grant.

    The node persists :meth:`snapshot` with the namespace roots before it acknowledges a task, and
    :meth:`restore` s it on start: a grant outlives a restart like the memory it is for.

    >>> index = OwnershipIndex()
    >>> cid = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
    >>> index.grant("0xa1/notes", [cid])
    >>> index.owns("0xa1/notes", cid), index.owns("0xb0/notes", cid)
    (True, False)
    """

    def __init__(self) -> None:
        self._cids: dict[str, set[str]] = {}

    def grant(self, namespace: str, cids: Iterable[str]) -> list[str]:
        """Let ``namespace`` read ``cids`` (blocks its write just put in the store); returns those
        it could not read before (canonical), what `revoke` takes back if the write is undone."""
        held = self._cids.setdefault(namespace, set())
        new = [c for c in dict.fromkeys(canonical_cid(c) for c in cids) if c not in held]
        held.update(new)
        return new

    def revoke(self, grants: Iterable[tuple[str, str]]) -> None:
        """Take back ``(namespace, CID)`` grants that `grant` added (writes undone)."""
        for namespace, cid in grants:
            held = self._cids.get(namespace)
            if held is not None:
                held.discard(cid)
                if not held:
                    del self._cids[namespace]

    def owns(self, namespace: str, cid: str) -> bool:
        """Whether ``namespace`` may read ``cid`` (any spelling of a CID).

        Raises:
            InvalidCIDError: ``cid`` is not a CID the store can serve.
        """
        return canonical_cid(cid) in self._cids.get(namespace, ())

    def snapshot(self) -> dict[str, list[str]]:
        """Every namespace's grants (sorted), for the node to persist."""
        return {ns: sorted(cids) for ns, cids in sorted(self._cids.items())}

    def restore(self, grants: Mapping[str, Iterable[str]]) -> None:
        """Continue from grants persisted by :meth:`snapshot` (added to the ones held)."""
        for namespace, cids in grants.items():
            self.grant(namespace, cids)


NOT_READABLE = "{cid} is not available to this task"
"""The refusal of a ``store_read`` outside the task's namespace: the same words whether or not the
store holds the block, so a refusal tells nothing about another user's data."""


def unconfirmed(tool: str, args: Mapping[str, Any], occurrence: int = 0) -> str:
    """The refusal of an irreversible call that has no confirmation: the same words whether none
    was sent, none came in time, or there is no domain to check one in (the audit entry says
    which), because a validator's replay, which has neither the domain nor a pause, must raise
    exactly this error."""
    try:
        digest = action_hash(tool, args, occurrence).hex()
        return f"tool {tool} is irreversible: no confirmation for action 0x{digest}"
    except Exception:  # arguments without a canonical form have no actionHash to confirm
        return f"tool {tool} is irreversible: no confirmation for its arguments"


_CALLER: ContextVar[tuple[TaskSpec, Capabilities] | None] = ContextVar("supernet_tool_caller", default=None)
"""The task whose tool call is running (set by the dispatcher around each call, never by an agent)."""


class AccessManager:
    """Derives capabilities, checks every action against them, and keeps an audit log.

    Args:
        policy: The node operator's policy.
        domain: The EIP-712 domain that confirmations are signed in (``None``: irreversible
            tools are refused outright).
        audit_size: Audit entries kept in memory (older ones are only in the log output).
    """

    def __init__(self, policy: NodePolicy, domain: Domain | None = None, audit_size: int = 10_000) -> None:
        self.policy = policy
        self._domain = domain
        self._audit: deque[AuditEntry] = deque(maxlen=audit_size)
        # each task's own entries until it is saved with it: the node-wide ring above is one
        # 10,000-entry log, so other users' busy tasks pushed a running task's decisions out of it
        # before its end saved them (tests/unit/test_review_aios_kernel.py)
        self._task_audit: dict[str, deque[AuditEntry]] = {}
        self._ended_audit: OrderedDict[str, None] = OrderedDict()
        self.owned = OwnershipIndex()
        self._pending: dict[str, dict[str, PendingConfirmation]] = {}
        self._received: dict[str, dict[str, bytes]] = {}
        self.journal: Callable[[str, str, str], bool] | None = None
        """Where an irreversible call is recorded before it runs (`begin_irreversible`): the node's
        database (``journal(task_id, action, tool)``, False when that call of the task was recorded
        before); ``None`` (a validator's replay, tests) records nothing."""
        self._watchers: dict[str, Callable[[PendingConfirmation], None]] = {}
        self._users: dict[str, str] = {}

    @property
    def domain(self) -> Domain | None:
        """The EIP-712 domain confirmations are signed in."""
        return self._domain

    def capabilities(self, spec: TaskSpec, registered_tools: frozenset[str]) -> Capabilities:
        """The capabilities of ``spec``: requested tools ∩ the policy's tools ∩ registered ones,
        narrowed by the agent's privilege groups if it is in any."""
        tools = registered_tools
        if self.policy.allowed_tools is not None:
            tools &= self.policy.allowed_tools
        if spec.tools is not None:
            tools &= spec.tools
        p = self.policy
        memory, storage = p.allow_memory, p.allow_storage
        groups = p.groups_of(spec.agent_id)
        if groups:
            tools = frozenset(t for t in tools if any(g.allows_tool(t) for g in groups))
            memory = memory and any(g.memory for g in groups)
            storage = storage and any(g.storage for g in groups)
        return Capabilities(
            tools=frozenset(tools),
            namespace=namespace_of(spec.user, spec.agent_id),
            memory=memory,
            storage=storage,
            max_llm_calls=p.max_llm_calls,
            max_llm_tokens=p.max_llm_tokens,
            max_new_tokens=p.max_new_tokens,
            max_tool_calls=p.max_tool_calls,
            max_file_bytes=p.max_file_bytes,
        )

    def audit(self, spec: TaskSpec, action: str, target: str, allowed: bool, reason: str = "") -> None:
        """Record one decision (also logged at info when refused)."""
        task, now = spec.task_id, time.time()
        entry = AuditEntry(now, task, spec.agent_id, spec.user, action, target, allowed, reason)
        self._audit.append(entry)
        mine = self._task_audit.get(task)
        if mine is None:
            mine = self._task_audit[task] = deque(maxlen=TASK_AUDIT_SIZE)
        mine.append(entry)
        if not allowed:
            log.info("denied %s %s for task %s: %s", action, target, spec.task_id, reason)

    def audit_log(self, task_id: str | None = None) -> list[AuditEntry]:
        """Audit entries, oldest first: the node's recent ones, or all of ``task_id``'s (at most
        `TASK_AUDIT_SIZE`, kept while it runs and for the last `ENDED_AUDITS` tasks ended)."""
        if task_id is None:
            return list(self._audit)
        return list(self._task_audit.get(task_id, ()))

    def deny(self, spec: TaskSpec, action: str, target: str, reason: str) -> AccessDeniedError:
        """Audit a refusal and return the error to raise."""
        self.audit(spec, action, target, False, reason)
        return AccessDeniedError(f"{action} {target}: {reason}")

    def check_budget(self, spec: TaskSpec, what: str, used: int, limit: int) -> None:
        """Refuse once a per-task budget is spent.

        Raises:
            BudgetExceededError: ``used`` reached ``limit``.
        """
        if used >= limit:
            self.audit(spec, what, "budget", False, f"limit {limit} reached")
            raise BudgetExceededError(f"task {spec.task_id} used its {limit} {what}")

    def check_tool(
        self, spec: TaskSpec, caps: Capabilities, tool: ToolSpec, args: Mapping[str, Any], occurrence: int = 0
    ) -> None:
        """Allow a tool call or raise; irreversible tools need a valid confirmation (of this
        ``occurrence`` of the call: `supernet.sdk.chain.receipts.action_hash`).

        Raises:
            AccessDeniedError: The tool is not in the task's capabilities.
            ConfirmationRequiredError: An irreversible tool lacks the owner's valid confirmation.
        """
        if tool.name not in caps.tools:
            raise self.deny(spec, "tool", tool.name, "not in this task's capabilities")
        if tool.irreversible:
            reason = self._confirmation_problem(spec, tool.name, args, occurrence)
            if reason:
                self.audit(spec, "tool", tool.name, False, reason)
                shown = reason if reason.startswith(("confirmation signed", "unreadable")) else None
                raise ConfirmationRequiredError(
                    f"tool {tool.name} is irreversible: {shown}"
                    if shown
                    else unconfirmed(tool.name, args, occurrence)
                )
        self.audit(spec, "tool", tool.name, True)

    async def authorize_tool(
        self,
        spec: TaskSpec,
        caps: Capabilities,
        tool: ToolSpec,
        args: Mapping[str, Any],
        idle: Callable[[], AbstractAsyncContextManager[None]] | None = None,
        occurrence: int = 0,
    ) -> None:
        """:meth:`check_tool`, but a call missing only its confirmation may wait for one (inside
        ``idle()`` when given: the kernel gives the task's slot up while it waits for its user).

        With ``policy.confirmation_timeout_s`` set, a domain to check signatures in and a watcher
        for the task (:meth:`watch`), the call pauses: the watcher gets a
        :class:`PendingConfirmation`, and the call goes on once :meth:`confirm` accepts the user's
        signature (at most once per action; a later duplicate changes nothing).

        Raises:
            AccessDeniedError: The tool is not in the task's capabilities.
            ConfirmationRequiredError: No valid confirmation, or none came within the timeout.
        """
        timeout = self.policy.confirmation_timeout_s
        watcher = self._watchers.get(spec.task_id)
        if (
            not tool.irreversible
            or tool.name not in caps.tools
            or timeout is None
            or self._domain is None
            or watcher is None
            or not self._confirmation_problem(spec, tool.name, args, occurrence).startswith("no confirmation")
        ):
            self.check_tool(spec, caps, tool, args, occurrence)
            return
        key = "0x" + action_hash(tool.name, args, occurrence).hex()
        waiting = self._pending.setdefault(spec.task_id, {})
        pending = waiting.get(key)
        if pending is None and sum(map(len, self._pending.values())) >= self.policy.max_paused_calls:
            self.audit(spec, "confirmation.wait", tool.name, False, "too many calls wait for their users")
            self.check_tool(spec, caps, tool, args, occurrence)  # refused, in the words of no wait
        if pending is None:
            conf = Confirmation(bytes.fromhex(spec.task_id.removeprefix("0x")), bytes.fromhex(key[2:]))
            pending = PendingConfirmation(
                spec.task_id, key, tool.name, dict(args), typed_data(conf, self._domain), occurrence
            )
            waiting[key] = pending
            self.audit(spec, "confirmation.wait", tool.name, True, f"action {key}")
            watcher(pending)
        try:
            async with idle() if idle is not None else nullcontext():
                await asyncio.wait_for(asyncio.shield(pending.done), timeout)
        except TimeoutError:
            if waiting.get(key) is pending:
                del waiting[key]
            self.audit(spec, "tool", tool.name, False, f"no confirmation within {timeout:g} s")
            raise ConfirmationRequiredError(unconfirmed(tool.name, args, occurrence)) from None
        self.check_tool(spec, caps, tool, args, occurrence)

    def begin_irreversible(
        self, spec: TaskSpec, tool: str, args: Mapping[str, Any], occurrence: int
    ) -> str | None:
        """Record, durably and before it runs, that this confirmed irreversible call is about to run
        (`journal`); returns its action (``0x`` hex) when the task ran or began it before, else None.
        A task re-run from its start (after a restart) issues its calls again under the same
        action hashes, and the user's one signature still confirms them: without this record the
        action (a payment, a deployment) was done twice on one consent, and the trace showed one
        call (tests/unit/test_review_node_api4.py)."""
        if self.journal is None:
            return None
        action = "0x" + action_hash(tool, args, occurrence).hex()
        if self.journal(spec.task_id, action, tool):
            return None
        self.audit(spec, "tool", tool, False, f"action {action} already ran (or began) for this task")
        return action

    def watch(self, spec: TaskSpec, on_pending: Callable[[PendingConfirmation], None]) -> None:
        """Call ``on_pending`` when a call of task ``spec`` pauses for a confirmation (until
        :meth:`forget`); without a watcher, calls are refused at once as before."""
        self._watchers[spec.task_id] = on_pending
        self._users[spec.task_id] = spec.user

    def pending(self, task_id: str) -> list[PendingConfirmation]:
        """The calls of ``task_id`` waiting for a confirmation now."""
        return list(self._pending.get(task_id, {}).values())

    def confirm(self, task_id: str, action: str, signature: bytes) -> bool:
        """Accept the task user's signed confirmation of a paused call (or a repeat of one).

        Returns:
            ``True`` if it resumed a paused call, ``False`` for a valid repeat of an accepted one.

        The signer is checked first: only the task's user learns whether a call waits for
        ``action`` (anyone else is refused whatever the action, so the route is no oracle of a
        paused call's arguments).

        Raises:
            UnknownActionError: ``task_id`` takes no confirmations here (not running), or the
                user's signature is valid but no call of ``task_id`` waits for ``action`` (nothing
                changes).
            ConfirmationRejectedError: The signature is not the task user's over this action.
        """
        key = "0x" + action.lower().removeprefix("0x")
        user = self._users.get(task_id)
        if self._domain is None or user is None:
            raise UnknownActionError(f"task {task_id} takes no confirmations here")
        try:
            conf = Confirmation(bytes.fromhex(task_id.removeprefix("0x")), bytes.fromhex(key[2:]))
            signer = recover_confirmation(conf, self._domain, signature)
        except Exception as exc:
            raise ConfirmationRejectedError(f"unreadable confirmation: {exc}") from None
        if signer.lower() != user.lower():
            raise ConfirmationRejectedError(f"confirmation signed by {signer}, not the task's user")
        pending = self._pending.get(task_id, {}).get(key)
        if pending is None and key not in self._received.get(task_id, {}):
            raise UnknownActionError(f"no call of task {task_id} waits for a confirmation of {key}")
        if pending is None or pending.done.done():
            return False
        self._received.setdefault(task_id, {})[key] = signature
        del self._pending[task_id][key]
        pending.done.set_result(signature)
        return True

    def forget(self, task_id: str) -> None:
        """Drop a finished task's watcher, paused calls and accepted confirmations; its audit is kept
        until `ENDED_AUDITS` later tasks have ended (the node saves it with the task right after)."""
        if task_id in self._task_audit:
            self._ended_audit[task_id] = None
            self._ended_audit.move_to_end(task_id)
            while len(self._ended_audit) > ENDED_AUDITS:
                ended, _ = self._ended_audit.popitem(last=False)
                self._task_audit.pop(ended, None)
        self._watchers.pop(task_id, None)
        self._users.pop(task_id, None)
        self._received.pop(task_id, None)
        for pending in self._pending.pop(task_id, {}).values():
            if not pending.done.done():
                pending.done.cancel()

    def check_area(self, spec: TaskSpec, caps: Capabilities, area: str, write: bool) -> None:
        """Allow a memory (``area="memory"``) or file (``"storage"``) access of the task's own namespace.

        Raises:
            AccessDeniedError: The node's policy gives agents no such area.
        """
        action = f"{area}.{'write' if write else 'read'}"
        if not (caps.memory if area == "memory" else caps.storage):
            # the same words whichever rule (policy or group) took it: a replay knows only the caps
            raise self.deny(spec, action, caps.namespace, f"the node's policy gives agents no {area}")
        self.audit(spec, action, caps.namespace, True)

    @contextmanager
    def acting_for(self, spec: TaskSpec, caps: Capabilities) -> Iterator[None]:
        """Run a tool call as task ``spec``: scoped tools (``store_read``) ask whose call it is."""
        token = _CALLER.set((spec, caps))
        try:
            yield
        finally:
            _CALLER.reset(token)

    def check_store_read(self, cid: str) -> None:
        """Allow the running tool call's task to read block ``cid``: only a block its namespace owns.

        Checked before the store is asked, so a refusal is the same whether or not the block exists.

        Raises:
            ToolUnavailableError: ``cid`` is not the namespace's (or no task is calling). The name
                is the protocol's "not available": a validator cannot see the grants, so it neither
                re-runs nor holds such an outcome against the node (docs/protocol.md).
            InvalidCIDError: ``cid`` is not a CID the store can serve.
        """
        caller = _CALLER.get()
        if caller is None:  # fail closed: only a task's call through the dispatcher reads
            log.warning("store_read of %s outside any task's tool call: refused", cid)
            raise ToolUnavailableError(NOT_READABLE.format(cid=cid))
        spec, caps = caller
        if not self.owned.owns(caps.namespace, cid):
            self.audit(spec, "store.read", cid, False, f"not a block of namespace {caps.namespace}")
            raise ToolUnavailableError(NOT_READABLE.format(cid=cid))
        self.audit(spec, "store.read", cid, True)

    def confirmation_of(
        self, spec: TaskSpec, tool: str, args: Mapping[str, Any], occurrence: int = 0
    ) -> bytes | None:
        """The signature that confirms this call of an irreversible tool (given with the task or
        posted through the API), recorded in the trace so that a validator's replay can check it."""
        wanted = "0x" + action_hash(tool, args, occurrence).hex()
        return (
            spec.confirmations.get(wanted)
            or spec.confirmations.get(wanted[2:])
            or self._received.get(spec.task_id, {}).get(wanted)
        )

    def _confirmation_problem(
        self, spec: TaskSpec, tool: str, args: Mapping[str, Any], occurrence: int = 0
    ) -> str:
        """Why the confirmation of this call is missing or invalid ("" when it is valid)."""
        if self._domain is None:
            return "this node has no EIP-712 domain to check confirmations in"
        wanted = action_hash(tool, args, occurrence)
        signature = (
            spec.confirmations.get("0x" + wanted.hex())
            or spec.confirmations.get(wanted.hex())
            or self._received.get(spec.task_id, {}).get("0x" + wanted.hex())
        )
        if signature is None:
            return f"no confirmation for action 0x{wanted.hex()}"
        try:
            request_hash = bytes.fromhex(spec.task_id.removeprefix("0x"))
            signer = recover_confirmation(Confirmation(request_hash, wanted), self._domain, signature)
        except Exception as exc:  # malformed task id or signature: refuse, do not crash
            return f"unreadable confirmation: {exc}"
        if signer.lower() != spec.user.lower():
            return f"confirmation signed by {signer}, not the task owner"
        return ""
