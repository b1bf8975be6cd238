"""The supervisor between an `Anvil` and its owner: Anvil ends when its owner does, however it died.

`Anvil.start` runs this file as a script (``python -I -S anvil_lifeline.py FD STATES LOG ANVIL ARGS...``,
standard library only: nothing of the package is imported) in a new session, handing it the read
end ``FD`` of a pipe whose write end only the owner holds and never writes. The supervisor starts
Anvil in a process group of its own and reports ``pid N`` (or ``error ERRNO MESSAGE`` when it cannot
be executed) on its stdout. Reading ``FD`` returns EOF once the owner's end is closed: by
`Anvil.stop`, or by the kernel when the owner exits, SIGKILL and the OOM killer included, whichever
of its threads started Anvil (unlike ``prctl(PR_SET_PDEATHSIG)``, which fires when that *thread*
ends). Then, as on SIGTERM or Anvil's own exit, it ends Anvil's group (SIGTERM, SIGKILL after
`GRACE_S`), removes the states folder (and on EOF the temporary log ``LOG``, if the owner made one:
nobody is left to read it) and exits with Anvil's status.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import subprocess
import sys
import time

GRACE_S = 10.0
"""Seconds Anvil's group has to exit after SIGTERM before it gets SIGKILL."""

_PR_SET_CHILD_SUBREAPER = 36


def main(argv: list[str]) -> int:
    """Start ``argv[3:]`` (Anvil), supervise it, and return its exit status (128 + N: signal N)."""
    lifeline, states, own_log, command = int(argv[0]), argv[1], argv[2], argv[3:]
    owner_gone = False
    # Signals only wake the loop below (through `wake`), set before the start so that an early
    # SIGTERM is not fatal; SIGCHLD: Anvil exited on its own.
    wake, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
        signal.signal(sig, lambda signum, frame: None)
    _become_subreaper()
    try:  # stdout and stderr: the owner's log, inherited; neither pipe end reaches Anvil (close_fds)
        anvil = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=2, process_group=0)
    except OSError as exc:
        _report(f"error {exc.errno} {exc.strerror}")
        return 127
    _report(f"pid {anvil.pid}")
    while anvil.poll() is None:
        ready, _, _ = select.select([lifeline, wake], [], [])
        if lifeline in ready and not os.read(lifeline, 1):
            owner_gone = True  # EOF: the owner closed its end (`Anvil.stop`) or is gone
            break
        if wake in ready and {int(signal.SIGTERM), int(signal.SIGINT)} & set(os.read(wake, 64)):
            break
    _end_group(anvil)
    shutil.rmtree(states, ignore_errors=True)
    if owner_gone and own_log:  # else the owner reads it (why Anvil exited) and removes it
        with contextlib.suppress(OSError):
            os.unlink(own_log)
    code = anvil.returncode
    return code if code >= 0 else 128 - code


def _report(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _become_subreaper() -> None:
    """On Linux, adopt what Anvil's processes leave orphaned (``node_modules/.bin/anvil`` is a Node
    wrapper that exits as soon as it has forwarded SIGTERM to the server it started): the server is
    then ours to reap, so its exit is seen here even where PID 1 does not reap (a CI container)."""
    if sys.platform == "linux":
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _end_group(anvil: subprocess.Popen[bytes]) -> None:
    """SIGTERM Anvil's process group, SIGKILL after `GRACE_S`; return once every member is gone
    (or, should someone else's zombie linger in it, a second after the SIGKILL)."""
    deadline = time.monotonic() + GRACE_S
    _signal_group(anvil.pid, signal.SIGTERM)
    try:
        anvil.wait(GRACE_S)
    except subprocess.TimeoutExpired:
        _signal_group(anvil.pid, signal.SIGKILL)
        anvil.wait()
    while _group_alive(anvil.pid):  # the wrapper is reaped; the server it started may still run
        if time.monotonic() > deadline + 1.0:
            return
        if time.monotonic() > deadline:
            _signal_group(anvil.pid, signal.SIGKILL)
        time.sleep(0.02)


def _group_alive(group: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:  # reap what we adopted
            pass
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def _signal_group(group: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, sig)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
