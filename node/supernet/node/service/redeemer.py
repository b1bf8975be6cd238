"""Redeems users' latest vouchers on chain when that is worth its gas, and always in time.

Only what the user's done tasks cost is redeemed: the largest voucher within their fees (see
:meth:`supernet.node.service.db.Database.redeemable_voucher`); a task that failed or was refused is
never paid for. The chain's own record of what was redeemed is authoritative; the database keeps a
copy for the API and metrics.

Policy (docs/node.md "Getting paid"): a user's voucher is redeemed when what it still owes is
worth at least ``worth_factor`` times the gas of redeeming it, or ``min_amount_wei`` if set; and
whatever it owes as soon as the user asks to close the channel (the node has
``WITHDRAWAL_DELAY`` to redeem before the user can withdraw). Livepeer redeems winning tickets by
the same rule with a factor of 100; here a channel's deposit cannot leave before the node has had
``WITHDRAWAL_DELAY`` to redeem, so waiting costs a node nothing but cash flow, and the default is
250 (settlement near 0.5 % of the fees). Calls carry at most the contract's ``MAX_REDEEM_BATCH``.

Settlement rides on commits: the batcher asks :meth:`Redeemer.for_commit` for what is due and
redeems it in the ``commitBatch`` transaction (one transaction per batch instead of two); the
redeemer's own round only sends what is due while no batch is being committed. ``lock`` keeps the
two from putting one voucher in two transactions (the second would revert as stale).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from supernet.node.service.db import Database
from supernet.node.service.metrics import METRICS
from supernet.node.service.ports import ChainPort, SignedVoucher
from supernet.sdk.chain.payments import MAX_PACKED_AMOUNT

log = logging.getLogger(__name__)

GAS_PER_VOUCHER = 10_000
"""Gas one more voucher adds to a redemption, a round estimate (measured ~11k per packed voucher
in a commit that settles: one signature recovery, one write of the channel's existing slot, 96
bytes of calldata; docs/benchmarks/gas.md)."""


@dataclass(frozen=True)
class RedeemPolicy:
    """When a user's voucher is worth redeeming.

    Attributes:
        worth_factor: redeem when the amount owed is at least this many times the voucher's gas
            cost at the current gas price.
        min_amount_wei: a fixed threshold instead (0: use ``worth_factor``).
    """

    worth_factor: int = 250
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
        self.lock = asyncio.Lock()

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
            if amount > MAX_PACKED_AMOUNT:  # admission refuses these; never let one block a commit
                log.error("voucher of %s for %d wei cannot be redeemed (over 96 bits)", user, amount)
                continue
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
        async with self.lock:
            due = await self.due()
            if not due:
                return []
            size = await self.chain.max_redeem_batch()
            txs = []
            for start in range(0, len(due), size):
                chunk = due[start : start + size]
                log.info("redeeming %d vouchers", len(chunk))
                tx = await self.chain.redeem([v for v, _ in chunk])
                await self.settled(chunk, tx)
                txs.append(tx)
            return txs

    async def for_commit(self) -> list[tuple[SignedVoucher, int]]:
        """What is due now, at most one call's worth, for the batcher to settle in its commit
        (call with ``lock`` held, and `settled` once the commit landed)."""
        due = await self.due()
        return due[: await self.chain.max_redeem_batch()]

    async def settled(self, chunk: list[tuple[SignedVoucher, int]], tx: str) -> None:
        """Record what a transaction that redeemed ``chunk`` changed (read back from the chain)."""
        before = {v.user: redeemed for v, redeemed in chunk}
        after = {v.user: await self.chain.redeemed(v.user) for v, _ in chunk}
        self.db.set_redeemed(after, tx)
        METRICS.redeemed_wei.inc(sum(after[u] - before[u] for u in after))
        log.info("redeemed %d vouchers in %s", len(chunk), tx)
