"""Validators are paid for checking an honest node (docs/security-parameters.md "Paying validators").

Real parts: Anvil with the devnet contracts, ``supernet node run`` (real kernel, model and embedded
store) with decoys on, a real user through the SDK, and a real validator re-scoring the batches.
The node plants a decoy (a task for an account of its own with a corrupted LLM call); the
validator, checking the receipts it is sampled for, finds and challenges it; the node shows the
decoy's signature; the validator gets its bond back plus the bounty from the node's verification
escrow, the node its rebate, and nobody is slashed. The real user's task is not challenged.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from node_fixtures import NodeProcess, node_on_anvil
from supernet.sdk.chain import Contracts
from supernet.sdk.chain.anvil import Anvil, dev_account, increase_time, mine
from supernet.sdk.chain.tasks import ChallengeStatus
from supernet.sdk.client import Client
from supernet.sdk.store.embedded import serve_in_thread
from validator_fixtures import smollm2_loaded  # noqa: F401  (the session's model, shared)

pytestmark = [pytest.mark.anvil, pytest.mark.model, pytest.mark.slow]

NODE_INDEX, USER_INDEX, VALIDATOR_INDEX = 7, 8, 9
ETHER = 10**18
Net = tuple[Anvil, Contracts, Path, NodeProcess, str]


def decoys_of(db: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        return c.execute("SELECT task_id, revealed_challenge FROM decoys").fetchall()


async def until(condition: Callable[[], bool], deadline: float) -> None:
    """Poll ``condition`` (a chain or database read) until it holds or ``deadline`` passes."""
    for _ in range(10_000):
        if condition() or time.monotonic() > deadline:
            return
        await asyncio.sleep(0.3)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    tmp = tmp_path_factory.mktemp("decoys")
    # One content store for the node and the validator (which publishes its evidence there).
    store_url, stop_store = serve_in_thread(tmp / "store")
    # Decoys at up to half the tasks, an escrow for three devnet bounties, quick steps.
    extra = (
        f'[store]\nurl = "{store_url}"\n'
        "[decoys]\nshare = 0.5\nescrow_wei = 150000000000000000\ninterval_s = 0.5\n"
    )
    try:
        with node_on_anvil(tmp, NODE_INDEX, extra=extra) as parts:
            yield (*parts, store_url)
    finally:
        stop_store()


async def test_a_validator_that_checks_is_paid_from_the_escrow_and_nobody_is_slashed(
    net: Net,
    smollm2_loaded: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    from supernet.validator.config import ValidatorSettings
    from supernet.validator.scoring import ModelScorer
    from supernet.validator.service import Validator

    anvil, contracts, deployment, node, store_url = net
    node_addr = dev_account(NODE_INDEX).address
    validator = dev_account(VALIDATOR_INDEX)
    pay, tm, sm = contracts.payments, contracts.task_manager, contracts.service_manager
    assert pay.node_account(node_addr)[1] == 3 * pay.decoy_bounty(), "escrow funded on start"
    contracts.as_account(validator).service_manager.register_validator(2 * ETHER)
    increase_time(contracts.w3, 1)
    stake_before = sm.get_operator(node_addr).stake

    key = "0x" + bytes(dev_account(USER_INDEX).key).hex()
    async with Client.connect(anvil.url, deployment, key, state_dir=tmp_path / "user") as user:
        real = await user.submit_task("Name a planet.", node_url=node.url, deposit=10**16)

    deadline = time.monotonic() + 120
    await until(lambda: bool(decoys_of(node.db_path)), deadline)
    [(decoy_id, revealed)] = decoys_of(node.db_path)
    assert revealed is None and decoy_id != real.task_id

    settings = ValidatorSettings(
        chain={"rpc_url": anvil.url, "deployment": deployment, "key": "0x" + bytes(validator.key).hex()},
        store_url=store_url,
        db_path=tmp_path / "validator.sqlite",
        poll_interval_s=0.2,
        auto_withdraw=False,
    )
    challenged: dict[str, int] = {}
    deadline = time.monotonic() + 90
    async with Validator(settings, scorer=ModelScorer.from_loaded(smollm2_loaded)) as v:
        while time.monotonic() < deadline and decoy_id not in challenged:
            mine(contracts.w3, 1)  # Anvil mines on transactions only: the seed block must come
            await v.step()
            for ev in tm.contract.events.ChallengeOpened().get_logs(from_block=0):
                challenged["0x" + bytes(ev["args"]["requestHash"]).hex()] = int(ev["args"]["challengeId"])
            await asyncio.sleep(0.3)
        verdicts = [(b, v.db.checks(b)) for b in range(1, tm.batch_count() + 1)]
    assert decoy_id in challenged, f"the decoy was not challenged: {verdicts}\n{node.log_tail(6000)}"
    assert real.task_id not in challenged, "the honest task was challenged"
    cid = challenged[decoy_id]

    await until(lambda: tm.get_challenge(cid).status != ChallengeStatus.OPEN, deadline)
    c = tm.get_challenge(cid)
    assert c.status == ChallengeStatus.DECOY, f"not revealed; node log:\n{node.log_tail()}"
    assert c.sampled
    bounty = pay.decoy_bounty()
    rebate = bounty * int(pay.call("DECOY_REBATE_BPS")) // 10_000
    paid = tm.claimable(validator.address)
    assert paid == tm.challenge_bond() + bounty - rebate, "bond back plus the bounty"
    earnings, escrow = pay.node_account(node_addr)
    assert escrow < 3 * bounty and earnings >= rebate
    assert sm.get_operator(node_addr).stake == stake_before, "nobody is slashed"
    assert sm.get_operator(node_addr).frozen_count == 0
    # the node records its reveal once the transaction is mined, in its own process: wait for it
    await until(lambda: decoys_of(node.db_path) == [(decoy_id, cid)], time.monotonic() + 30)
    assert decoys_of(node.db_path) == [(decoy_id, cid)], "the node recorded the reveal"
