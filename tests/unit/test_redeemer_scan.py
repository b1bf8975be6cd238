"""The redeemer's settlement scan reads only the channels of users who may owe something due
(`supernet.node.service.redeemer`, docs/node.md "Getting paid"): a user owing less than the
threshold is read only once its channel is closing, which the node learns from the Payments
``WithdrawalRequested`` logs, from a block cursor kept in its database (so a request made while
the node was down is seen after a restart).

Real parts: the node's `Database`, `Redeemer` and `Web3Chain` on the session's Anvil with the
compiled contracts; users' vouchers are really signed (the contract checks them).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount
from supernet.node.service.chain import Web3Chain
from supernet.node.service.db import Database
from supernet.node.service.models import NewTask, ReceiptRow
from supernet.node.service.redeemer import CONFIRMATIONS, Redeemer, RedeemPolicy
from supernet.sdk.chain import Contracts
from supernet.sdk.chain.anvil import mine
from supernet.sdk.chain.eip712 import Voucher, sign_voucher
from supernet.sdk.chain.payments import Channel

from tests.chain_fixtures import Actors

FEE = 10**12  # the node's default task fee
POLICY = RedeemPolicy(min_amount_wei=10**17)  # one fee is far below what is worth a redemption


class _CountingChain(Web3Chain):
    """The real `Web3Chain`, counting its ``Payments.channel`` reads."""

    reads = 0

    async def channel(self, user: str) -> Channel:
        self.reads += 1
        return await super().channel(user)


def _done_task(db: Database, c: Contracts, user: LocalAccount, node: str) -> None:
    """One task of ``user`` done here for `FEE`, with its real voucher, as the worker leaves it."""
    task_id = "0x" + os.urandom(32).hex()
    voucher = sign_voucher(Voucher(user=user.address, node=node, cumulative_amount=FEE), c.domain, user)
    db.insert_task(
        NewTask(
            id=task_id,
            user=user.address,
            nonce=1,
            model_id="0x" + "aa" * 32,
            agent="chat",
            agent_hash="0x" + "bb" * 32,
            input="hello",
            input_hash="0x" + "cc" * 32,
            max_fee=FEE,
            fee=FEE,
            deadline=2**40,
            signature="0x" + "11" * 65,
            voucher_amount=FEE,
            voucher_signature="0x" + voucher.hex(),
        )
    )
    db.finish_task(
        task_id, "hi", "bafytrace", ReceiptRow(task_id, "0x" + os.urandom(32).hex(), "{}", "0x" + "33" * 65)
    )


@pytest.mark.anvil
async def test_a_closing_channel_owing_less_than_the_threshold_is_redeemed_even_across_a_restart(
    network: Contracts, actors: Actors, tmp_path: Path
) -> None:
    """Two users each owe one fee, far below the threshold: no round reads their channels. One
    asks to withdraw while the node runs: its next round sees the request in the logs and redeems
    the fee before the delay ends. The other asks while the node is down (and the chain moves on
    by more than the re-scanned margin): the restarted node's first round scans from the cursor it
    kept and redeems that fee too."""
    node = actors.node.address
    live, down = actors.users[0], actors.users[1]  # `network` funded both channels to the node
    path = tmp_path / "node.sqlite3"
    db = Database.open(path)
    try:
        for user in (live, down):
            _done_task(db, network, user, node)
        chain = _CountingChain(network, actors.node)
        redeemer = Redeemer(db, chain, interval_s=60.0, policy=POLICY)
        assert await redeemer.for_commit() == [] and await redeemer.redeem_once() == []
        assert chain.reads == 0, "nothing due and no channel closing: no channel is read"

        network.as_account(live).payments.request_withdrawal(node)
        assert await redeemer.redeem_once(), "the closing channel is redeemed, worth its gas or not"
        assert network.payments.channel(live.address, node).redeemed == FEE
        assert db.redeemed(live.address) == FEE
        assert chain.reads >= 1
        assert network.payments.channel(down.address, node).redeemed == 0, "the open one waits"
        assert db.channel_events_cursor() is not None, "the node keeps how far it scanned the logs"
    finally:
        db.close()

    # the node is down: the other user asks to withdraw, and the chain moves on
    network.as_account(down).payments.request_withdrawal(node)
    mine(network.w3, 2 * CONFIRMATIONS)

    db = Database.open(path)
    try:
        chain = _CountingChain(network, actors.node)
        redeemer = Redeemer(db, chain, interval_s=60.0, policy=POLICY)
        due = await redeemer.for_commit()
        assert [v.user for v, _ in due] == [down.address], "the request made while down is seen"
        assert await redeemer.redeem_once()
        assert network.payments.channel(down.address, node).redeemed == FEE
        assert network.payments.channel(live.address, node).redeemed == FEE, "never charged twice"
        assert await redeemer.redeem_once() == [], "read back: both settled"
        mine(network.w3, CONFIRMATIONS)
        assert await redeemer.redeem_once() == [], "read again CONFIRMATIONS later: confirmed"
        reads = chain.reads  # nothing left to read
        assert await redeemer.redeem_once() == [] and await redeemer.for_commit() == []
        assert chain.reads == reads
    finally:
        db.close()
