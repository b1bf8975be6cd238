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

import re
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


_HEX_ADDRESS = re.compile(r"^0[xX][0-9a-fA-F]{40}$")


def address_argument(value: str) -> str:
    """An account or contract address from a command line, checksummed (EIP-55) before the command
    connects or sends anything: all-lowercase or all-uppercase hex (as explorers, logs and ``cast``
    print it) is taken and checksummed; mixed case must carry the right checksum (a wrong one is
    the typo a checksum exists to catch); a wrong length, non-hex or a name is refused.

    The parser of every address argument and option (``typer.Argument(parser=address_argument)``),
    parsed before the command runs: a refusal is a usage error (exit 2) naming the parameter.

    Raises:
        typer.BadParameter: not a hex address, or a mixed-case one with a bad checksum.
    """
    from eth_utils import to_checksum_address

    text = str(value).strip()
    if not _HEX_ADDRESS.match(text):
        raise typer.BadParameter(f"{value!r} is not an address: 0x and 40 hex digits")
    digits = text[2:]
    checksummed = to_checksum_address("0x" + digits.lower())
    if digits not in (digits.lower(), digits.upper()) and digits != checksummed[2:]:
        raise typer.BadParameter(
            f"{text} has a bad EIP-55 checksum (its mix of upper and lower case): a mistyped "
            "character? copy the address again"
        )
    return checksummed
