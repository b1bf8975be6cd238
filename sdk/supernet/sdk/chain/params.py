"""Constructor parameters of the protocol contracts, with the documented defaults and a devnet preset.

Defaults follow the contracts' NatSpec (and docs/security-parameters.md); the devnet preset
shortens every delay so a local scenario runs in seconds.

>>> ProtocolParams().unbonding_period
604800
>>> ProtocolParams.devnet().vote_window
30
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace

ETHER = 10**18
DAY = 86_400


@dataclass(frozen=True)
class ProtocolParams:
    """Every deploy-time parameter of ServiceManager, Payments and TaskManager."""

    # ServiceManager
    min_node_stake: int = 1 * ETHER
    min_validator_stake: int = 1 * ETHER
    unbonding_period: int = 7 * DAY
    max_models: int = 16
    # Payments
    withdrawal_delay: int = 1 * DAY
    max_redeem_batch: int = 256
    verification_share_bps: int = 2_000
    decoy_bounty: int = ETHER // 20
    decoy_rebate_bps: int = 1_000
    # TaskManager
    seed_delay_blocks: int = 2
    sample_rate_ppm: int = 100_000
    challenge_window: int = 1 * DAY
    vote_window: int = 1 * DAY
    challenge_bond: int = ETHER // 10
    quorum_bps: int = 3_000
    slash_amount: int = 1 * ETHER
    challenger_reward_bps: int = 2_000
    voter_reward_bps: int = 2_000

    @classmethod
    def devnet(cls) -> ProtocolParams:
        """Short delays and full sampling, for a local chain (each value per the contracts' NatSpec)."""
        return cls(
            unbonding_period=60,
            withdrawal_delay=60,
            seed_delay_blocks=1,
            sample_rate_ppm=1_000_000,
            challenge_window=600,
            vote_window=30,
        )

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

    def task_manager_args(self) -> list[int]:
        """TaskManager's constructor arguments after the ServiceManager address, in order."""
        return [
            self.seed_delay_blocks,
            self.sample_rate_ppm,
            self.challenge_window,
            self.vote_window,
            self.challenge_bond,
            self.quorum_bps,
            self.slash_amount,
            self.challenger_reward_bps,
            self.voter_reward_bps,
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
