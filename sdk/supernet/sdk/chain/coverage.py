"""Which models and agents the network can check: validators declare on chain their *checked ids*
(`ServiceManager.declareCheckedModels`, 32 bytes each): the served model ids they hold the weights
for, and the code hashes of the agents they can replay (their built-ins and the packages they
loaded; `checked_ids` puts both in one list of at most ``MAX_MODELS``). An id is *covered* when the
active validators that declared it hold at least ``QUORUM_BPS`` of the validator stake *without the
largest of them*: no single validator (a colluder that declares a cheater's made-up id beside the
real one) makes an id checkable on its own word, as no single validator outvotes the others on
a model everyone holds (tests/unit/test_review_session_changes3.py).

Why a client asks before it signs: a receipt under a model no validator holds is unverifiable
whatever it says (nobody can re-score its calls), and a node chooses which ids it serves and how
its ``/v1/node`` maps model names to them; a node that named its own made-up id under a familiar
name was paid for answers nobody could check (tests/unit/test_review_model_provenance.py). With
quorums over the whole validator stake, a model held by less than the quorum cannot reach a
verdict without the few who hold it either. A declaration is a validator's claim of work, as its
votes are; coverage is read when a client picks a node, not enforced on chain.

Until validators holding more than half of the stake have declared (a network of validators
older than the declaration, or one starting up), nothing is known and `Coverage.known` is false:
clients then accept any model and any agent code, as before. A half, not any declaration: one minimum-stake
validator declaring a bogus id turned "unknown" into "refuse every node".
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from supernet.sdk.chain.registry import ServiceManager
from supernet.sdk.chain.tasks import TaskManager

if TYPE_CHECKING:
    from supernet.sdk.chain.contracts import Contracts

BPS = 10_000
COVERAGE_TTL_S = 15.0
"""How long a client trusts the validators' declarations it read (they change by transaction)."""


def checked_ids(
    model_ids: Sequence[bytes], agent_hashes: Sequence[bytes], max_ids: int
) -> tuple[list[bytes], list[bytes]]:
    """What a validator declares (`ServiceManager.declareCheckedModels`): its served model ids,
    then the code hashes of the agents it replays, without repeats, at most ``max_ids`` in all
    (the contract's ``MAX_MODELS``); and the agent code hashes left out for want of room (models
    first: without its model no receipt is checkable at all)."""
    ids: list[bytes] = []
    for i in model_ids:
        if i not in ids:
            ids.append(i)
    ids = ids[:max_ids]
    left: list[bytes] = []
    for h in agent_hashes:
        if h in ids or h in left:
            continue
        (ids if len(ids) < max_ids else left).append(h)
    return ids, left


@dataclass(frozen=True)
class Coverage:
    """How much active validator stake checks one checked id (a served model id or an agent code
    hash)."""

    model_id: bytes  # the checked id
    covered_stake: int  # stake of the active validators that declared the id
    largest_declarer: int  # stake of the largest of them
    total_stake: int  # stake of all active validators (the quorum base)
    quorum_bps: int
    known: bool  # validators holding more than half of the stake declared something

    @property
    def checkable(self) -> bool:
        """Covered by the quorum without its largest declarer (or nothing known yet: accepted)."""
        if not self.known:
            return True
        return (self.covered_stake - self.largest_declarer) * BPS >= self.quorum_bps * self.total_stake

    def why_not(self, what: str = "model") -> str:
        """The reason a client gives for leaving the model (or ``what`` the id names) out."""
        without = self.covered_stake - self.largest_declarer
        share = without * 100 // self.total_stake if self.total_stake else 0
        return (
            f"{what} 0x{self.model_id.hex()} is checked by validators with {share}% of the stake without "
            f"the largest of them, below the {self.quorum_bps / 100:g}% quorum: its receipts could not "
            f"be verified"
        )


def declarations(sm: ServiceManager) -> dict[str, tuple[int, frozenset[bytes]]]:
    """Active validators' stake and declared checked ids, by address."""
    out = {}
    for validator in sm.validators():
        stake = sm.validator_stake(validator)
        if stake > 0:
            out[validator] = (stake, frozenset(sm.checked_models(validator)))
    return out


def coverage(model_id: bytes, declared: dict[str, tuple[int, frozenset[bytes]]], quorum_bps: int) -> Coverage:
    """`Coverage` of the checked id ``model_id`` from `declarations`."""
    total = sum(stake for stake, _ in declared.values())
    covering = [stake for stake, ids in declared.values() if model_id in ids]
    declaring = sum(stake for stake, ids in declared.values() if ids)
    known = declaring * 2 > total
    return Coverage(model_id, sum(covering), max(covering, default=0), total, quorum_bps, known)


def model_coverage(sm: ServiceManager, tm: TaskManager, model_id: bytes) -> Coverage:
    """`Coverage` of ``model_id`` read from the chain now."""
    return coverage(model_id, declarations(sm), int(tm.call("QUORUM_BPS")))


class CoverageReader:
    """`Coverage` of any checked id (``0x`` hex: a model id or an agent code hash), from the
    validators' declarations and the quorum read at most
    every `COVERAGE_TTL_S`: the one reader `Client` and the OpenAI drop-in sign by. Blocking
    (chain reads); thread-safe.

    >>> CoverageReader(contracts)("0x...").checkable  # doctest: +SKIP
    True
    """

    def __init__(self, contracts: Contracts, ttl_s: float = COVERAGE_TTL_S) -> None:
        self.contracts, self.ttl_s = contracts, ttl_s
        self._read: tuple[float, dict[str, tuple[int, frozenset[bytes]]], int] | None = None
        self._lock = threading.Lock()

    def __call__(self, model_id: str) -> Coverage:
        with self._lock:
            now = time.monotonic()
            if self._read is None or now - self._read[0] > self.ttl_s:
                sm, tm = self.contracts.service_manager, self.contracts.task_manager
                self._read = (now, declarations(sm), int(tm.call("QUORUM_BPS")))
            _, declared, quorum = self._read
        return coverage(bytes.fromhex(model_id.removeprefix("0x")), declared, quorum)
