"""Redeems users' latest vouchers on chain when that is worth its gas, and always in time.

Only what the user's done tasks cost is redeemed: the largest voucher within their fees (see
:meth:`supernet.node.service.db.Database.redeemable_voucher`); a task that failed or was refused is
never paid for. The chain's own record of what was redeemed is authoritative; the database keeps a
copy for the API and metrics, and to tell whose channel needs no read (below).

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

The scan before a commit does not grow with the users who owe nothing worth redeeming: it decides
from what the node knows first and reads ``Payments.channel`` only for the users it cannot rule
out (docs/node.md "Getting paid"):

- what a user can still owe is at most its best redeemable voucher, capped by the deposit last
  read, minus what the node recorded as redeemed (the chain's ``redeemed`` only grows, by this
  node's own redemptions, which it records; a crash before the record leaves the copy low, which
  only costs a read); nothing: never read;
- less than the threshold: read only if its channel is closing, which the node learns from the
  ``WithdrawalRequested`` logs of its channels (one ``eth_getLogs`` per round, from a block cursor
  kept in the database: a request made while the node was down is seen at its first round; the
  first scan starts at the deployment); ``Deposited`` logs in the same query drop a stale deposit;
- a recorded amount younger than `CONFIRMATIONS` blocks (or recorded from a redemption and not read
  back since) is read again, by the redeemer's own round rather than before a commit: a reorg may
  have undone the redemption.

A user's best voucher is kept in memory from the start (one pass over the database) and updated
only for users with a task done since (receipts are numbered in the order they are stored); users
owing less than the threshold are set aside until something they owe changes or the gas price
falls below what they owe, so a round's work follows what changed, not how many users there are.
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


CONFIRMATIONS = 64
"""Blocks after which a redeemed amount (or deposit) read from the chain is trusted without another
read; also how far back each scan of the channels' logs starts again (a reorg may have replaced
blocks already scanned). At least the chain's deepest reorg, as ``[chain] reorg_watch``."""


@dataclass
class _User:
    """What the redeemer knows of one user without reading the chain."""

    best: tuple[int, str] | None = None  # the largest redeemable voucher (amount, 0x signature)
    redeemed: int = 0  # as recorded
    deposited: int | None = None  # as last read; None: unknown, or topped up since
    block: int | None = 0  # the head when `redeemed` was read; None: recorded from a redemption
    # and not read back; 0: nothing to confirm (no record, or one from before the node kept blocks)

    def confirmed(self, head: int) -> bool:
        """Whether the recorded ``redeemed`` is past any reorg at chain head ``head``."""
        return self.block == 0 or (self.block is not None and head - self.block >= CONFIRMATIONS)

    def owed(self) -> int:
        """The most the user can still owe (an upper bound of what a read would find)."""
        if self.best is None:
            return 0
        cap = self.best[0] if self.deposited is None else min(self.best[0], self.deposited)
        return cap - self.redeemed


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
        self._users: dict[str, _User] | None = None  # loaded at the first round
        self._watch: set[str] = set()  # users to look at: owing something, or not confirmed
        self._small: set[str] = set()  # users owing less than the threshold, confirmed, not closing
        self._small_max = 0  # at least the most any of `_small` owes
        self._mark = 0  # the receipts seen (`Database.users_done_since`)
        self._closing: dict[str, int] = {}  # closing channels: user -> block of the request
        self._open_at: dict[str, int] = {}  # user -> head at which its channel was read open

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

    def _load(self) -> dict[str, _User]:
        """What the database knows (once per process): every user's best voucher and record."""
        if self._users is None:
            self._mark = self.db.receipts_mark()
            users: dict[str, _User] = {}
            for user, best in self.db.redeemable_vouchers().items():
                users[user] = _User(best=best)
            for user, (redeemed, deposited, block) in self.db.redemption_records().items():
                u = users.setdefault(user, _User())
                u.redeemed, u.deposited, u.block = redeemed, deposited, block
            self._closing = self.db.closing_channels()
            self._users = users
            self._watch = {user for user, u in users.items() if u.owed() > 0 or u.block != 0}
        return self._users

    def _touch(self, user: str) -> None:
        """Look at ``user`` again at the next round (something it owes may have changed)."""
        self._watch.add(user)
        self._small.discard(user)

    def _refresh(self, users: dict[str, _User]) -> None:
        """Take in the best vouchers of the users with a task done since the last round."""
        done, self._mark = self.db.users_done_since(self._mark)
        for user in done:
            u = users.setdefault(user, _User())
            u.best = self.db.redeemable_voucher(user)
            self._touch(user)

    async def _scan_events(self, users: dict[str, _User]) -> int:
        """Learn closing and topped-up channels from the logs since the cursor (again from
        `CONFIRMATIONS` blocks before it); the head scanned to."""
        cursor = self.db.channel_events_cursor()
        events = await self.chain.channel_events(0 if cursor is None else max(cursor - CONFIRMATIONS + 1, 0))
        closing = {u: b for u, b in events.closing.items() if b > self._open_at.get(u, -1)}
        if closing or events.funded or events.head != cursor:
            self.db.record_channel_events(closing, sorted(events.funded), events.head)
        for user, block in closing.items():
            self._closing[user] = max(block, self._closing.get(user, 0))
            if user in users:
                self._touch(user)
        for user in events.funded:
            if user in users:
                users[user].deposited = None
                self._touch(user)
        return events.head

    async def due(self, limit: int | None = None, *, confirm: bool = True) -> list[tuple[SignedVoucher, int]]:
        """The vouchers to redeem now (one per user: worth their gas, or of a closing channel), each
        with what its channel had redeemed when it was read; at most ``limit`` (closing channels
        first). Only the channels of users who may owe something due are read (module notes);
        ``confirm=False`` leaves the reads that only confirm a recent record (a user who owes
        nothing worth it unless a reorg undid its redemption) to a later round."""
        users = self._load()
        self._refresh(users)
        head = await self._scan_events(users)
        threshold = self.policy.threshold(await self.chain.gas_price())
        if self._small and threshold <= self._small_max:  # the gas price fell: look at them again
            self._watch |= self._small
            self._small.clear()
            self._small_max = 0
        reads: list[tuple[str, tuple[int, str]]] = []  # (user, its best voucher)
        for user in list(self._watch):
            u = users[user]
            confirmed = u.confirmed(head)
            owed = u.owed()
            if u.best is None or (confirmed and owed <= 0):
                self._watch.discard(user)
            elif u.best[0] > MAX_PACKED_AMOUNT:  # admission refuses these; never let one block a commit
                log.error("voucher of %s for %d wei cannot be redeemed (over 96 bits)", user, u.best[0])
                self._watch.discard(user)  # until the user has another task done
            elif owed <= 0 or (owed < threshold and user not in self._closing):  # nothing due: no read
                if confirmed:
                    self._watch.discard(user)
                    self._small.add(user)
                    self._small_max = max(self._small_max, owed)
                elif confirm:
                    reads.append((user, u.best))  # a reorg may have undone its redemption
            else:
                reads.append((user, u.best))
        # closing channels first (their redemption has a deadline), then the most owed
        reads.sort(key=lambda r: (r[0] not in self._closing, -users[r[0]].owed(), r[0]))
        out: list[tuple[SignedVoucher, int]] = []
        for user, (amount, signature) in reads:
            if limit is not None and len(out) >= limit:
                break
            u = users[user]
            channel = await self.chain.channel(user)
            owed = min(amount, channel.deposited) - channel.redeemed
            if owed > 0 and (owed >= threshold or channel.closing):
                voucher = SignedVoucher(
                    user=user, cumulative_amount=amount, signature=bytes.fromhex(signature[2:])
                )
                out.append((voucher, channel.redeemed))
            # a new redeemed amount is confirmed from this head on; a deposit needs no confirmation
            # (one undone by a reorg only leaves the cap above the truth, one added is logged)
            block = head if u.block is None or channel.redeemed != u.redeemed else u.block
            if (channel.redeemed, channel.deposited, block) != (u.redeemed, u.deposited, u.block):
                self.db.record_channel(user, channel.redeemed, channel.deposited, block)
                u.redeemed, u.deposited, u.block = channel.redeemed, channel.deposited, block
            if not channel.closing and user in self._closing:
                self.db.channel_open(user)
                del self._closing[user]
                self._open_at[user] = head
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
        (call with ``lock`` held, and `settled` once the commit landed). Recent redemptions are
        read back by the redeemer's own round, not before a commit."""
        try:
            return await self.due(limit=await self.chain.max_redeem_batch(), confirm=False)
        except Exception as exc:  # a settlement must never hold a batch back: the round redeems it
            log.warning("nothing settled with this commit: the settlement scan failed: %s", exc)
            return []

    async def settled(self, chunk: list[tuple[SignedVoucher, int]], tx: str) -> None:
        """Record what a transaction that redeemed ``chunk`` changed (read back from the chain;
        read again until it is `CONFIRMATIONS` deep)."""
        before = {v.user: redeemed for v, redeemed in chunk}
        after = {v.user: await self.chain.redeemed(v.user) for v, _ in chunk}
        self.db.set_redeemed(after, tx)
        if self._users is not None:
            for user, redeemed in after.items():
                u = self._users.setdefault(user, _User())
                u.redeemed, u.block = redeemed, None
                self._touch(user)
        METRICS.redeemed_wei.inc(sum(after[u] - before[u] for u in after))
        log.info("redeemed %d vouchers in %s", len(chunk), tx)
