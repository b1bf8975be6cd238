"""Typed wrapper of ``OmissionManager``: a user claims its node broke a signed `ReceiptPromise`
(the receipt is in none of the node's batches committed by ``commitBy``); the node answers with
the receipt's inclusion, or is slashed (docs/protocol.md, "Omission"). Anyone claims a batch's
manifest cannot be fetched; the node posts the batch's receipts, or is slashed ("Manifests").

>>> om = OmissionManager(w3, dep.address("OmissionManager"), user)                # doctest: +SKIP
>>> oid = om.challenge_omission(promise, node_signature, request, receipt).value
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from supernet.sdk.chain.bindings import Binding, SignedTx, TxResult
from supernet.sdk.chain.eip712 import ReceiptPromise, TaskRequest
from supernet.sdk.chain.receipts import Receipt
from supernet.sdk.chain.tasks import Batch


class OmissionStatus(IntEnum):
    """Lifecycle of an omission challenge."""

    NONE = 0
    OPEN = 1
    ANSWERED = 2
    UNANSWERED = 3


@dataclass(frozen=True)
class OmissionChallenge:
    """A user's claim that its node did not commit a promised receipt by ``commit_by``."""

    challenger: str
    deadline: int
    status: OmissionStatus
    node: str
    commit_by: int
    leaf: bytes
    deposit: int = 0  # what the claimant posted: the bond and the answer's cover (ClaimBond)


class ManifestStatus(IntEnum):
    """Lifecycle of a manifest challenge."""

    NONE = 0
    OPEN = 1
    ANSWERED = 2
    UNANSWERED = 3


@dataclass(frozen=True)
class ManifestChallenge:
    """A claim that batch ``batch_id``'s manifest cannot be fetched, to be answered by ``deadline``."""

    manifest_id: int
    challenger: str
    deadline: int
    status: ManifestStatus
    node: str
    batch_id: int
    deposit: int = 0  # what the claimant posted: the bond and the answer's cover (ClaimBond)


class OmissionManager(Binding):
    """The omission challenges of a deployment (payouts are pulled from here: `withdraw`)."""

    NAME = "OmissionManager"

    def slash_amount(self) -> int:
        """What a claim the node cannot answer slashes (``SLASH_AMOUNT``, the TaskManager's)."""
        return int(self.call("SLASH_AMOUNT"))

    def challenge_bond(self) -> int:
        """The fixed part of what a claim posts (the TaskManager's ``CHALLENGE_BOND``)."""
        return int(self.call("CHALLENGE_BOND"))

    def challenge_omission(
        self, promise: ReceiptPromise, signature: bytes, request: TaskRequest, receipt: Receipt
    ) -> TxResult:
        """As the request's user, claim its node broke ``promise`` (``receipt``, whose leaf it
        names, is in none of its batches committed by ``commit_by``), with the bond plus the answer
        (`Binding.claim`); ``value`` is the id. The receipt must be the request's
        (``NotThePromisedReceipt``)."""
        tx = self.claim(
            "challengeOmission",
            (promise.request_hash, promise.leaf, promise.commit_by),
            signature,
            tuple(request.message().values()),
            receipt.as_tuple(),
            bond=self.challenge_bond(),
            worst_gas=int(self.call("ANSWER_GAS")),
        )
        return TxResult(tx.receipt, int(self.events(tx, "OmissionChallenged")[0]["args"]["omissionId"]))

    def answer_omission(
        self, omission_id: int, batch: Batch, index: int, receipt: Receipt, proof: Sequence[bytes]
    ) -> TxResult:
        """Show the promised receipt at ``index`` of ``batch``; ``value`` is the ``OmissionAnswered``
        and ``OmissionSettled`` args together (``batchId``, ``index``, then ``answerCost``,
        ``refunded``, ``burned``)."""
        ref = self._ref(batch)
        tx = self.answer("answerOmission", omission_id, ref, index, receipt.as_tuple(), list(proof))
        answered = dict(self.events(tx, "OmissionAnswered")[0]["args"])
        return TxResult(tx.receipt, answered | dict(self.events(tx, "OmissionSettled")[0]["args"]))

    def sign_answer_omission(
        self, omission_id: int, batch: Batch, index: int, receipt: Receipt, proof: Sequence[bytes]
    ) -> SignedTx:
        """`answer_omission`'s transaction signed, not sent (`Binding.sign_answer`)."""
        return self.sign_answer(
            "answerOmission", omission_id, self._ref(batch), index, receipt.as_tuple(), list(proof)
        )

    def resolve_omission(self, omission_id: int) -> TxResult:
        """Slash the node of an unanswered omission challenge; ``value`` is the event's args."""
        tx = self.transact("resolveOmission", omission_id)
        return TxResult(tx.receipt, dict(self.events(tx, "OmissionResolved")[0]["args"]))

    def get_omission(self, omission_id: int) -> OmissionChallenge:
        """An omission challenge (raises ``UnknownOmission``)."""
        challenger, deadline, status, node, commit_by, leaf, deposit = self.call(
            "omissionChallenges", omission_id
        )
        return OmissionChallenge(
            challenger,
            int(deadline),
            OmissionStatus(int(status)),
            node,
            int(commit_by),
            bytes(leaf),
            int(deposit),
        )

    def omissions_opened(
        self, from_block: int, to_block: int | str = "latest"
    ) -> list[tuple[int, str, bytes]]:
        """(omission id, node, leaf) of every omission challenge opened in the block range."""
        logs = self.logs("OmissionChallenged", from_block, to_block)
        return [(int(e["args"]["omissionId"]), e["args"]["node"], bytes(e["args"]["leaf"])) for e in logs]

    # -- manifests -----------------------------------------------------------------------------

    def challenge_manifest(self, batch: Batch) -> TxResult:
        """Claim ``batch``'s manifest cannot be fetched, with the bond plus the costliest answer
        (`Binding.claim`); ``value`` is the id (``ManifestAlreadyChallenged`` once one was opened,
        ``ManifestWindowClosed`` after the batch's challenge window)."""
        tx = self.claim(
            "challengeManifest",
            self._ref(batch),
            bond=self.challenge_bond(),
            worst_gas=int(self.call("MANIFEST_WORST_GAS")),
        )
        return TxResult(tx.receipt, int(self.events(tx, "ManifestChallenged")[0]["args"]["manifestId"]))

    def answer_manifest(self, manifest_id: int, batch: Batch, receipts: Sequence[Receipt]) -> TxResult:
        """Post every receipt of ``batch`` in manifest order; ``value`` is the ``ManifestAnswered`` and
        ``ManifestSettled`` args together (the receipts, then ``answerCost``, ``refunded``, ``burned``)."""
        tx = self.answer("answerManifest", manifest_id, self._ref(batch), [r.as_tuple() for r in receipts])
        answered = dict(self.events(tx, "ManifestAnswered")[0]["args"])
        return TxResult(tx.receipt, answered | dict(self.events(tx, "ManifestSettled")[0]["args"]))

    def sign_answer_manifest(self, manifest_id: int, batch: Batch, receipts: Sequence[Receipt]) -> SignedTx:
        """`answer_manifest`'s transaction signed, not sent (`Binding.sign_answer`)."""
        rows = [r.as_tuple() for r in receipts]
        return self.sign_answer("answerManifest", manifest_id, self._ref(batch), rows)

    def resolve_manifest(self, manifest_id: int) -> TxResult:
        """Slash the node of an unanswered manifest challenge; ``value`` is the event's args."""
        tx = self.transact("resolveManifest", manifest_id)
        return TxResult(tx.receipt, dict(self.events(tx, "ManifestResolved")[0]["args"]))

    def batch_manifest(self, batch_id: int) -> ManifestChallenge | None:
        """The manifest challenge of ``batch_id`` (None: never challenged)."""
        manifest_id = int(self.call("batchManifest", batch_id))
        if manifest_id == 0:
            return None
        challenger, deadline, status, node, batch, deposit = self.call("manifestChallenges", manifest_id)
        return ManifestChallenge(
            manifest_id, challenger, int(deadline), ManifestStatus(status), node, int(batch), int(deposit)
        )

    def manifests_opened(self, from_block: int, to_block: int | str = "latest") -> list[ManifestChallenge]:
        """Every manifest challenge opened in the block range (as opened: status ``OPEN``)."""
        logs = self.logs("ManifestChallenged", from_block, to_block)
        return [
            ManifestChallenge(
                int(e["args"]["manifestId"]),
                e["args"]["challenger"],
                int(e["args"]["deadline"]),
                ManifestStatus.OPEN,
                e["args"]["node"],
                int(e["args"]["batchId"]),
            )
            for e in logs
        ]

    def manifest_receipts(self, batch_id: int, from_block: int) -> list[Receipt] | None:
        """The receipts of ``batch_id`` posted by a manifest answer, in order (None: not answered;
        search from the batch's commit block)."""
        logs = self.logs("ManifestAnswered", from_block, "latest", {"batchId": batch_id})
        for e in logs:
            if int(e["args"]["batchId"]) == batch_id:  # a node filtering loosely is not trusted
                return [Receipt.from_tuple(_fields(r)) for r in e["args"]["receipts"]]
        return None

    def claimable(self, address: str) -> int:
        """Wei ``address`` can pull with `withdraw`."""
        return int(self.call("claimable", address))

    def withdraw(self) -> TxResult:
        """Pull the bound account's ``claimable`` balance here (bonds back, rewards)."""
        return self.transact("withdraw")

    @staticmethod
    def _ref(batch: Batch) -> tuple[Any, ...]:
        return batch.as_tuple()


def _fields(value: Any) -> tuple[Any, ...]:
    """A decoded struct's values in field order (web3 gives a tuple, or a mapping by name)."""
    return tuple(value.values()) if hasattr(value, "values") else tuple(value)
