"""Adversarial review of "a task whose roots' origins cannot be read yet is not recorded as checked"
(`Verdict.origin_pending` / ``withheld``, `Availability.await_origins` / ``_recheck`` /
``_closing``, `Database.add_awaiting`), and of the follower recording every batch from the deploy
block (``history``).

Written as ``test_bug_*`` tests that passed while each problem existed; the fixed ones now assert
the defence (``test_defence_*``, the docstring saying what the problem was and how it was
fixed); all six are fixed.

The availability path runs for real here (`Availability` on the validator's real database, the
service's own `Validator._settle`); only the chain (`FakeTaskManager`: windows, availability
challenges), the manifests and the verifier's answers are stand-ins, so each test can play the
node's timing exactly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from supernet.node.agents.base import Agent
from supernet.node.agents.context import AgentContext
from supernet.node.agents.registry import AgentRegistry
from supernet.node.kernel.access import namespace_of
from supernet.node.kernel.replay import replay
from supernet.sdk.chain.merkle import ReceiptTree
from supernet.sdk.chain.tasks import AvailabilityStatus
from supernet.sdk.store.cids import compute_cid, encode_dag, link
from supernet.validator.availability import Availability
from supernet.validator.chain import BatchCommitted, ChainEvent
from supernet.validator.db import BatchRow, Database
from supernet.validator.evidence import Check, Finding, Verdict
from supernet.validator.follower import Follower
from supernet.validator.origin_check import ReceiptIndex
from supernet.validator.service import Validator
from supernet.validator.tool_check import RegistryRunner
from supernet.validator.verifier import Manifest, ManifestError, Verifier

from tests.unit.test_root_origins import two_notes
from tests.unit.test_validator_attacks import (
    DOMAIN,
    MODEL_ID,
    NODE,
    USER,
    DictStore,
    commit_entry,
    searched,
    signed_task,
    trace_doc,
    verify,
)
from tests.unit.test_validator_attacks3 import AGENTS, StubTokenizer, TokenizingScorer

DAY = 86_400
"""CHALLENGE_WINDOW and VOTE_WINDOW by default (TaskManager's constructor docs: 1 day each)."""

LEAF = b"\x01" * 32


# -- stand-ins ---------------------------------------------------------------------------------------


class FakeTaskManager:
    """The TaskManager as the availability path sees it: batches' commit times, the challenge
    window, and availability challenges (answered within VOTE_WINDOW, or resolved: slashed)."""

    def __init__(self, window: int = DAY, vote_window: int = DAY) -> None:
        self.window, self.vote_window = window, vote_window
        self.now = 0
        self.committed_at: dict[int, int] = {}
        self.opened: dict[tuple[int, int], int] = {}
        self.states: dict[int, SimpleNamespace] = {}
        self.slashed: list[int] = []
        self.answered: dict[tuple[int, int], int] = {}
        self.batch = lambda b: SimpleNamespace(committed_at=self.committed_at[b])
        self.omission = None  # no OmissionManager: no manifest claims (`Availability._manifest_pending`)
        self.batch_manifest = lambda b: None

    def params(self) -> Any:
        return SimpleNamespace(challenge_window=self.window)

    def entry_availability(self, batch_id: int, index: int) -> int:
        return self.opened.get((batch_id, index), 0)

    def challenge_availability(self, batch_id: int, index: int) -> int:
        assert self.now < self.committed_at[batch_id] + self.window, "ChallengeWindowClosed"
        aid = len(self.states) + 1
        self.opened[(batch_id, index)] = aid
        self.states[aid] = SimpleNamespace(
            status=AvailabilityStatus.OPEN, deadline=self.now + self.vote_window
        )
        return aid

    def answer(self, batch_id: int, index: int) -> None:
        """The node posts the entry on chain (before the answer deadline)."""
        state = self.states[self.opened[(batch_id, index)]]
        assert self.now <= state.deadline
        state.status = AvailabilityStatus.ANSWERED
        self.answered[(batch_id, index)] = self.now

    def answered_at(self, batch_id: int, index: int) -> int:
        return self.answered.get((batch_id, index), 0)

    def reopened_at(self, batch_id: int, index: int) -> int:
        return 0  # no fraud challenge here closed without a verdict

    def availability(self, aid: int) -> Any:
        return self.states[aid]

    def resolve_availability(self, aid: int) -> int:
        self.slashed.append(aid)
        self.states[aid].status = AvailabilityStatus.UNANSWERED
        return 10**18


class FakeDisputes:
    """Manifests: readable unless the batch is in ``unreadable``; posted answers are imported."""

    def __init__(self) -> None:
        self.unreadable: set[int] = set()

    async def manifest(self, batch: BatchRow) -> Any:
        if batch.batch_id in self.unreadable:
            raise ManifestError(f"manifest of batch {batch.batch_id} not served")
        return SimpleNamespace(readable=lambda index: True, tree=True)  # the manifest read

    async def posted(self, batch: BatchRow) -> Any:
        return None

    async def challenge(self, batch: BatchRow, verdict: Verdict, cid: str) -> int:
        raise AssertionError("no fraud challenge in these scenarios")


class FakeVerifier:
    """What the real verifier would answer for each entry right now (set by the test)."""

    def __init__(self) -> None:
        self.answer: dict[tuple[int, int], Verdict] = {}

    async def verify(self, batch_id: int, node: str, index: int, manifest: Any, **kw: Any) -> Verdict:
        return self.answer[(batch_id, index)]


class EvidenceStore:
    async def put_dag(self, doc: Any, pin: bool = False) -> str:
        return "bafy-evidence"


def pending(batch_id: int, index: int, withheld: tuple[tuple[int, int], ...] = ()) -> Verdict:
    why = "origin: the trace of a writer cannot be read" if withheld else "origin: manifests unreadable"
    return Verdict(batch_id, index, LEAF, unverifiable=why, origin_pending=True, withheld=withheld)


def missing(batch_id: int, index: int) -> Verdict:
    return Verdict(batch_id, index, LEAF, unverifiable="trace unavailable: not found", missing=True)


def sound(batch_id: int, index: int) -> Verdict:
    return Verdict(batch_id, index, LEAF)


@dataclass
class Validating:
    """One validator's availability path, wired as `Validator.setup` wires it."""

    chain: FakeTaskManager = field(default_factory=FakeTaskManager)
    db: Database = field(default_factory=lambda: Database(":memory:"))
    disputes: FakeDisputes = field(default_factory=FakeDisputes)
    verifier: FakeVerifier = field(default_factory=FakeVerifier)

    def __post_init__(self) -> None:
        self.availability = Availability(
            self.chain,  # type: ignore[arg-type]
            self.db,
            self.disputes,  # type: ignore[arg-type]
            self.verifier,  # type: ignore[arg-type]
            self.settle,
            retries=4,
            backoff_s=0.0,  # every retry and recheck is due at once: the chain's clock drives the test
        )
        # the service's own `_settle` (availability note, await_origins, record_check, challenge)
        self._service = SimpleNamespace(
            availability=self.availability,
            store=EvidenceStore(),
            db=self.db,
            disputes=self.disputes,
            _emit=lambda kind, **data: None,
        )

    async def settle(self, batch: BatchRow, index: int, verdict: Verdict) -> None:
        await Validator._settle(self._service, batch, index, verdict)  # type: ignore[arg-type]

    def commit(self, batch_id: int, at: int, count: int = 4) -> BatchRow:
        self.chain.committed_at[batch_id] = at
        event = BatchCommitted(
            batch_id, NODE.address, bytes([batch_id]) * 32, count, batch_id, f"m{batch_id}", 0, 0
        )
        self.db.record_events([event], batch_id + 1)
        row = self.db.batch(batch_id)
        assert row is not None
        return row

    async def step(self, at: int) -> None:
        self.chain.now = at
        await self.availability.step(at)

    def status(self, batch_id: int, index: int) -> str | None:
        rows = [r for r in self.db.missing() if (r.batch_id, r.index) == (batch_id, index)]
        return rows[0].status if rows else None


# -- the availability path ---------------------------------------------------------------------------


async def test_defence_a_writer_served_at_its_answer_deadline_no_longer_saves_the_reader() -> None:
    """FIXED (at its window's last tenth, a reader whose writer is still withheld gets its own
    availability challenged: the node must post it, or be slashed, and the contract gives an
    entry posted late a full window from the answer, by when the writer's answer is due; the
    reader is then checked: `Availability._recheck`, `_closing` with `answered_at`). The problem: ATTACK
    (a node, default parameters):
    the node commits a task Y whose first root it made up and attributes to a real committed task W of the
    user (its LLM calls are still checked: a made-up root alone). It withholds W's trace. Every validator
    that samples Y gets ``origin_pending`` naming W:
    W is retried and its bonded availability challenge opened within a minute; Y is rechecked until its
    window's last tenth. The availability answer window is VOTE_WINDOW from the challenge (1 day by
    default), the same length as CHALLENGE_WINDOW, so the node answers W's challenge (posts W's trace) in
    the last hour of it: after Y's recheck has given up (``_closing``) and after Y's own fraud window
    closed.

    IMPACT: Y is recorded checked-and-unverifiable and can never be challenged; the node is never
    slashed (it answered in time) and pays only the gas of one posted trace. docs/validator.md says
    "a node cannot keep the tasks that read its memories unchecked by withholding their writers'
    traces: it serves them or loses stake": with the default windows it does neither. (The known
    limit "Origins withheld past the window" names the outcome, not that it costs the node nothing.)

    FIX: do not let the reader's fate depend on a deadline the node controls: e.g. when a reader is
    still pending at ``_closing`` while a withheld writer's availability challenge is open, challenge
    the reader for fraud (``origin unreadable``) and let voters weigh the writer's answer; or have
    the contract keep the fraud window of readers open until the writers' availability challenges
    end (a reader names its writers), or bound the availability answer window well below the
    challenge window (VOTE_WINDOW < CHALLENGE_WINDOW / 10) so the answer always lands before
    ``_closing``."""
    v = Validating()
    v.commit(1, at=1_000)
    y_batch = v.commit(2, at=1_060)
    v.verifier.answer[(1, 0)] = missing(1, 0)  # W's trace: withheld
    v.verifier.answer[(2, 0)] = pending(2, 0, withheld=((1, 0),))  # Y: origin pending on W
    v.chain.now = 1_120
    await v.settle(y_batch, 0, v.verifier.answer[(2, 0)])  # Y sampled and checked once
    assert (v.status(1, 0), v.status(2, 0)) == ("retrying", "awaiting")
    for t in range(1_121, 1_125):  # W's retries spent: its availability challenge opens at once
        await v.step(t)
    assert v.status(1, 0) == "challenged"
    w_deadline = v.chain.states[v.chain.opened[(1, 0)]].deadline
    y_window_end = v.chain.committed_at[2] + v.chain.window
    assert w_deadline > y_window_end  # the node may answer W after Y's own window

    await v.step(y_window_end - DAY // 10)  # Y's window's last tenth, W still withheld:
    assert v.status(2, 0) == "challenged"  # Y's availability is challenged too
    y_deadline = v.chain.states[v.chain.opened[(2, 0)]].deadline
    assert y_deadline > w_deadline  # Y's answer is due after W's

    v.chain.now = w_deadline - 60  # the node answers W's challenge in its last minute
    v.chain.answer(1, 0)
    v.verifier.answer[(1, 0)] = sound(1, 0)
    await v.step(v.chain.now)
    assert v.status(1, 0) == "answered"
    v.chain.now = y_deadline - 60  # and Y's (or it is slashed): Y gets a full window from now
    v.chain.answer(2, 0)
    fault = Finding(Check.ORIGIN, "names task W, whose committed trace wrote no such root")
    v.verifier.answer[(2, 0)] = Verdict(2, 0, LEAF, findings=(fault,))  # W's trace shows the lie
    sent: list[int] = []

    async def challenge(batch: BatchRow, verdict: Verdict, cid: str) -> int:
        sent.append(v.chain.now)
        return 9

    v.disputes.challenge = challenge  # type: ignore[method-assign]
    await v.step(v.chain.now)
    assert sent == [y_deadline - 60] and v.status(2, 0) == "answered"
    assert y_window_end < sent[0] < v.chain.answered_at(2, 0) + v.chain.window  # in Y's new window
    assert v.chain.slashed == []


async def test_defence_a_reader_whose_own_data_vanishes_while_awaiting_is_challenged() -> None:
    """FIXED (`Availability._recheck` sends an entry whose own manifest or trace is unreadable to
    the retry/availability path). The problem, ATTACK (a node): serve a task's trace and manifest just
    long enough for validators to check it once with its origin pending (a withheld writer, or an
    unreadable manifest), then stop serving the task's own data (its trace; or its manifest, once the
    validator restarts or the manifest falls out of `Disputes`' cache). `Availability._recheck` treats
    "the entry's own data cannot be read" (`_verdict` is None) like "still pending": it backs off and, at
    ``_closing``, marks the entry ``expired`` with no verdict recorded and no availability challenge ever
    opened on it.

    IMPACT: the task escapes both the fraud check and the availability challenge (which would
    force its trace on chain or slash the node). A node whose task's data is missing from the start
    gets the availability challenge (shown here as the control); one that first shows the data
    and then withholds it does not, so withholding after the first look is strictly better for a
    cheater.

    FIX: in ``_recheck``, when ``_verdict`` returns None (the entry's own manifest or trace is
    unreadable), hand the entry to the retry/availability path (``status='retrying'`` with
    attempts kept, or ``_open`` at ``_closing``) instead of silently expiring it."""
    v = Validating()
    y_batch, z_batch = v.commit(2, at=1_000), v.commit(3, at=1_000)
    v.verifier.answer[(2, 0)] = pending(2, 0)  # Y: checked once, origin pending
    v.chain.now = 1_100
    await v.settle(y_batch, 0, v.verifier.answer[(2, 0)])
    assert v.status(2, 0) == "awaiting"
    # then the node stops serving Y's manifest (the validator restarted: `Disputes`' cache is
    # empty; the same happens when Y's trace is no longer served: `_verdict` is None either way)
    v.disputes.unreadable.add(2)
    v.verifier.answer[(3, 0)] = missing(3, 0)  # control: Z's trace was never served
    await v.settle(z_batch, 0, v.verifier.answer[(3, 0)])
    for t in range(1_101, 1_110):
        await v.step(t)
    assert v.status(3, 0) == "challenged"  # the control is forced on chain
    assert v.status(2, 0) == "challenged"  # and so is the task whose data vanished
    assert (2, 0) in v.chain.opened


async def test_defence_a_writer_withheld_again_is_challenged_again() -> None:
    """FIXED (`Database.add_missing` re-opens an entry whose data was read before, or given up
    on: data once served can be withheld later). The problem, ATTACK (a node): the writer W of a user's
    memory was sampled and its trace, withheld at first, was served after a retry (its ``missing`` row is
    now ``fetched``; or ``checked`` / ``expired`` / ``awaiting`` after its own origin recheck). Later the
    node withholds W's trace again (a validator's store does not keep every trace it once fetched) and
    commits a reader Y whose first root claims W wrote it. Y's verdict names W in ``withheld``, but
    `Availability.note` -> `Database.add_missing` is ``INSERT OR IGNORE`` on ``(batch, idx)``: W already
    has a row, so nothing is retried and no availability challenge is opened on W. Y is rechecked until
    ``_closing`` and recorded unverifiable.

    IMPACT: once an entry has been through the availability path once, its data can be withheld
    for free whenever it is a writer: every task that reads its writes is unverifiable (and skips
    the LLM checks, which come after the origin check). No bond, no slash.

    FIX: in ``note``, re-open a row that is not currently ``retrying``/``challenged`` (reset it to
    ``retrying`` with fresh attempts, keeping the ``availability_id`` history elsewhere), or keep
    writer notes in their own table keyed by (writer, reader)."""
    v = Validating()
    w_batch, y_batch = v.commit(1, at=1_000), v.commit(2, at=1_000)
    v.chain.now = 1_010
    await v.settle(w_batch, 0, missing(1, 0))  # W sampled; its trace late at first
    v.verifier.answer[(1, 0)] = sound(1, 0)
    await v.step(1_011)
    assert v.status(1, 0) == "fetched" and v.db.checks(1)[0].ok  # served, checked clean

    v.verifier.answer[(1, 0)] = missing(1, 0)  # now W's trace is withheld again
    v.verifier.answer[(2, 0)] = pending(2, 0, withheld=((1, 0),))
    await v.settle(y_batch, 0, v.verifier.answer[(2, 0)])
    assert v.status(2, 0) == "awaiting"
    assert v.status(1, 0) == "retrying"  # W is retried again
    for t in range(1_020, 1_040):
        await v.step(t)
    assert v.status(1, 0) == "challenged" and (1, 0) in v.chain.opened  # and forced on chain


# -- the follower ------------------------------------------------------------------------------------


@dataclass
class EventChain:
    """FAKE chain for the follower: events by block, and a head."""

    events_by_block: dict[int, list[ChainEvent]]
    head_block: int

    def head(self) -> int:
        return self.head_block

    def events(self, start: int, end: int) -> list[ChainEvent]:
        return [e for b in range(start, end + 1) for e in self.events_by_block.get(b, [])]


async def test_defence_an_upgraded_validator_backfills_history_before_checking(
    tmp_path: Path,
) -> None:
    """FIXED (`Follower.backfill_history`, run at the validator's setup: the batches between the
    deploy block and the block its database began at are recorded as ``history``). The problem,
    PROBLEM (honest node accused): the fix "record every batch from the deploy block" only
    works on a fresh database. `Follower.step` starts at ``db.cursor(default=start_block)``; a
    validator that ran before this change with ``chain.start_block = S`` has its cursor past S, so
    after the upgrade the batches committed before S are never recorded (not even as ``history``).
    The receipt index then holds no receipt from before S, finds every other manifest of the node
    readable, and reports a task whose writer was committed before S as reading a root "no receipt
    of a signed request this node committed": a fraud challenge on an honest node (the very bug
    the change was made for), which the validator bonds and loses.

    A rational cheater gains too: a colluding validator that keeps an old database can open such
    challenges against a competitor at will (the vote decides, but the victim must answer).

    FIX: remember in ``meta`` the first block the follower has scanned from; on setup, when it is
    after the deploy block, backfill ``[deploy_block, first_scanned)`` as ``history`` (its own
    cursor) before checking any batch, and until that is done treat a writer not found as
    ``origin_pending`` (never a finding)."""
    (req_a, a, trace_a), (req_b, b, trace_b) = await two_notes(tmp_path)
    store = DictStore()
    entry_a, entry_b = commit_entry(store, req_a, a, trace_a), commit_entry(store, req_b, b, trace_b)
    manifests: dict[int, Manifest] = {}
    events: dict[int, list[ChainEvent]] = {}
    for batch_id, block, entry in ((1, 3, entry_a), (2, 12, entry_b)):
        tree = ReceiptTree([entry.leaf])
        manifests[batch_id] = Manifest({0: entry}, tree)
        events[block] = [
            BatchCommitted(batch_id, NODE.address, tree.root, 1, block, f"m{batch_id}", block, 0)
        ]
    chain = EventChain(events, head_block=20)

    db = Database(tmp_path / "validator.sqlite3")
    db.record_events([], 10)  # the database of a validator that ran with start_block = 10
    # the upgraded validator: follows from the deploy block (0), samples from block 10
    follower = Follower(chain, db, start_block=0, history_until=10)  # type: ignore[arg-type]
    assert follower.backfill_history() == 1  # what the validator's setup runs first
    follower.catch_up()
    assert db.batch_ids() == [1, 2] and db.batch(1).status == "history"  # type: ignore[union-attr]
    assert follower.backfill_history() == 0  # once
    fresh = Database(":memory:")
    Follower(chain, fresh, start_block=0, history_until=10).catch_up()  # type: ignore[arg-type]
    assert fresh.batch_ids() == [1, 2]  # control: a fresh database has it

    async def manifest(batch: BatchRow) -> Manifest:
        return manifests[batch.batch_id]

    verdict = await verify(
        store, req_b, b, trace_b, agents=AGENTS, origins=ReceiptIndex(db, manifest, DOMAIN), batch_id=2
    )
    assert verdict.ok and verdict.unverifiable is None  # the honest task verifies clean
    control = await verify(
        store, req_b, b, trace_b, agents=AGENTS, origins=ReceiptIndex(fresh, manifest, DOMAIN), batch_id=2
    )
    assert control.ok and control.unverifiable is None


# -- the verifier ------------------------------------------------------------------------------------


class Recall(Agent):
    """Recalls the user's best memory and has the model summarize it (memory, then one LLM call)."""

    agent_id = "recall"
    description = "Summarizes what the user's memory holds about the question."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        hits = await ctx.memory.search(str(input["q"]), k=1)
        text = hits[0].text if hits else "nothing"
        reply = await ctx.llm.chat([{"role": "user", "content": f"Summarize: {text}"}], max_new_tokens=16)
        return reply.text


async def recall_trace(writer: str | None) -> tuple[Any, str, dict[str, Any]]:
    """A `Recall` task answered from a root naming ``writer``, with the model's reply holding a
    token id outside the model's vocabulary (100): a fault the validator finds without any model."""
    task_input = {"q": "What is the launch code?"}
    req, task_id = signed_task(Recall, task_input)
    ns = namespace_of(USER.address, Recall.agent_id)
    entry_raw = encode_dag({"type": "supernet/memory-entry", "text": "The code is 0000.", "metadata": {}})
    entry = compute_cid(entry_raw, "dag-cbor")
    root_raw = encode_dag(
        {
            "type": "supernet/memory-root",
            "namespace": ns,
            "entries": [link(entry)],
            "prev": None,
            "writer": writer,
        }
    )
    root = link(compute_cid(root_raw, "dag-cbor"))
    msgs = [{"role": "user", "content": "Summarize: The code is 0000."}]
    draft = {
        "kind": "llm", "index": 0, "model_id": MODEL_ID, "messages": msgs, "prompt_ids": [1],
        "output_ids": [17, 150, 21], "params": {"max_new_tokens": 16, "temperature": 0.0, "top_p": 1.0,
        "seed": 0, "stop_token_ids": None, "stop": []}, "finish_reason": "stop", "logprobs": [-0.1] * 3,
        "fingerprints": [], "text": "", "preemptions": 0,
    }  # fmt: skip
    events = [*searched(ns, task_input["q"], root, link(entry), "The code is 0000."), draft]
    blocks = [root_raw, entry_raw]
    probe = await replay(
        trace_doc(Recall, task_id, USER.address, task_input, events, "", blocks=blocks),
        Recall,
        StubTokenizer(),
    )
    doc = trace_doc(Recall, task_id, USER.address, task_input, probe.events, probe.output, blocks=blocks)
    again = await replay(doc, Recall, StubTokenizer())
    assert again.divergences == [], again.divergences  # the trace replays clean
    return req, task_id, doc


async def verify_recall(
    store: DictStore, req: Any, task_id: str, doc: dict[str, Any], origins: Any, batch_id: int
) -> Verdict:
    entry = commit_entry(store, req, task_id, doc)
    agents = AgentRegistry()
    agents.register(Recall)
    verifier = Verifier(
        store,
        TokenizingScorer(),
        RegistryRunner(store),
        DOMAIN,
        "0x" + "44" * 20,
        agents=agents,
        origins=origins,
    )
    return await verifier.verify(batch_id, NODE.address, 0, Manifest({0: entry}))


async def test_defence_an_unreadable_manifest_no_longer_hides_the_llm_faults(
    tmp_path: Path,
) -> None:
    """FIXED IN PART (the verifier runs every other check while a task's origin is pending, and a
    fault they find is settled at once: `_Head.origin`). What stays open (docs/validator.md "Known
    limits", "Origins withheld past the window"): the made-up root itself is pending while the
    node's manifest is incomplete, and recorded unverifiable at the window's end. The problem,
    ATTACK (a node): keep ONE of its batches' manifests unreadable for ever: never serve it and,
    when validators challenge the entries they sampled, answer those on chain only (a posted
    manifest with fewer entries than the batch's count is never ``complete`` in the receipt index,
    so it stays "unreadable" after the batch's window has closed; with the follower now recording
    every batch from the deploy block, an old pruned batch does as well). From then on, a task
    whose first root names a writer that was NEVER committed (made up) is not a finding:
    `ReceiptIndex.locate` raises `OriginUnknown` because the writer "may be" in that batch, the
    verdict is ``origin_pending`` with ``withheld == ()`` (no entry to send to the availability
    path), the task is rechecked until ``_closing`` and recorded unverifiable. And because the
    verifier returns as soon as the origin is pending, none of the task's LLM checks run: here an
    output token outside the model's vocabulary (found with no model at all) goes unflagged.

    IMPACT: one stale batch buys the node unverifiable made-up memories AND free rein on the model
    for every task that reads memory or files (it runs a cheap model, or none), at the cost of the
    gas to post a few sampled entries once. The same early return makes every voter whose
    origin check is pending abstain (`Disputes._vote_one` skips unverifiable verdicts), so a
    challenge on such a task's LLM fault, opened by a validator that could read everything, can
    fail for want of votes. The documented limit speaks of a *writer's* manifest;
    the writer need not exist.

    FIX: (1) run the task's other checks (tokens, grammar, scoring) even while its origin is
    pending and settle a fault they find at once (only the origin part waits); (2) have each root
    name its writer's batch and index, so only that batch's manifest matters (and its entry can be
    availability-challenged), or treat a manifest that was partially posted and whose window has
    closed as read (its missing entries are not committed receipts a writer could be)."""
    stranger = "0x" + "5a" * 32  # a writer that was never committed (made up)
    req, task_id, doc = await recall_trace(stranger)
    store = DictStore()
    # control: the same trace, its roots not followed: the LLM fault is found
    plain = await verify_recall(store, req, task_id, doc, origins=None, batch_id=2)
    assert any(f.check == Check.LLM_SHAPE for f in plain.findings), plain.findings

    # the node's batch 1: two receipts, only entry 0 posted on chain (tree None), never complete
    (req_a, a, trace_a), _ = await two_notes(tmp_path)
    posted_entry = commit_entry(store, req_a, a, trace_a)
    other_entry = dataclasses.replace(posted_entry, trace_cid="bafy-never-served")  # entry 1, never posted
    y_entry = commit_entry(store, req, task_id, doc)
    tree_1, tree_2 = ReceiptTree([posted_entry.leaf, other_entry.leaf]), ReceiptTree([y_entry.leaf])
    db = Database(":memory:")
    db.record_events([BatchCommitted(1, NODE.address, tree_1.root, 2, 1, "m1", 1, 0)], 2)
    db.record_events([BatchCommitted(2, NODE.address, tree_2.root, 1, 2, "m2", 2, 0)], 3)
    whole = False

    async def manifest(batch: BatchRow) -> Manifest:
        if batch.batch_id == 2:
            return Manifest({0: y_entry}, tree_2)
        if whole:
            return Manifest({0: posted_entry, 1: other_entry}, tree_1)
        return Manifest({0: posted_entry}, None, proofs={0: ()})  # only what was posted on chain

    verdict = await verify_recall(
        store, req, task_id, doc, origins=ReceiptIndex(db, manifest, DOMAIN), batch_id=2
    )
    checks = {f.check for f in verdict.findings}
    assert Check.LLM_SHAPE in checks and Check.ORIGIN not in checks  # the LLM fault: found now
    assert not verdict.origin_pending  # settled (challenged) at once
    # control: with batch 1's manifest read whole, both faults are found
    whole = True
    found = await verify_recall(
        store, req, task_id, doc, origins=ReceiptIndex(db, manifest, DOMAIN), batch_id=2
    )
    assert {f.check for f in found.findings} >= {Check.ORIGIN, Check.LLM_SHAPE}, found.findings


async def test_defence_a_fault_found_on_recheck_is_challenged_after_a_failed_try() -> None:
    """FIXED (the ``missing`` row is updated only after `_settle` returned: `Availability._conclude`;
    a failed settle is redone on the next step). The problem, PROBLEM (an awaiting entry lost):
    `Availability._recheck` marks the entry ``checked`` *before* settling it, and the entry's batch was
    marked ``done`` when it went ``awaiting``
    (`Validator._group_checks` finishes the batch after `_settle`). When the recheck finds the
    task faulty (its writer's trace is served at last and shows the root was made up), `_settle`
    records the check and opens the fraud challenge; if that transaction fails once (an RPC
    timeout, a nonce race, the bond's balance briefly short, the store down while publishing the
    evidence), the step raises and is retried, but nothing picks the entry up again: the
    ``missing`` row is ``checked`` (no more rechecks) and the only retry of an unsent challenge,
    `Validator._retry_challenge`, runs from `_open_batch` for *pending* batches only. (The same
    holds for the ``fetched`` / ``answered`` settles of `_retry` / `_follow`, which this change now
    also routes awaiting entries through.)

    IMPACT: a faulty task a validator caught is never challenged after one transient failure; a
    node that can provoke one (e.g. make the evidence publish or the chain call slow at the moment
    it serves the writer's trace) keeps its fraud unchallenged.

    FIX: update the ``missing`` row only after `_settle` returned (so a failed step rechecks it),
    and retry unsent challenges from every recorded faulty check (``ok = 0``, ``challenge_id IS
    NULL``, evidence set, window still open) in `step`, not only from pending batches."""
    v = Validating()
    y_batch = v.commit(2, at=1_000)
    v.chain.now = 1_010
    await v.settle(y_batch, 0, pending(2, 0, withheld=((1, 0),)))
    v.db.finish_batch(2)  # what `_group_checks` does after settling its sample
    assert v.status(2, 0) == "awaiting"
    fault = Finding(Check.ORIGIN, "names task W, whose committed trace wrote no such root")
    v.verifier.answer[(2, 0)] = Verdict(2, 0, LEAF, findings=(fault,))  # W's trace served at last
    attempts: list[int] = []

    async def challenge(batch: BatchRow, verdict: Verdict, cid: str) -> int:
        attempts.append(v.chain.now)
        if len(attempts) == 1:
            raise ConnectionError("rpc timeout")
        return 7

    v.disputes.challenge = challenge  # type: ignore[method-assign]
    try:
        await v.step(1_020)
    except ConnectionError:
        pass  # the service logs the failed step and runs the next one
    for t in range(1_030, 1_100):
        await v.step(t)
    assert attempts == [1_020, 1_030]  # tried again on the next step, and sent
    [check] = v.db.checks(2)
    assert not check.ok  # the fault, recorded once
    assert v.status(2, 0) == "checked"
