"""Redeems users' latest vouchers on chain when that is worth its gas, and always in time.

Only vouchers that cover finished work are redeemed (see
:meth:`supernet.node.service.db.Database.redeemable_voucher`), so a task that failed or was
refused after a restart is never collected. The chain's own record of what was redeemed is
authoritative; the database keeps a copy for the API and metrics.

Policy (docs/node.md "Getting paid"): a user's voucher is redeemed when what it still owes is
worth at least ``worth_factor`` times the gas of redeeming it (Livepeer redeems winning tickets by
the same rule, with a factor of 100), or ``min_amount_wei`` if set; and whatever it owes, as soon
as the user asks to close the channel — the node has ``WITHDRAWAL_DELAY`` to redeem before the
user can withdraw. Redemptions go out in calls of at most the contract's ``MAX_REDEEM_BATCH``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from supernet.node.service.db import Database
from supernet.node.service.metrics import METRICS
from supernet.node.service.ports import ChainPort, SignedVoucher

log = logging.getLogger(__name__)

GAS_PER_VOUCHER = 12_000
"""Gas one more voucher adds to a ``redeem`` call (docs/benchmarks/gas.md: ~11-12k: one signature
recovery, one write of the channel's existing slot, its calldata)."""


@dataclass(frozen=True)
class RedeemPolicy:
    """When a user's voucher is worth redeeming.

    Attributes:
        worth_factor: redeem when the amount owed is at least this many times the voucher's gas
            cost at the current gas price.
        min_amount_wei: a fixed threshold instead (0: use ``worth_factor``).
    """

    worth_factor: int = 100
    min_amount_wei: int = 0

    def threshold(self, gas_price_wei: int) -> int:
        """The least amount owed that is worth a redemption now."""
        return self.min_amount_wei or self.worth_factor * GAS_PER_VOUCHER * gas_price_wei


class Redeemer:
    """The voucher redemption service (``run_forever / stop``, plus :meth:`redeem_once`)."""

    def __init__(
        self, db: Database, chain: ChainPort, interval_s: float, policy: RedeemPolicy | None = None
    ) -> None:
        self.db = db
        self.chain = chain
        self.interval_s = interval_s
        self.policy = policy or RedeemPolicy()
        self._stop = asyncio.Event()

    def stop(self) -> None:
        """Ask :meth:`run_forever` to return."""
        self._stop.set()

    async def run_forever(self) -> None:
        """Redeem every ``interval_s`` until stopped; errors are logged and retried next round."""
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval_s)
            try:
                await self.redeem_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("voucher redemption failed, retrying next round: %s", exc)

    async def due(self) -> list[tuple[SignedVoucher, int]]:
        """The vouchers to redeem now (one per user: worth their gas, or of a closing channel), each
        with what its channel had redeemed when it was read."""
        threshold = self.policy.threshold(await self.chain.gas_price())
        out = []
        for user in self.db.users_with_vouchers():
            best = self.db.redeemable_voucher(user)
            if best is None:
                continue
            amount, signature = best
            channel = await self.chain.channel(user)
            owed = min(amount, channel.deposited) - channel.redeemed
            if owed > 0 and (owed >= threshold or channel.closing):
                voucher = SignedVoucher(
                    user=user, cumulative_amount=amount, signature=bytes.fromhex(signature[2:])
                )
                out.append((voucher, channel.redeemed))
            elif channel.redeemed != self.db.redeemed(user):
                self.db.set_redeemed({user: channel.redeemed}, tx_hash="")
        return out

    async def redeem_once(self) -> list[str]:
        """Redeem what is due, in calls of at most ``MAX_REDEEM_BATCH``; the transaction hashes."""
        due = await self.due()
        if not due:
            return []
        size = await self.chain.max_redeem_batch()
        txs = []
        for start in range(0, len(due), size):
            chunk = [v for v, _ in due[start : start + size]]
            before = {v.user: redeemed for v, redeemed in due[start : start + size]}
            log.info("redeeming %d vouchers", len(chunk))
            tx = await self.chain.redeem(chunk)
            after = {v.user: await self.chain.redeemed(v.user) for v in chunk}
            self.db.set_redeemed(after, tx)
            METRICS.redeemed_wei.inc(sum(after[u] - before[u] for u in after))
            log.info("redeemed %d vouchers in %s", len(chunk), tx)
            txs.append(tx)
        return txs
