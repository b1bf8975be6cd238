"""``supernet node ...``: run a node, print its OpenAPI spec, write a sample config."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Annotated

import typer
from supernet.node.service.config import NodeSettings
from supernet.sdk.cli_options import deployment_option, rpc_option, store_option
from supernet.sdk.money_cli import add_operator_commands

app = typer.Typer(
    name="node", help="Run a Supernet node (kernel, LLM engine, public API).", no_args_is_help=True
)


@app.command()
def run(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="TOML config (see node/node.example.toml).")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Override api.host.")] = None,
    port: Annotated[int | None, typer.Option(help="Override api.port.")] = None,
    rpc: Annotated[str | None, rpc_option()] = None,
    deployment: Annotated[Path | None, deployment_option()] = None,
    store: Annotated[str | None, store_option()] = None,
    fault: Annotated[
        list[str] | None, typer.Option(help="Cheat on purpose, KIND:RATE (repeatable; tests/demo).")
    ] = None,
    fault_seed: Annotated[int, typer.Option(help="Seed deciding which calls a fault hits.")] = 0,
) -> None:
    """Run the node until SIGINT/SIGTERM. ``--rpc`` and ``--deployment`` put the node on that
    chain (the flags and environment names every command shares: `supernet.sdk.cli_options`); so
    does either of them, or of ``[chain] rpc_url`` / ``deployment`` (TOML, ``$SUPERNET_CHAIN__*``),
    and then both are required: half of them is refused, never dev mode."""
    overrides: dict[str, dict[str, object]] = {}
    api: dict[str, object] = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    if api:
        overrides["api"] = api
    chain: dict[str, object] = {k: v for k, v in (("rpc_url", rpc), ("deployment", deployment)) if v}
    if chain:
        overrides["chain"] = chain
    if store is not None:
        overrides["store"] = {"url": store}
    # the flags as the highest source, merged key by key with the environment and the TOML before
    # anything is validated: whether the chain is on is decided on all of them together
    settings = NodeSettings.load(config, **overrides)
    logging.getLogger().setLevel(settings.log_level)
    asyncio.run(_serve(settings, fault or [], fault_seed))


async def _serve(settings: NodeSettings, faults: list[str], fault_seed: int) -> None:
    from supernet.node.faults import FaultInjector
    from supernet.node.service.app import build_node

    injector = FaultInjector.from_cli(faults, seed=fault_seed) if faults else None
    service, resources = await build_node(settings, injector)
    try:
        await service.serve()
    finally:
        await resources.close()


@app.command()
def openapi(
    out: Annotated[Path | None, typer.Option(help="Write to this file instead of stdout.")] = None,
) -> None:
    """Print the node API's OpenAPI document."""
    from supernet.node.service.api import create_app

    text = json.dumps(create_app().openapi(), indent=2, sort_keys=True) + "\n"
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text)


add_operator_commands(app, "node", "SUPERNET_IDENTITY__PRIVATE_KEY")
