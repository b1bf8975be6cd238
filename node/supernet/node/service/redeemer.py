"""Periodically redeems the latest redeemable voucher of every user in one transaction.

Only vouchers that cover finished work are redeemed (see
:meth:`supernet.node.service.db.Database.redeemable_voucher`), so a task that failed or was
refused after a restart is never collected. The chain's own record of what was redeemed is
authoritative; the database keeps a copy for the API and metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from supernet.node.service.db import Database
from supernet.node.service.metrics import METRICS
from supernet.node.service.ports import ChainPort, SignedVoucher

log = logging.getLogger(__name__)


class Redeemer:
    """The voucher redemption service (``run_forever / stop``, plus :meth:`redeem_once`)."""

    def __init__(self, db: Database, chain: ChainPort, interval_s: float, min_amount_wei: int = 0) -> None:
        self.db = db
        self.chain = chain
        self.interval_s = interval_s
        self.min_amount_wei = min_amount_wei
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

    async def due(self) -> list[SignedVoucher]:
        """The vouchers worth redeeming now (one per user)."""
        out = []
        for user in self.db.users_with_vouchers():
            best = self.db.redeemable_voucher(user)
            if best is None:
                continue
            amount, signature = best
            already = await self.chain.redeemed(user)
            if amount - already > self.min_amount_wei:
                out.append(
                    SignedVoucher(user=user, cumulative_amount=amount, signature=bytes.fromhex(signature[2:]))
                )
            elif already != self.db.redeemed(user):
                self.db.set_redeemed({user: already}, tx_hash="")
        return out

    async def redeem_once(self) -> str | None:
        """Redeem what is due in one transaction; returns its hash (None if nothing was due)."""
        vouchers = await self.due()
        if not vouchers:
            return None
        before = {v.user: await self.chain.redeemed(v.user) for v in vouchers}
        tx = await self.chain.redeem(vouchers)
        self.db.set_redeemed({v.user: v.cumulative_amount for v in vouchers}, tx)
        METRICS.redeemed_wei.inc(sum(v.cumulative_amount - before[v.user] for v in vouchers))
        log.info("redeemed %d vouchers in %s", len(vouchers), tx)
        return tx
