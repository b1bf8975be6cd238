"""The options every command that talks to the network shares, under one name each.

``supernet node run``, ``supernet validator run``, ``supernet task ...``, ``supernet account ...``
and ``supernet explorer`` take the chain, the deployment and the content store with the same flags
and read the same environment variables, so one shell setup serves every role:

========================== ===================== =============================================
flag                       environment           what
========================== ===================== =============================================
``--rpc``                  ``SUPERNET_RPC_URL``  the chain's JSON-RPC URL
``--deployment``           ``SUPERNET_DEPLOYMENT`` the deployment file (contract addresses)
``--store``                ``SUPERNET_STORE_URL``  the content store (Kubo RPC or embedded)
========================== ===================== =============================================

Keys differ by role on purpose (``SUPERNET_USER_KEY``, ``SUPERNET_IDENTITY__PRIVATE_KEY``,
``SUPERNET_VALIDATOR_CHAIN__KEY``, or ``--key-file``/``--keystore``): one shell should not hold a
node's key where a user's is expected.
"""

from __future__ import annotations

from typing import Any

import typer

RPC_ENV = "SUPERNET_RPC_URL"
DEPLOYMENT_ENV = "SUPERNET_DEPLOYMENT"
STORE_ENV = "SUPERNET_STORE_URL"
DEPLOYMENT_HELP = "Deployment JSON file (addresses)."
STORE_HELP = "Content-store URL (Kubo RPC or embedded)."


def rpc_option(*also: str) -> Any:
    """``--rpc`` (``$SUPERNET_RPC_URL``, then any older names in ``also``), for ``Annotated``."""
    return typer.Option("--rpc", envvar=[RPC_ENV, *also], help="Chain JSON-RPC URL.")


def deployment_option(*also: str) -> Any:
    """``--deployment`` (``$SUPERNET_DEPLOYMENT``, then ``also``), for ``Annotated``."""
    return typer.Option(
        "--deployment", envvar=[DEPLOYMENT_ENV, *also], help="Deployment JSON file (addresses)."
    )


def store_option(*also: str) -> Any:
    """``--store`` (``$SUPERNET_STORE_URL``, then ``also``), for ``Annotated``."""
    return typer.Option(
        "--store", envvar=[STORE_ENV, *also], help="Content-store URL (Kubo RPC or embedded)."
    )


def amount_argument(text: str, name: str = "amount") -> int:
    """An amount of wei from a command line (``0.01ether``, ``100gwei``, ``5000``), or a usage
    error naming ``name``: every amount is parsed before the command connects or sends anything."""
    from supernet.sdk.units import AmountError, parse_amount

    try:
        return parse_amount(text)
    except AmountError as exc:
        raise typer.BadParameter(str(exc), param_hint=name) from None
