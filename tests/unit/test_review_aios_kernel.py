"""Adversarial review of the node's AI OS kernel (`supernet.node.kernel`) as a hostile USER, or the
author of an agent package the operator allowed, would attack it.

Scope: the scheduler and its fair-share policy, task slots, the dispatcher, the memory and storage
managers (versions, rollback, tombstones, the trace cap on writes), the tool manager (built-in
tools' words, concurrency), the access manager (namespaces, the ownership index behind
``store_read``, the audit log), agent-to-agent calls, and the budgets of a signed profile. Attacks
tried were chosen to be new against tests/unit/test_review_access_isolation.py,
test_review_chat_and_scheduling.py, test_review_children_slots.py, test_review_memory_storage.py,
test_review_mcp_tools.py and test_review_untrusted_text.py. Real parts: the node's own `Kernel`
(dispatcher, managers, built-in tools, access manager) on the real embedded content store through
the real `StoreClient`, the validator's real `check_tools` re-run; the LLM engine is the
``FakeEngine`` stand-in of tests/unit/test_validator_attacks3.py (no test here makes an LLM call),
and the scheduling test runs the real `Scheduler` and `FairSharePolicy` on the FAKE engine of
tests/kernel_fixtures.py (ordering only).

Found:

1. MEDIUM, FIXED (rollback and delete take the put's gate, `Dispatcher._write_fits`)
   (`test_defence_rollbacks_and_deletes_past_the_trace_cap_are_refused`): file
   rollbacks and deletes are not held to the trace cap. `Dispatcher._write_fits` ends a task before
   a memory add or file put its trace could not hold (a fixed finding of
   test_review_memory_storage.py), but ``storage.rollback`` and ``storage.delete`` go through
   `Dispatcher._storage_read_or_change` with no such gate, although each writes (and pins) a whole
   new namespace root and puts it into the witness. A user whose files root is large (~145 KB,
   built by earlier tasks) asks an agent to restore a version a few times: every rollback writes a
   further ~145 KB root block, the trace is past `MAX_TRACE_BYTES` after the second, and the task
   goes on writing until its end, then fails unbilled (`TraceTooLargeError`); the roots are
   unpinned by the revert but the embedded store never collects them. Up to `MAX_TRACE_EVENTS`
   (1,024) root blocks a task: ~145 MB of disk for free, per task.
2. MEDIUM, FIXED (a task whose writes are undone gives back the grants they added,
   `OwnershipIndex.revoke`; and since the twenty-sixth session a task's end stores only its own
   grants, in a table of their own: tests/unit/test_node_grants.py)
   (`test_defence_an_unbilled_task_no_longer_grows_what_every_task_end_persists`): the ownership
   index (`OwnershipIndex`, the grants behind ``store_read``) only grows: a failed task's writes are
   reverted (`NamespaceRoots.revert`) but every CID they were granted stays, and
   `Kernel.namespace_roots` hands the whole index (every CID every namespace ever wrote, sorted)
   to the node, which ``json.dumps`` it on the event loop and rewrites it whole into SQLite at the
   end of every task of every user (`KernelExecutor._save_roots`, twice for a done task). One
   unbilled task of 60 rollbacks of a one-file namespace adds 60 CIDs, ~3.8 KB, to what every later
   task's end serialises and fsyncs (a task's trace bounds how many writes it makes, not how many
   tasks do this); the cost of a task end is O(the node's whole write history), quadratic
   over the node's life, and free to grow.
3. LOW-MEDIUM, FIXED (`json_query` bounds integers to `MAX_JSON_INT_DIGITS` and words the
   refusal itself) (`test_defence_json_query_words_its_own_integer_error`): the built-in
   ``json_query`` tool (deterministic: every validator re-runs it and compares its error text word
   for word) lets Python's own ``ValueError`` through `ToolRegistry.call`'s generic wrapper: a
   document holding an integer of more than 4,300 digits is refused by the interpreter's integer
   string-conversion limit, in the interpreter's words and with its limit (``PYTHONINTMAXSTRDIGITS``,
   ``-X int_max_str_digits``; CPython 3.11.0 worded it "Exceeds the limit (4300) for integer string
   conversion: value has N digits", later releases "(4300 digits) ... ; use
   sys.set_int_max_str_digits() ..."). A user's input reaching the tool makes an honest node record
   an error a validator on another interpreter (or configuration) does not reproduce: a TOOL
   finding against the honest node. The calculator words every error itself for this reason
   (`calculator.evaluate`); ``json_query`` does not.
4. LOW-MEDIUM, FIXED (each task's audit is kept apart until saved, `AccessManager._task_audit`)
   (`test_defence_other_users_tasks_no_longer_push_a_running_tasks_audit_out`): the audit log that
   docs/agents.md says is "persisted with the task and readable by its user" is one node-wide ring
   of 10,000 entries (`AccessManager._audit`, ``deque(maxlen=audit_size)``), read back per task only
   when the task ends (`KernelExecutor._save_audit`). While one task waits (a slow tool, a
   confirmation, its user's namespace lock), other tasks' decisions (here another user's ten tasks
   of ~1,000 file listings each) push its early entries out: the user's ``GET
   /v1/tasks/{id}/audit`` is empty: neither the file write its agent made nor its tool call is
   there. Whoever wants an agent's action off its user's record only has to keep the node busy
   meanwhile.

Checked and holding:

- a child agent's files are not its caller's: the caller cannot ``store_read`` a CID the child
  wrote and returned, nor read the child's path, and the child cannot read the caller's
  (`test_defence_a_caller_cannot_read_its_childs_blocks_nor_the_child_the_callers`);
- a user filling the whole LLM batch with long calls cannot keep another user's call out for more
  than about one time slice under the fair policy, though the newcomer's virtual time starts at
  the hog's (`test_defence_a_full_batch_yields_to_a_newcomer_within_a_slice`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from supernet.node.agents.base import Agent
from supernet.node.agents.context import AgentContext
from supernet.node.kernel.access import NodePolicy, namespace_of
from supernet.node.kernel.errors import KernelError
from supernet.node.kernel.kernel import Kernel, KernelConfig
from supernet.node.kernel.policies import FairSharePolicy
from supernet.node.kernel.scheduler import LLMJob, Scheduler
from supernet.node.kernel.syscalls import TaskSpec
from supernet.node.kernel.tools import Tool, ToolSpec
from supernet.node.kernel.trace import TraceTooLargeError
from supernet.sdk.formats.trace import MAX_TRACE_BYTES
from supernet.sdk.store import StoreClient
from supernet.sdk.store.cids import link
from supernet.sdk.store.embedded import EmbeddedStore, create_app
from supernet.validator.tool_check import RegistryRunner, check_tools
from supernet.validator.trace_view import parse_trace

from tests.kernel_fixtures import FakeLLMEngine, FakeParams
from tests.unit.test_validator_attacks import registry
from tests.unit.test_validator_attacks3 import FakeEngine, NoEmbedder

pytestmark = pytest.mark.timeout(60)

ALICE = "0x" + "a1" * 20
MALLORY = "0x" + "66" * 20


# -- agents (installed classes, as an operator allows them) ------------------------------------------


class Restorer(Agent):
    """Restores a file to its first version ``times`` times, then deletes it; fails if asked to
    (an agent that raises on a bad input: its task is unbilled)."""

    agent_id = "restorer"
    description = "Restores a file's first version."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        first = (await ctx.storage.versions(input["path"]))[0]
        for _ in range(int(input["times"])):
            await ctx.storage.rollback(input["path"], first)
        if input.get("delete"):
            await ctx.storage.delete(input["path"])
        if input.get("fail"):
            raise ValueError("the input asked for a failure")
        return "restored"


class Querier(Agent):
    """Picks a value out of the user's JSON document with the built-in ``json_query`` tool, and
    tells the user the tool's refusal if there is one."""

    agent_id = "querier"
    description = "Queries a JSON document."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        try:
            return json.dumps(
                await ctx.tools.call("json_query", {"json": input["json"], "path": input["path"]})
            )
        except KernelError as exc:
            return f"refused: {exc}"


class Noter(Agent):
    """Writes a note, then waits for an operator's slow tool (``slow``), then returns."""

    agent_id = "noter"
    description = "Writes a note and fetches something slow."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        await ctx.storage.put("note.txt", str(input))
        await ctx.tools.call("slow", {})
        return "noted"


class Lister(Agent):
    """Lists its files ``input`` times (any cheap, audited syscall would do)."""

    agent_id = "lister"
    description = "Lists files."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        for _ in range(int(input)):
            await ctx.storage.list()
        return "listed"


class Keeper(Agent):
    """Writes the text it is given to ``kept.txt`` and returns the version's CID; with ``peek``, tries
    to read its caller's ``secret.txt`` instead."""

    agent_id = "keeper"
    description = "Keeps a text."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        if input == "peek":
            try:
                return (await ctx.storage.get("secret.txt")).decode()
            except FileNotFoundError as exc:
                return f"missing: {exc}"
        return str(await ctx.storage.put("kept.txt", str(input)))


class Delegator(Agent):
    """Keeps a secret in its own files, has ``keeper`` keep a text, then tries to read the child's
    block by CID (``store_read``) and by path, and lets the child peek at its secret."""

    agent_id = "delegator"
    description = "Delegates keeping a text."
    calls_agents = ("keeper",)

    async def run(self, ctx: AgentContext, input: Any) -> str:
        await ctx.storage.put("secret.txt", "the caller's secret")
        cid = await ctx.agents.call("keeper", str(input))
        out = []
        try:
            read = await ctx.tools.call("store_read", {"cid": cid})
            out.append(f"read {read['text']}")
        except KernelError as exc:
            out.append(f"store_read refused: {type(exc).__name__}")
        try:
            out.append(f"path {(await ctx.storage.get('kept.txt')).decode()}")
        except FileNotFoundError:
            out.append("path missing")
        out.append(f"peek {await ctx.agents.call('keeper', 'peek')}")
        return " | ".join(out)


AGENTS: tuple[type[Agent], ...] = (Restorer, Querier, Noter, Lister, Keeper, Delegator)


@contextlib.asynccontextmanager
async def node_kernel(store: EmbeddedStore, extra: tuple[Tool, ...] = ()) -> AsyncIterator[Kernel]:
    """The node's own kernel on the embedded ``store``, with its built-in tools (``store_read`` scoped
    by its access manager) and ``extra`` ones (stand-in engine: no LLM call is made)."""
    app = create_app(store)
    async with StoreClient("http://embedded-store", transport=httpx.ASGITransport(app=app)) as client:
        kernel = Kernel(
            FakeEngine(),
            client,
            KernelConfig(node_policy=NodePolicy()),
            agents=registry(AGENTS),
            embedder=NoEmbedder(),
        )
        for tool in extra:
            kernel.tools.register(tool)
        await kernel.setup()
        try:
            yield kernel
        finally:
            await kernel.stop()


def spec(n: int, agent: str, task_input: Any, user: str = ALICE) -> TaskSpec:
    return TaskSpec(f"0x{n:064x}", agent, task_input, user=user, fee=1, timeout_s=30)


def block_files(store_dir: Path) -> int:
    return sum(f.is_file() for f in (store_dir / "blocks").rglob("*"))


# -- 1. rollbacks and deletes are not held to the trace cap ------------------------------------------


async def test_defence_rollbacks_and_deletes_past_the_trace_cap_are_refused(tmp_path: Path) -> None:
    """MEDIUM. Attack: the user's files root is large (1,000 files with long paths, ~145 KB, as
    earlier receipted tasks left it; set here directly); the user asks ``restorer`` to restore a file
    three times and delete it. Each rollback and the delete write a new ~145 KB root block (pinned,
    then put in the trace's witness); two roots fit in the 384 KiB trace, three do not.

    Safe behaviour (as for memory adds and file puts since `Dispatcher._write_fits`): the task ends
    before the write its trace could not hold ("refused before writing"), at most the two changes
    that fit are made. Today all four are written (~580 KB of root blocks left in the store: the
    embedded store never collects them), the task runs on to its end and fails unbilled with
    `TraceTooLargeError` (a 725 KB trace)."""
    store_dir = tmp_path / "store"
    async with node_kernel(EmbeddedStore(store_dir, fsync=False)) as kernel:
        ns = namespace_of(ALICE, "restorer")
        version = str(await kernel.store.add_file(b"v1", pin=True))
        files = {f"{'d' * 90}/{i:05d}.txt": [link(version)] for i in range(1000)}
        async with kernel.storage.roots.lock(ns):
            before, _ = await kernel.storage.roots.commit(ns, {"files": files}, "0x01")
        root_size = len(await kernel.store.get_block(before))
        blocks_before = block_files(store_dir)
        path = next(iter(files))
        try:
            out = await kernel.run_task(spec(1, "restorer", {"path": path, "times": 3, "delete": True}))
            status, error = out.status, out.error or ""
        except TraceTooLargeError as exc:  # the agent succeeded: its trace fails the task after the fact
            status, error = "raised", str(exc)
        written = block_files(store_dir) - blocks_before
        assert kernel.storage.roots.root(ns) == before  # reverted: the user keeps nothing of it
    assert 3 * root_size > MAX_TRACE_BYTES > 2 * root_size, root_size  # two new roots fit, three do not
    assert status != "ok"
    # today: four ~145 KB roots written (and a 725 KB trace refused at the end), no receipt, no fee
    assert "refused before writing" in error and written <= 3, (written, root_size, error)


# -- 2. the ownership index only grows, and is persisted whole at every task's end --------------------


async def test_defence_an_unbilled_task_no_longer_grows_what_every_task_end_persists(tmp_path: Path) -> None:
    """MEDIUM. Attack: a task of Mallory's restores a one-file namespace's version 60 times (60 new
    roots, each one link longer than the last: its trace holds them) and then fails (its agent
    raises on the input): no receipt, nothing billed, every write reverted. But each root's CID was
    granted to the namespace (`OwnershipIndex.grant`) and no revert takes a grant back;
    `Kernel.namespace_roots`, which the node serialises and rewrites whole into SQLite at the end
    of every task of every user (`KernelExecutor._save_roots`), carries them all from then on.

    Safe behaviour: a task that leaves no writes leaves no grants; what the node persists at a
    task's end does not grow with other users' unbilled work. Today it grows by 60 CIDs (~3.8 KB)
    here, and without bound across such tasks."""
    async with node_kernel(EmbeddedStore(tmp_path / "store", fsync=False)) as kernel:
        ns = namespace_of(MALLORY, "restorer")
        version = str(await kernel.store.add_file(b"v1", pin=True))
        async with kernel.storage.roots.lock(ns):
            await kernel.storage.roots.commit(ns, {"files": {"a.txt": [link(version)]}}, "0x01")
        kernel.access.owned.grant(ns, [version])
        before = len(json.dumps(kernel.namespace_roots(), sort_keys=True))
        grants_before = len(kernel.access.owned.snapshot()[ns])
        out = await kernel.run_task(
            spec(2, "restorer", {"path": "a.txt", "times": 60, "fail": True}, MALLORY)
        )
        after = len(json.dumps(kernel.namespace_roots(), sort_keys=True))
        grants_after = len(kernel.access.owned.snapshot()[ns])
    assert out.status == "error" and "asked for a failure" in (out.error or ""), out.error
    assert len([e for e in out.trace["events"] if e["kind"] == "storage.rollback"]) == 60
    assert grants_after == grants_before and after == before, (grants_before, grants_after, before, after)


# -- 3. json_query's errors are the interpreter's words ------------------------------------------------


async def test_defence_json_query_words_its_own_integer_error(tmp_path: Path) -> None:
    """LOW-MEDIUM (framing an honest node). Attack: the user's document holds a 5,000-digit integer.
    The honest node's ``json_query`` fails in CPython's words, with this interpreter's limit
    (``ToolError: tool json_query failed: Exceeds the limit (4300 digits) for integer string
    conversion ...``). A validator whose interpreter has another limit (started with
    ``PYTHONINTMAXSTRDIGITS=0`` here: set in-process for its re-run, then restored) or another
    wording (CPython 3.11.0's) re-runs the deterministic built-in and compares the error text word
    for word: a TOOL finding against the node that ran the call honestly.

    Safe behaviour: the tool words its refusal itself (as the calculator does), or bounds the
    digits itself, so every interpreter gives the node's answer: no finding. FIXED: `json_query`
    reads integers of at most `MAX_JSON_INT_DIGITS` digits and words the refusal itself."""
    document = '{"balance": ' + "9" * 5000 + "}"
    async with node_kernel(EmbeddedStore(tmp_path / "store", fsync=False)) as kernel:
        out = await kernel.run_task(spec(3, "querier", {"json": document, "path": "balance"}))
    assert out.status == "ok", out.error
    [call] = parse_trace(out.trace).tool_calls
    assert call.deterministic and call.error is not None
    assert "int_max_str_digits" not in call.error and "more than 640 digits" in call.error, call.error
    limit = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)  # the validator's interpreter: PYTHONINTMAXSTRDIGITS=0
    try:
        findings, rerun, unverifiable = await check_tools((call,), RegistryRunner(None))
    finally:
        sys.set_int_max_str_digits(limit)
    assert rerun == 1 and unverifiable is None
    assert findings == [], [f.message for f in findings]


# -- 4. the audit log is one node-wide ring ------------------------------------------------------------


async def test_defence_other_users_tasks_no_longer_push_a_running_tasks_audit_out(tmp_path: Path) -> None:
    """LOW-MEDIUM. Alice's task writes a file, then waits for an operator's slow tool (stood in by a
    registered async tool that returns when the test says: an MCP server's long call). Meanwhile
    Mallory runs ten tasks of 1,000 file listings each (each an audited ``storage.read``). When
    Alice's task ends, the node saves its audit from `Kernel.audit_log` (`KernelExecutor._save_audit`)
    and serves it at ``GET /v1/tasks/{id}/audit``.

    Safe behaviour: a task's own decisions are kept until they are persisted with it, whatever
    other tasks do meanwhile. Today the node-wide ring of 10,000 entries has dropped all of Alice's
    entries (her ``storage.write`` and her tool call) before her task ended: her audit is empty."""
    release = asyncio.Event()

    async def slow(_args: Any) -> str:
        await release.wait()
        return "fetched"

    stand_in = Tool(ToolSpec("slow", "A slow fetch.", {"type": "object"}, timeout_s=60.0), slow)
    async with node_kernel(EmbeddedStore(tmp_path / "store", fsync=False), (stand_in,)) as kernel:
        alice = kernel.submit(spec(10, "noter", "meet at noon"))
        for _ in range(500):  # until her write is made and she waits for the tool
            early = [(e.action, e.allowed) for e in kernel.audit_log(alice.task_id)]
            if ("tool", True) in early:
                break
            await asyncio.sleep(0.01)
        for n in range(10):
            done = await kernel.run_task(spec(100 + n, "lister", 1000, MALLORY))
            assert done.status == "ok", done.error
        release.set()
        outcome = await alice.outcome()
        audit = [(e.action, e.allowed) for e in kernel.audit_log(alice.task_id)]
    assert outcome.status == "ok", outcome.error
    assert early == [("storage.write", True), ("tool", True)], early
    assert audit[: len(early)] == early, f"what the node persists as her audit: {audit}"


# -- defences ----------------------------------------------------------------------------------------


async def test_defence_a_caller_cannot_read_its_childs_blocks_nor_the_child_the_callers(
    tmp_path: Path,
) -> None:
    """Attack (namespace escape through an agent call): ``delegator`` has its child ``keeper`` write a
    file and return the version's CID, then reads that CID with ``store_read`` and the child's path
    with ``storage.get``; it also calls ``keeper`` to peek at the caller's ``secret.txt``. Defence:
    the child runs in its own namespace (``<user>/keeper``), its writes are granted to it alone,
    and the caller reaches them only through what the child returns (and vice versa)."""
    async with node_kernel(EmbeddedStore(tmp_path / "store", fsync=False)) as kernel:
        out = await kernel.run_task(spec(20, "delegator", "kept by the child"))
        child_ns, caller_ns = namespace_of(ALICE, "keeper"), namespace_of(ALICE, "delegator")
        child_files = await kernel.storage.list_files(child_ns)
        caller_files = await kernel.storage.list_files(caller_ns)
    assert out.status == "ok", out.error
    assert out.output == (
        "store_read refused: ToolUnavailableError | path missing | peek missing: no file 'secret.txt'"
    ), out.output
    assert set(child_files) == {"kept.txt"} and set(caller_files) == {"secret.txt"}


def _job(rid: str, user: str, n: int) -> LLMJob:
    return LLMJob(rid, f"task-{rid}", user, 1, (1, 2, 3), FakeParams(n))


async def test_defence_a_full_batch_yields_to_a_newcomer_within_a_slice(
    fake_llm_engine: FakeLLMEngine,
) -> None:
    """Attack: Mallory fills the whole batch (``max_active`` = 4) with 300-token calls at the same fee
    as Alice's; Alice's one call comes once Mallory's are running. A newcomer's virtual time starts
    at the busy users' floor (Mallory's own), so the tie could go to Mallory's earlier calls.
    Defence: Mallory's virtual time has grown past that floor by the end of the running slice, so one
    of her calls yields and Alice's call is in the engine within about one time slice (8 tokens)."""
    sched = Scheduler(fake_llm_engine, FairSharePolicy(), max_active=4, time_slice_tokens=8)
    hogs = [asyncio.ensure_future(sched.generate(_job(f"m{i}", "mallory", 300))) for i in range(4)]
    for _ in range(1000):  # until Mallory's calls are running
        if len(fake_llm_engine.steps) >= 3:
            break
        await asyncio.sleep(0)
    arrived = len(fake_llm_engine.steps)
    async with asyncio.timeout(10):
        await sched.generate(_job("alice", "alice", 4))
        first = next(i for i, step in enumerate(fake_llm_engine.steps) if "alice" in step)
        await asyncio.gather(*hogs)
    assert first - arrived <= 8 + 2, (arrived, first)
