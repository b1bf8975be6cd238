"""One configuration vocabulary: every command that reaches the network names the chain, the
deployment and the store with the same flags and environment variables
(`supernet.sdk.cli_options`)."""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path

import pytest
import typer
from supernet.sdk.cli_options import DEPLOYMENT_ENV, RPC_ENV, STORE_ENV
from typer.main import get_command

COMMANDS = [("node", "run"), ("validator", "run"), ("explorer",), ("task", "submit"), ("task", "verify")]


def _params(path: tuple[str, ...]) -> dict[str, list[str]]:
    [group] = [ep for ep in entry_points(group="supernet.cli") if ep.name == path[0]]
    cmd = get_command(group.load())
    for name in path[1:]:
        cmd = cmd.commands[name]  # type: ignore[attr-defined]
    out: dict[str, list[str]] = {}
    for p in cmd.params:
        env = p.envvar if isinstance(p.envvar, list) else [p.envvar] if p.envvar else []
        for opt in p.opts:
            out[opt] = list(env)
    return out


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_the_chain_and_deployment_have_one_name_everywhere(path: tuple[str, ...]) -> None:
    params = _params(path)
    assert params["--rpc"][0] == RPC_ENV
    assert params["--deployment"][0] == DEPLOYMENT_ENV


@pytest.mark.parametrize("path", [("node", "run"), ("validator", "run"), ("explorer",)], ids=" ".join)
def test_the_store_has_one_name_for_every_service(path: tuple[str, ...]) -> None:
    assert _params(path)["--store"][0] == STORE_ENV


def test_node_run_flags_put_the_node_on_a_chain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``node run --rpc --deployment --store`` is the same as the TOML's [chain] and [store]."""
    from supernet.node.service import cli as node_cli

    seen = {}

    async def fake_serve(settings: object, faults: list[str], seed: int) -> None:
        seen["settings"] = settings

    monkeypatch.setattr(node_cli, "_serve", fake_serve)
    monkeypatch.setenv("SUPERNET_IDENTITY__PRIVATE_KEY", "0x" + "11" * 32)
    monkeypatch.setenv(STORE_ENV, "http://127.0.0.1:5999")
    app = typer.Typer()
    app.command()(node_cli.run)
    from typer.testing import CliRunner

    dep = tmp_path / "deployment.json"
    r = CliRunner().invoke(app, ["--rpc", "http://127.0.0.1:8545", "--deployment", str(dep)])
    assert r.exit_code == 0, r.output
    s = seen["settings"]
    assert s.chain.enabled and s.chain.rpc_url == "http://127.0.0.1:8545" and s.chain.deployment == dep
    assert s.store.url == "http://127.0.0.1:5999", "from $SUPERNET_STORE_URL"
