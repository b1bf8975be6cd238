"""``supernet contracts``: deploy the protocol and inspect a deployment.

>>> # supernet contracts deploy --rpc http://127.0.0.1:8545 --account-index 0 --devnet-params
>>> # supernet contracts info --deployment deployment.json
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from eth_account.signers.local import LocalAccount
from rich.console import Console
from rich.table import Table
from supernet.sdk.chain.anvil import dev_account
from supernet.sdk.chain.bindings import MAX_ANSWER_FLOOR, latest_base_fee
from supernet.sdk.chain.contracts import Contracts, make_web3
from supernet.sdk.chain.deployment import CONTRACT_NAMES, Deployment
from supernet.sdk.chain.errors import ChainError
from supernet.sdk.chain.params import ProtocolParams
from supernet.sdk.errors import SupernetError
from supernet.sdk.key_options import KeyFile, Keystore, PasswordFile, account, key_option
from web3.exceptions import Web3Exception

app = typer.Typer(help="Deploy and inspect the protocol contracts.", no_args_is_help=True)
console = Console()


def resolve_account(
    key: str | None,
    account_index: int | None,
    key_file: Path | None = None,
    keystore: Path | None = None,
    password_file: Path | None = None,
) -> LocalAccount:
    """The signer from ``$SUPERNET_PRIVATE_KEY``, ``--key-file``, ``--keystore`` or a dev-mnemonic
    ``--account-index`` (exactly one)."""
    if account_index is not None:
        if key or key_file or keystore:
            raise typer.BadParameter("give either a key source or --account-index, not both")
        return dev_account(account_index)
    if not (key or key_file or keystore):
        raise typer.BadParameter(
            "give a key: $SUPERNET_PRIVATE_KEY, --key-file, --keystore, or --account-index on a local chain"
        )
    return account(key, key_file, keystore, password_file)


@app.command()
def deploy(
    rpc: str = typer.Option("http://127.0.0.1:8545", "--rpc", help="JSON-RPC URL."),
    key: Annotated[str | None, key_option("SUPERNET_PRIVATE_KEY", "Deployer")] = None,
    key_file: KeyFile = None,
    keystore: Keystore = None,
    password_file: PasswordFile = None,
    account_index: int | None = typer.Option(
        None, "--account-index", help="Use dev account N of Anvil's default mnemonic (local chains only)."
    ),
    out: Path = typer.Option(Path("deployment.json"), "--out", help="Where to write the deployment file."),
    devnet_params: bool = typer.Option(
        False, "--devnet-params", help="Short delays and full sampling (local devnet), instead of defaults."
    ),
    verify_cost_ratio: float | None = typer.Option(
        None,
        "--verify-cost-ratio",
        help=(
            "The validators' measured verify_cost_ratio (make bench-verify on their hardware): size the "
            "verification share so fees pay for at least one check per receipt (default: sized for 0.472, "
            "docs/benchmarks/verification.json, with room to 0.52)."
        ),
    ),
    min_answer_gas_price: float | None = typer.Option(
        None,
        "--min-answer-gas-price",
        min=0,
        help=(
            "Gwei: the least gas price data claims' answers are priced at (MIN_ANSWER_GAS_PRICE). Needed "
            "on a chain whose base fee is 0 or negligible (set the least gas price the chain accepts); 0 "
            "on Ethereum and its rollups. Default: 0, refused on a chain whose latest base fee is 0."
        ),
    ),
) -> None:
    """Deploy ServiceManager, ModelRegistry, Payments and TaskManager; write the deployment file."""
    deployer = resolve_account(key, account_index, key_file, keystore, password_file)
    params = ProtocolParams.devnet() if devnet_params else ProtocolParams()
    if min_answer_gas_price is not None:
        params = replace(params, min_answer_gas_price=_floor_wei(min_answer_gas_price))
    else:
        _refuse_a_negligible_base_fee(rpc)
    if verify_cost_ratio is not None:
        try:
            params = params.sized_for_verify_cost(verify_cost_ratio)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--verify-cost-ratio") from exc
        console.print(
            f"verification share {params.verification_share_bps / 100:.2f} % of every fee: "
            f"{params.checks_paid_per_receipt(verify_cost_ratio):.2f} checks per receipt paid at "
            f"verify_cost_ratio {verify_cost_ratio:g}"
        )
    try:
        contracts = Contracts.deploy(rpc, deployer, params, rpc_url=rpc)
    except (SupernetError, OSError) as exc:
        console.print(f"[red]deploy failed:[/red] {exc}")
        raise typer.Exit(1) from exc
    path = contracts.deployment.save(out)
    _print_deployment(contracts.deployment)
    console.print(f"wrote [bold]{path}[/bold]")


MAX_FLOOR_GWEI = MAX_ANSWER_FLOOR // 10**9
"""The most ``--min-answer-gas-price`` takes: no chain's least accepted gas price is near it, while a
floor typed in wei (1e9 for 1 gwei) is far above it, and would make every claim's deposit
millions of ether (no claim could be opened, withholding free)."""


def _floor_wei(gwei: float) -> int:
    """``--min-answer-gas-price`` in wei, refusing what is surely a slip of unit: above
    `MAX_FLOOR_GWEI`, or a positive value under 1 wei (only an explicit 0 deploys no floor)."""
    wei = round(gwei * 10**9)
    if gwei > MAX_FLOOR_GWEI:
        raise typer.BadParameter(
            f"{gwei:g} gwei is above {MAX_FLOOR_GWEI:,} gwei: the floor is in gwei, not wei "
            f"(a claim's deposit would be ~{wei * 16_000_000 / 10**18:,.0f} ether)",
            param_hint="--min-answer-gas-price",
        )
    if gwei > 0 and wei == 0:
        raise typer.BadParameter(
            f"{gwei:g} gwei is under 1 wei: the floor is in gwei (pass 0 to deploy without one)",
            param_hint="--min-answer-gas-price",
        )
    return wei


_UNREADABLE = (SupernetError, OSError, ValueError, Web3Exception)
"""What reading the chain before a deployment may raise (the deployment then reports it)."""


def _refuse_a_negligible_base_fee(rpc: str) -> None:
    """Without a floor, answers are priced at the base fee: on a chain where it is 0, or a small
    part of what a transaction must pay (below a tenth of the RPC's suggested tip: Polygon PoS's few
    wei against a 25 gwei minimum tip), a claim would post next to the bare bond and the node be
    paid next to nothing for the answer it is forced to send (docs/security-parameters.md), so such
    a deployment must name its floor (or 0, on purpose)."""
    try:
        w3 = make_web3(rpc)
        base = latest_base_fee(w3)
    except _UNREADABLE:
        return  # the deployment itself reports an unreachable chain
    if base == 0:
        raise typer.BadParameter(
            "this chain's base fee is 0, so data claims' answers would be paid nothing: pass the least "
            "gas price the chain accepts (or 0 to deploy anyway)",
            param_hint="--min-answer-gas-price",
        )
    try:
        tip = int(w3.eth.max_priority_fee)
    except _UNREADABLE:
        return
    if base * 10 < tip:
        raise typer.BadParameter(
            f"this chain's base fee ({base / 10**9:g} gwei) is under a tenth of its suggested tip "
            f"({tip / 10**9:g} gwei), so data claims' answers would be paid a fraction of their gas: pass "
            "the least gas price the chain accepts (or 0 to deploy anyway)",
            param_hint="--min-answer-gas-price",
        )


@app.command()
def info(
    deployment: Path = typer.Option(Path("deployment.json"), "--deployment", "-d", help="Deployment file."),
    rpc: str | None = typer.Option(None, "--rpc", help="JSON-RPC URL (default: the file's rpcUrl)."),
) -> None:
    """Show a deployment: addresses, parameters and live counts read from the chain."""
    try:
        dep = Deployment.load(deployment)
        url = rpc or dep.rpc_url
        if not url:
            raise typer.BadParameter("the deployment file has no rpcUrl; pass --rpc")
        c = Contracts.connect(url, dep)
        counts = {
            "nodes": len(c.service_manager.nodes()),
            "validators": len(c.service_manager.validators()),
            "total validator stake (wei)": c.service_manager.total_validator_stake(),
            "models": len(c.model_registry.model_ids()),
            "batches": c.task_manager.batch_count(),
            "challenges": c.task_manager.challenge_count(),
            "burned (wei)": c.task_manager.total_burned(),
            # what claims are priced at is the contract's, whatever the file says
            "answer gas price floor (wei)": int(c.task_manager.call("MIN_ANSWER_GAS_PRICE")),
        }
    except (ChainError, SupernetError, OSError) as exc:
        console.print(f"[red]cannot read deployment:[/red] {exc}")
        raise typer.Exit(1) from exc
    _print_deployment(dep)
    table = Table(title="On chain now")
    table.add_column("what")
    table.add_column("value", justify="right")
    for k, v in counts.items():
        table.add_row(k, f"{v:,}")
    console.print(table)
    floor, filed = counts["answer gas price floor (wei)"], dep.params.get("minAnswerGasPrice")
    if filed is not None and int(filed) != floor:
        console.print(
            f"[yellow]the deployment file's minAnswerGasPrice ({int(filed):,} wei) is not the "
            f"TaskManager's ({floor:,} wei): the contract's is the one claims are priced at[/yellow]"
        )


def _print_deployment(dep: Deployment) -> None:
    table = Table(title=f"Supernet on chain {dep.chain_id} (deploy block {dep.deploy_block})")
    table.add_column("contract")
    table.add_column("address")
    for name in CONTRACT_NAMES:
        table.add_row(name, dep.address(name))
    console.print(table)
    params = Table(title="Parameters")
    params.add_column("name")
    params.add_column("value", justify="right")
    for k, v in dep.params.items():
        params.add_row(k, f"{v:,}")
    console.print(params)
