"""The voucher ladder: nonces and cumulative amounts a user signs for one node, and the signing.

Shared by `Client` and the OpenAI auth (`supernet.sdk.openai_compat`), so both follow one rule:
the next request takes ``nonce + 1`` and a voucher of ``cumulative + fee``, where ``cumulative``
is re-based on the node's billed total (``GET /v1/accounts/{user}``) but never raised by it — a
node that claims to have billed more cannot make the user sign a larger voucher.

>>> acct = rebase(state, domain_key(domain), user, node, AccountPublic(...))  # doctest: +SKIP
>>> task_id, signed = sign_task(account, domain, node=node, model_id=m, agent_hash=a,   # doctest: +SKIP
...     task_input="hi", max_fee=fee, nonce=acct.nonce + 1, cumulative=acct.cumulative + fee)
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from eth_account.signers.local import LocalAccount
from supernet.sdk.chain.eip712 import (
    Domain,
    TaskRequest,
    Voucher,
    hash_task_request,
    sign_task_request,
    sign_voucher,
)
from supernet.sdk.chain.receipts import input_hash
from supernet.sdk.client.state import ClientState, NodeAccount
from supernet.sdk.node_api import AccountPublic

DEADLINE_S = 600
"""How long a signed request stays valid."""


def domain_key(domain: Domain) -> str:
    """The state key of a deployment (chain id and verifying contract)."""
    return f"{domain.chain_id}:{domain.verifying_contract.lower()}"


def rebase(state: ClientState, domain: str, user: str, node: str, remote: AccountPublic) -> NodeAccount:
    """The user's account with ``node`` after reading the node's ``GET /v1/accounts/{user}``.

    The nonce only goes up. The cumulative total drops to what the node billed (a failed task is
    not billed, so its fee is taken back) but is never raised by it, except for an account this
    state has never seen (a fresh state directory starts from the node's word)."""
    known = state.key(domain, user, node) in state.accounts
    acct = state.account(domain, user, node)
    acct.nonce = max(acct.nonce, remote.lastNonce)
    billed = remote.billed
    acct.cumulative = min(acct.cumulative, billed) if known else billed
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
