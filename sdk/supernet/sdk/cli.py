"""The one `supernet` command line.

Each installed distribution contributes subcommand groups through the ``supernet.cli``
entry-point group (``supernet contracts``, ``supernet node``, ``supernet validator`` ...),
so the SDK alone gives a working CLI and installing the node adds its commands.
"""

from __future__ import annotations

import logging
import os
import sys
from importlib.metadata import entry_points, version

import typer
from supernet.sdk.logs import configure

app = typer.Typer(
    name="supernet",
    help="Supernet: a decentralized network of staked AI nodes with verifiable receipts.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"supernet {version('supernet-sdk')}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at debug level."),
    _show_version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    log_format: str = typer.Option(
        "text",
        "--log-format",
        envvar="SUPERNET_LOG_FORMAT",
        help="text, or json (one object per line, for log pipelines).",
    ),
) -> None:
    level = logging.DEBUG if verbose else getattr(logging, os.environ.get("SUPERNET_LOG", "INFO").upper())
    try:
        configure(level, log_format)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--log-format") from None
    if not verbose:
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per HTTP request is noise


_GROUP_HELP = {
    "contracts": "Deploy and inspect the protocol contracts.",
    "devnet": "Run a local network on Anvil (up, down, scenario, demo).",
    "store": "Serve or use a content store (embedded or Kubo).",
    "task": "Submit paid tasks and verify their receipts.",
    "keys": "Create and inspect Ethereum V3 keystores.",
    "account": "Your payment channels to nodes: balance, deposit, withdraw.",
    "node": "Run an intelligent node.",
    "model": "Pull and list models.",
    "validator": "Run a validator.",
    "explorer": "Index the chain and serve the network explorer (web pages and JSON API).",
}


def _register_subcommands(argv: list[str]) -> None:
    """Load only the subcommand group being run: the node's groups import torch (seconds)."""
    wanted = _group_of(argv)
    for ep in sorted(entry_points(group="supernet.cli"), key=lambda e: e.name):
        if ep.name != wanted:
            # Listed in `supernet --help` without importing it.
            app.command(ep.name, help=_GROUP_HELP.get(ep.name, ""), add_help_option=False)(_not_loaded)
            continue
        app.add_typer(ep.load(), name=ep.name)


_ROOT_OPTIONS_WITH_VALUE = {"--log-format"}


def _group_of(argv: list[str]) -> str | None:
    """The subcommand group named on the command line (root options and their values skipped)."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in _ROOT_OPTIONS_WITH_VALUE:
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


def _not_loaded() -> None:  # pragma: no cover - only reachable through --help listings
    raise typer.Exit(1)


def main() -> None:
    _register_subcommands(sys.argv[1:])
    try:
        app()
    except Exception as exc:
        from supernet.sdk.cli_errors import explain

        line = explain(exc)
        if line is None or "-v" in sys.argv or "--verbose" in sys.argv:
            raise
        typer.secho(f"error: {line}", fg=typer.colors.RED, err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
