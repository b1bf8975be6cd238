"""Adversarial review of the validator's turns for every pending batch (commit 4ff11f7):
`Validator._check_batches`, `_turn`, `_open_batch(groups=, announce=)`, `_group_checks(finish=)`
and the turn order kept across steps. Turns go by node, within a node every pending batch takes
one before any takes a second; the first ``ACTIVE_BATCHES`` opened keep their checks open, any
other ("a visitor") is opened for one group and closed again each turn.

Real parts: the validator's `Database`, the real `Validator` methods (bound to the stand-in of
tests/unit/test_review_session_changes6.py: ``Turns``, a chain clock the test moves while a group
is "scored", the real `Verifier.verify_groups` pipeline), the real `Validator.sample` with its
``isSampled`` cross-check, the real `Disputes.manifest` / ``claimed`` / ``posted`` over real
receipts, a real Merkle tree and real traces. A chain clock stands in for Anvil and SmolLM2.

What was tried, and what was found (all FOUND were fixed after this review; each test now
asserts the attack fails, with its control):

1. FIXED (was FOUND; stall -> unchecked cheat): a visitor never got past entries whose verdict is
   not recorded: ``todo[:8]`` took the sampled entries with no row in ``checks``, and a trace that
   cannot be fetched (`Verdict.missing`, likewise ``origin_pending``) is noted for the
   availability path, never recorded; withholding a batch's first traces made each visitor turn
   re-fetch them (a 60 s store timeout each) and the cheat later in the batch was reached after
   its window. Now entries the availability path holds are left out of ``todo``
   (`Database.missing_indexes`), as the back-off's are.
2. FIXED (was FOUND; starvation -> unchecked cheat): a stream of tiny batches of its own held a
   node's earlier batch at one group: within a node "one never served first" gave each new batch
   (one receipt, or one whose seed is not mined yet) the node's turn ahead of the big batch's
   second group. Now what arrives joins the back of its rotation (`TurnOrder.admit`), and only a
   turn that did work moves a node back (a batch ``waiting`` for its seed does not).
3. FIXED (was FOUND; starvation across steps): a node whose batches were all finished was
   forgotten and its next batch counted as never served, ahead of every node served since; a
   node committing one small batch per step took the first turn of every cut step. Now a
   forgotten node comes back at the back.
4. FIXED (was FOUND; cost x groups): each visitor turn repeated the real `sample` with its
   ``isSampled`` cross-check of every sampled index (8G^2 eth_calls for a visitor of G groups).
   Now the sample is kept while the batch is pending (`TurnOrder.samples`).
5. FIXED (was FOUND; cost x groups, store timeouts): the manifest fallback (the manifest not
   served; `Disputes.claimed` / ``posted``) was not cached unless complete, and `claimed` read
   every trace one after another: each visitor turn re-read the manifest and every trace. Now an
   incomplete fallback is reused for ``FALLBACK_TTL_S`` (a step's turns) and traces are read 8 at
   a time.
6. FIXED (was FOUND; cost x groups): a fault `Disputes.challenge` declines (a leaf that is not the
   receipt's hash: "cannot prove it"; a validator with challenges off) was re-verified in full
   (``recheck_all``) at each open. Now a manifest entry whose receipt is not its leaf is no fault
   but data the node has not shown (`load_manifest` leaves it out: the availability path), and a
   validator with challenges off retries nothing.
7. FIXED (was FOUND; cost, minor): the scheduling read every pending batch after every turn. Now
   only batches committed since (`Database.pending_batches(after=)`).
8. holds: across cut steps with visitors, arrivals and a deferred batch: each receipt is settled
   once, ``batch`` is announced at most once per batch and step, a group is staged at most twice
   (a kept batch's next group when the step is cut), no asyncio task is left, the turn order holds
   only batches of the step and empties once all are done (no unbounded growth).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from supernet.sdk.chain.eip712 import sign_task_request
from supernet.sdk.chain.errors import InsufficientFundsError
from supernet.sdk.chain.merkle import ReceiptTree
from supernet.sdk.chain.receipts import Receipt
from supernet.validator import service
from supernet.validator.chain import BatchCommitted
from supernet.validator.challenger import Disputes as RealDisputes
from supernet.validator.db import CheckRow, Database
from supernet.validator.evidence import Verdict
from supernet.validator.service import ACTIVE_BATCHES, RECEIPTS_PER_PASS, Validator

from tests.unit.test_review_session_changes6 import (
    LEAF,
    ME,
    NODE,
    OTHER,
    WINDOW,
    Availability,
    Chain,
    Disputes,
    Groups,
    Turns,
    turns,
)
from tests.unit.test_validator_attacks import (
    DOMAIN,
    USER,
    DictStore,
    MemoryQuestion,
    commit_entry,
    signed_task,
    trace_doc,
)

P = RECEIPTS_PER_PASS
STORE_TIMEOUT = 60
"""Seconds a read of a block nobody serves takes (`StoreClient`'s default timeout)."""


def node(k: int) -> str:
    return "0x" + f"{0x40 + k:02x}" * 20


def far(v: Turns, batch_id: int) -> None:
    """Batch ``batch_id``'s window far off (an honest batch that is not the point)."""
    v.chain.committed[batch_id] = v.chain.now + 100 * WINDOW


def busy(v: Turns, groups: int, n: int = ACTIVE_BATCHES) -> None:
    """``n`` honest batches of other nodes (ids 1..n), ``groups`` groups each, their windows far
    off: they are opened first and keep their checks open (a busy network)."""
    for b in range(1, n + 1):
        v.commit(b, node(b), groups * P)
        far(v, b)


def verdicts(v: Turns) -> Counter[tuple[int, int]]:
    return Counter((d["batch_id"], d["index"]) for k, d in v.events if k == "verdict")


# -- 1. a visitor never gets past entries whose verdict is not recorded ------------------------------


@dataclass
class Withheld(Groups):
    """`Groups` whose verdict on ``withheld`` entries is the verifier's for a trace that cannot be
    fetched (``missing``: noted for the availability path, no check recorded)."""

    withheld: set[tuple[int, int]] = field(default_factory=set)

    def verdict(self, batch_id: int, index: int, group: bool) -> Verdict:
        if (batch_id, index) in self.withheld:
            why = "trace unavailable: block not found"
            return Verdict(batch_id, index, LEAF, unverifiable=why, validator=ME, missing=True)
        return super().verdict(batch_id, index, group)


@pytest.mark.parametrize("case", ["visitor_withheld", "kept_withheld", "visitor_served"])
async def test_defence_a_visitor_is_not_stuck_on_entries_whose_traces_are_withheld(
    tmp_path: Path, case: str
) -> None:
    """Attack: 8 batches of other nodes are open (a busy network; or the node's sybils), 12 groups
    each, a round of them taking a tenth of a window. The node's batch comes 9th, a visitor: each
    turn `_open_batch(groups=1)` takes ``todo[:8]``, the sampled entries without a verdict in the
    database. The node withholds the traces of its first 8 entries (with a sample rate p, its
    first ~8/p): their verdicts say ``missing`` and go to `Availability.note`, never to ``checks``,
    so every turn takes the same 8 again (in production 8 store reads of 60 s each turn) and the
    cheat at index 8 is never reached while the batch is a visitor: here 12 rounds, past its
    window: ``past_window``, unchallenged. Controls: the traces served, the cheat is challenged on
    the batch's second turn; the traces withheld but the batch kept open (7 others open), it is
    not stuck (`_group_checks` goes over all of ``todo``) and the cheat is challenged too.

    It was: the cheat escaped every validator on which its batch was a visitor, for the price of
    availability answers on a few entries. Defence (by design): the entries the availability path
    holds are left out of ``todo`` (`Database.missing_indexes`): each turn checks the next group
    whatever the verdicts of the last, and the withheld entries are read once."""
    v = turns(tmp_path, cost=lambda b: WINDOW // 80 + 1 if b <= ACTIVE_BATCHES else 1)
    v.verifier = Withheld(v.chain, v.verifier.cost)
    busy(v, 12, n=ACTIVE_BATCHES - 1 if case == "kept_withheld" else ACTIVE_BATCHES)
    cheat = ACTIVE_BATCHES + 1
    v.commit(cheat, NODE, 2 * P)
    v.verifier.faulty.add((cheat, P))  # the first entry of its second group
    if case != "visitor_served":
        v.verifier.withheld |= {(cheat, i) for i in range(P)}
    await v._check_batches()
    fetched = Counter(i for b, i in v.verifier.staged if b == cheat)
    [(batch_id, index, at)] = v.disputes.opened
    assert (batch_id, index) == (cheat, P) and at < v.chain.committed[cheat] + WINDOW // 4
    assert v.status(cheat) == "done" and fetched[0] == 1 and fetched[P] == 1
    if case != "visitor_served":  # the withheld entries went to the availability path, once
        assert sorted(v.availability.noted) == [(cheat, i) for i in range(P)]
        assert v.db.missing_indexes(cheat) == set(range(P))


# -- 2. a stream of the node's own new batches holds its earlier one ---------------------------------


@pytest.mark.parametrize("stream", ["one_receipt_batches", "seeds_not_mined_yet", "control"])
async def test_defence_a_stream_of_tiny_batches_does_not_hold_an_earlier_batch_of_the_node(
    tmp_path: Path, stream: str
) -> None:
    """Attack: the node's batch of 3 groups holds its cheat in the last group (indexes go in order).
    4 other nodes have long batches (a round of them takes a tenth of a window). Once a round the
    node commits one new batch of one receipt (or one whose seed block is not mined yet, which
    costs the validator no check at all). It was: "within a node one never served first" gave
    every new batch the node's turn ahead of its big batch's second group, and a probe of a batch
    whose seed was not ready counted as the node's turn: the big batch got one group, then none
    until its window closed (``past_window``, the cheat unchecked). Defence (by design,
    `TurnOrder`): an arrival joins the back of its node's rotation, and only a turn that did
    work moves the node back; the big batch takes its three groups in three rounds and the
    cheat is challenged in its window, as in the control (no stream)."""
    v = turns(tmp_path, cost=lambda b: WINDOW // 40 + 1 if b <= 5 else 1)
    big = 1
    v.commit(big, NODE, 3 * P)
    v.verifier.faulty.add((big, 3 * P - 1))
    for b in range(2, 6):
        v.commit(b, node(b), 40 * P)
        far(v, b)
    end = v.chain.committed[big] + WINDOW
    tiny: list[int] = []

    def commit_next(batch_id: int) -> None:
        if stream == "control" or batch_id != 2 or v.chain.now >= end:  # once a round of the nodes
            return
        t = 100 + len(tiny)
        tiny.append(t)
        v.commit(t, NODE, 1)
        if stream == "seeds_not_mined_yet":
            v.chain.seed_at[t] = end + WINDOW  # (at most SEED_DELAY_BLOCKS in reality: commit often)

    v.verifier.on_group = commit_next
    await v._check_batches()
    big_groups = [g for g in v.verifier.finished if g[0][0] == big]
    [(batch_id, index, at)] = v.disputes.opened
    assert (batch_id, index) == (big, 3 * P - 1) and at < end
    assert v.status(big) == "done" and len(big_groups) == 3
    if stream == "control":
        return
    assert len(tiny) >= 3  # the stream ran while the big batch was checked
    order = [g[0][0] for g in v.verifier.finished]
    if stream == "one_receipt_batches":  # the first tiny batch waited for the big one's next group
        assert order.index(tiny[0]) > [i for i, b in enumerate(order) if b == big][1]
    checked_tiny = [g for g in v.verifier.finished if g[0][0] >= 100]
    assert len(checked_tiny) == (len(tiny) if stream == "one_receipt_batches" else 0)


# -- 3. a node whose batches finished is taken for never served --------------------------------------


async def test_defence_a_node_served_last_step_comes_back_at_the_back_and_starves_no_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attack (``STEP_TURNS_S`` cut at 0: one turn a step; with 300 s, what a step's turns hold):
    node C's batch of 4 groups has its cheat in the last group; its first group is checked in step
    1. A colluder A commits one small batch before each later step. It was: A's batch finished
    each step and A was forgotten, so at the next step A counted as never served and went first,
    every step, until C's window closed. Defence (by design, `TurnOrder`): a node that comes back
    (or a new one) joins the back of the rotation, so C, waiting since its last turn, takes the
    next turns and its cheat is challenged in its window; A's batches come after."""
    monkeypatch.setattr(service, "STEP_TURNS_S", 0.0)
    colluder = OTHER
    v = turns(tmp_path)
    victim = 1
    v.commit(victim, NODE, 4 * P)
    v.verifier.faulty.add((victim, 4 * P - 1))
    end = v.chain.committed[victim] + WINDOW
    order: list[int] = []
    v.verifier.on_group = lambda b: order.append(b)
    steps = 0
    while v.status(victim) == "pending":
        if steps:  # A's batch of the step (after the first)
            if v.chain.now < end:
                b = 100 + steps
                v.commit(b, colluder, 1)
        await v.step()
        v.chain.now += WINDOW // 8  # the rest of the step (poll interval, duties) in chain time
        steps += 1
        assert steps < 40
    assert order[:2] == [victim, victim]  # A's first batch joined the back of the rotation
    mine = [i for i, b in enumerate(order) if b == victim]
    assert len(mine) == 4 and all(b - a <= 2 for a, b in itertools.pairwise(mine))  # every other
    assert v.status(victim) == "done" and len(v.db.checks(victim)) == 4 * P
    [(batch_id, index, at)] = v.disputes.opened
    assert (batch_id, index) == (victim, 4 * P - 1) and at < end
    while v.db.pending_batches():  # A's batches are checked after
        await v.step()
    assert all(v.status(b) == "done" for b in range(101, 100 + steps))


# -- 4./6. the cost of each visitor turn -------------------------------------------------------------


@dataclass
class ProbedChain(Chain):
    """`Chain` with what the real `Validator.sample` reads (every receipt sampled) and counts of
    each read by batch."""

    probes: Counter[int] = field(default_factory=Counter)
    seeds: Counter[int] = field(default_factory=Counter)
    headers: Counter[int] = field(default_factory=Counter)

    def params(self) -> SimpleNamespace:
        return SimpleNamespace(challenge_window=self.window, sample_rate_ppm=1_000_000)

    def batch(self, batch_id: int) -> SimpleNamespace:
        self.headers[batch_id] += 1
        return super().batch(batch_id)

    def batch_seed(self, batch_id: int) -> bytes | None:
        self.seeds[batch_id] += 1
        return super().batch_seed(batch_id)

    def is_sampled(self, batch_id: int, validator: str, index: int) -> bool:
        self.probes[batch_id] += 1  # an eth_call of TaskManager.isSampled
        return True


@dataclass
class Probed(Turns):
    sample = Validator.sample  # the real one, with its isSampled cross-check


@dataclass
class Declining(Disputes):
    """`Disputes` whose ``challenge`` declines the faults of ``unprovable`` batches without recording
    a challenge, as the real `Disputes.challenge` does for an entry whose receipt is not the hash of
    its leaf ("cannot prove it") or on a validator run with challenges off."""

    unprovable: set[int] = field(default_factory=set)
    manifests: Counter[int] = field(default_factory=Counter)

    async def manifest(self, batch: Any, reuse: bool = False) -> Any:
        self.manifests[batch.batch_id] += 1
        return await super().manifest(batch, reuse)

    async def challenge(self, batch: Any, verdict: Verdict, evidence_cid: str) -> int | None:
        if batch.batch_id in self.unprovable and not self.enabled:  # as the real one: challenges off
            return None
        return await super().challenge(batch, verdict, evidence_cid)


@dataclass
class Counted(Groups):
    reverified: Counter[int] = field(default_factory=Counter)

    async def verify(
        self, batch_id: int, node: str, index: int, manifest: Any, recheck_all: bool = False
    ) -> Verdict:
        assert recheck_all  # `_retry_challenge`: every call re-scored by the arbiter
        self.reverified[batch_id] += 1
        return await super().verify(batch_id, node, index, manifest, recheck_all)


def probed(tmp_path: Path) -> Probed:
    db = Database(tmp_path / "v.sqlite")
    chain = ProbedChain()
    disputes = Declining(chain, db)
    return Probed(db, chain, Counted(chain), disputes, Availability(chain, disputes.answered_at))


async def test_defence_a_visitor_is_sampled_once_not_at_each_turn(tmp_path: Path) -> None:
    """Measured: 8 batches kept open and a 9th, a visitor, all of 6 groups (48 sampled receipts).
    It was: the visitor was opened on each of its 6 turns with the real `sample` and its
    ``isSampled`` cross-check of every sampled index each time: 6 x 48 = 288 eth_calls where a kept
    batch made 48 (8G^2 instead of 8G for a sample of 8G). Defence: the sample is kept while the
    batch is pending (`TurnOrder.samples`); a visitor's turn reads its seed and manifest (cached
    by `Disputes`) again, not its sample."""
    v = probed(tmp_path)
    busy(v, 6)
    visitor = ACTIVE_BATCHES + 1
    v.commit(visitor, NODE, 6 * P)
    await v._check_batches()
    assert all(v.status(b) == "done" for b in range(1, visitor + 1))
    assert set(verdicts(v).values()) == {1}
    chain, disputes = v.chain, v.disputes
    assert isinstance(chain, ProbedChain) and isinstance(disputes, Declining)
    assert chain.probes[1] == 6 * P and chain.probes[visitor] == chain.probes[1] == 48
    assert chain.seeds[1] == 1 and chain.seeds[visitor] == 6
    assert disputes.manifests[1] == 1 and disputes.manifests[visitor] == 6


async def test_defence_a_fault_that_cannot_be_challenged_is_not_reverified_at_each_turn(
    tmp_path: Path,
) -> None:
    """Attack: every sampled entry of the node's batch is a fault `Disputes.challenge` declines
    (here: this validator runs with challenges off; a manifest entry whose leaf is not its
    receipt's hash used to be declined too, and is now no fault at all but data the node has not
    shown: `load_manifest`, tests/unit/test_review_session_changes8.py). It was: the check row
    stayed ``ok=False, challenge_id=None`` and every open of the batch re-verified it in full
    (``recheck_all``, `_retry_challenge`): as a visitor of 6 groups, 8 x (0 + 1 + ... + 5) = 120
    full re-verifications on top of its 48 checks. Defence: a validator with challenges off
    retries nothing. Control: with challenges on, a fault whose challenge was not sent (a
    crash) is re-sent once, when its batch is opened."""
    v = probed(tmp_path)
    busy(v, 6)
    visitor = ACTIVE_BATCHES + 1
    v.commit(visitor, NODE, 6 * P)
    kept_twin = 1  # a kept batch with the same faults
    v.verifier.faulty |= {(b, i) for b in (kept_twin, visitor) for i in range(6 * P)}
    disputes, verifier = v.disputes, v.verifier
    assert isinstance(disputes, Declining) and isinstance(verifier, Counted)
    disputes.enabled = False
    disputes.unprovable |= {kept_twin, visitor}
    await v._check_batches()
    assert v.status(visitor) == "done" and v.status(kept_twin) == "done"
    assert verifier.reverified[kept_twin] == 0 and verifier.reverified[visitor] == 0
    assert disputes.opened == []  # nothing challenged: challenges are off
    unsent = ACTIVE_BATCHES + 2  # control: challenges on, a fault recorded before a crash
    disputes.enabled = True
    v.commit(unsent, NODE, P)
    v.db.record_check(CheckRow(unsent, 0, False, "llm.token", "bafyx", None))
    v.verifier.faulty.add((unsent, 0))
    await v._check_batches()
    assert verifier.reverified[unsent] == 1 and [(b, i) for b, i, _ in disputes.opened] == [(unsent, 0)]


# -- 5. the manifest fallback, re-read on each visitor turn -----------------------------------------


class Unserved(DictStore):
    """The validator's store: the manifest is not served, nor the blocks the node withholds; each
    read of what is not served takes ``STORE_TIMEOUT`` seconds (moved on the chain clock)."""

    def __init__(self, chain: Chain, blocks: dict[str, bytes]) -> None:
        super().__init__()
        self.chain, self.blocks = chain, blocks
        self.reads: Counter[str] = Counter()

    async def get_dag(self, cid: str) -> Any:
        self.reads["manifest"] += 1
        self.chain.now += STORE_TIMEOUT
        raise TimeoutError(f"{cid}: not found before the timeout")

    async def get_block(self, cid: str) -> bytes:
        self.reads["block"] += 1
        if cid not in self.blocks:
            self.reads["timeout"] += 1
            self.chain.now += STORE_TIMEOUT
            raise TimeoutError(f"{cid}: not found before the timeout")
        return self.blocks[cid]


@dataclass
class ManifestChain:
    """What the real `Disputes.manifest` reads of the chain: the receipts a manifest answer posted,
    the availability answers (none)."""

    receipts: dict[int, list[Receipt]]
    calls: Counter[str] = field(default_factory=Counter)

    def manifest_receipts(self, batch_id: int) -> list[Receipt] | None:
        self.calls["manifest_receipts"] += 1
        return self.receipts.get(batch_id)

    def availability_answers(self, batch_id: int, block: int) -> list[Any]:
        self.calls["availability_answers"] += 1  # a log scan from the batch's commit block
        return []


def answered(count: int, withheld: int) -> tuple[list[Receipt], dict[str, bytes]]:
    """A manifest answer's receipts (real ones, one real trace reused) and the blocks served:
    ``withheld`` of the traces are not."""
    req, task_id = signed_task(MemoryQuestion, "q")
    doc = trace_doc(MemoryQuestion, task_id, USER.address, "q", [], "a")
    doc["request"] = req.to_json()
    doc["request_signature"] = "0x" + sign_task_request(req, DOMAIN, USER).hex()
    store = DictStore()
    receipt = commit_entry(store, req, task_id, doc).receipt
    served = [dataclasses.replace(receipt, fee=100 - i) for i in range(count - withheld)]
    held = [dataclasses.replace(receipt, trace_hash=bytes([i + 1]) * 32) for i in range(withheld)]
    return served + held, store.blocks


async def test_defence_a_manifest_answered_with_a_trace_withheld_is_read_once_a_step(
    tmp_path: Path,
) -> None:
    """Attack: the node does not serve its batch's manifest; challenged for it, it answers with its
    receipts on chain (`Disputes.claimed`) but withholds one trace. It was: the fallback was cached
    only when complete and `claimed` read every receipt's trace one after another, so each read
    cost a manifest fetch (a 60 s timeout), the availability-answer log scan and 49 trace reads
    (one a 60 s timeout); a visitor (9) of 6 groups paid it on each turn: 6 x 2 timeouts, against 2
    for a kept batch (1). Defence: an incomplete fallback is reused for ``FALLBACK_TTL_S`` (a
    step's turns; a trace that becomes readable is the availability path's) and a manifest
    answer's traces are read 8 at a time: both batches pay the two timeouts once."""
    count = 6 * P + 1
    receipts, blocks = answered(count, withheld=1)
    root = ReceiptTree([r.leaf() for r in receipts]).root
    v = turns(tmp_path)
    kept, visitor = 1, ACTIVE_BATCHES + 1
    for b in (kept, visitor):  # the node's answered batches (9 is the node's; 1 another node's)
        ev = BatchCommitted(b, NODE if b == visitor else node(b), root, count, b, f"bafym{b}", b, 0)
        v.db.record_events([ev], b + 1)
        far(v, b)
    for b in range(2, ACTIVE_BATCHES + 1):  # the other batches kept open
        v.commit(b, node(b), 6 * P)
        far(v, b)
    store = Unserved(v.chain, blocks)
    chain = ManifestChain({kept: receipts, visitor: receipts})
    real = RealDisputes(chain, v.db, None, store, ME)  # type: ignore[arg-type]
    costs: Counter[int] = Counter()
    readable = v.disputes.manifest  # the other batches' manifests are served

    async def timed(batch: Any, reuse: bool = False) -> Any:
        if batch.batch_id not in (kept, visitor):
            return await readable(batch, reuse)
        start = v.chain.now
        try:
            return await real.manifest(batch, reuse)
        finally:
            costs[batch.batch_id] += v.chain.now - start

    v.disputes.manifest = timed  # type: ignore[method-assign]
    await v._check_batches()
    assert v.status(kept) == "done" and v.status(visitor) == "done"
    assert len(v.db.checks(visitor)) == 6 * P and len(v.db.checks(kept)) == 6 * P
    assert visitor not in real._manifests and kept not in real._manifests  # incomplete: not for good
    assert costs[kept] == costs[visitor] == 2 * STORE_TIMEOUT
    assert store.reads["manifest"] == 2 and store.reads["block"] == 2 * count
    assert chain.calls["availability_answers"] == 2


# -- 7. the scheduling's own cost -----------------------------------------------------------------------


async def test_defence_the_scheduling_reads_only_new_batches_after_a_turn(tmp_path: Path) -> None:
    """Measured: N one-receipt batches of a node, pending at the step's start. It was: after each
    turn `_check_batches` read every pending batch (``db.pending_batches()``, to admit new ones):
    N turns read about N^2/2 rows. Now it reads the batches committed since the last it saw
    (`Database.pending_batches(after=)`): N rows at the start, then only what arrives."""
    n = 120
    v = turns(tmp_path)
    for b in range(1, n + 1):
        v.commit(b, NODE, 1)
    rows = 0
    real_pending = v.db.pending_batches

    def pending_batches(after: int = 0) -> Any:
        nonlocal rows
        out = real_pending(after)
        rows += len(out)
        return out

    v.db.pending_batches = pending_batches  # type: ignore[method-assign]
    await v._check_batches()
    assert all(v.status(b) == "done" for b in range(1, n + 1))
    assert rows == n  # each batch read once


# -- 8. what holds ----------------------------------------------------------------------------------------


async def test_defence_cut_steps_with_visitors_settle_once_announce_once_and_leak_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Steps cut after 10 turns (the stop flag set then, as after ``STEP_TURNS_S`` or on shutdown):
    12 batches of 4 nodes of 2 to 4 groups (8 kept open at most, the rest visitors), 4 batches
    arriving mid-step, one batch whose challenge cannot be paid for the first 6 steps (deferred
    each time). Holds: every sampled receipt is settled exactly once; ``batch`` is emitted at most
    once per batch and step; a group is staged at most twice (a kept batch's next group when a
    step is cut; a visitor's one-group open stages nothing ahead); no asyncio task is left after a
    step; the turn order holds only batches pending at the step's start or admitted in it; every
    batch is done in the end, and the next step empties it."""
    real_turn = Validator._turn
    turns_left = {"n": 10}

    async def counted_turn(self: Any, *args: Any) -> Any:
        out = await real_turn(self, *args)
        turns_left["n"] -= 1
        if turns_left["n"] <= 0:
            self._stop.set()  # the step's limit: the turns end here, as after STEP_TURNS_S
        return out

    monkeypatch.setattr(Turns, "_turn", counted_turn)
    real_open = Validator._open_batch
    opens: list[tuple[int, int | None]] = []

    async def recorded_open(self: Any, batch: Any, groups: int | None = None, announce: bool = True) -> Any:
        opens.append((batch.batch_id, groups))
        return await real_open(self, batch, groups, announce)

    monkeypatch.setattr(Turns, "_open_batch", recorded_open)
    v = turns(tmp_path)
    nodes = [NODE, OTHER, node(1), node(2)]
    for b in range(1, 13):
        v.commit(b, nodes[b % 4], (2 + b % 3) * P)
        far(v, b)
    v.verifier.faulty.add((11, 0))
    v.disputes.error = InsufficientFundsError("no ether for the bond")
    arrivals = iter(range(50, 54))

    def arrive(batch_id: int) -> None:
        nxt = next(arrivals, None)
        if nxt is not None:
            v.commit(nxt, nodes[nxt % 4], P + 1)
            far(v, nxt)

    v.verifier.on_group = arrive
    per_step: list[Counter[int]] = []
    for step in range(60):
        if step == 6:
            v.disputes.error = None
        pending_before = {b.batch_id for b in v.db.pending_batches()}
        if not pending_before:
            break
        mark = len(v.events)
        turns_left["n"] = 10
        v._stop.clear()
        before_tasks = asyncio.all_tasks()
        await v.step()
        for _ in range(3):
            await asyncio.sleep(0)
        assert asyncio.all_tasks() <= before_tasks
        assert v.turn_order.batches <= pending_before | set(range(50, 54))
        per_step.append(Counter(d["batch_id"] for k, d in v.events[mark:] if k == "batch"))
    v._stop.clear()
    await v.step()  # a last step prunes what finished
    assert not v.db.pending_batches()
    assert v.turn_order.batches == frozenset() and v.turn_order.samples == {}
    assert all(n == 1 for c in per_step for n in c.values())
    settled = verdicts(v)
    assert set(settled.values()) == {1}
    for b in [*range(1, 13), *range(50, 54)]:
        row = v.db.batch(b)
        assert row is not None and row.status == "done"
        assert {i for bb, i in settled if bb == b} == set(range(row.count))
    assert [(b, i) for b, i, _ in v.disputes.opened] == [(11, 0)]
    staged = Counter(v.verifier.staged)
    assert max(staged.values()) <= 2  # a kept batch's next group, staged when a step was cut
    assert len(per_step) > 4 and any(g == 1 for _, g in opens)  # cut steps, visitors among them
    assert sum(1 for b, _ in opens if b == 11) > 1  # the deferred batch, opened again later
