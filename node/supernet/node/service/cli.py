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
    """Run the node until SIGINT/SIGTERM. ``--rpc`` with ``--deployment`` puts the node on that
    chain (the flags and environment names every command shares: `supernet.sdk.cli_options`)."""
    overrides: dict[str, object] = {}
    settings = NodeSettings.load(config)
    if host is not None or port is not None:
        api = settings.api.model_copy(
            update={k: v for k, v in (("host", host), ("port", port)) if v is not None}
        )
        overrides["api"] = api
    chain: dict[str, object] = {k: v for k, v in (("rpc_url", rpc), ("deployment", deployment)) if v}
    if chain:
        if "rpc_url" in chain and "deployment" in chain:
            chain["enabled"] = True
        overrides["chain"] = settings.chain.model_copy(update=chain)
    if store is not None:
        overrides["store"] = settings.store.model_copy(update={"url": store})
    if overrides:  # validated again as a whole (e.g. a chain needs the node's key)
        settings = NodeSettings.model_validate({**settings.model_dump(), **_dumped(overrides)})
    logging.getLogger().setLevel(settings.log_level)
    asyncio.run(_serve(settings, fault or [], fault_seed))


def _dumped(overrides: dict[str, object]) -> dict[str, object]:
    return {k: v.model_dump() if hasattr(v, "model_dump") else v for k, v in overrides.items()}


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
