"""``supernet task ...``: submit a paid task, fetch and verify its receipt.

Chain settings come from options or the environment: ``SUPERNET_RPC_URL``,
``SUPERNET_DEPLOYMENT`` (deployment JSON), ``SUPERNET_USER_KEY`` (the user's private key; never
pass a real key on the command line, where other users can see it in the process list).

Everything a node wrote (the streamed answer, check details, its error messages) is printed
through `supernet.sdk.display.shown`: terminal control characters in it are shown escaped, never
obeyed (``task submit --raw`` prints the checked answer's exact bytes). ``task submit`` (verifying,
the default) and ``task verify`` end with the same exit statuses: 0 verified, 1 an error, 2 a check
failed, 3 pending.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from supernet.sdk.cli_errors import explain
from supernet.sdk.cli_options import DEPLOYMENT_ENV, RPC_ENV, amount_argument
from supernet.sdk.client import Client, ClientError
from supernet.sdk.client.types import DEFAULT_PRECISIONS
from supernet.sdk.client.verify import VerificationReport
from supernet.sdk.display import shown
from supernet.sdk.key_options import KeyFile, Keystore, PasswordFile, account, key_option

app = typer.Typer(
    name="task", help="Submit paid tasks to Supernet nodes and verify receipts.", no_args_is_help=True
)

Rpc = Annotated[str, typer.Option("--rpc", envvar=RPC_ENV, help="Chain JSON-RPC URL.")]
Dep = Annotated[Path, typer.Option("--deployment", envvar=DEPLOYMENT_ENV, help="Deployment JSON file.")]
Key = Annotated[str, key_option("SUPERNET_USER_KEY", "User's")]
StateDir = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        envvar="SUPERNET_STATE_DIR",
        help="Client state (nonces, vouchers, tasks; yours alone, 0700); default ~/.supernet.",
    ),
]


def _client(
    rpc: str,
    deployment: Path,
    signer: tuple[str, Path | None, Path | None, Path | None],
    state_dir: Path | None,
    precisions: tuple[str, ...] = DEFAULT_PRECISIONS,
) -> Client:
    return Client.connect(rpc, deployment, account(*signer), state_dir=state_dir, precisions=precisions)


def _run(coro: Any) -> Any:
    try:
        return asyncio.run(coro)
    except ClientError as exc:
        typer.secho(f"error: {explain(exc) or shown(str(exc), one_line=True)}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None


@app.command()
def submit(
    text: Annotated[str, typer.Argument(help="The task input (a JSON object if --json).")],
    rpc: Rpc = "http://127.0.0.1:8545",
    deployment: Dep = Path("deployment.json"),
    key: Key = "",
    key_file: KeyFile = None,
    keystore: Keystore = None,
    password_file: PasswordFile = None,
    state_dir: StateDir = None,
    model: Annotated[str | None, typer.Option(help="Model name or 0x id.")] = None,
    allow_bfloat16: Annotated[
        bool,
        typer.Option(
            "--allow-bfloat16",
            help="Also sign model ids computed in bfloat16, whose wider bounds let a node choose among "
            "near-tied answers (docs/security-parameters.md); by default they are refused.",
        ),
    ] = False,
    agent: Annotated[str, typer.Option(help="Agent id.")] = "chat",
    node: Annotated[str | None, typer.Option(help="Node URL (default: discover on chain).")] = None,
    max_fee: Annotated[int | None, typer.Option(help="Most wei to pay (default 1e15).")] = None,
    offer: Annotated[
        str | None,
        typer.Option(help="Pay this fee instead of the node's price, for priority (e.g. 3000gwei)."),
    ] = None,
    deposit: Annotated[int, typer.Option(help="Deposit at least this many wei when topping up.")] = 10**16,
    as_json: Annotated[bool, typer.Option("--json", help="Parse TEXT as a JSON object.")] = False,
    verify: Annotated[bool, typer.Option(help="Wait for the commit and verify the receipt.")] = True,
    raw: Annotated[
        bool,
        typer.Option(
            "--raw",
            help="Print the answer's exact bytes once it passed the answer check, nothing else on "
            "stdout (no streaming; control characters not escaped; the other lines go to stderr).",
        ),
    ] = False,
) -> None:
    """Submit a task, stream its answer, then verify its receipt.

    The answer is shown as it streams, control characters escaped (--raw: its exact bytes).

    Exit status: 0 answered (and verified), 1 an error; verifying (the default), as `task verify`:
    2 a check failed, 3 pending (not committed on chain yet)."""
    task_input: Any = json.loads(text) if as_json else text
    offer_wei = None if offer is None else amount_argument(offer, "--offer")  # before any connection

    async def go() -> None:
        precisions = (*DEFAULT_PRECISIONS, "bfloat16") if allow_bfloat16 else DEFAULT_PRECISIONS
        signer = (key, key_file, keystore, password_file)
        async with _client(rpc, deployment, signer, state_dir, precisions) as client:
            result = await client.submit_task(
                task_input,
                agent=agent,
                model=model,
                node_url=node,
                max_fee=max_fee,
                deposit=deposit,
                on_token=None if raw else _echo,
                offer=offer_wei,
            )
            if raw:
                typer.echo(result.output.encode("utf-8", "surrogatepass"), nl=False)
            typer.echo(
                f"\ntask {result.task_id} on {shown(result.node, one_line=True)} ({result.fee} wei)", err=raw
            )
            if verify:
                _conclude(await client.verify(result.task_id), err=raw)

    _run(go())


@app.command()
def receipt(
    task_id: str,
    rpc: Rpc = "http://127.0.0.1:8545",
    deployment: Dep = Path("deployment.json"),
    key: Key = "",
    key_file: KeyFile = None,
    keystore: Keystore = None,
    password_file: PasswordFile = None,
    state_dir: StateDir = None,
    node: Annotated[str | None, typer.Option(help="Node URL (default: from the client state).")] = None,
) -> None:
    """Print a task's receipt (with its Merkle proof once committed)."""

    async def go() -> None:
        async with _client(rpc, deployment, (key, key_file, keystore, password_file), state_dir) as client:
            typer.echo((await client.receipt(task_id, node)).model_dump_json(indent=2))

    _run(go())


@app.command("verify")
def verify_cmd(
    task_id: str,
    rpc: Rpc = "http://127.0.0.1:8545",
    deployment: Dep = Path("deployment.json"),
    key: Key = "",
    key_file: KeyFile = None,
    keystore: Keystore = None,
    password_file: PasswordFile = None,
    state_dir: StateDir = None,
    wait: Annotated[float, typer.Option(help="Seconds to wait for the commit.")] = 60.0,
    node: Annotated[
        str | None, typer.Option(help="Node URL, for a task this client state does not know.")
    ] = None,
) -> None:
    """Verify a task's receipt: signatures, hashes, trace and Merkle inclusion on chain.

    Exit status: 0 verified, 2 a check failed, 3 pending (everything checks out but the receipt is
    not committed on chain yet: verify again later)."""

    async def go() -> None:
        async with _client(rpc, deployment, (key, key_file, keystore, password_file), state_dir) as client:
            _conclude(await client.verify(task_id, node_url=node, wait_committed=wait))

    _run(go())


@app.command()
def omission(
    task_id: str,
    rpc: Rpc = "http://127.0.0.1:8545",
    deployment: Dep = Path("deployment.json"),
    key: Key = "",
    key_file: KeyFile = None,
    keystore: Keystore = None,
    password_file: PasswordFile = None,
    state_dir: StateDir = None,
) -> None:
    """Claim that the node broke its signed promise to commit a task's receipt (after the promised
    time; `task verify` says when): it must show the receipt in one of its batches or be slashed."""

    async def go() -> None:
        async with _client(rpc, deployment, (key, key_file, keystore, password_file), state_dir) as client:
            claim = await client.claim_omission(task_id)
            typer.echo(f"omission claim {claim} opened: the node must show the receipt or be slashed")

    _run(go())


@app.command()
def refunds(
    rpc: Rpc = "http://127.0.0.1:8545",
    deployment: Dep = Path("deployment.json"),
    key: Key = "",
    key_file: KeyFile = None,
    keystore: Keystore = None,
    password_file: PasswordFile = None,
    state_dir: StateDir = None,
    withdraw: Annotated[bool, typer.Option(help="Then pull everything claimable to your account.")] = True,
) -> None:
    """Claim the refund of every task of yours that a fraud verdict proved faulty (your signed
    request proves the task is yours), then withdraw it."""

    async def go() -> None:
        async with _client(rpc, deployment, (key, key_file, keystore, password_file), state_dir) as client:
            claimed = await client.claim_refunds()
            for c in claimed:
                typer.echo(f"task {c.task_id}: challenge {c.challenge_id} refunded {c.amount} wei")
            typer.echo(f"{len(claimed)} refund(s) claimed, {sum(c.amount for c in claimed)} wei")
            tm = client.contracts.task_manager
            pending = await asyncio.to_thread(tm.claimable, client.account.address)
            if withdraw and pending:
                await asyncio.to_thread(tm.withdraw)
                typer.echo(f"withdrew {pending} wei")

    _run(go())


def _echo(text: str) -> None:
    """A piece of the streamed answer, as a terminal may show it (the node wrote it)."""
    sys.stdout.write(shown(text))
    sys.stdout.flush()


def _conclude(report: VerificationReport, *, err: bool = False) -> None:
    """Print ``report`` and end as `task verify` does (shared by `task submit`): exit status 0
    verified, 2 a check failed, 3 pending (everything checks out but the commit on chain)."""
    _print_report(report, err=err)
    if report.pending:
        raise typer.Exit(3)
    if not report.ok:
        raise typer.Exit(2)


def _print_report(report: VerificationReport, *, err: bool = False) -> None:
    """One line per check; names and details shown escaped on one line (some are the node's)."""
    for check in report.checks:
        if check.ok:
            mark = typer.style("ok  ", fg=typer.colors.GREEN)
        elif report.pending:  # only "committed on chain" is missing: not a failure yet
            mark = typer.style("wait", fg=typer.colors.YELLOW)
        else:
            mark = typer.style("FAIL", fg=typer.colors.RED)
        name, detail = shown(check.name, one_line=True), shown(str(check.detail), one_line=True)
        typer.echo(f"  {mark} {name}: {detail}", err=err)
    if report.ok:
        typer.echo("receipt verified", err=err)
    elif report.pending:
        typer.echo(
            f"receipt checks pass so far; it is not committed on chain yet (pending): run "
            f"`supernet task verify {shown(report.task_id, one_line=True)}` again in a little while",
            err=err,
        )
    else:
        typer.echo("receipt NOT verified", err=err)
