"""Typed wrapper of ``Payments``: one payment channel per (user, node), cumulative vouchers.

>>> pay = Payments(w3, dep.address("Payments"), user)                  # doctest: +SKIP
>>> pay.deposit(node.address, 10**18)                                  # doctest: +SKIP
>>> v = Voucher(user.address, node.address, 10**15)
>>> sig = sign_voucher(v, dep.domain, user)                            # doctest: +SKIP
>>> Payments(w3, pay.address, node).redeem([v], [sig]).value           # doctest: +SKIP
1000000000000000

On chain, vouchers travel packed (`pack_vouchers`): 96 bytes each, ``user << 96 | cumulativeAmount``
then the EIP-2098 compact signature. Users sign the same EIP-712 ``Voucher`` as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from supernet.sdk.chain.bindings import Binding, TxResult
from supernet.sdk.chain.eip712 import Confirmation, TaskRequest, Voucher
from supernet.sdk.chain.signatures import SECP256K1_HALF_N

MAX_PACKED_AMOUNT = 2**96 - 1
"""Largest cumulative amount a packed voucher carries (about 7.9e10 ether)."""


def _voucher_tuple(v: Voucher) -> tuple[str, str, int]:
    m = v.message()
    return (m["user"], m["node"], m["cumulativeAmount"])


def compact_signature(signature: bytes) -> bytes:
    """EIP-2098: a 65-byte ``r || s || v`` signature as 64 bytes ``r || vs`` (v's parity in s's top bit).

    Raises:
        ValueError: not 65 bytes, v not 27/28 (or 0/1), or s in the upper half of the curve order
            (the contract refuses that form).
    """
    if len(signature) != 65:
        raise ValueError(f"a signature is 65 bytes, got {len(signature)}")
    r, s, v = signature[:32], int.from_bytes(signature[32:64], "big"), signature[64]
    parity = v - 27 if v >= 27 else v
    if parity not in (0, 1):
        raise ValueError(f"bad signature v {v}")
    if s > SECP256K1_HALF_N:
        raise ValueError("signature s is in the upper half (malleable form)")
    return r + (s | (parity << 255)).to_bytes(32, "big")


def pack_vouchers(vouchers: Sequence[Voucher], signatures: Sequence[bytes]) -> bytes:
    """The packed form ``Payments.redeem``/``TaskManager.commitBatch`` take (96 bytes per voucher).

    Raises:
        ValueError: lengths differ, an amount does not fit 96 bits, or a signature is malformed.
    """
    if len(vouchers) != len(signatures):
        raise ValueError(f"{len(vouchers)} vouchers but {len(signatures)} signatures")
    out = bytearray()
    for v, sig in zip(vouchers, signatures, strict=True):
        if not 0 < v.cumulative_amount <= MAX_PACKED_AMOUNT:
            raise ValueError(f"voucher amount {v.cumulative_amount} does not fit a packed voucher")
        head = (int(v.user, 16) << 96) | v.cumulative_amount
        out += head.to_bytes(32, "big") + compact_signature(sig)
    return bytes(out)


@dataclass(frozen=True)
class Channel:
    """A (user, node) channel: wei deposited in total, redeemed in total, and when the user may
    withdraw the rest (0: no withdrawal requested)."""

    deposited: int
    redeemed: int
    withdrawable_at: int

    @property
    def balance(self) -> int:
        """What the node can still redeem."""
        return self.deposited - self.redeemed

    @property
    def closing(self) -> bool:
        """Whether the user asked to withdraw (a node admits no new work against it)."""
        return self.withdrawable_at != 0


class Payments(Binding):
    """Payment channels from users to nodes, paid through EIP-712 cumulative vouchers."""

    NAME = "Payments"

    # -- user side -----------------------------------------------------------------------------

    def deposit(self, node: str, amount: int) -> TxResult:
        """Add ``amount`` wei to the bound account's channel to ``node`` (opening it if new)."""
        return self.transact("deposit", node, value=amount)

    def deposit_for(self, user: str, node: str, amount: int) -> TxResult:
        """Add ``amount`` wei to ``user``'s channel to ``node``."""
        return self.transact("depositFor", user, node, value=amount)

    def request_withdrawal(self, node: str) -> TxResult:
        """Start closing the channel to ``node`` (the node can redeem until the delay passes)."""
        return self.transact("requestWithdrawal", node)

    def cancel_withdrawal(self, node: str) -> TxResult:
        """Keep the channel to ``node`` open after all."""
        return self.transact("cancelWithdrawal", node)

    def withdraw(self, node: str) -> TxResult:
        """Receive what ``node`` did not redeem, after the delay."""
        return self.transact("withdraw", node)

    # -- node side -----------------------------------------------------------------------------

    def redeem(self, vouchers: Sequence[Voucher], signatures: Sequence[bytes]) -> TxResult:
        """Redeem signed vouchers addressed to the bound account, in one transaction, into the
        bound account's earnings (less the verification share, which goes to its escrow).

        Args:
            vouchers: cumulative vouchers, each naming the bound account as ``node``
                (at most `max_redeem_batch`).
            signatures: each voucher's 65-byte signature by its user (same order and length).

        Returns:
            The transaction; ``value`` is the total wei redeemed (earnings plus escrow share).
        """
        tx = self.transact("redeem", pack_vouchers(vouchers, signatures))
        paid = sum(int(e["args"]["total"]) for e in self.events(tx, "Redeemed"))
        return TxResult(tx.receipt, paid)

    def withdraw_earnings(self) -> TxResult:
        """Pay the bound node its earnings past their hold (the held ones and the escrow stay).

        Raises:
            EarningsHeld: everything earned is still held (`held_earnings` says until when).
        """
        return self.transact("withdrawEarnings")

    def fund_escrow(self, node: str, amount: int) -> TxResult:
        """Add ``amount`` wei to ``node``'s verification escrow (it only leaves as decoy bounties)."""
        return self.transact("fundEscrow", node, value=amount)

    def node_account(self, node: str, block: int | None = None) -> tuple[int, int]:
        """``node``'s (earnings, escrow) in wei (at ``block``, default the latest); the earnings
        include the held ones."""
        earnings, escrow = self.call("account", node, block=block)
        return int(earnings), int(escrow)

    def held_earnings(self, node: str, block: int | None = None) -> tuple[int, int]:
        """``node``'s earnings not yet withdrawable (slashable until the disputes over what they
        paid are over) in wei, and the chain time when all of them will be (0: none held), at
        ``block`` (default the latest: read `node_account` at the same block to compare)."""
        held, free_at = self.call("heldEarnings", node, block=block)
        return int(held), int(free_at)

    def hold_period(self) -> int:
        """Seconds a redeemed fee is held at least (at most twice that)."""
        return int(self.call("holdPeriod"))

    def hash_decoy(self, node: str, request_hash: bytes) -> bytes:
        """The EIP-712 digest a decoy account signs to declare task ``request_hash`` of
        ``node`` a decoy."""
        return bytes(self.call("hashDecoy", node, request_hash))

    def decoy_bounty(self) -> int:
        """What one found decoy takes from its node's escrow (bounty plus rebate)."""
        return int(self.call("DECOY_BOUNTY"))

    # -- views ---------------------------------------------------------------------------------

    def channel(self, user: str, node: str) -> Channel:
        """The channel from ``user`` to ``node``."""
        deposited, redeemed, ready = self.call("channel", user, node)
        return Channel(int(deposited), int(redeemed), int(ready))

    def redeemed(self, user: str, node: str) -> int:
        """Wei already paid from ``user`` to ``node`` through vouchers."""
        return self.channel(user, node).redeemed

    def max_redeem_batch(self) -> int:
        """Most vouchers one ``redeem`` call takes."""
        return int(self.call("MAX_REDEEM_BATCH"))

    def domain_separator(self) -> bytes:
        """The contract's EIP-712 domain separator."""
        return bytes(self.call("domainSeparator"))

    def hash_voucher(self, voucher: Voucher) -> bytes:
        """The contract's EIP-712 digest of a voucher."""
        return bytes(self.call("hashVoucher", _voucher_tuple(voucher)))

    def hash_task_request(self, request: TaskRequest) -> bytes:
        """The contract's EIP-712 digest of a task request (the task id)."""
        return bytes(self.call("hashTaskRequest", tuple(request.message().values())))

    def hash_confirmation(self, confirmation: Confirmation) -> bytes:
        """The contract's EIP-712 digest of a confirmation."""
        return bytes(self.call("hashConfirmation", tuple(confirmation.message().values())))

    def withdrawal_delay(self) -> int:
        """Seconds between ``requestWithdrawal`` and ``withdraw``."""
        return int(self.call("WITHDRAWAL_DELAY"))
