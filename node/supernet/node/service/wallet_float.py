"""Keeping the node's wallet able to pay the answers that protect its stake.

A data claim's deposit repays the node its answer (`ClaimBond.costOfAnswer`), but as a credit:
``claimable`` in the TaskManager (availability) or the OmissionManager (omission, manifest), pull
payments. Answers are sent from the wallet. A node that never pulled its credits paid every answer
from the wallet, and a griefer with no stake could open claim after claim, each costing it a tenth
of the bond, until the wallet could not pay one answer: the next claim went unanswered and the
honest node was slashed while its credits would have paid (tests/unit/test_review_hostile_parties.py).
So before an answer the wallet is topped up from those credits when it holds less than the answer
can cost; where even they do not cover it, an error tells the operator to fund the wallet.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Protocol

from supernet.sdk.chain.bindings import gas_limit

log = logging.getLogger(__name__)

MARGIN = (5, 4)
"""The gas a contract's pricing formula gives an answer, times 5/4: above the estimate the sender
signs its gas limit from (then `gas_limit`'s own margin on top, as the sender does)."""


class Credit(Protocol):
    """A contract holding pull payments for the node (`TaskManagerClient`, `OmissionManagerClient`)."""

    def claimable(self, address: str) -> int: ...

    def withdraw(self) -> Any: ...


class WalletFloat:
    """Tops the node's wallet up from its own credits before a duty it could not pay.

    Args:
        w3: the chain (balances, fees).
        address: the node's account (the credits' payee, the answers' sender).
        credits: the contracts holding its credits, pulled in this order.
    """

    def __init__(self, w3: Any, address: str, credits: Sequence[Credit]) -> None:
        self.w3, self.address, self.credits = w3, address, list(credits)

    @staticmethod
    def most_cost(gas: int, fee_cap: int) -> int:
        """What the wallet must hold to send an answer the contracts price at ``gas``: the gas
        limit its sender would sign (`gas_limit` over `MARGIN` above the formula) at ``fee_cap``,
        the answer's own (`Binding.answer_fee_cap`: the floor's where a deployment has one)."""
        return gas_limit(gas * MARGIN[0] // MARGIN[1]) * fee_cap

    async def cover(self, gas: int, fee_cap: int, what: str, *, in_flight: int = 0) -> bool:
        """Make the wallet hold what ``gas`` may cost at ``fee_cap``, plus ``in_flight`` wei (the
        worst cost of the answers sent and not yet mined: the balance does not count them, and a
        pool drops what the wallet cannot pay once they are), pulling credits if it does not;
        returns whether it does. Never raises for lack of funds: the answer is tried anyway (it may
        cost less than its worst), and an error names what is missing."""
        need = self.most_cost(gas, fee_cap) + in_flight
        have = await asyncio.to_thread(self.w3.eth.get_balance, self.address)
        for credit in self.credits:
            if have >= need:
                return True
            owed = await asyncio.to_thread(credit.claimable, self.address)
            if owed <= 0:
                continue
            try:
                await asyncio.to_thread(credit.withdraw)
            except Exception as exc:
                log.warning("pulling %d wei of credit for %s failed: %s", owed, what, exc)
                continue
            have = await asyncio.to_thread(self.w3.eth.get_balance, self.address)
            log.info("pulled %d wei of credit into the wallet to pay %s", owed, what)
        if have >= need:
            return True
        log.error(
            "DUTY AT RISK: %s may cost up to %d wei, the wallet %s holds %d and no credit is left: "
            "fund it, or the stake it protects may be slashed",
            what,
            need,
            self.address,
            have,
        )
        return False
