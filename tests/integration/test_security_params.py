"""The proof-of-sampling inequality, checked against parameters read from deployed contracts.

A node that cheats on one task saves at most ``C`` (the compute of an honest run, which a rational
node never prices above the task's fee). Each validator checks that receipt with probability ``p``;
when caught the node loses ``S`` (the slash, capped by its stake) and ``R`` (the fee, refunded to
the user). Cheating does not pay iff ``p · (R + S) > C``; the protocol asks for a margin
``p · (R + S) >= MARGIN · C`` (docs/security-parameters.md). ``R`` is counted as 0 here (the refund
is capped by what is left of the slash), so the check is conservative.

Two more incentives are checked from the same parameters: a challenger earns more than its bond
when right (it is worth checking), and a false accusation costs the bond (it is not free).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from supernet.sdk.chain import Contracts, ProtocolParams
from supernet.sdk.chain.anvil import Anvil, dev_account

pytestmark = [pytest.mark.anvil]

ETHER = 10**18
MAX_SAVING_WEI = ETHER // 100
"""``C``: the most a node saves by faking one task (fees above 0.01 ETH/task are out of scope)."""
MARGIN = 2
"""Required safety factor on ``p · (R + S) > C``."""


@dataclass(frozen=True)
class Deployed:
    """The security parameters as the contracts report them."""

    p: float
    slash: int
    min_node_stake: int
    bond: int
    challenger_reward_bps: int
    quorum_bps: int

    @classmethod
    def read(cls, c: Contracts) -> Deployed:
        tm, sm = c.task_manager, c.service_manager
        return cls(
            p=tm.call("SAMPLE_RATE_PPM") / 1_000_000,
            slash=int(tm.call("SLASH_AMOUNT")),
            min_node_stake=sm.min_node_stake(),
            bond=tm.challenge_bond(),
            challenger_reward_bps=int(tm.call("CHALLENGER_REWARD_BPS")),
            quorum_bps=int(tm.call("QUORUM_BPS")),
        )

    @property
    def effective_slash(self) -> int:
        """What a node surely loses: the slash, capped by the least stake a node can have."""
        return min(self.slash, self.min_node_stake)


@pytest.fixture(scope="module")
def default_deployment() -> Iterator[Contracts]:
    with Anvil(accounts=2) as anvil:
        yield Contracts.deploy(anvil.url, dev_account(0), ProtocolParams())


def check(d: Deployed) -> None:
    refund = 0  # R, conservatively
    assert d.p * (refund + d.effective_slash) >= MARGIN * MAX_SAVING_WEI, d
    challenger_gain = d.effective_slash * d.challenger_reward_bps // 10_000
    assert challenger_gain > d.bond, "a right challenge must pay more than the bond it risks"
    assert d.bond > 0 and 0 < d.quorum_bps <= 10_000


def test_default_parameters_make_cheating_unprofitable(default_deployment: Contracts) -> None:
    d = Deployed.read(default_deployment)
    assert d.p == 0.1  # the documented default sampling rate
    check(d)


def test_devnet_parameters_make_cheating_unprofitable(deployed: Contracts) -> None:
    check(Deployed.read(deployed))


def test_margin_is_tight_enough_to_catch_a_bad_setting() -> None:
    bad = Deployed(
        p=0.001,
        slash=ETHER,
        min_node_stake=ETHER,
        bond=ETHER // 10,
        challenger_reward_bps=2_000,
        quorum_bps=3_000,
    )
    with pytest.raises(AssertionError):
        check(bad)
