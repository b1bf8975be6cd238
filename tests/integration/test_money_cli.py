"""Money commands on a real Anvil with the real contracts: `supernet account ...` for users,
`supernet node earnings|withdraw|unbond|deregister`, `supernet validator rewards|claim|unbond`."""

from __future__ import annotations

from pathlib import Path

import pytest
from chain_fixtures import ETHER, NODE_STAKE, USER_DEPOSIT, Actors
from supernet.node.service.cli import app as node_app
from supernet.sdk.chain import Contracts
from supernet.sdk.chain.anvil import increase_time
from supernet.sdk.money_cli import app as account_app
from supernet.validator.cli import app as validator_app
from typer.testing import CliRunner

pytestmark = pytest.mark.anvil


def _run(app: object, args: list[str], env: dict[str, str]) -> tuple[int, str]:
    result = CliRunner().invoke(app, args, env=env)  # type: ignore[arg-type]
    return result.exit_code, result.output


def _common(network: Contracts, tmp_path: Path) -> list[str]:
    dep = network.deployment.save(tmp_path / "deployment.json")
    return ["--rpc", network.w3.provider.endpoint_uri, "--deployment", str(dep)]  # type: ignore[attr-defined]


def test_a_user_deposits_sees_and_withdraws_a_channel(
    network: Contracts, actors: Actors, tmp_path: Path
) -> None:
    user, node = actors.users[0], actors.node.address
    env = {"SUPERNET_USER_KEY": "0x" + bytes(user.key).hex()}
    common = _common(network, tmp_path)

    code, out = _run(account_app, ["deposit", node, "0.01ether", "--yes", *common], env)
    assert code == 0 and "deposited 0.01 ETH" in out, out
    assert network.payments.channel(user.address, node).deposited == USER_DEPOSIT + 10**16

    code, out = _run(account_app, ["deposit", node, "1.5foo", "--yes", *common], env)
    assert code == 2 and "is not an amount" in out
    assert network.payments.channel(user.address, node).deposited == USER_DEPOSIT + 10**16  # unchanged

    code, out = _run(account_app, ["balance", *common], env)
    assert code == 0 and node in out and "left 1.01 ETH" in out, out

    code, out = _run(account_app, ["withdraw", node, "--yes", *common], env)
    assert code == 0 and "withdrawal requested" in out, out
    assert network.payments.channel(user.address, node).withdrawable_at > 0
    code, out = _run(account_app, ["withdraw", node, *common], env)
    assert code == 0 and "not ready yet" in out, out

    increase_time(network.w3, network.payments.withdrawal_delay() + 1)
    before = network.w3.eth.get_balance(user.address)
    code, out = _run(account_app, ["withdraw", node, *common], env)
    assert code == 0 and "withdrew 1.01 ETH" in out, out
    assert network.payments.channel(user.address, node).balance == 0
    assert network.w3.eth.get_balance(user.address) > before + ETHER  # less the gas

    code, out = _run(
        account_app, ["balance", "--rpc", "http://x", "--deployment", str(tmp_path / "no.json")], env
    )
    assert code == 1 and "no deployment file" in out and "Traceback" not in out


def test_an_operator_sees_stake_unbonds_withdraws_and_leaves(
    network: Contracts, actors: Actors, tmp_path: Path
) -> None:
    node = actors.node
    env = {"SUPERNET_IDENTITY__PRIVATE_KEY": "0x" + bytes(node.key).hex()}
    common = _common(network, tmp_path)
    sm = network.service_manager

    code, out = _run(node_app, ["earnings", *common], env)
    assert code == 0 and f"stake {NODE_STAKE // ETHER} ETH" in out and "earnings: 0 ETH" in out, out

    code, out = _run(node_app, ["unbond", "1ether", "--yes", *common], env)
    assert code == 0 and sm.get_operator(node.address).unbonding == ETHER, out
    code, out = _run(node_app, ["withdraw", *common], env)
    assert code == 0 and "is unbonding: ready" in out and sm.get_operator(node.address).unbonding == ETHER

    increase_time(network.w3, sm.unbonding_period() + 1)
    code, out = _run(node_app, ["withdraw", *common], env)
    assert code == 0 and "withdrew 1 ETH of unbonded stake" in out, out
    assert (
        sm.get_operator(node.address).unbonding == 0
        and sm.get_operator(node.address).stake == NODE_STAKE - ETHER
    )

    code, out = _run(node_app, ["deregister", "--yes", *common], env)
    assert code == 0 and "deregistered" in out and sm.get_operator(node.address).stake == 0, out

    validator = actors.validators[0]
    venv = {"SUPERNET_VALIDATOR_CHAIN__KEY": "0x" + bytes(validator.key).hex()}
    code, out = _run(validator_app, ["rewards", *common], venv)
    assert code == 0 and "rewards: 0 ETH to withdraw" in out, out
    code, out = _run(validator_app, ["claim", *common], venv)
    assert code == 0 and "nothing to withdraw yet" in out, out


def test_validator_status_of_a_mistyped_database_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "validatr.sqlite"
    code, out = _run(validator_app, ["status", "--db", str(missing)], {})
    assert code == 1 and "no validator database" in out
    assert not missing.exists()
