"""Signed transactions kept until their nonce is used: broadcast, sent again, repriced at their nonce.

A daemon's duties (a node's batch commits, its answers to data claims) are signed once, persisted,
then broadcast; while their nonce is unused they are sent again (a pool may drop them) and, once the
base fee has passed their fee cap, replaced at the same nonce with fees that can be mined. Whichever
version lands, the duty is done once: they share the nonce. One definition for every such duty, so
that none of them waits on bytes that can no longer be mined, or signs a second copy at the next
nonce (tests/unit/test_review_node_answers.py).
"""

from __future__ import annotations

import logging

from eth_account.signers.local import LocalAccount
from eth_account.typed_transactions import TypedTransaction
from hexbytes import HexBytes
from supernet.sdk.chain.bindings import SignedTx, _funds_named, _sender, latest_base_fee, release_nonce
from web3 import Web3
from web3.exceptions import TransactionNotFound, Web3RPCError

log = logging.getLogger(__name__)

REPLACEMENT_BUMP = (9, 8)
"""A replacement's fees over the replaced one's (12.5 %): pools take a transaction at a used nonce
only for at least 10 % more of both (geth's ``--txpool.pricebump``)."""

_BENIGN = ("already known", "already imported", "known transaction", "nonce too low")
"""An RPC's refusals that mean the transaction is in its pool or mined, or its nonce is used."""


def bumped(fee: int) -> int:
    """``fee`` raised by `REPLACEMENT_BUMP`, rounded up (and by 1 wei at least)."""
    up, down = REPLACEMENT_BUMP
    return max(-(-fee * up // down), fee + 1)


def broadcast(w3: Web3, address: str, raw: bytes, nonce: int, what: str) -> None:
    """Send signed bytes; "already known" and "nonce too low" are not errors (in the pool, mined, or
    the nonce went to another: the caller's later look tells). The nonce reserved when it was
    signed (`bindings.build_signed`, ``reserve=True``) is released once the RPC was handed it,
    whether it took it or not.

    Raises:
        InsufficientFundsError: refused for want of funds (``what`` names it).
        Web3RPCError: any other refusal.
    """
    sent = False
    with _sender(address):
        try:
            with _funds_named(w3, address, what):
                w3.eth.send_raw_transaction(raw)
            sent = True
        except Web3RPCError as exc:
            if not any(s in str(exc).lower() for s in _BENIGN):
                raise
            sent = True
        finally:
            release_nonce(w3, address, nonce, sent=sent)


def nonce_used(w3: Web3, address: str, nonce: int) -> bool:
    """Whether a mined transaction of ``address`` holds ``nonce`` (its own or another)."""
    return int(w3.eth.get_transaction_count(Web3.to_checksum_address(address), "latest")) > nonce


def in_pool(w3: Web3, tx_hash: bytes) -> bool:
    """Whether the RPC knows the transaction (pending or mined)."""
    try:
        w3.eth.get_transaction(HexBytes(tx_hash))
    except TransactionNotFound:
        return False
    return True


def repriced(w3: Web3, account: LocalAccount, raw: bytes, tip_ceiling: int, what: str) -> SignedTx | None:
    """A replacement of the signed transaction ``raw`` at its nonce when the chain's base fee has
    passed its fee cap (it cannot be mined while that lasts, and sending the same bytes again
    never helps): the same call and gas limit, the tip raised by `REPLACEMENT_BUMP`, the cap to
    twice today's base fee plus the tip (at least the old cap raised alike). None while it can be
    mined as it is signed, once its nonce is used, or when the raised tip would pass
    ``tip_ceiling`` (logged as a duty at risk: it waits for the base fee to fall)."""
    tx = TypedTransaction.from_bytes(HexBytes(raw)).as_dict()
    if nonce_used(w3, account.address, int(tx["nonce"])):
        return None
    cap, tip = int(tx["maxFeePerGas"]), int(tx["maxPriorityFeePerGas"])
    base = latest_base_fee(w3)
    if cap >= base * 9 // 8:  # the next block's base fee rises 12.5 % at most
        return None
    new_tip = bumped(tip)
    if new_tip > tip_ceiling:
        log.error(
            "DUTY AT RISK: %s is priced out (base fee %d > its cap %d) and its replacement's tip %d "
            "passes the tip ceiling: it waits for the base fee to fall",
            what,
            base,
            cap,
            new_tip,
        )
        return None
    fields = {k: v for k, v in tx.items() if k not in ("v", "r", "s")}
    fields["maxPriorityFeePerGas"] = new_tip
    fields["maxFeePerGas"] = max(bumped(cap), 2 * base + new_tip)
    signed = account.sign_transaction(fields)
    return SignedTx(bytes(signed.raw_transaction), bytes(signed.hash), int(tx["nonce"]), int(tx["gas"]))
