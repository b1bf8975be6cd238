"""The key options of every command that signs (``supernet task``, ``contracts``, ``validator``,
``keys``): a key file, a keystore, or an environment variable, never a raw key on the command line
(``ps`` shows every process's arguments to every user of the machine; `supernet.sdk.keys`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from eth_account.signers.local import LocalAccount
from supernet.sdk.keys import KeyLoadError, load_account

KeyFile = Annotated[
    Path | None, typer.Option("--key-file", help="File holding the hex private key (mode 0600).")
]
Keystore = Annotated[
    Path | None,
    typer.Option(
        "--keystore",
        help="Ethereum V3 keystore (as geth and `cast wallet` write); passphrase from --password-file "
        "or $SUPERNET_KEY_PASSWORD.",
    ),
]
PasswordFile = Annotated[
    Path | None, typer.Option("--password-file", help="File holding the keystore's passphrase (mode 0600).")
]


def key_option(envvar: str, whose: str) -> Any:
    """The ``--key`` option of a command: a hex key read from ``envvar`` only (`env_only`)."""
    return typer.Option(
        "--key",
        envvar=envvar,
        callback=env_only,
        help=f"{whose} private key (0x-hex), from ${envvar} only (never typed on the command line).",
    )


def env_only(ctx: typer.Context, param: typer.CallbackParam, value: str | None) -> str | None:
    """Option callback: accept the value from the option's environment variable, refuse it typed on
    the command line."""
    source = ctx.get_parameter_source(param.name) if param.name else None
    if value and getattr(source, "name", None) == "COMMANDLINE":  # typer may bundle its own click
        env = param.envvar if isinstance(param.envvar, str) else "the environment variable"
        raise typer.BadParameter(
            f"a raw key on the command line is visible to every user in `ps`: set ${env} instead, "
            "or use --key-file or --keystore"
        )
    return value


def account(
    key: str | None, key_file: Path | None, keystore: Path | None, password_file: Path | None
) -> LocalAccount:
    """The signer from whichever single source was given (a command-line error otherwise)."""
    try:
        return load_account(
            key=key or None, key_file=key_file, keystore=keystore, password_file=password_file
        )
    except KeyLoadError as exc:
        raise typer.BadParameter(str(exc)) from None
