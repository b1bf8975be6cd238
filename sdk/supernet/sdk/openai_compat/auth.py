"""`SupernetAuth`: an ``httpx.Auth`` that pays for each OpenAI chat completion sent to a node.

For every ``POST …/chat/completions`` it reads the node's ``GET /v1/node`` (once) and the user's
``GET /v1/accounts/{user}`` (each call: the ladder re-bases on what the node billed), computes the
signed input from the body about to be sent (`chat_task_input`), signs the ``TaskRequest`` and the
next cumulative voucher (`supernet.sdk.client.ladder`), and sends them base64url-encoded in
``X-Supernet-Auth``. Other requests pass through unchanged. The flow is a generator, so one object
serves ``httpx.Client`` and ``httpx.AsyncClient`` alike.

>>> auth = SupernetAuth(account, Deployment.load("deployment.json").domain)    # doctest: +SKIP
>>> httpx.post(f"{node}/v1/chat/completions", json=body, auth=auth)            # doctest: +SKIP
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import AsyncGenerator, Generator, Mapping
from pathlib import Path
from typing import Any

import httpx
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address
from supernet.sdk.chain.eip712 import Domain
from supernet.sdk.client.ladder import DEFAULT_MAX_FEE, domain_key, proven_cumulative, rebase, sign_task
from supernet.sdk.client.read_grant import READ_HEADER, ReadGrantAuth
from supernet.sdk.client.state import ClientState
from supernet.sdk.client.types import (
    DEFAULT_MIN_LIMITS,
    ClientError,
    agent_profile,
    answer,
    parse,
    pick_model_id,
)
from supernet.sdk.node_api import AccountPublic, NodeInfo
from supernet.sdk.openai_compat.chat_input import chat_task_input

AUTH_HEADER = "X-Supernet-Auth"
CHAT_PATH = "/chat/completions"
AGENT = "chat"


class SupernetAuth(httpx.Auth):
    """Signs every chat completion request with ``account`` for the deployment ``domain``.

    Args:
        account: the user's key.
        domain: the deployment's EIP-712 domain (from the user's deployment file, not from the
            node: a node must not choose which contract the user's vouchers are valid on).
        state_dir: where nonces and cumulative totals persist (shared with `Client`).
        max_fee: most wei to pay per call (default: `supernet.sdk.client.ladder.DEFAULT_MAX_FEE`).
    """

    def __init__(
        self,
        account: LocalAccount,
        domain: Domain,
        *,
        state_dir: Path | None = None,
        max_fee: int | None = None,
        min_limits: Mapping[str, int] = DEFAULT_MIN_LIMITS,
    ) -> None:
        self.account, self.domain, self.max_fee = account, domain, max_fee
        self.min_limits = min_limits  # the least budget of the chat agent's profile it signs for
        self._state_dir = state_dir
        self.state = ClientState.open(state_dir)
        self._nodes: dict[str, NodeInfo] = {}  # API base URL -> GET /v1/node
        self._grants: dict[str, ReadGrantAuth] = {}  # node address -> this user's read grant there
        self._in_flight: dict[str, dict[int, int]] = {}  # node -> nonce -> cumulative signed
        self._lock = threading.Lock()  # the sync client may be shared between threads

    # httpx reads no response inside an auth flow unless told to, and reading the completion itself
    # would buffer a stream: so only the flow's own lookups (node, account) are read here.
    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.read()
        flow = self.auth_flow(request)
        try:
            sent = next(flow)
            while True:
                response = yield sent
                if sent is not request:
                    response.read()
                sent = flow.send(response)
        except StopIteration:
            return
        finally:
            flow.close()

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        await request.aread()
        flow = self.auth_flow(request)
        try:
            sent = next(flow)
            while True:
                response = yield sent
                if sent is not request:
                    await response.aread()
                sent = flow.send(response)
        except StopIteration:
            return
        finally:
            flow.close()

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        path = request.url.path
        if request.method != "POST" or not path.endswith(CHAT_PATH):
            yield request
            return
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
        nonce, cumulative = self._sign_into(request, info, node, remote, body)
        try:
            response = yield request
        except BaseException:  # no answer (network error, cancelled): the node may have admitted it
            self._settle(node, nonce, cumulative, None)
            raise
        self._settle(node, nonce, cumulative, response.status_code)
        if 400 <= response.status_code < 500:
            self._nodes.pop(str(base), None)  # re-read the node next time (its fee may have changed)

    def _check_domain(self, info: NodeInfo) -> None:
        ours = (self.domain.chain_id, self.domain.verifying_contract.lower())
        theirs = (info.chainId, info.verifyingContract.lower())
        if ours != theirs:
            raise ClientError(f"the node signs for chain/contract {theirs}, this deployment is {ours}")

    def _sign_into(
        self, request: httpx.Request, info: NodeInfo, node: str, remote: AccountPublic, body: dict[str, Any]
    ) -> tuple[int, int]:
        """Reserve the next nonce and voucher, sign them for ``body`` and set the header."""
        fee = info.taskFee
        cap = DEFAULT_MAX_FEE if self.max_fee is None else self.max_fee
        if fee > cap:
            raise ClientError(f"node fee {fee} is above max_fee {cap}")
        agent_hash, _ = agent_profile(info, AGENT, self.min_limits)
        model_id = pick_model_id(info, body.get("model"))
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
            self.state.save()
        _, signed = sign_task(
            self.account,
            self.domain,
            node=node,
            model_id=model_id,
            agent_hash=agent_hash,
            task_input=chat_task_input(body),
            max_fee=fee,  # what the node charges (the cap `max_fee` was checked above)
            nonce=nonce,
            cumulative=cumulative,
        )
        token = base64.urlsafe_b64encode(json.dumps(signed).encode()).decode().rstrip("=")
        request.headers[AUTH_HEADER] = token
        return nonce, cumulative

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
