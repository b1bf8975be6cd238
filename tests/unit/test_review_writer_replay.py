"""Adversarial review of the writer replay (`WriteLog._replay_writer` -> `Validator.check_entry`)
and of the memory entry length rule (`memory.check_entry`, `embeddings.token_count`).

``test_bug_*`` tests pass while the problem they describe exists (docstring: attack, impact, fix);
``test_holds_*`` pin down what was checked and held. Real parts: the node's kernel (honest
traces), WriteLog, Verifier, the validator database, `Validator.check_entry` / `_settle` (on a
validator built from its parts: no model load, no web3), `Disputes`, `Availability`. Stand-ins:
the chain (`ReviewChain` plus the challenge calls), the store (`DictStore` plus ``put_dag``), the
manifest the node serves (`Manifests.served`), the metrics sink.
"""

from __future__ import annotations

import asyncio
import time
import unicodedata
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from supernet.node.kernel.embeddings import token_count
from supernet.node.kernel.memory import MAX_ENTRY_CHARS, MAX_ENTRY_TOKENS
from supernet.sdk.store.cids import compute_cid, encode_dag
from supernet.validator.availability import Availability
from supernet.validator.challenger import Disputes
from supernet.validator.service import Validator
from supernet.validator.tool_check import RegistryRunner
from supernet.validator.trace_view import parse_trace_block
from supernet.validator.verifier import Verifier
from supernet.validator.writes import WriteLog

from tests.embedder import SharedMiniLM
from tests.unit.test_review_manifests import memory_write
from tests.unit.test_review_writes import ReviewChain, Setup, signed
from tests.unit.test_validator_attacks import (
    DOMAIN,
    USER,
    DictStore,
    StandInScorer,
    commit_entry,
    registry,
    trace_doc,
)
from tests.unit.test_validator_attacks3 import AGENTS, Notes, Rememberer, node_task, node_trace

VALIDATOR = "0x" + "44" * 20


# -- stand-ins and harness ---------------------------------------------------------------------------


class EvidenceStore(DictStore):
    """`DictStore` that also takes evidence (``put_dag``), as the validator's store client does."""

    async def put_dag(self, doc: Any, pin: bool = False) -> str:
        return self.put(doc)


class ChallengeChain(ReviewChain):
    """`ReviewChain` plus what `Disputes.challenge` asks of the chain; ``fail_next`` makes the next
    ``open_challenge`` transaction fail (an RPC hiccup, a nonce clash, out of gas)."""

    def __init__(self) -> None:
        super().__init__()
        self.opened: list[tuple[int, int]] = []
        self.attempts = 0
        self.fail_next = False

    def leaf_challenge(self, batch_id: int, leaf: bytes) -> int:
        return 0

    def open_challenge(self, batch_id: int, index: int, *_: Any) -> int:
        self.attempts += 1
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("rpc: connection reset")
        self.opened.append((batch_id, index))
        return len(self.opened)


def validator_of(s: Setup) -> Validator:
    """A `Validator` assembled from its parts around ``s`` (what `Validator.setup` wires, minus the
    model and web3), with ``s.log`` replaying writers into the real `check_entry`."""
    s.store = EvidenceStore()
    s.chain = ChallengeChain()
    s.view.claims = s.chain
    s.index = s.view.index()
    v = object.__new__(Validator)
    v.address = VALIDATOR
    v.db, v.store, v._on_event, v.chain = s.view.db, s.store, None, s.chain  # type: ignore[assignment]
    v.metrics = SimpleNamespace(on_event=lambda kind, data: None)  # type: ignore[assignment]
    v.verifier = Verifier(
        s.store, StandInScorer(), RegistryRunner(s.store), DOMAIN, VALIDATOR, agents=registry(AGENTS)
    )  # type: ignore[arg-type]
    v.disputes = Disputes(s.chain, s.view.db, v.verifier, s.store, VALIDATOR)  # type: ignore[arg-type]
    v.disputes.manifest = s.view.manifest  # type: ignore[method-assign]  # what the node serves
    v.availability = Availability(s.chain, s.view.db, v.disputes, v.verifier, v._settle, backoff_s=0.0)  # type: ignore[arg-type]
    s.avail = v.availability  # type: ignore[assignment]
    s.log = WriteLog(
        s.chain, s.view.db, s.store, s.index, v.availability, backoff_s=0.0,  # type: ignore[arg-type]
        replay=v.verifier.replay, diverged=v.check_entry,
    )  # fmt: skip
    return v


async def made_up_writer(s: Setup, tmp_path: Path) -> int:
    """A `Notes` task as the node's kernel ran it plus a memory entry the agent never added (the
    cheat of tests/unit/test_writer_replay.py), committed alone in a batch; the batch id."""
    task_input = {"text": "call mum"}
    req, task = node_task(Notes, task_input)
    doc = signed(await node_trace(tmp_path, Notes, task_input, task), req)
    blocks, write = memory_write(task)
    doc["events"].append(write)
    doc["witness"]["blocks"] = [*doc["witness"]["blocks"], *blocks]
    return await s.commit(commit_entry(s.store, req, task, doc))


# -- findings ----------------------------------------------------------------------------------------


async def test_defence_a_diverged_writer_whose_manifest_is_not_served_now_is_not_dropped(
    tmp_path: Path,
) -> None:
    """FIXED (`check_entry` sends an entry whose manifest is not served to the availability path,
    as a batch's checks do (`Validator._open_batch`); the diverged mark is persisted and retried
    until settled).
    ATTACK (node). Serve the batch manifest while the validators index it (ManifestWatch /
    ReceiptIndex read it once; it is then never claimed), serve the writer's trace for WriteLog,
    and stop serving the manifest. `Disputes.manifest` keeps only the last 64 manifests in RAM
    (`MANIFEST_CACHE`: flooding batches evicts it) and nothing across a restart, so when the
    replay diverges `check_entry` reloads the manifest and raises `ManifestError`.
    `_replay_writer` logs it and moves on: the entry is already ``read``, nothing is noted for
    availability, no check is recorded, and nothing ever comes back to it.
    IMPACT (high): the made-up memory write in an unsampled task escapes the writer replay (the
    whole point of the feature), at no cost to the node. A batch's checks handle the same error
    by `availability.note` for each index.
    FIX: in `check_entry`, on `ManifestError` do `self.availability.note(batch, index, ...)` (its
    retry verifies the entry in full once readable, then claims it); more generally, persist the
    "diverged" mark (a table row) and retry `check_entry` until it records a check, instead of a
    one-shot call whose exceptions are swallowed."""
    s = Setup()
    v = validator_of(s)
    b = await made_up_writer(s, tmp_path)
    del s.view.served[b]  # indexed: from now on the node serves the trace only

    await s.log.step(chain_now=10)
    assert s.status(b, 0) == "read"
    assert v.db.checks(b) == []  # not verifiable without its manifest ...
    assert [(m.batch_id, m.index) for m in v.db.missing()] == [(b, 0)]  # ... so the availability path
    assert v.db.diverged_pending() == []  # handed on: settled here


async def test_defence_a_failed_challenge_of_an_unsampled_writer_is_sent_again(tmp_path: Path) -> None:
    """FIXED (the diverged mark stays until the challenge is sent; the step retries it, and
    `check_entry` re-sends the challenge of a recorded faulty check).
    ATTACK (none needed; or a node that makes the validators' RPC / gas flaky). `_settle`
    records the faulty verdict first, then opens the challenge; if that transaction fails (RPC
    error, nonce clash, gas spike) the exception leaves `check_entry`, `_replay_writer` logs it,
    and the entry keeps a faulty check with ``challenge_id`` None. Only a pending batch's opening
    (`Validator._open_batch`) re-sends
    such challenges (`_retry_challenge`), and only for *sampled* indexes; `check_entry` itself
    returns at once for an entry with any recorded check.
    IMPACT (medium): a diverging writer no validator sampled is found faulty and never challenged:
    the escape the writer replay closes reopens on one failed transaction per validator.
    FIX: retry unsent challenges of every recorded faulty check (e.g. in `Disputes` or the step:
    ``checks WHERE NOT ok AND challenge_id IS NULL AND evidence_cid IS NOT NULL``), not only the
    sampled ones; or let `check_entry` re-send when its recorded check is faulty and unsent."""
    s = Setup()
    v = validator_of(s)
    chain: ChallengeChain = s.chain  # type: ignore[assignment]
    b = await made_up_writer(s, tmp_path)
    chain.fail_next = True

    await s.log.step(chain_now=10)
    [check] = v.db.checks(b)
    assert not check.ok and check.evidence_cid and check.challenge_id is None
    assert chain.attempts == 1 and chain.opened == []
    assert v.db.diverged_pending() == [(b, 0)]  # not settled: the step tries again
    await v._check_diverged(chain_now=20)
    assert chain.opened == [(b, 0)] and v.db.diverged_pending() == []
    [check] = v.db.checks(b)
    assert check.challenge_id == 1
    await v._check_diverged(chain_now=30)
    await v.check_entry(b, 0)
    assert chain.attempts == 2  # once sent, never again


def _slow_text() -> str:
    """An entry text at the char limit that is slow to tokenise (one token per character; the
    token rule refuses it, but only after tokenising all of it)."""
    return "!?" * (MAX_ENTRY_CHARS // 2)


async def test_defence_witness_entry_texts_are_not_tokenised_on_the_event_loop() -> None:
    """FIXED (the texts a witness carries are kept without the token rule; a search that needs
    one checks its length in a worker thread, `check_lengths`).
    ATTACK (node, or a user-node pair). `WriteLog.writes_of` keeps the texts of *every* memory
    entry block a trace's witness carries (`entry_texts_of`), and each now goes through
    `check_entry` -> `token_count` (the HF tokenizer), synchronously on the validator's event
    loop, for every committed trace (sampled or not), before any check of the trace. A node pads
    a 1 MiB trace's witness with ~120 unreferenced "memory entry" blocks of 8192 characters.
    Before the token rule this was a dict walk; now each such trace costs every validator about a
    second (or more) of a blocked loop, and a batch of them blocks it for minutes (votes, the ops
    server's /healthz, the other parts' timeouts all wait).
    IMPACT (low-medium): cheap, network-wide CPU amplification / stall of validator steps.
    FIX: keep only the texts of entries the trace's own writes added (``MemoryAddEvent.entry``),
    run the scan in `asyncio.to_thread`, and/or skip the token check here (a text that a search
    later needs is checked then, and `keep_entry_texts` can store the verdict)."""
    s = Setup()
    text = _slow_text()
    assert len(text) <= MAX_ENTRY_CHARS
    req, task = node_task(Notes, {"text": "x"})
    blocks: list[bytes] = []
    size = 0
    i = 0
    while size < 370_000:
        raw = encode_dag(
            {"type": "supernet/memory-entry", "text": f"{i} {text}"[:MAX_ENTRY_CHARS], "metadata": {}}
        )
        blocks.append(raw)
        size += len(raw)
        i += 1
    doc = signed(trace_doc(Notes, task, USER.address, {"text": "x"}, [], "x", blocks=blocks), req)
    assert len(encode_dag(doc)) < 393_216  # under the protocol's trace cap
    b = await s.commit(commit_entry(s.store, req, task, doc))

    gaps: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0.02)
    started = time.perf_counter()
    await s.log.step(chain_now=10)
    spent = time.perf_counter() - started
    stop.set()
    await tick
    assert s.status(b, 0) == "read"
    assert token_count(text) > MAX_ENTRY_TOKENS  # refused, after tokenising it all
    # (was: one stretch of ~0.3 s and more, most of the step: the tokenising of the padding)
    assert max(gaps) < 0.15, (max(gaps), spent, len(blocks))
    # and the padding is not kept: only the entries a trace's adds name are (a database grows
    # with real adds, not with what a node pads its witnesses with)
    assert s.view.db.entry_texts([compute_cid(b, "dag-cbor") for b in blocks]) == {}


async def test_holds_a_diverged_writer_is_challenged_once(tmp_path: Path) -> None:
    """A diverging unsampled writer is verified in full and challenged (`check_entry`), once: a
    second replay of it (or a later `check_entry`) sends nothing more, and an honest writer read
    alongside is neither checked nor challenged."""
    s = Setup()
    v = validator_of(s)
    chain: ChallengeChain = s.chain  # type: ignore[assignment]
    task_input = {"text": "buy milk"}
    req, task = node_task(Notes, task_input)
    honest = signed(await node_trace(tmp_path, Notes, task_input, task), req)
    b1 = await s.commit(commit_entry(s.store, req, task, honest))
    b2 = await made_up_writer(s, tmp_path)
    await s.log.step(chain_now=10)
    assert chain.opened == [(b2, 0)]
    assert v.db.checks(b1) == []
    [check] = v.db.checks(b2)
    assert not check.ok and check.challenge_id == 1
    await v.check_entry(b2, 0)
    await s.log.step(chain_now=20)
    assert chain.opened == [(b2, 0)]


async def test_holds_the_token_rule_refuses_alike_on_the_node_and_in_the_replay(tmp_path: Path) -> None:
    """A user cannot make the node's and the validator's entry-length checks disagree: the replay
    gets the very code points the node's agent got (the input is in the trace as dag-cbor, which
    neither normalises), and both run the same `check_entry` in the dispatcher. Checked: an NFD
    text over `MAX_ENTRY_CHARS` code points whose NFC form is under it (refused by the char rule
    on both sides); a text over `MAX_ENTRY_TOKENS` tokens but under the char limit (refused by the
    token rule, its count in the error message); a text of exactly `MAX_ENTRY_TOKENS` tokens
    (written). Each honest trace replays clean."""
    nfd = ("e\u0301 " * 3000)[: MAX_ENTRY_CHARS + 10]
    assert len(nfd) > MAX_ENTRY_CHARS >= len(unicodedata.normalize("NFC", nfd))
    long_tokens = " ".join(["word"] * (MAX_ENTRY_TOKENS + 5))
    assert token_count(long_tokens) > MAX_ENTRY_TOKENS and len(long_tokens) <= MAX_ENTRY_CHARS
    exact = " ".join(["word"] * (MAX_ENTRY_TOKENS - 2))
    assert token_count(exact) == MAX_ENTRY_TOKENS
    verifier = Verifier(
        DictStore(), StandInScorer(), RegistryRunner(DictStore()), DOMAIN, VALIDATOR, agents=registry(AGENTS)
    )  # type: ignore[arg-type]
    embedder = SharedMiniLM()
    kinds = {}
    for name, fact in (("nfd", nfd), ("tokens", long_tokens), ("exact", exact)):
        req, task = node_task(Rememberer, {"fact": fact})
        doc = signed(await node_trace(tmp_path, Rememberer, {"fact": fact}, task, embedder=embedder), req)
        trace = parse_trace_block(encode_dag(doc)).doc
        outcome = await verifier.replay(trace)
        assert outcome.findings == () and outcome.unverifiable is None, (name, outcome)
        kinds[name] = [e["kind"] for e in doc["events"]]
        assert compute_cid(encode_dag(doc), "dag-cbor")
    assert kinds["exact"] == ["memory.add", "memory.search"]
    assert "memory.add" not in kinds["nfd"] and "memory.add" not in kinds["tokens"], kinds
