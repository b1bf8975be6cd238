"""The one `supernet` command line.

Each installed distribution contributes subcommand groups through the ``supernet.cli``
entry-point group (``supernet contracts``, ``supernet node``, ``supernet validator`` ...),
so the SDK alone gives a working CLI and installing the node adds its commands.
"""

from __future__ import annotations

import logging
import os
from importlib.metadata import entry_points

import typer

app = typer.Typer(
    name="supernet",
    help="Supernet: a decentralized network of staked AI nodes with verifiable receipts.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at debug level.")) -> None:
    level = logging.DEBUG if verbose else getattr(logging, os.environ.get("SUPERNET_LOG", "INFO").upper())
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _register_subcommands() -> None:
    for ep in sorted(entry_points(group="supernet.cli"), key=lambda e: e.name):
        try:
            sub = ep.load()
        except ImportError as exc:  # a half-installed distribution should not break the rest
            help_text = f"(unavailable: {exc})"
            app.command(ep.name, help=help_text)(lambda: (_ for _ in ()).throw(typer.Exit(1)))
            continue
        app.add_typer(sub, name=ep.name)


def main() -> None:
    _register_subcommands()
    app()


if __name__ == "__main__":
    main()
