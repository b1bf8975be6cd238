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
  only costs a read); nothing: never read; at least the threshold: read, whatever the logs say;
- less than the threshold: read only if its channel is closing, which the node learns from the
  ``WithdrawalRequested`` logs of its channels, from a block cursor kept in the database (a
  request made while the node was down is seen after a restart; a new database with no task
  starts near the head, an older one without a cursor at the deployment); ``Deposited`` logs in
  the same queries drop a stale deposit. A call scans a bounded number of log queries
  (`SCAN_QUERIES` in the redeemer's round, `COMMIT_SCAN_QUERIES` before a commit: a commit never
  waits for a catch-up) and the cursor is saved after each, so progress is never lost; a range
  the RPC refuses is split (`ChainPort.channel_events`);
- while the scan has not reached the head (catching up, or stopped at a block the RPC will not
  answer for), closing channels may go unseen: the redeemer's own round then also reads the
  channels of users with a small unredeemed debt, `FALLBACK_READS` a round, least recently read
  first, and a commit settles only what is due without a log (a debt over the threshold, a
  channel known to be closing);
- a redeemed amount newly recorded (from a redemption, or a read that found it changed) counts as
  confirmed only once a read at least `CONFIRMATIONS` blocks after the one that first found it
  still finds it (then stored with block 0: a restart does not read it again); until then it is
  read back by the redeemer's own round rather than before a commit: a reorg may have undone the
  redemption.

A user's best voucher is kept in memory from the start (one pass over the database) and updated
only for users with a task done since (receipts are numbered in the order they are stored); users
owing less than the threshold are set aside until something they owe changes or the gas price
falls below what they owe, so a round's work follows what changed, not how many users there are
(but for the fallback reads above, while the scan is behind).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
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
"""Blocks after which a redeemed amount read from the chain is trusted once a read that late still
finds it; also how far back from the head each scan of the channels' logs starts again (a reorg
may have replaced blocks already scanned). At least the chain's deepest reorg, as
``[chain] reorg_watch``."""

SCAN_QUERIES = 8
"""Most log queries one round of the redeemer makes to scan its channels' logs (a catch-up from
far behind takes several rounds; the cursor is saved after each)."""

COMMIT_SCAN_QUERIES = 1
"""Most log queries before a commit (the batcher waits for them with the settlement lock held);
enough when the rounds keep the scan near the head."""

FALLBACK_READS = 32
"""Channels of users with a small unredeemed debt that a round reads while the scan is behind the
head (closing channels unknown), least recently read first: every such user is read within
``users / FALLBACK_READS`` rounds, which must stay well within ``WITHDRAWAL_DELAY``."""


@dataclass
class _User:
    """What the redeemer knows of one user without reading the chain."""

    best: tuple[int, str] | None = None  # the largest redeemable voucher (amount, 0x signature)
    redeemed: int = 0  # as recorded
    deposited: int | None = None  # as last read; None: unknown, or topped up since
    block: int | None = 0  # None: recorded from a redemption and not read back; > 0: the head when
    # `redeemed` was first read (a read CONFIRMATIONS later confirms it); 0: confirmed, or no record
    read_at: int = -1  # the head of this process's last read of the channel (-1: none)

    def confirmed(self) -> bool:
        """Whether the recorded ``redeemed`` is past any reorg."""
        return self.block == 0

    def to_confirm(self, head: int) -> bool:
        """Whether a read at chain head ``head`` is needed to confirm (or correct) ``redeemed``:
        one recorded from a redemption (its read-back), or a read `CONFIRMATIONS` deep."""
        return self.block is None or (self.block > 0 and head - self.block >= CONFIRMATIONS)

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
        self._open_at: dict[str, int] = {}  # user -> requests up to this block are superseded

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

    async def _scan_events(self, users: dict[str, _User], queries: int) -> tuple[int, bool]:
        """Learn closing and topped-up channels from the logs after the cursor, in at most
        ``queries`` log queries; the chain's head, and whether the scan reached it (else a closing
        channel may be unseen). A fresh database (no task, no record) starts near the head; one
        without a cursor (a node upgraded to this scan) at the deployment."""
        head = await self.chain.head()
        cursor = self.db.channel_events_cursor()
        if cursor is None and not users and self.db.task_count() == 0:
            cursor = max(head - CONFIRMATIONS, 0)  # nobody can owe anything from before
            self.db.record_channel_events({}, [], cursor)
        start = 0 if cursor is None else cursor + 1
        try:
            events = await self.chain.channel_events(start, head, queries)
        except Exception as exc:  # the port promises none, but a scan never stops redemption
            log.warning("channels' logs not scanned: %s", exc)
            return head, False
        closing = {u: b for u, b in events.closing.items() if b > self._open_at.get(u, -1)}
        funded = {u for u in events.funded if u in users}
        if events.funded_unknown:  # a block's deposits could not be read: any may be stale
            funded |= {u for u, user in users.items() if user.deposited is not None}
        # blocks within CONFIRMATIONS of the head may be replaced by a reorg: scanned again
        scanned = max(min(events.to, head - CONFIRMATIONS), 0)
        moved = scanned if events.to >= start and (cursor is None or scanned > cursor) else None
        if closing or funded or moved is not None:
            self.db.record_channel_events(closing, sorted(funded), moved)
        for user, block in closing.items():
            self._closing[user] = max(block, self._closing.get(user, 0))
            if user in users:
                self._touch(user)
        for user in funded:
            users[user].deposited = None
            self._touch(user)
        return head, events.to >= head

    async def due(self, limit: int | None = None, *, confirm: bool = True) -> list[tuple[SignedVoucher, int]]:
        """The vouchers to redeem now (one per user: worth their gas, or of a closing channel), each
        with what its channel had redeemed when it was read; at most ``limit`` (closing channels
        first). Only the channels of users who may owe something due are read (module notes).
        ``confirm=False`` is the path before a commit: at most `COMMIT_SCAN_QUERIES` log queries,
        no read that only confirms a recent record (a user who owes nothing worth it unless a
        reorg undid its redemption) and no fallback reads: while the scan is behind the head only
        what is due without a log (a debt over the threshold, a channel known to be closing) rides
        on the commit, and the redeemer's own round looks for unseen closing channels (returning
        nothing there made every commit settle nothing behind an RPC whose log ranges are shorter
        than the rescan window: tests/unit/test_review_session_changes15.py)."""
        users = self._load()
        self._refresh(users)
        head, known = await self._scan_events(users, SCAN_QUERIES if confirm else COMMIT_SCAN_QUERIES)
        threshold = self.policy.threshold(await self.chain.gas_price())
        if self._small and threshold <= self._small_max:  # the gas price fell: look at them again
            self._watch |= self._small
            self._small.clear()
            self._small_max = 0
        reads: list[tuple[str, tuple[int, str]]] = []  # (user, its best voucher)
        for user in list(self._watch):
            u = users[user]
            owed = u.owed()
            if u.best is None or (u.confirmed() and owed <= 0):
                self._watch.discard(user)
            elif u.best[0] > MAX_PACKED_AMOUNT:  # admission refuses these; never let one block a commit
                log.error("voucher of %s for %d wei cannot be redeemed (over 96 bits)", user, u.best[0])
                self._watch.discard(user)  # until the user has another task done
            elif owed <= 0 or (owed < threshold and user not in self._closing):  # nothing due: no read
                if u.confirmed():
                    self._watch.discard(user)
                    self._small.add(user)
                    self._small_max = max(self._small_max, owed)
                elif confirm and u.to_confirm(head):
                    reads.append((user, u.best))  # a reorg may have undone its redemption
            else:
                reads.append((user, u.best))
        if not known and confirm:  # a closing channel may be unseen: read some small debts
            queued = {user for user, _ in reads} | self._closing.keys()
            spare = (
                (u.read_at, user, u.best)
                for user, u in users.items()
                if u.best is not None and u.redeemed < u.best[0] <= MAX_PACKED_AMOUNT and user not in queued
            )
            reads += [(user, best) for _, user, best in heapq.nsmallest(FALLBACK_READS, spare)]
        # closing channels first (their redemption has a deadline), then the most owed
        reads.sort(key=lambda r: (r[0] not in self._closing, -users[r[0]].owed(), r[0]))
        out: list[tuple[SignedVoucher, int]] = []
        for user, (amount, signature) in reads:
            if limit is not None and len(out) >= limit:
                break
            u = users[user]
            channel = await self.chain.channel(user)
            u.read_at = head
            owed = min(amount, channel.deposited) - channel.redeemed
            if owed > 0 and (owed >= threshold or channel.closing):
                voucher = SignedVoucher(
                    user=user, cumulative_amount=amount, signature=bytes.fromhex(signature[2:])
                )
                out.append((voucher, channel.redeemed))
            # a redeemed amount newly seen is confirmed by a read CONFIRMATIONS blocks later that
            # still finds it; a deposit needs no confirmation (one undone by a reorg only leaves
            # the cap above the truth, one added is logged)
            if u.block is None or channel.redeemed != u.redeemed:
                block = head
            elif u.to_confirm(head):  # a read CONFIRMATIONS deep still finds it
                block = 0
            else:
                block = u.block
            if (channel.redeemed, channel.deposited, block) != (u.redeemed, u.deposited, u.block):
                self.db.record_channel(user, channel.redeemed, channel.deposited, block)
                u.redeemed, u.deposited, u.block = channel.redeemed, channel.deposited, block
                self._touch(user)
            if channel.closing and user not in self._closing:  # a request the scan has not reached
                self.db.record_channel_events({user: head}, [], None)
                self._closing[user] = head
                self._touch(user)
            elif not channel.closing and user in self._closing:
                self.db.channel_open(user)
                del self._closing[user]
                # requests up to here are superseded, but for those a reorg could still move here
                self._open_at[user] = head - CONFIRMATIONS
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
        read again by the next round, and confirmed by a read `CONFIRMATIONS` blocks after that)."""
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
