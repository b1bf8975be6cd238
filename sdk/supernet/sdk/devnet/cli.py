"""``supernet devnet``: run a local chain with the protocol deployed and sample operators.

>>> # supernet devnet up          (foreground; Ctrl-C or `supernet devnet down` stops it)
>>> # supernet devnet scenario    (the on-chain story: stake, pay, commit, redeem, dispute, slash)
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import typer
from rich.console import Console
from rich.table import Table
from supernet.sdk.chain.anvil import ANVIL_STATES_PREFIX, dev_account
from supernet.sdk.devnet.network import (
    DEFAULT_STATE_DIR,
    DEVNET_MODEL_MANIFEST,
    Devnet,
    DevnetConfig,
    pulled_model_manifest,
    read_pid_file,
)
from supernet.sdk.devnet.scenario import run_scenario
from supernet.sdk.errors import SupernetError

app = typer.Typer(
    help="Local devnet: Anvil + contracts + sample nodes, validators and users.", no_args_is_help=True
)
# Piped output (a log, `| less`) gets no terminal width: keep addresses on one line anyway.
console = Console(width=None if sys.stdout.isatty() else 160)

StateDir = typer.Option(DEFAULT_STATE_DIR, "--state-dir", help="Where the devnet keeps its files.")


def _roles_table(net: Devnet) -> Table:
    sm, pay = net.contracts.service_manager, net.contracts.payments
    table = Table(title=f"Supernet devnet on {net.anvil.url} (chain {net.contracts.deployment.chain_id})")
    for col in ("role", "account", "address", "stake / deposit", "URL"):
        table.add_column(col, overflow="fold", no_wrap=col == "address")
    for a in net.actors:
        if a.role in ("node", "validator"):
            amount = sm.get_operator(a.address).stake
        elif a.role == "user":  # the user's channels to every node
            amount = sum(pay.channel(a.address, n.address).balance for n in net.by_role("node"))
        else:
            amount = 0
        table.add_row(
            a.role, f"dev #{a.index}", a.address, f"{amount / 10**18:,.2f} ETH" if amount else "", a.url
        )
    return table


@app.command()
def up(
    port: int = typer.Option(8545, "--port", help="Anvil's port (0: any free port)."),
    nodes: int = typer.Option(2, "--nodes", min=1),
    validators: int = typer.Option(3, "--validators", min=1),
    users: int = typer.Option(3, "--users", min=1),
    block_time: float = typer.Option(
        1.0, "--block-time", help="Seconds between blocks (validators' sampling seeds need new blocks)."
    ),
    state_dir: Path = StateDir,
) -> None:
    """Start Anvil, deploy, register and fund the sample operators; stay up until Ctrl-C."""
    cfg = DevnetConfig(
        port=port,
        nodes=nodes,
        validators=validators,
        users=users,
        state_dir=state_dir,
        block_time=block_time if block_time > 0 else None,
        # The real manifest when the default model is pulled, so nodes serving it match the registry.
        model_manifest=pulled_model_manifest() or DEVNET_MODEL_MANIFEST,
    )
    try:
        net = Devnet.start(cfg)
    except (SupernetError, OSError) as exc:
        console.print(f"[red]devnet failed to start:[/red] {exc}")
        raise typer.Exit(1) from exc
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        net.write_state()
        console.print(_roles_table(net))
        for name, addr in net.contracts.deployment.contracts.items():
            console.print(f"{name:15} {addr}")
        console.print(
            f"RPC {net.anvil.url}  ·  state in {state_dir}/  ·  Ctrl-C or `supernet devnet down` to stop"
        )
        while not stop.wait(1.0):
            if not net.anvil.running():
                console.print("[red]anvil exited[/red]; see " + str(state_dir / "anvil.log"))
                break
    finally:
        net.stop()
        for s, h in previous.items():
            signal.signal(s, h)
        console.print("devnet stopped")


@app.command()
def key(index: int = typer.Argument(..., min=0, help="Dev account index (the table's `dev #N`).")) -> None:
    """Print the private key of Anvil's dev account N (public test keys: never hold value with them)."""
    typer.echo("0x" + bytes(dev_account(index).key).hex())


@app.command()
def down(state_dir: Path = StateDir, timeout: float = typer.Option(15.0, help="Seconds to wait.")) -> None:
    """Stop the devnet started by `supernet devnet up` (via its pid file)."""
    info = read_pid_file(state_dir)
    if not info:
        console.print(f"no devnet running (no {state_dir / 'devnet.pid'})")
        raise typer.Exit(0)
    pid_file = state_dir / "devnet.pid"
    up_pid, anvil_pid = int(info.get("pid") or 0), int(info.get("anvilPid") or 0)
    # `up` stops Anvil and removes the pid file itself; signal Anvil directly only if `up` is gone.
    if not (up_pid and _signal(up_pid, signal.SIGTERM) and _wait(lambda: not pid_file.exists(), timeout)):
        if (
            anvil_pid
            and _signal(anvil_pid, signal.SIGTERM)
            and not _wait(lambda: not _alive(anvil_pid), timeout)
        ):
            console.print(f"[red]anvil (pid {anvil_pid}) did not stop within {timeout:.0f} s[/red]")
            raise typer.Exit(1)
        # `up` did not get to remove Anvil's states of older blocks (see supernet.sdk.chain.anvil)
        states = Path(str(info.get("anvilStates") or ""))
        # only an Anvil states folder where `Anvil` makes them, never a folder the pid file names
        if states.name.startswith(ANVIL_STATES_PREFIX) and states.parent == Path(tempfile.gettempdir()):
            shutil.rmtree(states, ignore_errors=True)
    (state_dir / "devnet.pid").unlink(missing_ok=True)
    console.print("devnet stopped")


@app.command()
def scenario(port: int = typer.Option(0, "--port", help="Anvil's port (0: any free port).")) -> None:
    """Run the on-chain scenario on a fresh Anvil and print each step, then stop."""
    cfg = DevnetConfig(
        port=port, state_dir=Path(os.environ.get("TMPDIR", "/tmp")) / f"supernet-scenario-{os.getpid()}"
    )
    try:
        net = Devnet.start(cfg, populated=False)
    except (SupernetError, OSError) as exc:
        console.print(f"[red]devnet failed to start:[/red] {exc}")
        raise typer.Exit(1) from exc
    try:
        run_scenario(net, console)
    except SupernetError as exc:
        console.print(f"[red]scenario failed:[/red] {exc}")
        raise typer.Exit(1) from exc
    finally:
        net.stop()


@app.command()
def demo(
    tasks: int = typer.Option(20, help="Paid tasks the users submit."),
    fault: str = typer.Option(
        "answer:0.5",
        help="How the faulty node cheats, KIND:RATE (default: made-up answers with consistent receipts).",
    ),
    validators: int = typer.Option(3, help="Validators to run."),
    timeout: float = typer.Option(280.0, help="Give up after this many seconds."),
    keep: Path | None = typer.Option(None, help="Keep logs and state in this folder."),
) -> None:
    """A full local network: two honest nodes, one faulty node, validators, paying users.

    Exits 0 only if the faulty node was slashed, the honest nodes were not, and users of
    proven-faulty tasks were refunded.
    """
    from supernet.sdk.devnet.demo import DemoConfig, run_demo

    cfg = DemoConfig(tasks=tasks, fault=fault, validators=validators, timeout_s=timeout, keep_dir=keep)
    try:
        ok = run_demo(cfg, console)
    except SupernetError as exc:
        console.print(f"[red]demo failed:[/red] {exc}")
        raise typer.Exit(1) from exc
    console.print("[bold green]demo passed[/]" if ok else "[bold red]demo failed[/]")
    raise typer.Exit(0 if ok else 1)


def _signal(pid: int, sig: int) -> bool:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, exited but not yet reaped, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _wait(done: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True
