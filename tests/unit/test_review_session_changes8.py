"""Adversarial review of the fixes of the first review of the turns (commits 4ff11f7, 0a2e85a and
1c4d1d4; tests/unit/test_review_session_changes7.py): `TurnOrder` (turns by node then by batch, only
a turn that did work counts), `Validator._open_batch` leaving out entries the availability path
holds (`Database.missing_indexes`) and faults declined for good (``Database.decline``, removed by
the fix of finding 2), the manifest fallback reused for ``FALLBACK_TTL_S`` (`Disputes.manifest`),
`Database.pending_batches(after=)`.

Real parts: the validator's `Database`, the real `Validator` turns / `_settle` / `step` (on the
stand-in of tests/unit/test_review_session_changes6.py), the real `TurnOrder`, the real
`Disputes.manifest` / ``claimed`` / ``challenge`` / ``_vote_one`` over real receipts, a real
manifest block and a real Merkle tree, the real `Availability` (retry, claim, follow), the real
`check_receipt`. A chain stand-in (clock, headers, claims) stands in for Anvil, a verdict stand-in
for SmolLM2; wall and monotonic time are a fake clock where the TTL or the back-off matter.

What was tried, and what was found (findings 1-5 were fixed after this review; their tests now
assert the attack fails, beside their controls):

1. FIXED (was FOUND; stall -> unchecked cheat; cheap): a batch with nothing sampled here (at the default 10%
   sample rate, 9 in 10 one-receipt batches) "does work" in `TurnOrder`'s eyes: `_open_batch`
   finishes it at once (``_nothing``), ``_turn`` says ``finished`` and `_check_batches` calls
   ``order.served``: the node goes to the back of the nodes. A node that commits k tiny batches
   before its cheat makes the cheat wait k rounds of every other node (k x N groups), for the
   price of k commit transactions and no work checked: here 30 tiny batches and 4 busy nodes push
   the cheat past its window (``past_window``, never challenged); without them it is challenged
   after 4 groups. Now a turn that finds nothing to check (``idle``: nothing sampled, past its
   window, own, no manifest, all checked) costs the node nothing: the node's next batch takes its
   turn (test_defence_tiny_unsampled_batches_cost_the_cheat_nothing).
2. FIXED (was FOUND; unchallengeable cheat, now for good): a manifest entry whose ``leaf`` (what the tree and
   the chain commit) is not its receipt's hash. `load_manifest` accepts it (the tree is built from
   the ``leaf`` fields), the check finds "leaf is not the receipt's hash", `Disputes.challenge`
   cannot prove it and since 1c4d1d4 records a decline for good; the entry is never sent to the
   availability path either. The receipt the chain commits (the one the node is accountable for)
   is never seen, challenged or claimed. Now `load_manifest` leaves such an entry out (unreadable:
   data the node has not shown), so it goes to the availability path, whose answer must post the
   receipt that is the leaf with its trace, or the node is slashed; the decline is gone
   (test_defence_an_entry_whose_receipt_is_not_its_leaf_goes_to_the_availability_path).
3. FIXED (was FOUND; regression of the 300 s cache; an honest node frozen, the claimant's bond spent): an
   entry whose trace was unreadable when the incomplete fallback was cached goes to
   `Availability`; its retries (2, 4, 8, 16 s) all read the cached fallback, so a trace served a
   second later is never seen, and after ~30 s the validator opens ``challengeAvailability`` on
   an entry that is served: the node is frozen until it answers on chain, the claim's bond pays
   the answer and a fee is burned. An answered claim is likewise not verified until the TTL ends.
   Now only the turns reuse the fallback (`Disputes.manifest(reuse=True)`); the availability path
   and voters read it fresh (test_defence_a_served_trace_is_seen_at_once_by_the_availability_path).
4. FIXED (was FOUND; vote fails -> challenger's bond lost, cheat kept): a voter whose manifest is a manifest
   answer's (`claimed`: every receipt posted, a tree) cannot find a challenged leaf whose trace is
   unreadable: `Manifest.index_of` searches only the readable entries, so `_vote_one` logs "leaf
   not in the manifest" and returns before ``on_missing``: the node that shows the trace to the
   challenger alone is never claimed for availability, which is what the contract's vote
   extension counts on. With the 300 s cache the voter also keeps not finding it after the trace
   is served (a devnet vote of 30 s is over). Now `index_of` searches the tree when there is one,
   and a voter that finds the entry unreadable (and not posted) claims it (``on_missing``); it
   reads the manifest fresh
   (test_defence_a_voter_on_a_manifest_answer_claims_a_withheld_challenged_entry).
5. FIXED (was FOUND; robustness; a pre-existing trait): one claim the validator cannot
   pay for (`InsufficientFundsError` in `Availability._open`) ends `Availability.step` before the
   claims it follows: an answered claim is never verified, and an unanswered one is never
   resolved, so the bond it would return (which would pay the next claim) stays locked: each step
   the same. Now each row is isolated and the claims followed come first
   (test_defence_a_claim_that_cannot_be_paid_stops_nothing_else).
6. holds: an entry a colluder's reader puts into ``missing`` (its writer "withheld") before the turns
   reach it is left out of the turns and still verified by the availability path once served, or
   claimed while withheld (test_defence_an_entry_noted_missing_by_a_colluder_is_verified_or_claimed).
   Note: an ``expired`` row (never verified) arises only with claims disabled, which is the same
   setting (``challenge``) that disables fraud challenges, or after the batch's window.
7. holds: `TurnOrder` over random arrivals, finishes, waiting seeds and step boundaries (``keep``):
   no node takes a second turn while another node present since before its last turn waits, no
   batch while another of its node waits, and its maps hold only pending batches and their nodes.
   `pending_batches(after=)`: batch ids are the contract's counter and the follower records them in
   block order (``history`` batches are never pending), so no batch is recorded below ``seen``.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from supernet.sdk.chain.eip712 import sign_task_request
from supernet.sdk.chain.errors import InsufficientFundsError
from supernet.sdk.chain.merkle import ReceiptTree
from supernet.sdk.chain.receipts import Receipt
from supernet.sdk.chain.tasks import AvailabilityStatus
from supernet.sdk.formats.manifest import BatchManifest, ManifestEntry
from supernet.validator import availability as availability_module
from supernet.validator import challenger as challenger_module
from supernet.validator.availability import Availability as RealAvailability
from supernet.validator.chain import BatchCommitted
from supernet.validator.challenger import Disputes as RealDisputes
from supernet.validator.consistency import check_receipt
from supernet.validator.db import BatchRow, ChallengeRow, Database
from supernet.validator.evidence import Check, Finding, Verdict
from supernet.validator.turns import TurnOrder
from supernet.validator.verifier import Verifier

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
)
from tests.unit.test_review_session_changes7 import P, Unserved, Withheld, answered, far, node
from tests.unit.test_validator_attacks import (
    DOMAIN,
    USER,
    DictStore,
    MemoryQuestion,
    commit_entry,
    signed_task,
    trace_doc,
)
from tests.unit.test_validator_attacks import NODE as NODE_KEY


class Clock:
    """Wall and monotonic time the test moves (`Availability`'s back-off, the fallback's TTL)."""

    def __init__(self, t: float = 10_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    fake = SimpleNamespace(time=c, monotonic=c)
    monkeypatch.setattr(availability_module, "time", fake)
    monkeypatch.setattr(challenger_module, "time", fake)
    return c


def record(db: Database, batch_id: int, node_address: str, root: bytes, count: int, cid: str) -> BatchRow:
    db.record_events(
        [BatchCommitted(batch_id, node_address, root, count, batch_id, cid, batch_id, 0)], batch_id + 1
    )
    row = db.batch(batch_id)
    assert row is not None
    return row


def entry_of(doc_output: str, store: DictStore) -> ManifestEntry:
    """A real, honest-looking manifest entry (receipt, trace in ``store``, signed request)."""
    req, task_id = signed_task(MemoryQuestion, "q")
    doc = trace_doc(MemoryQuestion, task_id, USER.address, "q", [], doc_output)
    doc["request"] = req.to_json()
    doc["request_signature"] = "0x" + sign_task_request(req, DOMAIN, USER).hex()
    return commit_entry(store, req, task_id, doc)


class Served(Unserved):
    """`Unserved` (the manifest not served, the blocks not in ``blocks`` time out) that takes the
    voter's evidence."""

    async def put_dag(self, doc: Any, pin: bool = False) -> str:
        return self.put(doc)


# -- 1. batches with nothing sampled take a whole round each ------------------------------------------


@dataclass
class Sparse(Turns):
    """`Turns` whose sample of the ``unsampled`` batches is empty (the real `sample` at a 10% rate
    on a one-receipt batch, 9 times in 10)."""

    unsampled: set[int] = field(default_factory=set)

    def sample(self, batch: Any, seed: bytes) -> list[int]:
        return [] if batch.batch_id in self.unsampled else list(range(batch.count))


@pytest.mark.parametrize("case", ["tiny_batches_first", "control"])
async def test_defence_tiny_unsampled_batches_cost_the_cheat_nothing(tmp_path: Path, case: str) -> None:
    """Attack: 4 other nodes have long batches (a busy network; or the node's sybils), a group of
    theirs takes 40 s. The node commits 30 one-receipt batches, then its cheat (one receipt). None
    of the 30 is sampled here (at the default 10% rate each is unsampled 9 times in 10). It was:
    each took the node's turn (`_open_batch` finished it, `_turn` said ``finished``, the node went
    behind the 4 others): the cheat was reached after 31 rounds of 4 groups, past its window.
    Defence: a turn with nothing to check is ``idle`` and costs the node nothing (`_turn`,
    `_check_batches`: the node keeps its place): the cheat is challenged after one round, as in
    the control without the tiny batches."""
    db = Database(tmp_path / "v.sqlite")
    chain = Chain()
    disputes = Disputes(chain, db)
    cost = {b: 40 for b in range(1, 5)}
    v = Sparse(db, chain, Groups(chain, lambda b: cost.get(b, 1)), disputes, Availability(chain, db=db))
    for b in range(1, 5):
        v.commit(b, node(b), 40 * P)
        far(v, b)
    tiny = list(range(5, 35)) if case == "tiny_batches_first" else []
    for b in tiny:
        v.commit(b, NODE, 1)
    v.unsampled |= set(tiny)
    cheat = 35
    v.commit(cheat, NODE, 1)
    v.verifier.faulty.add((cheat, 0))
    await v._check_batches()
    [(batch_id, index, at)] = v.disputes.opened
    assert (batch_id, index) == (cheat, 0) and at <= v.chain.committed[cheat] + 4 * 40 + 1
    assert all(v.status(b) == "done" for b in tiny)  # finished at once, nothing to check


# -- 2. a manifest entry whose receipt is not its leaf ------------------------------------------------


@dataclass
class Entries(Groups):
    entry = Verifier.entry


@dataclass
class FraudChain(Chain):
    """`Chain` with what the real `Disputes.challenge` sends."""

    opened: list[tuple[int, int]] = field(default_factory=list)

    def leaf_challenge(self, batch_id: int, leaf: bytes) -> int:
        return 0

    def open_challenge(self, batch_id: int, index: int, receipt: Any, proof: Any, evidence: str) -> int:
        self.opened.append((batch_id, index))
        return len(self.opened)

    def claimable(self, address: str) -> int:
        return 0

    def withdraw(self) -> None:
        raise AssertionError("nothing to withdraw")


@pytest.mark.parametrize("case", ["receipt_not_its_leaf", "control"])
async def test_defence_an_entry_whose_receipt_is_not_its_leaf_goes_to_the_availability_path(
    tmp_path: Path, case: str
) -> None:
    """Attack: the node commits a cheat receipt R (its hash is the leaf in the committed root: what
    the node answers for); its manifest lists, at R's position, R's leaf beside another receipt R'
    (honest-looking, with a real trace). The tree is built from the ``leaf`` fields: the manifest
    matches the root. It was: the check found "leaf is not the receipt's hash", `Disputes.challenge`
    could not prove R' in the tree and recorded a decline for good: R was never seen, challenged
    or claimed. Defence (by design): `load_manifest` leaves such an entry out (it shows nothing of
    what was committed there), so the turns send it to the availability path, whose claim makes
    the node post R (the receipt that is the leaf) with its trace, or be slashed; `Availability`
    then verifies the posted entry (`Disputes.posted`). Control: the same entry consistent is
    checked and challenged."""
    store = DictStore()
    first = entry_of("a", store)
    r0 = dataclasses.replace(first.receipt, fee=99)
    first = dataclasses.replace(first, receipt=r0, leaf=r0.leaf())
    shown = entry_of("b", store)  # R' and its real trace
    cheat = dataclasses.replace(shown.receipt, output_hash=b"\x66" * 32)  # R: what the user was given
    hidden = dataclasses.replace(shown, leaf=cheat.leaf()) if case != "control" else shown
    manifest = BatchManifest.seal(NODE_KEY.address, [first, hidden])
    cid = store.put(manifest.to_dag())
    db = Database(tmp_path / "v.sqlite")
    chain = FraudChain()
    verifier = Entries(chain)
    disputes = RealDisputes(chain, db, verifier, store, ME)  # type: ignore[arg-type]
    v = Turns(db, chain, verifier, disputes, Availability(chain, db=db))  # type: ignore[arg-type]
    b = 1
    record(db, b, NODE_KEY.address, manifest.root, 2, cid)
    chain.committed[b] = chain.now
    verifier.faulty.add((b, 1))
    found = {f.message for f in check_receipt(hidden, NODE_KEY.address, DOMAIN)}
    await v.step()
    if case == "control":
        assert "leaf is not the receipt's hash" not in found
        assert chain.opened == [(b, 1)]
        return
    assert "leaf is not the receipt's hash" in found  # what the check would say of it
    loaded = await disputes.manifest(v.db.batch(b))  # type: ignore[arg-type]
    assert loaded.readable(0) and not loaded.readable(1) and loaded.index_of(cheat.leaf()) == 1
    assert v.status(b) == "done" and chain.opened == [] and v.db.check(b, 1) is None
    assert v.availability.noted == [(b, 1)] and v.db.missing_indexes(b) == {1}  # claimed from here on


# -- 3. the fallback cached with a trace unreadable: availability claimed on a served trace ------------


@dataclass
class ClaimChain:
    """What `Disputes.manifest` and `Availability` read and send: the receipts a manifest answer
    posted, no availability answers, batch headers, claims."""

    receipts: dict[int, list[Receipt]]
    now: int = 1_000
    committed: dict[int, int] = field(default_factory=dict)
    claims: list[tuple[int, int]] = field(default_factory=list)
    states: dict[int, Any] = field(default_factory=dict)
    resolved: list[int] = field(default_factory=list)
    broke: bool = False
    omission: Any = None

    def timestamp(self) -> int:
        return self.now

    def params(self) -> SimpleNamespace:
        return SimpleNamespace(challenge_window=WINDOW)

    def batch(self, batch_id: int) -> SimpleNamespace:
        return SimpleNamespace(committed_at=self.committed[batch_id])

    def answered_at(self, batch_id: int, index: int) -> int:
        return 0

    def reopened_at(self, batch_id: int, index: int) -> int:
        return 0

    def manifest_receipts(self, batch_id: int) -> list[Receipt] | None:
        return self.receipts.get(batch_id)

    def availability_answers(self, batch_id: int, block: int) -> list[Any]:
        return []

    def entry_availability(self, batch_id: int, index: int) -> int:
        return 0

    def challenge_availability(self, batch_id: int, index: int) -> int:
        if self.broke:
            raise InsufficientFundsError("no ether for the availability bond")
        self.claims.append((batch_id, index))
        return 100 + len(self.claims)

    def availability(self, availability_id: int) -> Any:
        far_off = SimpleNamespace(status=AvailabilityStatus.OPEN, deadline=self.now + WINDOW)
        return self.states.get(availability_id, far_off)

    def resolve_availability(self, availability_id: int) -> int:
        self.resolved.append(availability_id)
        return 10**18


@dataclass
class Verdicts:
    """The verifier as `Availability` uses it: each entry read is verified (ok unless ``faulty``)."""

    faulty: set[tuple[int, int]] = field(default_factory=set)
    verified: list[tuple[int, int]] = field(default_factory=list)

    async def verify(
        self, batch_id: int, node: str, index: int, manifest: Any, recheck_all: bool = False
    ) -> Verdict:
        self.verified.append((batch_id, index))
        bad = (batch_id, index) in self.faulty
        findings = (Finding(Check.LLM_TOKEN, "a greedy token that is not the argmax"),) if bad else ()
        return Verdict(batch_id, index, LEAF, findings=findings, validator=ME)


def answer_with_a_late_trace(count: int) -> tuple[list[Receipt], dict[str, bytes], dict[str, bytes]]:
    """A manifest answer's real receipts: the traces of all but the last served; the last one's
    trace (real, in the second dict) served only later."""
    receipts, blocks = answered(count - 1, withheld=0)
    late = DictStore()
    receipts.append(entry_of("late", late).receipt)
    return receipts, blocks, late.blocks


@pytest.mark.parametrize("case", ["cached", "control_no_cache"])
async def test_defence_a_served_trace_is_seen_at_once_by_the_availability_path(
    tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    """The node's manifest is not served; a manifest answer posted its receipts (`claimed`). When the
    batch's turn reads it, one trace is not served (a store hiccup; or on purpose): the incomplete
    fallback is kept for the turns (``FALLBACK_TTL_S``) and the entry goes to `Availability.note`.
    The trace is served one second later. It was: `Availability._retry` read the cached fallback
    too, found the entry unreadable on every try and, 30 s on, claimed availability of a served
    entry (an honest node frozen, the bond spent on its answer). Defence: only the turns reuse
    the fallback (`Disputes.manifest(reuse=True)`); the availability path reads it fresh, verifies
    the entry on its first retry and claims nothing, with the cache or without it (the control)."""
    if case == "control_no_cache":
        monkeypatch.setattr(challenger_module, "FALLBACK_TTL_S", 0.0)
    count = 9
    receipts, blocks, late = answer_with_a_late_trace(count)
    chain = ClaimChain({1: receipts})
    db = Database(tmp_path / "v.sqlite")
    store = Unserved(chain, dict(blocks))  # type: ignore[arg-type]
    verifier = Verdicts()
    disputes = RealDisputes(chain, db, verifier, store, ME)  # type: ignore[arg-type]
    settled: list[tuple[int, int]] = []

    async def settle(batch: BatchRow, i: int, verdict: Verdict) -> bool:
        settled.append((batch.batch_id, i))
        return True

    av = RealAvailability(chain, db, disputes, verifier, settle, retries=4, backoff_s=2.0)  # type: ignore[arg-type]
    root = ReceiptTree([r.leaf() for r in receipts]).root
    batch = record(db, 1, NODE, root, count, "bafymanifest")
    chain.committed[1] = chain.now
    k = count - 1
    manifest = await disputes.manifest(batch, reuse=True)  # the batch's turn: the trace not served
    assert not manifest.readable(k) and manifest.readable(0)
    av.note(batch, k, "trace unavailable: block not found")  # as `_settle` does for `missing`
    clock.t += 1
    store.blocks |= late  # served from now on
    for _ in range(4):
        clock.t += 20
        chain.now += 20
        await av.step(chain.now)
    assert verifier.verified == [(1, k)] and settled == [(1, k)] and chain.claims == []
    [row] = db.missing()
    assert row.status == "fetched"
    # the complete read is kept for good: the turns see the entry too, whatever the TTL
    assert (await disputes.manifest(batch, reuse=True)).readable(k)


# -- 4. a voter on a manifest answer and a withheld challenged entry -----------------------------------


@dataclass
class VoteChain(ClaimChain):
    commits: list[int] = field(default_factory=list)
    binding: Any = field(
        default_factory=lambda: SimpleNamespace(
            get_vote=lambda cid, a: SimpleNamespace(weight=0, revealed=False)
        )
    )

    def params(self) -> SimpleNamespace:
        return SimpleNamespace(
            challenge_window=WINDOW, reveal_window=100, quorum_bps=5_000, challenge_bond=10**17
        )

    def balance(self) -> int:
        return 10**18  # bonds to spare

    def commit_vote(self, challenge_id: int, commitment: bytes) -> None:
        self.commits.append(challenge_id)


async def test_defence_a_voter_on_a_manifest_answer_claims_a_withheld_challenged_entry(
    tmp_path: Path, clock: Clock
) -> None:
    """Attack: the node withholds its manifest (answering the manifest claim with its receipts on
    chain: `Disputes.claimed`) and shows its cheat's trace to the one validator that challenges it;
    to every voter the trace is unreadable. The design (`Disputes.on_missing`, the contract's
    ``_extendVote``): a voter that cannot read a challenged entry claims it for availability. It
    was: `Manifest.index_of` searched only the readable entries, so the voter logged "leaf not in
    the manifest" and returned before ``on_missing``; no voter claimed it, and the vote ended
    without a verdict. Defence: `index_of` searches the tree when there is one, and a voter that
    finds the entry unreadable (and not posted) claims it; once the trace is served, the next
    pass reads the manifest fresh and votes."""
    count = 9
    receipts, blocks, late = answer_with_a_late_trace(count)
    chain = VoteChain({1: receipts})
    db = Database(tmp_path / "v.sqlite")
    store = Served(chain, dict(blocks))  # type: ignore[arg-type]
    verifier = Verdicts()
    disputes = RealDisputes(chain, db, verifier, store, ME)  # type: ignore[arg-type]
    claimed: list[tuple[int, int]] = []
    disputes.on_missing = lambda batch, i, why: claimed.append((batch.batch_id, i))
    root = ReceiptTree([r.leaf() for r in receipts]).root
    record(db, 1, NODE, root, count, "bafymanifest")
    leaf = receipts[-1].leaf()
    row = ChallengeRow(1, 1, OTHER, NODE, leaf, chain.now + 10_000, "bafyevidence", "open", None, None)
    await disputes._vote_one(row)
    manifest = await disputes.manifest(db.batch(1))  # type: ignore[arg-type]
    assert manifest.tree is not None and manifest.tree.leaves.index(leaf) == count - 1  # knowable
    assert claimed == [(1, count - 1)] and chain.commits == [] and verifier.verified == []  # claimed
    store.blocks |= late  # the node serves the trace now
    clock.t += 60
    await disputes._vote_one(row)
    assert verifier.verified == [(1, count - 1)] and chain.commits == [1]  # read fresh: voted


# -- 5. a claim that cannot be paid for stops the claims followed ---------------------------------------


@dataclass
class Manifests:
    """`Disputes` as `Availability` reads it: entry 0 is unreadable, the rest readable."""

    async def manifest(self, batch: Any) -> Any:
        return SimpleNamespace(readable=lambda i: i != 0, tree=None)

    async def posted(self, batch: Any) -> Any:
        return SimpleNamespace(readable=lambda i: False, tree=None)  # nothing posted on chain


@pytest.mark.parametrize("case", ["broke", "control"])
async def test_defence_a_claim_that_cannot_be_paid_stops_nothing_else(
    tmp_path: Path, clock: Clock, case: str
) -> None:
    """The validator's ether is locked in bonds (fraud challenges hold theirs for a vote window, a
    day; availability claims until answered or resolved). Entry 0 of a batch stays unreadable: its
    retries are spent and `Availability._open` cannot pay the claim (`InsufficientFundsError`).
    It was: that error ended `Availability.step`, and the rows after it were never reached: entry
    1's answered claim (a cheat) never verified, entry 2's unanswered claim never resolved (its
    bond, which would pay entry 0's claim, locked), every step. Defence: each row is isolated
    (an error defers that row only) and the claims followed come first (they free bonds): the
    cheat is verified and the claim resolved as in the control; entry 0 waits for ether."""
    chain = ClaimChain({}, broke=case == "broke")
    db = Database(tmp_path / "v.sqlite")
    verifier = Verdicts(faulty={(1, 1)})
    settled: list[tuple[int, int]] = []

    async def settle(batch: BatchRow, i: int, verdict: Verdict) -> bool:
        settled.append((batch.batch_id, i))
        return True

    av = RealAvailability(chain, db, Manifests(), verifier, settle, retries=1, backoff_s=1.0)  # type: ignore[arg-type]
    batch = record(db, 1, NODE, b"\x00" * 32, 3, "bafym1")
    chain.committed[1] = chain.now
    for i, aid, status in ((1, 7, AvailabilityStatus.ANSWERED), (2, 8, AvailabilityStatus.OPEN)):
        av.note(batch, i, "trace unavailable")
        db.update_missing(1, i, status="challenged", availability_id=aid)
        chain.states[aid] = SimpleNamespace(status=status, deadline=chain.now + 10)
    av.note(batch, 0, "trace unavailable")
    chain.now += 100
    clock.t += 10
    if case == "control":
        await av.step(chain.now)
        assert chain.claims == [(1, 0)] and verifier.verified == [(1, 1)] and settled == [(1, 1)]
        assert chain.resolved == [8]
        return
    await av.step(chain.now)  # no error out of the step
    assert chain.claims == [] and chain.resolved == [8]  # the unanswered claim resolved: its bond back
    assert verifier.verified == [(1, 1)] and settled == [(1, 1)]  # the answered cheat verified
    assert {r.index: r.status for r in db.missing()} == {0: "retrying", 1: "answered", 2: "slashed"}
    chain.broke = False  # the bond came back: entry 0's claim is paid next step
    clock.t += 600
    await av.step(chain.now)
    assert chain.claims == [(1, 0)]


# -- 6. an entry noted missing by a colluder's reader before the turns reach it -------------------------


@dataclass
class TurnsChain(Chain):
    claims: list[tuple[int, int]] = field(default_factory=list)
    omission: Any = None

    def answered_at(self, batch_id: int, index: int) -> int:
        return 0

    def reopened_at(self, batch_id: int, index: int) -> int:
        return 0

    def entry_availability(self, batch_id: int, index: int) -> int:
        return 0

    def challenge_availability(self, batch_id: int, index: int) -> int:
        self.claims.append((batch_id, index))
        return len(self.claims)

    def availability(self, availability_id: int) -> Any:
        return SimpleNamespace(status=AvailabilityStatus.OPEN, deadline=self.now + WINDOW)


@pytest.mark.parametrize("case", ["served", "withheld"])
async def test_defence_an_entry_noted_missing_by_a_colluder_is_verified_or_claimed(
    tmp_path: Path, case: str
) -> None:
    """Attack: the node's cheat is the entry ``c`` of its batch (its second group). A colluder's
    entry, checked first, reads a root the cheat wrote and the cheat's trace is withheld at that
    moment: the reader's verdict waits for its origin and the cheat goes to the availability path
    (`Availability.await_origins` -> ``_note_writers``): a ``missing`` row, so the batch's turns
    leave it out (`Database.missing_indexes`). Then the node serves the trace (or keeps it
    withheld). Holds: the turns do not check it, and the availability path does: served, it is
    verified and challenged in its window; withheld, it is claimed for availability."""
    db = Database(tmp_path / "v.sqlite")
    chain = TurnsChain()
    disputes = Disputes(chain, db)
    verifier = Withheld(chain)
    v = Turns(db, chain, verifier, disputes, Availability(chain))
    v.availability = RealAvailability(  # type: ignore[assignment]
        chain,
        db,
        disputes,
        verifier,
        v._settle,
        retries=1,
        backoff_s=0.0,  # type: ignore[arg-type]
    )
    v.commit(1, NODE, 2 * P)
    c = P + 3
    verifier.faulty.add((1, c))
    v.commit(2, OTHER, 1)
    reader = db.batch(2)
    assert reader is not None
    why = "origin unreadable: the writer's trace is withheld"
    pending = Verdict(2, 0, LEAF, unverifiable=why, validator=ME, origin_pending=True, withheld=((1, c),))
    v.availability.await_origins(reader, 0, pending)
    assert db.missing_indexes(1) == {c}
    if case == "withheld":
        verifier.withheld.add((1, c))
    await v.step()
    assert (1, c) not in verifier.staged  # left out of the turns
    assert v.status(1) == "done" and len(db.checks(1)) == (2 * P if case == "served" else 2 * P - 1)
    if case == "served":
        [(batch_id, index, at)] = disputes.opened
        assert (batch_id, index) == (1, c) and at < chain.committed[1] + WINDOW
        assert {(r.index, r.status) for r in db.missing() if r.batch_id == 1} == {(c, "fetched")}
    else:
        assert chain.claims == [(1, c)] and disputes.opened == []
        assert {(r.index, r.status) for r in db.missing() if r.batch_id == 1} == {(c, "challenged")}


# -- 7. TurnOrder: round robin under arrivals, finishes, waiting and step boundaries --------------------


def test_defence_turn_order_is_round_robin_and_bounded_under_random_churn() -> None:
    """Random churn (seeded): 6 nodes, batches arriving at any time, finishing after 1 to 5 turns,
    some waiting for their seeds (skipped, no work), steps ending every 1 to 30 turns (``keep``
    then ``admit``, as `_check_batches` does). Holds: when a node takes a turn, every other node
    with a ready batch continuously since before that node's previous turn has taken a turn since
    (round robin by node), and likewise for the batches of one node; the order's maps hold only
    the step's pending batches, their nodes and the samples of those batches."""
    rng = random.Random(8)
    order = TurnOrder()
    pending: dict[int, BatchRow] = {}
    left: dict[int, int] = {}
    next_id = 1
    tick = 0
    last_node: dict[str, int] = {}
    last_batch: dict[int, int] = {}
    present_since: dict[str, int] = {}
    batch_since: dict[int, int] = {}
    nodes = [node(k) for k in range(6)]
    turns_taken = 0

    def arrive() -> None:
        nonlocal next_id
        n = rng.choice(nodes)
        row = BatchRow(next_id, n, b"", 8, 0, "", "pending")
        pending[next_id] = row
        left[next_id] = rng.randint(1, 5)
        batch_since[next_id] = tick
        present_since.setdefault(n, tick)
        next_id += 1

    for _ in range(8):
        arrive()
    for _step in range(80):
        for _ in range(rng.randint(0, 4)):  # committed between steps
            arrive()
        order.keep(pending, {b.node.lower() for b in pending.values()})
        order.admit(pending.values())
        for b in pending:
            order.samples.setdefault(b, [0])
        waiting: set[int] = set()
        for _ in range(rng.randint(1, 30)):
            batch = order.next(pending, waiting)
            if batch is None:
                break
            tick += 1
            if rng.random() < 0.1:  # its seed is not mined yet: no work, its place kept
                waiting.add(batch.batch_id)
                continue
            n = batch.node
            prev = last_node.get(n)
            if prev is not None:
                for other, since in present_since.items():
                    ready = any(b.node == other and b.batch_id not in waiting for b in pending.values())
                    if other != n and since < prev and ready:
                        assert last_node.get(other, -1) > prev, (n, other)
            prev_b = last_batch.get(batch.batch_id, batch_since[batch.batch_id])
            for b, row in pending.items():
                if row.node == n and b != batch.batch_id and b not in waiting and batch_since[b] < prev_b:
                    assert last_batch.get(b, -1) > prev_b
            order.served(batch)
            turns_taken += 1
            waiting.clear()
            last_node[n] = last_batch[batch.batch_id] = tick
            left[batch.batch_id] -= 1
            if not left[batch.batch_id]:
                del pending[batch.batch_id]
                if not any(b.node == n for b in pending.values()):
                    present_since.pop(n, None)
                    last_node.pop(n, None)
            if rng.random() < 0.3:
                arrive()
                order.admit([pending[next_id - 1]])
        assert order.batches <= set(pending) | set(range(1, next_id))
    order.keep(pending, {b.node.lower() for b in pending.values()})
    assert order.batches == frozenset(pending) and set(order.samples) <= set(pending)
    assert set(order._node_at) == {b.node.lower() for b in pending.values()}
    assert turns_taken > 300
