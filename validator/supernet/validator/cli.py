"""``supernet validator``: run a validator, inspect its progress.

    supernet validator run --deployment deployment.json --keystore validator.json \\
        --rpc http://127.0.0.1:8545 --store http://127.0.0.1:5001 --db validator.sqlite \\
        [--config validator.toml]
    supernet validator status --db validator.sqlite

The key comes from a keystore (``--keystore``, passphrase from ``--password-file`` or
``$SUPERNET_KEY_PASSWORD``), a key file (``--key-file``, mode 0600) or ``$SUPERNET_VALIDATOR_CHAIN__KEY``;
never from the command line, which other users of the machine can read in the process list.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from pathlib import Path
from typing import Annotated

import typer
from supernet.sdk.cli_options import deployment_option, rpc_option, store_option
from supernet.sdk.key_options import KeyFile, Keystore, PasswordFile, key_option
from supernet.sdk.money_cli import add_operator_commands
from supernet.validator.config import ValidatorSettings

app = typer.Typer(
    help="Validator: sample committed receipts, re-check them, challenge and vote.", no_args_is_help=True
)


@app.command()
def run(
    config: Path | None = typer.Option(None, "--config", help="TOML settings file."),
    rpc: Annotated[str | None, rpc_option()] = None,
    deployment: Annotated[Path | None, deployment_option()] = None,
    key: Annotated[str | None, key_option("SUPERNET_VALIDATOR_CHAIN__KEY", "Validator")] = None,
    key_file: KeyFile = None,
    keystore: Keystore = None,
    password_file: PasswordFile = None,
    store: Annotated[str | None, store_option()] = None,
    db: Path | None = typer.Option(None, "--db", help="SQLite file of the validator's progress."),
    model: str | None = typer.Option(None, "--model", help="Model name or path to re-score with."),
    threads: int | None = typer.Option(None, "--threads", help="torch intra-op threads."),
    stake: int | None = typer.Option(
        None, "--register-stake", help="Register as validator with this stake (wei)."
    ),
    no_challenge: bool = typer.Option(False, "--no-challenge", help="Verify and vote, but never challenge."),
    poll: float | None = typer.Option(None, "--poll", help="Seconds between steps (at most 60)."),
    http_port: int | None = typer.Option(
        None,
        "--http-port",
        help="Serve /healthz and /metrics on this port (127.0.0.1; [http_host] to change).",
    ),
) -> None:
    """Run a validator until interrupted (SIGINT / SIGTERM stop it cleanly)."""
    chain = {
        "rpc_url": rpc,
        "deployment": deployment,
        "key": key,
        "key_file": key_file,
        "keystore": keystore,
        "password_file": password_file,
    }
    settings = ValidatorSettings.from_toml(
        config,
        chain=chain,
        model={"name": model, "threads": threads},
        store_url=store,
        db_path=db,
        register_stake_wei=stake,
        challenge=False if no_challenge else None,
        poll_interval_s=poll,
        http_port=http_port,
    )
    asyncio.run(_serve(settings))


async def _serve(settings: ValidatorSettings) -> None:
    from supernet.sdk.errors import SupernetError
    from supernet.validator.service import Validator

    validator = Validator(settings)
    try:
        await validator.setup()
    except SupernetError as exc:  # bad deployment file, wrong chain, unreachable store ...
        typer.echo(f"validator cannot start: {exc}", err=True)
        raise typer.Exit(1) from None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, validator.stop)
    try:
        await validator.run_forever()
    finally:
        await validator.cleanup()


@app.command()
def status(
    db: Path = typer.Option(Path("validator.sqlite"), "--db", help="SQLite file of the validator."),
) -> None:
    """Print the validator's progress (cursor, batches, verdicts, challenges) as JSON."""
    from supernet.validator.db import Database

    if not db.is_file():  # opening would create an empty database and report zeros
        typer.secho(
            f"error: no validator database at {db} (pass the --db that `validator run` uses)", err=True
        )
        raise typer.Exit(1)
    d = Database(db)
    checks = d.checks()
    doc = {
        "cursor": d.cursor(default=0),
        "batches": len(d.batch_ids()),
        "pending": [b.batch_id for b in d.pending_batches()],
        "checked": len(checks),
        # entries whose window closed while checking them kept failing here: no verdict of ours
        "unchecked": [{"batch": b, "index": i} for b, i in d.unchecked()],
        # faults found too late to challenge (their window had closed)
        "unchallenged": [{"batch": b, "index": i} for b, i in d.unchallenged()],
        "faulty": [
            {
                "batch": c.batch_id,
                "index": c.index,
                "checks": c.kinds,
                "evidence": c.evidence_cid,
                "challenge": c.challenge_id,
            }
            for c in checks
            if not c.ok
        ],
        "challenges": [
            {
                "id": c.challenge_id,
                "status": c.status,
                "myVote": c.my_vote,
                "reveal": c.reveal if c.my_vote is not None or c.status != "open" else None,
                "fraud": c.fraud,
            }
            for c in d.challenges()
        ],
    }
    typer.echo(json.dumps(doc, indent=2))


add_operator_commands(app, "validator", "SUPERNET_VALIDATOR_CHAIN__KEY")
