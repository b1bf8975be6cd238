"""`openai_client` / `async_openai_client`: the official OpenAI client, paying a Supernet node.

>>> from supernet.sdk import openai_client
>>> client = openai_client("http://127.0.0.1:8101", key, "deployment.json")          # doctest: +SKIP
>>> reply = client.chat.completions.create(model="smollm2-135m",                     # doctest: +SKIP
...     messages=[{"role": "user", "content": "Hi"}], max_completion_tokens=16)
>>> reply.choices[0].message.content, reply.usage.total_tokens                       # doctest: +SKIP

Needs the ``openai`` package (``pip install 'supernet-sdk[openai]'``).
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import httpx
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address
from supernet.sdk.chain.deployment import Deployment
from supernet.sdk.client.client import refuse_closing
from supernet.sdk.client.signable import Signable, SigningRule
from supernet.sdk.client.types import DEFAULT_PRECISIONS, answer
from supernet.sdk.openai_compat.auth import SupernetAuth

if TYPE_CHECKING:
    import openai
    from supernet.sdk.chain import Contracts

log = logging.getLogger(__name__)

API_KEY = "supernet"
"""OpenAI clients insist on an API key; a node authenticates by signature and ignores it."""


def _auth(
    node_url: str,
    private_key: str | LocalAccount,
    deployment: str | Path | Deployment,
    rpc_url: str | None,
    deposit: int,
    state_dir: Path | None,
    max_fee: int | None,
    rule: Signable | None,
    store_url: str | None = None,
    precisions: Collection[str] = DEFAULT_PRECISIONS,
) -> tuple[str, SupernetAuth]:
    from supernet.sdk.chain import Contracts

    dep = deployment if isinstance(deployment, Deployment) else Deployment.load(deployment)
    account = private_key if isinstance(private_key, LocalAccount) else Account.from_key(private_key)
    base = node_url.rstrip("/") + "/v1"
    rpc = rpc_url or dep.rpc_url
    if rpc is None and (rule is None or deposit):
        raise ValueError(
            "the drop-in reads the chain before it signs (is the node active, did it register the "
            "model, do validators check it): pass rpc_url (the deployment file names none)"
        )
    if rpc is not None and (rule is None or deposit):
        contracts = Contracts.connect(rpc, dep, account)
        chain_rule = SigningRule(contracts)
        if deposit:
            _fund(contracts, account, base, deposit, chain_rule)
        rule = rule or chain_rule
    assert rule is not None
    auth = SupernetAuth(
        account,
        dep.domain,
        rule=rule,
        state_dir=state_dir,
        max_fee=max_fee,
        store_url=store_url,
        precisions=precisions,
    )
    return base, auth


def _fund(contracts: Contracts, account: LocalAccount, base: str, amount: int, rule: SigningRule) -> None:
    """Top the payment channel to the node up to ``amount`` wei (one transaction, announced), under
    every deposit path's rules: only to an active node (the signing rule would pay no other, and a
    deposit waits a withdrawal delay to come back), never into a closing channel (the node admits
    no work against it).

    Raises:
        ClientError: the address the URL names is no active node, or the channel is closing.
    """
    node = to_checksum_address(answer(httpx.get(f"{base}/node", timeout=30))["address"])
    rule.active(node)
    payments = contracts.payments
    channel = payments.channel(account.address, node)
    refuse_closing(channel, node)
    missing = amount - channel.deposited
    if missing > 0:
        log.info("depositing %d wei into the payment channel to %s", missing, node)
        payments.deposit(node, missing)


def openai_client(
    node_url: str,
    private_key: str | LocalAccount,
    deployment: str | Path | Deployment,
    *,
    rpc_url: str | None = None,
    deposit: int = 0,
    state_dir: Path | None = None,
    max_fee: int | None = None,
    timeout: float = 300.0,
    rule: Signable | None = None,
    store_url: str | None = None,
    precisions: Collection[str] = DEFAULT_PRECISIONS,
    **kwargs: Any,
) -> openai.OpenAI:
    """An ``openai.OpenAI`` whose chat completions the node at ``node_url`` runs, each paid by a
    signed request and the next cumulative voucher (`SupernetAuth`).

    Args:
        node_url: the node's API (``http://host:port``).
        private_key: the user's key (hex, or an account from `supernet.sdk.keys.load_account`).
        deployment: the deployment (file): its payment contract is the signing domain.
        rpc_url: the chain's JSON-RPC (default: the deployment file's): read before each
            signature (`supernet.sdk.client.signable.SigningRule`) and to fund the channel.
        deposit: fund the payment channel to this node up to this many wei first.
        state_dir: nonces and voucher totals (``~/.supernet``, shared with `Client`).
        max_fee: most wei per call (default: `supernet.sdk.client.ladder.DEFAULT_MAX_FEE`).
        timeout: seconds per HTTP request (a completion runs the model).
        rule: whom and what may be signed, if not the deployment's chain read through ``rpc_url``
            (`supernet.sdk.client.signable.SigningRule`; an application holding its own `Contracts`
            passes one).
        store_url: the content store to read each answer's trace from, whose ``finish_reason``,
            ``usage`` and ``logprobs`` the answer must state (default: ``$SUPERNET_STORE_URL``),
            falling back to the node's advertised ``storeUrl`` where it lacks the trace.
        precisions: the compute formats a model id is signed in (default: every one but
            bfloat16, `supernet.sdk.client.types.DEFAULT_PRECISIONS`).
        kwargs: passed to ``openai.OpenAI``. ``max_retries`` defaults to 0: every request is a
            paid task signed anew (its own nonce and voucher), so openai's automatic retry of a
            5xx or a read timeout (a slow answer) bought the same answer two more times.
    """
    import openai

    base, auth = _auth(
        node_url, private_key, deployment, rpc_url, deposit, state_dir, max_fee, rule, store_url, precisions
    )
    http = httpx.Client(auth=auth, timeout=timeout)
    # openai 1.x-2.x type this as httpx.Client, 3.x as httpx2.Client while still taking httpx's
    kwargs.setdefault("max_retries", 0)
    return openai.OpenAI(base_url=base, api_key=API_KEY, http_client=cast(Any, http), **kwargs)


def async_openai_client(
    node_url: str,
    private_key: str | LocalAccount,
    deployment: str | Path | Deployment,
    *,
    rpc_url: str | None = None,
    deposit: int = 0,
    state_dir: Path | None = None,
    max_fee: int | None = None,
    timeout: float = 300.0,
    rule: Signable | None = None,
    store_url: str | None = None,
    precisions: Collection[str] = DEFAULT_PRECISIONS,
    **kwargs: Any,
) -> openai.AsyncOpenAI:
    """`openai_client`, as an ``openai.AsyncOpenAI`` (the same arguments)."""
    import openai

    base, auth = _auth(
        node_url, private_key, deployment, rpc_url, deposit, state_dir, max_fee, rule, store_url, precisions
    )
    http = httpx.AsyncClient(auth=auth, timeout=timeout)
    kwargs.setdefault("max_retries", 0)  # each retry would be another paid task (`openai_client`)
    return openai.AsyncOpenAI(base_url=base, api_key=API_KEY, http_client=cast(Any, http), **kwargs)
