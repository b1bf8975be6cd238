"""Anvil's states of older blocks (and its temporary log) stay inside the process's own folder and go with it.

Anvil moves old states to disk and does not remove them when stopped by a signal; before each
process had its own ``--cache-path`` they piled up under ``~/.foundry/anvil/tmp`` (about a
megabyte per block) until a CI run found the disk full.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from chain_fixtures import group_alive
from supernet.sdk.chain.anvil import ANVIL_STATES_PREFIX, Anvil, dev_account

pytestmark = pytest.mark.anvil

CLI = "from supernet.sdk.devnet.cli import app; app()"


def _fill(anvil: Anvil, transfers: int) -> None:
    """Enough blocks with state changes that Anvil moves some states to disk."""
    w3 = anvil.web3()
    sender, receiver = dev_account(0), dev_account(1)
    for _ in range(transfers):
        w3.eth.send_transaction({"from": sender.address, "to": receiver.address, "value": 1})


def test_states_of_older_blocks_are_removed_with_the_process() -> None:
    anvil = Anvil(accounts=2).start()
    try:
        states = anvil.state_dir
        assert states is not None and states.name.startswith(ANVIL_STATES_PREFIX)
        _fill(anvil, 1_200)
        persisted = list(states.rglob("*.json"))
        assert persisted, "Anvil persisted no state: the test no longer exercises the clean-up"
        # the history is still there for reads at old blocks (a validator re-runs chain reads)
        assert anvil.web3().eth.get_balance(dev_account(1).address, block_identifier=3) > 0
        log = anvil.log_path
        assert log is not None and log.exists()
    finally:
        anvil.stop()
    assert not states.exists() and not log.exists()
    anvil.stop()  # twice is harmless


def test_devnet_down_after_up_was_killed_finds_anvil_and_its_states_gone(tmp_path: Path) -> None:
    up = subprocess.Popen(
        [sys.executable, "-c", CLI, "up", "--port", "0", "--state-dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 90
        while not (tmp_path / "devnet.pid").exists():
            assert up.poll() is None and time.monotonic() < deadline, "devnet did not come up"
            time.sleep(0.2)
        info = json.loads((tmp_path / "devnet.pid").read_text())
        states = Path(info["anvilStates"])
        assert states.is_dir()
    finally:
        up.send_signal(signal.SIGKILL)  # `up` gets no chance to clean up: its Anvil goes with it
        up.wait(30)
    deadline = time.monotonic() + 5
    while states.exists() or group_alive(info["anvilPid"]):
        assert time.monotonic() < deadline, "Anvil outlived `up`"
        time.sleep(0.05)
    subprocess.run([sys.executable, "-c", CLI, "down", "--state-dir", str(tmp_path)], check=True)
    assert not (tmp_path / "devnet.pid").exists()


def test_devnet_down_never_removes_a_folder_the_pid_file_merely_names(tmp_path: Path) -> None:
    victim = tmp_path / "precious"
    victim.mkdir()
    (victim / "keep.txt").write_text("x")
    (tmp_path / "devnet.pid").write_text(json.dumps({"pid": 0, "anvilPid": 0, "anvilStates": str(victim)}))
    subprocess.run([sys.executable, "-c", CLI, "down", "--state-dir", str(tmp_path)], check=True)
    assert (victim / "keep.txt").exists()
