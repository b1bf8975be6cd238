"""Constructor parameters of the protocol contracts, with the documented defaults and a devnet preset.

Defaults follow the contracts' NatSpec (and docs/security-parameters.md); the devnet preset
shortens every delay so a local scenario runs in seconds.

>>> ProtocolParams().unbonding_period
604800
>>> ProtocolParams.devnet().vote_window
30
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace

ETHER = 10**18
DAY = 86_400
REFERENCE_GAS_PRICE_WEI = 10 * 10**9
"""The gas price validator pay is sized at (10 gwei; docs/security-parameters.md)."""
CHALLENGE_GAS = 250_000
"""A decoy finder's challenge transaction (proof, receipt, evidence CID), rounded up from ~190k."""
MAX_VERIFICATION_SHARE_BPS = 5_000
"""The most of every fee Payments' constructor lets go to the verification escrow."""


@dataclass(frozen=True)
class ProtocolParams:
    """Every deploy-time parameter of ServiceManager, Payments, SeedBeacon and TaskManager."""

    # ServiceManager
    # (1 - challenger reward) x this >= the slash: draining a node through an ally's omission
    # claims ahead of a fraud verdict costs more than the verdict (docs/security-parameters.md)
    min_node_stake: int = 2 * ETHER
    min_validator_stake: int = 1 * ETHER
    unbonding_period: int = 7 * DAY
    max_models: int = 16
    # Payments
    withdrawal_delay: int = 1 * DAY
    max_redeem_batch: int = 256
    verification_share_bps: int = 3_800  # one check per receipt up to ρ = 0.52 (measured: 0.472)
    decoy_bounty: int = ETHER // 20
    decoy_rebate_bps: int = 1_000
    # SeedBeacon (TaskManager reads the delay from it): where a seed block's value comes from,
    # 1 = `beacon.Source.PREVRANDAO` (a header proof of the block's RANDAO mix, which no builder
    # sets) or 0 = `Source.BLOCKHASH` (for chains whose prevrandao is constant: a builder can grind it)
    seed_source: int = 1
    seed_delay_blocks: int = 2
    # TaskManager
    sample_rate_ppm: int = 100_000
    challenge_window: int = 1 * DAY
    vote_window: int = 1 * DAY
    challenge_bond: int = ETHER // 10
    quorum_bps: int = 3_000
    slash_amount: int = 1 * ETHER
    challenger_reward_bps: int = 2_000
    voter_reward_bps: int = 2_000
    # the least gas price data claims' answers are priced at: 0 where the base fee carries the
    # price of gas (Ethereum and its rollups); the chain's least accepted gas price where it does
    # not (a zero or negligible base fee: docs/security-parameters.md)
    min_answer_gas_price: int = 0

    @classmethod
    def devnet(cls) -> ProtocolParams:
        """Short delays and full sampling, for a local chain (each value per the contracts' NatSpec)."""
        return cls(
            # above twice a node's default 600 s promise: a promise falls due while the stake is
            # there (`supernet.sdk.chain.promises`; tests move the chain's clock, nobody waits)
            unbonding_period=3600,
            withdrawal_delay=60,
            seed_delay_blocks=1,
            sample_rate_ppm=1_000_000,
            challenge_window=600,
            vote_window=30,
        )

    def finder_keeps(self, gas_price_wei: int = REFERENCE_GAS_PRICE_WEI) -> float:
        """h: the part of a decoy bounty its finder keeps after the rebate and its challenge's gas."""
        bounty = self.decoy_bounty
        return ((10_000 - self.decoy_rebate_bps) * bounty / 10_000 - CHALLENGE_GAS * gas_price_wei) / bounty

    def checks_paid_per_receipt(self, verify_cost_ratio: float) -> float:
        """N* = s·h / (ρ·(1 − s)): the checks of each receipt the verification share pays for,
        with ρ the validators' measured ``verify_cost_ratio``. A check costs ρ times the node's
        compute C, and a node that does not run at a loss prices a task at F ≥ C / (1 − s) (its
        share s of the fee goes to the escrow for good), so a check costs at most ρ·(1 − s)·F
        while the escrow pays out s·h·F (docs/security-parameters.md, "Paying validators")."""
        if verify_cost_ratio <= 0:
            raise ValueError("verify_cost_ratio must be positive")
        s = self.verification_share_bps / 10_000
        return s * self.finder_keeps() / (verify_cost_ratio * (1 - s))

    def sized_for_verify_cost(
        self, verify_cost_ratio: float, checks_per_receipt: float = 1.0
    ) -> ProtocolParams:
        """A copy whose verification share pays for ``checks_per_receipt`` checks of every receipt
        by validators whose checks cost ``verify_cost_ratio`` of the node's run (``make
        bench-verify`` on their hardware): ``s = N·ρ / (h + N·ρ)`` rounded up (the inverse of
        `checks_paid_per_receipt`), never below this share.

        The defaults are sized for the reference validator of docs/benchmarks/verification.json
        checking nodes in their default format; a network whose validators are slower deploys
        with this instead of underpaying them.

        Raises:
            ValueError: The share needed exceeds what Payments accepts (50 %): checking is too
                dear for fees to pay, so a cheaper verifier or a lower sampling target is needed.
        """
        if checks_per_receipt <= 0:
            raise ValueError("checks_per_receipt must be positive")
        h = self.finder_keeps()
        if verify_cost_ratio <= 0 or h <= 0:
            raise ValueError("verify_cost_ratio and the finder's keep must be positive")
        need = checks_per_receipt * verify_cost_ratio
        share = math.ceil(10_000 * need / (h + need))
        if (
            replace(self, verification_share_bps=share).checks_paid_per_receipt(verify_cost_ratio)
            < checks_per_receipt
        ):
            share += 1  # rounding fell short
        if share > MAX_VERIFICATION_SHARE_BPS:
            raise ValueError(
                f"paying {checks_per_receipt:g} checks per receipt at verify_cost_ratio "
                f"{verify_cost_ratio:g} needs {share / 100:.1f} % of every fee, above the "
                f"{MAX_VERIFICATION_SHARE_BPS / 100:.0f} % Payments accepts"
            )
        return replace(self, verification_share_bps=max(share, self.verification_share_bps))

    def service_manager_args(self) -> list[int]:
        """ServiceManager's constructor arguments, in order."""
        return [self.min_node_stake, self.min_validator_stake, self.unbonding_period, self.max_models]

    def payments_args(self) -> list[int]:
        """Payments' constructor arguments, in order."""
        return [
            self.withdrawal_delay,
            self.max_redeem_batch,
            self.verification_share_bps,
            self.decoy_bounty,
            self.decoy_rebate_bps,
        ]

    def seed_beacon_args(self) -> list[int]:
        """SeedBeacon's constructor arguments, in order."""
        return [self.seed_source, self.seed_delay_blocks]

    def task_manager_args(self) -> list[int]:
        """TaskManager's constructor arguments after the ServiceManager, Payments and SeedBeacon
        addresses, in order."""
        return [
            self.sample_rate_ppm,
            self.challenge_window,
            self.vote_window,
            self.challenge_bond,
            self.quorum_bps,
            self.slash_amount,
            self.challenger_reward_bps,
            self.voter_reward_bps,
            self.min_answer_gas_price,
        ]

    def to_dict(self) -> dict[str, int]:
        """The parameters by camelCase name, as stored in the deployment file."""
        return {_camel(k): v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: Mapping[str, int]) -> ProtocolParams:
        """Inverse of `to_dict` (unknown keys are ignored, missing ones keep their default)."""
        known = {_camel(f.name): f.name for f in fields(cls)}
        return replace(cls(), **{known[k]: int(v) for k, v in values.items() if k in known})


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.capitalize() for p in rest)
