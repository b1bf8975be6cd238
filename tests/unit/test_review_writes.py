"""Adversarial review of "writes read in their window" (`supernet.validator.writes.WriteLog`, the
``writes`` / ``ingested`` tables, `_Walk._recorded` / ``_stored_root`` in origin_check.py, the
``entry_refused`` finding, and `ManifestWatch._follow_refusals`).

Written as ``test_bug_*`` tests that passed while each problem existed (docstring: PROBLEM: who
gains and how; FIX); all seven were fixed and the tests turned into ``test_defence_*`` (FIXED:
how); ``test_holds_*`` tests pin down what was checked and held. The chain is a stand-in
(`ReviewChain`: batch headers, the window, manifest claims, refused entries); WriteLog, the
receipt index, the origin walk, the verifier and the validator database are the real ones.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

from supernet.node.kernel.access import namespace_of
from supernet.sdk.chain.eip712 import sign_task_request
from supernet.sdk.store.cids import canonical_cid, compute_cid, encode_dag, link
from supernet.validator.db import ReceiptRow, WriteRow
from supernet.validator.manifests import ManifestWatch
from supernet.validator.origin_check import MAX_WALK, ReceiptIndex, next_root
from supernet.validator.trace_view import parse_trace_block
from supernet.validator.writes import WriteLog

from tests.unit.test_review_manifests import (
    FakeChain,
    Manifests,
    memory_write,
    origin_messages,
    reader_verdict,
)
from tests.unit.test_root_origins import NOT_COMMITTED, made_up_memory
from tests.unit.test_validator_attacks import (
    DOMAIN,
    NODE,
    USER,
    DictStore,
    MemoryQuestion,
    commit_entry,
    searched,
    signed_task,
    trace_doc,
    verify,
)
from tests.unit.test_validator_attacks3 import Notes

WINDOW = 100
NS = namespace_of(USER.address, "memq")


# -- stand-ins ---------------------------------------------------------------------------------------


class ReviewChain(FakeChain):
    """`FakeChain` plus availability refusals per entry (``refused``) and a count of those reads."""

    def __init__(self) -> None:
        super().__init__(WINDOW)
        self.refused: set[tuple[int, int]] = set()
        self.refusal_reads = 0

    def entry_refused(self, batch_id: int, index: int) -> bool:
        self.refusal_reads += 1
        return (batch_id, index) in self.refused


class Noted:
    """The availability path as WriteLog sees it: what it was sent."""

    def __init__(self) -> None:
        self.noted: list[tuple[int, int, str]] = []

    def note(self, batch: Any, index: int, reason: str) -> None:
        self.noted.append((batch.batch_id, index, reason))


def signed(doc: dict[str, Any], req: Any) -> dict[str, Any]:
    """``doc`` carrying its request, signed by the user (as `Kernel.submit` records it)."""
    doc["request"] = req.to_json()
    doc["request_signature"] = "0x" + sign_task_request(req, DOMAIN, USER).hex()
    return doc


def carried_writer(store: DictStore, req: Any, task: str) -> Any:
    """`writer_entry` whose trace also carries the root it wrote in its witness (as the walk and
    WriteLog expect of a writer's committed trace)."""
    blocks, write = memory_write(task)
    doc = signed(trace_doc(Notes, task, USER.address, {}, [write], "x", blocks=blocks), req)
    return commit_entry(store, req, task, doc)


def put(blocks: list[bytes], obj: Any) -> str:
    raw = encode_dag(obj)
    blocks.append(raw)
    return compute_cid(raw, "dag-cbor")


class Setup:
    """A validator's view: its database, manifests, a stand-in chain, the store and WriteLog."""

    def __init__(self) -> None:
        self.store = DictStore()
        self.chain = ReviewChain()
        self.view = Manifests(claims=self.chain)
        self.index: ReceiptIndex = self.view.index()
        self.avail = Noted()
        self.log = WriteLog(self.chain, self.view.db, self.store, self.index, self.avail, backoff_s=0.0)  # type: ignore[arg-type]

    async def commit(self, *entries: Any, at: int = 0, served: bool = True) -> int:
        batch_id = self.view.commit(*entries, served=served)
        self.chain.committed_at[batch_id] = at
        batch = self.view.db.batch(batch_id)
        assert batch is not None
        await self.index.read(batch, force=True)
        return batch_id

    def status(self, batch_id: int, index: int) -> str | None:
        rows = self.view.db._all(
            "SELECT status FROM ingested WHERE batch_id = ? AND idx = ?", batch_id, index
        )
        return rows[0][0] if rows else None


def reader_of(root: Any, hit: Any, blocks: list[bytes]) -> tuple[Any, str, dict[str, Any]]:
    """A memory question whose first (and only) root is ``root`` (its blocks carried)."""
    task_input = {"q": "What is the launch code?"}
    req, task_id = signed_task(MemoryQuestion, task_input)
    events = searched(NS, task_input["q"], root, hit)
    doc = trace_doc(
        MemoryQuestion, task_id, USER.address, task_input, events, "The launch code is 0000.", blocks=blocks
    )
    return req, task_id, doc


# -- findings ----------------------------------------------------------------------------------------


async def test_defence_a_writer_read_in_its_window_is_not_needed_after_it() -> None:
    """FIXED (`_Walk._one`: a named writer whose trace was read in its window, ``READ_IN_WINDOW``,
    and produced no recorded write of the root is an origin finding, without reading its trace
    again). PROBLEM (high; the hole WriteLog was built to close is still open). A node commits a real,
    signed task W of the user (no memory write at all), serves W's trace in its window: WriteLog
    reads it (status ``read``, no writes recorded). After the window the node withholds W's trace
    and makes up a memory root naming W as its writer. A sampled reader's walk finds no recorded
    write for the root (`_recorded` -> None), so `_one` goes back to W's *trace*, which is
    withheld: the reader is pending, W goes to availability (claim refused: window closed), and the
    reader ends ``unverifiable`` for good, never an origin finding. The validator knew, from the
    read in W's window, that W wrote no such root; the walk never asks the ``ingested`` table.
    Gain: the node feeds the agent made-up memories at no risk, naming any old unsampled task.
    FIX: in `_Walk._one` (or `_recorded`), when the named writer's entry has a final WriteLog
    status other than ``expired`` (``read``, ``another task's trace``, ``no signed request``,
    ``unreadable witness``) and no recorded write produced the root, it is an origin Finding
    ("its writer's trace, read in its window, wrote no such root"); only ``expired``/unread entries
    fall back to reading the trace."""
    s = Setup()
    req, task = signed_task(Notes, {"text": "a task that wrote nothing"})
    entry = commit_entry(s.store, req, task, signed(trace_doc(Notes, task, USER.address, {}, [], "x"), req))
    b1 = await s.commit(entry, at=0)
    await s.log.step(chain_now=10)
    assert s.status(b1, 0) == "read" and s.avail.noted == []  # read in its window: it wrote nothing

    # control: while the trace is served, the made-up root naming W is an origin finding
    made_up = await reader_verdict(s.store, s.index, task, batch_id=2)
    assert any("wrote no such root" in m for m in origin_messages(made_up)), made_up.findings

    del s.store.blocks[entry.trace_cid]  # the window is over: the node stops serving W's trace
    s.view.db.forget_verified_roots(NODE.address)
    verdict = await reader_verdict(s.store, s.index, task, batch_id=3)
    assert any("wrote no such root" in m for m in origin_messages(verdict)), verdict.findings
    assert verdict.withheld == ()  # nothing to wait for: judged from what was read in W's window


async def test_defence_a_made_up_root_below_a_recorded_write_is_found() -> None:
    """FIXED (`WriteLog` keeps the block of a write's previous root when no recorded write produced it,
    ``root_blocks``; the walk reads it there before the store). PROBLEM (high). Below a recorded write,
    the walk reads the next root's block from the store (`_stored_root`), which the node controls; an
    unreadable block is "cannot be read" (unverifiable), never a finding. Before, that block came from the
    writer's committed trace (carried in its witness, else a finding: "does not carry the root it wrote on
    top of"). A node makes up root R1 (naming no writer, or a task that never wrote it), lets a real task
    W2 of the user add a memory on top (R2, prev R1: W2's trace carries R1 and its write is sound, so
    WriteLog records it), and never puts R1 in the store (it only ever existed inside traces). Every
    sampled reader of R2 is then pending with nothing withheld (no writer trace, no manifest to pursue)
    and ends ``unverifiable``: the made-up memory is never an origin finding (unless W2 itself, the one
    task whose first root is R1, happens to be sampled). FIX: keep what WriteLog verified: store the prev
    root's block with the write (``writes`` table, or put it in the validator's own store when the write
    is recorded), or fall back to reading the recorded writer's trace (and in the window's absence, treat
    a prev block the node does not serve as the writer's fault: a Finding, as `_one` did)."""
    s = Setup()
    # R1: made up, naming no writer; its one entry made up too
    blocks: list[bytes] = []
    fake_entry = link(
        put(blocks, {"type": "supernet/memory-entry", "text": "The launch code is 0000.", "metadata": {}})
    )
    r1_block = {
        "type": "supernet/memory-root",
        "namespace": NS,
        "entries": [fake_entry],
        "prev": None,
        "writer": None,
    }
    r1 = put(blocks, r1_block)
    # W2: a real task of the user adds a memory on top of R1
    req2, w2 = signed_task(Notes, {"text": "remember the meeting"})
    real_entry = link(put(blocks, {"type": "supernet/memory-entry", "text": "meeting at 10", "metadata": {}}))
    r2_block = next_root("memory", NS, r1_block, r1, SimpleNamespace(entry=real_entry), w2)
    r2 = put(blocks, r2_block)
    write = {
        "kind": "memory.add",
        "namespace": NS,
        "entry": real_entry,
        "root": link(r2),
        "prev_root": link(r1),
    }
    w2_doc = signed(trace_doc(Notes, w2, USER.address, {}, [write], "x", blocks=list(blocks)), req2)
    b1 = await s.commit(commit_entry(s.store, req2, w2, w2_doc), at=0)
    await s.log.step(chain_now=10)
    assert s.view.db.write_of(NODE.address, r2) is not None  # W2's sound write is recorded

    req, task_id, doc = reader_of(link(r2), fake_entry, blocks)
    for cid in (r1,):  # the node never serves R1 (and may stop serving W2's trace too)
        s.store.blocks.pop(canonical_cid(cid), None)
    verdict = await verify(s.store, req, task_id, doc, origins=s.index, batch_id=2)
    assert any("names no writer task" in m for m in origin_messages(verdict)), verdict.findings

    # control: without the recorded write (a validator that never ran WriteLog) it is a finding
    other = Setup()
    other.store.blocks.update(s.store.blocks)
    await other.commit(commit_entry(other.store, req2, w2, w2_doc), at=0)
    found = await verify(other.store, req, task_id, doc, origins=other.index, batch_id=2)
    assert any("names no writer task" in m for m in origin_messages(found)), found.findings
    assert b1 == 1


async def test_defence_a_refused_entry_wrote_nothing_whatever_is_served_later() -> None:
    """FIXED (`_one` asks `entry_refused` before reading the writer's trace; a recorded write of a refused
    entry is not used, the refusals being followed from the chain into ``refused`` each step by
    `ManifestWatch`). PROBLEM (medium-high; split verdicts, bait for a challenger's bond). The docs say
    "an entry whose claim the node let go unanswered wrote nothing, for every validator", but `_one` asks
    `entry_refused` only when the writer's trace is unreadable *here*. A node lets an availability claim
    on writer W go unanswered (slashed once), then serves W's trace to some validators only. Those judge
    W's readers sound; one that cannot read it finds an origin fraud and challenges; the voters the node
    serves vote "no fraud" and the honest challenger loses its bond. (The recorded write is skipped for a
    refused entry, so WriteLog does not help.) This is the availability twin of the manifest split already
    fixed (`_first_shown` applies UNANSWERED whatever is served later). FIX: in `_Walk._one`, check
    `index.entry_refused(receipt.batch_id, receipt.index)` before (or regardless of) reading the writer's
    trace: a refused entry is no writer, for everyone."""
    s = Setup()
    req, task = signed_task(Notes, {"text": "a note"})
    entry = carried_writer(s.store, req, task)
    b1 = await s.commit(entry, at=0)
    await s.log.step(chain_now=10)
    assert s.view.db.write_of(NODE.address, str(memory_write(task)[1]["root"])) is not None
    s.chain.refused.add((b1, 0))  # the node refused W's availability claim on chain
    s.view.db.record_refusals([(b1, 0)])  # followed from the chain (`ManifestWatch`)

    served = await reader_verdict(s.store, s.index, task, batch_id=2)  # a validator it serves
    assert any("never showed when claimed" in m for m in origin_messages(served)), served.findings

    withheld = DictStore()  # a validator it does not serve W's trace to
    withheld.blocks.update({k: v for k, v in s.store.blocks.items() if k != entry.trace_cid})
    s.view.db.forget_verified_roots(NODE.address)
    accused = await reader_verdict(withheld, s.index, task, batch_id=2)
    assert any("never showed when claimed" in m for m in origin_messages(accused)), accused.findings


async def test_defence_a_malformed_write_never_opts_its_trace_out() -> None:
    """FIXED (`WriteLog._write` judges each write on its own, a malformed block being an unsound write; other
    trouble is retried from the database's schedule). PROBLEM (medium). An exception inside
    `WriteLog._one` (here `writes_of`: a write whose root block in the witness is not a map makes
    ``dict(block)`` raise) is caught by `step`, which reschedules the entry RETRY_MAX_S later with the
    same failure count: it is never recorded as read, never sent to availability, and after its window it
    is ``expired``. The node thereby opts one writer out of WriteLog (and out of the availability path)
    and is back to the old hole: withhold its trace after the window and its readers stay unverifiable.
    Rows that raise also keep their place in `unread_traces` (ORDER BY batch LIMIT 256) for the whole
    window: 256 such entries (see the next test) starve every later entry, of every node. FIX: in
    `writes_of`, treat a malformed block as an unsound write (catch per event, e.g. ``isinstance(block,
    Mapping)`` checks and a try around `next_root`), and in `step` count an exception as a failure so that
    it ends in a final status (``unreadable``/availability) too."""
    s = Setup()
    req, task = signed_task(Notes, {"text": "a note"})
    blocks: list[bytes] = []
    bad_root = put(blocks, [1, 2, 3])  # the "root" this write produced: not a map
    entry_cid = link(put(blocks, {"type": "supernet/memory-entry", "text": "x", "metadata": {}}))
    bad = {
        "kind": "memory.add",
        "namespace": NS,
        "entry": entry_cid,
        "root": link(bad_root),
        "prev_root": None,
    }
    good_blocks, good = memory_write(task)  # a sound write, its roots carried
    doc = signed(trace_doc(Notes, task, USER.address, {}, [good, bad], "x", blocks=blocks + good_blocks), req)
    trace = parse_trace_block(encode_dag(doc)).doc
    row = ReceiptRow(1, 0, NODE.address.lower(), task, USER.address.lower(), "")
    writes, status = s.log.writes_of(row, trace)
    assert status == "read" and [w.root for w in writes] == [canonical_cid(str(good["root"]))]

    b1 = await s.commit(commit_entry(s.store, req, task, doc), at=0)
    await s.log.step(chain_now=10)
    assert s.status(b1, 0) == "read"  # read in its window: its sound write kept, the bad one not


async def test_defence_entries_in_back_off_never_starve_later_ones() -> None:
    """FIXED (the retry schedule is in the database, ``ingested.next_try``, and `unread_traces`
    returns only entries due; the malformed ones are read at once, previous test). PROBLEM
    (medium; DoS of the whole WriteLog). `step` asks `unread_traces(floor)` for the
    first 256 unread rows (ORDER BY batch, idx) and skips those in back-off; rows in back-off stay
    unread. A node commits one batch of 256 entries whose traces make `_one` raise (previous test:
    rescheduled every RETRY_MAX_S until its window ends, never final) and no later entry, of any
    node, is read during its window: all expire, and their writers' traces are needed again after
    the window (the old hole, for honest nodes' readers too: unverifiable when a writer's trace is
    lost). Unreadable rows do the same for their ~retries back-off each.
    FIX: skip rows in back-off in SQL (persist next_try in ``ingested`` / a schedule table) or page
    past them (keyset on (batch, idx)), and give every row a final status (see above)."""
    s = Setup()
    req, task = signed_task(Notes, {"text": "a note"})
    blocks: list[bytes] = []
    bad_root = put(blocks, [1, 2, 3])
    entry_cid = link(put(blocks, {"type": "supernet/memory-entry", "text": "x", "metadata": {}}))
    bad = {
        "kind": "memory.add",
        "namespace": NS,
        "entry": entry_cid,
        "root": link(bad_root),
        "prev_root": None,
    }
    doc = signed(trace_doc(Notes, task, USER.address, {}, [bad], "x", blocks=blocks), req)
    poison = commit_entry(s.store, req, task, doc)
    b1 = await s.commit(*([poison] * 256), at=0)  # one batch: 256 entries that raise
    honest_req, honest = signed_task(Notes, {"text": "an honest note"})
    b2 = await s.commit(carried_writer(s.store, honest_req, honest), at=5)  # another batch, later
    await s.log.step(chain_now=10)  # the first 256 due entries: all read, none left waiting
    await s.log.step(chain_now=11)
    assert s.status(b1, 255) == "read" and s.status(b2, 0) == "read"  # reached in its window
    assert s.view.db.write_of(NODE.address, str(memory_write(honest)[1]["root"])) is not None
    # and an unreadable entry waiting for its retry is not returned until it is due
    s.view.db.retry_read(b2, 0, 1, time.time() + 60)
    assert all((r.batch_id, r.index) != (b2, 0) for r, _ in s.view.db.unread_traces(0, time.time()))


async def test_defence_forgetting_roots_keeps_deep_recorded_histories_verifiable() -> None:
    """FIXED (recorded writes are lookups that do not count toward MAX_WALK, and a recorded
    write's refusal is read from the ``refused`` table the watch keeps, not asked of the chain per
    root). What stays: one refusal makes every validator walk that node's recorded histories
    again (database lookups). PROBLEM (medium; DoS lever, cheap for a node, also hits honest nodes
    offline once). Every
    refusal on chain makes `_follow_refusals` forget ALL of that node's verified roots. The walk
    marks nothing until it reaches a verified root (or the bottom), and stops at MAX_WALK roots:
    so after one refusal, every namespace of that node with more than MAX_WALK writes is
    unverifiable for every later reader, at every validator, forever (each walk starts again from
    the top and gives up at 512, even though every write is recorded). Each recorded root also
    costs two uncached RPCs (`claimed` is memoised, `entry_refused` is not): ~1000 per reader.
    FIX: forget only roots whose walk went through the refused batch/entry (store the writer
    entry per verified root), or re-check the refusal per recorded write without dropping the
    memo; let recorded writes not count toward MAX_WALK (or walk bottom-up from the recorded
    chain, marking as it goes); cache `entry_refused` per step (refusals are followed anyway)."""
    s = Setup()
    req, task = signed_task(Notes, {"text": "a note"})
    entry = carried_writer(s.store, req, task)
    b1 = await s.commit(entry, at=0)
    await s.log.step(chain_now=10)
    # the user's namespace has MAX_WALK + 1 recorded writes on top of the root W wrote
    below = canonical_cid(str(memory_write(task)[1]["root"]))
    writes: list[WriteRow] = []
    for i in range(MAX_WALK + 1):
        cid = compute_cid(encode_dag({"i": i}), "dag-cbor")
        writes.append(WriteRow(NODE.address, cid, below, "memory", NS, task, USER.address, b1, 0))
        below = cid
    s.view.db.record_writes(b1, 1, writes, "read")
    top = below
    _, hit = made_up_memory(task)[1:]

    from supernet.validator.origin_check import check_origins

    trace = parse_trace_block(encode_dag(reader_of(link(top), hit, [])[2])).doc
    walked: list[Any] = []
    # the validator followed the node: the history was walked as it grew (here: bottom half first)
    s.view.db.mark_roots_verified(NODE.address, [w.root for w in writes[: MAX_WALK // 2]])
    walked.append(await check_origins(trace, {("memory", NS): top}, s.index, s.store, NODE.address, 2))
    assert walked[0].findings == () and walked[0].unverifiable is None  # sound, all marked
    reads = s.chain.refusal_reads

    # a refusal on chain (any entry of the node, e.g. one it chose to refuse): every root forgotten
    s.chain.refusals = lambda a, b: [(NODE.address, b1, 7)]  # type: ignore[method-assign]
    await ManifestWatch(s.chain, s.view.db, s.index, backoff_s=0.0).step(10)  # type: ignore[arg-type]
    assert not s.view.db.root_verified(NODE.address, top)  # forgotten ...
    for _ in range(2):
        out = await check_origins(trace, {("memory", NS): top}, s.index, s.store, NODE.address, 2)
        assert out.findings == () and out.unverifiable is None  # ... and walked again, in full
    assert s.chain.refusal_reads - reads <= 2  # no chain read per recorded root


async def test_defence_a_second_copy_of_a_request_is_not_its_writer() -> None:
    """FIXED (`_recorded` uses a recorded write only when its entry is the one receipt of its
    writer's request; otherwise the walk takes the copy `locate` picks, whatever was recorded).
    PROBLEM (medium-low; split verdicts). `_one` takes a writer's FIRST shown receipt
    (`ReceiptIndex.locate`) and reads that trace; WriteLog records the writes of EVERY indexed
    entry, and `write_of` keeps whichever copy wrote the root. Nothing stops a node committing one
    signed request twice with two different traces: copy 1 (batch 1) writes nothing, copy 2
    (batch 2) writes a memory the user never asked for. A validator that read copy 2 in its window
    judges readers sound; one that did not (started later: ``history``; copy 2 ``expired`` or
    starved, see above) walks copy 1 and finds an origin fraud: the accuser can lose its bond, and
    the made-up write passes wherever it was recorded.
    FIX: use a recorded write only when its entry is the receipt `locate` returns for its writer
    (the first shown copy), or record writes only from the first committed copy of a request
    (and treat a request committed twice as a fault of its own)."""
    s = Setup()
    req, task = signed_task(Notes, {"text": "a note"})
    first = commit_entry(s.store, req, task, signed(trace_doc(Notes, task, USER.address, {}, [], "x"), req))
    await s.commit(first, at=0)
    await s.commit(carried_writer(s.store, req, task), at=0)  # the same request, another trace
    await s.log.step(chain_now=10)
    write = s.view.db.write_of(NODE.address, str(memory_write(task)[1]["root"]))
    assert write is not None and write.batch_id == 2
    passed = await reader_verdict(s.store, s.index, task, batch_id=3)
    assert any("wrote no such root" in m for m in origin_messages(passed)), passed.findings

    fresh = Setup()  # a validator with no record of copy 2's write
    fresh.store.blocks.update(s.store.blocks)
    await fresh.commit(first, at=0)
    await fresh.commit(carried_writer(fresh.store, req, task), at=0)
    accused = await reader_verdict(fresh.store, fresh.index, task, batch_id=3)
    assert any("wrote no such root" in m for m in origin_messages(accused)), accused.findings


# -- what holds ---------------------------------------------------------------------------------------


async def test_holds_an_honest_nodes_writes_are_recorded_and_outlive_its_trace(tmp_path: Any) -> None:
    """The node's own kernel (two tasks of one user, the second writing on top of the first)
    carries both roots of each write in its witness: WriteLog records the first task's write, and
    the second task verifies clean after the first task's trace is gone (the walk never needs it)."""
    from tests.unit.test_root_origins import two_notes
    from tests.unit.test_validator_attacks3 import AGENTS, clean

    (req_a, a, trace_a), (req_b, b, trace_b) = await two_notes(tmp_path)
    s = Setup()
    entry_a = commit_entry(s.store, req_a, a, signed(trace_a, req_a))
    b1 = await s.commit(entry_a, at=0)
    await s.log.step(chain_now=10)
    assert s.status(b1, 0) == "read"
    put_a = trace_a["events"][0]
    assert s.view.db.write_of(NODE.address, str(put_a["root"])) is not None
    del s.store.blocks[entry_a.trace_cid]  # after its window, the trace is gone
    verdict = await verify(s.store, req_b, b, trace_b, agents=AGENTS, origins=s.index, batch_id=2)
    assert clean(verdict), (verdict.findings, verdict.unverifiable)


async def test_holds_writes_of_keeps_only_sound_writes_of_signed_requests_to_this_node() -> None:
    """`writes_of` records nothing from a trace of another task or user, a trace without the
    user's request or with one signed for another node, a write whose previous root is not
    carried, or a write that is not its previous root with its one change (e.g. naming another
    writer: a trace cannot record a root that names a task other than itself)."""
    import dataclasses

    from tests.unit.test_review_manifests import OTHER_NODE

    s = Setup()
    req, task = signed_task(Notes, {"text": "a note"})
    blocks, write = memory_write(task)
    row = ReceiptRow(1, 0, NODE.address.lower(), task, USER.address.lower(), "")

    def parsed(doc: dict[str, Any]) -> Any:
        return parse_trace_block(encode_dag(doc)).doc

    good = signed(trace_doc(Notes, task, USER.address, {}, [write], "x", blocks=blocks), req)
    writes, status = s.log.writes_of(row, parsed(good))
    assert status == "read" and [w.root for w in writes] == [canonical_cid(str(write["root"]))]
    # the entry's text is kept for the searches of later tasks (`search_check`)
    entry = canonical_cid(str(write["entry"]))
    assert s.view.db.entry_texts([entry]) == {entry: "The launch code is 0000."}

    assert s.log.writes_of(dataclasses.replace(row, request_hash="0x" + "ab" * 32), parsed(good)) == (
        [],
        "another task's trace",
    )
    unsigned = trace_doc(Notes, task, USER.address, {}, [write], "x", blocks=blocks)
    assert s.log.writes_of(row, parsed(unsigned)) == ([], "no signed request")
    elsewhere = dataclasses.replace(req, node=OTHER_NODE.address)
    assert s.log.writes_of(row, parsed(signed(dict(unsigned), elsewhere)))[1] == "no signed request"

    # a root naming another writer (a made-up root the trace claims to have written)
    other_blocks, other_root, _ = made_up_memory("0x" + "cd" * 32)
    forged = {**write, "root": other_root}
    doc = signed(trace_doc(Notes, task, USER.address, {}, [forged], "x", blocks=other_blocks), req)
    assert s.log.writes_of(row, parsed(doc)) == ([], "read")

    # a write on top of a previous root the trace does not carry
    prev_blocks, prev_root, _ = made_up_memory(task, "an older note")
    on_top = {**write, "prev_root": prev_root}
    doc = signed(trace_doc(Notes, task, USER.address, {}, [on_top], "x", blocks=blocks), req)
    assert s.log.writes_of(row, parsed(doc)) == ([], "read")
    assert prev_blocks
    # texts are kept of every entry a read witness carries: its CID makes it true, sound write or not
    fresh = Setup()
    assert fresh.log.writes_of(row, parsed(doc)) == ([], "read")
    assert fresh.view.db.entry_texts([entry]) == {entry: "The launch code is 0000."}


async def test_holds_a_recorded_write_is_checked_as_the_walk_checks_a_writer() -> None:
    """A recorded write is used only for the reader's area and namespace, user, a writer other
    than the reader itself, committed by the reader's batch, from a batch not refused; otherwise
    an origin finding (or the slow path, which finds the made-up root)."""
    writer = "0x" + "ee" * 32
    root = canonical_cid(str(made_up_memory(writer)[1]))
    question, _ = signed_task(MemoryQuestion, {"q": "What is the launch code?"})
    from supernet.sdk.chain.eip712 import hash_task_request

    reader_id = "0x" + hash_task_request(question, DOMAIN).hex()
    cases = {
        "sound": (WriteRow(NODE.address, root, None, "memory", NS, writer, USER.address, 1, 0), None),
        "namespace": (
            WriteRow(
                NODE.address,
                root,
                None,
                "memory",
                namespace_of(USER.address, "other"),
                writer,
                USER.address,
                1,
                0,
            ),
            "is a root of memory of",
        ),
        "area": (
            WriteRow(NODE.address, root, None, "files", NS, writer, USER.address, 1, 0),
            "is a root of files",
        ),
        "user": (
            WriteRow(NODE.address, root, None, "memory", NS, writer, "0x" + "11" * 20, 1, 0),
            "a task of another user",
        ),
        "later batch": (
            WriteRow(NODE.address, root, None, "memory", NS, writer, USER.address, 5, 0),
            NOT_COMMITTED,
        ),
        "other node": (
            WriteRow("0x" + "22" * 20, root, None, "memory", NS, writer, USER.address, 1, 0),
            NOT_COMMITTED,
        ),
    }
    for name, (row, expected) in cases.items():
        s = Setup()
        await s.commit(at=0)
        # a recorded write always comes from an indexed receipt of its writer (`WriteLog`)
        shown = ReceiptRow(row.batch_id, row.index, row.node.lower(), writer, row.user.lower(), "")
        s.view.db.index_receipts(row.batch_id, [shown], True)
        s.view.db.record_writes(row.batch_id, row.index, [row], "read")
        verdict = await reader_verdict(s.store, s.index, writer, batch_id=2)
        if expected is None:
            assert verdict.ok and verdict.findings == () and verdict.unverifiable is None, name
        else:
            assert any(expected in m for m in origin_messages(verdict)), (name, verdict.findings)
        if name == "sound":  # refused on chain since: the slow path (the refusal: a finding)
            s.view.db.forget_verified_roots(NODE.address)
            s.chain.refused.add((1, 0))
            s.view.db.record_refusals([(1, 0)])
            refused = await reader_verdict(s.store, s.index, writer, batch_id=2)
            assert any("never showed when claimed" in m for m in origin_messages(refused)), refused.findings
    # the reader naming itself: a recorded write of the reader's own task is never its origin
    s = Setup()
    await s.commit(at=0)
    own_root = canonical_cid(str(made_up_memory(reader_id)[1]))
    s.view.db.record_writes(
        1, 0, [WriteRow(NODE.address, own_root, None, "memory", NS, reader_id, USER.address, 1, 0)], "read"
    )
    verdict = await reader_verdict(s.store, s.index, reader_id, batch_id=2)
    assert any("names this task" in m for m in origin_messages(verdict)), verdict.findings


async def test_holds_unreadable_traces_go_to_availability_and_expire_after_the_window() -> None:
    """A trace not served is retried and then sent to the availability path (status
    ``unreadable``); an entry first seen after its window is ``expired`` (nothing read); a CID
    is canonicalised in the table, whatever base the trace used."""
    s = Setup()
    req, task = signed_task(Notes, {"text": "a note"})
    entry = carried_writer(s.store, req, task)
    del s.store.blocks[entry.trace_cid]
    b1 = await s.commit(entry, at=0)
    for _ in range(s.log.retries):  # (back-off of 0 s: every step is due)
        await s.log.step(chain_now=10)
    assert s.status(b1, 0) == "unreadable" and [n[:2] for n in s.avail.noted] == [(b1, 0)]

    late = Setup()
    b = await late.commit(carried_writer(late.store, req, task), at=0)
    await late.log.step(chain_now=WINDOW)
    assert (
        late.status(b, 0) == "expired"
        and late.view.db.write_of(NODE.address, str(memory_write(task)[1]["root"])) is None
    )
    root = memory_write(task)[1]["root"]
    s.view.db.record_writes(
        9,
        0,
        [WriteRow(NODE.address, root.encode("base32"), None, "memory", NS, task, USER.address, 9, 0)],
        "read",
    )
    assert s.view.db.write_of(NODE.address, root.encode("base58btc")) is not None
