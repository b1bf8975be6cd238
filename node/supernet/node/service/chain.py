"""The node's chain port on the SDK's typed contract wrappers (``supernet.sdk.chain``).

web3's HTTP client is synchronous, so every call runs in a worker thread. Every transaction of
the node's account in this process takes its nonce in one order (`bindings._sender`, the SDK's
lock per account, and `bindings.next_nonce`), whoever sends it: the node's own duties (under its
transaction lock too) and the SDK's answers to data claims alike. ``commitBatch`` is split into
sign, broadcast and wait: the batcher persists the signed transaction before it is broadcast, and
after a crash or a wait that gave up broadcasts the *same* bytes again, so one batch can never be
committed twice (two signed commits of one batch would have two nonces, and both could land).
Between signing and broadcasting its nonce is reserved (`bindings.reserve_nonce`): no other
transaction takes it while the RPC cannot yet count it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

import requests
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address
from hexbytes import HexBytes
from supernet.node.service.ports import ChannelEvents, CommitPending, SignedCommit, SignedVoucher
from supernet.sdk.chain import Contracts, Voucher, resend
from supernet.sdk.chain.bindings import (
    _sender,
    build_signed,
    fees,
    fill_nonce_gap,
    gas_limit,
    release_nonce,
    send_ether,
)
from supernet.sdk.chain.eip712 import Domain, TaskRequest
from supernet.sdk.chain.errors import InsufficientFundsError
from supernet.sdk.chain.forks import Checkpoint, fork_point
from supernet.sdk.chain.payments import Channel, pack_vouchers
from supernet.sdk.chain.receipts import Receipt
from supernet.sdk.chain.registry import Role
from web3.exceptions import ProviderConnectionError, TransactionNotFound

log = logging.getLogger(__name__)

RESERVED_SLOTS = 16
"""Batch slots a node reserves when it registers (``TaskManager.reserveSlots``, 22,100 gas each,
once): its first commits then rewrite existing words. More are created as needed."""


COMMIT_POLL_S = 0.25
"""How often `Web3Chain.wait_commit` looks for the commit's receipt and at the account's nonce."""

_DEAD = object()  # `wait_commit`: the commit's nonce went to another transaction

LOG_RANGE = 5_000
"""Blocks per ``eth_getLogs`` of `Web3Chain.channel_events` at most (hosted RPCs cap a query's
range, and the number of logs in one answer: a range refused is halved and tried again)."""

LOG_RANGE_REGROW = 4
"""Ranges read in a row after which `Web3Chain.channel_events` tries ranges twice as wide again
(up to `LOG_RANGE`), once a refusal made them narrower."""

_UNREACHABLE = (requests.ConnectionError, requests.Timeout, ProviderConnectionError, TimeoutError)
"""The RPC not answering at all (no refusal to split a log query on)."""

_TIMEOUTS = (requests.Timeout, TimeoutError)
"""Of those, an answer too slow: a range of more than one block is halved as if refused (an RPC that
times out on a heavy range instead of refusing it kept the scan at that range for good); a dead
RPC times out on narrow ranges too, and then stops the scan as before."""

ACCOUNT_OPENING_WEI = 1
"""Put into a new node's verification escrow when it registers: its Payments account slot
(earnings | escrow) then exists, so every settlement rewrites it (5,000 gas) instead of the first
one creating it (22,100), as reserved batch slots do for commits."""


class BatchSlots:
    """Which of this node's batch slots are free (docs/protocol.md "Batches").

    A commit writes one word in a slot of the node's own; a slot holds its batch until
    ``BATCH_RETENTION`` after the commit, then the node reuses it (an existing word costs 5,000
    gas to rewrite, a new one 22,100). Learned once from this node's ``BatchCommitted`` events, then
    kept up to date from its own commits.
    """

    def __init__(self, retention_s: int, used: dict[int, int] | None = None) -> None:
        self.retention_s = retention_s
        self.committed_at: dict[int, int] = dict(used or {})

    def pick(self, now: int) -> int:
        """The lowest slot free at ``now`` (a new one when every used slot still holds a batch)."""
        for slot in sorted(self.committed_at):
            if self.committed_at[slot] + self.retention_s <= now:
                return slot
        return max(self.committed_at, default=-1) + 1

    def used(self, slot: int, committed_at: int) -> None:
        """Record a commit into ``slot``."""
        self.committed_at[slot] = committed_at


class Web3Chain:
    """:class:`~supernet.node.service.ports.ChainPort` on a real chain."""

    def __init__(self, contracts: Contracts, account: LocalAccount, price_per_token: int = 0) -> None:
        self.contracts = contracts.as_account(account)
        self.account = account
        # the node starts: no commit of its is signed and not yet broadcast (a stored one, not
        # broadcast before a restart, is in no pool: its nonce goes to whichever comes first)
        release_nonce(self.contracts.w3, account.address)
        self.price_per_token = price_per_token
        self._tx_lock = asyncio.Lock()
        self._max_redeem_batch: int | None = None
        self._withdrawal_delay: int | None = None
        self._slots: BatchSlots | None = None
        self._broadcast_before: set[str] = set()  # commits sent once already (`broadcast`)
        self._log_range = LOG_RANGE  # blocks per log query now (narrower after a refusal)
        self._log_ranges_read = 0  # ranges read in a row at that width

    @property
    def domain(self) -> Domain:
        """The deployment's EIP-712 domain."""
        return self.contracts.domain

    async def channel(self, user: str) -> Channel:
        """The payment channel from ``user`` to this node."""
        return await asyncio.to_thread(self.contracts.payments.channel, user, self.account.address)

    async def redeemed(self, user: str) -> int:
        """Cumulative wei this node redeemed from ``user``."""
        return (await self.channel(user)).redeemed

    async def channel_events(self, from_block: int, to_block: int, max_queries: int) -> ChannelEvents:
        """``WithdrawalRequested`` and ``Deposited`` of this node's channels from ``from_block``
        (never before the deployment) towards ``to_block``, in at most ``max_queries``
        ``eth_getLogs`` (both events index the node as their second topic). A range is at most
        `LOG_RANGE` blocks; one the RPC refuses (too wide, or too many logs in the answer: anyone
        can emit ``Deposited`` to this node) is halved and tried again, and the narrower width kept
        for the next ranges (wider again after `LOG_RANGE_REGROW` read); a single block refused is
        read for its withdrawal requests alone (its deposits then unknown: `funded_unknown`), and
        the width before it restored (its logs, not the width, were refused). The
        scan stops at a block it cannot read, or when the RPC does not answer: how far it got is
        `ChannelEvents.to`, never an error."""
        payments = self.contracts.payments
        w3 = self.contracts.w3
        events = payments.contract.events
        requested = HexBytes(events.WithdrawalRequested().topic)
        deposited = HexBytes(events.Deposited().topic)
        node = HexBytes(bytes(12) + bytes.fromhex(self.account.address[2:]))

        def get_logs(first: int, last: int, topic: list[HexBytes]) -> list[Any]:
            query = {
                "address": payments.contract.address,
                "fromBlock": first,
                "toBlock": last,
                "topics": [topic, None, node],
            }
            return list(w3.eth.get_logs(query))  # type: ignore[arg-type]

        def scan() -> ChannelEvents:
            first = max(from_block, self.contracts.deployment.deploy_block)
            scanned = first - 1
            closing: dict[str, int] = {}
            funded: set[str] = set()
            funded_unknown = False
            queries = 0
            halved_from: int | None = None  # the width before this run of refusals
            while first <= to_block and queries < max_queries:
                width = min(self._log_range, LOG_RANGE)
                last = min(first + width - 1, to_block)
                queries += 1
                try:
                    logs = get_logs(first, last, [requested, deposited])
                    halved_from = None
                    self._log_ranges_read += 1
                    if self._log_ranges_read >= LOG_RANGE_REGROW and self._log_range < LOG_RANGE:
                        self._log_range, self._log_ranges_read = min(2 * self._log_range, LOG_RANGE), 0
                except Exception as exc:  # refused (too wide, too many logs), timed out, or down
                    down = isinstance(exc, _UNREACHABLE) and not isinstance(exc, _TIMEOUTS)
                    if down or (isinstance(exc, _TIMEOUTS) and last == first):
                        log.warning("channels' logs from block %d not read: %s", first, exc)
                        break
                    if last > first:  # a heavy range, refused or too slow: split it
                        if halved_from is None and not isinstance(exc, _TIMEOUTS):
                            halved_from = width  # the width before this run of refusals
                        self._log_range, self._log_ranges_read = max((last - first + 1) // 2, 1), 0
                        log.info("channels' logs of blocks %d-%d not read (%s): halved", first, last, exc)
                        continue
                    if queries >= max_queries:
                        break
                    queries += 1
                    try:  # the block's withdrawal requests alone (a flood of deposits stops nothing)
                        logs = get_logs(first, last, [requested])
                    except Exception as again:
                        log.warning("channels' logs of block %d unreadable, scan stops: %s", first, again)
                        break
                    log.warning("deposits of block %d unreadable (%s): all deposits unknown", first, exc)
                    funded_unknown = True
                    if halved_from is not None:  # too many logs in one block: not the range's width
                        self._log_range, halved_from = halved_from, None
                for e in logs:
                    topics = [bytes(t) for t in e["topics"]]
                    user = to_checksum_address(topics[1][12:])
                    if topics[0] == requested:
                        closing[user] = max(closing.get(user, 0), int(e["blockNumber"]))
                    else:
                        funded.add(user)
                scanned, first = last, last + 1
            return ChannelEvents(scanned, closing, frozenset(funded), funded_unknown)

        return await asyncio.to_thread(scan)

    async def gas_price(self) -> int:
        """The chain's current gas price in wei."""
        return int(await asyncio.to_thread(lambda: self.contracts.w3.eth.gas_price))

    async def max_redeem_batch(self) -> int:
        """The contract's ``MAX_REDEEM_BATCH``."""
        if self._max_redeem_batch is None:
            self._max_redeem_batch = await asyncio.to_thread(self.contracts.payments.max_redeem_batch)
        return self._max_redeem_batch

    async def withdrawal_delay(self) -> int:
        """The contract's ``WITHDRAWAL_DELAY``."""
        if self._withdrawal_delay is None:
            self._withdrawal_delay = await asyncio.to_thread(self.contracts.payments.withdrawal_delay)
        return self._withdrawal_delay

    def _batch_slots(self) -> BatchSlots:
        """This node's slots, read once from its ``SlotsReserved`` and ``BatchCommitted`` events
        (worker thread); a reserved slot counts as used long ago."""
        if self._slots is None:
            tm = self.contracts.task_manager
            since, me = self.contracts.deployment.deploy_block, {"node": self.account.address}
            used: dict[int, int] = {}
            for e in tm.logs("SlotsReserved", since, argument_filters=me):  # ranged: RPCs cap a query
                first, count = int(e["args"]["first"]), int(e["args"]["count"])
                used.update(dict.fromkeys(range(first, first + count), 1))
            for e in tm.logs("BatchCommitted", since, argument_filters=me):
                used[int(e["args"]["slot"])] = int(e["args"]["committedAt"])
            self._slots = BatchSlots(tm.batch_retention(), used)
        return self._slots

    async def sign_commit(
        self, root: bytes, count: int, manifest_cid: str, vouchers: Sequence[SignedVoucher] = ()
    ) -> SignedCommit:
        """Build and sign ``commitBatch`` at the next nonce into a free slot, settling ``vouchers``
        in the same transaction (a revert is raised here, by gas estimation); nothing is sent, so
        the batcher can persist it first. Signed as every transaction of the project is
        (`bindings.build_signed`): fees within the contracts' tip ceiling (the node's ``[chain]
        max_priority_fee_gwei``), the chain id pinned at connect (never the RPC's answer in this
        worker thread), the estimate with `bindings.gas_limit`'s margin (the estimate is exact for
        one state of the stake lock only). Its nonce is the account's next (`bindings.next_nonce`,
        under `bindings._sender`, the order of every transaction of the account in this process,
        the SDK's answers to data claims included) and stays reserved until `broadcast` hands the
        commit to the RPC, so no transaction sent meanwhile takes it.

        Raises:
            FeeTooHigh: the RPC's tip is above the ceiling (logged as an error: a duty).
            InsufficientFundsError: the wallet cannot pay for it (`_wallet_short`).
        """
        tm = self.contracts.task_manager
        w3 = self.contracts.w3
        packed = self._packed(vouchers) if vouchers else b""

        def sign() -> SignedCommit:
            slots = self._batch_slots()
            slot = slots.pick(int(w3.eth.get_block("latest")["timestamp"]))
            fn = tm.contract.functions.commitBatch(slot, root, count, manifest_cid, packed)
            try:
                with _sender(self.account.address):
                    signed = build_signed(
                        w3,
                        self.account,
                        fn,
                        tm.name,
                        tip_ceiling=self.contracts.tip_ceiling,
                        duty=self.contracts.duty,
                        reserve=True,  # held until `broadcast` hands it to the RPC
                    )
            except InsufficientFundsError:
                raise
            except Exception as exc:
                short = self._wallet_short(fn, exc)
                if short is None:
                    raise
                raise short from exc
            return SignedCommit("0x" + signed.hash.hex(), signed.raw, signed.nonce)

        async with self._tx_lock:  # one nonce per transaction of this node
            return await asyncio.to_thread(sign)

    def _wallet_short(self, fn: Any, exc: Exception) -> InsufficientFundsError | None:
        """A commit's estimate the wallet capped, as the wallet's error (worker thread): RPCs
        estimate a call with fees within the gas its balance pays at the fee cap ("gas required
        exceeds allowance", Anvil's and geth's words), so an empty wallet looks like a call out of
        gas. It is the wallet's when the same call estimated without fees (no such cap) costs more
        at the fee cap than the wallet holds. None: not the wallet's (or it cannot be told)."""
        if "exceeds allowance" not in str(exc).lower():
            return None
        w3, address = self.contracts.w3, self.account.address
        try:
            gas = gas_limit(int(fn.estimate_gas({"from": address})))
            cap = fees(w3, tip_ceiling=self.contracts.tip_ceiling).max_fee_per_gas
            balance = int(w3.eth.get_balance(address))
        except Exception:
            return None
        if balance >= gas * cap:
            return None
        return InsufficientFundsError(
            f"the node's account {address} cannot pay for a batch commit: it holds {balance} wei, "
            f"the commit may cost {gas * cap} ({gas} gas at {cap} wei); send it some ether"
        )

    async def broadcast(self, commit: SignedCommit) -> None:
        """Send the signed bytes; "already known" and "nonce too low" are not errors here (the
        transaction is in the pool or mined, or its nonce went to another: `wait_commit` tells).
        The commit's nonce is released (`sign_commit` reserved it) once the RPC was handed it,
        whether it took it or not. A gap under it that nothing of this node will fill (its nonce
        chosen from a count that was too high) is filled (`bindings.fill_nonce_gap`) when the
        commit is broadcast again (a gap that outlived a whole wait, never an RPC's count lagging a
        send just made), else the commit would stay queued for good.

        Raises:
            InsufficientFundsError: the RPC refused it for want of funds (the wallet must be fed:
                the batcher reports its promises at risk at once).
        """
        w3 = self.contracts.w3
        address = self.account.address

        def send() -> None:
            # a refusal for want of funds is the batcher's cue: the wallet, not the RPC
            resend.broadcast(w3, address, commit.raw, commit.nonce, f"the commit of tx {commit.tx_hash}")
            with _sender(address):
                if commit.tx_hash in self._broadcast_before:
                    fill_nonce_gap(w3, self.account, commit.nonce, self.contracts.tip_ceiling)
                elif len(self._broadcast_before) >= 256:  # one per batch in flight: keep it small
                    self._broadcast_before.clear()
                self._broadcast_before.add(commit.tx_hash)

        async with self._tx_lock:
            await asyncio.to_thread(send)

    async def repriced(self, commit: SignedCommit) -> SignedCommit | None:
        """A replacement of ``commit`` at its nonce when the chain's base fee has passed its fee cap
        (it cannot be mined while that lasts, and re-broadcasting the same bytes never helps):
        the same call and gas limit, the tip raised by `REPLACEMENT_BUMP` (what pools ask of a
        replacement, geth's 10 %), the cap to `fees`' rule at today's base fee (at least the old cap
        raised alike). None while it can be mined as it is signed, once its nonce is used
        (`wait_commit` tells by what), or when the raised tip would pass the node's ceiling
        (logged as a duty at risk). Whichever of the two lands, the batch is committed once: they
        share the nonce.
        """

        def reprice() -> SignedCommit | None:
            what = f"commit {commit.tx_hash} (tip ceiling: [chain] max_priority_fee_gwei)"
            ceiling = self.contracts.tip_ceiling
            signed = resend.repriced(self.contracts.w3, self.account, commit.raw, ceiling, what)
            if signed is None:
                return None
            return SignedCommit("0x" + signed.hash.hex(), signed.raw, signed.nonce)

        return await asyncio.to_thread(reprice)

    async def wait_commit(self, commit: SignedCommit, timeout_s: float = 120.0) -> int | None:
        """The batch id from the mined commit; None if it can never land (reverted, or dropped with
        its nonce used by another transaction).

        Raises:
            CommitPending: not mined within ``timeout_s`` and still able to land.
        """
        tm = self.contracts.task_manager
        w3 = self.contracts.w3
        address = self.account.address

        def mined() -> Any:
            """The commit's receipt, None while it may still land, or `_DEAD` when its nonce went
            to another transaction (checked every poll: a commit whose nonce was taken, e.g. by
            a transaction sent at a restart before the stored commit was re-broadcast, is known
            dead at once instead of holding every later batch back for the whole timeout)."""
            try:
                return w3.eth.get_transaction_receipt(commit.tx_hash)  # type: ignore[arg-type]
            except TransactionNotFound:
                pass
            if not resend.nonce_used(w3, address, commit.nonce):
                return None
            try:  # the nonce is used: by this transaction (mined since the first look) or another
                return w3.eth.get_transaction_receipt(commit.tx_hash)  # type: ignore[arg-type]
            except TransactionNotFound:
                return _DEAD

        def wait() -> int | None:
            deadline = time.monotonic() + timeout_s
            dead_polls = 0
            while True:
                receipt = mined()
                # dead only on two polls in a row: an RPC's receipts can lag its nonces, and a
                # nonce can free again (the other transaction reorged out): then it may land
                dead_polls = dead_polls + 1 if receipt is _DEAD else 0
                if receipt is not None and (receipt is not _DEAD or dead_polls >= 2):
                    break
                if time.monotonic() >= deadline:
                    raise CommitPending(f"commit {commit.tx_hash} still pending after {timeout_s} s")
                time.sleep(COMMIT_POLL_S)
            if receipt is _DEAD:
                log.warning(
                    "commitBatch %s can never land: nonce %d was used by another transaction",
                    commit.tx_hash,
                    commit.nonce,
                )
                return None
            if receipt["status"] != 1:  # mined but reverted: the batcher signs a fresh one
                log.warning("commitBatch %s reverted in block %s", commit.tx_hash, receipt["blockNumber"])
                return None
            args = tm.events(receipt, "BatchCommitted")[0]["args"]
            self._batch_slots().used(int(args["slot"]), int(args["committedAt"]))
            return int(args["batchId"])

        return await asyncio.to_thread(wait)

    async def find_commit(self, root: bytes) -> int | None:
        """The id of a ``BatchCommitted`` of this node with ``root`` since the deployment, if any:
        a commit that landed while its transaction hash was never recorded (a crash between send
        and record) or after the wait for it gave up."""
        found = await asyncio.to_thread(self._commit_of, root, 0)
        return None if found is None else found[0]

    async def locate_commit(self, root: bytes, from_block: int) -> tuple[int, Checkpoint] | None:
        """This node's ``BatchCommitted`` with ``root`` from block ``from_block`` on (never before
        the deployment), if any: its batch id and the block it is in (the reorg watch)."""
        return await asyncio.to_thread(self._commit_of, root, from_block)

    def _commit_of(self, root: bytes, from_block: int) -> tuple[int, Checkpoint] | None:
        """The first ``BatchCommitted`` of this node with ``root`` from ``from_block`` (worker thread)."""
        logs = self.contracts.task_manager.logs(  # ranged: RPCs cap a query's blocks
            "BatchCommitted",
            max(from_block, self.contracts.deployment.deploy_block),
            argument_filters={"node": self.account.address},
        )
        for e in logs:
            if bytes(e["args"]["root"]) == root:
                return int(e["args"]["batchId"]), Checkpoint(int(e["blockNumber"]), bytes(e["blockHash"]))
        return None

    async def head(self) -> int:
        """The number of the chain's latest block."""
        return int(await asyncio.to_thread(lambda: self.contracts.w3.eth.block_number))

    async def fork_point(self, blocks: Sequence[Checkpoint]) -> int | None:
        """Whether the chain still holds ``blocks`` (`supernet.sdk.chain.forks.fork_point`)."""
        return await asyncio.to_thread(fork_point, self.contracts.w3, blocks)

    async def redeem(self, vouchers: Sequence[SignedVoucher]) -> str:
        """``Payments.redeem`` of all ``vouchers`` in one transaction."""
        async with self._tx_lock:
            result = await asyncio.to_thread(self.contracts.payments.redeem, *self._typed(vouchers))
        return result.tx_hash

    def _packed(self, vouchers: Sequence[SignedVoucher]) -> bytes:
        """``vouchers`` as ``commitBatch`` settles them (packed, 96 bytes each)."""
        return pack_vouchers(*self._typed(vouchers))

    def _typed(self, vouchers: Sequence[SignedVoucher]) -> tuple[list[Voucher], list[bytes]]:
        """The users' EIP-712 vouchers to this node, and their signatures."""
        node = self.account.address
        typed = [Voucher(user=v.user, node=node, cumulative_amount=v.cumulative_amount) for v in vouchers]
        return typed, [v.signature for v in vouchers]

    # -- decoys (docs/security-parameters.md "Paying validators") -------------------------------

    async def account_balances(self) -> tuple[int, int]:
        """This node's (earnings, verification escrow) in Payments."""
        return await asyncio.to_thread(self.contracts.payments.node_account, self.account.address)

    async def fund_escrow(self, amount: int) -> None:
        """Add ``amount`` wei of the node's ether to its verification escrow."""
        async with self._tx_lock:
            await asyncio.to_thread(self.contracts.payments.fund_escrow, self.account.address, amount)

    async def send_ether(self, to: str, amount: int) -> None:
        """A plain transfer from the node's account (it funds its decoy accounts)."""
        async with self._tx_lock:
            await asyncio.to_thread(
                send_ether, self.contracts.w3, self.account, to, amount, self.contracts.tip_ceiling
            )

    async def reveal_decoy(
        self, challenge_id: int, receipt: Receipt, request: TaskRequest, signature: bytes
    ) -> str:
        """``TaskManager.revealDecoy``: the challenged receipt is a decoy of ours (``request`` is
        its signed task request, ``signature`` the request's user's Decoy signature)."""
        async with self._tx_lock:
            result = await asyncio.to_thread(
                self.contracts.task_manager.reveal_decoy, challenge_id, receipt, request, signature
            )
        return result.tx_hash

    async def ensure_registered(self, endpoint: str, model_ids: Sequence[str], stake_wei: int) -> None:
        """Register with ``stake_wei`` (at least the minimum), or top the stake up and sync the
        endpoint, models and price of an existing registration."""
        sm = self.contracts.service_manager
        ids = [bytes.fromhex(m[2:]) for m in model_ids]

        def sync() -> None:
            op = sm.get_operator(self.account.address)
            if not op.registered:
                stake = max(stake_wei - op.stake, sm.min_node_stake() - op.stake, 0)
                sm.register_node(endpoint, ids, self.price_per_token, stake)
                log.info("registered node %s at %s with stake %d", self.account.address, endpoint, stake)
                if op.role == Role.NONE:  # a new node (not one registering again): set its batch slots up
                    self.contracts.task_manager.reserve_slots(0, RESERVED_SLOTS)
                    self._slots = None
                    # ... and its Payments account: a first settlement then rewrites the slot.
                    self.contracts.payments.fund_escrow(self.account.address, ACCOUNT_OPENING_WEI)
                return
            view = sm.get_node(self.account.address)
            if op.stake < stake_wei:
                sm.add_stake(stake_wei - op.stake)
            if view.endpoint != endpoint:
                sm.update_endpoint(endpoint)
            if view.model_ids != ids:
                sm.update_models(ids)
            if view.price_per_token != self.price_per_token:
                sm.update_price(self.price_per_token)

        async with self._tx_lock:
            await asyncio.to_thread(sync)
