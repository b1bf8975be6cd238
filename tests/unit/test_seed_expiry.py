"""A batch whose seed nobody sealed in time is checked in full, never skipped (Review8, finding 3).

A batch's seed comes from a block after its commit, provable for 256 blocks (8,191 with
EIP-2935) unless someone seals it (SeedBeacon), while a batch can be challenged for a day. Once it expired,
`TaskManager.isSampled` reverted and the validator's step raised on that batch forever. Now expiry
favours the checkers: the contract samples every validator for every entry, and the validator
(`TaskManagerClient.batch_seed` answering `EXPIRED_SEED`) checks the whole batch. Real Anvil, real
contracts. Mining past the seed's lifetime is slow on a Prague chain (each block also writes the
EIP-2935 history, and Anvil's per-block work grows with it: ~1 min for 9,000 blocks), so the tests
that need an expired seed share one chain mined once (`expired`), reverted after the module.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from chain_fixtures import Actors, stake_network
from supernet.sdk.chain import Contracts
from supernet.sdk.chain.anvil import increase_time, mine, revert, snapshot
from supernet.sdk.chain.promises import answerable_promise_delay, check_promise_delay
from supernet.validator.chain import EXPIRED_SEED, TaskManagerClient
from supernet.validator.db import BatchRow
from supernet.validator.service import Validator

pytestmark = [pytest.mark.anvil]

COUNT = 16
LARGE = 512  # the most entries a batch may hold


@pytest.fixture(scope="module")
def expired(deployed: Contracts, actors: Actors) -> Iterator[SimpleNamespace]:
    """The staked network with two batches of the node (``small``: COUNT entries, ``large``: LARGE),
    their seed blocks' beacon values read while sealable (``fresh``: mined, not sealed, so not known
    yet; the validator's `batch_seed` would seal them), then 9,000 blocks and a challenge window later:
    past the seeds' lifetime (EIP-2935: 8,191 blocks), nobody sealed them, and no challenge of
    either batch can be sent any more. Reverted after the module."""
    snap = snapshot(deployed.w3)
    try:
        c = stake_network(deployed, actors)
        tm = c.as_account(actors.node).task_manager
        small = tm.commit_batch(b"\x07" * 32, COUNT, "bafyx").value.batch_id
        large = tm.commit_batch(b"\x09" * 32, LARGE, "bafyexpired").value.batch_id
        mine(c.w3, 2)
        client = TaskManagerClient(c.w3, c.deployment.address("TaskManager"), actors.validators[0])
        beacon = client.binding.seed_beacon
        fresh = [beacon.randomness(client.binding.seed_block(client.batch(b))) for b in (small, large)]
        for _ in range(9):
            mine(c.w3, 1_000)  # (in steps: one anvil_mine of 8,200 blocks can outlast the RPC timeout)
        increase_time(c.w3, client.params().challenge_window + 60)
        mine(c.w3, 1)
        yield SimpleNamespace(c=c, client=client, small=small, large=large, fresh=fresh)
    finally:
        revert(deployed.w3, snap)


def test_an_expired_unsealed_seed_samples_every_entry_for_every_validator(
    expired: SimpleNamespace, actors: Actors
) -> None:
    client, batch_id = expired.client, expired.small
    assert expired.fresh[0] == (bytes(32), False), "mined and sealable: not known yet"
    assert client.batch_seed(batch_id) == EXPIRED_SEED
    for v in actors.validators:  # (it reverted with SeedExpired: no validator could learn its sample)
        assert all(client.is_sampled(batch_id, v.address, i) for i in range(COUNT))
    header = client.batch(batch_id)
    row = BatchRow(batch_id, actors.node.address, header.root, COUNT, header.commit_block, "bafyx", "pending")
    me = SimpleNamespace(address=actors.validators[0].address, chain=client)
    assert Validator.sample(me, row, EXPIRED_SEED) == list(range(COUNT))  # type: ignore[arg-type]


def test_a_node_refuses_a_promise_its_batch_would_not_outlive(deployed: Contracts) -> None:
    """Review8, finding 5: a promise must fall due early enough that every claim on it can still be
    answered from the batch (its slot is reused BATCH_RETENTION after the commit)."""
    tm, sm = deployed.task_manager, deployed.service_manager
    answerable = answerable_promise_delay(tm.batch_retention(), tm.challenge_window(), tm.vote_window())
    assert answerable == 2 * tm.challenge_window() + tm.vote_window()
    unbonding = sm.unbonding_period()
    check_promise_delay(answerable, unbonding, answerable)
    with pytest.raises(ValueError, match="slot is reused"):
        check_promise_delay(answerable + 1, unbonding, answerable)


async def test_defence_a_batch_past_its_window_is_not_checked(
    expired: SimpleNamespace, actors: Actors
) -> None:
    """From the review in tests/unit/test_review_session_changes2.py (finding 2). DEFENCE (was a
    known limit; fixed: `process_batch` finishes a batch whose challenge window is over as
    ``past_window``, unchecked). KNOWN LIMIT (stall). A batch of 512 receipts whose seed expired
    unsealed, reached by a
    validator after its challenge window closed: `Validator.process_batch` samples all 512 entries
    (`EXPIRED_SEED`: the contract samples everyone), asks ``isSampled`` of each one, fetches the
    manifest and hands every entry to the verifier (a model re-run each), though no challenge of
    that batch can be sent any more. `Database.pending_batches` is oldest first, so a validator that
    fell behind by the seed's lifetime (256 blocks, 8,191 with EIP-2935: ~4.5 h at 2 s blocks)
    works through count/sample-rate times its normal load of batches it cannot act on before it
    reaches the fresh ones, and falls further behind: each batch it reaches late is a full one.

    Cause: validator/supernet/validator/service.py `process_batch` never looks at the batch's
    challenge window; `sample` returns ``range(count)`` on `EXPIRED_SEED`.

    Fix (by design): settle a batch as "expired" without checking once ``committedAt +
    CHALLENGE_WINDOW`` passed (as `_check_diverged` already does), process pending batches by
    deadline, and under an expired seed check a rate-sized subset drawn from local randomness (the
    node cannot predict it; the contract pays whichever entry is challenged); better, validators
    seal seeds they read (now `TaskManagerClient.batch_seed` seals the seed block it needs) so that
    expiry needs every validator to be away."""
    client, batch_id, count = expired.client, expired.large, LARGE
    window = client.params().challenge_window
    header = client.batch(batch_id)
    assert client.timestamp() > header.committed_at + window  # no challenge can be sent any more
    assert client.batch_seed(batch_id) == EXPIRED_SEED

    verified: list[int] = []

    async def verify_groups(_b: int, _n: str, todo: list[int], _m: Any, _per: int) -> AsyncIterator[Any]:
        verified.extend(todo)
        return
        yield  # an async generator that yields no verdicts

    async def manifest(_batch: Any) -> Any:
        return SimpleNamespace(readable=lambda _i: True)

    finished: list[int] = []
    me = SimpleNamespace(
        address=actors.validators[0].address,
        chain=client,
        _emit=lambda *a, **k: None,
        disputes=SimpleNamespace(manifest=manifest),
        db=SimpleNamespace(checks=lambda _b: [], finish_batch=lambda b, *a: finished.append(b)),
        verifier=SimpleNamespace(verify_groups=verify_groups),
    )
    me.sample = lambda batch, seed: Validator.sample(me, batch, seed)  # type: ignore[arg-type]
    row = BatchRow(
        batch_id, actors.node.address, header.root, count, header.commit_block, "bafyexpired", "pending"
    )
    me._window_over = lambda b: Validator._window_over(me, b)  # type: ignore[arg-type]
    me._open_batch = lambda batch: Validator._open_batch(me, batch)  # type: ignore[arg-type]
    me._group_checks = lambda *a: Validator._group_checks(me, *a)  # type: ignore[arg-type]
    assert await Validator.process_batch(me, row)  # type: ignore[arg-type]
    assert verified == []  # nothing re-run for a batch nobody can challenge any more
    assert finished == [batch_id]
