"""The :class:`Client` (see the package docstring for an example)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncGenerator, Callable, Collection, Mapping
from pathlib import Path
from typing import Any, Self

import httpx
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address
from pydantic import RootModel
from supernet.sdk.chain import Contracts, Deployment
from supernet.sdk.chain.coverage import Coverage
from supernet.sdk.chain.eip712 import ReceiptPromise, TaskRequest
from supernet.sdk.chain.payments import Channel
from supernet.sdk.chain.promises import claim_window, promise_horizon, stake_leaves_at
from supernet.sdk.chain.receipts import Receipt, normal_input
from supernet.sdk.chain.tasks import Batch, ChallengeStatus
from supernet.sdk.client.answer import NOT_YET, AnswerMismatchError, SignedCall, check_answer, kept_promise
from supernet.sdk.client.confirm import confirmation_body
from supernet.sdk.client.freshness import check_latest
from supernet.sdk.client.ladder import DEFAULT_MAX_FEE, domain_key, proven_cumulative, rebase, sign_task
from supernet.sdk.client.read_grant import ReadGrantAuth
from supernet.sdk.client.routing import PROBE_TIMEOUT_S, Probe, probe, rank, with_problem
from supernet.sdk.client.signable import SigningRule
from supernet.sdk.client.state import ClientState, TaskRecord
from supernet.sdk.client.streaming import (
    FOLLOW_WITHIN_S,
    StopCutter,
    StreamBound,
    TaskStream,
    check_stream,
    shown_cutter,
    sse_events,
)
from supernet.sdk.client.types import (
    DEFAULT_MIN_LIMITS,
    DEFAULT_PRECISIONS,
    MAX_ANSWER_BYTES,
    ClientError,
    NodeChoice,
    NodeUnreachableError,
    PreparedTask,
    RefundClaimed,
    TaskResult,
    agent_profile,
    answer,
    check_input,
    normal_url,
    parse,
    pick_model_id,
    read_bounded,
    serves_model,
)
from supernet.sdk.client.verify import VerificationReport, check_receipt, request_in_trace
from supernet.sdk.formats.fields import FormatError
from supernet.sdk.formats.trace import Trace
from supernet.sdk.node_api import (
    AccountPublic,
    AuditEntryPublic,
    ConfirmationAccepted,
    NodeInfo,
    ReceiptPublic,
    TaskPublic,
)
from supernet.sdk.store import StoreClient, StoreError
from supernet.sdk.store.errors import InvalidCIDError

log = logging.getLogger(__name__)
MAX_FAILOVER = 3  # nodes tried in turn when the best ranked ones are down (before any payment)
CONNECT_RETRIES = 2
BUSY_RETRIES = 4  # a node's admission answering 503 ``busy`` (nothing stored): the same body, sent again
BUSY_WAIT_MAX_S = 5.0  # the longest ``Retry-After`` honoured between those tries
STREAM_READ_TIMEOUT_S = 60.0
REFUND_SCAN_LAG = 64
"""Blocks the refund scan mark stays behind the head read (`Client.claim_refunds`): a reorg may
mine a challenge again in a block below that head (64: two epochs, finality on Ethereum)."""


def refuse_closing(channel: Channel, node: str) -> None:
    """The rule of every deposit path (`Client.ensure_deposit`, ``supernet account deposit``): no
    deposit into a closing channel, since the node admits no work against it (docs/protocol.md,
    "Admission") and the money would wait for the withdrawal.

    Raises:
        ClientError: the user asked to withdraw from the channel (with the command that cancels).
    """
    if channel.closing:
        raise ClientError(
            f"your payment channel to {node} is closing (withdrawable at {channel.withdrawable_at}): "
            "the node admits no work against it; cancel the withdrawal to keep using it: "
            f"`supernet account withdraw {node} --cancel`"
        )


class _AuditLog(RootModel[list[AuditEntryPublic]]):
    """``GET /v1/tasks/{id}/audit``'s answer."""


class Client:
    """A user of the network: discovery, deposits, signing, submission and verification.

    Args:
        contracts: the deployment, bound to the user's account.
        state_dir: where nonces and cumulative totals persist (``~/.supernet`` by default).
        store_url: content store to fetch traces from (default: the node's advertised store).
        timeout: seconds for the whole of each HTTP request to a node, its answer included (one
            deadline, not one per read: a node sending its answer a byte at a time does not hold
            the client past it); the answer's size is bounded too (`MAX_ANSWER_BYTES`). Following
            a task's stream is bounded apart (`supernet.sdk.client.streaming.StreamBound`).
        min_limits: the least budget of an agent profile it signs for (limit name -> least value).
        precisions: the compute formats it signs a model id in (`DEFAULT_PRECISIONS`: every one
            but bfloat16, whose wider bounds let a node choose among near-tied answers).
    """

    def __init__(
        self,
        contracts: Contracts,
        *,
        state_dir: Path | None = None,
        store_url: str | None = None,
        timeout: float = 60.0,
        min_limits: Mapping[str, int] = DEFAULT_MIN_LIMITS,
        precisions: Collection[str] = DEFAULT_PRECISIONS,
    ) -> None:
        if contracts.account is None:
            raise ClientError("the client needs a signing account")
        self.contracts = contracts
        self.account: LocalAccount = contracts.account
        self.min_limits = min_limits  # the least budget of an agent profile it signs for
        self.precisions = tuple(precisions)  # the compute formats it signs a model id in
        self.state = ClientState.open(state_dir)
        self.store_url = store_url or os.environ.get("SUPERNET_STORE_URL") or None
        self.timeout = timeout
        # connection failures are retried by httpx itself (nothing was sent, so it is always safe)
        self.http = httpx.AsyncClient(
            timeout=timeout, transport=httpx.AsyncHTTPTransport(retries=CONNECT_RETRIES)
        )
        self.last_discovery: list[Probe] = []
        # whom and what it signs for (active node, registered model, validators' quorum); the
        # declarations are read at most every `supernet.sdk.chain.coverage.COVERAGE_TTL_S`
        self.rule = SigningRule(contracts)
        self.last_choice: Probe | None = None
        """The discovered node the last task went to, with its score (``last_choice.explain()``);
        None when the node was given by URL."""
        self.last_skipped: list[str] = []
        """The better ranked nodes passed over for the last task, and why: any failure before the
        deposit (down, an error status, a malformed answer, refused by this client's checks)."""
        self._domain_key = domain_key(contracts.domain)
        self._read_auths: dict[str, ReadGrantAuth] = {}  # node URL -> this user's read grant there

    @classmethod
    def connect(
        cls,
        rpc_url: str,
        deployment: str | Path | Deployment,
        private_key: str | LocalAccount,
        **kwargs: Any,
    ) -> Client:
        """A client from an RPC URL, a deployment (file) and the user's key (hex, or an account,
        e.g. from `supernet.sdk.keys.load_account`)."""
        dep = deployment if isinstance(deployment, Deployment) else Deployment.load(deployment)
        signer = private_key if isinstance(private_key, LocalAccount) else Account.from_key(private_key)
        return cls(Contracts.connect(rpc_url, dep, signer), **kwargs)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self.http.aclose()

    # ------------------------------------------------------------------ discovery and payment

    async def node_info(self, url: str) -> NodeInfo:
        """``GET /v1/node`` of a node: its address, domain, fee, models and agents (with their
        input schemas)."""
        endpoint = url.rstrip("/") + "/v1/node"
        return parse(NodeInfo, await self._get(endpoint), endpoint)

    async def discover(
        self,
        model: str | None = None,
        max_price_per_token: int | None = None,
        min_stake: int = 0,
        *,
        agent: str | None = None,
    ) -> list[NodeChoice]:
        """Active nodes serving ``model`` (``0x`` id or name; None: any), best first by one score of
        price, measured latency and on-chain record (slashes, open disputes), then stake
        (`supernet.sdk.client.routing.score`). Every node is probed at once; the ones left out
        and why, and each one's score, are in ``last_discovery``. With ``agent``, a node whose
        profile of it names a code hash the validators do not replay is left out too."""
        sm = self.contracts.service_manager

        def scan() -> list[Any]:
            return [sm.get_node(a) for a in sm.nodes()]

        views = []
        for view in await asyncio.to_thread(scan):
            if not view.active or view.stake < min_stake:
                continue
            if max_price_per_token is not None and view.price_per_token > max_price_per_token:
                continue
            if (
                model is not None
                and model.startswith("0x")
                and bytes.fromhex(model[2:]) not in view.model_ids
            ):
                continue
            views.append(view)
        probed = await probe(views, self.node_info, lambda info: model is None or serves_model(info, model))
        registered = {v.node: v.model_ids for v in views}
        self.last_discovery = [await self._unsignable(p, model, registered[p.address], agent) for p in probed]
        for p in self.last_discovery:
            if not p.ok:
                log.info("node %s left out: %s", p.address, p.problem)
            else:
                log.debug("node %s", p.explain())
        return [
            NodeChoice(p.address, p.url, p.price_per_token, p.stake, p.info, p.slash_count, p.latency_s)
            for p in rank(self.last_discovery)
            if p.info is not None
        ]

    async def _unsignable(
        self, p: Probe, model: str | None, registered: list[bytes], agent: str | None = None
    ) -> Probe:
        """``p``, left out (with why) if the model id it would be signed for is not one the node
        registered on chain or not one the network's validators check (`model_coverage`), or
        (with ``agent``) if it lists no profile of the agent this client signs for (`agent_profile`:
        unreadable, of another agent, or below ``min_limits``) or no validator quorum holds the
        model and every code hash its profile names together (`SigningRule.uncovered`)."""
        if not p.ok or p.info is None:
            return p
        try:
            model_id = pick_model_id(p.info, model, self.precisions)
        except ClientError as exc:
            return with_problem(p, str(exc))
        if bytes.fromhex(model_id.removeprefix("0x")) not in registered:
            return with_problem(p, f"its /v1/node names model {model_id}, which it did not register on chain")
        covered = await self.model_coverage(model_id)
        if not covered.checkable:
            return with_problem(p, covered.why_not())
        if agent is None:
            return p
        try:
            _, profile = agent_profile(p.info, agent, self.min_limits)
        except ClientError as exc:
            return with_problem(p, str(exc))
        problem = await asyncio.to_thread(self.rule.uncovered, model_id, profile.code_hashes())
        return p if problem is None else with_problem(p, problem)

    async def model_coverage(self, model_id: str) -> Coverage:
        """How much validator stake checks ``model_id`` (`supernet.sdk.chain.coverage`; the
        declarations are read at most every `COVERAGE_TTL_S`)."""
        return await asyncio.to_thread(self.rule.coverage, model_id)

    async def _candidates(self, model: str | None, agent: str | None = None) -> list[NodeChoice]:
        """Discovered nodes, or an error naming every node tried and why it was left out."""
        nodes = await self.discover(model, agent=agent)
        if not nodes:
            tried = "; ".join(p.describe() for p in self.last_discovery) or "no active node is registered"
            raise ClientError(f"no active node serves model {model or '(any)'}: {tried}")
        return nodes

    async def ensure_deposit(
        self, node: str, cumulative: int, top_up: int = 0, *, fee: int | None = None
    ) -> int:
        """Fund the payment channel to ``node`` so that it covers a voucher of ``cumulative``.

        A channel's deposit pays only its node, so the node can count on it (docs/protocol.md
        "Payments"). Returns the wei deposited now (0: the channel already covers it), at least
        ``top_up`` when a deposit is needed.

        Raises:
            ClientError: the channel to ``node`` is closing (cancel the withdrawal first), or (with
                ``fee``, one task's fee) the voucher would need more than that fee on top of what
                the channel holds: the base of the voucher is not backed by the chain, so no
                automatic deposit is made.
        """
        pay = self.contracts.payments
        channel = await asyncio.to_thread(pay.channel, self.account.address, node)
        refuse_closing(channel, node)
        missing = cumulative - channel.deposited
        if missing <= 0:
            return 0
        if fee is not None and missing > fee:
            raise ClientError(
                f"a voucher of {cumulative} wei to {node} would need {missing} wei more than your channel "
                f"holds ({channel.deposited}), above one task's fee ({fee}): not deposited automatically"
            )
        amount = max(missing, top_up)
        await asyncio.to_thread(pay.deposit, node, amount)
        log.info("deposited %d wei into the payment channel to %s", amount, node)
        return amount

    # ------------------------------------------------------------------ tasks

    async def prepare(
        self,
        task_input: str | dict[str, Any],
        *,
        agent: str = "chat",
        model: str | None = None,
        node_url: str | None = None,
        max_fee: int | None = None,
        deposit: int = 0,
        offer: int | None = None,
    ) -> PreparedTask:
        """Pick a node, top the deposit up, and sign the request and voucher (nothing is sent).

        The nonce is reserved at once (saved), so it is never reused; the cumulative total
        moves only when the node accepts (:meth:`accepted`).
        """
        self.last_skipped = []
        p, _ = await self._prepare_failover(task_input, agent, model, node_url, max_fee, deposit, offer)
        return p

    async def _prepare_for(
        self,
        choice: NodeChoice,
        task_input: str | dict[str, Any],
        agent: str,
        model: str | None,
        max_fee: int | None,
        deposit: int,
        offer: int | None = None,
    ) -> PreparedTask:
        """`prepare` for a node already chosen (its ``/v1/node`` answer in hand). The fee signed
        (``maxFee``) is what the node charges: its price, or ``offer`` for priority."""
        p, _ = await self._prepare_paid(choice, task_input, agent, model, max_fee, deposit, offer)
        return p

    async def _prepare_paid(
        self,
        choice: NodeChoice,
        task_input: str | dict[str, Any],
        agent: str,
        model: str | None,
        max_fee: int | None,
        deposit: int,
        offer: int | None = None,
    ) -> tuple[PreparedTask, int]:
        """`_prepare_for`, and the wei deposited now. Every request to the node, and every
        `ClientError` raised here, comes before the deposit: a node failing any of them costs
        nothing."""
        info = choice.info
        model_id = pick_model_id(info, model, self.precisions)
        try:
            agent_hash, profile = agent_profile(info, agent, self.min_limits)
        except ClientError:  # the chain's word on the node and its model comes first
            await asyncio.to_thread(self.rule.check, choice.address, model_id, ())
            raise
        # a node named directly is not discovered: the one signing rule, as the drop-in's (the
        # node, its model, and the code of the agent and of every agent it may call)
        await asyncio.to_thread(self.rule.check, choice.address, model_id, profile.code_hashes())
        check_input(info, agent, task_input)  # before a nonce is reserved or a deposit made
        # what the node runs and records (``8`` for ``8.0``: one signed hash): remembered so, the
        # client shows, cuts and checks what the node saw
        task_input = normal_input(task_input)
        price = info.taskFee
        fee = price if offer is None else offer
        if fee < price:
            raise ClientError(f"offer {fee} is below the node's price {price}")
        cap = DEFAULT_MAX_FEE if max_fee is None else max_fee
        if fee > cap:
            which = "max_fee" if max_fee is not None else "the default max_fee"
            more = "" if max_fee is not None else " (pass max_fee to pay more)"
            raise ClientError(f"node {choice.address} fee {fee} is above {which} {cap}{more}")
        acct = await self._sync_account(choice)
        nonce, cumulative = acct.nonce + 1, acct.cumulative + fee
        deposited = await self.ensure_deposit(choice.address, cumulative, deposit, fee=fee)
        task_id, signed = sign_task(
            self.account,
            self.contracts.domain,
            node=choice.address,
            model_id=model_id,
            agent_hash=agent_hash,
            task_input=task_input,
            max_fee=fee,  # the fee the node charges (docs/protocol.md): a higher one buys priority
            nonce=nonce,
            cumulative=cumulative,
        )
        acct.nonce = nonce
        # remembered before it is sent (an answer lost on the way: `_adopt_unanswered`)
        self.state.record_sent(
            task_id, choice.address, choice.url, task_input, model_id, fee, signed["request"]
        )
        prepared = PreparedTask(
            task_id, choice, signed, agent, task_input, model_id, fee, cumulative, profile.limits
        )
        return prepared, deposited

    def accepted(self, p: PreparedTask) -> None:
        """Record that the node accepted ``p`` (its fee now counts in the cumulative total)."""
        acct = self.state.account(self._domain_key, self.account.address, p.node.address)
        acct.cumulative = max(acct.cumulative, p.cumulative)
        sent = self.state.tasks.get(p.task_id)
        self.state.tasks[p.task_id] = TaskRecord(
            p.node.address,
            p.node.url,
            p.input,
            p.model_id,
            p.fee,
            request=p.signed["request"],
            sent_seq=sent.sent_seq if sent is not None else self.state.tick(),
        )
        self.state.save()

    def finished(self, p: PreparedTask, status: str, output: str | None) -> None:
        """Record the end of ``p``; a failed or refused task is not charged, so its fee is undone."""
        record = self.state.tasks[p.task_id]
        record.status, record.output = status, output
        if status == "done":
            record.done_seq = self.state.tick()
        else:
            acct = self.state.account(self._domain_key, self.account.address, p.node.address)
            acct.cumulative -= p.fee
        self.state.save()

    async def submit_task(
        self,
        task_input: str | dict[str, Any],
        *,
        agent: str = "chat",
        model: str | None = None,
        node_url: str | None = None,
        max_fee: int | None = None,
        deposit: int = 0,
        on_token: Callable[[str], None] | None = None,
        offer: int | None = None,
    ) -> TaskResult:
        """Pick a node, pay, submit, and stream the task to its end.

        Args:
            task_input: the text (or JSON object) the agent gets.
            agent: agent id (must be run by the node).
            model: model name or ``0x`` id (default: the node's first).
            node_url: use this node instead of discovering one on chain.
            max_fee: most wei to pay (refused before anything is signed if the fee is above it;
                default `supernet.sdk.client.ladder.DEFAULT_MAX_FEE`).
            deposit: deposit at least this much when a top-up is needed.
            on_token: called with each piece of text as it is generated.
            offer: pay this fee instead of the node's price (at least the price): under the node's
                fee-priority scheduler a task's share of the model grows with its fee.

        Raises:
            ClientError: no node, a refusal (4xx) or a failed task; or the node streamed more than
                the signed profile lets the task generate, or did not finish it within
                `FOLLOW_WITHIN_S` (the task stays accepted: `verify` it later).
        """
        p = await self._submit(
            task_input,
            agent=agent,
            model=model,
            node_url=node_url,
            max_fee=max_fee,
            deposit=deposit,
            offer=offer,
        )
        streamed: list[str] = []
        cutter = shown_cutter(p.agent, p.input)
        final, complete = await self._follow(p, on_token, streamed, cutter)
        result = self._finish(p, final)
        if result is None:
            raise ClientError(f"task {p.task_id} {final.status}: {final.error}")
        result = await self.checked(p, result)  # the output is the one the receipt commits
        if on_token is not None:  # text was shown: it must be that output
            check_stream(p, streamed, final, complete=complete)
        return result

    def stream(
        self,
        task_input: str | dict[str, Any],
        *,
        agent: str = "chat",
        model: str | None = None,
        node_url: str | None = None,
        max_fee: int | None = None,
        deposit: int = 0,
        offer: int | None = None,
    ) -> TaskStream:
        """`submit_task` as an async iterator of text pieces (``async for piece in client.stream(...)``);
        the stream's ``result`` holds the task once its answer is complete."""
        options = {
            "agent": agent,
            "model": model,
            "node_url": node_url,
            "max_fee": max_fee,
            "deposit": deposit,
            "offer": offer,
        }
        return TaskStream(self, task_input, options)

    async def _submit(
        self,
        task_input: str | dict[str, Any],
        *,
        agent: str,
        model: str | None,
        node_url: str | None,
        max_fee: int | None,
        deposit: int,
        offer: int | None = None,
    ) -> PreparedTask:
        """Prepare and send a task; returns it accepted.

        Without ``node_url``, the best ranked nodes are tried in turn while one fails before the
        deposit (no connection, a timeout, an error status or a malformed answer, to ``GET
        /healthz`` or any request before the deposit, or a node this client's own checks refuse):
        nothing was paid to it. Once a deposit was made for a node, a failure of that node is an
        error naming it, never a silent retry elsewhere (that would pay twice); only a connection
        refused before anything was sent, with no deposit made, moves on. A well-formed 4xx to the
        task itself is a refusal of the request and is raised as it is.
        """
        self.last_skipped = []
        tried: set[str] = set()
        for _ in range(MAX_FAILOVER):
            p, deposited = await self._prepare_failover(
                task_input, agent, model, node_url, max_fee, deposit, offer, tried
            )
            tried.add(p.node.address)
            try:
                created = await self._send(p)
            except ClientError as exc:
                if not _node_down(exc):
                    raise
                unsent = exc if isinstance(exc, NodeUnreachableError) and exc.nothing_sent else None
                if deposited == 0 and unsent is not None:  # the voucher never left: nothing is committed
                    if node_url is not None:
                        raise _cannot_reach(node_url, unsent) from exc
                    self._skip(p.node, exc)
                    continue
                committed = [f"{deposited} wei deposited into your channel to it"] if deposited else []
                if unsent is None:
                    committed.append(
                        f"the task {p.task_id} and its voucher sent (cumulative {p.cumulative} wei)"
                    )
                raise ClientError(
                    f"node {p.node.address} at {p.node.url} failed after payment was committed "
                    f"({'; '.join(committed)}): {_why(exc)}. Not retried on another node, which "
                    f"could pay twice: the deposit stays in your channel to {p.node.address} (the "
                    "task is looked up on that node again on its next use; withdraw the channel "
                    "to take the deposit back)"
                ) from exc
            if created.id.lower() != p.task_id.lower():
                raise ClientError(f"node answered task id {created.id}, expected {p.task_id}")
            self.accepted(p)
            return p
        raise ClientError("no node took the task: " + "; ".join(self.last_skipped))

    async def _prepare_failover(
        self,
        task_input: str | dict[str, Any],
        agent: str,
        model: str | None,
        node_url: str | None,
        max_fee: int | None,
        deposit: int,
        offer: int | None,
        tried: set[str] | None = None,
    ) -> tuple[PreparedTask, int]:
        """Choose a node that is up (not in ``tried``) and prepare the task for it (deposit made,
        voucher signed); the wei deposited now. A discovered node failing in any way before the
        deposit (down, a 5xx or 4xx, a malformed answer, a profile or fee this client refuses) is
        passed over (`last_skipped`): what it is asked then (its health, the user's account) carries
        nothing of the task, so a refusal there is the node's, not the request's, and raising it let
        one cheap node that ranks first refuse every discovering client
        (tests/unit/test_review_session_changes22.py). The task itself is sent after the deposit,
        where a refusal is raised (no second node: that could pay twice)."""
        if node_url is not None:
            self.last_choice = None
            try:
                await self._alive(node_url)
                chosen = await self._choose(model, node_url)
                return await self._prepare_paid(chosen, task_input, agent, model, max_fee, deposit, offer)
            except NodeUnreachableError as exc:
                if not exc.nothing_sent:
                    raise
                raise _cannot_reach(node_url, exc) from exc
        if tried is None:
            tried = set()
        candidates = [c for c in await self._candidates(model, agent) if c.address not in tried]
        cap = DEFAULT_MAX_FEE if max_fee is None else max_fee
        affordable = [c for c in candidates if c.info.taskFee <= cap]
        if candidates and not affordable:  # ranked by taskFee: the cheapest is above the cap too
            fees = "; ".join(f"{c.address}: {c.info.taskFee}" for c in candidates)
            raise ClientError(f"every node's task fee is above max_fee {cap} ({fees})")
        candidates = affordable
        scored = {p.address: p for p in self.last_discovery}
        for choice in candidates[: MAX_FAILOVER - len(tried)]:
            try:
                await self._alive(choice.url)
                prepared = await self._prepare_paid(choice, task_input, agent, model, max_fee, deposit, offer)
            except ClientError as exc:  # nothing deposited or signed (`_prepare_paid`)
                self._skip(choice, exc)
                tried.add(choice.address)
                continue
            self.last_choice = scored.get(choice.address)
            why = self.last_choice.explain() if self.last_choice is not None else choice.address
            passed = f"; passed over: {'; '.join(self.last_skipped)}" if self.last_skipped else ""
            log.info("chose node %s%s", why, passed)
            return prepared
        raise ClientError("no node took the task: " + "; ".join(self.last_skipped))

    def _skip(self, choice: NodeChoice, exc: Exception) -> None:
        self.last_skipped.append(f"{choice.address} at {choice.url}: {_why(exc)}")
        log.warning(
            "node %s at %s passed over (%s); trying the next one", choice.address, choice.url, _why(exc)
        )

    async def _alive(self, url: str) -> None:
        """``GET /healthz``: raises unless the node is up and taking tasks (503: draining)."""
        answer(await self._request("GET", url.rstrip("/") + "/healthz", within_s=PROBE_TIMEOUT_S))

    async def send(self, p: PreparedTask) -> None:
        """Send a task made with :meth:`prepare` to its node and record it accepted.

        Raises:
            ClientError: the node refused it (nothing was stored or billed) or answered another id.
        """
        created = await self._send(p)
        if created.id.lower() != p.task_id.lower():
            raise ClientError(f"node answered task id {created.id}, expected {p.task_id}")
        self.accepted(p)

    async def _send(self, p: PreparedTask) -> TaskPublic:
        """``POST /v1/tasks``. A ``503 busy`` (admission shedding load: nothing stored, no nonce
        used) is answered by sending the very same signed body again after the node's
        ``Retry-After``, up to `BUSY_RETRIES` times: a user's first task during a flood of free keys
        waits the flood out instead of failing. A stored copy answers 409 with its task id, never
        runs twice: after a busy answer, that 409 means the node did store it (a node that stores a
        task and says busy must not make the client forget a task it bills), so the client follows
        the task as accepted."""
        endpoint = p.node.url.rstrip("/") + "/v1/tasks"
        attempt = 0
        try:
            while True:
                resp = await self._request("POST", endpoint, body=p.task_body())
                if attempt > 0 and _stored_already(resp, p.task_id):
                    log.warning("node %s had stored task %s although it answered busy", p.node.url, p.task_id)
                    return await self.task(p.task_id, p.node.url)
                if not _busy(resp) or attempt == BUSY_RETRIES:
                    return parse(TaskPublic, answer(resp), endpoint)
                attempt += 1
                wait = min(_retry_after(resp) * attempt, BUSY_WAIT_MAX_S)
                log.warning("node %s is busy; sending task %s again in %.1f s", p.node.url, p.task_id, wait)
                await asyncio.sleep(wait)
        except ClientError as exc:
            if exc.status is not None:  # the node answered with a refusal: nothing stored or billed
                self.state.tasks.pop(p.task_id, None)
                self.state.save()
            raise

    async def checked(self, p: PreparedTask, result: TaskResult) -> TaskResult:
        """``result`` once the node's signed receipt for ``p`` vouches for its output
        (`supernet.sdk.client.answer.check_answer`: the request just signed, its input, this
        output, the fee, the node's signature and promise); the promise is kept for an omission
        claim. Whether the receipt is then committed, and the trace, are `verify`'s.

        Raises:
            AnswerMismatchError: the receipt fails, or commits another output (recorded so).
        """
        doc = await self.receipt(p.task_id, p.node.url)
        request = TaskRequest.from_json(p.signed["request"])
        call = SignedCall(p.task_id, request, p.input, self.contracts.domain, p.agent)
        proof = {"output": result.output, "signedReceipt": doc.model_dump(mode="json")}
        record = self.state.tasks[p.task_id]
        try:
            checked = check_answer(call, proof, result.output, None)
        except AnswerMismatchError:
            record.status = "answer_mismatch"
            self.state.save()
            raise
        if record.promise is None:
            record.promise = kept_promise(checked.receipt)
            self.state.save()
        return result

    def _finish(self, p: PreparedTask, final: TaskPublic) -> TaskResult | None:
        """Record how ``p`` ended; its result when done, None when it failed or was refused."""
        self.finished(p, final.status, final.output)
        if final.status != "done":
            return None
        output = final.output or ""
        return TaskResult(p.task_id, p.node.address, p.node.url, "done", output, p.fee, final.traceCid)

    async def stream_events(
        self, node_url: str, task_id: str
    ) -> AsyncGenerator[tuple[str, dict[str, Any]], None]:
        """The task's server-sent events as ``(event, data)`` pairs (``data``: a JSON object).

        Not bounded in time here (the node pings every 15 s; a node silent for
        `STREAM_READ_TIMEOUT_S` has stalled): following a task bounds it (`StreamBound`). One
        event is at most `MAX_ANSWER_BYTES`.

        Raises:
            ClientError: the node refused, or sent something that is not an event stream of JSON
                objects; `NodeUnreachableError` when the connection fails.
        """
        base = node_url.rstrip("/")
        url = f"{base}/v1/tasks/{task_id}/events"
        auth = await self._read_auth(node_url)
        timeout = httpx.Timeout(self.timeout, read=STREAM_READ_TIMEOUT_S)
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
        try:
            async with self.http.stream("GET", url, headers=headers, timeout=timeout, auth=auth) as resp:
                if resp.status_code >= 400:
                    body = await read_bounded(resp, f"GET {url}")
                    answer(httpx.Response(resp.status_code, content=body, request=resp.request))
                kind = resp.headers.get("content-type", "").partition(";")[0].strip()
                if kind != "text/event-stream":
                    raise ClientError(f"GET {url}: {kind!r} is not an event stream", malformed=True)
                async for event, data in sse_events(resp.aiter_text(), f"GET {url}", MAX_ANSWER_BYTES):
                    try:
                        doc = json.loads(data)
                    except ValueError:
                        doc = None
                    if not isinstance(doc, dict):
                        raise ClientError(
                            f"GET {url}: a {event!r} event that is not a JSON object", malformed=True
                        )
                    yield event, doc
        except httpx.TransportError as exc:
            raise _unreachable(base, exc) from exc

    async def task(self, task_id: str, node_url: str | None = None) -> TaskPublic:
        """``GET /v1/tasks/{id}`` (with this user's read grant): status, output, trace CID."""
        base = self._url_of(task_id, node_url)
        url = f"{base}/v1/tasks/{task_id}"
        got = parse(TaskPublic, await self._get(url, await self._read_auth(base)), url)
        record = self.state.tasks.get(task_id)
        if record is not None and record.output is None and got.status == "done" and got.output is not None:
            # the answer the user was shown (`wait`, or a `send` whose reply was lost): what its
            # receipt's output hash is checked against; the first one shown stays. The status is
            # left to the billing flows ("sent": its fee is not counted yet, `_adopt_unanswered`)
            record.output = got.output
            record.done_seq = record.done_seq if record.done_seq is not None else self.state.tick()
            self.state.save()
        return got

    async def confirm(
        self,
        task_id: str,
        action: str | Mapping[str, Any],
        node_url: str | None = None,
        *,
        repeat: bool = False,
    ) -> ConfirmationAccepted:
        """Confirm an irreversible action a running task waits for: sign the EIP-712
        ``Confirmation`` and post it (``POST /v1/tasks/{id}/confirmations``).

        Args:
            task_id: The task.
            action: The ``confirmation_required`` event's data (from :meth:`stream_events`; its
                tool and args are hashed here, so what is signed is the call shown), or an
                ``actionHash``.
            node_url: The node running it (default: the one this client sent it to).
            repeat: Also sign the task's second (or later) call of the same tool with the same
                arguments (`confirmation_body`): off by default.

        Returns:
            The node's answer (``resumed`` false: a repeat of an accepted confirmation).
        """
        base = self._url_of(task_id, node_url)
        body = confirmation_body(task_id, action, self.contracts.domain, self.account, repeat=repeat)
        url = f"{base}/v1/tasks/{task_id}/confirmations"
        return parse(ConfirmationAccepted, await self._post(url, body), url)

    async def audit(self, task_id: str, node_url: str | None = None) -> list[AuditEntryPublic]:
        """``GET /v1/tasks/{id}/audit``: the access decisions of the task's agent (with this
        user's read grant)."""
        base = self._url_of(task_id, node_url)
        url = f"{base}/v1/tasks/{task_id}/audit"
        return parse(_AuditLog, await self._get(url, await self._read_auth(base)), url).root

    async def receipt(
        self, task_id: str, node_url: str | None = None, *, wait_committed: float = 0.0
    ) -> ReceiptPublic:
        """The task's signed receipt and where it was batched; with ``wait_committed`` > 0, poll
        until it is committed on chain (its ``batch.proof`` then proves it against the root)."""
        base = self._url_of(task_id, node_url)
        url = f"{base}/v1/tasks/{task_id}/receipt"
        deadline = time.monotonic() + wait_committed
        while True:
            doc = parse(ReceiptPublic, await self._get(url, await self._read_auth(base)), url)
            committed = doc.batch is not None and doc.batch.status == "committed"
            if committed or time.monotonic() >= deadline:
                return doc
            await asyncio.sleep(0.5)

    async def verify(
        self, task_id: str, *, node_url: str | None = None, wait_committed: float = 60.0
    ) -> VerificationReport:
        """Fetch the receipt (waiting for its commit) and run every check on it.

        A task this client submitted is checked against what it remembers (the signed request,
        input, output; an output it never received is fetched and remembered first). Any other
        task of this user is verified too with ``node_url``: the trace must carry the request this
        user signed, naming the node that signed the receipt; input and output come from the
        trace, whose hashes the receipt must match.

        The node's first promise to commit that passes its check is kept, and later calls are
        judged by it: a node cannot postpone its deadline, or spoil the evidence of an omission, by
        answering a later call with another promise. The "latest memory and files" baseline
        learns only from traces this receipt proved (the report ok or pending).

        Raises:
            NodeUnreachableError: the node (named) cannot be reached; where this client keeps the
                node's promise to commit the receipt, the error says the omission claim is open
                once the promise falls due (`claim_omission` needs no node).
            ClientError: the task is unknown here (pass ``node_url``), or the node refused.
        """
        try:
            return await self._verify(task_id, node_url, wait_committed)
        except NodeUnreachableError as exc:
            raise self._unreachable_for(task_id, exc) from exc

    def _unreachable_for(self, task_id: str, exc: NodeUnreachableError) -> NodeUnreachableError:
        """``exc`` naming the task's node, and the omission claim a kept promise opens."""
        record = self.state.tasks.get(task_id)
        node = f"node {record.node} at {record.node_url}" if record is not None else f"the node at {exc.url}"
        kept = record.promise if record is not None else None
        claim = ""
        if kept is not None and "commitBy" in kept:
            claim = (
                f"; this client keeps its signed promise to commit the receipt by {kept['commitBy']} "
                f"(unix time): if the receipt is not committed by then, `supernet task omission {task_id}` "
                "claims the omission (the node must show it in one of its batches or be slashed)"
            )
        message = f"cannot verify task {task_id}: {node} cannot be reached ({exc.reason}){claim}"
        return NodeUnreachableError(exc.url, exc.reason, nothing_sent=exc.nothing_sent, message=message)

    async def _verify(self, task_id: str, node_url: str | None, wait_committed: float) -> VerificationReport:
        """`verify`, its node's failures unexplained."""
        record = self.state.tasks.get(task_id)
        ours = record is not None
        if record is None:
            if node_url is None:
                raise ClientError(f"task {task_id} is not in this client's state: pass the node's URL")
            info = await self.node_info(node_url)
            record = TaskRecord(to_checksum_address(info.address), node_url.rstrip("/"), None, "", 0)
        elif record.output is None:
            await self.task(task_id, record.node_url)  # remembers the output of a done task
        doc = await self.receipt(task_id, record.node_url, wait_committed=wait_committed)

        def batch(batch_id: int, tx_hash: str | None) -> tuple[str, bytes, int]:
            b = self._chain_batch(batch_id, tx_hash)
            return b.node, b.root, b.count

        chain_batch = doc.batch.chainBatchId if doc.batch is not None else None
        resolved = None
        if doc.batch is not None and chain_batch is not None:
            resolved = await asyncio.to_thread(batch, chain_batch, doc.batch.txHash)
        trace_doc = await self._trace_doc(record.node_url, doc.traceCid)
        chain_now = await asyncio.to_thread(
            lambda: int(self.contracts.w3.eth.get_block("latest")["timestamp"])
        )
        domain = self.contracts.domain
        request: TaskRequest | str | None = None
        task_input, output = record.input, record.output
        if ours:
            request = TaskRequest.from_json(record.request) if record.request is not None else None
        else:  # not ours to remember: the trace's, under the request this user signed
            request = "the node served no trace"
            if isinstance(trace_doc, dict):
                task_input, output = trace_doc.get("input"), trace_doc.get("output")
                request = request_in_trace(trace_doc, task_id, self.account.address, domain)
        horizon: int | None = None
        due: Callable[[int], tuple[int, int]] | None = None
        if doc.promise is not None and (doc.batch is None or doc.batch.chainBatchId is None):
            horizon, unbonding, leaves, window = await asyncio.to_thread(
                self._promise_horizon, record.node, chain_now
            )
            deadline = request.deadline if isinstance(request, TaskRequest) else 2**64 - 1
            due = lambda commit_by: claim_window(commit_by, deadline, unbonding, window, leaves)  # noqa: E731
        # no await from here to `_keep_promise`: concurrent verifies of a task see one kept promise
        receipt_doc = doc.model_dump(mode="json")
        kept = record.promise if ours else None
        if kept is not None and str(kept.get("leaf")).lower() == doc.leaf.lower():
            # judged by the promise already kept (its horizon was judged when it was kept)
            receipt_doc["promise"] = {"commitBy": kept["commitBy"], "signature": kept["signature"]}
            horizon = None
        report = check_receipt(
            receipt_doc,
            task_id=task_id,
            user=self.account.address,
            node=record.node,
            task_input=task_input,
            output=output,
            onchain_batch=lambda _: resolved or ("0x" + "00" * 20, b"", 0),
            trace_loaded=trace_doc is not None,
            trace_doc=trace_doc,
            # what this client signed: the model, and the fee as maxFee (a task of another user
            # of this key, not in this state, has neither: its request, from the trace, has them)
            model_id=record.model_id or None,
            max_fee=record.fee or None,
            fee=record.fee or None,
            domain=domain,
            now=chain_now,
            request=request if isinstance(request, TaskRequest) else None,
            promise_horizon=horizon,
            promise_window=due,
        )
        if not ours:
            report.add("request in trace", isinstance(request, TaskRequest), str(request)[:200])
        if ours:
            self._keep_promise(task_id, doc, report, kept)
        if kept is not None and str(kept.get("leaf")).lower() != doc.leaf.lower():
            report.add(
                "receipt as promised", False, f"the node promised leaf {kept.get('leaf')}, serves {doc.leaf}"
            )
        if trace_doc is not None and ours and (report.ok or report.pending):
            await self._check_latest(report, task_id, record, trace_doc)
        return report

    def _chain_batch(self, batch_id: int, tx_hash: str | None) -> Batch:
        """The header of batch ``batch_id`` as committed on chain (blocking chain reads).

        Read in the block of the commit transaction the node names (``tx_hash``): one log query,
        where a hosted RPC refuses one over more blocks than its cap. The node's word is only a
        hint: the event is filtered by the TaskManager's address and the batch id, so a wrong or
        lying hash finds nothing and the header is then searched back from the head in ranges the
        RPC accepts (`TaskManager.batch`: it stops at the range that holds it).

        Raises:
            LookupError: no such batch was committed.
            LogsUnreadable: a single block's query was refused or failed.
        """
        tm = self.contracts.task_manager
        block = self._tx_block(tx_hash) if tx_hash else None
        if block is not None:
            try:
                return tm.batch(batch_id, block, block)
            except LookupError:
                log.warning(
                    "batch %d is not committed in block %d of transaction %s, as its node says: "
                    "searching the chain for it",
                    batch_id,
                    block,
                    tx_hash,
                )
        return tm.batch(batch_id)

    def _tx_block(self, tx_hash: str) -> int | None:
        """The block of mined transaction ``tx_hash`` (None: unknown to the RPC, not mined, or not
        a transaction hash at all: a node's word)."""
        try:
            receipt = self.contracts.w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
        except Exception as exc:  # TransactionNotFound, a malformed hash (several web3 errors)
            log.info("commit transaction %s not found (%s): searching the chain for its batch", tx_hash, exc)
            return None
        number = receipt.get("blockNumber")
        return int(number) if number is not None else None

    def _keep_promise(
        self, task_id: str, doc: ReceiptPublic, report: VerificationReport, kept: dict[str, Any] | None
    ) -> None:
        """Store the node's promise (an omission claim needs it) if none is kept yet and the receipt
        passed every check but its commit: a promise kept with a receipt that fails (another task's,
        a wrong leaf) would be refused by the contract and shut out the honest one for good. The
        leaf stored is the receipt's own hash, never the node's word for it."""
        if kept is not None or doc.promise is None:
            return
        failed = {c.name for c in report.failed()}
        # a promise due too late is still kept: its claim opens at the request's bound on chain
        if not failed <= NOT_YET or not any(c.name == "commit promise" for c in report.checks):
            return
        self.state.tasks[task_id].promise = kept_promise(doc)
        self.state.save()

    def _promise_horizon(self, node: str, now: int) -> tuple[int, int, int, int]:
        """The latest time a claim against ``node`` could still slash, the chain's unbonding
        period, when the node's stake leaves (``stakeLeavesAt``, 0: it is not leaving) and the
        challenge window (chain reads; the last two move a leaving node's claims earlier)."""
        sm, om = self.contracts.service_manager, self.contracts.omission_manager
        unbonding, slash, operator = sm.unbonding_period(), om.slash_amount(), sm.get_operator(node)
        window = self.contracts.task_manager.challenge_window()
        horizon = promise_horizon(now, operator, unbonding, slash, window)
        return horizon, unbonding, stake_leaves_at(operator, slash, sm.min_node_stake()), window

    async def _check_latest(
        self, report: VerificationReport, task_id: str, record: TaskRecord, trace_doc: Any
    ) -> None:
        """ "latest memory and files": the task started from the last roots this client saw before
        it sent the task, or roots written on top of them (`supernet.sdk.client.freshness`)."""
        try:
            trace = Trace.from_dag(trace_doc)
        except FormatError:
            return  # check_receipt reported the malformed trace
        store_url = self.store_url or (await self.node_info(record.node_url)).storeUrl
        if not store_url:
            return
        seen, seqs = self.state.roots, (record.sent_seq, record.done_seq)
        try:
            async with StoreClient(store_url, timeout=30) as store:
                latest = await check_latest(seen, record.node, task_id, *seqs, trace, store.get_dag)
        except (StoreError, InvalidCIDError) as exc:  # a root block missing or unreadable
            report.add("latest memory and files", False, f"a root could not be read: {exc}")
            return
        self.state.save()
        if latest is not None:
            report.add("latest memory and files", *latest)

    async def claim_refunds(self, from_block: int | None = None) -> list[RefundClaimed]:
        """Claim the refund of every task of this client that a fraud verdict proved faulty.

        Finds the challenges on this client's tasks from the chain alone (the receipt is read from
        the challenge transaction, so a slashed node need not answer), and shows each fraud
        verdict's contract the signed request: the refund goes to the request's signer, whatever
        account the node wrote into the receipt (docs/protocol.md, "Disputes"). Tasks without a
        stored request (state files from before it was kept) are skipped.

        Where it reads from: a hosted RPC caps a log query's block range, and a deployment years
        old is thousands of ranges, so the challenges are read from the block after this state's
        scan mark for the deployment (`ClientState.refund_scans`; the deployment block on the first
        call), in ranges the RPC accepts. The mark moves only over ranges read in which every
        challenge on this client's tasks is settled (its refund claimed, or none due) and whose
        challenges the contract counts in full (`_all_challenges`: a provider may cut an answer
        short with no error): one still open, or a range short of challenges, holds it before that
        range, which the next call reads again. It stays
        `REFUND_SCAN_LAG` blocks behind the head (a reorg may mine a challenge again below the head
        read). A task's challenges come after the task was recorded (`ClientState.record_sent`,
        before it is sent), so none of a task recorded later is behind the mark; the state is
        merged with its file first, so tasks another process recorded count. ``from_block`` reads
        from that block instead (the mark moves only if the read leaves no gap after it). A mark
        past the head (a dev chain started anew) reads from the deployment block again.
        """
        self.state.save()  # take in the tasks other processes recorded: their challenges count
        mine = {
            bytes.fromhex(tid.removeprefix("0x")): (tid, rec)
            for tid, rec in self.state.tasks.items()
            if rec.request is not None
        }
        if not mine:
            return []
        tm = self.contracts.task_manager
        deploy_block = self.contracts.deployment.deploy_block
        head = await asyncio.to_thread(lambda: int(self.contracts.w3.eth.block_number))
        saved = self.state.refund_scans.get(self._domain_key, deploy_block - 1)
        mark = self._refund_mark(head)
        start = max(mark + 1, deploy_block) if from_block is None else from_block
        claimed: list[RefundClaimed] = []
        settled, held = start - 1, False  # every challenge on these tasks up to `settled` is settled
        span = tm.log_ranges.widest  # the mark moves range by range: an open challenge holds its range
        for first in range(start, head + 1, span):
            last = min(first + span - 1, head)
            opened = await asyncio.to_thread(tm.logs, "ChallengeOpened", first, last)
            if not await asyncio.to_thread(self._all_challenges, len(opened), first, last, deploy_block):
                held = True  # an answer cut short (no error): the mark stays before this range
            found = await asyncio.to_thread(tm.receipts_challenged, opened, set(mine))
            for challenge_id, receipt in found:
                done, refund = await self._settle_refund(challenge_id, receipt, *mine[receipt.request_hash])
                held = held or not done
                if refund is not None:
                    claimed.append(refund)
            if not held:
                settled = last
        if start <= mark + 1 and min(settled, head - REFUND_SCAN_LAG) > mark:
            self.state.refund_scans[self._domain_key] = min(settled, head - REFUND_SCAN_LAG)
        if self.state.refund_scans.get(self._domain_key, saved) != saved:
            self.state.save()
        return claimed

    def _all_challenges(self, read: int, first: int, last: int, deploy_block: int) -> bool:
        """Whether ``read`` ``ChallengeOpened`` logs are all the challenges the contract counts
        from ``first`` to ``last`` (``challengeCount`` at each end): some providers cut a log answer
        short, or empty it, with no error, and a mark moved over such a range loses the refunds in
        it for good (tests/unit/test_review_session_changes25.py). True where the RPC cannot tell
        (a pruned state); logged when it is not."""
        tm = self.contracts.task_manager
        before = 0 if first - 1 < deploy_block else tm.challenge_count_at(first - 1)
        after = tm.challenge_count_at(last)
        if before is None or after is None or after - before == read:
            return True
        log.warning(
            "the RPC answered %d challenges opened in blocks %d-%d, the contract counts %d: the refund "
            "scan mark stays before them",
            read,
            first,
            last,
            after - before,
        )
        return False

    def _refund_mark(self, head: int) -> int:
        """This state's refund scan mark for the deployment (before its block if none); a mark past
        the head (the chain is shorter than when it was marked: a dev chain started anew) is set
        back to before the deployment block."""
        before = self.contracts.deployment.deploy_block - 1
        mark = self.state.refund_scans.get(self._domain_key, before)
        if mark <= head:
            return mark
        log.warning("refund scan mark %d is past the head %d: reading from the deployment on", mark, head)
        self.state.refund_scans[self._domain_key] = before
        return before

    async def _settle_refund(
        self, challenge_id: int, receipt: Receipt, task_id: str, record: TaskRecord
    ) -> tuple[bool, RefundClaimed | None]:
        """Claim the refund a challenge on this client's task holds, if any: (whether the challenge
        is settled, the refund claimed)."""
        tm = self.contracts.task_manager
        challenge = await asyncio.to_thread(tm.get_challenge, challenge_id)
        if challenge.status in (ChallengeStatus.OPEN, ChallengeStatus.NONE):
            return False, None  # NONE: an RPC behind the one that served the log; read it again
        if challenge.status != ChallengeStatus.FRAUD or challenge.refund_due == 0:
            return True, None
        assert record.request is not None
        request = TaskRequest.from_json(record.request)
        got = await asyncio.to_thread(tm.claim_refund, challenge_id, receipt, request)
        return True, RefundClaimed(task_id, challenge_id, int(got.value))

    async def claim_omission(self, task_id: str) -> int:
        """Claim that the node broke its promise to commit this task's receipt by ``commitBy`` (the
        receipt is in none of its batches): with ``CHALLENGE_BOND``, after ``commitBy``; the node
        answers with the receipt's inclusion or is slashed (docs/protocol.md, "Omission"). Needs
        the request this client signed and the promise a `verify` stored. Returns the claim's id.

        Raises:
            ClientError: the task is not in this client's state, or no promise was stored for it.
        """
        record = self.state.tasks.get(task_id)
        if record is None or record.request is None:
            raise ClientError(f"task {task_id} is not in this client's state (its signed request is needed)")
        if record.promise is None or "receipt" not in record.promise:
            raise ClientError(f"no promise (with its receipt) stored for task {task_id}: run verify first")
        promise = ReceiptPromise(
            bytes.fromhex(task_id.removeprefix("0x")),
            bytes.fromhex(str(record.promise["leaf"]).removeprefix("0x")),
            int(record.promise["commitBy"]),
        )
        signature = bytes.fromhex(str(record.promise["signature"]).removeprefix("0x"))
        request = TaskRequest.from_json(record.request)
        receipt = Receipt.from_json(record.promise["receipt"])
        om = self.contracts.omission_manager
        got = await asyncio.to_thread(om.challenge_omission, promise, signature, request, receipt)
        return int(got.value)

    # ------------------------------------------------------------------ internals

    async def _choose(self, model: str | None, node_url: str | None) -> NodeChoice:
        if node_url is not None:
            info = await self.node_info(node_url)
            address = to_checksum_address(info.address)
            return NodeChoice(address, node_url, *await self._registered(address), info)
        return (await self._candidates(model))[0]

    async def _registered(self, address: str) -> tuple[int, int]:
        """``(price per token, stake)`` of an active node on chain, else `ClientError`.

        Whom a task pays is decided by the chain, never by a server's word: a URL's ``/v1/node``
        names the address its vouchers pay, and an address that is not an active (staked) node has
        nothing behind its receipts (no stake to slash or refund from), so no deposit or voucher
        goes to it. Discovery reads the same registry."""
        view = await asyncio.to_thread(self.rule.active, address)
        return view.price_per_token, view.stake

    async def _sync_account(self, choice: NodeChoice) -> Any:
        url = f"{choice.url.rstrip('/')}/v1/accounts/{self.account.address}"
        remote = parse(AccountPublic, await self._get(url, await self._read_auth(choice.url)), url)
        acct = self.state.accounts.get(self.state.key(self._domain_key, self.account.address, choice.address))
        if acct is not None and remote.billed > acct.cumulative:
            await self._adopt_unanswered(choice, acct)
        proven = 0
        # an account new to this state, or one the state has below the node's total (lowered by
        # another state directory or an impostor's answer): the node must prove its total to lift it
        if remote.billed > (0 if acct is None else acct.cumulative):
            proven = proven_cumulative(remote, self.contracts.domain, self.account.address, choice.address)
            if remote.billed > proven:  # or the chain: the largest voucher the node redeemed
                pay = self.contracts.payments
                channel = await asyncio.to_thread(pay.channel, self.account.address, choice.address)
                proven = max(proven, channel.redeemed)
        return rebase(self.state, self._domain_key, self.account.address, choice.address, remote, proven)

    async def _adopt_unanswered(self, choice: NodeChoice, acct: Any) -> None:
        """The node billed more than this client counted: look up the tasks sent to it whose answer
        never came (a crash or a lost connection after the node stored them). Those the node has
        are the user's and count; those it does not have are forgotten. Without this, the ladder
        would stay below the node's total and every later task would be refused (402)."""
        for task_id, record in list(self.state.tasks.items()):
            if record.status != "sent" or record.node.lower() != choice.address.lower():
                continue
            try:
                task = await self.task(task_id, choice.url)
            except ClientError as exc:
                if exc.status == 404:
                    del self.state.tasks[task_id]
                continue
            record.status = task.status
            if record.status == "done" and record.done_seq is None:
                record.done_seq = self.state.tick()
            if record.status in ("accepted", "running", "done"):
                acct.cumulative += record.fee
                record.output = task.output
                log.info("task %s reached %s although its answer was lost: counted", task_id, choice.address)
        self.state.save()

    async def _follow(
        self,
        p: PreparedTask,
        on_token: Callable[[str], None] | None,
        streamed: list[str],
        cutter: StopCutter,
    ) -> tuple[TaskPublic, bool]:
        """The task's end, and whether its stream ran to it (``streamed`` gets the text pieces;
        ``on_token`` is shown what ``cutter`` lets through: nothing past a stop string). Bounded
        by what the signed profile lets the task generate, and in time (`StreamBound`).

        Raises:
            ClientError: the node streamed past the bound, or the task did not end in time."""
        url = p.node.url

        def show(text: str) -> None:
            if text and on_token is not None:
                on_token(text)

        bound = StreamBound(p)
        try:
            events = bound.events(self.stream_events(url, p.task_id))
            async with contextlib.aclosing(events):
                async for event, data in events:
                    if event == "token":
                        streamed.append(bound.take(str(data.get("text", ""))))
                        show(cutter.feed(streamed[-1]))
                    elif event in ("done", "error"):
                        return parse(TaskPublic, data, f"{url} {event} event"), True
            return await bound.polled(self), False
        finally:
            show(cutter.flush())

    async def wait(
        self, task_id: str, node_url: str | None = None, within_s: float = FOLLOW_WITHIN_S
    ) -> TaskPublic:
        """Poll ``GET /v1/tasks/{id}`` until the task is done, failed or refused (or ``within_s``
        has passed: then its state as it is)."""
        deadline = time.monotonic() + within_s
        while True:
            task = await self.task(task_id, node_url)
            if task.status in ("done", "failed", "refused") or time.monotonic() > deadline:
                return task
            await asyncio.sleep(0.5)

    async def trace(self, task_id: str) -> Trace:
        """The task's trace, typed (`supernet.sdk.formats.trace.Trace`).

        Raises:
            ClientError: the task is unknown here, has no trace yet, or its trace cannot be fetched.
            FormatError: the node's trace is not a well-formed ``supernet/trace/v1``.
        """
        record = self.state.tasks.get(task_id)
        if record is None:
            raise ClientError(f"task {task_id} is not in this client's state")
        cid = (await self.receipt(task_id, wait_committed=0)).traceCid
        doc = await self._trace_doc(record.node_url, cid)
        if doc is None:
            raise ClientError(f"trace {cid} cannot be fetched from the content store")
        return Trace.from_dag(doc)

    async def _trace_doc(self, node_url: str, cid: str) -> Any:
        """The decoded trace block (re-hashed against its CID by the store client), or None."""
        store_url = self.store_url
        if store_url is None:
            store_url = (await self.node_info(node_url)).storeUrl
        if not store_url:
            return None
        try:
            async with StoreClient(store_url, timeout=30) as store:
                return await store.get_dag(cid)
        except StoreError:
            return None

    def _url_of(self, task_id: str, node_url: str | None) -> str:
        if node_url is not None:
            return node_url.rstrip("/")
        record = self.state.tasks.get(task_id)
        if record is None:
            raise ClientError(f"task {task_id} is unknown here: pass the node URL")
        return record.node_url.rstrip("/")

    async def _read_auth(self, node_url: str) -> ReadGrantAuth:
        """This user's read grant for the node at ``node_url`` (results are readable by their
        user only: `supernet.sdk.client.read_grant`).

        The grant is for the address the URL's ``/v1/node`` names, so it is signed only when the
        URL is that address's endpoint registered on chain (`normal_url`): a server naming another
        node's address would get a grant to read the user's results on that node.

        Raises:
            ClientError: ``node_url`` is not the registered endpoint of the node it names (an
                address with no registration has the endpoint ``""``, which no URL is).
        """
        base = node_url.rstrip("/")
        auth = self._read_auths.get(base)
        if auth is None:
            address = to_checksum_address((await self.node_info(base)).address)
            registered = await asyncio.to_thread(self._registered_endpoint, address)
            if normal_url(registered) != normal_url(base):
                raise ClientError(
                    f"{base} is not the endpoint node {address} registered on chain ({registered!r}), "
                    "though it names that node: no read grant for it is sent there (it would read your "
                    "results on that node); use the node's registered URL"
                )
            auth = self._read_auths[base] = ReadGrantAuth(self.account, address, self.contracts.domain)
        return auth

    def _registered_endpoint(self, address: str) -> str:
        """The endpoint ``address`` registered on chain (``""``: none)."""
        return str(self.contracts.service_manager.get_node(address).endpoint)

    async def _get(self, url: str, auth: httpx.Auth | None = None) -> Any:
        """``GET url``'s answer (``auth``: a read grant, for what only its user may read)."""
        return answer(await self._request("GET", url, auth=auth))

    async def _post(self, url: str, body: dict[str, Any]) -> Any:
        return answer(await self._request("POST", url, body=body))

    async def _request(
        self,
        method: str,
        url: str,
        *,
        auth: httpx.Auth | None = None,
        body: dict[str, Any] | None = None,
        within_s: float | None = None,
    ) -> httpx.Response:
        """One request to a node and its whole answer (every request of the client but the event
        stream's goes through here), read within one deadline, ``within_s`` or the client's
        ``timeout`` (httpx's timeouts are per read: a node sending a byte at a time would hold the
        client for ever), and at most `MAX_ANSWER_BYTES`.

        Raises:
            NodeUnreachableError: no connection (``nothing_sent``), a broken one, or no whole answer
                by the deadline, naming the node's URL.
            ClientError: the answer is over `MAX_ANSWER_BYTES` (``malformed``).
        """
        limit = self.timeout if within_s is None else within_s
        kwargs: dict[str, Any] = {"timeout": limit}
        if auth is not None:
            kwargs["auth"] = auth
        if body is not None:
            kwargs["json"] = body
        where = f"{method} {url}"
        try:
            async with asyncio.timeout(limit), self.http.stream(method, url, **kwargs) as resp:
                content = await read_bounded(resp, where)
        except TimeoutError as exc:
            raise NodeUnreachableError(_origin(url), f"{where}: no whole answer within {limit:g} s") from exc
        except httpx.TransportError as exc:
            raise _unreachable(_origin(url), exc) from exc
        # the body as read (decoded): the headers that described its transfer no longer apply
        headers = [
            (k, v)
            for k, v in resp.headers.multi_items()
            if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")
        ]
        return httpx.Response(resp.status_code, headers=headers, content=content, request=resp.request)


def _error_body(resp: httpx.Response, status: int) -> dict[str, Any]:
    """The ``error`` object of a node's answer with ``status`` (empty for another status, or a
    body that is not the node's error format)."""
    if resp.status_code != status:
        return {}
    try:
        error = resp.json().get("error", {})
    except (ValueError, AttributeError):
        return {}
    return error if isinstance(error, dict) else {}


def _busy(resp: httpx.Response) -> bool:
    """A node's ``503 busy``: admission shed the request before storing anything."""
    return _error_body(resp, 503).get("code") == "busy"


def _stored_already(resp: httpx.Response, task_id: str) -> bool:
    """A node's 409 saying task ``task_id`` itself was already submitted (stored)."""
    return str(_error_body(resp, 409).get("taskId", "")).lower() == task_id.lower()


def _retry_after(resp: httpx.Response) -> float:
    """The node's ``Retry-After`` in seconds (1 when absent or not a number), in [0.1, 5]."""
    try:
        seconds = float(resp.headers.get("retry-after", "1"))
    except ValueError:
        seconds = 1.0
    return min(max(seconds, 0.1), BUSY_WAIT_MAX_S) if seconds == seconds else 1.0


def _node_down(exc: ClientError) -> bool:
    """The node failed (no connection, a timeout, a broken answer or a 5xx), as opposed to
    refusing the request (4xx) or a problem on this side. (Transport errors reach here wrapped:
    `Client._request`.)"""
    return isinstance(exc, NodeUnreachableError) or (exc.status is not None and exc.status >= 500)


def _origin(url: str) -> str:
    """The node part of a request's URL (scheme, host and port)."""
    try:
        u = httpx.URL(url)
    except httpx.InvalidURL:
        return url
    return f"{u.scheme}://{u.netloc.decode()}"


def _unreachable(url: str, exc: httpx.TransportError) -> NodeUnreachableError:
    """A transport failure as a `ClientError` naming the node (``nothing_sent`` for a failed
    connection: the request never left)."""
    nothing_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
    return NodeUnreachableError(url, f"{type(exc).__name__}: {exc}"[:200], nothing_sent=nothing_sent)


def _cannot_reach(node_url: str, exc: NodeUnreachableError) -> NodeUnreachableError:
    """``exc`` (a failed connection) as the error of a node the user named by URL."""
    return NodeUnreachableError(
        exc.url,
        exc.reason,
        nothing_sent=True,
        message=f"cannot reach the node at {node_url} ({exc.reason}): is it running, and is the URL right?",
    )


def _why(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        return str(exc)[:200]
    return f"{type(exc).__name__}: {exc}"[:200]
