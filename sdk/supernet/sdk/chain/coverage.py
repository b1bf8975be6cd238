"""Which models and agents the network can check: validators declare on chain their *checked ids*
(`ServiceManager.declareCheckedModels`, 32 bytes each): the served model ids they hold the weights
for, and the code hashes of the agents they can replay (their built-ins and the packages they
loaded; `checked_ids` puts both in one list of at most ``MAX_MODELS``, split by `CHECKED_AGENTS`).
An id is *covered* when the active validators that declared it hold at least ``QUORUM_BPS`` of the
validator stake *without the largest of them*: no single validator (a colluder that declares a
cheater's made-up id beside the real one) makes an id checkable on its own word, as no single
validator outvotes the others on a model everyone holds (tests/unit/test_review_session_changes3.py).

Why a client asks before it signs: a receipt under a model no validator holds is unverifiable
whatever it says (nobody can re-score its calls), and a node chooses which ids it serves and how
its ``/v1/node`` maps model names to them; a node that named its own made-up id under a familiar
name was paid for answers nobody could check (tests/unit/test_review_model_provenance.py). With
quorums over the whole validator stake, a model held by less than the quorum cannot reach a
verdict without the few who hold it either. A declaration is a validator's claim of work, as its
votes are; coverage is read when a client picks a node, not enforced on chain.

A receipt is checkable only by a validator that holds *all* of it: its model and the code of
every agent it may run (`AgentProfile.code_hashes`). So a client signs a task only when the
validators whose declaration holds the model id *and* every agent code hash of the profile, all
together, reach the quorum without the largest of them (`coverage_of`, `receipt_coverage`): a
model covered by some validators and an agent covered by others were each "covered", yet nobody
could replay the receipt (tests/unit/test_review_checked_ids.py).

Until validators holding more than half of the stake have declared (a network of validators
older than the declaration, or one starting up), nothing is known and `Coverage.known` is false:
clients then accept any model and any agent code, as before. A half, not any declaration: one
minimum-stake validator declaring a bogus id turned "unknown" into "refuse every node".

Agent code is known separately, for rolling upgrades: a validator that declares its agents' code
hashes puts the fixed marker `CHECKED_AGENTS` in its list (one ``MAX_MODELS`` slot: its models,
the marker, then its agent code hashes; `checked_ids`). Agent code hashes count only once
validators holding more than half of the stake declared the marker (`agents_known`); until then
any agent code hash is accepted, as unknown models are. Validators of an earlier release declared
their models only: without the marker their lists made every agent code hash look "declared by
nobody", and clients refused every node. With the marker its list also tells the kinds apart: a
validator's ids before it are models, after it agent code hashes, so a node cannot pass an agent
code hash off as a model id (or a model id as agent code); a list without the marker is all models.
"""

from __future__ import annotations

import hashlib
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

CHECKED_AGENTS = hashlib.sha256(b"supernet/checked-agents/v1").digest()
"""The checked id a validator declaring its agents' code hashes puts between its models and them
(`checked_ids`): agent code is known once validators holding more than half of the stake declared
it (`agents_known`); ids before it are models, after it agent code hashes (`kinds`)."""

Declared = dict[str, tuple[int, tuple[bytes, ...]]]
"""Active validators' stake and declared checked ids (in their declared order), by address."""


def checked_ids(
    model_ids: Sequence[bytes], agent_hashes: Sequence[bytes], max_ids: int
) -> tuple[list[bytes], list[bytes]]:
    """What a validator declares (`ServiceManager.declareCheckedModels`): its served model ids,
    then the marker `CHECKED_AGENTS`, then the code hashes of the agents it replays, without
    repeats, at most ``max_ids`` in all (the contract's ``MAX_MODELS``); and the agent code hashes
    left out for want of room (models first: without its model no receipt is checkable at all; no
    room for the marker leaves every agent out)."""
    ids: list[bytes] = []
    for i in model_ids:
        if i not in ids and i != CHECKED_AGENTS:
            ids.append(i)
    ids = ids[:max_ids]
    room = len(ids) < max_ids
    if room:
        ids.append(CHECKED_AGENTS)
    left: list[bytes] = []
    for h in agent_hashes:
        if h in ids or h in left:
            continue
        (ids if room and len(ids) < max_ids else left).append(h)
    return ids, left


def kinds(ids: Sequence[bytes]) -> tuple[frozenset[bytes], frozenset[bytes]]:
    """A declaration's model ids and agent code hashes: the ids before `CHECKED_AGENTS` and after
    it (a declaration without the marker, of a validator predating it, declares models only)."""
    ids = tuple(ids)
    if CHECKED_AGENTS not in ids:
        return frozenset(ids), frozenset()
    at = ids.index(CHECKED_AGENTS)
    return frozenset(ids[:at]), frozenset(ids[at + 1 :])


@dataclass(frozen=True)
class Coverage:
    """How much active validator stake checks one checked id (a served model id or an agent code
    hash), or (`coverage_of`) a receipt's ids together: its model and its agents' code hashes."""

    model_id: bytes  # the checked id (of a receipt: its model id)
    covered_stake: int  # stake of the active validators that declared the id (all the ids)
    largest_declarer: int  # stake of the largest of them
    total_stake: int  # stake of all active validators (the quorum base)
    quorum_bps: int
    known: bool  # validators holding more than half of the stake declared something
    agent_hashes: tuple[bytes, ...] = ()  # a receipt's agent code hashes (counted: agent code known)
    parts: tuple[Coverage, ...] = ()  # a receipt's: each of its ids' own coverage
    what: str = "model"  # what `model_id` names, for `why_not`

    @property
    def ids(self) -> tuple[bytes, ...]:
        """The checked ids that must be held together."""
        return (self.model_id, *self.agent_hashes)

    @property
    def checkable(self) -> bool:
        """Covered by the quorum without its largest declarer (or nothing known yet: accepted)."""
        if not self.known:
            return True
        return (self.covered_stake - self.largest_declarer) * BPS >= self.quorum_bps * self.total_stake

    def _share(self) -> str:
        without = self.covered_stake - self.largest_declarer
        share = without * 100 // self.total_stake if self.total_stake else 0
        return (
            f"validators with {share}% of the stake without the largest of them, below the "
            f"{self.quorum_bps / 100:g}% quorum: its receipts could not be verified"
        )

    def why_not(self, what: str | None = None) -> str:
        """The reason a client gives for leaving the model (or ``what`` the id names) out; of a
        receipt: the first of its ids no quorum checks, or that no common quorum checks them all."""
        if not self.parts:
            what = what or self.what
            tail = " (no validator quorum has that agent installed)" if what == "agent code" else ""
            return f"{what} 0x{self.model_id.hex()} is checked by {self._share()}{tail}"
        for part in self.parts:
            if not part.checkable:
                return part.why_not()
        listed = ", ".join("0x" + h.hex() for h in self.agent_hashes)
        return (
            f"no common quorum checks model 0x{self.model_id.hex()} with agent code {listed}: each is "
            f"checked on its own, but the validators holding all of them together are {self._share()}"
        )


def declarations(sm: ServiceManager) -> Declared:
    """Active validators' stake and declared checked ids, by address."""
    out = {}
    for validator in sm.validators():
        stake = sm.validator_stake(validator)
        if stake > 0:
            out[validator] = (stake, tuple(sm.checked_models(validator)))
    return out


def coverage(model_id: bytes, declared: Declared, quorum_bps: int, what: str = "model") -> Coverage:
    """`Coverage` of the checked id ``model_id`` from `declarations` (declared as any kind)."""
    total = sum(stake for stake, _ in declared.values())
    covering = [stake for stake, ids in declared.values() if model_id in ids]
    return Coverage(
        model_id, sum(covering), max(covering, default=0), total, quorum_bps, _known(declared), what=what
    )


def _known(declared: Declared) -> bool:
    """Validators holding more than half of the stake declared something."""
    total = sum(stake for stake, _ in declared.values())
    return sum(stake for stake, ids in declared.values() if ids) * 2 > total


def agents_known(declared: Declared) -> bool:
    """Validators holding more than half of the stake declared `CHECKED_AGENTS` (they declare
    their agents' code hashes): until then any agent code hash is accepted."""
    total = sum(stake for stake, _ in declared.values())
    return sum(stake for stake, ids in declared.values() if CHECKED_AGENTS in ids) * 2 > total


def coverage_of(
    model_id: bytes, agent_hashes: Sequence[bytes], declared: Declared, quorum_bps: int
) -> Coverage:
    """`Coverage` of one receipt: the stake of the validators whose declaration holds the model id
    (as a model) *and* every agent code hash (as agent code) together, without the largest of
    them; a validator holding only part of it could not replay it. The agent code hashes count
    only while agent code is known (`agents_known`); ``parts`` gives each id's own coverage."""
    hashes = tuple(dict.fromkeys(agent_hashes)) if agents_known(declared) else ()
    split = [(stake, kinds(ids)) for stake, ids in declared.values()]
    total, known = sum(stake for stake, _ in split), _known(declared)

    def held(models: Sequence[bytes], agents: Sequence[bytes], what: str = "model") -> Coverage:
        covering = [
            stake for stake, (m, a) in split if all(i in m for i in models) and all(h in a for h in agents)
        ]
        first = models[0] if models else agents[0]
        return Coverage(first, sum(covering), max(covering, default=0), total, quorum_bps, known, what=what)

    parts = (held([model_id], []), *(held([], [h], "agent code") for h in hashes))
    joint = held([model_id], hashes)
    return Coverage(
        model_id,
        joint.covered_stake,
        joint.largest_declarer,
        total,
        quorum_bps,
        known,
        agent_hashes=hashes,
        parts=parts,
    )


def model_coverage(sm: ServiceManager, tm: TaskManager, model_id: bytes) -> Coverage:
    """`Coverage` of ``model_id`` read from the chain now."""
    return coverage(model_id, declarations(sm), int(tm.call("QUORUM_BPS")))


class CoverageReader:
    """`Coverage` of any checked id (``0x`` hex: a model id or an agent code hash), or of a
    receipt's together (`of`), from the validators' declarations and the quorum read at most
    every `COVERAGE_TTL_S`: the one reader `Client` and the OpenAI drop-in sign by. Blocking
    (chain reads); thread-safe.

    >>> CoverageReader(contracts)("0x...").checkable  # doctest: +SKIP
    True
    """

    def __init__(self, contracts: Contracts, ttl_s: float = COVERAGE_TTL_S) -> None:
        self.contracts, self.ttl_s = contracts, ttl_s
        self._read: tuple[float, Declared, int] | None = None
        self._lock = threading.Lock()

    def _declared(self) -> tuple[Declared, int]:
        with self._lock:
            now = time.monotonic()
            if self._read is None or now - self._read[0] > self.ttl_s:
                sm, tm = self.contracts.service_manager, self.contracts.task_manager
                self._read = (now, declarations(sm), int(tm.call("QUORUM_BPS")))
            _, declared, quorum = self._read
        return declared, quorum

    def __call__(self, model_id: str) -> Coverage:
        declared, quorum = self._declared()
        return coverage(_id(model_id), declared, quorum)

    def of(self, model_id: str, agent_hashes: Sequence[str]) -> Coverage:
        """`coverage_of` the receipt of a task for ``model_id`` under a profile naming the agent
        code hashes ``agent_hashes`` (`AgentProfile.code_hashes`)."""
        declared, quorum = self._declared()
        return coverage_of(_id(model_id), [_id(h) for h in agent_hashes], declared, quorum)


def _id(hex_id: str) -> bytes:
    return bytes.fromhex(hex_id.removeprefix("0x"))
