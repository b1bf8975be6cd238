"""Authentication and admission of paid tasks (ARCHITECTURE.md, "Pay").

A task is admitted only if every check passes; a failed check raises a :class:`NodeError`
with a 4xx status and nothing is written. Order: cheap shape checks, signatures, the node's
own state (task id, nonce, billing), then the chain (the user's deposit), and finally one
transaction that re-checks nonce and billing and stores the task, voucher and nonce.

>>> auth = Authenticator(node_address, domain, executor, db, chain, task_fee=10**12)  # doctest: +SKIP
>>> task = await auth.admit(signed, agent="chat", task_input="hi")  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from eth_utils import to_checksum_address
from supernet.node.service.db import Database
from supernet.node.service.errors import (
    BadRequestError,
    BadSignatureError,
    BusyError,
    DeadlinePassedError,
    FeeInFlightError,
    ForbiddenError,
    InputHashMismatchError,
    InputSchemaError,
    ModelNotServedError,
    PaymentError,
    ReplayError,
    TooManyTasksError,
    WrongNodeError,
)
from supernet.node.service.models import NewTask
from supernet.node.service.ports import ChainPort, Executor, served_models
from supernet.node.service.schemas import SignedTask
from supernet.sdk.agents.input_schema import input_problem
from supernet.sdk.chain.eip712 import (
    Domain,
    TaskRequest,
    Voucher,
    hash_task_request,
    recover_task_request,
    recover_voucher,
)
from supernet.sdk.chain.payments import MAX_PACKED_AMOUNT, compact_signature
from supernet.sdk.chain.receipts import input_hash


def _b32(hex_str: str) -> bytes:
    return bytes.fromhex(hex_str[2:])


def _hex(b: bytes) -> str:
    return "0x" + b.hex()


MAX_ADMISSION_CHAIN_READS = 8
"""Payment-channel reads at once for users new to this node (`Authenticator._channel`)."""
FUNDED_CHANNEL_TTL_S = 15.0
"""Longest a channel read open and funded answers the same user's next requests without a read."""
KNOWN_USER_CHAIN_READS = 4
"""Payment-channel reads at once reserved for users who paid here before (`Authenticator._channel`)."""
KNOWN_USER_WAIT_S = 5.0
"""How long such a user's request waits for one of them before a 503."""
MAX_FUNDED_CHANNELS = 10_000
"""Most funded channels remembered at once (each is a user who made a deposit)."""
UNFUNDED_CHANNEL_TTL_S = 5.0
"""How long a channel read with nothing ever deposited answers the same user's next requests without
a read (refused as it was): an unfunded key repeating itself costs a read per this period, not per
request. A first deposit made meanwhile is seen after it (the SDK deposits before it sends); a
top-up of a funded channel, or a cancelled withdrawal, is seen at once (never remembered)."""
MAX_UNFUNDED_CHANNELS = 10_000
"""Most such channels remembered at once (keys are free: past it, fresh ones are not remembered)."""


def _remember(
    cache: dict[str, tuple[float, Any]], user: str, channel: Any, now: float, ttl: float, limit: int
) -> dict[str, tuple[float, Any]]:
    """``cache`` with ``user``'s channel read at ``now``: once ``limit`` entries are held, those
    older than ``ttl`` go first, and nothing is added while it stays full (or with no ``ttl``)."""
    if len(cache) >= limit:
        cache = {u: k for u, k in cache.items() if now - k[0] < ttl}
    if ttl > 0 and len(cache) < limit:
        cache[user] = (now, channel)
    return cache


class Authenticator:
    """Checks signed task requests and vouchers against this node, its state and the chain."""

    def __init__(
        self,
        node_address: str,
        domain: Domain,
        executor: Executor,
        db: Database,
        chain: ChainPort | None,
        task_fee: int,
        clock: Callable[[], float] = time.time,
        max_unfinished: int = 16,
    ) -> None:
        self.node_address = to_checksum_address(node_address)
        self.max_unfinished = max_unfinished  # a user's accepted or running tasks at most
        self.domain = domain
        self.executor = executor
        self.db = db
        self.chain = chain
        self.task_fee = task_fee
        self._clock = clock
        self._stranger_reads: asyncio.Semaphore | None = None  # made in the serving loop
        self._known_reads: asyncio.Semaphore | None = None
        self._ttl: float | None = None  # `_funded_ttl`, once the withdrawal delay is read
        self._funded: dict[str, tuple[float, Any]] = {}  # user -> (read at, a funded open channel)
        self._unfunded: dict[str, tuple[float, Any]] = {}  # user -> (read at, a channel never funded)

    async def _channel(self, chain: ChainPort, user: str, voucher: int) -> Any:
        """The user's payment channel to this node, read from the chain (or known funded for it).

        Keys are free, so every signed request from a fresh one costs a chain read: at most
        `MAX_ADMISSION_CHAIN_READS` of those run at once, and one past them is refused (503,
        retry) rather than queued, so a flood cannot take the RPC quota and the worker threads the
        batcher, the redeemer and the availability responder share. A user who has paid here
        before (a nonce on record) reads through slots of its own (`KNOWN_USER_CHAIN_READS`,
        waiting up to `KNOWN_USER_WAIT_S`), which a flood of fresh keys cannot hold. A channel
        read open and covering a voucher at least this large answers the same user's requests
        for `funded_ttl` without a read; one with nothing ever deposited for
        `UNFUNDED_CHANNEL_TTL_S` (refused as it was). A failing chain is a 503.

        Raises:
            BusyError: no read slot, or the chain could not be read (503, retry as it is).
        """
        now = self._clock()
        known = self._funded.get(user)
        if (
            known is not None
            and now - known[0] < await self._funded_ttl(chain)
            and voucher <= known[1].deposited
        ):
            return known[1]
        empty = self._unfunded.get(user)
        if empty is not None and now - empty[0] < UNFUNDED_CHANNEL_TTL_S:
            return empty[1]
        gate = await self._read_slot(user)
        try:
            channel = await chain.channel(user)
        except Exception as exc:  # the chain's outage, not the request's fault
            raise BusyError(
                f"the payment channel cannot be read from the chain now ({type(exc).__name__}); retry"
            ) from exc
        finally:
            gate.release()
        if not channel.closing and voucher <= channel.deposited:  # only funded users: each paid a deposit
            ttl = await self._funded_ttl(chain)
            self._funded = _remember(self._funded, user, channel, now, ttl, MAX_FUNDED_CHANNELS)
        elif channel.deposited == 0:  # a key that never paid here (a voucher is at least one fee)
            self._unfunded = _remember(
                self._unfunded, user, channel, now, UNFUNDED_CHANNEL_TTL_S, MAX_UNFUNDED_CHANNELS
            )
        if channel.deposited:
            self._unfunded.pop(user, None)  # an expired entry of a key that has paid since
        return channel

    async def _read_slot(self, user: str) -> asyncio.Semaphore:
        """A held chain-read slot for ``user`` (the caller releases it); see `_channel`."""
        if self._stranger_reads is None or self._known_reads is None:
            self._stranger_reads = asyncio.Semaphore(MAX_ADMISSION_CHAIN_READS)
            self._known_reads = asyncio.Semaphore(KNOWN_USER_CHAIN_READS)
        if self.db.last_nonce(user) < 0:
            if self._stranger_reads.locked():
                raise BusyError("too many payment checks in flight on this node; retry shortly")
            await self._stranger_reads.acquire()
            return self._stranger_reads
        try:
            await asyncio.wait_for(self._known_reads.acquire(), KNOWN_USER_WAIT_S)
        except TimeoutError:
            raise BusyError("this node's payment checks are all busy; retry shortly") from None
        return self._known_reads

    async def _funded_ttl(self, chain: ChainPort) -> float:
        """How long a funded open channel answers without a read: `FUNDED_CHANNEL_TTL_S`, but at most
        a quarter of the contract's withdrawal delay (a withdrawal requested meanwhile must leave the
        node time to redeem), and 0 (no cache) if the delay cannot be read."""
        if self._ttl is None:
            try:
                delay = await chain.withdrawal_delay()
            except Exception:  # the next funded read tries again
                return 0.0
            self._ttl = min(FUNDED_CHANNEL_TTL_S, delay / 4)
        return self._ttl

    def _check_shape(self, s: SignedTask, agent: str, task_input: str | dict[str, Any]) -> TaskRequest:
        r = s.request
        if to_checksum_address(r.node) != self.node_address:
            raise WrongNodeError(f"request is for node {r.node}, this node is {self.node_address}")
        if r.modelId.lower() not in {m.lower() for m in self.executor.model_ids()}:
            raise ModelNotServedError.naming(r.modelId, served_models(self.executor))
        expected_agent = self.executor.agent_hash(agent)
        if expected_agent is None:
            raise ForbiddenError(f"agent {agent!r} is not run by this node")
        if r.agentHash.lower() != expected_agent.lower():
            raise BadRequestError(f"agentHash does not match agent {agent!r} ({expected_agent})")
        self._check_input(agent, task_input)
        actual = _hex(input_hash(task_input))
        if r.inputHash.lower() != actual:
            raise InputHashMismatchError(f"inputHash {r.inputHash} is not the hash of the input ({actual})")
        if r.deadline < self._clock():
            raise DeadlinePassedError(f"deadline {r.deadline} has passed")
        if r.maxFee < self.task_fee:
            raise PaymentError(
                f"maxFee {r.maxFee} is below this node's fee {self.task_fee}", fee=str(self.task_fee)
            )
        return TaskRequest(
            user=r.user,
            node=r.node,
            model_id=_b32(r.modelId),
            agent_hash=_b32(r.agentHash),
            input_hash=_b32(r.inputHash),
            max_fee=r.maxFee,
            nonce=r.nonce,
            deadline=r.deadline,
        )

    def _check_input(self, agent: str, task_input: str | dict[str, Any]) -> None:
        """Refuse an input the agent's declared schema rejects, before anything is stored or
        billed (the agent would fail on it, and the user would learn why only from a failed task)."""
        describe = getattr(self.executor, "agent_input_schema", None)  # executors that know schemas
        schema = describe(agent) if describe is not None else None
        if not schema:
            return
        problem = input_problem(schema, task_input)
        if problem is not None:
            raise InputSchemaError(f"input does not match agent {agent!r}'s input schema {problem}")

    def _check_signatures(self, s: SignedTask, req: TaskRequest) -> None:
        user = to_checksum_address(req.user)
        try:
            signer = recover_task_request(req, self.domain, _b32(s.signature))
        except Exception as exc:  # eth-keys raises several types for malformed signatures
            raise BadSignatureError(f"request signature is malformed: {exc}") from None
        if signer != user:
            raise BadSignatureError(f"request signature is by {signer}, not by user {user}")
        voucher = Voucher(user=user, node=self.node_address, cumulative_amount=s.voucher.cumulativeAmount)
        try:
            vsigner = recover_voucher(voucher, self.domain, _b32(s.voucher.signature))
        except Exception as exc:
            raise BadSignatureError(f"voucher signature is malformed: {exc}") from None
        if vsigner != user:
            raise BadSignatureError(f"voucher signature is by {vsigner}, not by user {user}")
        # What the contract redeems: a packed voucher (96-bit amount, low-s compact signature). A
        # voucher the node could not redeem would make the task free, so it is refused here.
        if s.voucher.cumulativeAmount > MAX_PACKED_AMOUNT:
            raise PaymentError(
                f"voucher amount {s.voucher.cumulativeAmount} is above the most a voucher can redeem "
                f"({MAX_PACKED_AMOUNT})"
            )
        try:
            compact_signature(_b32(s.voucher.signature))
        except ValueError as exc:
            raise BadSignatureError(f"voucher signature cannot be redeemed: {exc}") from None

    def _guard(self, user: str, nonce: int, cumulative: int, fee: int) -> Callable[[int, int], None]:

        def guard(last_nonce: int, billed: int) -> None:
            if nonce <= last_nonce:
                raise ReplayError(
                    f"nonce {nonce} is not above the last nonce {last_nonce} of {user}", lastNonce=last_nonce
                )
            # One fee for the tasks in flight at once: the redeemer collects the largest voucher
            # within the done fees, which is then always exactly the done fees. With mixed fees a
            # user could make a dear task fail and leave no voucher small enough for the cheap
            # ones done behind it (tests/unit/test_review_session_changes.py).
            unfinished = self.db.unfinished_count(user)
            if unfinished >= self.max_unfinished:
                raise TooManyTasksError(
                    f"{user} has {unfinished} unfinished tasks here, the most one user may: "
                    f"send this one once some end",
                    limit=str(self.max_unfinished),
                )
            other = self.db.unfinished_fees(user) - {fee}
            if other:
                raise FeeInFlightError(
                    f"a task of {user} at fee {min(other)} is unfinished: send this one at that fee, "
                    f"or after it ends",
                    fee=str(min(other)),
                )
            # Exactly the billed total plus this task's fee: the redeemer only ever redeems a
            # voucher up to the fees of done tasks, so a larger one would never be redeemed (its
            # task would be free), and a smaller one does not pay for the task.
            if cumulative != billed + fee:
                raise PaymentError(
                    f"voucher is for a cumulative {cumulative} wei, this task needs a cumulative amount "
                    f"of exactly {billed + fee} (billed {billed} + fee {fee})",
                    requiredCumulative=str(billed + fee),
                )

        return guard

    async def admit(self, s: SignedTask, agent: str, task_input: str | dict[str, Any]) -> NewTask:
        """Authenticate a signed task and store it; returns what was stored.

        Raises:
            NodeError: a 4xx subclass naming the first check that failed; nothing is stored.
        """
        req = self._check_shape(s, agent, task_input)
        self._check_signatures(s, req)
        user = to_checksum_address(req.user)
        task_id = _hex(hash_task_request(req, self.domain))
        if self.db.task(task_id) is not None:
            raise ReplayError(f"task {task_id} was already submitted", taskId=task_id)
        # The fee is what the user signed (`maxFee`, at least this node's price, checked above):
        # a user offers more for priority, and the fee-priority scheduler weighs the task by it.
        guard = self._guard(user, req.nonce, s.voucher.cumulativeAmount, req.max_fee)
        guard(self.db.last_nonce(user), self.db.billed(user))
        if self.chain is not None:  # only funds this node alone can claim: the user's channel to it
            channel = await self._channel(self.chain, user, s.voucher.cumulativeAmount)
            if channel.closing:
                raise PaymentError(
                    f"the payment channel of {user} to this node is closing (withdrawable at "
                    f"{channel.withdrawable_at}); cancel the withdrawal or open a new deposit",
                    withdrawableAt=str(channel.withdrawable_at),
                )
            if s.voucher.cumulativeAmount > channel.deposited:
                raise PaymentError(
                    f"the payment channel of {user} to this node holds {channel.deposited} wei in total, "
                    f"the voucher is for {s.voucher.cumulativeAmount}: deposit at least "
                    f"{s.voucher.cumulativeAmount - channel.deposited} more to this node",
                    deposit=str(channel.deposited),
                    requiredDeposit=str(s.voucher.cumulativeAmount),
                )
        task = NewTask(
            id=task_id,
            user=user,
            nonce=req.nonce,
            model_id=s.request.modelId.lower(),
            agent=agent,
            agent_hash=s.request.agentHash.lower(),
            input=task_input,
            input_hash=s.request.inputHash.lower(),
            max_fee=req.max_fee,
            fee=req.max_fee,
            deadline=req.deadline,
            signature=s.signature.lower(),
            voucher_amount=s.voucher.cumulativeAmount,
            voucher_signature=s.voucher.signature.lower(),
        )
        self.db.insert_task(task, guard)  # re-checked inside the transaction: atomic with the write
        return task
