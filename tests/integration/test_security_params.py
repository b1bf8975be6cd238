"""The proof-of-sampling inequality, checked against parameters read from deployed contracts.

A node that cheats on one task saves at most ``C`` (the compute of an honest run, which a rational
node never prices above the task's fee). Each validator checks that receipt with probability ``p``;
when caught the node loses ``S`` (the slash, capped by its stake) and ``R`` (the fee, refunded to
the user). Cheating does not pay iff ``p · (R + S) > C``; the protocol asks for a margin
``p · (R + S) >= MARGIN · C`` (docs/security-parameters.md). ``R`` is counted as 0 here (the refund
is capped by what is left of the slash), so the check is conservative.

Two more incentives are checked from the same parameters: a challenger earns more than its bond
when right (it is worth checking), and a false accusation costs the bond (it is not free).

And validator pay, in an honest network too (the verifier's dilemma): the verification share of
the fees pays for at least one check of every receipt at the measured verification cost, blind
challenges lose, and a node gains from planting decoys validators can find.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

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
    # an ally's slashes ahead of a fraud verdict (docs/security-parameters.md, "Known limits"):
    # taking a whole minimum stake that way must cost the node at least the verdict's slash
    kept_by_ally = d.min_node_stake * d.challenger_reward_bps // 10_000
    assert d.min_node_stake - kept_by_ally >= d.slash, "draining the stake must cost more than a verdict"


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


# -- paying validators (docs/security-parameters.md "Paying validators") ---------------------------

VERIFICATION = Path(__file__).parents[2] / "docs" / "benchmarks" / "verification.json"
GAS_PRICE_WEI = 10 * 10**9
"""The gas price the inequalities are checked at (10 gwei; the devnet runs at about 1)."""
CHALLENGE_GAS = 250_000
"""A challenge transaction (proof, receipt, evidence CID), rounded up from the devnet's ~190k."""
DECOY_GAS = 100_000
"""What a decoy costs its node beyond the task: the funding transfer (21k), the decoy account's
deposit (about 50k on a new channel) and its voucher's share of a settlement (about 11k)."""


@dataclass(frozen=True)
class ValidatorPay:
    """The parameters of validator pay, as the contracts report them, and the measured cost ratio."""

    share: float  # s: VERIFICATION_SHARE_BPS, of every fee, into the node's escrow
    bounty: int  # B_d: DECOY_BOUNTY, taken from the escrow per found decoy
    rebate: float  # e: DECOY_REBATE_BPS, of B_d, back to the node
    bond: int  # B: CHALLENGE_BOND
    rho: float  # verify_cost_ratio: a validator's compute per check / the node's per task

    @classmethod
    def read(cls, c: Contracts, rho: float) -> ValidatorPay:
        pay = c.payments
        return cls(
            share=int(pay.call("VERIFICATION_SHARE_BPS")) / 10_000,
            bounty=pay.decoy_bounty(),
            rebate=int(pay.call("DECOY_REBATE_BPS")) / 10_000,
            bond=c.task_manager.challenge_bond(),
            rho=rho,
        )

    @property
    def finder_keeps(self) -> float:
        """h: the part of a bounty a finder keeps after its challenge's gas."""
        return ((1 - self.rebate) * self.bounty - CHALLENGE_GAS * GAS_PRICE_WEI) / self.bounty

    @property
    def checks_paid_per_receipt(self) -> float:
        """N* = s·h/(rho·(1 − s)): the checks of each receipt that fees pay for (validators join
        until the k validators' k·q checks per receipt reach it); a check costs rho times the
        node's compute, at most (1 − s) of the fee for a node that does not run at a loss."""
        return self.share * self.finder_keeps / (self.rho * (1 - self.share))

    @property
    def found_in_equilibrium(self) -> float:
        """P = 1 - exp(-N*): the chance a receipt (a decoy, or a cheat) is checked at least once."""
        return 1 - math.exp(-self.checks_paid_per_receipt)


def check_validator_pay(v: ValidatorPay) -> None:
    # (V1) Checking pays: the fees pay for at least one check of every receipt.
    assert v.checks_paid_per_receipt >= 1, v
    # (V2) Challenging blindly loses: with any share d of decoys below one half, d·(1-e)·B_d <
    # (1-d)·B, so guessing costs more bonds than it wins bounties.
    d = 0.5
    assert d * (1 - v.rebate) * v.bounty < (1 - d) * v.bond, v
    # (V3) The node plants decoys that can be found: its rebate on a found decoy beats the decoy's
    # cost (its escrow is spent either way).
    assert v.rebate * v.bounty * v.found_in_equilibrium > MARGIN * DECOY_GAS * GAS_PRICE_WEI, v


def measured_rho() -> float:
    """ρ of the reference validator the defaults are sized for (native bf16; a CPU without it
    measures more, docs/security-parameters.md, and writes verification-no-bf16.json)."""
    return float(json.loads(VERIFICATION.read_text())["verify_cost_ratio"])


def test_default_parameters_pay_validators_for_checking(default_deployment: Contracts) -> None:
    v = ValidatorPay.read(default_deployment, measured_rho())
    assert (v.share, v.rebate, v.bounty) == (0.38, 0.1, ETHER // 20)  # the documented defaults
    check_validator_pay(v)


def test_devnet_parameters_pay_validators_for_checking(deployed: Contracts) -> None:
    check_validator_pay(ValidatorPay.read(deployed, measured_rho()))


def test_validator_pay_checks_catch_bad_settings() -> None:
    good = ValidatorPay(share=0.2, bounty=ETHER // 20, rebate=0.1, bond=ETHER // 10, rho=0.135)
    check_validator_pay(good)
    for bad in (
        replace(good, share=0.05),  # fees pay for a third of a check per receipt
        replace(good, rho=0.5),  # checking costs half of running
        replace(good, bounty=ETHER // 2, bond=ETHER // 10),  # blind challenges would pay
        replace(good, rebate=0.001),  # a node gains nothing from decoys being found
    ):
        with pytest.raises(AssertionError):
            check_validator_pay(bad)


SLOWER = 1.3
"""Validators whose checks cost 1.3x the reference's (no native bf16, an older CPU)."""


def test_a_network_of_slower_validators_deploys_a_share_that_pays_them() -> None:
    """At 1.3x the reference validator's ρ the default share pays for under one check per receipt
    (the verifier's dilemma returns); `sized_for_verify_cost` sizes the share from their measured
    ρ, and the deployed contracts then satisfy V1-V3 at that ρ."""
    rho = measured_rho() * SLOWER
    with pytest.raises(AssertionError):  # the shortfall the sizing exists for
        check_validator_pay(ValidatorPay(0.38, ETHER // 20, 0.1, ETHER // 10, rho))
    params = ProtocolParams().sized_for_verify_cost(rho)
    assert params.verification_share_bps > ProtocolParams().verification_share_bps
    with Anvil(accounts=2) as anvil:
        c = Contracts.deploy(anvil.url, dev_account(0), params)
        v = ValidatorPay.read(c, rho)
    assert v.share == params.verification_share_bps / 10_000
    assert v.checks_paid_per_receipt == pytest.approx(params.checks_paid_per_receipt(rho))
    check_validator_pay(v)
    # the reference validator's ρ is sized by the defaults already: nothing changes
    assert ProtocolParams().sized_for_verify_cost(measured_rho()) == ProtocolParams()
    with pytest.raises(ValueError, match="above the 50 % Payments accepts"):
        ProtocolParams().sized_for_verify_cost(1.0)  # ρ / (h + ρ) = 54 %


def test_deploy_cli_sizes_the_share_from_the_measured_ratio(tmp_path: Path) -> None:
    from supernet.sdk.chain.cli import app
    from supernet.sdk.chain.deployment import Deployment
    from typer.testing import CliRunner

    runner = CliRunner()
    with Anvil(accounts=2) as anvil:
        base = ["deploy", "--rpc", anvil.url, "--account-index", "0"]
        refused = tmp_path / "x.json"
        too_dear = runner.invoke(app, [*base, "--out", str(refused), "--verify-cost-ratio", "1.0"])
        assert too_dear.exit_code == 2 and "above the 50 %" in too_dear.output, too_dear.output
        assert not refused.exists(), "a refused option deploys nothing"
        out = tmp_path / "deployment.json"
        ok = runner.invoke(app, [*base, "--out", str(out), "--verify-cost-ratio", "0.7"])
        assert ok.exit_code == 0, ok.output
        share = ProtocolParams().sized_for_verify_cost(0.7).verification_share_bps
        assert share == 4_517  # 0.7 / (0.85 + 0.7), rounded up
        assert f"verification share {share / 100:.2f} %" in ok.output
        c = Contracts.connect(anvil.url, Deployment.load(out))
        assert int(c.payments.call("VERIFICATION_SHARE_BPS")) == share
