"""Adversarial review of the manifest challenge (`OmissionManager.challengeManifest` /
``answerManifest`` / ``resolveManifest``, `ReceiptIndex.claimed` / ``_read_claimed`` / ``locate``,
`ManifestWatch`, `Availability._manifests_pursued`).

Written as ``test_bug_*`` tests that passed while each problem existed (docstring: PROBLEM, FIX);
all six were fixed and the tests turned into ``test_defence_*`` (FIXED: how), one into a
``test_known_limit_*`` (what remains, and why); ``test_holds_*`` tests pin down what was checked
and held. The chain is a stand-in
(`FakeChain`: batch headers, the challenge window, manifest claims and their posted receipts);
the receipt index, the origin walk, the verifier, the validator database and `ManifestWatch`
are the real ones.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from types import SimpleNamespace
from typing import Any

from eth_account import Account
from eth_utils import keccak
from supernet.node.kernel.access import namespace_of
from supernet.sdk.chain.eip712 import hash_task_request, sign_task_request
from supernet.sdk.chain.merkle import ReceiptTree
from supernet.sdk.chain.omission import ManifestChallenge, ManifestStatus
from supernet.sdk.chain.receipts import Receipt
from supernet.sdk.formats.manifest import ManifestEntry
from supernet.sdk.store.cids import compute_cid, link
from supernet.validator.chain import BatchCommitted
from supernet.validator.db import BatchRow, Database
from supernet.validator.evidence import Check
from supernet.validator.manifests import ManifestWatch
from supernet.validator.origin_check import ReceiptIndex
from supernet.validator.service import Validator
from supernet.validator.turns import TurnOrder
from supernet.validator.verifier import Manifest, ManifestError

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

OTHER_NODE = Account.from_key("0x" + "09" * 32)
WINDOW = 100
"""CHALLENGE_WINDOW of the stand-in chain (seconds)."""


# -- stand-ins ---------------------------------------------------------------------------------------


class FakeChain:
    """The chain as `ManifestWatch` and `ReceiptIndex` (``ManifestClaims``) see it: batch headers,
    the challenge window, manifest claims (one per batch) and the receipts an answer posted."""

    def __init__(self, window: int = WINDOW, vote_window: int = WINDOW) -> None:
        self.window, self.vote_window = window, vote_window
        self.omission = object()  # an OmissionManager is configured
        self.committed_at: dict[int, int] = {}
        self.claims: dict[int, ManifestChallenge] = {}
        self.posted: dict[int, list[Receipt] | None] = {}
        self.claim_error: Exception | None = None
        self.claimed_batches: list[int] = []
        self.rpc = 0  # every read of the chain

    def batch(self, batch_id: int) -> Any:
        self.rpc += 1
        return SimpleNamespace(committed_at=self.committed_at[batch_id])

    def params(self) -> Any:
        return SimpleNamespace(challenge_window=self.window)

    def batch_manifest(self, batch_id: int) -> ManifestChallenge | None:
        self.rpc += 1
        return self.claims.get(batch_id)

    def manifest_receipts(self, batch_id: int) -> list[Receipt] | None:
        self.rpc += 1
        return self.posted.get(batch_id)

    def set_claim(self, batch_id: int, status: ManifestStatus, deadline: int = 0) -> None:
        self.claims[batch_id] = ManifestChallenge(
            batch_id, "0x" + "cc" * 20, deadline, status, NODE.address, batch_id
        )

    def challenge_manifest(self, batch_id: int) -> int:
        if self.claim_error is not None:
            raise self.claim_error
        self.claimed_batches.append(batch_id)
        self.set_claim(batch_id, ManifestStatus.OPEN, 10**9)
        return batch_id

    def resolve_manifest(self, manifest_id: int) -> int:
        raise AssertionError("not resolved in these scenarios")

    def entry_refused(self, batch_id: int, index: int) -> bool:
        return False

    def head(self) -> int:
        return 100

    def refusals(self, from_block: int, to_block: int) -> list[tuple[str, int, int]]:
        """(node, batch, -1) of every manifest claim here resolved unanswered."""
        refused = [c for c in self.claims.values() if c.status == ManifestStatus.UNANSWERED]
        return [(c.node, c.batch_id, -1) for c in refused]


class Manifests:
    """A validator's view of the node's batches: its database and the manifests the node serves."""

    def __init__(self, claims: Any = None) -> None:
        self.db = Database(":memory:")
        self.served: dict[int, Manifest] = {}
        self.fetches: dict[int, int] = {}
        self.claims = claims
        self._next = 1

    def commit(self, *entries: ManifestEntry, served: bool = True, count: int | None = None) -> int:
        batch_id, self._next = self._next, self._next + 1
        leaves = [e.leaf for e in entries] or [b"\x01" * 32]
        tree = ReceiptTree(leaves)
        n = count if count is not None else len(leaves)
        event = BatchCommitted(batch_id, NODE.address, tree.root, n, batch_id, f"m{batch_id}", 0, 0)
        self.db.record_events([event], batch_id + 1)
        if served:
            self.served[batch_id] = Manifest(dict(enumerate(entries)), tree)
        return batch_id

    async def manifest(self, batch: BatchRow) -> Manifest:
        self.fetches[batch.batch_id] = self.fetches.get(batch.batch_id, 0) + 1
        if batch.batch_id not in self.served:
            raise ManifestError(f"manifest {batch.manifest_cid} not served")
        return self.served[batch.batch_id]

    def index(self) -> ReceiptIndex:
        return ReceiptIndex(self.db, self.manifest, DOMAIN, claims=self.claims)


def memory_write(task: str) -> tuple[list[bytes], dict[str, Any]]:
    """A made-up memory root naming ``task`` as its writer, and the write event that produced it."""
    blocks, root, _ = made_up_memory(task)
    ns = namespace_of(USER.address, "memq")
    write = {"kind": "memory.add", "namespace": ns, "entry": link(compute_cid(blocks[1], "dag-cbor")),
             "root": root, "prev_root": None}  # fmt: skip
    return blocks, write


async def reader_verdict(store: DictStore, index: ReceiptIndex, writer: str, batch_id: int) -> Any:
    """The verdict on a memory question answered from the made-up root naming ``writer``."""
    task_input = {"q": "What is the launch code?"}
    req, task_id = signed_task(MemoryQuestion, task_input)
    blocks, root, hit = made_up_memory(writer)
    events = searched(namespace_of(USER.address, "memq"), task_input["q"], root, hit)
    doc = trace_doc(
        MemoryQuestion, task_id, USER.address, task_input, events, "The launch code is 0000.", blocks=blocks
    )
    return await verify(store, req, task_id, doc, origins=index, batch_id=batch_id)


def origin_messages(verdict: Any) -> list[str]:
    assert all(f.check == Check.ORIGIN for f in verdict.findings), verdict.findings
    return [f.message for f in verdict.findings]


def writer_entry(store: DictStore, req: Any, task: str) -> ManifestEntry:
    """The committed entry of a writer task ``task`` whose trace records the made-up root's write and
    carries its signed request (as an honest node's traces do: `Kernel.submit`)."""
    _, write = memory_write(task)
    doc = trace_doc(Notes, task, USER.address, {}, [write], "x")
    doc["request"] = req.to_json()
    doc["request_signature"] = "0x" + sign_task_request(req, DOMAIN, USER).hex()
    return commit_entry(store, req, task, doc)


# -- findings ----------------------------------------------------------------------------------------


async def test_defence_answered_claim_refuses_a_request_signed_for_another_node() -> None:
    """FIXED (`signed_by` requires the request to name this node, for rows of an answered claim
    and in `WriteLog`). PROBLEM (high): a receipt indexed from an ANSWERED manifest claim is a writer
    when its trace
    carries a request the user signed (`_signed_by`: digest and signer only). The manifest path
    also required what `check_receipt` checks: the request is for *this* node (``request.node``),
    receipt model/input equal the request's, fee within maxFee. A cheating node copies a request
    its user signed for another node (requests and their signatures are public in that node's
    manifests and traces), commits a receipt for it whose trace writes the memory it wants,
    WITHHOLDS that batch's manifest so it gets claimed, and answers the claim: the made-up writer
    is now indexed and every later task of the user that reads the planted memory passes the
    origin check. Served through the manifest, the same entry is rejected: withholding is
    rewarded with a laxer check.
    FIX: in `_Walk._one`, for rows from an answered claim run the same checks as
    `check_receipt` (build a ManifestEntry from the posted receipt, the trace's request and
    request_signature, and require ``request.node == batch.node`` and equal fields), or do it once
    when indexing (`_read_claimed` cannot: it has no trace; so the walk must)."""
    store = DictStore()
    req, _ = signed_task(Notes, {"text": "a note the user asked ANOTHER node for"})
    req = dataclasses.replace(req, node=OTHER_NODE.address)  # signed for another node
    task = "0x" + hash_task_request(req, DOMAIN).hex()
    entry = writer_entry(store, req, task)

    # the node withholds batch 1's manifest; a claim is opened and the node answers it on chain
    chain = FakeChain()
    claimed = Manifests(claims=chain)
    claimed.commit(entry, served=False)
    chain.set_claim(1, ManifestStatus.ANSWERED)
    chain.posted[1] = [entry.receipt]
    verdict = await reader_verdict(store, claimed.index(), task, batch_id=2)
    assert any("no request its user signed to this node" in m for m in origin_messages(verdict))

    # control: the very same entry served in its manifest is no writer
    served = Manifests(claims=FakeChain())
    served.commit(entry)
    verdict = await reader_verdict(store, served.index(), task, batch_id=2)
    assert any(NOT_COMMITTED in m for m in origin_messages(verdict)), verdict.findings


async def test_defence_roots_verified_before_an_unanswered_claim_are_judged_again() -> None:
    """FIXED (`ManifestWatch` follows every refusal on chain, a manifest or availability claim
    resolved unanswered by anyone, and forgets that node's sound roots: `Database.
    forget_verified_roots`; a recorded write of a refused entry is not used either). PROBLEM
    (medium): docs/protocol.md says an unanswered claim makes the batch hold no writer
    "for every validator alike". `locate` applies it, but the walk never reaches `locate` for a
    root already in ``verified_roots`` (persisted), so a validator that read the manifest early
    keeps judging readers of that root sound, while one that could not read it (the claimant,
    or a validator joining later) finds an origin fraud. A node that serves the manifest to some
    validators and withholds it from others, then lets the claim go unanswered (the slash partly
    returns to it when a sock-puppet of its own opened the claim), splits the fraud vote; the
    accusing validator can lose its challenge bond (bait), and a made-up root keeps passing
    wherever it was walked early.
    FIX: when a claim resolves UNANSWERED, drop from ``verified_roots`` every root whose walk went
    through a writer of that batch (record the writer batch per verified root), or re-check the
    settled claim status of each writer batch on the memoised path (store (root, writer_batch) and
    consult `ReceiptIndex.claimed` before trusting the memo)."""
    store = DictStore()
    req, task = signed_task(Notes, {"text": "a note"})
    entry = writer_entry(store, req, task)

    chain_a = FakeChain()
    early = Manifests(claims=chain_a)  # validator A: the node served it the manifest
    early.commit(entry)
    index_a = early.index()
    assert origin_messages(await reader_verdict(store, index_a, task, batch_id=2)) == []

    chain_a.set_claim(1, ManifestStatus.UNANSWERED)  # B claimed; the node let it go unanswered
    assert await index_a.locate(NODE.address, task, 2) is None  # locate applies the rule ...
    watch = ManifestWatch(chain_a, early.db, index_a, backoff_s=0.0)  # type: ignore[arg-type]
    await watch.step(10)  # ... and A learns of the refusal from the chain: its memo is dropped
    verdict_a = await reader_verdict(store, index_a, task, batch_id=3)
    assert any(NOT_COMMITTED in m for m in origin_messages(verdict_a)), verdict_a.findings

    chain_b = FakeChain()
    chain_b.set_claim(1, ManifestStatus.UNANSWERED)
    late = Manifests(claims=chain_b)  # validator B: never served the manifest
    late.commit(entry, served=False)
    verdict_b = await reader_verdict(store, late.index(), task, batch_id=3)
    assert any(NOT_COMMITTED in m for m in origin_messages(verdict_b)), verdict_b.findings


def _step_parts(ran: list[str], manifests: Any = None, pending: list[Any] | None = None) -> SimpleNamespace:
    """A stand-in for `Validator` whose parts record, in ``ran``, the order `Validator.step` runs them."""

    async def record(name: str, *args: Any) -> None:
        ran.append(name)

    return SimpleNamespace(
        follower=SimpleNamespace(step=lambda: False),
        db=SimpleNamespace(pending_batches=lambda after=0: [b for b in pending or [] if b.batch_id > after]),
        chain=SimpleNamespace(timestamp=lambda: 45),
        manifests=manifests or SimpleNamespace(step=lambda now: record("manifests", now)),
        writes=SimpleNamespace(step=lambda now: record("writes", now)),
        _check_batches=lambda: record("batches"),
        _check_diverged=lambda now, rechecks_only=False: record(
            "rechecks" if rechecks_only else "diverged", now
        ),
        availability=SimpleNamespace(step=lambda now: record("availability", now)),
        disputes=SimpleNamespace(
            vote_open=lambda now, until=None: record("vote", now),
            settle=lambda now: record("settle", now),
        ),
    )


async def test_defence_one_failing_claim_never_stops_the_validator_step() -> None:
    """FIXED (each batch of `ManifestWatch` and each entry of `WriteLog` on its own, and
    `Validator.step` runs both isolated before availability, votes and settlement). PROBLEM
    (medium): `ManifestWatch.step` handles no error per batch, and `_claim` re-raises
    anything but ManifestAlreadyChallenged / ManifestWindowClosed. One failing claim (the
    validator's balance below CHALLENGE_BOND, a nonce clash, an RPC error in `manifest_receipts`'
    unbounded get_logs) raises out of `Validator.step` every tick, before `availability.step`,
    `disputes.vote_open` and `disputes.settle`: the validator stops voting. A cheating node can
    cause it: it withholds the manifests of many cheap batches and answers every claim; each
    answered claim costs the claimant the 10 % burn plus the answer's cost out of its bond, until
    its balance no longer covers a bond; from then on every step raises, and the node's fraud
    challenges lose that validator's vote.
    FIX: catch and log per batch in `ManifestWatch.step` (back off that batch), run the watch
    after voting/settling or isolate each sub-step in `Validator.step`, and skip claiming when
    the balance is below the bond."""
    chain = FakeChain()
    view = Manifests(claims=chain)
    for at in (0, 1):
        chain.committed_at[view.commit(served=False)] = at
    chain.claim_error = ValueError("insufficient funds for gas * price + value")
    watch = ManifestWatch(chain, view.db, view.index(), backoff_s=0.0)  # type: ignore[arg-type]
    ran: list[str] = []
    service = _step_parts(ran, manifests=watch)  # both batches near their claim deadline (50)
    await Validator.step(service)  # type: ignore[arg-type]
    assert ran == [
        "rechecks",
        "batches",
        "writes",
        "diverged",
        "availability",
        "vote",
        "settle",
    ]  # the rest ran
    assert view.fetches.get(2) == 1  # batch 2 was read despite batch 1's failing claim


async def test_defence_a_challenge_bond_it_cannot_pay_never_stops_the_step() -> None:
    """A validator whose balance cannot pay a challenge bond got "insufficient funds" from
    checking a batch, which ended the step before `settle`: the vote bonds and challenge bonds that
    would refill its balance were never claimed back, and it stalled. Now the batch stays pending
    (retried next step), the batches after it are checked, and the rest of the step runs."""
    from supernet.sdk.chain.errors import InsufficientFundsError

    ran: list[str] = []

    async def open_batch(batch: Any, groups: int | None = None, announce: bool = True) -> Any:
        ran.append(f"batch {batch.batch_id}")
        raise InsufficientFundsError("account 0x.. cannot pay for TaskManager.challenge")

    service = _step_parts(ran, pending=[SimpleNamespace(batch_id=b, node="0xn") for b in (1, 2)])
    service._open_batch = open_batch
    service._check_batches = lambda: Validator._check_batches(service)  # type: ignore[arg-type]
    service._turn = lambda *a: Validator._turn(service, *a)  # type: ignore[arg-type]
    service.turn_order = TurnOrder()
    service._stop = asyncio.Event()
    await Validator.step(service)  # type: ignore[arg-type]
    # each batch isolated: the next one is tried too (an honest batch needs no bond), both stay
    # pending, and the rest of the step runs (the re-checks due are made between turns)
    assert ran == [
        "rechecks",
        "batch 1",
        "rechecks",
        "batch 2",
        "manifests",
        "writes",
        "diverged",
        "availability",
        "vote",
        "settle",
    ]


async def test_defence_closed_unclaimed_batches_are_not_refetched() -> None:
    """FIXED (a batch past its claim deadline with no claim is read once more and then left for
    good, `ManifestWatch._done`; a validator that cannot claim reads at most every `RETRY_MAX_S`).
    PROBLEM (low, liveness/RPC): a batch whose window closed unclaimed and whose manifest was
    never served stays unindexed; `_one` drops its schedule and returns "done", but the floor only
    moves over a *prefix* of done batches. While an earlier batch is still watched (a claim open
    for its VOTE_WINDOW, or answered but its ManifestAnswered log not visible on this RPC), every
    later closed batch is fetched again on every step with no back-off: a store fetch plus three
    chain reads per batch per tick. A node that withholds many cheap batches while the validator
    cannot claim (``challenge`` off, offline through the window, or out of funds, above) makes
    each validator poll them all, every tick; the same happens for all history after a restart
    (``_floor`` and ``_schedule`` are in memory).
    FIX: record a terminal state for a closed-unclaimed batch (e.g. `index_receipts(..., complete=
    False)` plus a ``closed`` flag, or a persisted floor / schedule), and skip it in
    `unindexed_since` instead of relying on the prefix floor."""
    chain = FakeChain()
    view = Manifests(claims=chain)
    chain.committed_at[view.commit(served=False)] = 0  # batch 1: claimed late in its window
    chain.set_claim(1, ManifestStatus.OPEN, deadline=2 * WINDOW)
    chain.committed_at[view.commit(served=False)] = 10  # batch 2: never served, never claimed
    watch = ManifestWatch(
        chain,
        view.db,
        view.index(),
        backoff_s=0.0,
        challenge=False,  # type: ignore[arg-type]
    )
    now = WINDOW + 50  # batch 2's window is over; batch 1's claim is still open
    for _ in range(5):
        await watch.step(now)
    assert view.fetches[2] == 1  # a last read, then left alone
    assert chain.claimed_batches == []


async def test_known_limit_every_unread_batch_is_claimed_near_its_deadline() -> None:
    """KNOWN LIMIT (mitigated, docs/validator.md "Known limits"): claims are opened only near the
    end of the claim window, not at the first failed read (an honest node's passing outage is not
    claimed, and only the first claimant of a batch pays: others follow its claim), but every
    batch still unread then is claimed, reader or not: `WriteLog` must read every trace of the
    batch in its window, so a batch's receipts must be known whether or not a reader waits yet
    (claiming only what readers need would let a node withhold a writer's batch until its window
    closed). The griefing this allows is bounded by what it costs the node (a commit per batch)
    and public (every claim and answer is on chain). PROBLEM (medium, griefing): `ManifestWatch`
    claims EVERY batch whose manifest it cannot
    read, not only those a reader's walk waits for (``Verdict.unread_manifests``). Answering costs
    the node only gas reimbursed at the base fee (plus freezing, which an honest-looking node
    shrugs off), while each answered claim costs the claimant ANSWER_FEE_BPS of the bond (burned)
    plus the answer's cost. A node serving no manifest at all and answering every claim drains
    the validators that follow it, at the price of its commits, with no reader involved (and it
    can split batches into many one-receipt ones to multiply the claims).
    FIX: claim a batch only when a pending reader needs it (the batches in ``unread_manifests``,
    `OriginUnknown.batches`), or make an answered claim cheap for the claimant when the manifest
    was provably unavailable (e.g. the node pays the burn when it answers a claim for a manifest
    it never pinned), and rate-limit claims per node."""
    chain = FakeChain()
    view = Manifests(claims=chain)
    for at in range(6):
        chain.committed_at[view.commit(served=False)] = at
    watch = ManifestWatch(chain, view.db, view.index(), backoff_s=0.0)  # type: ignore[arg-type]
    await watch.step(10)
    assert chain.claimed_batches == []  # not at the first failed reads
    await watch.step(45)
    assert chain.claimed_batches == [1, 2, 3, 4, 5, 6]  # one bond at stake per batch, no reader


async def test_defence_a_receipt_in_an_unanswered_batch_does_not_hide_a_later_one() -> None:
    """FIXED (`ReceiptIndex.locate` skips the rows of batches refused on chain). PROBLEM (low):
    `locate` asks `find_receipt` for the FIRST row of a request hash and returns
    None when that row's batch has an unanswered claim, without looking at later rows. When the
    same request is committed twice (batch 1 refused on chain, batch 2 served and checked), the
    writer in batch 2 is ignored and the reader is an origin fraud; validators that indexed
    batch 2 only (e.g. batch 1 never read, its claim still open) judge it sound: verdicts depend
    on timing. A node re-committing receipts after a commit it believed failed hits this.
    FIX: in `locate`, skip rows of batches whose claim is UNANSWERED (query all rows for the
    hash ordered by batch, or exclude such batches in SQL once `_read_claimed` marks them)."""
    store = DictStore()
    req, task = signed_task(Notes, {"text": "a note"})
    entry = writer_entry(store, req, task)
    chain = FakeChain()
    view = Manifests(claims=chain)
    view.commit(entry)  # batch 1
    view.commit(entry)  # batch 2: the same receipt, committed again
    index = view.index()
    assert await index.locate(NODE.address, task, 2) is not None
    chain.set_claim(1, ManifestStatus.UNANSWERED)
    assert view.db.find_receipt(NODE.address, task, 2).batch_id == 1  # type: ignore[union-attr]
    found = await index.locate(NODE.address, task, 2)
    assert found is not None and found.batch_id == 2  # the receipt shown is found


# -- what holds ---------------------------------------------------------------------------------------


def _root_of(leaves: list[bytes]) -> bytes:
    """A transcription of `MerkleLib.rootOf` (in place, odd last node carried up)."""
    layer, n = list(leaves), len(leaves)
    if n == 0:
        return b"\x00" * 32
    while n > 1:
        half = n >> 1
        for i in range(half):
            layer[i] = keccak(layer[2 * i] + layer[2 * i + 1])
        if n & 1:
            layer[half] = layer[n - 1]
        n = (n + 1) >> 1
    return layer[0]


def test_holds_merkle_root_of_matches_receipt_tree() -> None:
    """`MerkleLib.rootOf` (in place, odd last node carried up) computes the same root as the
    node's `ReceiptTree` for every count (powers of two, odd layers at every level), so an honest
    node's answer always hashes to its committed root; a reordered list does not."""
    rng = random.Random(7)
    for n in [*range(1, 70), 127, 128, 129, 255, 257, 1023, 1024]:
        leaves = [rng.randbytes(32) for _ in range(n)]
        assert _root_of(leaves) == ReceiptTree(leaves).root, n
        if n > 1:
            swapped = [leaves[1], leaves[0], *leaves[2:]]
            assert _root_of(swapped) != ReceiptTree(leaves).root


async def test_holds_unanswered_claim_overrides_a_manifest_served_later() -> None:
    """An unanswered claim wins over a manifest the node serves afterwards (or had indexed):
    `read` consults the claim first and `locate` returns None for rows of that batch."""
    store = DictStore()
    req, task = signed_task(Notes, {"text": "a note"})
    entry = writer_entry(store, req, task)
    chain = FakeChain()
    chain.set_claim(1, ManifestStatus.UNANSWERED)
    view = Manifests(claims=chain)
    view.commit(entry)  # served now, after the node let the claim go unanswered
    assert await view.index().locate(NODE.address, task, 1) is None
    assert 1 not in view.fetches  # the claim's outcome came first


async def test_holds_answered_claim_indexes_the_honest_writer() -> None:
    """An honest writer in a batch whose claim was answered is found from the posted receipts
    (trace CID derived from traceHash equals the store's CID; its trace carries the signed
    request), and the reader is sound; an open claim keeps the reader pending (not accused)."""
    store = DictStore()
    req, task = signed_task(Notes, {"text": "a note"})
    entry = writer_entry(store, req, task)
    chain = FakeChain()
    view = Manifests(claims=chain)
    view.commit(entry, served=False)
    chain.set_claim(1, ManifestStatus.OPEN, deadline=10**9)
    pending = await reader_verdict(store, view.index(), task, batch_id=2)
    assert pending.findings == () and pending.origin_pending and pending.unread_manifests == (1,)
    chain.set_claim(1, ManifestStatus.ANSWERED)
    chain.posted[1] = [entry.receipt]
    answered = await reader_verdict(store, view.index(), task, batch_id=2)
    assert origin_messages(answered) == [] and answered.ok and answered.unverifiable is None


async def test_holds_answered_claim_writer_without_signed_request_is_caught() -> None:
    """A receipt posted by an answer whose trace carries no request (or one signed by the node's
    key) is no writer: the walk's `_signed_by` check."""
    store = DictStore()
    req, task = signed_task(Notes, {"text": "a note the node made up"})
    _, write = memory_write(task)
    doc = trace_doc(Notes, task, USER.address, {}, [write], "x")
    doc["request"] = req.to_json()
    doc["request_signature"] = "0x" + sign_task_request(req, DOMAIN, NODE).hex()  # not the user's
    entry = commit_entry(store, req, task, doc)
    chain = FakeChain()
    view = Manifests(claims=chain)
    view.commit(entry, served=False)
    chain.set_claim(1, ManifestStatus.ANSWERED)
    chain.posted[1] = [entry.receipt]
    verdict = await reader_verdict(store, view.index(), task, batch_id=2)
    assert any("carries no request its user signed" in m for m in origin_messages(verdict))


async def test_defence_a_stuck_claim_never_blocks_the_nodes_other_answers() -> None:
    """FIXED (`AvailabilityResponder.answer_once` answers availability challenges first and every
    claim on its own; a manifest claim past its deadline is dropped, not retried for ever).
    PROBLEM (medium, honest node slashed): the node's `_answer_manifests` answers every claim
    whose status is still OPEN without looking at its deadline, and runs before the availability
    answers in `answer_once`. A claim whose VOTE_WINDOW passed while the node was down stays OPEN
    until someone resolves it, and nobody has to: validators' `ManifestWatch` only resolves
    claims of batches it could not index, so a claimant that claimed a manifest every validator
    had read simply never resolves. ``answerManifest`` then reverts (AnswerWindowClosed) on every
    pass, the exception leaves `answer_once`, and the node answers no availability challenge
    again: each is slashed in turn (the claimant's allies open them and collect the rewards).
    Any transient failure of a large manifest answer likewise skips the availability answers of
    that pass.
    FIX: skip (and resolve, since anyone may) claims past their deadline; catch and log failures
    per claim in `_answer_manifests` / `_answer_omissions`, so one claim never blocks the others;
    answer availability challenges first."""
    from supernet.node.service.availability import AvailabilityResponder

    receipt = Receipt(b"\x11" * 32, USER.address, b"\x22" * 32, b"\x33" * 32, b"\x44" * 32, b"\x55" * 32, 1)
    claim = ManifestChallenge(7, "0x" + "cc" * 20, 100, ManifestStatus.OPEN, NODE.address, 1)
    asked: list[int] = []

    tried: list[int] = []

    def sign_answer_manifest(mid: int, ref: Any, receipts: Any) -> Any:
        tried.append(mid)
        raise RuntimeError("execution reverted: a transient failure")

    def get_availability(aid: int) -> Any:
        asked.append(aid)
        return SimpleNamespace(status=None, batch_id=1, index=0)

    om = SimpleNamespace(
        omissions_opened=lambda a, b: [],
        manifests_opened=lambda a, b: [claim],
        batch_manifest=lambda batch_id: claim,  # still OPEN: nobody resolved it
        sign_answer_manifest=sign_answer_manifest,
    )
    clock = {"now": 50}
    tm = SimpleNamespace(
        w3=SimpleNamespace(
            eth=SimpleNamespace(block_number=10, get_block=lambda _: {"timestamp": clock["now"]})
        ),
        availability_opened=lambda a, b: [
            SimpleNamespace(availability_id=3, node=NODE.address, batch_id=1, index=0, deadline=10**9)
        ],
        batch=lambda batch_id, *block_range: SimpleNamespace(batch_id=batch_id),
        get_availability=get_availability,
    )
    db = SimpleNamespace(
        batch_by_chain_id=lambda batch_id: SimpleNamespace(id=1, count=1, commit_block=None),
        batch_receipts=lambda batch_id: [SimpleNamespace(receipt_json=receipt.to_json())],
        claims_cursor=lambda: None,  # the responder's scan cursor: none kept yet
        set_claims_cursor=lambda block: None,
        answer_tx=lambda claim: None,  # the answers' outbox: none sent before
        answer_txs=lambda: [],
        drop_answer_tx=lambda claim: None,
    )
    responder = AvailabilityResponder(db, None, tm, NODE.address, 0, omission_manager=om)  # type: ignore
    await responder.answer_once()  # the manifest answer fails: retried, nothing else is blocked
    assert asked == [3] and tried == [7]
    clock["now"] = 100  # the claim's deadline passed: dropped, not retried for ever
    await responder.answer_once()
    assert tried == [7]


async def test_defence_refusals_are_followed_in_bounded_ranges() -> None:
    """FIXED (found at the end of the review, by reading: `ManifestWatch._follow_refusals` asked
    for every refusal from the deploy block to the head in one ``eth_getLogs``; a validator
    joining a long chain would have its query refused by the provider at every step, and, the
    refusals being followed first, never read a manifest). Ranges are `REFUSALS_RANGE` blocks at
    most, one per step, until the head is reached."""
    from supernet.validator.manifests import REFUSALS_RANGE

    chain = FakeChain()
    asked: list[tuple[int, int]] = []
    chain.head = lambda: 5 * REFUSALS_RANGE  # type: ignore[method-assign]
    chain.refusals = lambda a, b: asked.append((a, b)) or []  # type: ignore[method-assign]
    view = Manifests(claims=chain)
    watch = ManifestWatch(chain, view.db, view.index(), start_block=1)  # type: ignore[arg-type]
    for _ in range(6):
        await watch.step(0)
    assert all(b - a + 1 <= REFUSALS_RANGE for a, b in asked), asked
    assert asked[0][0] == 1 and asked[-1][1] == 5 * REFUSALS_RANGE  # caught up, nothing skipped
    assert all(asked[i + 1][0] == asked[i][1] + 1 for i in range(len(asked) - 1))
