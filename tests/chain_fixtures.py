"""Chain fixtures: one real Anvil per test session, one deployment, a snapshot per test.

- ``anvil``: the session's Anvil process (``supernet.sdk.chain.anvil.Anvil``).
- ``deployed``: the protocol deployed once with `CHAIN_TEST_PARAMS` (a `Contracts` bound to the
  deployer); do not change its state in tests, use ``chain``.
- ``chain``: the same contracts, with the chain reverted to a clean snapshot after the test.
- ``actors``: named dev accounts (``deployer``, ``node``, ``node2``, ``validators``, ``users``).
- ``network``: ``chain`` plus a registered model, two staked nodes, three validators, funded users.
- `commit_vote`, `reveal_vote`, `to_reveal_phase`, `cast_votes`: commit-reveal votes sent directly.

Loaded as a plugin by tests/conftest.py (every ``*_fixtures.py`` is).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from eth_account.signers.local import LocalAccount
from supernet.sdk.chain import (
    Contracts,
    ProtocolParams,
    Receipt,
    ReceiptTree,
    TaskRequest,
    hash_task_request,
    input_hash,
    output_hash,
)
from supernet.sdk.chain.anvil import Anvil, advance_to, dev_account, increase_time, revert, snapshot
from supernet.sdk.chain.eip712 import ReceiptPromise, sign_receipt_promise
from supernet.sdk.chain.tasks import vote_commitment
from supernet.sdk.models import served_manifest

CHAIN_TEST_PARAMS = ProtocolParams.devnet()
"""Devnet delays (unbond 3,600 s, withdraw 60 s, vote window 30 s, challenge window 600 s), full sampling."""


@dataclass(frozen=True)
class Actors:
    """Dev accounts by role (all funded with 10,000 ETH by Anvil)."""

    deployer: LocalAccount
    node: LocalAccount
    node2: LocalAccount
    validators: tuple[LocalAccount, ...]
    users: tuple[LocalAccount, ...]
    outsider: LocalAccount


KEPT_STATES = 16_000
"""States of older blocks the session's Anvil keeps on disk (Anvil's default: 3,600; ~0.4 MB each
with the protocol deployed). Every block a test mines stays counted after the test's revert, and
once a worker's tests had mined more than Anvil keeps, the states of the deployment's own blocks
were dropped: every later read at such a block failed (``BlockOutOfRangeError``) in whichever test
came next."""


@pytest.fixture(scope="session")
def anvil() -> Iterator[Anvil]:
    """A real Anvil for the whole session, stopped at the end."""
    with Anvil(accounts=20, extra_args=["--max-persisted-states", str(KEPT_STATES)]) as proc:
        yield proc


@pytest.fixture(scope="session")
def actors() -> Actors:
    """Named dev accounts."""
    return Actors(
        deployer=dev_account(0),
        node=dev_account(1),
        node2=dev_account(2),
        validators=tuple(dev_account(i) for i in (3, 4, 5)),
        users=tuple(dev_account(i) for i in (6, 7, 8)),
        outsider=dev_account(9),
    )


@pytest.fixture(scope="session")
def deployed(anvil: Anvil, actors: Actors) -> Contracts:
    """The protocol deployed once per session with `CHAIN_TEST_PARAMS`."""
    return Contracts.deploy(anvil.url, actors.deployer, CHAIN_TEST_PARAMS)


@pytest.fixture()
def chain(deployed: Contracts) -> Iterator[Contracts]:
    """The deployed contracts; every state change of the test is reverted afterwards."""
    snap = snapshot(deployed.w3)
    try:
        yield deployed
    finally:
        revert(deployed.w3, snap)


# ---------------------------------------------------------------------------------------------
# A staked network on top of `chain`, and receipt helpers
# ---------------------------------------------------------------------------------------------

ETHER = 10**18
MODEL_WEIGHTS_ID = "0x" + hashlib.sha256(b'{"format":"test weights manifest"}').hexdigest()
MODEL_COMPUTE = "float32"
MODEL_MANIFEST = served_manifest(MODEL_WEIGHTS_ID, MODEL_COMPUTE)  # a served id: clients check its format
MODEL_ID = hashlib.sha256(MODEL_MANIFEST).digest()
NODE_STAKE = 2 * ETHER
VALIDATOR_STAKE = 2 * ETHER
USER_DEPOSIT = 1 * ETHER


def make_request(users: tuple[LocalAccount, ...], node: str, i: int) -> TaskRequest:
    """Task request ``i`` (of ``users[i % len(users)]``): the preimage of receipt ``i``'s requestHash."""
    return TaskRequest(
        user=users[i % len(users)].address,
        node=node,
        model_id=MODEL_ID,
        agent_hash=bytes(32),
        input_hash=input_hash(f"task {i}"),
        max_fee=10**14 + i,  # the fee receipt ``i`` says was charged: a node charges the signed maxFee
        nonce=i,
        deadline=2**40,
    )


def make_receipts(c: Contracts, users: tuple[LocalAccount, ...], node: str, count: int) -> list[Receipt]:
    """``count`` receipts spread round-robin over ``users``, each for a signed task request
    (`make_request`)."""
    out = []
    for i in range(count):
        req = make_request(users, node, i)
        out.append(
            Receipt(
                request_hash=hash_task_request(req, c.domain),
                user=req.user,
                model_id=MODEL_ID,
                input_hash=req.input_hash,
                output_hash=output_hash(f"answer {i}"),
                trace_hash=hashlib.sha256(f"trace {i}".encode()).digest(),
                fee=req.max_fee,
            )
        )
    return out


@pytest.fixture()
def network(chain: Contracts, actors: Actors) -> Contracts:
    """`chain` with the model registered, two staked nodes, three validators and funded users."""
    return stake_network(chain, actors)


def stake_network(chain: Contracts, actors: Actors) -> Contracts:
    """What `network` adds to a deployment (for fixtures of a wider scope, which revert it)."""
    chain.model_registry.register_model(MODEL_MANIFEST, "test-model")
    for i, node in enumerate((actors.node, actors.node2)):
        sm = chain.as_account(node).service_manager
        sm.register_node(f"http://127.0.0.1:{8100 + i}", [MODEL_ID], 10**9, NODE_STAKE)
    for v in actors.validators:
        chain.as_account(v).service_manager.register_validator(VALIDATOR_STAKE)
    increase_time(chain.w3, 1)  # only stake older than a challenge votes on it
    for u in actors.users:  # a payment channel from every user to `node`
        chain.as_account(u).payments.deposit(actors.node.address, USER_DEPOSIT)
    return chain


# ---------------------------------------------------------------------------------------------
# Data claims: what the answer-price tests share
# ---------------------------------------------------------------------------------------------

BURN_ADDRESS = "0x000000000000000000000000000000000000dEaD"


def burn_address_exists(c: Contracts) -> None:
    """A fresh devnet has no account at the burn address, so the chain's first burn also pays for
    creating it (25k gas, unmetered): on a real chain 0x...dEaD exists, as it does here after this."""
    c.w3.provider.make_request("anvil_setBalance", [BURN_ADDRESS, hex(1)])  # type: ignore[arg-type]


@dataclass(frozen=True)
class OmissionClaim:
    """An omission claim on receipt ``index`` of a committed batch of `Actors.node`, by its user."""

    omission_id: int
    batch_id: int
    index: int
    receipts: list[Receipt]
    tree: ReceiptTree
    user: LocalAccount


def claim_omission(c: Contracts, actors: Actors, index: int) -> OmissionClaim:
    """The node commits a batch of ``index + 1`` receipts, promises receipt ``index`` (due in 5 s),
    and once the promise is due its user claims it was never committed (through the SDK)."""
    node = actors.node
    receipts = make_receipts(c, actors.users, node.address, index + 1)
    tree = ReceiptTree.from_receipts(receipts)
    batch_id = c.as_account(node).task_manager.commit_batch(tree.root, len(tree), "bafym").value.batch_id
    now = c.w3.eth.get_block("latest")["timestamp"]
    promise = ReceiptPromise(receipts[index].request_hash, receipts[index].leaf(), now + 5)
    increase_time(c.w3, 6)
    request = make_request(actors.users, node.address, index)
    user = next(u for u in actors.users if u.address == request.user)
    signature = sign_receipt_promise(promise, c.domain, node)
    om = c.as_account(user).omission_manager
    omission_id = om.challenge_omission(promise, signature, request, receipts[index]).value
    return OmissionClaim(omission_id, batch_id, index, receipts, tree, user)


# ---------------------------------------------------------------------------------------------
# Votes sent directly (commit-reveal), with a salt each test can derive again to reveal
# ---------------------------------------------------------------------------------------------


def vote_salt(challenge_id: int, voter: LocalAccount) -> bytes:
    """The salt of ``voter``'s vote on a challenge in these tests (derived, so no one keeps it)."""
    return hashlib.sha256(f"vote {challenge_id} {voter.address}".encode()).digest()


def commit_vote(c: Contracts, challenge_id: int, voter: LocalAccount, fraud: bool) -> None:
    """Seal ``voter``'s vote (the bond posted); `reveal_vote` opens it."""
    commitment = vote_commitment(challenge_id, voter.address, fraud, vote_salt(challenge_id, voter))
    c.as_account(voter).task_manager.commit_vote(challenge_id, commitment)


def reveal_vote(c: Contracts, challenge_id: int, voter: LocalAccount, fraud: bool) -> None:
    """Open ``voter``'s sealed vote (in the reveal phase)."""
    c.as_account(voter).task_manager.reveal_vote(challenge_id, fraud, vote_salt(challenge_id, voter))


def to_reveal_phase(c: Contracts, challenge_id: int) -> None:
    """Move chain time to the start of the challenge's reveal phase (its last REVEAL_WINDOW s)."""
    advance_to(c.w3, c.task_manager.reveals_at(challenge_id))


def cast_votes(c: Contracts, challenge_id: int, votes: list[tuple[LocalAccount, bool]]) -> None:
    """Commit every vote, move to the reveal phase and reveal them: the vote is then counted and
    chain time is inside the vote window still (its last REVEAL_WINDOW seconds)."""
    for voter, fraud in votes:
        commit_vote(c, challenge_id, voter, fraud)
    to_reveal_phase(c, challenge_id)
    for voter, fraud in votes:
        reveal_vote(c, challenge_id, voter, fraud)


def group_alive(group: int) -> bool:
    """Whether any process of process group ``group`` is running (an Anvil and its launcher)."""
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True
