"""The `supernet` root turns the common mistakes into one line with the fix (no traceback)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from chain_fixtures import Actors
from eth_account import Account
from supernet.sdk.chain import Contracts
from supernet.sdk.devnet.processes import free_port

pytestmark = pytest.mark.anvil


def supernet(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "supernet.sdk.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )
    return proc.returncode, proc.stdout + proc.stderr


def test_version() -> None:
    code, out = supernet("--version")
    assert code == 0 and out.startswith("supernet ")


def test_common_mistakes_are_one_line_with_the_fix(
    deployed: Contracts, actors: Actors, tmp_path: Path
) -> None:
    user_env = {"SUPERNET_USER_KEY": "0x" + bytes(actors.users[0].key).hex()}
    broke = Account.create()  # a fresh key: no ether for gas
    dep = str(deployed.deployment.save(tmp_path / "deployment.json"))
    rpc = deployed.w3.provider.endpoint_uri  # type: ignore[attr-defined]
    cases = {
        "missing deployment": (
            ["task", "receipt", "0x" + "ab" * 32, "--deployment", str(tmp_path / "nope.json")],
            "SUPERNET_DEPLOYMENT",
        ),
        "chain not running": (
            ["account", "balance", "--rpc", f"http://127.0.0.1:{free_port()}", "--deployment", dep],
            "`supernet devnet up`",
        ),
        "node offline": (
            [
                "task",
                "submit",
                "hi",
                "--rpc",
                rpc,
                "--deployment",
                dep,
                "--node",
                f"http://127.0.0.1:{free_port()}",
            ],
            "is it running",
        ),
        "an account without ether": (
            [
                "account",
                "deposit",
                actors.node.address,
                "0.01ether",
                "--yes",
                "--force",  # no node is registered on this bare deployment
                "--rpc",
                rpc,
                "--deployment",
                dep,
            ],
            "cannot pay for Payments.deposit",
        ),
        "malformed key": (
            ["account", "balance", "--rpc", rpc, "--deployment", dep],
            "32-byte hex private key",
        ),
    }
    for name, (args, fix) in cases.items():
        env = {**user_env, "SUPERNET_STATE_DIR": str(tmp_path / "state")}
        if name == "malformed key":
            env["SUPERNET_USER_KEY"] = "0x1234"
        if name == "an account without ether":
            env["SUPERNET_USER_KEY"] = "0x" + bytes(broke.key).hex()
        code, out = supernet(*args, env=env)
        assert code != 0, (name, out)
        assert fix in out and "Traceback" not in out, (name, out)
        if name == "an account without ether":
            assert broke.address in out, out  # the message names whose funds are missing
        assert len([line for line in out.splitlines() if line.strip()]) <= 6, (name, out)  # not a dump
