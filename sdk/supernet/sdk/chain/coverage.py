"""Which models the network can check: validators declare the served model ids they hold the
weights for (`ServiceManager.declareCheckedModels`), and a model is *covered* when the active
validators that declared it hold at least ``QUORUM_BPS`` of the validator stake.

Why a client asks before it signs: a receipt under a model no validator holds is unverifiable
whatever it says (nobody can re-score its calls), and a node chooses which ids it serves and how
its ``/v1/node`` maps model names to them; a node that named its own made-up id under a familiar
name was paid for answers nobody could check (tests/unit/test_review_model_provenance.py). With
quorums over the whole validator stake, a model held by less than the quorum cannot reach a
verdict without the few who hold it either. A declaration is a validator's claim of work, as its
votes are; coverage is read when a client picks a node, not enforced on chain.

Until any validator has declared (a network of validators older than the declaration), nothing is
known and `Coverage.known` is false: clients then accept any model, as before.
"""

from __future__ import annotations

from dataclasses import dataclass

from supernet.sdk.chain.registry import ServiceManager
from supernet.sdk.chain.tasks import TaskManager

BPS = 10_000


@dataclass(frozen=True)
class Coverage:
    """How much active validator stake checks one served model id."""

    model_id: bytes
    covered_stake: int  # stake of the active validators that declared the id
    total_stake: int  # stake of all active validators (the quorum base)
    quorum_bps: int
    known: bool  # some active validator declared anything at all

    @property
    def checkable(self) -> bool:
        """Covered by at least the quorum (or nothing declared yet: unknown, accepted)."""
        if not self.known:
            return True
        return self.total_stake > 0 and self.covered_stake * BPS >= self.quorum_bps * self.total_stake

    def why_not(self) -> str:
        """The reason a client gives for leaving the model out."""
        share = 0 if self.total_stake == 0 else self.covered_stake * 100 // self.total_stake
        return (
            f"model 0x{self.model_id.hex()} is checked by validators with {share}% of the stake, below "
            f"the {self.quorum_bps / 100:g}% quorum: its receipts could not be verified"
        )


def declarations(sm: ServiceManager) -> dict[str, tuple[int, frozenset[bytes]]]:
    """Active validators' stake and declared model ids, by address."""
    out = {}
    for validator in sm.validators():
        stake = sm.validator_stake(validator)
        if stake > 0:
            out[validator] = (stake, frozenset(sm.checked_models(validator)))
    return out


def coverage(model_id: bytes, declared: dict[str, tuple[int, frozenset[bytes]]], quorum_bps: int) -> Coverage:
    """`Coverage` of ``model_id`` from `declarations`."""
    total = sum(stake for stake, _ in declared.values())
    covered = sum(stake for stake, ids in declared.values() if model_id in ids)
    known = any(ids for _, ids in declared.values())
    return Coverage(model_id, covered, total, quorum_bps, known)


def model_coverage(sm: ServiceManager, tm: TaskManager, model_id: bytes) -> Coverage:
    """`Coverage` of ``model_id`` read from the chain now."""
    return coverage(model_id, declarations(sm), int(tm.call("QUORUM_BPS")))
