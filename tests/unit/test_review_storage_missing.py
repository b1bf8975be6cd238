"""Adversarial review of ``storage.missing`` (a file miss names the root it was judged under).

Written as ``test_bug_*`` tests that passed while each problem existed; both are fixed and now
assert the defence (``test_defence_*``, the docstring saying what the problem was and how it was
fixed): a recorded failure of a memory or storage syscall must be one the replay gives itself, and
a node whose store (or embedder) fails ends the task instead of telling the agent.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from supernet.node.agents.base import Agent
from supernet.node.agents.context import AgentContext
from supernet.sdk.chain.eip712 import TaskRequest

from tests.unit.test_review_root_origins import MY_AGENTS, Lingerer, my_task
from tests.unit.test_root_origins import spec
from tests.unit.test_storage_missing import NOTE, fault_messages, read_after_note
from tests.unit.test_validator_attacks import DictStore, registry, signed_task, verify
from tests.unit.test_validator_attacks3 import FakeEngine, NoEmbedder, clean, stand_in_kernel


async def test_defence_a_file_hidden_by_a_recorded_store_failure_is_caught(tmp_path: Path) -> None:
    """FIXED (`_Tape.next` diverges on a recorded failure of a memory or storage syscall: each one
    the protocol defines the replay raises itself before reading the event; `Dispatcher._served`
    ends the task on a store or embedder failure). The problem, attack: the user's note is there; the node
    runs the user's next task, whose first access
    reads it, and instead of a (now checked) ``storage.missing`` records a bare ``error`` event of
    ``storage.get`` with a store failure (``MemoryStoreError``, or a builtin ``OSError`` /
    ``PermissionError`` an agent catching ``OSError`` takes for a miss). ``_Tape.next`` re-raises
    any recorded error of the syscall except the four ``_REPRODUCED_ERRORS``, and
    ``_check_missing`` only looks at ``storage.missing``, so the replay is clean; the event names no
    root, so neither the origin check nor the client's freshness check (``check_latest`` returns
    None: "no memory or files used") sees the read at all.

    Impact: the hole the change claims to close ("a node could hide a user's note", docs/validator.md
    "Formerly known limits, closed") stays open under another exception name: the agent is shown no
    note (every agent that catches ``Exception`` answers as if there were none) and the node is
    never caught.

    Fix: the replay should refuse (diverge on) a recorded error of ``storage.get`` /
    ``storage.rollback`` / ``storage.delete`` it does not reproduce itself (only a bad-path
    ``ValueError`` it recomputes, and misses as ``storage.missing``); a genuine store fault on the
    node should fail the task (status error, not the agent's to handle) or be recorded with the root
    and CID it could not read (the witness carries both, so the validator can tell it was readable
    and count the root as read for the origin and freshness checks).
    """
    req_r, r, honest = await read_after_note(tmp_path)
    assert honest["events"][0]["kind"] == "storage.get" and honest["output"] == NOTE["text"]
    assert clean(await verify(DictStore(), req_r, r, honest, agents=MY_AGENTS))  # control

    for error in (
        "MemoryStoreError: cannot read file notes.txt: block unavailable",
        "PermissionError: [Errno 13] store locked",
        "OSError: no such file",
    ):
        cheat = copy.deepcopy(honest)
        cheat["events"][0] = {
            "kind": "error",
            "syscall": "storage.get",
            "error": error,
            "call": {"path": "notes.txt", "version": None},
        }
        cheat["witness"] = {"blocks": [], "files": []}
        cheat["output"] = f"no notes ({error.partition(':')[0]})"
        assert NOTE["text"] not in cheat["output"]
        verdict = await verify(DictStore(), req_r, r, cheat, agents=MY_AGENTS)
        found = fault_messages(verdict)
        assert any("a recorded failure of storage.get the replay does not give" in m for m in found), found


class Lister(Agent):
    """Saves the user's note (if given), then lists the user's files."""

    agent_id = "lister"
    description = "Saves a note, lists the files."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        if "text" in input:
            await ctx.storage.put("notes.txt", str(input["text"]))
        try:
            return ",".join(sorted(await ctx.storage.list()))
        except Exception as exc:
            return f"no files ({type(exc).__name__})"


LIST_AGENTS = (*MY_AGENTS, Lister)


def list_task(task_input: Any) -> tuple[TaskRequest, str]:
    from supernet.node.kernel.kernel import Kernel

    kernel = Kernel(FakeEngine(), None, agents=registry(LIST_AGENTS), embedder=NoEmbedder())
    return signed_task(Lister, task_input, kernel.profile(Lister.agent_id).hash())


async def test_defence_a_listing_failure_is_no_longer_the_nodes_word(tmp_path: Path) -> None:
    """FIXED (as above: no recorded failure of a storage syscall is taken from the trace). The
    problem, attack: the user has a file; the node records the next task's ``storage.list`` (first
    access) as a bare ``error`` event ``FileNotFoundError: no files``. Only get / rollback / delete
    misses became ``storage.missing`` events judged on a root; for ``storage.list`` (and
    ``storage.versions``) the replay's ``_Tape.next`` re-raises the recorded ``FileNotFoundError``
    to the agent, and the replayed dispatcher records the same bare error, so it replays clean,
    names no root, and the client's freshness check sees no read.

    Impact: "no such file" is still the node's word on a listing: the agent is told the user has no
    files, though the root holds one (the same hole as above, with the very exception the change
    means to judge).

    Fix: ``StorageManager.list_files`` / ``versions`` never raise ``FileNotFoundError``, so the
    replay should refuse a recorded error of ``storage.list`` / ``storage.versions`` it cannot
    reproduce (at least any ``FileNotFoundError``/``OSError``), or treat any recorded storage error
    not reproduced from a root as a divergence.
    """
    (req_w, w), (req_r, r) = list_task(NOTE), list_task({})
    async with stand_in_kernel(tmp_path / "store", LIST_AGENTS) as kernel:
        await kernel.run_task(spec(req_w, w, "lister", NOTE))
        honest = (await kernel.run_task(spec(req_r, r, "lister", {}))).trace
    assert honest["events"][0]["kind"] == "storage.list" and honest["output"] == "notes.txt"
    assert clean(await verify(DictStore(), req_r, r, honest, agents=LIST_AGENTS))  # control

    cheat = copy.deepcopy(honest)
    cheat["events"][0] = {
        "kind": "error",
        "syscall": "storage.list",
        "error": "FileNotFoundError: no files",
        "call": {},
    }
    cheat["witness"] = {"blocks": [], "files": []}
    cheat["output"] = "no files (FileNotFoundError)"
    verdict = await verify(DictStore(), req_r, r, cheat, agents=LIST_AGENTS)
    found = fault_messages(verdict)
    assert any("a recorded failure of storage.list the replay does not give" in m for m in found), found


async def test_a_store_failure_on_the_node_ends_the_task_instead_of_telling_the_agent(tmp_path: Path) -> None:
    """The honest side of the rule: the node's store fails while the user's task reads its note;
    the agent is not told (it would answer "no notes", a claim no validator could check), the task
    fails (no receipt, not billed)."""
    (req_w, w), (req_r, r) = my_task(Lingerer, NOTE), my_task(Lingerer, {})
    async with stand_in_kernel(tmp_path / "store", MY_AGENTS) as kernel:
        await kernel.run_task(spec(req_w, w, "lingerer", NOTE))

        async def broken(cid: str) -> bytes:
            raise ConnectionError("store down")

        kernel.storage._store.cat = broken  # type: ignore[method-assign]  # a FAKE fault: the store fails
        outcome = await kernel.run_task(spec(req_r, r, "lingerer", {}))
    assert outcome.status != "ok" and "MemoryStoreError" in (outcome.error or ""), outcome
    assert "no notes" not in (outcome.output or "")


class Jotter(Agent):
    """Remembers the user's text; says so when memory refuses it."""

    agent_id = "jotter"
    description = "Remembers a text."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        try:
            await ctx.memory.add(str(input["text"]))
        except Exception as exc:
            return f"refused ({exc})"
        return "kept"


JOT_AGENTS = (*MY_AGENTS, Jotter)


async def test_a_memory_entry_over_the_limit_is_still_the_agents_to_handle(tmp_path: Path) -> None:
    """A refusal the protocol defines still reaches the agent: the entry length is checked by the
    dispatcher (which the replay runs), so the honest trace of a refused entry verifies clean."""
    from supernet.node.kernel.kernel import Kernel
    from supernet.node.kernel.memory import MAX_ENTRY_CHARS

    task_input = {"text": "x" * (MAX_ENTRY_CHARS + 1)}
    kernel_for_profile = Kernel(FakeEngine(), None, agents=registry(JOT_AGENTS), embedder=NoEmbedder())
    req, task_id = signed_task(Jotter, task_input, kernel_for_profile.profile(Jotter.agent_id).hash())
    async with stand_in_kernel(tmp_path / "store", JOT_AGENTS) as kernel:
        honest = (await kernel.run_task(spec(req, task_id, "jotter", task_input))).trace
    assert honest["status"] == "ok" and honest["output"].startswith("refused (a memory entry holds at most")
    assert [e["kind"] for e in honest["events"]] == ["error"]
    assert clean(await verify(DictStore(), req, task_id, honest, agents=JOT_AGENTS))
