"""A compute format this validator fails to load: the receipt is a local failure (checked again
while its window is open) and the format leaves the validator's on-chain declaration, so clients
stop signing it for want of checkers (review: `tests/unit/test_review_rational_node2.py`, a final
"unverifiable" let a node serve the format validators cannot hold, recorded as checked)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from chain_fixtures import Actors
from supernet.node.agents.registry import AgentRegistry, default_registry
from supernet.sdk.chain import Contracts
from supernet.sdk.models import COMPUTE_PRECISIONS, served_model_id
from supernet.validator.service import Validator
from supernet.validator.tool_check import RegistryRunner
from supernet.validator.verifier import Manifest, Verifier

from tests.unit.test_review_rational_node2 import (
    VALIDATOR,
    MemoryQuestion,
    OneCopyScorer,
    doc,
    limits,
    signed,
)
from tests.unit.test_validator_attacks import DOMAIN, NODE, WEIGHTS, DictStore, commit_entry, empty_search


async def test_a_format_that_fails_to_load_is_a_local_failure_and_remembered() -> None:
    f16 = served_model_id(WEIGHTS, "float16-weights")
    task_input = {"q": "where are my keys?"}
    lim = limits(8)
    req, task_id = signed(MemoryQuestion, task_input, [], lim, f16)
    events = empty_search("where are my keys?")
    trace = doc(MemoryQuestion, task_id, task_input, events, "unknown", [], lim, f16, "float16-weights")
    store = DictStore()
    agents = AgentRegistry()
    agents.register(MemoryQuestion)
    entry = commit_entry(store, req, task_id, trace)
    verifier = Verifier(store, OneCopyScorer(), RegistryRunner(store), DOMAIN, VALIDATOR, agents=agents)
    assert verifier.unloadable == {}
    verdict = await verifier.verify(1, NODE.address, 0, Manifest({0: entry}))
    assert not verdict.findings and "cannot score in float16-weights here" in str(verdict.unverifiable)
    assert verdict.local_failure  # checked again while the window is open, not recorded as checked
    assert set(verifier.unloadable) == {"float16-weights"}


@pytest.mark.anvil
def test_a_format_that_failed_to_load_leaves_the_declaration(network: Contracts, actors: Actors) -> None:
    account = actors.validators[0]
    v = Validator.__new__(Validator)
    v.contracts, v.address = network.as_account(account), account.address
    v.verifier = SimpleNamespace(agents=default_registry())
    ids = {c: bytes.fromhex(served_model_id(WEIGHTS, c)[2:]) for c in COMPUTE_PRECISIONS}
    v._declare_models(WEIGHTS)
    declared = set(network.service_manager.checked_models(account.address))
    assert set(ids.values()) <= declared
    v._declare_models(WEIGHTS, {"float16-weights"})
    declared = set(network.service_manager.checked_models(account.address))
    assert ids["float16-weights"] not in declared
    assert {i for c, i in ids.items() if c != "float16-weights"} <= declared
    assert v._declared_without == {"float16-weights"}
