"""Which memories a search shows the agent (`supernet.validator.search_check`).

Replay checks a search's hits are entries of its root; the ranking was the node's word, so a node
could show an agent the memories of its choosing (the entries least related to the question, an
old note instead of the newest) with a trace that replays clean. Every attack here starts from
what the node's own kernel records (real embedder, real store, real dispatcher) and makes the
change a rational node would; the validator ranks the root again with its own embedding.

The controls: honest traces verify clean, also from a node embedding in bfloat16 (scores a few
thousandths off float32), with entries stored twice, and with ties.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from supernet.node.agents.base import Agent
from supernet.node.agents.context import AgentContext
from supernet.node.faults import FaultInjector, FaultKind
from supernet.node.kernel.access import NodePolicy
from supernet.node.kernel.embeddings import MiniLMEmbedder
from supernet.node.kernel.kernel import Kernel, KernelConfig
from supernet.node.kernel.syscalls import TaskSpec
from supernet.sdk.formats.trace import Trace
from supernet.sdk.store.cids import compute_cid, encode_dag, link
from supernet.validator.db import Database
from supernet.validator.evidence import Check
from supernet.validator.search_check import SCORE_TOLERANCE, SearchCheck, protocol_embedder

from tests.embedder import SharedMiniLM
from tests.unit.test_validator_attacks import USER, DictStore, registry, signed_task, verify
from tests.unit.test_validator_attacks3 import FakeEngine, NoEmbedder, clean, stand_in_kernel

FACTS = [
    "The spare key is under the blue flower pot.",
    "My dentist appointment is on Tuesday at 3 pm.",
    "The wifi password is on the fridge.",
    "Our cat is called Miso and she hates the vacuum.",
    "The car insurance renews in March.",
]
QUESTION = "Where is the spare key?"


class Recaller(Agent):
    """Remembers the facts it is given, then answers with the texts of the ``k`` closest memories."""

    agent_id = "recaller"
    description = "Remembers facts and recalls the closest ones."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        for fact in input.get("remember", []):
            await ctx.memory.add(str(fact))
        hits = await ctx.memory.search(str(input["q"]), k=int(input["k"]))
        return " | ".join(h.text for h in hits)


def task(remember: list[str], k: int = 2, q: str = QUESTION) -> tuple[Any, str, dict[str, Any]]:
    """The user's signed request for a `Recaller` task (as the stand-in kernel lists the agent)."""
    task_input = {"remember": remember, "q": q, "k": k}
    profile = Kernel(
        FakeEngine(), None, KernelConfig(node_policy=NodePolicy()), agents=registry((Recaller,)),
        embedder=NoEmbedder(),
    ).profile("recaller").hash()  # fmt: skip
    req, task_id = signed_task(Recaller, task_input, profile)
    return req, task_id, task_input


async def run(tmp_path: Path, task_input: Any, task_id: str, embedder: Any = None, faults: Any = None) -> Any:
    """What the node's own kernel records for the task: its outcome (trace, output)."""
    store_dir = tmp_path / f"store-{task_id[-6:]}-{id(embedder)}-{id(faults)}"
    async with stand_in_kernel(
        store_dir, (Recaller,), embedder=embedder or SharedMiniLM(), faults=faults
    ) as kernel:
        spec = TaskSpec(task_id=task_id, agent_id="recaller", input=task_input, user=USER.address, fee=100)
        outcome = await kernel.run_task(spec)
    assert outcome.status == "ok", outcome
    return outcome


def search_of(trace: dict[str, Any]) -> dict[str, Any]:
    [ev] = [e for e in trace["events"] if e["kind"] == "memory.search"]
    return ev


def search_findings(verdict: Any) -> list[str]:
    assert not verdict.ok and verdict.unverifiable is None, verdict
    assert {f.check for f in verdict.findings} == {Check.SEARCH}, verdict.findings
    return [f.message for f in verdict.findings]


async def cheat_verdict(honest: dict[str, Any], req: Any, task_id: str, edit: Any) -> Any:
    """The verdict on ``honest`` after ``edit(search_event, trace)`` (the output re-derived as the
    agent would from the new hits, so the trace replays clean)."""
    cheat = copy.deepcopy(honest)
    edit(search_of(cheat), cheat)
    return await verify(DictStore(), req, task_id, cheat, agents=(Recaller,))


def entry_texts(trace: dict[str, Any]) -> dict[str, str]:
    """The witness's memory entries: CID -> text."""
    from supernet.sdk.store.cids import decode_dag

    out = {}
    for raw in trace["witness"]["blocks"]:
        block = decode_dag(raw)
        if isinstance(block, dict) and block.get("type") == "supernet/memory-entry":
            out[compute_cid(raw, "dag-cbor")] = block["text"]
    return out


def answer(trace: dict[str, Any], hits: list[Any]) -> str:
    texts = entry_texts(trace)
    return " | ".join(texts[str(h)] for h in hits)


# -- controls ----------------------------------------------------------------------------------------


async def test_holds_honest_searches_verify_clean(tmp_path: Path) -> None:
    req, task_id, task_input = task(FACTS, k=2)
    honest = (await run(tmp_path, task_input, task_id)).trace
    assert "spare key" in honest["output"].split(" | ")[0]
    verdict = await verify(DictStore(), req, task_id, honest, agents=(Recaller,))
    assert clean(verdict), verdict.findings


async def test_holds_a_bfloat16_node_is_not_accused(tmp_path: Path) -> None:
    """A node embedding in bfloat16 (a GPU node's natural choice) records scores a few thousandths
    off the validator's float32 ones: within `SCORE_TOLERANCE`, never a finding."""
    bf16 = MiniLMEmbedder()
    bf16.embed_sync(["load"])
    bf16._model = bf16._model.to(torch.bfloat16)
    req, task_id, task_input = task(FACTS, k=3)
    honest = (await run(tmp_path, task_input, task_id, embedder=bf16)).trace
    ev = search_of(honest)
    v32 = protocol_embedder().embed_sync([QUESTION, *(entry_texts(honest)[str(h)] for h in ev["hits"])])
    gaps = [abs(s - float(v32[0] @ v)) for s, v in zip(ev["scores"], v32[1:], strict=True)]
    assert 0 < max(gaps) < SCORE_TOLERANCE / 2, gaps  # bfloat16 is off, and well within the tolerance
    assert clean(await verify(DictStore(), req, task_id, honest, agents=(Recaller,)))


async def test_holds_an_entry_stored_twice_and_ties(tmp_path: Path) -> None:
    """The same fact added twice is one CID listed twice: returning it twice is what the node does
    (k=2), and returning it once leaves an equal score out (a tie, no finding)."""
    facts = ["The spare key is under the blue flower pot.", *FACTS[1:3], FACTS[0]]
    for k in (1, 2):
        req, task_id, task_input = task(facts, k=k)
        honest = (await run(tmp_path, task_input, task_id)).trace
        hits = search_of(honest)["hits"]
        assert len(hits) == k and len(set(map(str, hits))) == 1
        assert clean(await verify(DictStore(), req, task_id, honest, agents=(Recaller,)))


# -- attacks -----------------------------------------------------------------------------------------


async def test_defence_the_least_related_memories_with_their_true_scores(tmp_path: Path) -> None:
    """The node's ``search`` fault: the agent is shown the entries least related to the question,
    worst first, with their true scores. Replay passes (entries of the root, k of them); the
    left-out entry closer to the query is a finding."""
    req, task_id, task_input = task(FACTS, k=2)
    faults = FaultInjector({FaultKind.SEARCH: 1.0})
    outcome = await run(tmp_path, task_input, task_id, faults=faults)
    assert task_id in faults.fired and "spare key" not in outcome.output
    verdict = await verify(DictStore(), req, task_id, outcome.trace, agents=(Recaller,))
    found = search_findings(verdict)
    assert any("left out entry" in m for m in found), found


async def test_defence_chosen_memories_with_made_up_scores(tmp_path: Path) -> None:
    """The same, with scores the node made up so the hits look like the best (descending, high)."""
    req, task_id, task_input = task(FACTS, k=2)
    honest = (await run(tmp_path, task_input, task_id)).trace
    entries = list(entry_texts(honest))
    worst = [link(c) for c in entries if "spare key" not in entry_texts(honest)[c]][:2]

    def edit(ev: dict[str, Any], trace: dict[str, Any]) -> None:
        ev.update(hits=worst, scores=[0.9, 0.8])
        trace["output"] = answer(trace, worst)

    found = search_findings(await cheat_verdict(honest, req, task_id, edit))
    assert any("scores" in m and "not 0.9" in m for m in found), found
    assert any("left out entry" in m for m in found), found


async def test_defence_the_right_memories_in_the_wrong_order(tmp_path: Path) -> None:
    """The best hits, the best shown last (an agent that reads the first hit first is steered)."""
    req, task_id, task_input = task(FACTS, k=3)
    honest = (await run(tmp_path, task_input, task_id)).trace

    def edit(ev: dict[str, Any], trace: dict[str, Any]) -> None:
        ev.update(hits=ev["hits"][::-1], scores=ev["scores"][::-1])
        trace["output"] = answer(trace, ev["hits"])

    found = search_findings(await cheat_verdict(honest, req, task_id, edit))
    assert any("scores above a hit ranked before it" in m for m in found), found


async def test_defence_one_entry_shown_as_every_hit(tmp_path: Path) -> None:
    """Replay checks the hits are entries of the root, not how often: the node's favourite entry
    returned k times (listed once) is a finding."""
    req, task_id, task_input = task(FACTS, k=3)
    honest = (await run(tmp_path, task_input, task_id)).trace

    def edit(ev: dict[str, Any], trace: dict[str, Any]) -> None:
        ev.update(hits=[ev["hits"][0]] * 3, scores=[ev["scores"][0]] * 3)
        trace["output"] = answer(trace, ev["hits"])

    found = search_findings(await cheat_verdict(honest, req, task_id, edit))
    assert any("more often than its root lists it" in m for m in found), found


async def test_defence_an_entry_with_a_made_up_embedding(tmp_path: Path) -> None:
    """The node stores an entry whose ``embedding`` field is the question's own vector, so its own
    (consistent) search ranks that entry first with score ~1. The validator never reads the stored
    vector: it embeds the entry's text."""
    req, task_id, task_input = task(FACTS[1:], k=1)  # no fact about the key at all
    query_vec = (await SharedMiniLM().embed([QUESTION]))[0].astype("<f4")

    class PlantingEmbedder(SharedMiniLM):
        async def embed(self, texts: list[str]) -> Any:
            real = await super().embed(texts)
            return np.stack([query_vec if t == FACTS[3] else v for t, v in zip(texts, real, strict=True)])

    outcome = await run(tmp_path, task_input, task_id, embedder=PlantingEmbedder())
    ev = search_of(outcome.trace)
    assert outcome.output == FACTS[3] and ev["scores"][0] > 0.99  # the planted entry, as the node ranks it
    found = search_findings(await verify(DictStore(), req, task_id, outcome.trace, agents=(Recaller,)))
    assert any("memory.search hit 0" in m and "for the query, not" in m for m in found), found


async def test_defence_a_listed_block_that_is_no_entry(tmp_path: Path) -> None:
    """A root listing a block that is not a memory entry is the node's own doing: a finding (an
    honest node's search over it fails instead of answering). Checked on the check itself: replay
    would read only the hits."""
    _, task_id, task_input = task(FACTS[:2], k=1)
    honest = (await run(tmp_path, task_input, task_id)).trace
    trace = Trace.from_dag(honest)
    ev = next(e for e in trace.events if getattr(e, "kind", "") == "memory.search")
    root = next(b for b in trace.witness.blocks if compute_cid(b, "dag-cbor") == str(ev.root))
    from supernet.sdk.store.cids import decode_dag

    odd_raw = encode_dag({"type": "something-else", "text": "x"})
    block = decode_dag(root)
    block["entries"] = [*block["entries"], link(compute_cid(odd_raw, "dag-cbor"))]
    new_root = encode_dag(block)
    ev2 = dataclasses.replace(ev, root=compute_cid(new_root, "dag-cbor"))
    witness = dataclasses.replace(trace.witness, blocks=(*trace.witness.blocks, new_root, odd_raw))
    forged = dataclasses.replace(
        trace, events=tuple(ev2 if e is ev else e for e in trace.events), witness=witness
    )
    outcome = await SearchCheck(DictStore()).check(forged)
    assert [f.check for f in outcome.findings] == [Check.SEARCH]
    assert "not a memory entry" in outcome.findings[0].message


# -- where the other entries' texts come from ---------------------------------------------------------


async def test_holds_other_entries_from_the_write_log_else_unverifiable(
    tmp_path: Path,
) -> None:
    """A search's witness carries its root and hits; the other entries were written by earlier
    tasks. Their texts come from the validator's database (kept by the write log from the writers'
    traces), else from the store; an entry read nowhere leaves the search unverifiable, never an
    accusation. Vectors computed once are kept: a second check embeds nothing but the query."""
    _, task_id, task_input = task(FACTS, k=1)
    honest = (await run(tmp_path, task_input, task_id)).trace
    trace = Trace.from_dag(honest)
    texts = entry_texts(honest)
    hit = str(search_of(honest)["hits"][0])
    # the trace as a later reader's would be: its witness without the entries that are not hits
    blocks = tuple(b for b in trace.witness.blocks if compute_cid(b, "dag-cbor") not in set(texts) - {hit})
    reader = dataclasses.replace(trace, witness=dataclasses.replace(trace.witness, blocks=blocks))

    nowhere = await SearchCheck(DictStore()).check(reader)
    assert nowhere.findings == () and nowhere.unverifiable is not None
    assert "not readable here" in nowhere.unverifiable

    class Counting(SharedMiniLM):
        texts = 0

        async def embed(self, batch: list[str]) -> Any:
            Counting.texts += len(batch)
            return await super().embed(batch)

    db = Database(":memory:")
    db.keep_entry_texts(texts)
    check = SearchCheck(DictStore(), embedder=Counting(), db=db)
    first = await check.check(reader)
    assert first.findings == () and first.unverifiable is None
    before = Counting.texts
    assert (await check.check(reader)).unverifiable is None
    assert Counting.texts - before == 1  # the query only

    # without a database: the entries read from the store (their blocks checked against their CIDs)
    store = DictStore()
    for raw in trace.witness.blocks:
        store.blocks[compute_cid(raw, "dag-cbor")] = raw
    from_store = await SearchCheck(store).check(reader)
    assert from_store.findings == () and from_store.unverifiable is None


@pytest.mark.parametrize("k", [1, 3])
async def test_holds_the_retrieval_agent_shape(tmp_path: Path, k: int) -> None:
    """k below and at the number of entries: the honest node's hits pass, the fault's never do."""
    req, task_id, task_input = task(FACTS[:3], k=k)
    faults = FaultInjector({FaultKind.SEARCH: 1.0})
    cheat = await run(tmp_path, task_input, task_id, faults=faults)
    verdict = await verify(DictStore(), req, task_id, cheat.trace, agents=(Recaller,))
    assert search_findings(verdict)
