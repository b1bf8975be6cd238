"""Where a task's roots come from: each memory or file root a task starts from must have been
written by a committed task of the same user (`supernet.validator.origin_check`).

Replay holds every access of a task to the one before, so the one root a trace states from outside
the task is the one its first access found. A node that makes that root up (memories the user
never stored) answers with a trace that replays clean. Every root now names its writer (the
request hash of the task whose write produced it), and the validator follows it to that task's
committed receipt and trace. Each attack below is what a rational node would commit instead;
the control is the node's own kernel running two tasks of one user, which verifies clean.

The batches a validator's follower records come from the chain; here they are recorded into the
validator's real database directly (`Chain`), with manifests served from memory. The rest is
real: the node's kernel on an embedded store, the verifier, its replay and the receipt index.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from supernet.node.agents.base import Agent
from supernet.node.agents.context import AgentContext
from supernet.node.kernel.access import namespace_of
from supernet.node.kernel.replay import replay
from supernet.node.kernel.syscalls import TaskSpec
from supernet.sdk.chain.eip712 import TaskRequest, hash_task_request, sign_task_request
from supernet.sdk.chain.merkle import ReceiptTree
from supernet.sdk.chain.receipts import sign_receipt
from supernet.sdk.formats.manifest import ManifestEntry
from supernet.sdk.store.cids import compute_cid, encode_dag, link
from supernet.validator.chain import BatchCommitted
from supernet.validator.db import BatchRow, Database
from supernet.validator.evidence import Check
from supernet.validator.origin_check import ReceiptIndex
from supernet.validator.verifier import Manifest, ManifestError

from tests.unit.test_validator_attacks import (
    DOMAIN,
    NODE,
    USER,
    DictStore,
    MemoryQuestion,
    commit_entry,
    empty_search,
    searched,
    signed_task,
    trace_doc,
    verify,
)
from tests.unit.test_validator_attacks3 import AGENTS, Notes, clean, node_task, stand_in_kernel

OTHER = Account.from_key("0x" + "05" * 32)
NOT_COMMITTED = "no receipt of a signed request this node committed"


class Chain:
    """The node's committed batches as a validator's database records them, and their manifests."""

    def __init__(self) -> None:
        self.db = Database(":memory:")
        self.manifests: dict[int, Manifest] = {}
        self._next = 1

    def commit(self, *entries: ManifestEntry, served: bool = True) -> int:
        """Record a batch of ``entries`` (its manifest ``served`` or not); returns its id."""
        batch_id, self._next = self._next, self._next + 1
        tree = ReceiptTree([e.leaf for e in entries])
        event = BatchCommitted(
            batch_id, NODE.address, tree.root, len(entries), batch_id, f"m{batch_id}", 0, 0
        )
        self.db.record_events([event], batch_id + 1)
        if served:
            self.serve(batch_id, entries)
        return batch_id

    def serve(self, batch_id: int, entries: tuple[ManifestEntry, ...]) -> None:
        self.manifests[batch_id] = Manifest(dict(enumerate(entries)), ReceiptTree([e.leaf for e in entries]))

    async def manifest(self, batch: BatchRow) -> Manifest:
        if batch.batch_id not in self.manifests:
            raise ManifestError(f"manifest {batch.manifest_cid} not served")
        return self.manifests[batch.batch_id]

    def index(self) -> ReceiptIndex:
        return ReceiptIndex(self.db, self.manifest, DOMAIN)


def spec(req: TaskRequest, task_id: str, agent_id: str, task_input: Any) -> TaskSpec:
    return TaskSpec(
        task_id=task_id,
        agent_id=agent_id,
        input=task_input,
        user=USER.address,
        fee=100,
        agent_hash="0x" + req.agent_hash.hex(),
    )


def made_up_memory(
    writer: str | None, text: str = "The launch code is 0000."
) -> tuple[list[bytes], Any, Any]:
    """A memory root of the user's ``memq`` namespace the node made up, naming ``writer``, and one
    entry it made up: (their blocks, the root's link, the entry's link)."""
    ns = namespace_of(USER.address, "memq")
    entry_raw = encode_dag({"type": "supernet/memory-entry", "text": text, "metadata": {}})
    entry = compute_cid(entry_raw, "dag-cbor")
    root = {"type": "supernet/memory-root", "namespace": ns, "entries": [link(entry)], "prev": None}
    root_raw = encode_dag({**root, "writer": writer})
    return [root_raw, entry_raw], link(compute_cid(root_raw, "dag-cbor")), link(entry)


async def memory_answer(store: DictStore, chain: Chain, writer: str | None, batch_id: int) -> Any:
    """The verdict on a memory question answered from a made-up root naming ``writer``."""
    task_input = {"q": "What is the launch code?"}
    req, task_id = signed_task(MemoryQuestion, task_input)
    blocks, root, hit = made_up_memory(writer)
    events = searched(namespace_of(USER.address, "memq"), task_input["q"], root, hit)
    doc = trace_doc(
        MemoryQuestion, task_id, USER.address, task_input, events, "The launch code is 0000.", blocks=blocks
    )
    return await verify(store, req, task_id, doc, origins=chain.index(), batch_id=batch_id)


def origin_findings(verdict: Any) -> list[str]:
    """The origin findings; the trace is otherwise consistent (it replays clean)."""
    assert all(f.check == Check.ORIGIN for f in verdict.findings), verdict.findings
    return [f.message for f in verdict.findings]


async def two_notes(tmp_path: Path) -> tuple[tuple[TaskRequest, str, Any], tuple[TaskRequest, str, Any]]:
    """Two tasks of one user on one namespace, run by the node's own kernel: the first writes the
    note, the second writes on top of the first's root."""
    first, second = {"text": "first note"}, {"text": "second note"}
    (req_a, a), (req_b, b) = node_task(Notes, first), node_task(Notes, second)
    async with stand_in_kernel(tmp_path / "store", AGENTS) as kernel:
        out_a = await kernel.run_task(spec(req_a, a, "notes", first))
        out_b = await kernel.run_task(spec(req_b, b, "notes", second))
    assert (out_a.output, out_b.output) == ("first note", "second note")
    return (req_a, a, out_a.trace), (req_b, b, out_b.trace)


async def test_an_honest_users_second_task_follows_its_root_to_the_first(tmp_path: Path) -> None:
    """Control: the second task's first root is the one the first task wrote; it names the first
    task, whose receipt is committed in an earlier batch and whose trace records that write."""
    (req_a, a, trace_a), (req_b, b, trace_b) = await two_notes(tmp_path)
    put_b = trace_b["events"][0]
    assert put_b["kind"] == "storage.put" and put_b["prev_root"] == trace_a["events"][0]["root"]
    store, chain = DictStore(), Chain()
    chain.commit(commit_entry(store, req_a, a, trace_a))
    verdict = await verify(store, req_b, b, trace_b, agents=AGENTS, origins=chain.index(), batch_id=2)
    assert clean(verdict), verdict.findings
    # the same two tasks in one batch (the first one's receipt stored first) verify too
    chain2 = Chain()
    chain2.commit(commit_entry(store, req_a, a, trace_a), commit_entry(store, req_b, b, trace_b))
    assert clean(await verify(store, req_b, b, trace_b, agents=AGENTS, origins=chain2.index(), batch_id=1))


async def test_a_made_up_root_naming_no_writer_is_caught() -> None:
    """The former known limit (``test_known_limit_fabricated_memory_root``): a node answers a
    memory question from memories the user never stored, under a root it made up (as roots were
    before they named their writer). The user has no memory: an honest node answers 'unknown'."""
    verdict = await memory_answer(DictStore(), Chain(), None, batch_id=1)
    assert not verdict.ok and verdict.unverifiable is None
    assert any("names no writer task" in m for m in origin_findings(verdict)), verdict.findings
    task_input = {"q": "What is the launch code?"}
    _, task_id = signed_task(MemoryQuestion, task_input)
    honest = await replay(
        trace_doc(
            MemoryQuestion, task_id, USER.address, task_input, empty_search(task_input["q"]), "unknown"
        ),
        MemoryQuestion,
        None,
    )
    assert honest.divergences == [] and honest.output == "unknown"


async def test_a_made_up_root_naming_an_uncommitted_task_is_caught() -> None:
    """The root names a task the user really signed (the node holds every request it was sent),
    but that task's receipt was never committed: its trace, the one that would hold the write,
    is open to no check."""
    _, never_committed = signed_task(Notes, {"text": "a request the node kept"})
    verdict = await memory_answer(DictStore(), Chain(), never_committed, batch_id=1)
    assert not verdict.ok
    assert any(NOT_COMMITTED in m for m in origin_findings(verdict)), verdict.findings


async def test_a_root_naming_another_users_task_is_caught() -> None:
    """The root names a committed task the other user really signed (whose memory is never this
    user's)."""
    store, chain = DictStore(), Chain()
    req, _ = signed_task(Notes, {"text": "someone else's note"})
    req = dataclasses.replace(req, user=OTHER.address)
    other_task = "0x" + hash_task_request(req, DOMAIN).hex()
    entry = commit_entry(store, req, other_task, trace_doc(Notes, other_task, OTHER.address, {}, [], "x"))
    receipt = dataclasses.replace(entry.receipt, user=OTHER.address)
    signed = sign_task_request(req, DOMAIN, OTHER)
    chain.commit(
        dataclasses.replace(
            entry,
            receipt=receipt,
            leaf=receipt.leaf(),
            signature=sign_receipt(receipt, NODE),
            request_signature=signed,
        )
    )
    verdict = await memory_answer(store, chain, other_task, batch_id=2)
    assert any("a task of another user" in m for m in origin_findings(verdict)), verdict.findings


async def test_a_writer_whose_request_its_user_never_signed_is_caught() -> None:
    """The root names a receipt the node committed for a request nobody signed (it made the
    writer up too, receipt and trace): committing it costs nothing, and only its own sampling
    would catch it. The index holds only receipts of requests their users signed."""
    store, chain = DictStore(), Chain()
    req, task = signed_task(Notes, {"text": "a note the node wrote itself"})
    ns = namespace_of(USER.address, "memq")
    blocks, root, _ = made_up_memory(task)
    write = {"kind": "memory.add", "namespace": ns, "entry": link(compute_cid(blocks[1], "dag-cbor")),
             "root": root, "prev_root": None}  # fmt: skip
    entry = commit_entry(store, req, task, trace_doc(Notes, task, USER.address, {}, [write], "x"))
    forged = sign_task_request(req, DOMAIN, NODE)  # the node's key, not the user's
    chain.commit(dataclasses.replace(entry, request_signature=forged))
    verdict = await memory_answer(store, chain, task, batch_id=2)
    assert any(NOT_COMMITTED in m for m in origin_findings(verdict)), verdict.findings
    # control: the same receipt with the user's signature is a writer (the trace wrote the root)
    chain2 = Chain()
    chain2.commit(entry)
    assert origin_findings(await memory_answer(store, chain2, task, batch_id=2)) == []


async def test_a_root_naming_a_committed_task_that_never_wrote_it_is_caught(tmp_path: Path) -> None:
    """The root names a real, committed task of the user, whose committed trace records no write
    that produced it: the node borrowed the name."""
    (req_a, a, trace_a), _ = await two_notes(tmp_path)
    store, chain = DictStore(), Chain()
    chain.commit(commit_entry(store, req_a, a, trace_a))
    verdict = await memory_answer(store, chain, a, batch_id=2)
    assert any("wrote no such root" in m for m in origin_findings(verdict)), verdict.findings


async def test_a_writer_committed_only_after_the_task_is_caught(tmp_path: Path) -> None:
    """A task's writer must be committed no later than the task (an honest node stores a task's
    receipt before its next task of the user can start): a receipt committed after the task's
    batch is one the node could still have been making up when it committed the task."""
    (req_a, a, trace_a), (req_b, b, trace_b) = await two_notes(tmp_path)
    store, chain = DictStore(), Chain()
    chain.commit(commit_entry(store, req_b, b, trace_b))  # batch 1: the second task
    chain.commit(commit_entry(store, req_a, a, trace_a))  # batch 2: its writer, later
    verdict = await verify(store, req_b, b, trace_b, agents=AGENTS, origins=chain.index(), batch_id=1)
    assert any(NOT_COMMITTED + " by batch 1" in m for m in origin_findings(verdict))


async def test_an_unreadable_manifest_is_no_accusation_until_it_is_read(tmp_path: Path) -> None:
    """A manifest of the node that cannot be read may hold the writer: the task is unverifiable
    here for now (never an accusation). Once it is read and the writer is not in it, it is."""
    store, chain = DictStore(), Chain()
    _, stranger = signed_task(Notes, {"text": "not committed"})
    (req_a, a, trace_a), _ = await two_notes(tmp_path)
    entry = commit_entry(store, req_a, a, trace_a)
    batch = chain.commit(entry, served=False)
    verdict = await memory_answer(store, chain, stranger, batch_id=2)
    assert verdict.findings == () and verdict.unverifiable is not None
    assert "unreadable" in verdict.unverifiable
    assert verdict.origin_pending and verdict.withheld == ()  # checked again later, not settled
    chain.serve(batch, (entry,))
    verdict = await memory_answer(store, chain, stranger, batch_id=2)
    assert any(NOT_COMMITTED in m for m in origin_findings(verdict)), verdict.findings


async def test_an_unreadable_writer_trace_is_no_accusation(tmp_path: Path) -> None:
    """The writer is committed but its trace cannot be read here: the task is not faulty (a store
    hiccup is proof of nothing) and not settled either: the verdict names the writer's entry, which
    the validator sends to the availability path (served, or the node slashed), and the task is
    checked again until its window closes (the devnet run of this:
    tests/integration/test_validator_origins_e2e.py)."""
    (req_a, a, trace_a), (req_b, b, trace_b) = await two_notes(tmp_path)
    store, chain = DictStore(), Chain()
    entry = commit_entry(store, req_a, a, trace_a)
    chain.commit(entry)
    del store.blocks[entry.trace_cid]
    verdict = await verify(store, req_b, b, trace_b, agents=AGENTS, origins=chain.index(), batch_id=2)
    assert verdict.findings == () and "unreadable" not in (verdict.unverifiable or "")
    assert verdict.unverifiable is not None and entry.trace_cid in verdict.unverifiable
    assert verdict.origin_pending and verdict.withheld == ((1, 0),)


async def test_a_write_naming_another_writer_is_caught(tmp_path: Path) -> None:
    """A node that writes, in one task, a root naming another task (to pass it off later as that
    task's write) gives a trace that does not replay: a task's writes name the task itself."""
    (req_a, a, trace_a), _ = await two_notes(tmp_path)
    doc = copy.deepcopy(trace_a)
    put, get = doc["events"][0], doc["events"][1]
    assert put["kind"] == "storage.put" and get["kind"] == "storage.get"
    ns = namespace_of(USER.address, "notes")
    forged = {
        "type": "supernet/fs-root",
        "namespace": ns,
        "files": {"notes.txt": [put["cid"]]},
        "prev": None,
        "writer": "0x" + "ab" * 32,
    }
    raw = encode_dag(forged)
    put["root"] = get["root"] = link(compute_cid(raw, "dag-cbor"))
    doc["witness"]["blocks"] = [*doc["witness"]["blocks"], raw]
    verdict = await verify(DictStore(), req_a, a, doc, agents=AGENTS)
    assert any(f.check == Check.REPLAY and "new root" in f.message for f in verdict.findings), (
        verdict.findings
    )


async def test_a_users_next_task_uses_a_write_only_once_its_receipt_is_stored(tmp_path: Path) -> None:
    """The ordering an honest writer needs (committed no later than the tasks that read its roots):
    the node stores a successful task's receipt (`Kernel.submit`'s ``on_success``) before the
    user's next task can touch the namespaces the task wrote; a store that fails undoes the writes."""
    first, second = {"text": "first note"}, {"text": "second note"}
    (req_a, a), (req_b, b) = node_task(Notes, first), node_task(Notes, second)
    gate, storing = asyncio.Event(), asyncio.Event()

    async def store_receipt(outcome: Any) -> None:
        assert outcome.task_id == a
        storing.set()
        await gate.wait()  # a slow database

    async with stand_in_kernel(tmp_path / "store", AGENTS) as kernel:
        run_a = kernel.submit(spec(req_a, a, "notes", first), on_success=store_receipt)
        await asyncio.wait_for(storing.wait(), 10)
        run_b = kernel.submit(spec(req_b, b, "notes", second))
        await asyncio.sleep(0.3)
        assert not run_b.done() and not run_a.done()  # B waits for A's receipt, not only A's end
        gate.set()
        out_a, out_b = await run_a.outcome(), await run_b.outcome()
    assert out_b.trace["events"][0]["prev_root"] == out_a.trace["events"][0]["root"]

    async def store_fails(outcome: Any) -> None:
        raise OSError("disk full")

    async with stand_in_kernel(tmp_path / "store2", AGENTS) as kernel:
        with pytest.raises(OSError):
            await kernel.submit(spec(req_a, a, "notes", first), on_success=store_fails).outcome()
        out_b = await kernel.run_task(spec(req_b, b, "notes", second))
    assert out_b.trace["events"][0]["prev_root"] is None  # the task without a receipt left nothing


class Editor(Agent):
    """Edits the user's files: writes, restores a version, deletes, as the input says; returns
    what the file holds afterwards."""

    agent_id = "editor"
    description = "Writes, restores or deletes the user's note."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        for step in input["steps"]:
            if step == "put":
                await ctx.storage.put("./notes.txt", str(input["text"]))  # an unnormalised path
            elif step == "restore-first":
                await ctx.storage.rollback("notes.txt", (await ctx.storage.versions("notes.txt"))[0])
            elif step == "delete":
                await ctx.storage.delete("notes.txt")
        try:
            return (await ctx.storage.get("notes.txt")).decode()
        except FileNotFoundError:
            return "no note"


async def test_an_honest_history_of_puts_rollbacks_and_deletes_walks_clean(tmp_path: Path) -> None:
    """Control for the walk: every kind of file write (put, rollback, delete), by several
    committed tasks of one user, each in its own batch; the last task's first roots are followed
    down the whole history and found sound (and a second check stops at the roots found sound)."""
    agents = (*AGENTS, Editor)
    steps = [
        {"steps": ["put"], "text": "v1"},
        {"steps": ["put", "restore-first"], "text": "v2"},
        {"steps": ["delete", "restore-first"], "text": ""},
        {"steps": ["put"], "text": "v4"},
    ]
    async with stand_in_kernel(tmp_path / "store", agents) as kernel:
        runs = []
        for x in steps:
            req, tid = signed_task(Editor, x, kernel.profile("editor").hash())
            out = await kernel.run_task(spec(req, tid, "editor", x))
            assert out.status == "ok", out.error
            runs.append((req, tid, out.trace))
    assert [str(r[2]["output"]) for r in runs] == ["v1", "v1", "v1", "v4"]
    store, chain = DictStore(), Chain()
    index = chain.index()
    for batch, (req, tid, trace) in enumerate(runs, start=1):
        chain.commit(commit_entry(store, req, tid, trace))
        verdict = await verify(store, req, tid, trace, agents=agents, origins=index, batch_id=batch)
        assert clean(verdict), (batch, verdict.findings, verdict.unverifiable)
    walked = chain.db._all("SELECT COUNT(*) FROM verified_roots")[0][0]
    assert walked >= 5  # every root below the last task's first one


def test_a_root_found_sound_is_sound_for_its_node_only() -> None:
    """The walk stops at roots it found sound, per node: a root of one node's user, written by that
    node's committed tasks, is not one another node committed (every validator, with or without
    that memo, then judges another node's task the same way)."""
    db = Database(":memory:")
    root = compute_cid(encode_dag({"type": "supernet/fs-root", "namespace": "x", "files": {}}), "dag-cbor")
    db.mark_roots_verified(NODE.address, [root])
    assert db.root_verified(NODE.address.lower(), root)
    assert not db.root_verified(OTHER.address, root)
