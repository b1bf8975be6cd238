"""Where a task's roots come from: each root it started from was written by a committed task of
its own user.

Replay checks that every memory and file access of a task follows the one before, so the one
thing a trace states from outside the task is the root it found at its first access to each
namespace (`ReplayResult.first_roots`). A node that made that root up (memories the user never
had, a file it never wrote) would steer the agent with a trace that replays clean. So every root
names the task whose write produced it (``writer``: its request hash, `NamespaceRoots.commit`),
and a validator follows it back:

* the writer must be a receipt of the same node, committed in this batch or an earlier one
  (`ReceiptIndex`, read from the node's manifests), for a request its user signed: a committed
  receipt is one the sampling, fraud and availability rules reach, so its writes were open to the
  same checks, and the user's signature keeps a node from inventing the writer (an unsigned
  receipt would only be caught if it were itself sampled);
* of the same user (another user's memory is never this user's);
* and its committed trace (the one whose hash the receipt commits) must record the write that
  produced the root, on top of the root's ``prev``, and the root must be exactly that previous root
  with that one change (a root that names a real task which never wrote it is as made up as one
  naming none).

The same holds for every root below it, down to the empty one: the walk follows ``prev`` until it
reaches a root this validator already found sound (`Database.root_verified`), so a made-up root
cannot be laundered through a writer that is itself never checked, and each root is judged once.
What a write wrote (the entry's text) is the writer's agent's work, checked when the writer is
sampled; what stays the node's word is *which* of the user's roots it shows a task (an older one,
or none): docs/validator.md, "Known limits".
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from supernet.node.kernel.memory import ROOT_TYPE as MEMORY_ROOT_TYPE
from supernet.node.kernel.memory import with_entry
from supernet.node.kernel.namespaces import root_object
from supernet.node.kernel.storage import ROOT_TYPE as FS_ROOT_TYPE
from supernet.node.kernel.storage import normalize_path, with_version
from supernet.sdk.chain.eip712 import Domain, hash_task_request, recover_task_request
from supernet.sdk.chain.omission import ManifestChallenge, ManifestStatus
from supernet.sdk.chain.receipts import Receipt
from supernet.sdk.formats.manifest import ManifestEntry
from supernet.sdk.formats.trace import ROOT_WRITES, Trace, VerifiedWitness
from supernet.sdk.store.cids import canonical_cid, cid_of_digest, decode_dag
from supernet.validator.consistency import check_receipt, check_trace_hash
from supernet.validator.db import BatchRow, Database, ReceiptRow
from supernet.validator.evidence import Check, Finding
from supernet.validator.search_check import entry_texts_of
from supernet.validator.trace_view import parse_trace_block

if TYPE_CHECKING:  # the verifier uses this module
    from supernet.validator.verifier import DagStore, Manifest

log = logging.getLogger(__name__)

MAX_WALK = 512
"""Roots not yet found sound that one check walks down through their writers' traces; a longer
unchecked history is unverifiable here (each root is judged once, so a validator that follows a
node keeps up). Roots whose writes were read in their window (`writes`) are lookups and do not
count, up to `MAX_RECORDED`."""
MAX_RECORDED = 1 << 16
"""Recorded writes one check follows at most (a database lookup each)."""

READ_IN_WINDOW = ("read", "another task's trace", "no signed request", "unreadable witness")
"""`WriteLog` statuses of an entry whose committed trace was read in its window: every sound write
it records is in the ``writes`` table, so a root naming it that is not there is a finding."""

UNREADABLE_RETRY_S = 30.0
"""First wait before a manifest that could not be read is tried again (it doubles, to an hour)."""


class OriginUnknown(Exception):
    """Whether a receipt is committed cannot be told yet (a manifest of the node is unreadable).

    Attributes:
        batches: the batches whose manifests could not be read.
    """

    def __init__(self, message: str, batches: tuple[int, ...] = ()) -> None:
        super().__init__(message)
        self.batches = batches


class ManifestClaims(Protocol):
    """What the chain says of a batch's manifest challenge (`TaskManagerClient`)."""

    def batch_manifest(self, batch_id: int) -> ManifestChallenge | None: ...

    def manifest_receipts(self, batch_id: int) -> list[Receipt] | None: ...

    def entry_refused(self, batch_id: int, index: int) -> bool: ...


class ReceiptIndex:
    """Where a node's committed receipts are, by request hash: read from its batches' manifests,
    once each, into the validator's database.

    Only entries whose receipt passes `check_receipt` (the node's signed leaf, a request its user
    signed, receipt fields equal to the request's) and whose ``traceCid`` is the trace the receipt
    commits (``traceHash``; the manifest's CID is not under the batch root) are indexed: a writer
    must be a task the user asked for, read through its committed trace. Checking runs in a
    worker thread; a manifest that cannot be read is retried with back-off, not on every lookup.

    The chain's word on a batch's manifest comes first (``claims``): a batch whose manifest
    challenge was answered is indexed from the receipts the node posted (each receipt's trace CID
    is its ``traceHash``; the writer's trace then carries the user's signed request, checked by the
    walk), and a batch whose node let its manifest challenge go unanswered holds no writer, for
    every validator alike, whatever the node serves later (it was slashed for it: a manifest shown
    only once a reader is accused would otherwise win the accused the vote).

    Args:
        db: the validator's database (its ``batches`` come from the follower, from the deploy
            block on, so every committed batch is there).
        manifest: the batch's manifest, checked against its committed root (`Disputes.manifest`:
            fetched, else the entries posted on chain); any error it raises means "unreadable".
        domain: the deployment's EIP-712 domain (the requests' signatures).
        claims: the chain's manifest challenges (None: not consulted, as in unit tests of the walk).
    """

    def __init__(
        self,
        db: Database,
        manifest: Callable[[BatchRow], Awaitable[Manifest]],
        domain: Domain,
        claims: ManifestClaims | None = None,
    ) -> None:
        self.db = db
        self._manifest = manifest
        self._domain = domain
        self._claims = claims
        self._retry: dict[int, tuple[float, float]] = {}  # batch -> (next try, back-off), monotonic
        self._settled: dict[int, ManifestStatus] = {}  # batch -> its manifest claim's final outcome

    def forget(self, batch_ids: Iterable[int]) -> None:
        """Batches a reorg undid (`Follower.on_undo`): their ids may now hold other batches."""
        for batch_id in batch_ids:
            self._retry.pop(batch_id, None)
            self._settled.pop(batch_id, None)

    @property
    def domain(self) -> Domain:
        """The deployment's EIP-712 domain."""
        return self._domain

    async def locate(self, node: str, request_hash: str, up_to_batch: int) -> ReceiptRow | None:
        """The receipt of ``node`` for ``request_hash`` in its batches up to ``up_to_batch``.

        Returns:
            None when no such receipt is committed (every manifest up to there read in full).

        Raises:
            OriginUnknown: not found, and a manifest of the node up to there is unreadable (the
                receipt may be in it): the caller retries later.
        """
        found = await self._first_shown(node, request_hash, up_to_batch)
        if found is None:
            unreadable = [
                b.batch_id for b in self.db.unindexed_batches(node, up_to_batch) if not await self.read(b)
            ]
            found = await self._first_shown(node, request_hash, up_to_batch)
            if found is None and unreadable:
                raise OriginUnknown(
                    f"the manifests of batches {unreadable} of {node} are unreadable", tuple(unreadable)
                )
        return found

    async def _first_shown(self, node: str, request_hash: str, up_to_batch: int) -> ReceiptRow | None:
        """The first receipt for the request in a batch whose manifest the node did not refuse to
        show on chain (one indexed from its manifest before the refusal does not count)."""
        for row in self.db.find_receipts(node, request_hash, up_to_batch):
            if await self.claimed(row.batch_id) != ManifestStatus.UNANSWERED:
                return row
        return None

    async def claimed(self, batch_id: int) -> ManifestStatus | None:
        """The final outcome of the batch's manifest claim (None: none, or still open)."""
        if batch_id not in self._settled and self._claims is not None:
            claim = await asyncio.to_thread(self._claims.batch_manifest, batch_id)
            if claim is not None and claim.status in (ManifestStatus.ANSWERED, ManifestStatus.UNANSWERED):
                self._settled[batch_id] = claim.status
        return self._settled.get(batch_id)

    async def entry_refused(self, batch_id: int, index: int) -> bool:
        """Whether the node let an availability challenge on the entry go unanswered (final)."""
        if self._claims is None:
            return False
        return bool(await asyncio.to_thread(self._claims.entry_refused, batch_id, index))

    async def read(self, batch: BatchRow, *, force: bool = False) -> bool:
        """Index one batch; whether all of it could be read (``force``: even before its back-off
        ends, as `ManifestWatch` asks on its own schedule)."""
        now = time.monotonic()
        next_try, backoff = self._retry.get(batch.batch_id, (0.0, UNREADABLE_RETRY_S))
        if now < next_try and not force:
            return False
        if await self._read_claimed(batch):
            self._retry.pop(batch.batch_id, None)
            return True
        try:
            manifest = await self._manifest(batch)
        except Exception as exc:  # ManifestError, or the chain's posted entries unreadable
            log.info("receipt index: manifest of batch %d unreadable: %s", batch.batch_id, exc)
            self._retry[batch.batch_id] = (now + backoff, min(2 * backoff, 3600.0))
            return False
        entries = sorted(manifest.entries.items())
        rows = await asyncio.to_thread(self._rows, batch, entries)
        complete = manifest.tree is not None or len(entries) + len(manifest.malformed) >= batch.count
        self.db.index_receipts(batch.batch_id, rows, complete=complete)
        if complete:
            self._retry.pop(batch.batch_id, None)
        else:
            self._retry[batch.batch_id] = (now + backoff, min(2 * backoff, 3600.0))
        return complete

    async def _read_claimed(self, batch: BatchRow) -> bool:
        """Index a batch from its manifest challenge's outcome; whether it had one."""
        status = await self.claimed(batch.batch_id)
        if status is None or self._claims is None:
            return False
        if status == ManifestStatus.UNANSWERED:
            log.warning(
                "receipt index: batch %d's manifest was never shown: it holds no writer", batch.batch_id
            )
            self.db.index_receipts(batch.batch_id, [], complete=True)
            return True
        receipts = await asyncio.to_thread(self._claims.manifest_receipts, batch.batch_id)
        if receipts is None:  # answered, but the log not visible yet on this RPC: next time
            return False
        node = batch.node.lower()
        rows = [
            ReceiptRow(
                batch.batch_id,
                i,
                node,
                "0x" + r.request_hash.hex(),
                r.user.lower(),
                cid_of_digest(r.trace_hash, "dag-cbor"),
            )
            for i, r in enumerate(receipts)
        ]
        self.db.index_receipts(batch.batch_id, rows, complete=True)
        return True

    def _rows(self, batch: BatchRow, entries: list[tuple[int, ManifestEntry]]) -> list[ReceiptRow]:
        return [
            ReceiptRow(
                batch.batch_id,
                i,
                batch.node.lower(),
                "0x" + e.receipt.request_hash.hex(),
                e.receipt.user.lower(),
                e.trace_cid,
            )
            for i, e in entries
            if e.request_signature is not None
            and not check_receipt(e, batch.node, self._domain)
            and not check_trace_hash(e.trace_cid, e.receipt.trace_hash)
        ]


@dataclass(frozen=True)
class OriginOutcome:
    """Findings about a trace's first roots, or why they cannot be judged yet."""

    findings: tuple[Finding, ...] = ()
    unverifiable: str | None = None
    withheld: tuple[tuple[int, int], ...] = ()
    """``(batch, index)`` of committed writers whose traces could not be read."""
    manifests: tuple[int, ...] = ()
    """Batches whose manifests could not be read, where a writer may be."""


async def check_origins(
    trace: Trace,
    first_roots: Mapping[tuple[str, str], str | None],
    index: ReceiptIndex,
    store: DagStore,
    node: str,
    batch_id: int,
) -> OriginOutcome:
    """Follow each root the task started from, and every root below it, to the committed tasks
    that wrote them. Every first root is judged: one that cannot be judged yet never hides a
    finding on another.

    Args:
        trace: the task's trace (its replay produced ``first_roots``).
        first_roots: ``(area, namespace) -> root`` of the task's first access to each namespace.
        index: where the node's committed receipts are.
        store: the content store (the writers' traces).
        node: the node that committed the task; ``batch_id``: the task's batch.
    """
    try:
        witness = VerifiedWitness(trace.witness)
    except Exception as exc:  # the replay reports a malformed witness itself
        return OriginOutcome(unverifiable=f"witness unreadable: {exc}")
    walk = _Walk(trace, witness, index, store, node, batch_id)
    findings: list[Finding] = []
    unknown: list[str] = []
    for (area, namespace), root in sorted(first_roots.items()):
        if root is None:  # an empty namespace: nothing made up to follow
            continue
        judged = await walk.follow(area, namespace, root)
        if isinstance(judged, Finding):
            findings.append(judged)
        elif judged is not None:
            unknown.append(judged)
    if findings:
        return OriginOutcome(tuple(findings))
    if not unknown:
        return OriginOutcome()
    return OriginOutcome(
        unverifiable="; ".join(unknown),
        withheld=tuple(sorted(walk.withheld)),
        manifests=tuple(sorted(walk.manifests)),
    )


class _Walk:
    """One task's origin check: its roots' blocks and its writers' traces, read once each."""

    def __init__(
        self,
        trace: Trace,
        witness: VerifiedWitness,
        index: ReceiptIndex,
        store: DagStore,
        node: str,
        batch: int,
    ) -> None:
        self.trace, self.witness, self.index, self.store = trace, witness, index, store
        self.node, self.batch = node, batch
        self._traces: dict[str, Trace] = {}
        self._witness_of: dict[str, VerifiedWitness] = {}  # each writer's trace's: its writes' roots
        self.withheld: set[tuple[int, int]] = set()  # committed writers whose traces are unreadable
        self.manifests: set[int] = set()  # batches whose manifests are unreadable

    async def follow(self, area: str, namespace: str, first: str) -> Finding | str | None:
        """None: sound; a finding; or why it cannot be judged yet (unverifiable)."""
        chain: list[str] = []
        recorded_steps = 0
        current: str | None = first
        # the first root's block is in the task's witness (its replay read it); each root below is
        # the previous step's writer's, carried in that writer's committed trace
        block = _carried(self.witness, first)
        while current is not None and not self.index.db.root_verified(self.node, current):
            where = f"the {area} root {first} of {namespace} the task started from" + (
                f" (down its history, root {current})" if current != first else ""
            )
            if len(chain) - recorded_steps >= MAX_WALK or recorded_steps >= MAX_RECORDED:
                return f"{where}: more than {MAX_WALK} roots below it not yet checked here"
            recorded = await self._recorded(area, namespace, current, where)
            if isinstance(recorded, Finding):
                return recorded
            if recorded is not None:  # its write was read in its window (`WriteLog`): sound
                chain.append(current)
                recorded_steps += 1  # a lookup, not a walk step: it does not count toward MAX_WALK
                current, block = recorded[0], None
                continue
            if block is None and chain:  # below a recorded write: the root from the store
                block = await self._stored_root(current)
            if block is None:
                return f"{where}: the root block cannot be read"
            judged = await self._one(area, namespace, current, block, where)
            if not isinstance(judged, tuple):
                return judged
            chain.append(current)
            current, block = judged
        self.index.db.mark_roots_verified(self.node, chain)
        return None

    async def _recorded(
        self, area: str, namespace: str, root: str, where: str
    ) -> tuple[str | None] | Finding | None:
        """``(prev,)`` when this validator read the write of ``root`` in its writer's window
        (`supernet.validator.writes`), checked as `_one` would; None: not recorded, or not usable
        here (committed after this task's batch, or in a batch the node refused to show)."""
        db = self.index.db
        write = db.write_of(self.node, root)
        if write is None or write.batch_id > self.batch:
            return None
        if db.refused(write.batch_id, write.index):
            return None  # read here, but refused to others on chain since: judged the slow way
        copies = db.find_receipts(self.node, write.writer, self.batch, limit=2)
        if [(c.batch_id, c.index) for c in copies] != [(write.batch_id, write.index)]:
            return None  # a request committed twice: the copy `locate` picks is the writer
        if (write.area, write.namespace) != (area, namespace):
            return Finding(Check.ORIGIN, f"{where} is a root of {write.area} of {write.namespace}")
        if write.writer == self.trace.task_id.lower():
            return Finding(Check.ORIGIN, f"{where} names this task, which had not written yet")
        if write.user != self.trace.user.lower():
            return Finding(
                Check.ORIGIN,
                f"{where} was written by a task of another user",
                expected=self.trace.user.lower(),
                claimed=write.user,
            )
        return (write.prev,)

    async def _stored_root(self, cid: str) -> Any:
        """A root below a recorded write: kept when its write was read (`WriteLog`), else from
        the store."""
        kept = self.index.db.root_block(self.node, cid)
        try:
            block = decode_dag(kept) if kept is not None else await self.store.get_dag(cid)
        except Exception:
            return None
        return block if isinstance(block, Mapping) else None

    async def _one(
        self, area: str, namespace: str, root: str, block: Any, where: str
    ) -> tuple[str | None, Any] | Finding | str:
        """Judge one root (``block`` its content): ``(its prev, the prev's block)`` when its write
        is sound."""
        writer = block.get("writer") if isinstance(block, Mapping) else None
        if not isinstance(writer, str):
            return Finding(Check.ORIGIN, f"{where} names no writer task")
        if writer.lower() == self.trace.task_id.lower():
            return Finding(Check.ORIGIN, f"{where} names this task, which had not written yet")
        try:
            receipt = await self.index.locate(self.node, writer, self.batch)
        except OriginUnknown as exc:
            self.manifests.update(exc.batches)
            return f"{where}: {exc}"
        if receipt is None:
            message = (
                f"{where} names task {writer}, no receipt of a signed request this node committed "
                f"by batch {self.batch}"
            )
            return Finding(Check.ORIGIN, message, claimed=writer)
        if receipt.user != self.trace.user.lower():
            return Finding(
                Check.ORIGIN,
                f"{where} was written by a task of another user",
                expected=self.trace.user.lower(),
                claimed=receipt.user,
            )
        if await self.index.entry_refused(receipt.batch_id, receipt.index):
            # its trace was claimed on chain and never posted: the node was slashed for it, and a
            # write nobody could see then is no write, for every validator alike (whatever the
            # node serves some of them later)
            message = f"{where} names task {writer}, whose trace the node never showed when claimed"
            return Finding(Check.ORIGIN, message, claimed=writer)
        status = self.index.db.read_status(receipt.batch_id, receipt.index)
        if status in READ_IN_WINDOW:
            # its trace was read in its window (`WriteLog`) and no sound write of this root was
            # in it: reading it again (the node may withhold it now) could only find the same
            why = "" if status == "read" else f" ({status})"
            message = f"{where} names task {writer}, whose trace, read in its window{why}, wrote no such root"
            return Finding(Check.ORIGIN, message, claimed=writer)
        written = await self._writer_trace(receipt)
        if isinstance(written, str):
            return f"{where}: {written}"
        if (written.task_id.lower(), written.user.lower()) != (writer.lower(), receipt.user):
            return Finding(
                Check.ORIGIN, f"{where} names task {writer}, whose committed trace is another task's"
            )
        claimed = await self.index.claimed(receipt.batch_id) == ManifestStatus.ANSWERED
        if claimed and not signed_by(written, writer, receipt.user, self.node, self.index.domain):
            # a receipt indexed from a manifest answer carries no request (a manifest entry's
            # was checked when indexed): the trace must
            return Finding(
                Check.ORIGIN,
                f"{where} names task {writer}, whose trace carries no request its user signed to this node",
            )
        event = _write_of(written, area, namespace, root)
        if event is None:
            return Finding(
                Check.ORIGIN,
                f"{where} names task {writer}, whose committed trace wrote no such root",
                claimed=writer,
            )
        prev = block.get("prev")
        prev_cid = None if prev is None else str(prev)
        if _cid(event.prev_root) != _cid(prev_cid):
            return Finding(Check.ORIGIN, f"{where}: its writer wrote it on top of another root than its prev")
        # the writer's committed trace carries both roots of its write in its witness (its replay
        # reads them): a root below that nobody serves is the writer's fault, never a reason to
        # leave the task unjudged (which would shield a made-up root under a real writer)
        prev_block = {} if prev_cid is None else _carried(self._witness_of.get(receipt.trace_cid), prev_cid)
        if prev_block is None:
            message = f"{where}: its writer's committed trace does not carry the root it wrote on top of"
            return Finding(Check.ORIGIN, message, claimed=prev_cid)
        if dict(block) != next_root(area, namespace, prev_block, prev_cid, event, writer):
            return Finding(Check.ORIGIN, f"{where} is not its previous root with its writer's one change")
        return prev_cid, prev_block

    async def _writer_trace(self, receipt: ReceiptRow) -> Trace | str:
        if receipt.trace_cid not in self._traces:
            try:
                view = parse_trace_block(await self.store.get_block(receipt.trace_cid))
            except Exception as exc:
                self.withheld.add((receipt.batch_id, receipt.index))
                where = f"task {receipt.request_hash} (batch {receipt.batch_id} #{receipt.index})"
                return f"the trace {receipt.trace_cid} of {where}: {exc}"
            self._traces[receipt.trace_cid] = view.doc
            try:
                self._witness_of[receipt.trace_cid] = witness = VerifiedWitness(view.doc.witness)
                self.index.db.keep_entry_texts(entry_texts_of(view.doc, witness))  # for search_check
            except Exception:  # the writer's fault: its roots are then missing (a finding)
                log.info("the trace %s has an unreadable witness", receipt.trace_cid)
        return self._traces[receipt.trace_cid]


def signed_by(trace: Trace, request_hash: str, user: str, node: str, domain: Domain) -> bool:
    """Whether ``trace`` carries the request ``request_hash`` to ``node``, signed by ``user`` (a
    request signed for another node is no task of this one's, however real)."""
    if trace.request is None or trace.request_signature is None:
        return False
    if trace.request.node.lower() != node.lower():
        return False
    try:
        digest = hash_task_request(trace.request, domain)
        signer = recover_task_request(trace.request, domain, trace.request_signature)
    except Exception:  # a malformed request or signature: the writer's fault
        return False
    return "0x" + digest.hex() == request_hash.lower() and signer.lower() == user.lower()


def _carried(witness: VerifiedWitness | None, cid: str) -> Any:
    """Block ``cid`` of a witness (None: not carried, or no readable witness)."""
    if witness is None:
        return None
    try:
        return witness.block(cid)
    except (KeyError, ValueError):
        return None


def _cid(value: str | None) -> str | None:
    return None if value is None else canonical_cid(value)


def _write_of(trace: Trace, area: str, namespace: str, root: str) -> Any:
    """The event of ``trace`` that wrote ``root`` of ``namespace`` (None: none did)."""
    wanted = canonical_cid(root)
    for ev in trace.events:
        if isinstance(ev, ROOT_WRITES[area]):
            written: Any = ev  # one of the write events, each with its namespace and new root
            if written.namespace == namespace and canonical_cid(written.root) == wanted:
                return written
    return None


def next_root(
    area: str, namespace: str, prev: Mapping[str, Any], prev_cid: str | None, event: Any, writer: str
) -> dict[str, Any] | None:
    """The root ``event`` must have written on top of ``prev``, as `NamespaceRoots.commit` writes
    it and the replay holds each write to (None: the event names no valid path)."""
    if area == "memory":
        entries = with_entry(prev.get("entries") or [], event.entry)
        return root_object(MEMORY_ROOT_TYPE, namespace, {"entries": entries}, prev_cid, writer)
    try:
        path = normalize_path(event.path)
    except ValueError:
        return None
    version = getattr(event, "cid", None)  # a delete appends a tombstone
    files = with_version(prev.get("files") or {}, path, version)
    return root_object(FS_ROOT_TYPE, namespace, {"files": files}, prev_cid, writer)
