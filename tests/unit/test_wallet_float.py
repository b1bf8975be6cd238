"""`WalletFloat`: the node's wallet is topped up from its credits before an answer it could not
pay, only then, and an answer its funds cannot cover is alarmed (the real pull from the TaskManager
is exercised end to end in tests/unit/test_review_hostile_parties.py)."""

from __future__ import annotations

import logging

import pytest
from supernet.node.service.wallet_float import WalletFloat
from supernet.sdk.chain import Contracts
from supernet.sdk.chain.anvil import set_balance

from tests.chain_fixtures import Actors

GAS = 1_000_000


class _FakeCredit:
    """Stands in for a contract's pull payment (a credit of ``owed`` wei paid into the wallet on
    ``withdraw``): the contracts' own are tested where claims create them."""

    def __init__(self, w3: object, address: str, owed: int) -> None:
        self.w3, self.address, self.owed, self.pulls = w3, address, owed, 0

    def claimable(self, address: str) -> int:
        assert address == self.address
        return self.owed

    def withdraw(self) -> None:
        balance = self.w3.eth.get_balance(self.address)  # type: ignore[attr-defined]
        set_balance(self.w3, self.address, balance + self.owed)  # type: ignore[arg-type]
        self.owed, self.pulls = 0, self.pulls + 1


@pytest.mark.anvil
async def test_pulls_credits_only_when_the_wallet_falls_short(
    network: Contracts, actors: Actors, caplog: pytest.LogCaptureFixture
) -> None:
    w3, node = network.w3, actors.node.address
    empty, rich = _FakeCredit(w3, node, 0), _FakeCredit(w3, node, 10**18)
    wallet = WalletFloat(w3, node, [empty, rich])
    cap = network.task_manager.answer_fee_cap("answerAvailability")
    need = wallet.most_cost(GAS, cap)
    assert need >= GAS * 5 // 4 * 13 // 10 * cap  # the sender's gas limit over the formula, at its cap

    set_balance(w3, node, need)  # enough: nothing pulled
    assert await wallet.cover(GAS, cap, "an answer") and rich.pulls == 0

    set_balance(w3, node, need // 2)  # short: the credit that has something is pulled, once
    assert await wallet.cover(GAS, cap, "an answer")
    assert rich.pulls == 1 and empty.pulls == 0
    assert w3.eth.get_balance(node) == need // 2 + 10**18

    set_balance(w3, node, need // 2)  # short and no credit left: alarmed, not raised
    with caplog.at_level(logging.ERROR):
        assert not await wallet.cover(GAS, cap, "the answer to availability challenge 7")
    assert "DUTY AT RISK" in caplog.text and "availability challenge 7" in caplog.text
