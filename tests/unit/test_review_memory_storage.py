"""Adversarial review of the kernel's memory and storage managers, their namespaces and roots, and
how a validator's replay binds memory and storage syscalls (`supernet.node.kernel.memory`,
``storage``, ``namespaces``, ``dispatch``, ``replay``; `supernet.validator.search_check`,
``origin_check``).

Tried (real kernel, real embedded store, real all-MiniLM-L6-v2 embedder, real verifier):

* another user's or agent's memory or files through user-controlled strings (path separators,
  ``..``, backslashes, Unicode normal forms, case, over-long paths): **holds**. The namespace is
  ``<signer address>/<agent id>`` from the access manager, never from a path; a path is a key inside
  the namespace's root, normalised by one function the node and the replay share
  (`test_defence_hostile_paths_stay_in_the_namespace_and_replay_alike`).
* a user exhausting the node through memory writes:
  - **FIXED** (`test_defence_a_write_pins_only_what_it_adds`): every memory or
    file write pinned its new root recursively (`NamespaceRoots.commit`, ``put_dag(..., pin=True)``),
    and a root links every earlier root (``prev``) and every entry, so the store walks (reads and
    decodes) every block the namespace ever wrote, at every write: a write costs O(history), a
    namespace O(n^2) blocks and O(n^3) bytes over its life. On the embedded store the walk runs
    under the store's one lock (`EmbeddedStore.pin_add`), which every pin of every user (each
    write, each trace save) waits for. Measured here: the 100th add of a fresh namespace took
    ~0.9 s, almost all of it the walk; at 1,000 entries an add walks 500,000 links (~70 s here).
  - **FIXED** (`test_defence_no_write_is_made_that_the_trace_could_not_hold`): memory
    and file writes were not held to the trace cap before they are made (LLM calls and
    ``store_read`` are): a task whose trace is already past `MAX_TRACE_BYTES` goes on embedding and
    writing, then fails unbilled (`TraceTooLargeError`), its roots reverted but its blocks left in
    the store (the embedded store never collects them).
  - **FIXED** (`test_defence_working_sets_are_bounded_per_node`): the K-LRU working set bounded
    each namespace, not the node: RAM grew with the number of namespaces ever written (one per user
    address and agent), a failed task's entries resident too. Now ``memory_resident_entries``
    bounds the node.
* crash consistency of writes: **FIXED** (the live root moves back first)
  (`test_defence_a_store_error_in_a_revert_leaves_no_unreceipted_root_live`):
  a failed task's revert (`NamespaceRoots.revert`) changes the live root only after its pin calls
  succeed; one store error there leaves the failed task's root live, so the user's next task
  starts from a root whose writer has no receipt, and the validators' origin check accuses the
  (honest) node.
* a node choosing search results or storage reads, framing by content (NaN, ties, float drift): the
  replay binds hits to the searched root and `SearchCheck` re-ranks it; tests/unit/test_search_check.py
  and test_review_search.py cover it, not repeated. The remaining node freedom (an older root on a
  task's first access) is a documented known limit (docs/validator.md, "Known limits").
"""

from __future__ import annotations

import contextlib
import unicodedata
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from supernet.node.agents.base import Agent
from supernet.node.agents.context import AgentContext
from supernet.node.agents.retrieval import RetrievalAgent
from supernet.node.kernel.access import NodePolicy, namespace_of
from supernet.node.kernel.kernel import Kernel, KernelConfig
from supernet.node.kernel.syscalls import TaskSpec
from supernet.sdk.formats.trace import MAX_TRACE_BYTES
from supernet.sdk.store import StoreClient
from supernet.sdk.store.cids import link
from supernet.sdk.store.embedded import EmbeddedStore, create_app

from tests.embedder import SharedMiniLM
from tests.unit.test_root_origins import Chain
from tests.unit.test_validator_attacks import USER, DictStore, registry, signed_task, verify
from tests.unit.test_validator_attacks3 import FakeEngine, clean


class Jot(Agent):
    """Remembers the facts it is given, then recalls up to eight memories; fails if asked to."""

    agent_id = "jot"
    description = "Remembers facts, recalls them."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        for fact in input.get("facts", []):
            await ctx.memory.add(str(fact))
        if input.get("fail"):
            raise RuntimeError("the agent failed after its writes")
        hits = await ctx.memory.search("fact", k=8)
        return "|".join(sorted(h.text for h in hits))


class Paths(Agent):
    """Writes a file at each path it is given and reads each back; reports what each call did."""

    agent_id = "paths"
    description = "Writes and reads files at the given paths."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        out = []
        for path, text in input["files"]:
            try:
                await ctx.storage.put(path, text)
                out.append(f"{path}={(await ctx.storage.get(path)).decode()}")
            except ValueError as exc:
                out.append(f"refused {exc}")
        out.append("|".join(sorted(await ctx.storage.list())))
        return "\n".join(out)


AGENTS: tuple[type[Agent], ...] = (Jot, Paths, RetrievalAgent)
ALICE = "0x" + "a1" * 20


class WalkCountingStore(EmbeddedStore):
    """The real embedded store, counting the blocks its recursive pins walk (`EmbeddedStore._walk`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.walks: list[int] = []

    def _walk(self, root: str) -> set[str]:
        seen = super()._walk(root)
        self.walks.append(len(seen))
        return seen


@contextlib.asynccontextmanager
async def node_kernel(
    store: EmbeddedStore, config: KernelConfig | None = None, embedder: Any = None
) -> AsyncIterator[Kernel]:
    """The node's own kernel on ``store`` (as `stand_in_kernel`, with a store and config of the test's)."""
    app = create_app(store)
    async with StoreClient("http://embedded-store", transport=httpx.ASGITransport(app=app)) as client:
        kernel = Kernel(
            FakeEngine(),
            client,
            config or KernelConfig(node_policy=NodePolicy()),
            agents=registry(AGENTS),
            embedder=embedder or SharedMiniLM(),
        )
        await kernel.setup()
        try:
            yield kernel
        finally:
            await kernel.stop()


def profile(agent: type[Agent]) -> str:
    """The ``agentHash`` the node lists for ``agent`` (what its users sign)."""
    config = KernelConfig(node_policy=NodePolicy())
    return (
        Kernel(FakeEngine(), None, config, agents=registry(AGENTS), embedder=SharedMiniLM())
        .profile(agent.agent_id)
        .hash()
    )


def spec(n: int, agent: str, task_input: Any, user: str = ALICE) -> TaskSpec:
    return TaskSpec(f"0x{n:064x}", agent, task_input, user=user, fee=1)


def signed_spec(agent: type[Agent], task_input: Any) -> tuple[Any, str, TaskSpec]:
    """A request ``USER`` signed for ``agent`` on ``task_input``, and the kernel's spec of it."""
    req, task_id = signed_task(agent, task_input, profile(agent))
    return req, task_id, TaskSpec(task_id, agent.agent_id, task_input, user=USER.address, fee=100)


# -- 1. a write costs the namespace's whole history ------------------------------------------------------


async def test_defence_a_write_pins_only_what_it_adds(tmp_path: Path) -> None:
    """DEFENCE (was a known limit: a stall). `NamespaceRoots.commit` wrote each new root with a
    recursive pin, and a root links its previous root and every entry, so the store walked every
    block the namespace ever wrote at every write (O(history) a write, O(n^2) blocks over a
    namespace's life), under the store's one lock; the trace's recursive pin walked the same
    history again. Now a write pins what it adds: its entry (one block) and its root (a direct pin),
    and the trace is pinned directly (`StoreClient.pin_direct`): two receipted tasks add 15 facts
    each, and a third task's add walks one block, as the first did."""
    store = WalkCountingStore(tmp_path / "store", fsync=False)
    async with node_kernel(store) as kernel:
        for n in (1, 2):
            facts = [f"fact {n}-{i}" for i in range(15)]
            assert (await kernel.run_task(spec(n, "jot", {"facts": facts}))).status == "ok"
        assert store.walks and max(store.walks) == 1  # each entry's own pin, nothing more
        store.walks.clear()
        out = await kernel.run_task(spec(3, "jot", {"facts": ["one more fact"]}))
        assert out.status == "ok"
        walks = list(store.walks)
        ns = namespace_of(ALICE, "jot")
        pins = await kernel.store.pin_ls("all")
        history = [r for r in (kernel.memory.roots.root(ns),) if r is not None]
    [add] = [e for e in out.trace["events"] if e["kind"] == "memory.add"]
    assert add["prev_root"] is not None
    assert walks == [1]  # the new entry; the root and the trace are direct pins
    assert pins[history[0]] == "direct" and pins[str(add["prev_root"])] == "direct"  # history stays pinned


# -- 2. writes are not held to the trace cap -----------------------------------------------------------


async def test_defence_no_write_is_made_that_the_trace_could_not_hold(tmp_path: Path) -> None:
    """DEFENCE (was a known limit: free work and disk). A memory add or a file put was made whatever
    the trace held; the task then failed over `MAX_TRACE_BYTES`, unbilled, its blocks left in the
    store. Now the dispatcher ends the task before a write whose witness (its content, the previous
    root unless the trace has it, the new root) would not fit (`Dispatcher._write_fits`).

    Here a user whose memory has 4,000 entries (a ~164 KB root) sends the built-in ``retrieval``
    agent four one-letter facts: the first add fits (two roots), the second would not, and the
    task ends there, before writing it."""
    store_dir = tmp_path / "store"
    store = WalkCountingStore(store_dir, fsync=False)
    async with node_kernel(store) as kernel:
        ns = namespace_of(ALICE, "retrieval")
        entry = {"type": "supernet/memory-entry", "text": "x", "metadata": {}, "model": "m", "embedding": b""}
        entries = [link(await kernel.store.put_dag(entry))] * 4000
        async with kernel.memory.roots.lock(ns):  # the user's memory as earlier tasks left it
            before, _ = await kernel.memory.roots.commit(ns, {"entries": entries}, "0x01")
        root_size = len(await kernel.store.get_block(before))
        blocks_before = sum(f.is_file() for f in (store_dir / "blocks").rglob("*"))
        out = await kernel.run_task(spec(2, "retrieval", {"remember": ["a", "b", "c", "d"]}))
        assert kernel.memory.roots.root(ns) == before  # reverted: the user keeps nothing of it
        written = sum(f.is_file() for f in (store_dir / "blocks").rglob("*")) - blocks_before
    assert out.status != "ok" and "refused before writing" in (out.error or ""), (out.status, out.error)
    assert len([e for e in out.trace["events"] if e["kind"] == "memory.add"]) == 1
    assert 3 * root_size > MAX_TRACE_BYTES > 2 * root_size  # two roots fit, three would not
    assert written == 3, written  # one write's entry and root, and the failed task's trace: not four writes


# -- 3. working sets -------------------------------------------------------------------------------------


async def test_defence_working_sets_are_bounded_per_node(tmp_path: Path) -> None:
    """DEFENCE (was a known limit: RAM). ``[kernel] memory_working_set`` bounded the entries held in
    RAM per namespace only, and every user address is a namespace: RAM grew with the users (a
    failed, unbilled task's entries stayed resident too). Now ``memory_resident_entries`` bounds
    them over all namespaces together, dropping the working sets of the namespaces used longest
    ago. Here: a working set of 2 per namespace, 8 for the node, thirteen users."""
    config = KernelConfig(node_policy=NodePolicy(), memory_working_set=2, memory_resident_entries=8)
    async with node_kernel(EmbeddedStore(tmp_path / "store", fsync=False), config) as kernel:
        users = [f"0x{i:040x}" for i in range(1, 13)]
        for n, user in enumerate(users):
            task = spec(n, "jot", {"facts": ["a", "b", "c"]}, user=user)
            assert (await kernel.run_task(task)).status == "ok"
            assert kernel.memory.resident() <= 8
        failing = "0x" + "ee" * 20
        failed = await kernel.run_task(spec(99, "jot", {"facts": ["x", "y"], "fail": True}, user=failing))
        assert failed.status == "error"
        assert kernel.memory.resident() <= 8
        assert kernel.memory.resident(namespace_of(users[0], "jot")) == 0  # dropped, used longest ago
        # a dropped namespace pages back in from the store: its memory is all there
        again = await kernel.run_task(spec(100, "jot", {"facts": []}, user=users[0]))
    assert again.output == "a|b|c"


# -- 4. a revert that fails half-way ---------------------------------------------------------------------


class FlakyPins:
    """The node's store client, whose next ``pin_rm`` fails once armed (a timeout, a daemon restart)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.armed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def pin_rm(self, cid: str, **kwargs: Any) -> Any:
        if self.armed:
            self.armed = False
            raise RuntimeError("store timed out")
        return await self._inner.pin_rm(cid, **kwargs)


async def test_defence_a_store_error_in_a_revert_leaves_no_unreceipted_root_live(tmp_path: Path) -> None:
    """DEFENCE (was a known limit: an honest node slashed). A failed task's revert changed the live
    root only after its pin calls succeeded: one store error there left the failed task's root live,
    the user's next task ran on it, and the validators' origin check accused the honest node ("no
    receipt of a signed request this node committed"). Now the live root moves back first (in
    memory: it cannot fail), and the pins are bookkeeping: the error is logged, the next task starts
    from the receipted root and verifies clean."""
    first_input = {"facts": ["the door code is 1234"], "fail": True}
    second_input = {"facts": ["the door code changed"]}
    _, _, failing = signed_spec(Jot, first_input)
    req, task_id, honest = signed_spec(Jot, second_input)
    async with node_kernel(EmbeddedStore(tmp_path / "store", fsync=False)) as kernel:
        flaky = FlakyPins(kernel.memory.roots.store)
        kernel.memory.roots.store = flaky
        flaky.armed = True  # the revert's first pin_rm fails
        failed = await kernel.run_task(failing)
        assert failed.status == "error" and not flaky.armed  # the store did fail, during the revert
        ns = namespace_of(USER.address, "jot")
        assert kernel.memory.roots.root(ns) is None  # the failed task's root is not the user's memory
        assert ns not in kernel.namespace_roots()["memory"]
        out = await kernel.run_task(honest)
    assert out.status == "ok"
    assert out.output == "the door code changed"
    assert out.trace["events"][0]["prev_root"] is None
    verdict = await verify(DictStore(), req, task_id, dict(out.trace), agents=(Jot,), origins=Chain().index())
    assert clean(verdict), verdict.findings


# -- 5. namespaces and paths -----------------------------------------------------------------------------


async def test_defence_hostile_paths_stay_in_the_namespace_and_replay_alike(tmp_path: Path) -> None:
    """DEFENCE. A user chooses file paths (an agent writing where its input says) to reach another
    user's or agent's files: ``..`` is refused, separators (``//``, ``./``, ``\\``) fold into one
    key of the task's own root, and the namespace is the signer's address and the agent id (never a
    path), so another user's file at the same path is untouched. Unicode forms are not folded (NFC
    and NFD names are two files) and an over-long path is refused, on the node and in the replay
    alike: the honest trace verifies clean."""
    victim = "0x" + "b0" * 20
    cafe_nfc, cafe_nfd = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
    files = [
        ["notes.txt", "mine"],
        [f"../{victim}/paths/notes.txt", "overwrite"],
        [f"..\\..\\{victim.upper()}\\paths\\notes.txt", "overwrite"],
        [f"{victim}/paths/notes.txt", "nested"],
        ["a//b/./c.txt", "folded"],
        ["a\\b\\c.txt", "folded again"],
        [cafe_nfc, "nfc"],
        [cafe_nfd, "nfd"],
        ["x" * 257, "too long"],
    ]
    task_input = {"files": files}
    req, task_id, task = signed_spec(Paths, task_input)
    async with node_kernel(EmbeddedStore(tmp_path / "store", fsync=False)) as kernel:
        put = await kernel.run_task(spec(1, "paths", {"files": [["notes.txt", "victim's"]]}, user=victim))
        assert put.status == "ok"
        out = await kernel.run_task(task)
        victims_file = await kernel.storage.get(namespace_of(victim, "paths"), "notes.txt")
    assert out.status == "ok", out.error
    lines = out.output.split("\n")
    assert sum(line.startswith("refused bad file path") for line in lines) == 3
    assert f"{victim}/paths/notes.txt=nested" in lines
    assert "a\\b\\c.txt=folded again" in lines
    assert f"{cafe_nfc}=nfc" in lines and f"{cafe_nfd}=nfd" in lines
    listed = lines[-1].split("|")
    assert "a/b/c.txt" in listed and cafe_nfc in listed and cafe_nfd in listed
    assert victims_file[1] == b"victim's"
    namespaces = {e["namespace"] for e in out.trace["events"] if "namespace" in e}
    assert namespaces == {namespace_of(USER.address, "paths")}
    assert clean(await verify(DictStore(), req, task_id, dict(out.trace), agents=(Paths,)))
