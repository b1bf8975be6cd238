"""``supernet store``: serve the embedded content store, add and read files.

>>> from typer.testing import CliRunner
>>> from supernet.sdk.store.cli import app
>>> "serve" in CliRunner().invoke(app, ["--help"]).output
True
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from supernet.sdk.store.client import DEFAULT_STORE_URL, STORE_URL_ENV, StoreClient

STORE_PATH_ENV = "SUPERNET_STORE_PATH"
DEFAULT_STORE_PATH = Path.home() / ".supernet" / "store"

log = logging.getLogger(__name__)
app = typer.Typer(
    help="Content store: the embedded IPFS-compatible store and file commands.", no_args_is_help=True
)

UrlOption = Annotated[
    str, typer.Option("--url", envvar=STORE_URL_ENV, help="Store RPC API (Kubo or embedded).")
]


@app.callback()
def _store() -> None:
    """Content store (Kubo RPC API, or the embedded store for the devnet)."""


@app.command()
def serve(
    path: Annotated[
        Path, typer.Option("--path", envvar=STORE_PATH_ENV, help="Store directory.")
    ] = DEFAULT_STORE_PATH,
    host: Annotated[
        str, typer.Option(help="Address to bind; keep it on loopback like Kubo's API.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (Kubo's RPC API uses 5001).")] = 5001,
) -> None:
    """Serve the embedded store over the Kubo RPC subset the SDK uses."""
    import uvicorn
    from supernet.sdk.store.embedded import EmbeddedStore, create_app
    from supernet.sdk.store.server import allowed_hosts

    if not _is_loopback(host):
        log.warning(
            "binding the store API to %s: it has no authentication, keep it off public networks", host
        )
    store = EmbeddedStore(path)
    typer.echo(f"embedded store at {store.path}, RPC API on http://{host}:{port}/api/v0", err=True)
    app = create_app(store, hosts=allowed_hosts(host))  # DNS rebinding: only the store's own names
    uvicorn.run(app, host=host, port=port, log_level="warning")


@app.command()
def add(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="File to add.")],
    url: UrlOption = DEFAULT_STORE_URL,
    pin: Annotated[bool, typer.Option(help="Pin the file.")] = True,
) -> None:
    """Add a file (chunked, docs/protocol.md) and print its root CID."""

    async def run() -> str:
        async with StoreClient(url) as store:
            return await store.add_file(file.read_bytes(), pin=pin)

    typer.echo(asyncio.run(run()))


@app.command()
def cat(
    cid: Annotated[str, typer.Argument(help="Root CID of a file.")], url: UrlOption = DEFAULT_STORE_URL
) -> None:
    """Write a file's bytes to stdout, every chunk checked against its CID."""

    async def run() -> bytes:
        async with StoreClient(url) as store:
            return await store.cat(cid)

    sys.stdout.buffer.write(asyncio.run(run()))
    sys.stdout.buffer.flush()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


if __name__ == "__main__":  # pragma: no cover
    app()
