"""Adversarial review: a RATIONAL CHEATING NODE (fifth pass) against verification soundness, on what
the fourth pass (test_review_rational_node4.py, LLM-call steering) left out: the agent REPLAY of
everything that is not an LLM call (memory and file syscalls and their roots, versions, rollbacks
and tombstones, agent-to-agent calls) and DATA AVAILABILITY of what a check reads (the witness, the
traces a validator reads for their writes).

The node wants to return an answer of its choosing (or skip work) and still verify clean, or make
verification impossible without being slashed. Tried after the earlier reviews
(test_review_replay_fidelity.py, test_review_memory_storage.py, test_review_writer_replay.py,
test_review_root_origins.py, test_review_origin_pending.py, test_review_storage_missing.py,
test_review_search.py, test_review_mcp_tools.py, test_review_chain_read.py, test_review_manifests.py):
witness blocks whose *content* no type check covers (file histories that are not lists, memory roots
whose entries are not a list), a child agent's recorded result edited, and where each of those
lands in the validator's code: the replay's tape managers, the verifier's per-receipt barrier, the
write log that replays every committed trace that writes.

Real parts, as the existing tests use them: the node's own kernel (dispatcher, managers, embedded
content store: `tests.unit.test_validator_attacks3.stand_in_kernel`) records the honest trace, the
cheat is a trace edit made after it (receipt, trace and signatures consistent), and the whole
`Verifier` (with the validator's `RegistryRunner`), the validator's database and its real `WriteLog`
judge it; the chain is the stand-in of tests/unit/test_review_writer_replay.py. The agents here make
no LLM call (the LLM checks are not what is under review).

Found:

1. HIGH, FIXED (ii: `replay` turns the kernel's `TaskAbort` into a divergence at the syscall;
   an honest node's task that aborted has no receipt) - one malformed block in a trace's witness
   killed the validator instead of being the node's fault: a ``storage.put`` whose previous root
   (the task's first file root, a block the node writes into the witness) holds a file history
   that is not a list (``{"notes.txt": 7}``) made the replay raise `TaskAbort`, a
   ``BaseException``, out of every check that reads the trace
   (`test_defence_a_put_on_a_malformed_file_history_no_longer_escapes_the_verifiers_barrier`,
   `test_defence_the_same_trace_no_longer_stops_the_write_log_that_reads_every_committed_writer`).
   Root cause: the replay's `_TapeStorage._check_append` (node/supernet/node/kernel/replay.py:884)
   rebuilds the expected root with `storage.with_version` (storage.py:93, ``[*out.get(path, []),
   ...]``), which raises ``TypeError`` on a non-iterable history; it runs inside the *node's*
   `Dispatcher._served` (dispatch.py:611-621), which turns any exception of a manager other than
   ``ValueError``/``FileNotFoundError`` into `TaskAbort` (errors.py:71, a ``BaseException`` so that
   agents cannot catch it). Every isolation layer of the validator catches ``Exception`` only: the
   replay itself (replay.py ``replay`` catches `_Abort`/`_Unavailable`), `Verifier._stage_safe`
   (verifier.py:608, "a crafted trace can neither crash the validator nor stall a batch"), `_all`
   (verifier.py:743-747 re-raises what ``gather`` returned), `Validator._turn` (service.py:670),
   `WriteLog._replay_writer` / ``step`` (writes.py:166, 114), the step's part loop (service.py:506)
   and `Validator._steps` (service.py:442). So `TaskAbort` leaves `run_forever` and the validator
   process exits. Impact: (a) `WriteLog` replays every committed trace that writes, sampled or not,
   so one such trace, in any batch of any node, stops every validator's process once (its status is
   recorded ``read`` before the replay, so not again); (b) a validator whose sample draws it, or that
   votes on it, dies again on every restart (the batch stays pending, progress is per receipt) until
   the batch's window is over: no batch of any node is checked, no vote cast, no reveal made
   meanwhile (sealed vote bonds burn); (c) the cheat in that trace (here: the answer of the node's
   choosing, ``pay Mallory 500`` for the agent's ``pay Bob 5``) is never judged, and neither is
   anything else the node commits while the validators are down. The node is never slashed: no
   verdict exists. An honest node never writes such a root (its `StorageManager` builds every root).
   Fix by design: (i) in the replay, a root whose body is not what the protocol writes is the
   node's fault: check each path's history is a list of CIDs/None when a root is loaded
   (`_Chain.load` checks only that ``files`` is a mapping), or wrap `_check_append`'s rebuild so any
   error is a `ReplayDivergence`; (ii) the replay must never take the node's `TaskAbort` path: the
   tape managers should not run under `Dispatcher._served`'s abort (or `replay` should turn a
   `TaskAbort` into a divergence: an honest node's task that aborted has no receipt); (iii)
   defence in depth: the per-receipt barrier, `WriteLog`'s per-entry isolation and the step loop
   should catch ``BaseException`` other than ``CancelledError``/``KeyboardInterrupt``/``SystemExit``
   (the kernel's own `TaskAbort` included), making that receipt unverifiable-here rather than the
   process gone.

Checked and holding (``test_defence_*``):

- the same malformed file history reached by a *read* (`storage.get` on a made-up first root) is a
  replay finding: `history_of` / `missing_file` / `latest_files` read a root defensively, and the
  recorded version is then not one its root holds;
- a memory root whose ``entries`` is not a list, searched, is a replay finding ("not a memory root");
- a child agent's result is not taken on trust by the parent's replay: the recorded
  ``agent.return`` output (and the parent's answer built on it) edited is a replay finding at the
  return, and a child's writes stripped from between ``agent.call`` and ``agent.return`` diverge at
  the child's first syscall.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import pytest
from supernet.node.agents.base import Agent
from supernet.node.agents.context import AgentContext
from supernet.node.kernel.access import namespace_of
from supernet.node.kernel.errors import TaskAbort
from supernet.node.kernel.kernel import Kernel
from supernet.sdk.chain.eip712 import hash_task_request
from supernet.sdk.store.cids import link

from tests.unit.test_review_root_origins import block
from tests.unit.test_review_writer_replay import ChallengeChain, validator_of
from tests.unit.test_review_writes import Setup, signed
from tests.unit.test_root_origins import spec
from tests.unit.test_validator_attacks import (
    DOMAIN,
    USER,
    DictStore,
    MemoryQuestion,
    commit_entry,
    registry,
    signed_task,
    trace_doc,
    verify,
)
from tests.unit.test_validator_attacks3 import (
    FakeEngine,
    NoEmbedder,
    Notes,
    clean,
    node_task,
    node_trace,
    stand_in_kernel,
)

pytestmark = pytest.mark.timeout(60)

NOTES_NS = namespace_of(USER.address, "notes")
ASKED = {"text": "pay Bob 5"}
CHOSEN = "pay Mallory 500"  # the node's answer instead of the agent's


def malformed_file_root(namespace: str, history: Any) -> tuple[bytes, str]:
    """A ``supernet/fs-root`` of ``namespace`` (right type and namespace, ``files`` a mapping, as the
    replay's `_Chain.load` checks) whose history of ``notes.txt`` is ``history``: a block no honest
    `StorageManager` writes, that the node carries in its trace's witness."""
    return block(
        {"type": "supernet/fs-root", "namespace": namespace, "files": {"notes.txt": history}, "prev": None,
         "writer": None}
    )  # fmt: skip


def poisoned(honest: dict[str, Any], event: int, history: Any = 7) -> dict[str, Any]:
    """``honest`` with the previous root of its ``storage.put`` at ``event`` replaced by a malformed
    one (carried in the witness) and the answer of the node's choosing."""
    raw, cid = malformed_file_root(NOTES_NS, history)
    cheat = copy.deepcopy(honest)
    assert cheat["events"][event]["kind"] == "storage.put"
    cheat["events"][event]["prev_root"] = link(cid)
    cheat["witness"]["blocks"] = [*cheat["witness"]["blocks"], raw]
    cheat["output"] = CHOSEN
    return cheat


# -- found ---------------------------------------------------------------------------------------------


async def test_defence_a_put_on_a_malformed_file_history_no_longer_escapes_the_verifiers_barrier(
    tmp_path: Path,
) -> None:
    """FOUND, FIXED (HIGH, see the module docstring, 1). The node runs the user's `Notes` task honestly
    (it saves "pay Bob 5" and reads it back), then commits the answer "pay Mallory 500" with a
    trace whose ``storage.put`` names as its previous root a block of its own: the user's file root,
    right type and namespace, with the history of ``notes.txt`` an integer. The replay's rebuild of
    the expected root (`with_version`) raises ``TypeError`` inside the node's `Dispatcher._served`,
    which turns it into `TaskAbort`, a ``BaseException``: it passes `Verifier._stage_safe` (which
    catches ``Exception``) and leaves `Verifier.verify` (and so `Validator.step`, `run_forever`).
    No verdict, no finding, no challenge: the chosen answer is never judged, and the validator
    stops. SAFE: the malformed root is the node's fault, a finding on the receipt (at the least,
    nothing escapes the per-receipt barrier)."""
    req, task = node_task(Notes, ASKED)
    async with stand_in_kernel(tmp_path / "store", (Notes,)) as kernel:
        honest = (await kernel.run_task(spec(req, task, "notes", ASKED))).trace
    assert [e["kind"] for e in honest["events"]] == ["storage.put", "storage.get"]
    assert honest["output"] == ASKED["text"]
    assert clean(await verify(DictStore(), req, task, honest, agents=(Notes,)))  # control

    for history in (7, None):
        cheat = poisoned(honest, 0, history)
        try:
            verdict = await verify(DictStore(), req, task, cheat, agents=(Notes,))
        except TaskAbort as exc:  # a BaseException: what `_stage_safe` and every step loop let through
            pytest.fail(f"history {history!r}: TaskAbort escaped the verifier's per-receipt barrier: {exc}")
        assert not verdict.ok and verdict.findings, verdict
        assert verdict.unverifiable is None, verdict


async def test_defence_the_same_trace_no_longer_stops_the_write_log_that_reads_every_committed_writer(
    tmp_path: Path,
) -> None:
    """FOUND, FIXED (HIGH, 1, the network-wide half). Every validator's `WriteLog` reads every committed
    trace in its window, sampled or not, and replays each one that writes (`_replay_writer`); a
    writer that diverges is verified in full and challenged (`Validator.check_entry`). The poisoned
    `Notes` trace above, committed alone in a batch no validator sampled: the write log's replay
    raises `TaskAbort`, which `_replay_writer` and `WriteLog.step` (``except Exception``) let
    through, and with them the step's part loop and `Validator._steps`: the process of every
    validator that follows this node exits. SAFE: the step finishes, and the writer (whose replay
    cannot run on what it committed) is verified and challenged like a diverged one."""
    s = Setup()
    v = validator_of(s)
    chain: ChallengeChain = s.chain  # type: ignore[assignment]
    req, task = node_task(Notes, ASKED)
    honest = signed(await node_trace(tmp_path, Notes, ASKED, task), req)
    cheat = poisoned(honest, 0)
    b = await s.commit(commit_entry(s.store, req, task, cheat))
    try:
        await s.log.step(chain_now=10)
    except TaskAbort as exc:
        pytest.fail(f"TaskAbort escaped WriteLog.step (and with it the validator's step loop): {exc}")
    assert s.status(b, 0) == "read"
    [check] = v.db.checks(b)
    assert not check.ok, check
    assert chain.opened == [(b, 0)]


# -- checked and holding ---------------------------------------------------------------------------------


class Jot(Agent):
    """Saves the user's note when the input has one, else reads it back (a later task's first access
    to its files is that read)."""

    agent_id = "jot"
    description = "Saves or reads the user's note."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        if "text" in input:
            await ctx.storage.put("notes.txt", str(input["text"]))
            return "saved"
        try:
            return (await ctx.storage.get("notes.txt")).decode()
        except Exception as exc:
            return f"no notes ({type(exc).__name__})"


async def test_defence_a_malformed_file_history_at_a_read_is_a_replay_finding(tmp_path: Path) -> None:
    """The user has a note; the node shows the next `Jot` task (whose first file access is the read)
    a made-up first root whose history of ``notes.txt`` is not a list (an integer, a map, a text),
    and answers what it likes. A read goes through `history_of`, which reads a root defensively: the
    recorded version is not one its root holds, a replay finding, never an exception out of the
    check."""
    kernel = Kernel(FakeEngine(), None, agents=registry((Jot,)), embedder=NoEmbedder())
    profile = kernel.profile("jot").hash()
    (req_w, task_w), (req_r, task_r) = signed_task(Jot, ASKED, profile), signed_task(Jot, {}, profile)
    req_r = dataclasses.replace(req_r, nonce=2)
    task_r = "0x" + hash_task_request(req_r, DOMAIN).hex()
    async with stand_in_kernel(tmp_path / "store", (Jot,)) as node:
        await node.run_task(spec(req_w, task_w, "jot", ASKED))
        honest = (await node.run_task(spec(req_r, task_r, "jot", {}))).trace
    assert [e["kind"] for e in honest["events"]] == ["storage.get"] and honest["output"] == ASKED["text"]
    assert clean(await verify(DictStore(), req_r, task_r, honest, agents=(Jot,)))  # control

    ns = namespace_of(USER.address, "jot")
    for history in (7, {"a": 1}, "bafy"):
        raw, cid = malformed_file_root(ns, history)
        cheat = copy.deepcopy(honest)
        cheat["events"][0]["root"] = link(cid)
        cheat["witness"]["blocks"] = [*cheat["witness"]["blocks"], raw]
        cheat["output"] = CHOSEN
        verdict = await verify(DictStore(), req_r, task_r, cheat, agents=(Jot,))
        assert any(f.check.value == "replay" for f in verdict.findings), (history, verdict)


async def test_defence_a_memory_root_whose_entries_are_not_a_list_is_a_replay_finding() -> None:
    """A search of a made-up memory root whose ``entries`` is a map (its keys the node's chosen
    "entries") or a number: the replay's `_Chain.load` refuses a root whose body is not a list, a
    replay finding."""
    task_input = {"q": "What is the launch code?"}
    ns = namespace_of(USER.address, "memq")
    entry_raw, entry_cid = block(
        {"type": "supernet/memory-entry", "text": "The code is 0000.", "metadata": {}}
    )
    for entries in ({entry_cid: 1}, 7):
        root = {"type": "supernet/memory-root", "namespace": ns, "entries": entries}
        raw, cid = block({**root, "prev": None, "writer": None})
        req, task = signed_task(MemoryQuestion, task_input)
        event = {"kind": "memory.search", "namespace": ns, "query": task_input["q"], "k": 1}
        event |= {"root": link(cid), "hits": [link(entry_cid)], "scores": [0.9]}
        events, blocks = [event], [raw, entry_raw]
        doc = trace_doc(MemoryQuestion, task, USER.address, task_input, events, CHOSEN, blocks=blocks)
        verdict = await verify(DictStore(), req, task, doc)
        assert any(
            f.check.value == "replay" and "not a memory root" in f.message for f in verdict.findings
        ), verdict


class Keeper(Agent):
    """Hands the user's note to the `notes` agent (a child that saves it and reads it back) and
    answers what the child returned."""

    agent_id = "keeper"
    description = "Keeps a note through the notes agent."
    calls_agents = ("notes",)

    async def run(self, ctx: AgentContext, input: Any) -> str:
        return "kept: " + await ctx.agents.call("notes", input)


KEEPER_AGENTS = (Notes, Keeper)


async def test_defence_a_childs_result_is_not_taken_on_trust_by_the_parents_replay(tmp_path: Path) -> None:
    """The parent's replay runs the child (the installed class at the signed code hash) on the same
    tape: (a) the child's recorded output (and the parent's answer on it) edited to the node's
    choice is a divergence at ``agent.return``; (b) the child's syscalls dropped from between
    ``agent.call`` and ``agent.return`` (the node claims the child's answer without its work) is a
    divergence at the child's first syscall."""
    kernel = Kernel(FakeEngine(), None, agents=registry(KEEPER_AGENTS), embedder=NoEmbedder())
    req, task = signed_task(Keeper, ASKED, kernel.profile("keeper").hash())
    async with stand_in_kernel(tmp_path / "store", KEEPER_AGENTS) as node:
        honest = (await node.run_task(spec(req, task, "keeper", ASKED))).trace
    kinds = [e["kind"] for e in honest["events"]]
    assert kinds == ["agent.call", "storage.put", "storage.get", "agent.return"], kinds
    assert honest["output"] == "kept: " + ASKED["text"]
    assert clean(await verify(DictStore(), req, task, honest, agents=KEEPER_AGENTS))  # control

    edited = copy.deepcopy(honest)
    edited["events"][3]["output"] = CHOSEN
    edited["output"] = "kept: " + CHOSEN
    verdict = await verify(DictStore(), req, task, edited, agents=KEEPER_AGENTS)
    assert any(f.check.value == "replay" and f.call == 3 for f in verdict.findings), verdict

    skipped = copy.deepcopy(honest)
    skipped["events"] = [skipped["events"][0], {**skipped["events"][3], "output": CHOSEN}]
    skipped["witness"] = {"blocks": [], "files": []}
    skipped["output"] = "kept: " + CHOSEN
    verdict = await verify(DictStore(), req, task, skipped, agents=KEEPER_AGENTS)
    assert any(f.check.value == "replay" and f.call == 1 for f in verdict.findings), verdict
