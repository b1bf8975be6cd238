"""Money commands: ``supernet account ...`` for users, and the operators' commands that the node
and validator groups add (`add_operator_commands`).

Users pay a node through a payment channel (docs/protocol.md, "Payments"): ``deposit`` tops one
up, ``withdraw`` asks for the unspent rest (the node may still redeem the user's latest voucher
during the withdrawal delay) and takes it once the delay is over. Operators see their stake and
what they earned, start unbonding, leave, and withdraw what is theirs. Amounts take units like
`cast`: ``0.01ether``, ``100gwei``, ``5000`` (wei); addresses are checked (EIP-55) before anything
is read. Every transaction pays a priority fee (tip) of at most ``--max-priority-fee`` (50 gwei by
default: `bindings.MAX_PRIORITY_FEE`), and a prompt names the most its gas can cost. Every failure
is one line with what to do.
"""

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from eth_utils import to_checksum_address
from supernet.sdk.chain import Contracts, Deployment
from supernet.sdk.chain.bindings import MAX_PRIORITY_FEE, Binding, TxResult
from supernet.sdk.cli_errors import explain
from supernet.sdk.cli_options import address_argument, amount_argument
from supernet.sdk.client.client import refuse_closing
from supernet.sdk.client_cli import Dep, Rpc  # one definition of the chain options
from supernet.sdk.errors import SupernetError
from supernet.sdk.key_options import KeyFile, Keystore, PasswordFile, account, key_option
from supernet.sdk.units import format_amount
from web3.exceptions import Web3Exception

Yes = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before sending the transaction.")]
MaxTip = Annotated[
    str | None,
    typer.Option(
        "--max-priority-fee",
        help="The most priority fee (tip) a gas may pay, as amounts are written: 2gwei, 1000000000 "
        f"(wei). Default {format_amount(MAX_PRIORITY_FEE)}; a higher tip suggested by the RPC is refused.",
    ),
]
NodeAddress = Annotated[
    str, typer.Argument(parser=address_argument, help="The node's address (a deposit pays only this node).")
]

app = typer.Typer(
    name="account",
    help="Your payment channels to nodes: balance, deposit, withdraw.",
    no_args_is_help=True,
)
UserKey = Annotated[str, key_option("SUPERNET_USER_KEY", "User's")]


def _amount(text: str) -> int:
    return amount_argument(text)


def _tip_ceiling(text: str | None) -> int:
    """``--max-priority-fee`` in wei (`MAX_PRIORITY_FEE` when not given), parsed before connecting."""
    return MAX_PRIORITY_FEE if text is None else amount_argument(text, "--max-priority-fee")


@contextmanager
def _one_line_errors() -> Iterator[None]:
    """A refused transaction, a missing file or an unreachable or refusing chain (web3's errors are
    no ValueError): one line, exit status 1."""
    try:
        yield
    except (SupernetError, OSError, ValueError, Web3Exception) as exc:
        line = " ".join((explain(exc) or str(exc)).split())
        typer.secho(f"error: {line}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None


def connect(
    rpc: str,
    deployment: Path,
    signer: tuple[str, Path | None, Path | None, Path | None],
    tip_ceiling: int = MAX_PRIORITY_FEE,
) -> Contracts:
    """The deployment bound to the signer's account, its transactions' tips within ``tip_ceiling``."""
    if not deployment.is_file():
        raise SupernetError(
            f"no deployment file at {deployment}: pass --deployment or set SUPERNET_DEPLOYMENT "
            "(`supernet devnet up` writes one)"
        )
    return Contracts.connect(rpc, Deployment.load(deployment), account(*signer), tip_ceiling=tip_ceiling)


def _confirmed(
    binding: Binding, what: str, yes: bool, fn_name: str, *args: object, value: int = 0
) -> TxResult:
    """Ask ``what?`` beside the most the transaction's gas can cost (its gas limit at its fee cap,
    quoted before it is signed; a revert is reported here, before asking), then send the quoted
    transaction: its fees and its gas limit, so "at most" bounds what is signed."""
    quote = binding.quote(fn_name, *args, value=value)
    _confirm(f"{what} (gas: at most {format_amount(quote.most)})?", yes)
    return binding.transact(fn_name, *args, value=value, quote=quote)


def _chain_time(c: Contracts) -> int:
    return int(c.w3.eth.get_block("latest")["timestamp"])


def _when(ts: int, now: int) -> str:
    clock = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))
    return f"{clock} (in {ts - now} s)" if ts > now else f"{clock} (now)"


def _confirm(what: str, yes: bool) -> None:
    if not yes and not typer.confirm(what, default=True):
        raise typer.Exit(1)


@app.command()
def balance(
    rpc: Rpc = "http://127.0.0.1:8545",
    deployment: Dep = Path("deployment.json"),
    node: Annotated[
        str | None, typer.Option(parser=address_argument, help="Only the channel to this node (address).")
    ] = None,
    key: UserKey = "",
    key_file: KeyFile = None,
    keystore: Keystore = None,
    password_file: PasswordFile = None,
) -> None:
    """Your channel to every registered node (or one): deposited, spent, left, withdrawal state."""
    with _one_line_errors():
        c = connect(rpc, deployment, (key, key_file, keystore, password_file))
        user = c.account.address if c.account else ""
        now = _chain_time(c)
        nodes = [node] if node else c.service_manager.nodes()
        typer.echo(f"user {user}, wallet {format_amount(c.w3.eth.get_balance(to_checksum_address(user)))}")
        for n in nodes:
            ch = c.payments.channel(user, n)
            if not ch.deposited and not node:
                continue
            state = ""
            if ch.withdrawable_at:
                state = f", withdrawal requested: ready {_when(ch.withdrawable_at, now)}"
            typer.echo(
                f"node {n}: deposited {format_amount(ch.deposited)}, redeemed by the node "
                f"{format_amount(ch.redeemed)}, left {format_amount(ch.balance)}{state}"
            )


@app.command()
def deposit(
    node: NodeAddress,
    amount: Annotated[str, typer.Argument(help="How much: 0.01ether, 100gwei, 5000 (wei).")],
    rpc: Rpc = "http://127.0.0.1:8545",
    deployment: Dep = Path("deployment.json"),
    yes: Yes = False,
    key: UserKey = "",
    key_file: KeyFile = None,
    keystore: Keystore = None,
    password_file: PasswordFile = None,
    force: Annotated[
        bool, typer.Option(help="Deposit even if NODE is not an active node on chain (pre-funding).")
    ] = False,
    max_priority_fee: MaxTip = None,
) -> None:
    """Add to your payment channel to NODE (an active node on chain, unless --force; not while a
    withdrawal from the channel is requested)."""
    wei = _amount(amount)
    if wei == 0:
        raise typer.BadParameter("a deposit must be more than 0")
    ceiling = _tip_ceiling(max_priority_fee)
    with _one_line_errors():
        c = connect(rpc, deployment, (key, key_file, keystore, password_file), ceiling)
        user = c.account.address if c.account else ""
        view = c.service_manager.get_node(node)
        if not view.active and not force:
            # a channel pays only its node: one to an address no node uses locks the money until a
            # withdrawal and its delay, and has no stake behind it
            state = "registered without the minimum stake" if view.registered else "not a registered node"
            raise SupernetError(f"{node} is {state}: nothing deposited (--force to deposit anyway)")
        refuse_closing(c.payments.channel(user, node), node)  # as the client's deposits
        whom = node
        if view.registered:
            whom = f"node {node} at {view.endpoint}, stake {format_amount(view.stake)}"
        what = f"deposit {format_amount(wei)} into your channel to {whom}"
        tx = _confirmed(c.payments, what, yes, "deposit", node, value=wei)
        ch = c.payments.channel(user, node)
        typer.echo(
            f"deposited {format_amount(wei)} (tx {tx.tx_hash}); the channel holds {format_amount(ch.balance)}"
        )


@app.command()
def withdraw(
    node: Annotated[str, typer.Argument(parser=address_argument, help="The node whose channel to empty.")],
    rpc: Rpc = "http://127.0.0.1:8545",
    deployment: Dep = Path("deployment.json"),
    cancel: Annotated[bool, typer.Option(help="Cancel a requested withdrawal.")] = False,
    yes: Yes = False,
    key: UserKey = "",
    key_file: KeyFile = None,
    keystore: Keystore = None,
    password_file: PasswordFile = None,
    max_priority_fee: MaxTip = None,
) -> None:
    """Take back what is left in your channel to NODE: the first call asks (the node may redeem
    your latest voucher until the delay ends), a call after the delay pays you."""
    ceiling = _tip_ceiling(max_priority_fee)
    with _one_line_errors():
        c = connect(rpc, deployment, (key, key_file, keystore, password_file), ceiling)
        user = c.account.address if c.account else ""
        ch, now = c.payments.channel(user, node), _chain_time(c)
        if cancel:
            c.payments.cancel_withdrawal(node)
            typer.echo(f"withdrawal cancelled; the channel keeps {format_amount(ch.balance)}")
        elif ch.balance == 0:
            typer.echo(f"nothing to withdraw: the channel to {node} is empty")
        elif not ch.withdrawable_at:
            what = f"ask to withdraw {format_amount(ch.balance)} from your channel to {node}"
            _confirmed(c.payments, what, yes, "requestWithdrawal", node)
            ready = c.payments.channel(user, node).withdrawable_at
            typer.echo(
                f"withdrawal requested: the node may still redeem your latest voucher until "
                f"{_when(ready, _chain_time(c))}; run this command again after that"
            )
        elif now < ch.withdrawable_at:
            typer.echo(f"the withdrawal is not ready yet: {_when(ch.withdrawable_at, now)}")
        else:
            tx = c.payments.withdraw(node)
            typer.echo(f"withdrew {format_amount(ch.balance)} (tx {tx.tx_hash})")


# ---------------------------------------------------------------------------------------------
# Operators (added to `supernet node` and `supernet validator`)
# ---------------------------------------------------------------------------------------------


def add_operator_commands(group: typer.Typer, role: str, key_env: str) -> None:
    """Add ``earnings``/``rewards``, ``withdraw``/``claim``, ``unbond`` and ``deregister`` to the
    ``node`` or ``validator`` group; keys come from ``key_env`` or a key file or keystore."""
    OpKey = Annotated[str, key_option(key_env, f"The {role}'s")]
    # A node's redeemed fees wait in its Payments account (earnings, held until the disputes over
    # what they paid are over; the verification share sits in its escrow, which only decoy
    # bounties spend); bonds and rewards of disputes and availability claims wait in the
    # TaskManager, those of omission and manifest claims (a claimant's refund, deposit and reward,
    # a node's paid answers) in the OmissionManager. A validator has only the latter two.
    view_name, take_name = ("earnings", "withdraw") if role == "node" else ("rewards", "claim")

    def balances(c: Contracts, who: str) -> tuple[int, int, int, int, int, int]:
        """(Payments earnings withdrawable now, held, when all held are free, verification
        escrow, TaskManager claimable, OmissionManager claimable), read once."""
        fees = escrow = held = free_at = 0
        if role == "node":  # both at one block: a redemption between two reads moves the held part
            block = int(c.w3.eth.block_number)
            fees, escrow = c.payments.node_account(who, block)
            held, free_at = c.payments.held_earnings(who, block)
        disputes = int(c.task_manager.call("claimable", who))
        return max(fees - held, 0), held, free_at, escrow, disputes, c.omission_manager.claimable(who)

    def status(
        rpc: Rpc = "http://127.0.0.1:8545",
        deployment: Dep = Path("deployment.json"),
        key: OpKey = "",
        key_file: KeyFile = None,
        keystore: Keystore = None,
        password_file: PasswordFile = None,
    ) -> None:
        with _one_line_errors():
            c = connect(rpc, deployment, (key, key_file, keystore, password_file))
            who = c.account.address if c.account else ""
            op, now = c.service_manager.get_operator(who), _chain_time(c)
            typer.echo(f"{role} {who}: {'registered' if op.registered else 'not registered'}")
            typer.echo(f"  stake {format_amount(op.stake)}, slashed {op.slash_count} time(s)")
            if op.unbonding:
                typer.echo(
                    f"  unbonding {format_amount(op.unbonding)}, ready {_when(op.unbonding_ready_at, now)}"
                )
            if op.locked_until > now:
                typer.echo(f"  locked by open work until {_when(op.locked_until, now)}")
            fees, held, free_at, escrow, disputes, claims = balances(c, who)
            typer.echo(f"  {view_name}: {format_amount(fees + disputes + claims)} to withdraw")
            parts = [f"fees {format_amount(fees)}"] if role == "node" else []
            parts += [
                f"disputes (TaskManager) {format_amount(disputes)}",
                f"omission and manifest claims (OmissionManager) {format_amount(claims)}",
            ]
            typer.echo(f"    {', '.join(parts)}")
            if role == "node":
                if held:
                    typer.echo(
                        f"  fees held {format_amount(held)} (slashable while their disputes can open), "
                        f"all free {_when(free_at, now)}"
                    )
                typer.echo(f"  verification escrow {format_amount(escrow)} (paid out only as decoy bounties)")

    status.__doc__ = f"Stake, unbonding, slashes, and the {view_name} you can withdraw."

    def withdraw_all(
        rpc: Rpc = "http://127.0.0.1:8545",
        deployment: Dep = Path("deployment.json"),
        key: OpKey = "",
        key_file: KeyFile = None,
        keystore: Keystore = None,
        password_file: PasswordFile = None,
        max_priority_fee: MaxTip = None,
    ) -> None:
        ceiling = _tip_ceiling(max_priority_fee)
        with _one_line_errors():
            c = connect(rpc, deployment, (key, key_file, keystore, password_file), ceiling)
            who = c.account.address if c.account else ""
            op, now, done = c.service_manager.get_operator(who), _chain_time(c), False
            fees, held, free_at, _, disputes, claims = balances(c, who)
            if fees:
                c.payments.withdraw_earnings()
            if disputes:
                c.task_manager.withdraw()
            if claims:
                c.omission_manager.withdraw()
            if fees or disputes or claims:
                typer.echo(f"withdrew {format_amount(fees + disputes + claims)} of {view_name}")
                done = True
            if held:
                typer.echo(f"{format_amount(held)} of fees are held: all free {_when(free_at, now)}")
            if op.unbonding and now >= max(op.unbonding_ready_at, op.locked_until):
                c.service_manager.withdraw_unbonded()
                typer.echo(f"withdrew {format_amount(op.unbonding)} of unbonded stake")
                done = True
            elif op.unbonding:
                ready = max(op.unbonding_ready_at, op.locked_until)
                typer.echo(f"{format_amount(op.unbonding)} of stake is unbonding: ready {_when(ready, now)}")
            if not done:
                typer.echo(f"nothing to withdraw yet (no {view_name}, no unbonded stake ready)")

    withdraw_all.__doc__ = f"Withdraw your {view_name}, and your unbonded stake once it is ready."

    def unbond(
        amount: Annotated[str, typer.Argument(help="How much stake: 1ether, 500gwei, or 'all'.")],
        rpc: Rpc = "http://127.0.0.1:8545",
        deployment: Dep = Path("deployment.json"),
        yes: Yes = False,
        key: OpKey = "",
        key_file: KeyFile = None,
        keystore: Keystore = None,
        password_file: PasswordFile = None,
        max_priority_fee: MaxTip = None,
    ) -> None:
        """Start unbonding stake (it can still be slashed until the unbonding period ends)."""
        ceiling = _tip_ceiling(max_priority_fee)
        with _one_line_errors():
            c = connect(rpc, deployment, (key, key_file, keystore, password_file), ceiling)
            who = c.account.address if c.account else ""
            stake = c.service_manager.get_operator(who).stake
            wei = stake if amount.strip().lower() == "all" else _amount(amount)
            what = f"unbond {format_amount(wei)} of your {format_amount(stake)} stake"
            _confirmed(c.service_manager, what, yes, "requestUnbond", wei)
            op = c.service_manager.get_operator(who)
            typer.echo(
                f"unbonding {format_amount(op.unbonding)}: withdraw it with `supernet {role} {take_name}` "
                f"after {_when(op.unbonding_ready_at, _chain_time(c))}"
            )

    def deregister(
        rpc: Rpc = "http://127.0.0.1:8545",
        deployment: Dep = Path("deployment.json"),
        yes: Yes = False,
        key: OpKey = "",
        key_file: KeyFile = None,
        keystore: Keystore = None,
        password_file: PasswordFile = None,
        max_priority_fee: MaxTip = None,
    ) -> None:
        """Leave the network: your whole stake starts unbonding. A node that left can no longer
        commit batches: stop it after its last batch is committed, since every promised receipt
        not committed by then can be claimed a challenge window before the stake is free."""
        ceiling = _tip_ceiling(max_priority_fee)
        with _one_line_errors():
            c = connect(rpc, deployment, (key, key_file, keystore, password_file), ceiling)
            warn = ""
            if role == "node":
                warn = (
                    "; receipts this node has not committed yet can no longer be, and their users can"
                    " claim them before the stake is free: stop the node after its last batch first"
                )
            what = f"deregister this {role} (the whole stake starts unbonding{warn})"
            _confirmed(c.service_manager, what, yes, "deregister")
            who = c.account.address if c.account else ""
            op = c.service_manager.get_operator(who)
            typer.echo(
                f"deregistered; {format_amount(op.unbonding)} unbonding until "
                f"{_when(op.unbonding_ready_at, _chain_time(c))}"
            )

    group.command(view_name)(status)
    group.command(take_name)(withdraw_all)
    group.command("unbond")(unbond)
    group.command("deregister")(deregister)
