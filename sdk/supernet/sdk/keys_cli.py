"""``supernet keys``: create and inspect keystores.

supernet keys new --keystore node.json [--password-file pass.txt]     # a fresh key
supernet keys new --keystore node.json --key-file old.key              # encrypt an existing key
supernet keys address --keystore node.json [--password-file pass.txt]
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from eth_account import Account
from supernet.sdk.key_options import KeyFile, PasswordFile, account
from supernet.sdk.keys import KeyLoadError, passphrase, write_keystore

app = typer.Typer(help="Create and inspect Ethereum V3 keystores.", no_args_is_help=True)

Target = Annotated[Path, typer.Option("--keystore", help="The keystore file (written with mode 0600).")]


@app.command()
def new(keystore: Target, password_file: PasswordFile = None, key_file: KeyFile = None) -> None:
    """Write a keystore holding a new key (or the key of --key-file); prints its address."""
    try:
        password = passphrase(password_file)
        acct = account(None, key_file, None, None) if key_file is not None else Account.create()
        write_keystore(keystore, acct, password)
    except KeyLoadError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    typer.echo(acct.address)


@app.command()
def address(keystore: Target, password_file: PasswordFile = None) -> None:
    """Decrypt a keystore and print its address (checks the passphrase)."""
    typer.echo(account(None, None, keystore, password_file).address)
