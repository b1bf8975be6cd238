"""An adversarial review of "where a task's roots come from" (`supernet.validator.origin_check`).

Each test was written as an attack that passed on the first version of the check; each is now
closed, and asserts the defence (``test_defence_*``; the docstring says what the attack was and
how it was closed). The parts are real (the node's kernel on an embedded store, the
node's executor, the validator's database, receipt index and whole `Verifier`); as in
``tests/unit/test_root_origins.py``, the batches a validator's follower would record from the chain
are recorded into its database directly (`Chain`), with manifests served from memory.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

from supernet.node.agents.base import Agent
from supernet.node.agents.context import AgentContext
from supernet.node.kernel.access import namespace_of
from supernet.node.service.db import Database
from supernet.node.service.kernel_executor import KernelExecutor
from supernet.node.service.ports import Job
from supernet.sdk.chain.eip712 import TaskRequest
from supernet.sdk.chain.merkle import ReceiptTree
from supernet.sdk.formats.manifest import ManifestEntry
from supernet.sdk.formats.profile import AgentProfile
from supernet.sdk.formats.trace import AgentRef, Limits
from supernet.sdk.store.cids import compute_cid, encode_dag, link
from supernet.validator import origin_check
from supernet.validator.evidence import Check
from supernet.validator.tool_check import RegistryRunner
from supernet.validator.verifier import Manifest, Verifier

from tests.embedder import score
from tests.unit.test_root_origins import NOT_COMMITTED, OTHER, Chain, memory_answer, spec
from tests.unit.test_validator_attacks import (
    DOC_LIMITS,
    DOMAIN,
    MODEL_ID,
    NODE,
    USER,
    DictStore,
    StandInScorer,
    commit_entry,
    registry,
    signed_task,
    trace_doc,
    verify,
)
from tests.unit.test_validator_attacks3 import (
    AGENTS,
    FakeEngine,
    NoEmbedder,
    Rememberer,
    SlowNotes,
    clean,
    node_task,
    stand_in_kernel,
)

MEMORY_ROOT = "supernet/memory-root"
FS_ROOT = "supernet/fs-root"
LAUNCH = "The launch code is 0000."


# -- helpers ---------------------------------------------------------------------------------------


def block(obj: dict[str, Any]) -> tuple[bytes, str]:
    raw = encode_dag(obj)
    return raw, compute_cid(raw, "dag-cbor")


def entry_block(text: str) -> tuple[bytes, str]:
    """A memory entry as the replay reads it (text and metadata; the embedding is never checked)."""
    return block({"type": "supernet/memory-entry", "text": text, "metadata": {}})


def memory_root(ns: str, entries: list[str], prev: str | None, writer: str | None) -> tuple[bytes, str]:
    """A memory root block exactly as `NamespaceRoots.commit` writes it."""
    return block(
        {
            "type": MEMORY_ROOT,
            "namespace": ns,
            "entries": [link(e) for e in entries],
            "prev": None if prev is None else link(prev),
            "writer": writer,
        }
    )


def add_event(ns: str, entry: str, root: str, prev: str | None) -> dict[str, Any]:
    return {
        "kind": "memory.add", "namespace": ns, "entry": link(entry), "root": link(root),
        "prev_root": None if prev is None else link(prev),
    }  # fmt: skip


def search_event(
    ns: str, query: str, root: str | None, hits: list[str], texts: list[str] | None = None
) -> dict[str, Any]:
    """A search of ``root`` returning ``hits`` (entries of ``texts``, default the query itself),
    with their true scores."""
    return {
        "kind": "memory.search", "namespace": ns, "query": query, "k": 1,
        "root": None if root is None else link(root), "hits": [link(h) for h in hits],
        "scores": [score(query, t) for t in (texts or [query] * len(hits))],
    }  # fmt: skip


def verifier(store: DictStore, agents: tuple[type[Agent], ...], origins: Any) -> Verifier:
    return Verifier(
        store, StandInScorer(), RegistryRunner(store), DOMAIN, "0x" + "44" * 20,  # type: ignore[arg-type]
        agents=registry(agents), origins=origins,
    )  # fmt: skip


async def verify_entry(
    store: DictStore, entry: ManifestEntry, agents: tuple[type[Agent], ...], origins: Any, batch_id: int
) -> Any:
    """The whole verifier on an already built manifest entry (entry 0 of ``batch_id``)."""
    return await verifier(store, agents, origins).verify(batch_id, NODE.address, 0, Manifest({0: entry}))


def remembered(
    task_id: str,
    fact: str,
    prev: str | None,
    prev_entries: list[str],
    hit: str | None = None,
    hit_text: str | None = None,
) -> tuple[list[dict[str, Any]], str, list[bytes]]:
    """The events of a `Rememberer` task (add ``fact`` on top of root ``prev``, then a search of
    the new root returning ``hit``, default the fact itself): (the events, its new root, its
    blocks: the fact's entry, the new root). The new root lists ``prev_entries``, then the fact."""
    ns = namespace_of(USER.address, "rememberer")
    fact_raw, fact_cid = entry_block(fact)
    root_raw, root_cid = memory_root(ns, [*prev_entries, fact_cid], prev, task_id)
    hit = hit or fact_cid
    events = [
        add_event(ns, fact_cid, root_cid, prev),
        search_event(ns, fact, root_cid, [hit], [hit_text or fact]),
    ]
    return events, root_cid, [fact_raw, root_raw]


def honest_writer(store: DictStore) -> tuple[str, ManifestEntry, list[bytes]]:
    """W: the user's `Rememberer` task "Buy milk." on an empty memory, put in ``store`` as an honest
    node commits it: (its task id, its manifest entry, its blocks: the fact's entry, its new root)."""
    w_input = {"fact": "Buy milk."}
    req_w, w = signed_task(Rememberer, w_input)
    events, _, blocks = remembered(w, w_input["fact"], None, [])
    doc = trace_doc(Rememberer, w, USER.address, w_input, events, w_input["fact"], blocks=blocks)
    return w, commit_entry(store, req_w, w, doc), blocks


async def ask_launch_code(
    store: DictStore,
    chain: Chain,
    root: tuple[bytes, str],
    entries: list[str],
    fake: tuple[bytes, str],
) -> Any:
    """T, the user's next task (batch 2): "What is the launch code?" on top of ``root`` (its block
    and CID, listing ``entries``), answered from the fake memory entry ``fake``: the verdict."""
    t_input = {"fact": "What is the launch code?"}
    req_t, t = signed_task(Rememberer, t_input)
    events, _, blocks = remembered(t, t_input["fact"], root[1], entries, hit=fake[1], hit_text=LAUNCH)
    doc_t = trace_doc(
        Rememberer, t, USER.address, t_input, events, LAUNCH, blocks=[root[0], fake[0], *blocks]
    )
    return await verify(store, req_t, t, doc_t, agents=(Rememberer,), origins=chain.index(), batch_id=2)


# -- 1. made-up roots the validator accepts ---------------------------------------------------------


async def test_defence_a_writer_trace_cid_must_be_the_committed_trace() -> None:
    """CLOSED (the index now keeps only entries whose ``traceCid`` is the receipt's ``traceHash``,
    and the writer's trace must be its task's). The attack: a manifest entry's ``traceCid`` is not
    covered by the batch's Merkle root (only the
    receipt's leaf, with its ``traceHash``, is), and `ReceiptIndex` records ``e.trace_cid`` without
    `check_trace_hash`. So the node commits an honest receipt W (its leaf binds W's honest trace)
    but, in the manifest, points W's ``traceCid`` at a forged "trace" that holds nothing but a
    ``memory.add`` producing a root it made up (listing a fake memory, no ``prev``, naming W). A
    later task T of the user starts from that root and answers from the fake memory: the origin
    check reads the forged document as "W's committed trace", finds the write, and T verifies
    clean. Only W's own sampling catches the mismatch (``traceHash``), and the forged document is
    never replayed (it need not even be a consistent trace).
    Fix: index only entries whose ``trace_cid`` matches ``receipt.trace_hash`` (`check_trace_hash`),
    or check it in `check_origins` before reading the writer's trace; also check that the writer's
    trace is the trace of that task (``task_id`` = writer, ``user`` = the receipt's user)."""
    store, chain = DictStore(), Chain()
    ns = namespace_of(USER.address, "rememberer")
    w_input = {"fact": "Buy milk."}
    req_w, w = signed_task(Rememberer, w_input)
    events, _, blocks = remembered(w, w_input["fact"], None, [])
    honest_w = trace_doc(Rememberer, w, USER.address, w_input, events, w_input["fact"], blocks=blocks)
    entry_w = commit_entry(store, req_w, w, honest_w)
    assert clean(await verify_entry(store, entry_w, (Rememberer,), chain.index(), 1))  # control
    # the made-up root, and a forged "trace" of W that writes it (never replayed by anyone)
    fake_raw, fake = entry_block(LAUNCH)
    made_up_raw, made_up = memory_root(ns, [fake], None, w)
    forged = trace_doc(Rememberer, w, USER.address, w_input, [add_event(ns, fake, made_up, None)], "x")
    forged_entry = dataclasses.replace(entry_w, trace_cid=store.put(forged))
    assert forged_entry.leaf == entry_w.leaf  # the committed root is the same either way
    chain.commit(forged_entry)
    # T: the user's next task, from the made-up root: "What is the launch code?" -> the fake memory
    verdict = await ask_launch_code(store, chain, (made_up_raw, made_up), [fake], (fake_raw, fake))
    origin = [f for f in verdict.findings if f.check == Check.ORIGIN]
    assert len(origin) == 1, verdict.findings
    assert NOT_COMMITTED in origin[0].message  # W's entry, read through a forged CID, is no writer
    # (the search is caught on its own too: T's own fact, the question itself, is the closest entry)
    assert {f.check for f in verdict.findings} == {Check.ORIGIN, Check.SEARCH}, verdict.findings
    # only sampling W itself shows the entry's trace is not its receipt's
    found_w = await verify_entry(store, forged_entry, (Rememberer,), chain.index(), 1)
    assert not found_w.ok and Check.TRACE in {f.check for f in found_w.findings}, found_w.findings


async def test_defence_a_made_up_root_cannot_be_laundered_through_a_writer() -> None:
    """CLOSED (the check now walks every root below a first root, down to one it already found
    sound, each root's write checked against its writer's committed trace). The attack: the node commits
    W, a real signed task of the user, whose trace is consistent except that its first memory root
    is made up (it names no writer; it lists a fake memory): W's replay is clean and its output is
    even the honest one, only W's own origin check fails. Every later task T starting from W's new
    root passes the origin check, because it looks one level up only: W is committed, of the
    user, and its trace writes the root. So the fabrication is caught only if W itself is sampled
    (within W's window); once W's window is over, every task built on it is clean for good.
    Fix: follow origins transitively: check the writer's own first roots too (memoised per writer
    in the validator's database, so each committed task's origin is judged once), or accuse T of
    answering from a root whose writer is itself an origin fault."""
    store, chain = DictStore(), Chain()
    ns = namespace_of(USER.address, "rememberer")
    fake_raw, fake = entry_block(LAUNCH)
    r0_raw, r0 = memory_root(ns, [fake], None, None)  # made up: no writer
    w_input = {"fact": "Buy milk."}
    req_w, w = signed_task(Rememberer, w_input)
    events, r1, blocks = remembered(w, w_input["fact"], r0, [fake])
    doc_w = trace_doc(
        Rememberer, w, USER.address, w_input, events, w_input["fact"], blocks=[r0_raw, fake_raw, *blocks]
    )
    entry_w = commit_entry(store, req_w, w, doc_w)
    chain.commit(entry_w)
    checked_w = await verify_entry(store, entry_w, (Rememberer,), chain.index(), 1)
    assert [f.check for f in checked_w.findings] == [Check.ORIGIN]  # W itself, if sampled: caught
    assert "names no writer" in checked_w.findings[0].message
    r1_raw = next(b for b in blocks if compute_cid(b, "dag-cbor") == r1)
    entries = [fake, compute_cid(blocks[0], "dag-cbor")]
    verdict = await ask_launch_code(store, chain, (r1_raw, r1), entries, (fake_raw, fake))
    assert [f.check for f in verdict.findings] == [Check.ORIGIN], verdict.findings
    assert "down its history" in verdict.findings[0].message
    assert "names no writer" in verdict.findings[0].message


class Lister(Agent):
    """Looks at the user's files, then answers from the user's memory (two namespaces' roots)."""

    agent_id = "lister"
    description = "Lists the user's files, then answers a question from memory."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        await ctx.storage.list()
        hits = await ctx.memory.search(str(input["q"]), k=1)
        return hits[0].text if hits else "unknown"


LISTER_LIMITS = {**DOC_LIMITS, "storage": True, "max_file_bytes": 65536}


def lister_task(task_input: Any) -> tuple[TaskRequest, str]:
    profile = AgentProfile.of(
        AgentRef(Lister.agent_id, Lister.code_hash()), Limits.from_dag(LISTER_LIMITS, "limits"), [], []
    ).hash()
    return signed_task(Lister, task_input, profile)


def lister_doc(task_id: str, task_input: Any, files_writer: str | None) -> dict[str, Any]:
    """A `Lister` trace from a file root naming ``files_writer`` and a memory root naming no
    writer at all (made up), answering from the made-up memory."""
    ns = namespace_of(USER.address, Lister.agent_id)
    fs_raw, fs = block({"type": FS_ROOT, "namespace": ns, "files": {}, "prev": None, "writer": files_writer})
    fake_raw, fake = entry_block(LAUNCH)
    mem_raw, mem = memory_root(ns, [fake], None, None)
    events = [
        {"kind": "storage.list", "namespace": ns, "root": link(fs)},
        search_event(ns, task_input["q"], mem, [fake], [LAUNCH]),
    ]
    doc = trace_doc(
        Lister, task_id, USER.address, task_input, events, LAUNCH, blocks=[fs_raw, mem_raw, fake_raw]
    )
    doc["limits"] = dict(LISTER_LIMITS)
    return doc


async def test_defence_one_unresolvable_root_never_shields_another_made_up_root() -> None:
    """CLOSED (every first root is judged; unverifiable only when none is found faulty). The
    attack: `check_origins` walks the first roots in sorted order (``files`` before ``memory``)
    and returns *unverifiable* at the first root whose writer's trace (or a manifest) cannot be
    read, without looking at the remaining roots. A node answers from a memory root it made up
    that names no writer at all (a plain fault, no index or store needed to see it), and makes the
    task first list the user's files from a root naming a committed task W whose trace it does not
    serve (here W's ``traceCid`` points at a block nobody has, which the unbound ``traceCid`` allows
    at no cost; withholding W's real trace works as well). The verdict is unverifiable with no
    finding, which the service records as checked and never challenges or retries.
    Fix: check every root first and collect findings; only when none is found report the
    unreadable ones as unverifiable (e.g. collect ``unverifiable`` reasons and continue the loop)."""
    store, chain = DictStore(), Chain()
    w, entry_w, _ = honest_writer(store)
    nowhere = compute_cid(encode_dag({"a block": "nobody serves"}), "dag-cbor")
    chain.commit(dataclasses.replace(entry_w, trace_cid=nowhere))
    t_input = {"q": "What is the launch code?"}
    req_t, t = lister_task(t_input)
    # control: with a file root naming no writer, both made-up roots are found
    control = await verify(
        store, req_t, t, lister_doc(t, t_input, None), agents=(Lister,), origins=chain.index(), batch_id=2
    )
    assert [f.check for f in control.findings] == [Check.ORIGIN, Check.ORIGIN], control.findings
    assert all("names no writer" in f.message for f in control.findings)
    # the attack: the same made-up memory root, behind a file root naming W
    verdict = await verify(
        store, req_t, t, lister_doc(t, t_input, w), agents=(Lister,), origins=chain.index(), batch_id=2
    )
    assert any("names no writer" in f.message for f in verdict.findings), verdict.findings
    assert all(f.check == Check.ORIGIN for f in verdict.findings) and verdict.unverifiable is None


async def test_defence_a_wholly_posted_manifest_is_complete() -> None:
    """CLOSED (a posted manifest whose entries cover the batch's count is complete). The attack: a made-
    up root naming a writer that is not in the index is *unverifiable* (never an
    accusation) while any manifest of the node up to the task's batch is unreadable, and a batch
    whose manifest is only available as entries posted on chain (`Challenger.manifest` falls back
    to `posted`, ``tree`` None) is indexed with ``complete = 0`` forever, even when the posted
    entries are all of it. So a node withholds one old batch's manifest and answers the
    availability challenges of its sampled entries (or a batch nobody sampled: then no challenge
    at all, and the manifest is never read): from then on every made-up root naming a request hash
    it invented is unverifiable, for every later task. The service records such a verdict as
    checked (``ok``) and finishes the batch, so it is never retried, nor sent to availability
    (``missing`` is false). Fix: count a posted manifest whose entries cover ``count`` as complete;
    have the root name its writer's batch (and index) so only that one manifest matters (a writer
    in an unreadable batch then leads to an availability challenge for that entry); and retry an
    origin-unverifiable receipt later instead of recording it as checked."""
    store, chain = DictStore(), Chain()
    _, entry_w, _ = honest_writer(store)
    batch = chain.commit(entry_w, served=False)
    tree = ReceiptTree([entry_w.leaf])
    chain.manifests[batch] = Manifest({0: entry_w}, proofs={0: tuple(tree.proof_at(0))})  # all posted
    invented = "0x" + "ab" * 32
    verdict = await memory_answer(store, chain, invented, batch_id=2)
    assert any(NOT_COMMITTED in f.message for f in verdict.findings), verdict.findings
    assert chain.db._all("SELECT complete FROM indexed WHERE batch_id = ?", batch) == [(1,)]


async def test_defence_unreadable_manifests_are_retried_with_back_off() -> None:
    """CLOSED (an unreadable manifest is tried again only after a back-off, 30 s doubling to an
    hour, by the validator's one index). The attack (validator work a node controls):
    `ReceiptIndex.locate` re-reads *every* unreadable
    manifest of the node up to the task's batch each time a writer is not found: no negative
    cache, no back-off. In the service each such read is a store fetch (that may time out) then a
    scan of the chain's availability logs (`Challenger.posted`, not cached). A node with ``N``
    withheld manifests and tasks naming invented writers makes every checked task cost ``N`` such
    reads per first root, forever (and each read is on the verifying path of one receipt).
    Fix: remember an unreadable batch with a retry time (back-off) and judge with what is readable
    meanwhile; name the writer's batch in the root so that one manifest is read, not all."""
    store, chain = DictStore(), Chain()
    fetched: list[int] = []
    serve = chain.manifest

    async def counting(batch: Any) -> Manifest:
        fetched.append(batch.batch_id)
        return await serve(batch)

    chain.manifest = counting  # type: ignore[method-assign]
    withheld = 25
    for i in range(withheld):
        req, some = signed_task(Rememberer, {"fact": f"note {i}"})
        doc = trace_doc(Rememberer, some, USER.address, {"fact": f"note {i}"}, [], "x")
        chain.commit(commit_entry(store, req, some, doc), served=False)
    shared = chain.index()  # the service's one index
    chain.index = lambda: shared  # type: ignore[method-assign]
    for _ in range(3):
        verdict = await memory_answer(store, chain, "0x" + "ab" * 32, batch_id=withheld + 1)
        assert verdict.unverifiable is not None and verdict.findings == ()
    assert len(fetched) == withheld  # read once; the next looks wait for the back-off


async def test_defence_the_index_checks_each_entry_once(monkeypatch: Any) -> None:
    """BOUNDED (each batch is read and its entries checked once, in a worker thread, and kept in
    the database; a node pays for the entries it commits). The concern (index work): To find one writer,
    `ReceiptIndex.locate` reads every not yet indexed
    batch of the node up to the task's batch and runs `check_receipt` (two signature recoveries)
    on *every* entry, synchronously on the validator's event loop, although only the writer's
    entry matters. A node that pads its batches with junk entries (any bytes as the request
    signature: the check runs before the entry is dropped) makes the validator's first
    origin lookup on it do work in the total size of all its batches, on the verifying path.
    Fix: index entries by request hash without checking them, and run `check_receipt` only on the
    entry a lookup returns (in a thread), caching the result per entry."""
    calls: list[str] = []
    real = origin_check.check_receipt

    def counting(entry: Any, node: str, domain: Any) -> Any:
        calls.append(entry.receipt.request_hash.hex())
        return real(entry, node, domain)

    monkeypatch.setattr(origin_check, "check_receipt", counting)
    store, chain = DictStore(), Chain()
    w_input = {"fact": "Buy milk."}
    req_w, w = signed_task(Rememberer, w_input)
    events, root, blocks = remembered(w, w_input["fact"], None, [])
    entry_w = commit_entry(
        store,
        req_w,
        w,
        trace_doc(Rememberer, w, USER.address, w_input, events, w_input["fact"], blocks=blocks),
    )
    junk = [
        dataclasses.replace(
            entry_w, receipt=dataclasses.replace(entry_w.receipt, request_hash=bytes([i]) * 32)
        )
        for i in range(1, 41)
    ]
    junk = [dataclasses.replace(e, leaf=e.receipt.leaf()) for e in junk]
    chain.commit(entry_w, *junk)
    for _ in range(4):
        chain.commit(*junk)
    t_input = {"fact": "Buy bread."}
    req_t, t = signed_task(Rememberer, t_input)
    w_root_raw = blocks[1]
    events, _, t_blocks = remembered(t, t_input["fact"], root, [compute_cid(blocks[0], "dag-cbor")])
    doc_t = trace_doc(
        Rememberer,
        t,
        USER.address,
        t_input,
        events,
        t_input["fact"],
        blocks=[w_root_raw, blocks[0], *t_blocks],
    )
    verdict = await verify(store, req_t, t, doc_t, agents=(Rememberer,), origins=chain.index(), batch_id=6)
    assert clean(verdict), verdict.findings
    assert len(calls) == 1 + 5 * 40  # every entry of every batch, for one writer in batch 1
    again = await verify(store, req_t, t, doc_t, agents=(Rememberer,), origins=chain.index(), batch_id=6)
    assert clean(again) and len(calls) == 1 + 5 * 40  # and never again


# -- 2. an honest node framed ----------------------------------------------------------------------

GATE: dict[str, asyncio.Event] = {}


class Lingerer(Agent):
    """Saves the user's note (if given), lingers (as a long model call or a tool waiting for the
    user's confirmation would), then reads the note back."""

    agent_id = "lingerer"
    description = "Saves a note, takes its time, reads the note."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        if "text" in input:
            await ctx.storage.put("notes.txt", str(input["text"]))
        if input.get("linger"):
            await GATE["open"].wait()
        try:
            return (await ctx.storage.get("notes.txt")).decode()
        except Exception as exc:
            return f"no notes ({type(exc).__name__})"


MY_AGENTS = (*AGENTS, Lingerer)


def my_task(agent: type[Agent], task_input: Any) -> tuple[TaskRequest, str]:
    """`signed_task` for ``agent`` under the profile a `stand_in_kernel` of ``MY_AGENTS`` gives it."""
    from supernet.node.kernel.kernel import Kernel

    engine: Any = FakeEngine()
    kernel = Kernel(engine, None, agents=registry(MY_AGENTS), embedder=NoEmbedder())
    return signed_task(agent, task_input, kernel.profile(agent.agent_id).hash())


async def test_defence_a_crash_never_persists_an_unreceipted_write(
    tmp_path: Path,
) -> None:
    """CLOSED (`Kernel.namespace_roots` gives a user's namespaces as a still-running task found
    them, until its receipt is being stored). The attack (an honest node accused):
    `KernelExecutor._save_roots` persists
    `Kernel.namespace_roots()`: the roots of *every* namespace, including those a still-running,
    not yet receipted task of another user has just written. Task A of the user writes a note and
    lingers (a long model call; a user can stretch it at will with a tool call waiting for a
    confirmation it never gives); meanwhile any other task ends and saves the roots, A's write
    among them. The node crashes (power loss, OOM kill) before A ends. After the restart the
    user's root is A's write, which names A, a task without a receipt:
    (a) the worker resumes A (its deadline is ahead): the rerun starts from its own earlier write,
        and its first root names the task itself: an origin finding on an honest trace;
    (b) or A is refused (deadline passed) and the user's next task B reads A's write: its first
        root names a task no batch holds: an origin finding too (and B shows the user a write of a
        task that never succeeded).
    Either way the honest node is challenged and slashed, at no cost to the user.
    Fix: persist, for a user whose namespaces a running task holds, the roots that task found
    (`TaskState.marked`), not its uncommitted writes (e.g. `namespace_roots()` returns the marked
    roots for held users); on restore, a resumed task then starts from the committed state."""
    db = Database.open(tmp_path / "node.sqlite3")
    ns = namespace_of(USER.address, Lingerer.agent_id)
    GATE["open"] = asyncio.Event()
    a_input = {"text": "pay Bob 5", "linger": True}
    req_a, a = my_task(Lingerer, a_input)

    def job(task_id: str, user: str, task_input: Any) -> Job:
        return Job(task_id=task_id, user=user, agent=Lingerer.agent_id, model_id=MODEL_ID, input=task_input)

    async with stand_in_kernel(tmp_path / "store", MY_AGENTS) as kernel:
        executor = KernelExecutor(kernel, "model", 100, db)
        run_a = asyncio.create_task(executor.run(job(a, USER.address, a_input), lambda _t: None))
        for _ in range(500):
            if kernel.storage.roots.root(ns) is not None:
                break
            await asyncio.sleep(0.01)
        written_by_a = kernel.storage.roots.root(ns)
        assert written_by_a is not None and not run_a.done()
        # another user's task ends meanwhile: the roots go to disk, A's uncommitted write with them
        await executor.run(job("0x" + "cd" * 32, OTHER.address, {"text": "hi"}), lambda _t: None)
        on_disk_at_crash = db.load_roots()
        run_a.cancel()  # the crash: A never ends (what the stop below undoes in memory stays on disk)
    assert on_disk_at_crash is not None
    assert ns not in on_disk_at_crash.roots["storage"]  # A's write waits for A's receipt
    GATE["open"].set()

    # (a) restart, A resumed: it starts from the root it found, with no trace of its first run
    after_crash = Database.open(tmp_path / "a.sqlite3")
    after_crash.save_roots(on_disk_at_crash)
    async with stand_in_kernel(tmp_path / "store", MY_AGENTS) as kernel:
        KernelExecutor(kernel, "model", 100, after_crash)  # restores the roots
        rerun = await kernel.run_task(spec(req_a, a, Lingerer.agent_id, a_input))
    assert rerun.status == "ok" and rerun.trace["events"][0]["prev_root"] is None, rerun.error
    verdict = await verify(
        DictStore(), req_a, a, dict(rerun.trace), agents=MY_AGENTS, origins=Chain().index()
    )
    assert clean(verdict), verdict.findings

    # (b) restart, A refused: the user's next task does not see A's write
    after_crash = Database.open(tmp_path / "b.sqlite3")
    after_crash.save_roots(on_disk_at_crash)
    b_input = {"read": True}
    req_b, b = my_task(Lingerer, b_input)
    async with stand_in_kernel(tmp_path / "store", MY_AGENTS) as kernel:
        KernelExecutor(kernel, "model", 100, after_crash)
        out_b = await kernel.run_task(spec(req_b, b, Lingerer.agent_id, b_input))
    assert out_b.output == "no notes (FileNotFoundError)"
    verdict = await verify(
        DictStore(), req_b, b, dict(out_b.trace), agents=MY_AGENTS, origins=Chain().index()
    )
    assert clean(verdict), verdict.findings


async def test_defence_concurrent_tasks_of_one_user_commit_in_order_and_verify(tmp_path: Path) -> None:
    """DEFENCE. Six tasks of one user started together on one namespace: the kernel serialises
    them, each receipt is stored (``on_success``) before the next task touches the namespace, and
    batches are cut in that order (one task per batch here, the strictest case): every task's
    first root names the task before it, committed in an earlier batch, and all verify clean."""
    stored: list[Any] = []

    async def store_receipt(outcome: Any) -> None:
        await asyncio.sleep(0.01)  # a slow database
        stored.append(outcome)

    inputs = [{"text": f"note {i}"} for i in range(6)]
    signed = [node_task(SlowNotes, x) for x in inputs]
    async with stand_in_kernel(tmp_path / "store", AGENTS) as kernel:
        runs = [
            kernel.submit(spec(req, tid, SlowNotes.agent_id, x), on_success=store_receipt)
            for x, (req, tid) in zip(inputs, signed, strict=True)
        ]
        await asyncio.gather(*(r.outcome() for r in runs))
    store, chain = DictStore(), Chain()
    by_id = {tid: req for req, tid in signed}
    for outcome in stored:  # the order the receipts were stored: the batcher's order
        req = by_id[outcome.task_id]
        batch = chain.commit(commit_entry(store, req, outcome.task_id, outcome.trace))
        verdict = await verify(
            store, req, outcome.task_id, outcome.trace, agents=AGENTS, origins=chain.index(), batch_id=batch
        )
        assert clean(verdict), verdict.findings


async def test_defence_a_withheld_root_below_never_shields_a_writer() -> None:
    """CLOSED (found re-reading the walk). The node commits W, a real signed task of the user,
    whose trace writes R on top of a root R0 it made up, and serves R0 nowhere (not in W's witness,
    not in the store): the walk could not read R0 and left every task on R unverifiable, never
    accused, so only W's own sampling would catch it. A writer's committed trace carries both roots
    of its write (its replay reads them), so a root below that it does not carry is its fault: an
    origin finding on the task that reads R."""
    store, chain = DictStore(), Chain()
    ns = namespace_of(USER.address, "rememberer")
    fake_raw, fake = entry_block(LAUNCH)
    _, r0 = memory_root(ns, [fake], None, None)  # made up, and never served
    w_input = {"fact": "Buy milk."}
    req_w, w = signed_task(Rememberer, w_input)
    events, r1, blocks = remembered(w, w_input["fact"], r0, [fake])
    doc_w = trace_doc(
        Rememberer, w, USER.address, w_input, events, w_input["fact"], blocks=[fake_raw, *blocks]
    )
    chain.commit(commit_entry(store, req_w, w, doc_w))
    r1_raw = next(b for b in blocks if compute_cid(b, "dag-cbor") == r1)
    entries = [fake, compute_cid(blocks[0], "dag-cbor")]
    verdict = await ask_launch_code(store, chain, (r1_raw, r1), entries, (fake_raw, fake))
    assert [f.check for f in verdict.findings] == [Check.ORIGIN], verdict.findings
    assert "does not carry the root it wrote on top of" in verdict.findings[0].message
