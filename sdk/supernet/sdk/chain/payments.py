"""Typed wrapper of ``Payments``: deposits, delayed withdrawals, cumulative vouchers.

>>> pay = Payments(w3, dep.address("Payments"), user)                  # doctest: +SKIP
>>> pay.deposit(10**18)                                                # doctest: +SKIP
>>> v = Voucher(user.address, node.address, 10**15)
>>> sig = sign_voucher(v, dep.domain, user)                            # doctest: +SKIP
>>> Payments(w3, pay.address, node).redeem([v], [sig]).value           # doctest: +SKIP
1000000000000000
"""

from __future__ import annotations

from collections.abc import Sequence

from supernet.sdk.chain.bindings import Binding, TxResult
from supernet.sdk.chain.eip712 import Confirmation, TaskRequest, Voucher


def _voucher_tuple(v: Voucher) -> tuple[str, str, int]:
    m = v.message()
    return (m["user"], m["node"], m["cumulativeAmount"])


class Payments(Binding):
    """User deposits paid to nodes through EIP-712 cumulative vouchers."""

    NAME = "Payments"

    # -- user side -----------------------------------------------------------------------------

    def deposit(self, amount: int) -> TxResult:
        """Add ``amount`` wei to the bound account's deposit."""
        return self.transact("deposit", value=amount)

    def deposit_for(self, user: str, amount: int) -> TxResult:
        """Add ``amount`` wei to ``user``'s deposit."""
        return self.transact("depositFor", user, value=amount)

    def request_withdrawal(self, amount: int) -> TxResult:
        """Start withdrawing ``amount`` (redeemable by nodes until the delay passes)."""
        return self.transact("requestWithdrawal", amount)

    def cancel_withdrawal(self) -> TxResult:
        """Move the pending withdrawal back into the deposit."""
        return self.transact("cancelWithdrawal")

    def withdraw(self) -> TxResult:
        """Receive the pending withdrawal after the delay."""
        return self.transact("withdraw")

    # -- node side -----------------------------------------------------------------------------

    def redeem(self, vouchers: Sequence[Voucher], signatures: Sequence[bytes]) -> TxResult:
        """Redeem signed vouchers addressed to the bound account, in one transaction.

        Args:
            vouchers: cumulative vouchers, each naming the bound account as ``node``.
            signatures: each voucher's 65-byte signature by its user (same order and length).

        Returns:
            The transaction; ``value`` is the total wei credited.
        """
        tx = self.transact("redeem", [_voucher_tuple(v) for v in vouchers], list(signatures))
        paid = sum(int(e["args"]["paid"]) for e in self.events(tx, "VoucherRedeemed"))
        return TxResult(tx.receipt, paid)

    def withdraw_earnings(self) -> TxResult:
        """Receive the bound node's redeemed earnings."""
        return self.transact("withdrawEarnings")

    # -- views ---------------------------------------------------------------------------------

    def deposits(self, user: str) -> int:
        """Available (not pending withdrawal) deposit of ``user``."""
        return int(self.call("deposits", user))

    def redeemed(self, user: str, node: str) -> int:
        """Wei already paid from ``user`` to ``node`` through vouchers."""
        return int(self.call("redeemed", user, node))

    def earnings(self, node: str) -> int:
        """Redeemed wei the node has not withdrawn yet."""
        return int(self.call("earnings", node))

    def pending_withdrawal(self, user: str) -> tuple[int, int]:
        """``(amount, ready_at)`` of the user's pending withdrawal."""
        amount, ready_at = self.call("pendingWithdrawal", user)
        return int(amount), int(ready_at)

    def redeemable_balance(self, user: str) -> int:
        """What nodes can still redeem from ``user``: deposit plus pending withdrawal."""
        return int(self.call("redeemableBalance", user))

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
