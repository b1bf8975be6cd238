"""Child processes of a local network: nodes and validators run as real ``supernet`` commands.

The SDK does not import the node or the validator (they need torch); it starts them as
subprocesses through the one CLI, passing keys through the environment (never the command line,
which other users of the machine can read).

>>> p = ServiceProcess("node-1", ["node", "run"], Path("/tmp/n1.log"), {"X": "1"})  # doctest: +SKIP
>>> p.start(); p.wait_http("http://127.0.0.1:8101/healthz"); p.stop()             # doctest: +SKIP
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from supernet.sdk.errors import SupernetError


class ProcessError(SupernetError, RuntimeError):
    """A child process exited early or never became ready."""


_HANDED_OUT: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port() -> int:
    """A TCP port free right now on 127.0.0.1, outside the kernel's ephemeral range.

    A port the kernel handed out for ``bind(0)`` lies in the ephemeral range, so an outgoing
    connection of any process (a validator polling Anvil) can take it as its source port in
    the seconds a node spends loading its model before it binds: the node then dies with
    "address already in use". Ports below that range are only ever taken by an explicit bind.
    """
    low, _high = _ephemeral_range()
    first = 10_000 if low > 12_000 else 1_024
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(first, low)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    with socket.socket() as s:  # the low range is crowded: fall back to the kernel's choice
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServiceProcess:
    """One ``supernet ...`` child process with its log file.

    Args:
        name: label for messages.
        args: arguments after ``supernet``.
        log_path: stdout and stderr go here.
        env: extra environment variables (keys, settings).
    """

    name: str
    args: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the process (returns at once)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # the child inherits the descriptor
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "supernet.sdk.cli", *self.args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
            start_new_session=True,  # Ctrl-C in the terminal reaches the demo, which stops us in order
        )
        log.close()

    def running(self) -> bool:
        """True while the process runs."""
        return self.proc is not None and self.proc.poll() is None

    def wait_http(self, url: str, timeout: float = 180.0) -> None:
        """Block until ``url`` answers 200.

        Raises:
            ProcessError: the process exited, or ``timeout`` passed.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                if httpx.get(url, timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise ProcessError(f"{self.name} not ready after {timeout:.0f} s; log tail:\n{self.log_tail()}")

    def wait_log(self, needle: str, timeout: float = 180.0) -> None:
        """Block until ``needle`` appears in the log (for services without an HTTP port)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            if needle in self.log_tail(200_000):
                return
            time.sleep(0.25)
        raise ProcessError(f"{self.name} did not log {needle!r} in {timeout:.0f} s:\n{self.log_tail()}")

    def check_alive(self) -> None:
        """Raise `ProcessError` with the log tail when the process has exited."""
        if self.proc is not None and self.proc.poll() is not None:
            code = self.proc.returncode
            raise ProcessError(f"{self.name} exited with {code}; log tail:\n{self.log_tail(8000)}")

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited after ``timeout`` seconds."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL at once: no cleanup, like a crash (tests of crash recovery)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def log_tail(self, n: int = 3000) -> str:
        """The last ``n`` characters of the log."""
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""
