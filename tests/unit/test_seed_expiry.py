"""A batch whose seed nobody sealed in time is checked in full, never skipped (Review8, finding 3).

A batch's seed is the hash of a block after its commit, readable for 256 blocks (8,191 with
EIP-2935) unless someone seals it, while a batch can be challenged for a day. Once it expired,
`TaskManager.isSampled` reverted and the validator's step raised on that batch forever. Now expiry
favours the checkers: the contract samples every validator for every entry, and the validator
(`TaskManagerClient.batch_seed` answering `EXPIRED_SEED`) checks the whole batch. Real Anvil, real
contracts; the `chain` fixture reverts the blocks mined here.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from chain_fixtures import Actors
from supernet.sdk.chain import Contracts
from supernet.sdk.chain.anvil import mine
from supernet.sdk.chain.promises import answerable_promise_delay, check_promise_delay
from supernet.validator.chain import EXPIRED_SEED, TaskManagerClient
from supernet.validator.db import BatchRow
from supernet.validator.service import Validator

pytestmark = [pytest.mark.anvil]

COUNT = 16


def test_an_expired_unsealed_seed_samples_every_entry_for_every_validator(
    network: Contracts, actors: Actors
) -> None:
    c = network
    batch_id = (
        c.as_account(actors.node).task_manager.commit_batch(b"\x07" * 32, COUNT, "bafyx").value.batch_id
    )
    mine(c.w3, 2)
    client = TaskManagerClient(c.w3, c.deployment.address("TaskManager"), actors.validators[0])
    seed = client.batch_seed(batch_id)
    assert seed is not None and seed != EXPIRED_SEED

    for _ in range(9):  # past the block hash's lifetime (EIP-2935: 8,191 blocks); nobody sealed it
        mine(c.w3, 1_000)  # (in steps: one RPC of 8,200 blocks outlasts its timeout on a busy machine)
    assert client.batch_seed(batch_id) == EXPIRED_SEED
    for v in actors.validators:  # (it reverted with SeedExpired: no validator could learn its sample)
        assert all(client.is_sampled(batch_id, v.address, i) for i in range(COUNT))
    header = client.batch(batch_id)
    row = BatchRow(batch_id, actors.node.address, header.root, COUNT, header.commit_block, "bafyx", "pending")
    me = SimpleNamespace(address=actors.validators[0].address, chain=client)
    assert Validator.sample(me, row, EXPIRED_SEED) == list(range(COUNT))  # type: ignore[arg-type]


def test_a_node_refuses_a_promise_its_batch_would_not_outlive(network: Contracts) -> None:
    """Review8, finding 5: a promise must fall due early enough that every claim on it can still be
    answered from the batch (its slot is reused BATCH_RETENTION after the commit)."""
    tm, sm = network.task_manager, network.service_manager
    answerable = answerable_promise_delay(tm.batch_retention(), tm.challenge_window(), tm.vote_window())
    assert answerable == tm.challenge_window()
    unbonding = sm.unbonding_period()
    check_promise_delay(answerable, unbonding, answerable)
    with pytest.raises(ValueError, match="slot is reused"):
        check_promise_delay(answerable + 1, unbonding, answerable)
