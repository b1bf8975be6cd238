"""Staking lifecycle on a real Anvil: register, add stake, unbond, withdraw after the delay."""

from __future__ import annotations

import pytest
from chain_fixtures import CHAIN_TEST_PARAMS, ETHER, MODEL_ID, Actors
from supernet.sdk.chain import Contracts, Role
from supernet.sdk.chain.anvil import increase_time
from supernet.sdk.chain.contract_errors import (
    AlreadyRegistered,
    InsufficientStake,
    NothingToWithdraw,
    RoleMismatch,
    UnbondingNotReady,
)

pytestmark = pytest.mark.anvil


def test_node_lifecycle(chain: Contracts, actors: Actors) -> None:
    sm = chain.as_account(actors.node).service_manager
    addr = actors.node.address
    sm.register_node("http://127.0.0.1:8100", [MODEL_ID], 10**9, 2 * ETHER)
    view = sm.get_node(addr)
    assert view.active and view.stake == 2 * ETHER and view.model_ids == [MODEL_ID]
    assert addr in sm.nodes()

    sm.add_stake(ETHER)
    assert sm.get_operator(addr).stake == 3 * ETHER

    sm.request_unbond(2 * ETHER)
    op = sm.get_operator(addr)
    assert (op.role, op.stake, op.unbonding) == (Role.NODE, ETHER, 2 * ETHER)
    with pytest.raises(UnbondingNotReady) as exc:
        sm.withdraw_unbonded()
    assert exc.value.readyAt == op.unbonding_ready_at

    increase_time(chain.w3, CHAIN_TEST_PARAMS.unbonding_period + 1)
    before = chain.w3.eth.get_balance(addr)
    tx = sm.withdraw_unbonded()
    fee = tx.gas_used * int(tx.receipt["effectiveGasPrice"])
    assert chain.w3.eth.get_balance(addr) == before + 2 * ETHER - fee
    assert sm.get_operator(addr).unbonding == 0
    with pytest.raises(NothingToWithdraw):
        sm.withdraw_unbonded()


def test_validator_stake_counts_for_quorum(chain: Contracts, actors: Actors) -> None:
    sm = chain.as_account(actors.validators[0]).service_manager
    sm.register_validator(3 * ETHER)
    assert sm.is_active_validator(actors.validators[0].address)
    assert sm.total_validator_stake() == 3 * ETHER
    sm.request_unbond(ETHER)
    assert sm.validator_stake(actors.validators[0].address) == 2 * ETHER
    assert sm.total_validator_stake() == 2 * ETHER


def test_registration_rejections_are_typed(chain: Contracts, actors: Actors) -> None:
    sm = chain.as_account(actors.node).service_manager
    with pytest.raises(InsufficientStake) as exc:
        sm.register_node("http://x", [MODEL_ID], 1, ETHER // 2)
    assert (exc.value.stake, exc.value.minimum) == (ETHER // 2, CHAIN_TEST_PARAMS.min_node_stake)
    assert exc.value.contract == "ServiceManager"

    minimum = CHAIN_TEST_PARAMS.min_node_stake
    sm.register_node("http://x", [MODEL_ID], 1, minimum)
    with pytest.raises(AlreadyRegistered):
        sm.register_node("http://x", [MODEL_ID], 1, minimum)
    sm.deregister()
    with pytest.raises(RoleMismatch):  # one role for life
        sm.register_validator(ETHER)
