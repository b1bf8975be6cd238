"""The voucher ladder: nonces and cumulative amounts a user signs for one node, and the signing.

Shared by `Client` and the OpenAI auth (`supernet.sdk.openai_compat`), so both follow one rule:
the next request takes ``nonce + 1`` and a voucher of ``cumulative + fee``, where ``cumulative``
is re-based on the node's billed total (``GET /v1/accounts/{user}``) but never raised by it — a
node that claims to have billed more cannot make the user sign a larger voucher (for an account
the state has never seen, only up to what the node proves with the user's own voucher).

>>> acct = rebase(state, domain_key(domain), user, node, AccountPublic(...))  # doctest: +SKIP
>>> task_id, signed = sign_task(account, domain, node=node, model_id=m, agent_hash=a,   # doctest: +SKIP
...     task_input="hi", max_fee=fee, nonce=acct.nonce + 1, cumulative=acct.cumulative + fee)
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address
from supernet.sdk.chain.eip712 import (
    Domain,
    TaskRequest,
    Voucher,
    hash_task_request,
    recover_voucher,
    sign_task_request,
    sign_voucher,
)
from supernet.sdk.chain.receipts import input_hash
from supernet.sdk.client.state import ClientState, NodeAccount
from supernet.sdk.client.types import ClientError
from supernet.sdk.node_api import AccountPublic

DEADLINE_S = 600
"""How long a signed request stays valid."""

DEFAULT_MAX_FEE = 10**15
"""The most wei a client signs for one task when the caller sets no ``max_fee`` (0.001 ETH, a
thousand times a node's default fee of 1e12 wei): a node advertising a higher ``taskFee`` is
refused (pass ``max_fee`` to pay more)."""


MAX_NONCE = 2**64
"""A node's ``lastNonce`` at or above this is refused (`rebase`): nonces count one user's requests
to one node, and one near 2**256 would leave no nonce to sign (a lock-out)."""


def domain_key(domain: Domain) -> str:
    """The state key of a deployment (chain id and verifying contract)."""
    return f"{domain.chain_id}:{domain.verifying_contract.lower()}"


def proven_cumulative(remote: AccountPublic, domain: Domain, user: str, node: str) -> int:
    """The cumulative amount the node proves ``user`` signed to it: the ``voucher`` of its
    ``GET /v1/accounts/{user}`` answer when the user's own signature recovers from it, else 0."""
    v = remote.voucher
    if v is None:
        return 0
    voucher = Voucher(
        user=to_checksum_address(user), node=to_checksum_address(node), cumulative_amount=v.cumulativeAmount
    )
    try:
        signer = recover_voucher(voucher, domain, bytes.fromhex(v.signature[2:]))
    except Exception:  # malformed bytes: eth-keys raises several types; no proof, not a crash
        return 0
    return v.cumulativeAmount if signer == to_checksum_address(user) else 0


def rebase(
    state: ClientState, domain: str, user: str, node: str, remote: AccountPublic, proven: int = 0
) -> NodeAccount:
    """The user's account with ``node`` after reading the node's ``GET /v1/accounts/{user}``.

    The nonce only goes up. The cumulative total drops to what the node billed (a failed task is
    not billed, so its fee is taken back) but is never raised by the node's word: only up to
    ``proven``, what the user verifiably signed (`proven_cumulative`, the largest voucher redeemed
    on chain). That is where an account this state has never seen (first contact, a fresh state
    directory) starts, and what lifts a known account that was lowered (by another state
    directory's ladder, or by an endpoint answering for an address it does not hold: the real
    node's next answer proves its total, so the user is never locked out of it).

    Raises:
        ClientError: an unknown account the node claims to have billed more than ``proven``, or a
            ``lastNonce`` no request can follow (nothing is recorded).
    """
    known = state.key(domain, user, node) in state.accounts
    billed = remote.billed
    if not known and billed > proven:
        raise ClientError(
            f"node {node} says it billed {billed} wei to {user}, but the most it can prove (your own "
            f"signed voucher it holds, or what was redeemed on chain) is {proven} wei: refusing to sign "
            "a voucher on top of an unproven total"
        )
    if remote.lastNonce >= MAX_NONCE:
        raise ClientError(
            f"node {node} says your last nonce with it is {remote.lastNonce}: no user signs that many "
            "requests, so the answer is not that node's (or not honest); nothing was signed"
        )
    acct = state.account(domain, user, node)
    acct.nonce = max(acct.nonce, remote.lastNonce)
    acct.cumulative = max(min(acct.cumulative, billed), min(billed, proven)) if known else billed
    return acct


def sign_task(
    account: LocalAccount,
    domain: Domain,
    *,
    node: str,
    model_id: str,
    agent_hash: str,
    task_input: str | Mapping[str, Any],
    max_fee: int,
    nonce: int,
    cumulative: int,
) -> tuple[str, dict[str, Any]]:
    """The task id and the signed ``{"request", "signature", "voucher"}`` of one task."""
    req = TaskRequest(
        user=account.address,
        node=node,
        model_id=bytes.fromhex(model_id[2:]),
        agent_hash=bytes.fromhex(agent_hash[2:]),
        input_hash=input_hash(task_input),
        max_fee=max_fee,
        nonce=nonce,
        deadline=int(time.time()) + DEADLINE_S,
    )
    voucher = Voucher(user=account.address, node=node, cumulative_amount=cumulative)
    signed = {
        "request": req.to_json(),
        "signature": "0x" + sign_task_request(req, domain, account).hex(),
        "voucher": {
            "cumulativeAmount": str(cumulative),
            "signature": "0x" + sign_voucher(voucher, domain, account).hex(),
        },
    }
    return "0x" + hash_task_request(req, domain).hex(), signed
