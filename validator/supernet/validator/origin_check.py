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
* and its committed trace must record the write that produced the root (a root that names a real
  task which never wrote it is as made up as one naming none).

By induction every root a task starts from descends, write by write, from the empty root through
tasks the user signed and the node committed. What stays the node's word is *which* of those roots
it shows a task (an older one, or none): docs/validator.md, "Known limits".
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from supernet.sdk.chain.eip712 import Domain
from supernet.sdk.formats.trace import (
    MemoryAddEvent,
    StorageDeleteEvent,
    StoragePutEvent,
    StorageRollbackEvent,
    Trace,
    VerifiedWitness,
)
from supernet.sdk.store.cids import canonical_cid
from supernet.validator.consistency import check_receipt
from supernet.validator.db import BatchRow, Database, ReceiptRow
from supernet.validator.evidence import Check, Finding
from supernet.validator.trace_view import parse_trace_block

if TYPE_CHECKING:  # the verifier uses this module
    from supernet.validator.verifier import DagStore, Manifest

log = logging.getLogger(__name__)

# the events that write a root, by area (`ReplayResult.first_roots`)
_WRITES: dict[str, tuple[type, ...]] = {
    "memory": (MemoryAddEvent,),
    "files": (StoragePutEvent, StorageRollbackEvent, StorageDeleteEvent),
}


class OriginUnknown(Exception):
    """Whether a receipt is committed cannot be told yet (a manifest of the node is unreadable)."""


class ReceiptIndex:
    """Where a node's committed receipts are, by request hash: read from its batches' manifests,
    once each, into the validator's database.

    Only entries whose receipt passes `check_receipt` (the node's signed leaf, a request its user
    signed, receipt fields equal to the request's) are indexed: a writer must be a task the user
    asked for.

    Args:
        db: the validator's database (its ``batches`` come from the follower, from the deploy
            block on, so every committed batch is there).
        manifest: the batch's manifest, checked against its committed root (`Disputes.manifest`:
            fetched, else the entries posted on chain); any error it raises means "unreadable".
        domain: the deployment's EIP-712 domain (the requests' signatures).
    """

    def __init__(
        self, db: Database, manifest: Callable[[BatchRow], Awaitable[Manifest]], domain: Domain
    ) -> None:
        self.db = db
        self._manifest = manifest
        self._domain = domain

    async def locate(self, node: str, request_hash: str, up_to_batch: int) -> ReceiptRow | None:
        """The receipt of ``node`` for ``request_hash`` in its batches up to ``up_to_batch``.

        Returns:
            None when no such receipt is committed (every manifest up to there read in full).

        Raises:
            OriginUnknown: not found, and a manifest of the node up to there is unreadable (the
                receipt may be in it): the caller retries later.
        """
        found = self.db.find_receipt(node, request_hash, up_to_batch)
        if found is not None:
            return found
        unreadable = []
        for batch in self.db.unindexed_batches(node, up_to_batch):
            try:
                manifest = await self._manifest(batch)
            except Exception as exc:  # ManifestError, or the chain's posted entries unreadable
                unreadable.append(batch.batch_id)
                log.info("receipt index: manifest of batch %d unreadable: %s", batch.batch_id, exc)
                continue
            rows = [
                ReceiptRow(
                    batch.batch_id,
                    i,
                    node.lower(),
                    "0x" + e.receipt.request_hash.hex(),
                    e.receipt.user.lower(),
                    e.trace_cid,
                )
                for i, e in sorted(manifest.entries.items())
                if e.request_signature is not None and not check_receipt(e, node, self._domain)
            ]
            self.db.index_receipts(batch.batch_id, rows, complete=manifest.tree is not None)
            if manifest.tree is None:
                unreadable.append(batch.batch_id)
        found = self.db.find_receipt(node, request_hash, up_to_batch)
        if found is None and unreadable:
            raise OriginUnknown(f"the manifests of batches {unreadable} of {node} are unreadable")
        return found


@dataclass(frozen=True)
class OriginOutcome:
    """Findings about a trace's first roots, or why they cannot be judged yet."""

    findings: tuple[Finding, ...] = ()
    unverifiable: str | None = None


async def check_origins(
    trace: Trace,
    first_roots: Mapping[tuple[str, str], str | None],
    index: ReceiptIndex,
    store: DagStore,
    node: str,
    batch_id: int,
) -> OriginOutcome:
    """Follow each root the task started from to the committed task that wrote it.

    Args:
        trace: the task's trace (its replay produced ``first_roots``).
        first_roots: ``(area, namespace) -> root`` of the task's first access to each namespace.
        index: where the node's committed receipts are.
        store: the content store (the writer's trace).
        node: the node that committed the task; ``batch_id``: the task's batch.
    """
    findings: list[Finding] = []
    try:
        witness = VerifiedWitness(trace.witness)
    except Exception as exc:  # the replay reports a malformed witness itself
        return OriginOutcome(unverifiable=f"witness unreadable: {exc}")
    for (area, namespace), root in sorted(first_roots.items()):
        if root is None:  # an empty namespace: nothing made up to follow
            continue
        where = f"the {area} root {root} of {namespace} the task started from"
        writer = _writer(witness, root)
        if writer is None:
            findings.append(Finding(Check.ORIGIN, f"{where} names no writer task"))
            continue
        if writer.lower() == trace.task_id.lower():
            findings.append(Finding(Check.ORIGIN, f"{where} names this task, which had not written yet"))
            continue
        try:
            receipt = await index.locate(node, writer, batch_id)
        except OriginUnknown as exc:
            return OriginOutcome(tuple(findings), unverifiable=None if findings else str(exc))
        if receipt is None:
            message = (
                f"{where} names task {writer}, no receipt of a signed request this node committed "
                f"by batch {batch_id}"
            )
            findings.append(Finding(Check.ORIGIN, message, claimed=writer))
            continue
        if receipt.user != trace.user.lower():
            findings.append(
                Finding(
                    Check.ORIGIN,
                    f"{where} was written by a task of another user",
                    expected=trace.user.lower(),
                    claimed=receipt.user,
                )
            )
            continue
        try:
            written = parse_trace_block(await store.get_block(receipt.trace_cid))
        except Exception as exc:
            why = f"the trace {receipt.trace_cid} of task {writer} (batch {receipt.batch_id}): {exc}"
            return OriginOutcome(tuple(findings), unverifiable=None if findings else why)
        if not _wrote(written.doc, area, namespace, root):
            findings.append(
                Finding(
                    Check.ORIGIN,
                    f"{where} names task {writer}, whose committed trace wrote no such root",
                    claimed=writer,
                )
            )
    return OriginOutcome(tuple(findings))


def _writer(witness: VerifiedWitness, root: str) -> str | None:
    """The ``writer`` a root block names (the replay read the block, so the witness holds it)."""
    try:
        block: Any = witness.block(root)
    except (KeyError, ValueError):
        return None
    writer = block.get("writer") if isinstance(block, Mapping) else None
    return writer if isinstance(writer, str) else None


def _wrote(trace: Trace, area: str, namespace: str, root: str) -> bool:
    """Whether ``trace`` records a write of ``namespace`` that produced ``root``."""
    kinds, wanted = _WRITES[area], canonical_cid(root)
    for ev in trace.events:
        if isinstance(ev, kinds):
            written: Any = ev  # one of the write events, each with its namespace and new root
            if written.namespace == namespace and canonical_cid(written.root) == wanted:
                return True
    return False
