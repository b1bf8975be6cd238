"""The batch manifest, ``supernet/batch`` version 1: what a node commits a Merkle root over.

A node seals its receipts into a batch, puts this manifest into the content store and commits the
root of the receipts' leaves on chain (``TaskManager.commitBatch(root, count, manifestCid)``). A
validator reads it (`BatchManifest.from_dag`, strict) and checks that its leaves build the
committed root before it trusts any entry.

>>> m = BatchManifest.from_dag(BatchManifest.from_dag(example_dag()).to_dag())
>>> len(m.entries), m.entries[0].agent
(1, 'chat')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_utils import to_checksum_address
from supernet.sdk.chain.eip712 import Domain, TaskRequest, hash_task_request, recover_task_request
from supernet.sdk.chain.merkle import ReceiptTree
from supernet.sdk.chain.receipts import Receipt
from supernet.sdk.formats.fields import (
    FormatError,
    cid,
    hex0x,
    hexbytes,
    integer,
    items,
    optional,
    record,
    string,
)

MANIFEST_TYPE = "supernet/batch"
MANIFEST_VERSION = 1
MAX_MANIFEST_ENTRIES = 512
"""Most receipts a manifest may list: ``TaskManager.MAX_BATCH_COUNT``, the most a batch may commit."""


@dataclass(frozen=True)
class ManifestEntry:
    """One receipt of a batch, with what a validator needs to check it.

    Attributes:
        receipt: the receipt (its leaf is what the tree commits).
        leaf: the receipt's Merkle leaf as the node computed it.
        signature: the node's signature of the leaf (``None``: posted on chain, where the node's
            commitment of the root is its word).
        trace_cid: the trace's CID (``sha256`` of the trace block is ``receipt.trace_hash``).
        agent: the agent id that ran.
        request: the user's signed request.
        request_signature: the user's signature of ``request``.
    """

    receipt: Receipt
    leaf: bytes
    signature: bytes | None
    trace_cid: str
    agent: str
    request: TaskRequest
    request_signature: bytes | None

    def signed_by_user(self, node: str, domain: Domain) -> bool:
        """Whether the receipt is of a task its user asked of ``node`` (the committing node): the request's
        EIP-712 digest is the receipt's task id, it names ``node`` and the receipt's user, that user signed
        it, and the receipt is within it (its model, its input, and its ``maxFee`` as the fee: what the node
        charges). A receipt without this is only the node's word: any node can write a receipt in any user's
        name, under a task id it learnt from another node, or for a fee of its choosing."""
        req, signature, r = self.request, self.request_signature, self.receipt
        if signature is None or hash_task_request(req, domain) != r.request_hash:
            return False
        if (r.model_id, r.input_hash, r.fee) != (req.model_id, req.input_hash, req.max_fee):
            return False
        if to_checksum_address(req.node) != to_checksum_address(node):
            return False
        if to_checksum_address(req.user) != to_checksum_address(self.receipt.user):
            return False
        try:
            return recover_task_request(req, domain, signature) == to_checksum_address(req.user)
        except Exception:  # bytes that are no signature (eth-keys raises several types)
            return False

    def to_dag(self) -> dict[str, Any]:
        return {
            "receipt": self.receipt.to_json(),
            "leaf": hex0x(self.leaf),
            "signature": None if self.signature is None else hex0x(self.signature),
            "traceCid": self.trace_cid,
            "agent": self.agent,
            "request": self.request.to_json(),
            "requestSignature": None if self.request_signature is None else hex0x(self.request_signature),
        }

    @classmethod
    def from_dag(cls, obj: Any, path: str = "entry") -> ManifestEntry:
        """Read one entry (``FormatError`` naming the field)."""
        r = record(
            obj, path, ("receipt", "leaf", "signature", "traceCid", "agent", "request", "requestSignature")
        )
        try:
            receipt = Receipt.from_json(r["receipt"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise FormatError(f"{path}.receipt: {exc}") from None
        try:
            request = TaskRequest.from_json(r["request"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise FormatError(f"{path}.request: {exc}") from None
        return cls(
            receipt=receipt,
            leaf=hexbytes(r["leaf"], f"{path}.leaf", 32),
            signature=optional(hexbytes)(r["signature"], f"{path}.signature"),
            trace_cid=cid(r["traceCid"], f"{path}.traceCid"),
            agent=string(r["agent"], f"{path}.agent"),
            request=request,
            request_signature=optional(hexbytes)(r["requestSignature"], f"{path}.requestSignature"),
        )


@dataclass(frozen=True)
class BatchManifest:
    """A sealed batch: the committing node, the root, and the entries in tree order."""

    node: str
    root: bytes
    entries: tuple[ManifestEntry, ...]

    @classmethod
    def seal(cls, node: str, entries: list[ManifestEntry]) -> BatchManifest:
        """The manifest of ``entries``, its root built from their leaves."""
        return cls(to_checksum_address(node), ReceiptTree(e.leaf for e in entries).root, tuple(entries))

    def to_dag(self) -> dict[str, Any]:
        return {
            "type": MANIFEST_TYPE,
            "version": MANIFEST_VERSION,
            "node": self.node,
            "root": hex0x(self.root),
            "receipts": [e.to_dag() for e in self.entries],
        }

    @classmethod
    def from_dag(cls, obj: Any) -> BatchManifest:
        """Read a decoded manifest block.

        Raises:
            FormatError: not a version-1 ``supernet/batch``, or an entry malformed (named).
        """
        r = record(obj, "", ("type", "version", "node", "root", "receipts"))
        if r["type"] != MANIFEST_TYPE or integer(r["version"], "version") != MANIFEST_VERSION:
            raise FormatError(f"not a {MANIFEST_TYPE} version {MANIFEST_VERSION} manifest")
        try:
            node = to_checksum_address(string(r["node"], "node"))
        except ValueError:
            raise FormatError("node is not an address") from None
        return cls(
            node=node,
            root=hexbytes(r["root"], "root", 32),
            entries=items(r["receipts"], "receipts", ManifestEntry.from_dag, MAX_MANIFEST_ENTRIES),
        )


def example_dag() -> dict[str, Any]:
    """A small well-formed manifest document (for docs and tests)."""
    user, node = "0x" + "11" * 20, "0x" + "22" * 20
    request = TaskRequest(user, node, b"\x07" * 32, b"\x08" * 32, b"\x09" * 32, 100, 1, 2**40)
    receipt = Receipt(b"\x01" * 32, user, b"\x07" * 32, b"\x09" * 32, b"\x0a" * 32, b"\x0b" * 32, 50)
    trace = "bafyreibjk2zm52hfizr454i2vrctndr2q2oimlwxu36s3or2icabptr6by"
    entry = ManifestEntry(receipt, receipt.leaf(), b"\x05" * 65, trace, "chat", request, b"\x06" * 65)
    return BatchManifest.seal(node, [entry]).to_dag()
