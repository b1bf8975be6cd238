"""Adversarial review of the search ranking check (`supernet.validator.search_check`).

Every test starts from what the node's own kernel records (real embedder, real store, real
dispatcher) and runs the real `SearchCheck`, alone or inside the whole `Verifier`.
``test_bug_*`` tests PASS while the problem they describe exists (they assert the harmful
behaviour); ``test_holds_*`` tests record attacks that were tried and are stopped.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import itertools
import time
from pathlib import Path
from typing import Any

from supernet.node.agents.base import Agent
from supernet.node.agents.context import AgentContext
from supernet.node.kernel.access import NodePolicy
from supernet.node.kernel.kernel import Kernel, KernelConfig
from supernet.node.kernel.memory import ENTRY_TYPE, MAX_ENTRY_CHARS
from supernet.node.kernel.syscalls import TaskSpec
from supernet.sdk.formats.trace import MemorySearchEvent, Trace
from supernet.sdk.store.cids import compute_cid, decode_dag, encode_dag, link
from supernet.validator.evidence import Check
from supernet.validator.search_check import SCORE_TOLERANCE, SearchCheck

from tests.embedder import SharedMiniLM, score
from tests.unit.test_search_check import (
    FACTS,
    QUESTION,
    Recaller,
    answer,
    cheat_verdict,
    entry_texts,
    run,
    search_of,
    task,
)
from tests.unit.test_validator_attacks import USER, DictStore, registry, signed_task, verify
from tests.unit.test_validator_attacks3 import FakeEngine, NoEmbedder, clean, stand_in_kernel

# four notes whose scores for QUESTION fall ~0.005-0.009 apart: a chain no adjacent step of which
# exceeds the tolerance, while its ends are ~0.02 apart (measured with the protocol's embedder)
CHAIN = [
    "The spare key is under the flower pot.",
    "The spare key is under the blue flower pot in the garden.",
    "The spare key lies beneath the blue flower pot.",
    "Spare key: under the blue flower pot.",
]


# -- the order of the hits ----------------------------------------------------------------------------


async def test_defence_hit_order_drifts_one_tolerance_per_rank(tmp_path: Path) -> None:
    """FIXED (each hit is compared with the lowest score ranked above it). Attack (node): the order
    check compared each hit with the one just above it only
    (``score[hits[r]] > score[hits[r-1]] + tol``), so each rank may climb by up to the tolerance
    and the drifts add up: with k hits the one shown first may be (k-1) x 0.01 below the best.
    Here four notes whose true scores step ~0.005-0.009 apart are shown in exactly the reverse
    order, with their true scores: the worst (0.02 below the best, twice the tolerance) first, the
    best last. Verdict: clean.

    Impact: an agent that reads the first hit (most do: "the closest memory") is steered to an
    entry the validator itself ranks clearly worse; the longer the near-tie chain (a user's many
    similar notes: versions of one fact, old and new), the larger the drift.

    Fix: compare each hit with every hit above it, i.e. with the running minimum:
    ``score[hits[r]] > min(score[h] for h in hits[:r]) + tol`` is a finding (then no pair of hits
    is inverted by more than the tolerance, which is what the docs promise)."""
    scores = [score(QUESTION, t) for t in CHAIN]
    steps = [a - b for a, b in itertools.pairwise(scores)]
    assert all(0 < s < SCORE_TOLERANCE for s in steps), steps  # each step a "tie"
    assert scores[0] - scores[-1] > 1.5 * SCORE_TOLERANCE  # the ends are not

    req, task_id, task_input = task(CHAIN, k=4)
    honest = (await run(tmp_path, task_input, task_id)).trace
    assert honest["output"].split(" | ")[0] == CHAIN[0]

    def edit(ev: dict[str, Any], trace: dict[str, Any]) -> None:
        ev.update(hits=ev["hits"][::-1], scores=ev["scores"][::-1])  # true scores, worst first
        trace["output"] = answer(trace, ev["hits"])

    cheat = copy.deepcopy(honest)
    edit(search_of(cheat), cheat)
    assert cheat["output"].split(" | ")[0] == CHAIN[-1]
    verdict = await cheat_verdict(honest, req, task_id, edit)
    assert not verdict.ok, verdict  # was clean: the reversed ranking passed
    assert any("scores above a hit ranked before it" in f.message for f in verdict.findings)
    assert clean(await verify(DictStore(), req, task_id, honest, agents=(Recaller,)))  # control


async def test_holds_an_inversion_beyond_the_tolerance_between_neighbours(tmp_path: Path) -> None:
    """Control for the drift above: two neighbours inverted by more than the tolerance (the ends of
    the chain, shown worst first with nothing between) is a finding."""
    req, task_id, task_input = task([CHAIN[0], CHAIN[-1]], k=2)
    honest = (await run(tmp_path, task_input, task_id)).trace

    def edit(ev: dict[str, Any], trace: dict[str, Any]) -> None:
        ev.update(hits=ev["hits"][::-1], scores=ev["scores"][::-1])
        trace["output"] = answer(trace, ev["hits"])

    verdict = await cheat_verdict(honest, req, task_id, edit)
    assert not verdict.ok and any(
        "scores above a hit ranked before it" in f.message for f in verdict.findings
    )


# -- texts the embedder cannot tell apart -------------------------------------------------------------

PREAMBLE = (
    "Weekly project status report. Attendees: the whole team. Agenda: review of open tickets, "
    "budget, hiring, the roadmap and any other business. " * 12
)


async def test_defence_entries_alike_in_their_first_256_tokens(tmp_path: Path) -> None:
    """FIXED (an entry holds at most the 256 tokens the embedder reads: `MAX_ENTRY_TOKENS`, checked
    by the dispatcher, so the replay refuses alike, and by the search check). Attack (node):
    MiniLM truncates at 256 tokens, while an entry could hold 8192 characters (~2000 tokens). Two
    notes that share a long preamble and differ only after it (a status report template:
    "... decision: approved" / "... decision: rejected") got the same vector, so every query tied
    them and the check let the node show either: the opposite decision, verified clean.

    Now such a note is refused where it is stored (the agent gets the error and can split it), and
    a root listing one anyway is a finding."""
    notes = [PREAMBLE + "Decision: the launch is approved.", PREAMBLE + "Decision: the launch is rejected."]
    assert all(len(n) <= MAX_ENTRY_CHARS for n in notes)
    q = "What was decided about the launch?"
    assert score(q, notes[0]) == score(q, notes[1])  # the decision is past what the model reads
    _, task_id, task_input = task(notes, k=1, q=q)
    async with stand_in_kernel(tmp_path / "store", (Recaller,), embedder=SharedMiniLM()) as kernel:
        spec = TaskSpec(task_id=task_id, agent_id="recaller", input=task_input, user=USER.address, fee=100)
        refused = await kernel.run_task(spec)
    assert refused.status == "error" and "at most 256 tokens" in str(refused.error), refused

    # a root that lists such an entry anyway (written by hand): a finding, not a tie
    _, task_id, task_input = task(FACTS[:2], k=1)
    trace = Trace.from_dag((await run(tmp_path, task_input, task_id)).trace)
    store = DictStore()
    outcome = await SearchCheck(store, embedder=SharedMiniLM()).check(with_entries(trace, store, notes))
    assert [f.check for f in outcome.findings] == [Check.SEARCH], outcome
    assert "at most 256 tokens" in outcome.findings[0].message


# -- one search the validator cannot read hides the others --------------------------------------------


class Twin(Agent):
    """Remembers what it is given; optionally asks its child agent (own namespace) first; then
    answers with the texts of its own ``k`` closest memories."""

    agent_id = "twin"

    calls_agents = ("twinchild",)
    description = "Remembers, asks its child, recalls."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        for fact in input.get("remember", []):
            await ctx.memory.add(str(fact))
        child = ""
        if "child" in input:
            child = str(await ctx.agents.call("twinchild", input["child"]))
        own = ""
        if "q" in input:
            hits = await ctx.memory.search(str(input["q"]), k=int(input["k"]))
            own = " | ".join(h.text for h in hits)
        return f"{child} || {own}"


class TwinChild(Twin):
    agent_id = "twinchild"
    description = "The child: remembers and recalls in its own namespace."


TWINS = (Twin, TwinChild)
CHILD_FACTS = [
    "Grandma's birthday is on May 3rd.",
    "The boiler was serviced in June.",
    "Tom owes me 20 euros.",
]


async def test_defence_one_unreadable_search_hides_no_cheat_in_a_later_one(tmp_path: Path) -> None:
    """FIXED (every search is checked; unverifiable only when none has a finding). Attack (node):
    `SearchCheck.check` returned *unverifiable* at the first search whose root has
    an entry it cannot read, unless a finding came before, and never looks at the searches after
    it. A task whose agent first calls a child agent (its own namespace, e.g. a journal) that
    searches, then searches its own memory: the node cheats on the second search (the least
    related fact shown, true score) and makes sure the first cannot be read here (the child's
    entries withheld from the store; a validator that joined after they were written, or whose
    database does not reach back, has no other copy). Verdict: unverifiable, no finding; with the
    child's entries readable the same cheat is a finding, and a cheat in the *first* search is a
    finding whatever follows: the outcome depends on the order, not on what the node did.

    Impact: a cheat escapes (no accusation, no slash) whenever any earlier search of the task is
    unreadable to a validator; a node picks which validators to target by what they lack.

    Fix: check every search; keep the first ``LookupError`` as the reason, and return the findings
    of all searches when there are any (unverifiable only when none was found anywhere)."""
    config = KernelConfig(node_policy=NodePolicy())
    profile = Kernel(FakeEngine(), None, config, agents=registry(TWINS), embedder=NoEmbedder())
    agent_hash = profile.profile("twin").hash()
    reader_input = {"child": {"q": "When is grandma's birthday?", "k": 1}, "q": QUESTION, "k": 1}
    req, task_id = signed_task(Twin, reader_input, agent_hash)

    def spec(tid: str, agent: str, task_input: Any, signed: str | None = None) -> TaskSpec:
        return TaskSpec(tid, agent, task_input, user=USER.address, fee=100, agent_hash=signed)

    async with stand_in_kernel(tmp_path / "store", TWINS, embedder=SharedMiniLM()) as kernel:
        child_w = await kernel.run_task(spec(f"0x{1:064x}", "twinchild", {"remember": CHILD_FACTS}))
        own_w = await kernel.run_task(spec(f"0x{2:064x}", "twin", {"remember": FACTS}))
        reader = await kernel.run_task(spec(task_id, "twin", reader_input, agent_hash))
    assert child_w.status == own_w.status == reader.status == "ok", (child_w, own_w, reader)
    honest = reader.trace
    searches = [e for e in honest["events"] if e["kind"] == "memory.search"]
    assert len(searches) == 2 and searches[0]["namespace"] != searches[1]["namespace"]
    child_out, own_out = honest["output"].rsplit(" || ", 1)
    assert "birthday" in child_out and "spare key" in own_out

    # the cheat: the parent's own search shows the least related fact, with its true score
    own_texts = entry_texts(own_w.trace)
    worst = min(own_texts, key=lambda c: score(QUESTION, own_texts[c]))
    worst_raw = next(b for b in own_w.trace["witness"]["blocks"] if compute_cid(b, "dag-cbor") == worst)
    cheat = copy.deepcopy(honest)
    ev = [e for e in cheat["events"] if e["kind"] == "memory.search"][1]
    ev.update(hits=[link(worst)], scores=[score(QUESTION, own_texts[worst])])
    cheat["witness"]["blocks"] = [*cheat["witness"]["blocks"], worst_raw]
    cheat["output"] = f"{child_out} || {own_texts[worst]}"

    def store_with(*writers: Any) -> DictStore:
        store = DictStore()
        for w in writers:
            for raw in w.trace["witness"]["blocks"]:
                store.blocks[compute_cid(raw, "dag-cbor")] = raw
        return store

    assert clean(await verify(store_with(child_w, own_w), req, task_id, honest, agents=TWINS))  # control
    # the parent's entries all readable, the child's withheld: the cheat is still found (it went
    # unjudged: unverifiable, no finding)
    hidden = await verify(store_with(own_w), req, task_id, cheat, agents=TWINS)
    assert not hidden.ok and any("left out entry" in f.message for f in hidden.findings), hidden
    # the honest trace with the child's entries withheld: unverifiable, never accused
    unread = await verify(store_with(own_w), req, task_id, honest, agents=TWINS)
    assert unread.findings == () and unread.unverifiable is not None
    assert "memory.search at syscall" in unread.unverifiable and "not readable here" in unread.unverifiable
    # the child's entries readable too: the same cheat is a finding
    found = await verify(store_with(child_w, own_w), req, task_id, cheat, agents=TWINS)
    assert not found.ok and any("left out entry" in f.message for f in found.findings), found


# -- work a trace can make a validator do --------------------------------------------------------------


class SlowStore(DictStore):
    """A store whose blocks come slowly (a node serving its own blocks at a trickle)."""

    def __init__(self, delay_s: float) -> None:
        super().__init__()
        self.delay_s, self.reads, self.inflight, self.most = delay_s, 0, 0, 0

    async def get_block(self, cid: str) -> bytes:
        self.reads += 1
        self.inflight += 1
        self.most = max(self.most, self.inflight)
        try:
            await asyncio.sleep(self.delay_s)
            return self.blocks[cid]
        finally:
            self.inflight -= 1


def with_entries(trace: Trace, store: DictStore, texts: list[str]) -> Trace:
    """``trace`` whose search's root also lists entries of ``texts``, served only by ``store``."""
    ev = next(e for e in trace.events if isinstance(e, MemorySearchEvent))
    root_raw = next(b for b in trace.witness.blocks if compute_cid(b, "dag-cbor") == str(ev.root))
    made_up = []
    for text in texts:
        raw = encode_dag({"type": ENTRY_TYPE, "text": text, "metadata": {}, "model": "m", "embedding": b""})
        store.blocks[compute_cid(raw, "dag-cbor")] = raw
        made_up.append(link(compute_cid(raw, "dag-cbor")))
    root = decode_dag(root_raw)
    root["entries"] = [*root["entries"], *made_up]
    new_root = encode_dag(root)
    ev2 = dataclasses.replace(ev, root=compute_cid(new_root, "dag-cbor"))
    return dataclasses.replace(
        trace,
        events=tuple(ev2 if e is ev else e for e in trace.events),
        witness=dataclasses.replace(trace.witness, blocks=(*trace.witness.blocks, new_root)),
    )


async def test_defence_a_searched_root_costs_one_deadline_and_no_oversized_text(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """FIXED (reads in parallel, one deadline per trace, texts over `MAX_ENTRY_CHARS` refused).
    Attack (node): the check read every entry of a searched root it had no text for from the
    store, one after the other, each with its own 10 s timeout (`STORE_TIMEOUT_S`), with no bound
    on the total time or on an entry's size: an entry over `MAX_ENTRY_CHARS` (which no honest add
    can write) was accepted and embedded. A root whose origin is pending (`Verifier._stage` still
    runs the search check) listing N entries served at 9.9 s each cost N x 9.9 s in one receipt's
    stage, holding up its batch.

    Now: 12 entries served at 50 ms each are read several at a time; past `CHECK_DEADLINE_S` for
    the whole trace the search is unverifiable; a 200,000-character entry is a finding."""
    _, task_id, task_input = task(FACTS[:2], k=1)
    trace = Trace.from_dag((await run(tmp_path, task_input, task_id)).trace)

    store = SlowStore(0.05)
    forged = with_entries(trace, store, [f"made-up note {i}" for i in range(12)])
    started = time.monotonic()
    outcome = await SearchCheck(store, embedder=SharedMiniLM()).check(forged)
    elapsed = time.monotonic() - started
    assert outcome.unverifiable is None and outcome.findings == ()  # everything read and ranked
    assert store.reads == 12 and store.most > 1, (store.reads, store.most)  # in parallel
    assert elapsed < 12 * 0.05 + 5, elapsed

    from supernet.validator import search_check

    monkeypatch.setattr(search_check, "CHECK_DEADLINE_S", 0.3)
    slow = SlowStore(5.0)
    started = time.monotonic()
    late = await SearchCheck(slow, embedder=SharedMiniLM()).check(with_entries(trace, slow, ["a", "b"]))
    assert late.findings == () and late.unverifiable is not None and "not all read in" in late.unverifiable
    assert time.monotonic() - started < 3.0  # the deadline, not the store's 5 s per block

    big = DictStore()
    oversized = await SearchCheck(big, embedder=SharedMiniLM()).check(
        with_entries(trace, big, ["x" * 200_000])
    )
    assert [f.check for f in oversized.findings] == [Check.SEARCH]
    assert f"at most {MAX_ENTRY_CHARS} characters" in oversized.findings[0].message


# -- things that hold ----------------------------------------------------------------------------------


async def test_holds_k_zero_negative_and_huge(tmp_path: Path) -> None:
    """k <= 0 (no hits: nothing to rank, the replay wants none) and k far above the entries (the
    replay wants every entry): honest traces verify clean; a k=0 search that shows hits anyway
    diverges in the replay."""
    for k in (0, -5, 1 << 40):
        req, task_id, task_input = task(FACTS[:3], k=k)
        honest = (await run(tmp_path, task_input, task_id)).trace
        assert len(search_of(honest)["hits"]) == (0 if k <= 0 else 3)
        assert clean(await verify(DictStore(), req, task_id, honest, agents=(Recaller,)))
    req, task_id, task_input = task(FACTS[:3], k=0)
    honest = (await run(tmp_path, task_input, task_id)).trace
    full = (await run(tmp_path, task(FACTS[:3], k=1)[2], task(FACTS[:3], k=1)[1])).trace
    hit = search_of(full)["hits"][0]

    def edit(ev: dict[str, Any], trace: dict[str, Any]) -> None:
        ev.update(hits=[hit], scores=[search_of(full)["scores"][0]])
        trace["output"] = entry_texts(full)[str(hit)]

    verdict = await cheat_verdict(honest, req, task_id, edit)
    assert not verdict.ok


async def test_holds_non_finite_and_missing_scores(tmp_path: Path) -> None:
    """A recorded score of None (what NaN becomes: dag-cbor cannot carry NaN or inf at all), or a
    far-off finite one, for the right hit is a finding (never a pass, never a crash of the check)."""
    req, task_id, task_input = task(FACTS, k=1)
    honest = (await run(tmp_path, task_input, task_id)).trace
    for bad in (None, 1e308, -1e308):

        def edit(ev: dict[str, Any], trace: dict[str, Any], bad: Any = bad) -> None:
            ev.update(scores=[bad])

        verdict = await cheat_verdict(honest, req, task_id, edit)
        assert not verdict.ok and verdict.unverifiable is None, (bad, verdict)
        assert verdict.findings, bad


async def test_holds_hits_named_in_another_cid_spelling(tmp_path: Path) -> None:
    """A hit spelled in another multibase (base36/base58 CIDv1 of the same entry) is the same
    entry: shown once more than listed it is still caught by the count; the honest hit in another
    spelling is not accused."""
    from multiformats import CID

    req, task_id, task_input = task(FACTS, k=2)
    honest = (await run(tmp_path, task_input, task_id)).trace
    first = str(search_of(honest)["hits"][0])

    def respell(ev: dict[str, Any], trace: dict[str, Any]) -> None:
        ev.update(hits=[CID.decode(first).encode("base58btc"), *ev["hits"][1:]])

    verdict = await cheat_verdict(honest, req, task_id, respell)
    assert clean(verdict), verdict.findings

    def twice(ev: dict[str, Any], trace: dict[str, Any]) -> None:
        ev.update(hits=[ev["hits"][0], CID.decode(first).encode("base58btc")], scores=[ev["scores"][0]] * 2)
        trace["output"] = " | ".join([entry_texts(trace)[first]] * 2)

    verdict = await cheat_verdict(honest, req, task_id, twice)
    assert not verdict.ok
