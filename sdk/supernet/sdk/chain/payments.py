"""Typed wrapper of ``Payments``: one payment channel per (user, node), cumulative vouchers.

>>> pay = Payments(w3, dep.address("Payments"), user)                  # doctest: +SKIP
>>> pay.deposit(node.address, 10**18)                                  # doctest: +SKIP
>>> v = Voucher(user.address, node.address, 10**15)
>>> sig = sign_voucher(v, dep.domain, user)                            # doctest: +SKIP
>>> Payments(w3, pay.address, node).redeem([v], [sig]).value           # doctest: +SKIP
1000000000000000
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from supernet.sdk.chain.bindings import Binding, TxResult
from supernet.sdk.chain.eip712 import Confirmation, TaskRequest, Voucher


def _voucher_tuple(v: Voucher) -> tuple[str, str, int]:
    m = v.message()
    return (m["user"], m["node"], m["cumulativeAmount"])


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
        """Redeem signed vouchers addressed to the bound account, in one transaction.

        Args:
            vouchers: cumulative vouchers, each naming the bound account as ``node``
                (at most `max_redeem_batch`).
            signatures: each voucher's 65-byte signature by its user (same order and length).

        Returns:
            The transaction; ``value`` is the total wei credited.
        """
        tx = self.transact("redeem", [_voucher_tuple(v) for v in vouchers], list(signatures))
        paid = sum(int(e["args"]["total"]) for e in self.events(tx, "Redeemed"))
        return TxResult(tx.receipt, paid)

    def withdraw_earnings(self) -> TxResult:
        """Receive the bound node's redeemed earnings."""
        return self.transact("withdrawEarnings")

    # -- views ---------------------------------------------------------------------------------

    def channel(self, user: str, node: str) -> Channel:
        """The channel from ``user`` to ``node``."""
        deposited, redeemed, ready = self.call("channel", user, node)
        return Channel(int(deposited), int(redeemed), int(ready))

    def redeemed(self, user: str, node: str) -> int:
        """Wei already paid from ``user`` to ``node`` through vouchers."""
        return self.channel(user, node).redeemed

    def earnings(self, node: str) -> int:
        """Redeemed wei the node has not withdrawn yet."""
        return int(self.call("earnings", node))

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
