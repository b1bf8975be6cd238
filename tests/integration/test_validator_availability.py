"""Withholding data is slashable (real Anvil, store, model and kernel; fixtures in validator_fixtures).

A node that commits receipts but never serves their traces (``--fault withhold``) used to keep its
fee and stake: the receipt was merely "unverifiable". Now a validator retries with backoff, then
opens the bonded availability challenge; unanswered, the node is slashed. A node that answers by
posting the receipt and trace on chain keeps its stake and is paid the bond, and the posted entry
is then verified like any other: a cheat it hid is challenged for fraud even after the batch's
own window.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from supernet.sdk.chain.anvil import increase_time, mine
from supernet.sdk.chain.merkle import ReceiptTree
from supernet.sdk.chain.receipts import trace_cid
from validator_fixtures import VNet

pytestmark = [pytest.mark.anvil, pytest.mark.model, pytest.mark.slow]

FAST = {"availability_retries": 2, "availability_backoff_s": 0.1}


async def until_challenged(v: Any, steps: int = 40) -> int:
    """Step the validator until its missing entry has an availability challenge; returns its id."""
    for _ in range(steps):
        await v.step()
        rows = v.db.missing()
        if rows and rows[0].status == "challenged":
            return int(rows[0].availability_id)
        await asyncio.sleep(0.15)
    raise AssertionError(f"no availability challenge: {v.db.missing()}")


async def test_withheld_trace_is_challenged_and_slashed_when_unanswered(
    vnet: VNet, validator_factory: Any
) -> None:
    sm = vnet.contracts.service_manager
    vnet.faults(withhold=1.0)
    try:
        batch_id, _ = await vnet.run_batch(["Name a fruit."])
    finally:
        vnet.faults()
    stake_before = sm.get_operator(vnet.node.address).stake
    events: list[Any] = []
    async with validator_factory(0, events=events, **FAST) as v:
        await v.step()
        assert v.db.checks(batch_id) == [], "missing data is not a verdict"
        [row] = v.db.missing()
        assert row.status == "retrying" and "unavailable" in row.reason
        aid = await until_challenged(v)
        assert vnet.contracts.service_manager.get_operator(vnet.node.address).frozen_count >= 1
        await v.step()
        assert v.db.missing()[0].status == "challenged", "not slashed before the deadline"
        increase_time(vnet.contracts.w3, vnet.contracts.task_manager.vote_window() + 1)
        mine(vnet.contracts.w3, 1)
        await v.step()
        assert v.db.missing()[0].status == "slashed"
    assert sm.get_operator(vnet.node.address).stake < stake_before
    assert [e.data["availability_id"] for e in events if e.kind == "availability_slash"] == [aid]


async def test_an_answered_challenge_keeps_the_stake_and_the_posted_entry_is_verified(
    vnet: VNet, validator_factory: Any
) -> None:
    """The node withheld the trace of a made-up answer, then posts it when challenged: it is paid
    what the answer cost (out of the claimant's bond), and the posted trace is replayed and the
    made-up answer challenged for fraud."""
    tm = vnet.contracts.task_manager
    vnet.faults(withhold=1.0, answer=1.0)
    try:
        batch_id, receipts = await vnet.run_batch(["Say hello."])
    finally:
        vnet.faults()
    claimable_before = tm.claimable(vnet.node.address)
    async with validator_factory(1, **FAST) as v:
        aid = await until_challenged(v)
        trace = vnet.traces[trace_cid(receipts[0].trace_hash)]
        node_tm = vnet.contracts.as_account(vnet.node).task_manager
        split = node_tm.answer_availability(aid, receipts[0], ReceiptTree(receipts).proof_at(0), trace).value
        # paid what posting the trace costs, never the whole bond (baiting would pay otherwise)
        assert 0 < split["answerCost"] < tm.challenge_bond() * 9 // 10
        deposit = tm.get_availability(aid).deposit  # the bond and the answer's cover (ClaimBond)
        assert deposit > tm.challenge_bond()
        assert split["answerCost"] + split["refunded"] + split["burned"] == deposit
        assert tm.claimable(vnet.node.address) == claimable_before + split["answerCost"]
        await v.step()
        assert v.db.missing()[0].status == "answered"
        [check] = v.db.checks(batch_id)
        assert not check.ok and "replay" in check.kinds.split(",")
        assert check.challenge_id, "the posted entry is challenged for fraud"
