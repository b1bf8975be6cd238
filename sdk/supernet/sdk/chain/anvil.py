"""A real Anvil process for tests, benchmarks and the devnet, plus its dev accounts and test RPCs.

Anvil is started on a free port (``--port 0``; the port is read from its log), awaited until it
answers ``eth_chainId``, and stopped with SIGTERM (then SIGKILL) as its own process group, so a
Ctrl-C in the terminal never leaves it behind half-stopped.

Anvil ends with the process that started it, however that process ends (SIGKILL by a CI timeout
or the OOM killer included) and whichever of its threads started it: a small supervisor
(`supernet.sdk.chain.anvil_lifeline`) starts Anvil and ends it when the pipe that only the owner
holds open reads EOF. A devnet that should outlive a command runs in a process of its own
(``supernet devnet up &``), which is then the owner.

Anvil moves the states of older blocks to disk (about a megabyte per block on a chain with the
protocol deployed) and does not delete them when it is stopped by a signal: left in its default
``~/.foundry/anvil/tmp`` they filled the disk after a few hundred test chains. Each process here
gets its own ``--cache-path`` in the temporary folder, named after the owner's pid and removed once
the process has exited (by the supervisor, with the temporary log made when none is given; by the
next start should the supervisor be killed too).

>>> with Anvil() as anvil:                                     # doctest: +SKIP
...     w3 = anvil.web3()
...     w3.eth.chain_id
31337
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from types import TracebackType
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from supernet.sdk.chain.errors import ChainError
from web3 import Web3
from web3.types import RPCEndpoint

DEV_MNEMONIC = "test test test test test test test test test test test junk"
"""Anvil's default mnemonic: its dev accounts are public knowledge, never use them for value."""

ANVIL_STATES_PREFIX = "anvil-states-"
"""How the temporary folder of an Anvil's states of older blocks is named."""

_LISTEN_RE = re.compile(r"Listening on ([0-9.]+):(\d+)")
_SUPERVISOR = Path(__file__).with_name("anvil_lifeline.py")


class AnvilError(ChainError, RuntimeError):
    """Anvil cannot be found, did not start, or an Anvil-only RPC failed."""


def find_anvil() -> Path:
    """Locate the anvil binary: ``$SUPERNET_ANVIL``, the repo's ``node_modules/.bin``, then PATH.

    Raises:
        AnvilError: no binary found.
    """
    env = os.environ.get("SUPERNET_ANVIL")
    if env:
        return Path(env)
    for base in (Path.cwd(), Path(__file__).resolve()):
        for parent in (base, *base.parents):
            cand = parent / "node_modules" / ".bin" / "anvil"
            if cand.exists():
                return cand
    found = shutil.which("anvil")
    if found:
        return Path(found)
    raise AnvilError("anvil not found: run `make setup` (npm ci) or set SUPERNET_ANVIL")


@cache
def dev_account(index: int) -> LocalAccount:
    """Dev account ``index`` of Anvil's default mnemonic (derivation path m/44'/60'/0'/0/index)."""
    Account.enable_unaudited_hdwallet_features()
    return Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")


def dev_accounts(count: int) -> list[LocalAccount]:
    """The first ``count`` dev accounts."""
    return [dev_account(i) for i in range(count)]


class Anvil:
    """One Anvil process.

    Args:
        port: TCP port; 0 picks a free one.
        host: interface to listen on.
        chain_id: the chain id it reports.
        accounts: number of funded dev accounts.
        balance_eth: balance of each dev account, in ether.
        block_time: seconds between blocks; None mines one block per transaction.
        log_path: where Anvil's stdout/stderr go (a temporary file by default).
        binary: the anvil executable (`find_anvil` by default).
        extra_args: further ``anvil`` flags (e.g. ``--prune-history``: an RPC holding recent states only).
    """

    def __init__(
        self,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        chain_id: int = 31337,
        accounts: int = 20,
        balance_eth: int = 10_000,
        block_time: float | None = None,
        log_path: str | Path | None = None,
        binary: str | Path | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.host = host
        self.port = port
        self.chain_id = chain_id
        self._args = ["--port", str(port), "--host", host, "--chain-id", str(chain_id)]
        self._args += ["--accounts", str(accounts), "--balance", str(balance_eth)]
        # EIP-7825's cap of 2^24 gas per transaction, as on mainnet since Osaka (Anvil leaves it off
        # by default): a transaction the protocol needs (an availability answer with the largest
        # trace) must fit it here too, or the devnet would hide that it cannot on a real chain.
        self._args += ["--enable-tx-gas-limit"]
        # blocks are final two blocks behind the head (Anvil's default: 64): what the `chain_read`
        # tool reads (supernet.node.kernel.chain_read), so that a devnet's reads are near-current
        self._args += ["--slots-in-an-epoch", "1"]
        if block_time is not None:
            self._args += ["--block-time", str(block_time)]
        self._args += list(extra_args)
        self._binary = Path(binary) if binary else None
        self._log_path = Path(log_path) if log_path else None
        self._proc: subprocess.Popen[bytes] | None = None  # the supervisor (anvil_lifeline)
        self._group = 0  # Anvil's process group: the pid of the `anvil` it started
        self._lifeline: int | None = None  # the pipe's write end: closed, Anvil ends
        self._state_dir: Path | None = None
        self._own_log = False  # a temporary log this object made, removed by `stop`

    @property
    def url(self) -> str:
        """HTTP JSON-RPC URL (valid once started)."""
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """Anvil's process id while running, also its process group's (the npm ``anvil`` launcher runs
        the server as a second process in that group: signal the group to reach both)."""
        return self._group if self._proc else None

    @property
    def log_path(self) -> Path | None:
        """Anvil's log file."""
        return self._log_path

    def running(self) -> bool:
        """True while the process is alive (its supervisor exits with it)."""
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 30.0) -> Anvil:
        """Start Anvil and wait until it answers JSON-RPC.

        Raises:
            AnvilError: it exited or did not answer within ``timeout`` seconds.
        """
        binary = self._binary or find_anvil()
        remove_orphaned_states()
        try:  # everything made here is removed by `stop` if the start fails at any step
            if self._log_path is None:
                fd, name = tempfile.mkstemp(prefix="anvil-", suffix=".log")
                os.close(fd)
                self._log_path = Path(name)
                self._own_log = True
            self._log_path.parent.mkdir(parents=True, exist_ok=True)
            self._state_dir = Path(tempfile.mkdtemp(prefix=f"{ANVIL_STATES_PREFIX}{os.getpid()}-"))
            anvil = [str(binary), *self._args, "--cache-path", str(self._state_dir)]
            supervisor = [sys.executable, "-I", "-S", str(_SUPERVISOR)]  # -I -S: the standard library only
            own_log = str(self._log_path) if self._own_log else ""
            # Both ends are close-on-exec: only the supervisor gets the read end (pass_fds), so the
            # write end stays open exactly as long as this process (or a fork of it) lives.
            lifeline, self._lifeline = os.pipe()
            try:
                with open(self._log_path, "wb") as log:
                    self._proc = subprocess.Popen(
                        [*supervisor, str(lifeline), str(self._state_dir), own_log, *anvil],
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.PIPE,  # its report: "pid N" or "error ERRNO MESSAGE"
                        stderr=log,
                        pass_fds=(lifeline,),
                        start_new_session=True,  # our Ctrl-C handling stops it, not the terminal's SIGINT
                    )
            finally:
                os.close(lifeline)
            self._group = self._await_report(binary, timeout)
            self._await_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _await_report(self, binary: Path, timeout: float) -> int:
        """Anvil's pid as the supervisor reports it; the error of a binary it could not execute
        (``OSError(errno, ...)`` is the matching subclass: PermissionError, FileNotFoundError...)."""
        assert self._proc is not None and self._proc.stdout is not None
        if not select.select([self._proc.stdout], [], [], timeout)[0]:
            raise AnvilError(f"anvil's supervisor did not start within {timeout:.0f} s")
        report = self._proc.stdout.readline().decode().strip().split(maxsplit=2)
        if report[:1] == ["pid"]:
            return int(report[1])
        if report[:1] == ["error"]:
            raise OSError(int(report[1]), report[2] if len(report) > 2 else "", str(binary))
        raise AnvilError(f"anvil's supervisor exited with {self._proc.wait()}: {self._log_tail()}")

    def _await_ready(self, timeout: float) -> None:
        assert self._proc is not None and self._log_path is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise AnvilError(f"anvil exited with {self._proc.returncode}: {self._log_tail()}")
            m = _LISTEN_RE.search(self._log_path.read_text(errors="replace"))
            if m:
                self.port = int(m.group(2))
                try:
                    if Web3(Web3.HTTPProvider(self.url, request_kwargs={"timeout": 2})).eth.chain_id:
                        return
                except Exception:  # not serving yet
                    pass
            time.sleep(0.02)
        raise AnvilError(f"anvil did not answer within {timeout:.0f} s: {self._log_tail()}")

    def _log_tail(self) -> str:
        if self._log_path is None or not self._log_path.exists():
            return ""
        return self._log_path.read_text(errors="replace")[-2000:]

    @property
    def state_dir(self) -> Path | None:
        """Where this process keeps the states of older blocks (removed by `stop`)."""
        return self._state_dir

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate Anvil (SIGTERM, then SIGKILL after ``timeout``) and remove its states and the
        temporary log it made; safe to call twice."""
        proc, self._proc = self._proc, None
        lifeline, self._lifeline = self._lifeline, None
        try:
            if lifeline is not None:
                os.close(lifeline)  # EOF: the supervisor SIGTERMs Anvil's group, removes its states
            if proc is not None:
                _await_exit(proc, self._group, timeout)
        finally:
            state_dir, self._state_dir = self._state_dir, None
            if state_dir is not None:
                shutil.rmtree(state_dir, ignore_errors=True)
            if self._own_log and self._log_path is not None:
                self._log_path.unlink(missing_ok=True)
                self._log_path, self._own_log = None, False

    def web3(self) -> Web3:
        """A Web3 client on this Anvil."""
        return Web3(Web3.HTTPProvider(self.url, request_kwargs={"timeout": 60}))

    def __enter__(self) -> Anvil:
        return self if self.running() else self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def remove_orphaned_states() -> list[Path]:
    """Remove the states folders of Anvils whose owner process is gone (killed before its `stop`:
    a CI timeout, the OOM killer); each folder is named after its owner's pid. Returns them."""
    removed = []
    for folder in Path(tempfile.gettempdir()).glob(f"{ANVIL_STATES_PREFIX}*-*"):
        pid = folder.name.removeprefix(ANVIL_STATES_PREFIX).split("-", 1)[0]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (someone else's included)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _await_exit(supervisor: subprocess.Popen[bytes], group: int, timeout: float) -> None:
    """Wait for the supervisor, which exits once Anvil's group is gone; SIGKILL to the group (and
    to the supervisor) if it is still there after ``timeout``."""
    try:
        supervisor.wait(timeout)
    except subprocess.TimeoutExpired:
        if group:
            try:
                os.killpg(group, signal.SIGKILL)
            except ProcessLookupError:
                pass
        supervisor.kill()
        supervisor.wait(timeout)
    finally:
        if supervisor.stdout is not None:
            supervisor.stdout.close()


# ---------------------------------------------------------------------------------------------
# Anvil-only RPCs (test chains)
# ---------------------------------------------------------------------------------------------


def _rpc(w3: Web3, method: str, params: list[Any]) -> Any:
    resp = w3.provider.make_request(RPCEndpoint(method), params)
    if "error" in resp:
        raise AnvilError(f"{method} failed: {resp['error']}")
    return resp.get("result")


def snapshot(w3: Web3) -> str:
    """Take an EVM snapshot; returns its id for `revert`."""
    return str(_rpc(w3, "evm_snapshot", []))


def revert(w3: Web3, snapshot_id: str) -> None:
    """Revert the chain to ``snapshot_id`` (the snapshot is consumed), base fee included: Anvil
    keeps a base fee set after the snapshot (`set_next_base_fee`) across ``evm_revert``, and
    transactions priced from the reverted latest block were then refused ("max fee per gas less
    than block base fee")."""
    if not _rpc(w3, "evm_revert", [snapshot_id]):
        raise AnvilError(f"evm_revert to {snapshot_id} failed")
    base = w3.eth.get_block("latest").get("baseFeePerGas")
    if base is not None:
        set_next_base_fee(w3, int(base))


def increase_time(w3: Web3, seconds: int) -> None:
    """Move the chain clock forward by ``seconds`` and mine a block so it takes effect."""
    _rpc(w3, "evm_increaseTime", [seconds])
    mine(w3)


def advance_to(w3: Web3, timestamp: int) -> None:
    """Mine a block at chain time ``timestamp`` exactly (nothing when the chain is past it already):
    to land in a window of a few seconds (a vote's reveal phase), which `increase_time` overshoots
    by the wall-clock time since the last block."""
    if int(w3.eth.get_block("latest")["timestamp"]) < timestamp:
        _rpc(w3, "evm_setNextBlockTimestamp", [timestamp])
        mine(w3)


def mine(w3: Web3, blocks: int = 1) -> None:
    """Mine ``blocks`` empty blocks."""
    _rpc(w3, "anvil_mine", [hex(blocks)])


def set_next_base_fee(w3: Web3, wei: int) -> None:
    """Set the base fee of the next block (later blocks follow EIP-1559 from it)."""
    _rpc(w3, "anvil_setNextBlockBaseFeePerGas", [hex(wei)])


def set_balance(w3: Web3, address: str, wei: int) -> None:
    """Set an account's balance."""
    _rpc(w3, "anvil_setBalance", [address, hex(wei)])
