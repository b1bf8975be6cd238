"""`SupernetAuth`: an ``httpx.Auth`` that pays for each OpenAI chat completion sent to a node.

For every ``POST …/chat/completions`` it reads the node's ``GET /v1/node`` (once) and the user's
``GET /v1/accounts/{user}`` (each call: the ladder re-bases on what the node billed), computes the
signed input from the body about to be sent (`chat_task_input`), signs the ``TaskRequest`` and the
next cumulative voucher (`supernet.sdk.client.ladder`), and sends them base64url-encoded in
``X-Supernet-Auth``. Other requests pass through unchanged. The flow is a generator, so one object
serves ``httpx.Client`` and ``httpx.AsyncClient`` alike.

It follows `Client`'s rules: it signs only for an active node and a model id that node registered
and the validators' quorum checks (``rule``, `supernet.sdk.client.signable`), records every task it
pays for in the shared client state (the signed request, input, output and the node's promise:
``Client.verify``, ``claim_omission`` and ``claim_refunds`` work on them), and hands an answer to
the caller only once it is the output the node's signed receipt commits to, with the
``finish_reason``, ``usage`` and ``logprobs`` of the trace that receipt names (read from
``store_url``, falling back to the node's advertised content store:
`supernet.sdk.openai_compat.answer_check`).

>>> contracts = Contracts.connect(rpc_url, Deployment.load("deployment.json"))  # doctest: +SKIP
>>> auth = SupernetAuth(account, contracts.domain, rule=SigningRule(contracts))  # doctest: +SKIP
>>> httpx.post(f"{node}/v1/chat/completions", json=body, auth=auth)            # doctest: +SKIP
"""

from __future__ import annotations

import base64
import json
import os
import threading
from collections.abc import AsyncGenerator, Collection, Generator, Mapping
from pathlib import Path
from typing import Any

import httpx
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address
from supernet.sdk.chain.eip712 import Domain, TaskRequest
from supernet.sdk.client.answer import CheckedAnswer, SignedCall, kept_promise
from supernet.sdk.client.ladder import DEFAULT_MAX_FEE, domain_key, proven_cumulative, rebase, sign_task
from supernet.sdk.client.read_grant import READ_HEADER, ReadGrantAuth
from supernet.sdk.client.signable import Signable
from supernet.sdk.client.state import ClientState
from supernet.sdk.client.types import (
    DEFAULT_MIN_LIMITS,
    DEFAULT_PRECISIONS,
    ClientError,
    agent_profile,
    answer,
    parse,
    pick_model_id,
)
from supernet.sdk.node_api import AccountPublic, NodeInfo
from supernet.sdk.openai_compat.answer_check import CheckedStream
from supernet.sdk.openai_compat.answer_facts import TraceStore
from supernet.sdk.openai_compat.chat_input import chat_task_input, unsigned_fields
from supernet.sdk.store.client import STORE_URL_ENV

AUTH_HEADER = "X-Supernet-Auth"
CHAT_PATH = "/chat/completions"
AGENT = "chat"


class SupernetAuth(httpx.Auth):
    """Signs every chat completion request with ``account`` for the deployment ``domain``.

    Args:
        account: the user's key.
        domain: the deployment's EIP-712 domain (from the user's deployment file, not from the
            node: a node must not choose which contract the user's vouchers are valid on).
        rule: whom and what may be signed (`supernet.sdk.client.signable.SigningRule` of the
            deployment's contracts): an inactive node, or a model it did not register or the
            validators' quorum does not check, is refused before anything is signed, as `Client`
            refuses it (its receipts could not be verified).
        state_dir: where nonces and cumulative totals persist (shared with `Client`).
        max_fee: most wei to pay per call (default: `supernet.sdk.client.ladder.DEFAULT_MAX_FEE`).
        store_url: the content store to read each answer's trace from first (default:
            ``$SUPERNET_STORE_URL``), over the network; where it lacks the trace (or none is set),
            the node's advertised ``storeUrl`` is read. At most these two reads, within one
            deadline (`answer_facts.TRACE_READ_TIMEOUT_S`).
        store_transport: an httpx transport to the node's advertised store (None: the network; an
            in-process node's ``httpx.ASGITransport`` in tests).
        precisions: the compute formats it signs a model id in, as `Client`'s
            (`supernet.sdk.client.types.DEFAULT_PRECISIONS`: every one but bfloat16).
    """

    def __init__(
        self,
        account: LocalAccount,
        domain: Domain,
        *,
        rule: Signable,
        state_dir: Path | None = None,
        max_fee: int | None = None,
        min_limits: Mapping[str, int] = DEFAULT_MIN_LIMITS,
        store_url: str | None = None,
        store_transport: httpx.AsyncBaseTransport | None = None,
        precisions: Collection[str] = DEFAULT_PRECISIONS,
    ) -> None:
        self.account, self.domain, self.max_fee = account, domain, max_fee
        self.store_url = store_url or os.environ.get(STORE_URL_ENV) or None
        self.store_transport = store_transport
        self.rule = rule
        self.min_limits = min_limits  # the least budget of the chat agent's profile it signs for
        self.precisions = tuple(precisions)  # the compute formats it signs a model id in
        self._state_dir = state_dir
        self.state = ClientState.open(state_dir)
        self._nodes: dict[str, NodeInfo] = {}  # API base URL -> GET /v1/node
        self._grants: dict[str, ReadGrantAuth] = {}  # node address -> this user's read grant there
        self._in_flight: dict[str, dict[int, int]] = {}  # node -> nonce -> cumulative signed
        self._lock = threading.Lock()  # the sync client may be shared between threads

    # httpx reads no response inside an auth flow unless told to, and reading the completion itself
    # would buffer a stream: so only the flow's own lookups (node, account) are read here.
    # An answer's body a transport handed over already read is checked before the flow ends, in
    # the flow's own mode (its trace read awaited in an async client's loop).
    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.read()
        flow = self._flow(request)
        try:
            sent = next(flow)
            while True:
                response = yield sent
                if sent is not request:
                    response.read()
                sent = flow.send(response)
        except StopIteration as end:
            for _ in end.value or ():
                pass
            return
        finally:
            flow.close()

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        await request.aread()
        flow = self._flow(request)
        try:
            sent = next(flow)
            while True:
                response = yield sent
                if sent is not request:
                    await response.aread()
                sent = flow.send(response)
        except StopIteration as end:
            if end.value is not None:
                async for _ in end.value:
                    pass
            return
        finally:
            flow.close()

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        loaded = yield from self._flow(request)
        for _ in loaded or ():
            pass

    def _flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, CheckedStream | None]:
        """The flow of one request; returns the check of an answer whose body was handed over
        already read (to run before the caller has the response), else None."""
        path = request.url.path
        if request.method != "POST" or not path.endswith(CHAT_PATH):
            yield request
            return None
        base = request.url.copy_with(path=path[: -len(CHAT_PATH)], query=None)
        info = self._nodes.get(str(base))
        if info is None:
            info = parse(NodeInfo, answer((yield httpx.Request("GET", f"{base}/node"))), f"{base}/node")
            self._check_domain(info)
            self._nodes[str(base)] = info
        node = to_checksum_address(info.address)
        accounts = f"{base}/accounts/{self.account.address}"
        grant = self._grants.get(node)  # an account is readable by its user only
        if grant is None:
            grant = self._grants[node] = ReadGrantAuth(self.account, node, self.domain)
        read = httpx.Request("GET", accounts, headers={READ_HEADER: grant.header()})
        remote = parse(AccountPublic, answer((yield read)), accounts)
        body = json.loads(request.content)
        call, nonce, cumulative = self._sign_into(request, info, node, remote, body, str(base))
        # the answer is checked as its bytes arrive (`CheckedStream`): no compression to undo
        request.headers["Accept-Encoding"] = "identity"
        try:
            response = yield request
        except BaseException:  # no answer (network error, cancelled): the node may have admitted it
            self._settle(node, nonce, cumulative, None)
            raise
        self._settle(node, nonce, cumulative, response.status_code)
        if 400 <= response.status_code < 500:
            self._nodes.pop(str(base), None)  # re-read the node next time (its fee may have changed)
            self._record(call.task_id, "refused", None)
        elif 200 <= response.status_code < 300:  # any success is an answer: checked before it is read
            loaded = hasattr(response, "_content")  # a transport that handed over a read body
            checked = CheckedStream(
                httpx.ByteStream(response.content) if loaded else response.stream,
                call,
                body.get("stream") is True,
                lambda result: self._answered(call.task_id, result),
                response.headers,
                trace=self._trace_store(info),
            )
            if loaded:  # httpx serves a read body from memory, never from the stream: check it now
                return checked
            response.stream = checked
        return None

    def _trace_store(self, info: NodeInfo) -> TraceStore | None:
        """Where an answer's trace is read: the user's own store (``store_url``, else
        ``$SUPERNET_STORE_URL``) over the network, falling back to the node's advertised one (over
        ``store_transport``), which holds what it committed; or that one alone. The block is
        re-hashed against the receipt's CID either way (`answer_facts.TraceStore`)."""
        if self.store_url:
            return TraceStore(self.store_url, None, info.storeUrl or None, self.store_transport)
        return TraceStore(info.storeUrl, self.store_transport) if info.storeUrl else None

    def _check_domain(self, info: NodeInfo) -> None:
        ours = (self.domain.chain_id, self.domain.verifying_contract.lower())
        theirs = (info.chainId, info.verifyingContract.lower())
        if ours != theirs:
            raise ClientError(f"the node signs for chain/contract {theirs}, this deployment is {ours}")

    def _sign_into(
        self,
        request: httpx.Request,
        info: NodeInfo,
        node: str,
        remote: AccountPublic,
        body: dict[str, Any],
        base: str,
    ) -> tuple[SignedCall, int, int]:
        """Reserve the next nonce and voucher, sign them for ``body``, set the header and record
        the task (before it is sent, as `Client.prepare` does)."""
        fee = info.taskFee
        cap = DEFAULT_MAX_FEE if self.max_fee is None else self.max_fee
        if fee > cap:
            raise ClientError(f"node fee {fee} is above max_fee {cap}")
        agent_hash, profile = agent_profile(info, AGENT, self.min_limits)
        model_id = pick_model_id(info, body.get("model"), self.precisions)
        # before any nonce or voucher is reserved: the node, its model and the agents' code, and
        # nothing asked of the node that the signature does not bind
        if unsigned := unsigned_fields(body):
            raise ClientError(
                f"the request sets {', '.join(unsigned)}, which the signed task does not cover: a node "
                "could ignore it and still be paid; leave it out (n: 1 and penalties of 0 are accepted)"
            )
        self.rule.check(node, model_id, profile.code_hashes())
        task_input = chat_task_input(body)
        with self._lock:
            # re-read: another client on this state directory (a `Client`, a second helper) may
            # have signed since, and a stale total would sign a voucher the node must refuse
            self.state = ClientState.open(self._state_dir)
            proven = proven_cumulative(remote, self.domain, self.account.address, node)
            acct = rebase(self.state, domain_key(self.domain), self.account.address, node, remote, proven)
            pending = self._in_flight.setdefault(node, {})
            # stack on our own unanswered vouchers: the node may admit them before this one
            nonce = max(acct.nonce, *pending, 0) + 1
            cumulative = max(acct.cumulative, *pending.values(), 0) + fee
            pending[nonce] = cumulative
            acct.nonce = nonce
            task_id, signed = sign_task(
                self.account,
                self.domain,
                node=node,
                model_id=model_id,
                agent_hash=agent_hash,
                task_input=task_input,
                max_fee=fee,  # what the node charges (the cap `max_fee` was checked above)
                nonce=nonce,
                cumulative=cumulative,
            )
            url = base.removesuffix("/v1")
            self.state.record_sent(task_id, node, url, task_input, model_id, fee, signed["request"])
        token = base64.urlsafe_b64encode(json.dumps(signed).encode()).decode().rstrip("=")
        request.headers[AUTH_HEADER] = token
        call = SignedCall(task_id, TaskRequest.from_json(signed["request"]), task_input, self.domain)
        return call, nonce, cumulative

    def _record(self, task_id: str, status: str, output: str | None, promise: Any = None) -> None:
        """Update the task's record in the shared state (re-read: other clients write it too)."""
        with self._lock:
            self.state = ClientState.open(self._state_dir)
            record = self.state.tasks.get(task_id)
            if record is None:
                return
            record.status, record.output = status, output
            if status == "done":
                record.done_seq = self.state.tick()
                record.promise = record.promise or promise
            self.state.save()

    def _answered(self, task_id: str, result: CheckedAnswer | Exception) -> None:
        """Record a checked answer (and keep the node's promise to commit its receipt: an omission
        claim needs it), or why there is none."""
        if isinstance(result, Exception):
            self._record(task_id, "failed" if type(result) is ClientError else "answer_mismatch", None)
            return
        self._record(task_id, "done", result.output, kept_promise(result.receipt))

    def _settle(self, node: str, nonce: int, cumulative: int, status: int | None) -> None:
        """Record the answer (``status``; None: none came). Only a 4xx surely admitted nothing;
        anything else counts the voucher as used, and the next call's re-base takes the fee back
        if the node did not bill it (a task that failed, a request that never arrived)."""
        with self._lock:
            if self._in_flight.get(node, {}).pop(nonce, None) is None:
                return  # settled already
            if status is None or not 400 <= status < 500:
                self.state = ClientState.open(self._state_dir)
                acct = self.state.account(domain_key(self.domain), self.account.address, node)
                acct.cumulative = max(acct.cumulative, cumulative)
                self.state.save()
