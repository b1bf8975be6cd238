"""What the node service needs from the parts below it, as small protocols.

The service is written against these, so it can be tested with fakes and wired to the real
kernel (:mod:`supernet.node.service.kernel_executor`) and chain
(:mod:`supernet.node.service.chain`) in :mod:`supernet.node.service.runner`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from supernet.sdk.chain.eip712 import Domain
from supernet.sdk.chain.forks import Checkpoint
from supernet.sdk.chain.payments import Channel


@dataclass(frozen=True)
class Job:
    """One task handed to the executor."""

    task_id: str
    user: str
    agent: str
    model_id: str
    input: str | dict[str, Any]
    request: Mapping[str, str] | None = None  # the signed TaskRequest (recorded in the trace)
    request_signature: str | None = None
    fee: int = 0  # wei the task pays: the fee-priority scheduler weighs it by this


@dataclass(frozen=True)
class RootsSnapshot:
    """Every namespace's memory and file root, and the blocks each may read (``Kernel.namespace_roots``),
    at one moment. Numbered: snapshots are taken in order on the event loop but may be stored out of
    order, and an older one must never replace a newer one."""

    seq: int
    roots: Mapping[str, Any]


@dataclass(frozen=True)
class JobResult:
    """What the executor returns: the output and the CID of the execution trace.

    ``roots`` (handed to the ``ResultSink`` only): the roots holding the task's writes, stored in
    the same transaction as its receipt, so a crash can neither keep a write without its receipt
    nor a receipt without its writes."""

    output: str
    trace_cid: str
    roots: RootsSnapshot | None = None


TokenSink = Callable[[str], None]
"""Receives each piece of generated text as it is produced (for the event stream)."""

EventSink = Callable[[str, Mapping[str, Any]], None]
"""Receives a task's named events (name, JSON data) for its event stream."""

ResultSink = Callable[[JobResult], Awaitable[None]]
"""Stores a successful task's result (its receipt) before the task releases its user's namespaces."""


class Executor(Protocol):
    """Runs agent tasks (the kernel)."""

    def model_ids(self) -> Sequence[str]:
        """``0x`` model ids this node serves (the default first): a job's ``model_id`` is one."""
        ...

    def model_name(self, model_id: str) -> str:
        """A human name for the model (OpenAI ``model`` field)."""
        ...

    def model_format(self, model_id: str) -> tuple[str, str]:
        """What the served id ``model_id`` is the hash of: (weights id, compute format)
        (`supernet.sdk.models.served_model_id`), which ``GET /v1/node`` states for clients."""
        ...

    def agent_hash(self, agent: str) -> str | None:
        """The ``agentHash`` a request for the agent signs (``0x`` hash of its profile: code,
        limits, tools; `supernet.sdk.formats.profile`), or None if this node does not run it."""
        ...

    def agent_cards(self) -> list[dict[str, Any]]:
        """Every agent it runs, as ``GET /v1/node`` lists it (`supernet.sdk.node_api.AgentCard`:
        id, code hash, ``agentHash`` and the profile it hashes, description, input schema)."""
        ...

    async def run(
        self,
        job: Job,
        on_token: TokenSink,
        on_event: EventSink | None = None,
        on_result: ResultSink | None = None,
    ) -> JobResult:
        """Run the job to completion; raises on failure. ``on_event`` gets the task's named events
        besides its text (e.g. ``confirmation_required`` when a call waits for the user).
        ``on_result``, when the executor supports it, is awaited with a successful result before
        the task's memory and file writes become its user's for the next task (the node stores the
        receipt there: docs/validator.md, "Where a task's roots come from")."""
        ...


def served_models(executor: Executor) -> dict[str, str]:
    """The executor's models as name -> ``0x`` id (``GET /v1/node`` ``modelNames``), default first."""
    return {executor.model_name(m): m for m in executor.model_ids()}


@dataclass(frozen=True)
class SignedCommit:
    """A signed ``commitBatch`` transaction, persisted before it is broadcast."""

    tx_hash: str
    raw: bytes
    nonce: int


class CommitPending(Exception):
    """A commit transaction is still pending: wait for it, do not replace it."""


@dataclass(frozen=True)
class SignedVoucher:
    """A user's voucher as sent to the payments contract."""

    user: str
    cumulative_amount: int
    signature: bytes


@dataclass(frozen=True)
class ChannelEvents:
    """What Payments logged of this node's channels in a range of blocks (`ChainPort.channel_events`).

    Attributes:
        to: the last block scanned (the one before the first asked for: none); the events are
            those of every block up to it.
        closing: users who requested a withdrawal from their channel to this node
            (``WithdrawalRequested``), with the block of their latest request.
        funded: users who deposited into their channel to this node (``Deposited``).
        funded_unknown: the ``Deposited`` logs of some block scanned could not be read (only its
            withdrawal requests were): any channel may have been topped up.
    """

    to: int
    closing: Mapping[str, int]
    funded: frozenset[str]
    funded_unknown: bool = False


class ChainPort(Protocol):
    """The node's on-chain side: identity, deposits, batch commits, redemption."""

    @property
    def domain(self) -> Domain:
        """The protocol's EIP-712 domain."""
        ...

    async def channel(self, user: str) -> Channel:
        """The payment channel from ``user`` to this node (funds only this node can redeem)."""
        ...

    async def redeemed(self, user: str) -> int:
        """Cumulative wei this node has already redeemed from ``user``."""
        ...

    async def head(self) -> int:
        """The number of the chain's latest block."""
        ...

    async def channel_events(self, from_block: int, to_block: int, max_queries: int) -> ChannelEvents:
        """This node's channels' withdrawal requests and deposits from block ``from_block`` (never
        before the deployment) towards ``to_block``, in at most ``max_queries`` log queries (a
        range the chain refuses is split and tried again, down to one block): how the redeemer
        learns which channels are closing without reading every user's channel. Scans blocks in
        order and stops at the first it cannot read; a refused query is never an error (how far
        it got is `ChannelEvents.to`)."""
        ...

    async def gas_price(self) -> int:
        """The chain's current gas price in wei (the redeem policy weighs amounts against it)."""
        ...

    async def max_redeem_batch(self) -> int:
        """Most vouchers one redemption takes."""
        ...

    async def withdrawal_delay(self) -> int:
        """Seconds between a user's withdrawal request and the withdrawal (the contract's
        ``WITHDRAWAL_DELAY``): how long a channel seen open stays redeemable."""
        ...

    async def sign_commit(
        self, root: bytes, count: int, manifest_cid: str, vouchers: Sequence[SignedVoucher] = ()
    ) -> SignedCommit:
        """Build and sign ``commitBatch`` (nothing is sent): the caller persists it, then broadcasts.
        ``vouchers`` are redeemed in the same transaction (at most `max_redeem_batch`)."""
        ...

    async def broadcast(self, commit: SignedCommit) -> None:
        """Send the signed transaction (again): the same bytes, so at most one of them can land."""
        ...

    async def repriced(self, commit: SignedCommit) -> SignedCommit | None:
        """A replacement of ``commit`` at its nonce when the chain's base fee priced it out (same
        call, higher fees; nothing is sent: the caller persists it, then broadcasts); None while
        it can be mined as it is."""
        ...

    async def wait_commit(self, commit: SignedCommit) -> int | None:
        """The on-chain batch id once the transaction is mined; None if it can never land (it
        reverted, or its nonce was used by another transaction).

        Raises:
            CommitPending: still not mined when the wait ended (wait again; never sign another).
        """
        ...

    async def find_commit(self, root: bytes) -> int | None:
        """The id of a batch this node already committed with ``root`` (None: none on chain)."""
        ...

    async def redeem(self, vouchers: Sequence[SignedVoucher]) -> str:
        """Redeem many vouchers (at most `max_redeem_batch`) in one transaction; returns its hash
        after it is mined."""
        ...

    async def ensure_registered(self, endpoint: str, model_ids: Sequence[str], stake_wei: int) -> None:
        """Register this node (and top its stake up) if it is not registered yet."""
        ...


@runtime_checkable
class CommitBlocks(Protocol):
    """What a chain port tells of the blocks its commits are in: the batcher's reorg watch
    (`Batcher` ``reorg_watch``) re-checks with it that each recent commit's block is still the
    chain's. The real chain (`Web3Chain`) has it; a port without it (the tests' fake chain, which
    never reorganises) is not watched."""

    async def head(self) -> int:
        """The number of the chain's latest block."""
        ...

    async def fork_point(self, blocks: Sequence[Checkpoint]) -> int | None:
        """`supernet.sdk.chain.forks.fork_point` of ``blocks``: None while the newest is still the
        chain's, else the newest that still is (``UNKNOWN_FORK``: none)."""
        ...

    async def locate_commit(self, root: bytes, from_block: int) -> tuple[int, Checkpoint] | None:
        """This node's commit of ``root`` in a block from ``from_block`` on: (batch id, the block
        it is in); None if there is none there."""
        ...
