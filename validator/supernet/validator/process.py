"""Running a validator as a child process (the devnet demo), with its key passed by environment.

>>> cmd, env = command(rpc="http://127.0.0.1:8545", deployment="dep.json", key="0x" + "11" * 32,
...                    store="http://127.0.0.1:5001", db="v1.sqlite")
>>> cmd[1:4]
['-m', 'supernet.sdk.cli', 'validator']
>>> env["SUPERNET_VALIDATOR_CHAIN__KEY"][:4]
'0x11'
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def command(
    *,
    rpc: str,
    deployment: str | Path,
    key: str,
    store: str,
    db: str | Path,
    model: str | None = None,
    threads: int | None = None,
    poll: float | None = None,
    challenge: bool = True,
) -> tuple[list[str], dict[str, str]]:
    """The ``supernet validator run`` command line and environment (the key never on the command line)."""
    cmd = [
        sys.executable,
        "-m",
        "supernet.sdk.cli",
        "validator",
        "run",
        "--rpc",
        rpc,
        "--deployment",
        str(deployment),
        "--store",
        store,
        "--db",
        str(db),
    ]
    if model:
        cmd += ["--model", model]
    if threads:
        cmd += ["--threads", str(threads)]
    if poll:
        cmd += ["--poll", str(poll)]
    if not challenge:
        cmd.append("--no-challenge")
    return cmd, {**os.environ, "SUPERNET_VALIDATOR_CHAIN__KEY": key}


def launch(log_path: str | Path | None = None, **kwargs: object) -> subprocess.Popen[bytes]:
    """Start ``supernet validator run`` (arguments as in `command`); stop it with ``proc.terminate()``."""
    cmd, env = command(**kwargs)  # type: ignore[arg-type]
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
