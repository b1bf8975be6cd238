"""The node's answers to data claims, sent as its batch commits are.

An unanswered claim slashes the node, so an answer is a duty: it is signed, persisted, then
broadcast, and the responder never waits on it. Each later scan that finds the claim still open
looks at the stored answer instead of signing another: while its nonce is unused it is sent again
if the RPC lost it, and replaced at its nonce once the base fee has passed its fee cap
(`supernet.sdk.chain.resend`, the commits' rule). A new answer is signed only once the stored one
can no longer land: it reverted, or its nonce went to another transaction. So a restart, or a wait
that gave up, never signs a second answer at the next nonce (mined after the first, it reverted
having paid its calldata: ~16 M gas for a trace at the size limit), and a base-fee rise never
leaves the node slashed behind an answer it could not mine (tests/unit/test_review_node_answers.py).
"""

from __future__ import annotations

import logging
from typing import Any

from eth_account.typed_transactions import TypedTransaction
from hexbytes import HexBytes
from supernet.node.service.db import Database
from supernet.sdk.chain import resend
from supernet.sdk.chain.bindings import SignedTx, release_nonce
from web3.exceptions import TransactionNotFound

log = logging.getLogger(__name__)


class AnswerOutbox:
    """Answers to data claims, one per claim, kept in the node's database until settled.

    Args:
        db: the node's database (table ``answer_txs``, keyed by claim: its kind, id and content,
            `availability._key`: ``a:12:3:0`` is availability claim 12 on entry 0 of batch 3).
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        # claims whose stored answer's nonce read used with no receipt of any version, at the
        # last look: given up only when the next look says the same (a lagging backend's count)
        self._gone: set[str] = set()

    def resume(self, claim: str, binding: Any, fn_name: str, what: str) -> bool:
        """Whether the answer stored for the open claim ``claim`` stands (worker thread): pending
        (sent again if the RPC lost it, or repriced at its nonce), or mined and successful (the
        claim's status says so at the next look). False: none is stored, or the stored one can no
        longer land (forgotten): sign one and `send` it.

        Args:
            binding: the contract's binding the answer goes to, bound to the node's account.
            fn_name: the answer's function (its tip ceiling: `Binding.answer_tip_ceiling`).
            what: the answer, for logs and errors.
        """
        stored = self.db.answer_tx(claim)
        if stored is None:
            return False
        if self._stands(claim, binding, fn_name, stored, what):
            return True
        self.db.drop_answer_tx(claim)
        return False

    def send(self, claim: str, binding: Any, signed: SignedTx, what: str) -> None:
        """Persist a freshly signed answer (`Binding.sign_answer`: its nonce reserved), then
        broadcast it (worker thread)."""
        try:
            self.db.record_answer_tx(claim, "0x" + signed.hash.hex(), signed.raw, signed.nonce)
        except BaseException:
            release_nonce(binding.w3, binding.account.address, signed.nonce)  # never sent
            raise
        resend.broadcast(binding.w3, binding.account.address, signed.raw, signed.nonce, what)

    def settled(self, claim: str) -> None:
        """The claim is no longer open (answered, by this node or another, or resolved)."""
        self.db.drop_answer_tx(claim)
        self._gone.discard(claim)

    def in_flight_wei(self) -> int:
        """The most the answers stored and not known settled can still cost: each one's gas limit
        at its fee cap (the wallet must hold it: the balance does not count them)."""
        total = 0
        for raw, _nonce, _hashes in self.db.answer_txs():
            tx = TypedTransaction.from_bytes(HexBytes(raw)).as_dict()
            total += int(tx["gas"]) * int(tx["maxFeePerGas"])
        return total

    def _stands(
        self, claim: str, binding: Any, fn_name: str, stored: tuple[bytes, int, list[str]], what: str
    ) -> bool:
        """Whether the stored answer may still land, or has: sent again or repriced while its nonce
        is unused; a mined version that succeeded stands too (the claim's status lags a moment)."""
        raw, nonce, hashes = stored
        w3, account = binding.w3, binding.account
        if not resend.nonce_used(w3, account.address, nonce):
            self._gone.discard(claim)
            ceiling = binding.answer_tip_ceiling(fn_name)
            replacement = resend.repriced(w3, account, raw, ceiling, what)
            if replacement is not None:
                tx_hash = "0x" + replacement.hash.hex()
                self.db.record_answer_tx(claim, tx_hash, replacement.raw, nonce)
                log.warning("%s repriced at its nonce %d: %s", what, nonce, tx_hash)
                raw, hashes = replacement.raw, [*hashes, tx_hash]
            if replacement is not None or not resend.in_pool(w3, bytes.fromhex(hashes[-1][2:])):
                resend.broadcast(w3, account.address, raw, nonce, what)
            return True
        for tx_hash in hashes:
            try:
                receipt = w3.eth.get_transaction_receipt(tx_hash)
            except TransactionNotFound:
                continue
            if receipt["status"] == 1:
                return True
            log.warning("%s reverted (tx %s): a new answer is signed", what, tx_hash)
            return False
        if claim not in self._gone:  # once may be a backend whose count runs ahead: look again
            self._gone.add(claim)
            return True
        self._gone.discard(claim)
        log.warning("%s: its nonce %d went to another transaction: a new answer is signed", what, nonce)
        return False
