"""``supernet explorer``: index a deployment's events and serve the explorer (one process).

>>> # supernet explorer --rpc http://127.0.0.1:8545 --deployment .supernet/devnet/deployment.json \\
>>> #     --store http://127.0.0.1:5001 --port 8090 [--db postgresql://user@host/explorer]
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer
from supernet.explorer.app import ExplorerState, create_app
from supernet.explorer.chain import ChainReader, WrongChain
from supernet.explorer.content import ContentReader
from supernet.explorer.db.engine import open_database
from supernet.explorer.indexer import Indexer
from supernet.sdk.chain.contracts import make_web3
from supernet.sdk.chain.deployment import Deployment, DeploymentError
from supernet.sdk.chain.tasks import TaskManager
from supernet.sdk.cli_options import deployment_option, rpc_option, store_option


def openapi_json() -> str:
    """The JSON API's OpenAPI document (docs/explorer/openapi.json), as the app serves it."""
    spec = create_app(ExplorerState(open_database("sqlite://"))).openapi()
    return json.dumps(spec, indent=2, sort_keys=True) + "\n"


app = typer.Typer(help="Index a deployment's events and serve the explorer.", pretty_exceptions_enable=False)
log = logging.getLogger(__name__)


@app.callback(invoke_without_command=True)
def explorer(
    rpc: Annotated[str, rpc_option("SUPERNET_EXPLORER_RPC")] = "http://127.0.0.1:8545",
    deployment: Annotated[Path | None, deployment_option("SUPERNET_EXPLORER_DEPLOYMENT")] = None,
    store: Annotated[str | None, store_option("SUPERNET_EXPLORER_STORE")] = None,
    db: str = typer.Option(
        ".supernet/explorer.sqlite",
        "--db",
        envvar="SUPERNET_EXPLORER_DB",
        help="SQLite file, or a database URL (postgresql://user:pass@host/db).",
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8090, "--port", help="Port to listen on."),
    confirmations: int = typer.Option(0, "--confirmations", min=0, help="Blocks to stay behind the head."),
    poll: float = typer.Option(1.0, "--poll", min=0.1, help="Seconds between chain polls and live pushes."),
    openapi: Path | None = typer.Option(
        None, "--openapi", help="Write the JSON API's OpenAPI document to this file and exit."
    ),
) -> None:
    """Follow the chain from the deploy block into the database and serve pages and the JSON API."""
    import uvicorn

    if openapi is not None:
        openapi.write_text(openapi_json())
        return
    if deployment is None:
        raise typer.BadParameter("a deployment file is required", param_hint="--deployment")
    try:
        dep = Deployment.load(deployment)
    except DeploymentError as exc:
        raise typer.BadParameter(str(exc), param_hint="--deployment") from None
    if "://" not in db:
        Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = open_database(db)
    w3 = make_web3(rpc)
    content = ContentReader(store) if store else None
    reader = ChainReader(w3, dep)
    try:
        reader.check_chain()  # asked again before every scan; an unreachable RPC is retried there
    except WrongChain as exc:
        raise typer.BadParameter(str(exc), param_hint="--rpc") from None
    except Exception as exc:  # the indexer retries an RPC that is not up yet
        log.warning("RPC %s not reachable yet (%s): the indexer retries", rpc, exc)
    indexer = Indexer(engine, reader, content, start_block=dep.deploy_block, confirmations=confirmations)
    state = ExplorerState(engine, content, TaskManager(w3, dep.address("TaskManager")), indexer, poll_s=poll)
    log.info(
        "explorer on http://%s:%d (index: %s)", host, port, engine.url.render_as_string(hide_password=True)
    )
    uvicorn.run(create_app(state), host=host, port=port, log_level="warning", timeout_graceful_shutdown=3)
