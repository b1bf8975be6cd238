"""The devnet: the on-chain scenario end to end, and `devnet up` / `devnet down` as processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console
from supernet.sdk.chain import Contracts, Deployment
from supernet.sdk.devnet import Devnet, DevnetConfig
from supernet.sdk.devnet.scenario import run_scenario

pytestmark = pytest.mark.anvil

CLI = "from supernet.sdk.devnet.cli import app; app()"


def test_scenario_slashes_the_cheating_node(tmp_path: Path) -> None:
    net = Devnet.start(DevnetConfig(port=0, state_dir=tmp_path), populated=False)
    try:
        summary = run_scenario(net, Console(file=open(os.devnull, "w")))
    finally:
        net.stop()
    assert summary["fraud"] and summary["node_slash_count"] == 1
    assert summary["node_stake_after"] == summary["node_stake_before"] - summary["slashed_wei"]
    assert summary["refund_wei"] > 0 and summary["redeemed_wei"] > 0


def _wait_for(path: Path, proc: subprocess.Popen[bytes], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else "devnet exited"
        assert time.monotonic() < deadline, "devnet did not come up"
        time.sleep(0.2)


@pytest.mark.parametrize("how", ["down", "sigint"])
def test_up_then_stop_cleanly(tmp_path: Path, how: str) -> None:
    up = subprocess.Popen(
        [sys.executable, "-c", CLI, "up", "--port", "0", "--state-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_for(tmp_path / "devnet.pid", up)
        pids = json.loads((tmp_path / "devnet.pid").read_text())
        dep = Deployment.load(tmp_path / "deployment.json")
        c = Contracts.connect(pids["rpcUrl"], dep)
        assert len(c.service_manager.nodes()) == 2 and len(c.service_manager.validators()) == 3
        if how == "down":
            subprocess.run([sys.executable, "-c", CLI, "down", "--state-dir", str(tmp_path)], check=True)
        else:
            up.send_signal(signal.SIGINT)
        assert up.wait(30) == 0
    finally:
        if up.poll() is None:
            up.kill()
    with pytest.raises(ProcessLookupError):
        os.kill(pids["anvilPid"], 0)
    assert not (tmp_path / "devnet.pid").exists()
