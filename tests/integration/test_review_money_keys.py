"""Adversarial review of the users' and operators' money and key tools: ``supernet account
balance|deposit|withdraw``, ``supernet node unbond|deregister``, ``supernet keys new|address``,
`supernet.sdk.keys`, `supernet.sdk.key_options`, `supernet.sdk.units`, `supernet.sdk.cli_errors`
and the transactions they send through `supernet.sdk.chain.bindings.send`.

Three kinds of adversary: a hurried user (addresses and amounts in every form people paste), another
user of the same machine (key files, keystores, passphrases), and a malicious JSON-RPC endpoint (a
public RPC, a hijacked URL) that answers the tools' reads. Real parts: a real Anvil with the real
contracts (``network``), the real CLI (typer's runner in-process, or ``supernet`` as a subprocess).
The malicious RPC is a small stdlib HTTP proxy in front of that Anvil (the attacker's own code): it
forwards every call and rewrites only the answers named in each test.

Found:

1. FIXED (medium) a malicious RPC sets the priority fee (``eth_maxPriorityFeePerGas``) and the CLI
   signs it unchecked: ``account deposit NODE 1gwei --yes`` through it costs the user ~3 ETH in tips
   (to the block producer), and the prompt shows only the deposit, never the gas cost.
   How: one fee policy in `bindings.send` (`bindings.fees`): a tip above a fixed ceiling
   (`MAX_PRIORITY_FEE`, 50 gwei; the money commands' ``--max-priority-fee``) is refused, naming
   it, and the prompt shows the most the gas can cost (gas limit x fee cap, `Binding.quote`).
2. FIXED (medium) the chain id is asked of the RPC again for every transaction (`bindings.send`),
   after `Contracts.connect` checked it once: an RPC that answers right the first time and ``1``
   afterwards gets a ``Payments.deposit{value}`` signed for another chain (replayable there with
   the nonce it also chose; the value lands at the Payments address on that chain, usually an
   address without code: burnt). The RPC's refusal then ends in a Web3RPCError traceback.
   How: connect pins the checked id (`bindings.pin_chain_id`; `make_web3`'s provider caches the
   first ``eth_chainId``), `send`/`send_ether` sign with it; web3's RPC errors are one line
   (`cli_errors.explain`, ``_one_line_errors``).
3. FIXED (low) ``account deposit`` into a channel whose withdrawal was requested succeeds silently
   (``Client.ensure_deposit`` refuses the same): the node admits no work against a closing channel.
   How: both apply `client.refuse_closing` (one line naming ``account withdraw NODE --cancel``).
4. FIXED (low) an address in a common but unchecked form (all lowercase, as explorers and logs
   print it), with a bad EIP-55 checksum, of the wrong length, or not hex, ends every money command
   in a Python traceback (web3's InvalidAddress / MismatchedABI / AttributeError are no ValueError
   in web3 8, so neither ``_one_line_errors`` nor `cli_errors.explain` knows them). Nothing is sent.
   How: every address parameter of the money commands is parsed by `cli_options.address_argument`
   (lowercase checksummed; bad checksum, length or hex a usage error, exit 2, before connecting).
5. FIXED (low) ``keys new --keystore DIR/k.json`` with a missing DIR ends in a FileNotFoundError
   traceback (only KeyLoadError is caught).
   How: `write_keystore` turns the OSError of creating the file into a KeyLoadError naming the path.
6. known limit: a transaction that reverts once mined (after a passing estimate: a race, or an RPC
   that lies in ``eth_estimateGas``) is reported as a one-line failure, but without the contract's
   decoded custom error, and its gas is spent.

Checked and holding:

- amounts: ``0.1 ether`` (a space), `` 5000 ``, ``1ETH`` parse as meant; ``1.5wei``, ``1e3gwei``,
  ``0x10``, ``-1``, unicode digits, ``> uint256`` are usage errors (the latter also in
  test_review_cli_config.py) and change nothing;
- a deposit to a node that deregistered, or to the zero address even with ``--force``, is one line
  and changes nothing; ``unbond`` above the stake and ``withdraw --cancel`` with no request are the
  decoded custom errors (``AmountExceedsStake``, ``NoWithdrawalRequested``) in one line;
- key files: ``0x``/bare/``0X``/uppercase hex, a trailing LF or CRLF load; empty, truncated, padded,
  zero, >= n, quoted, BOM-prefixed keys, directories, FIFOs, dangling links and links to a 0644 file
  are refused with a message that names the file and never the key; a link to a 0600 file is read;
- ``keys new`` never writes through an existing (even dangling) symlink (O_EXCL); a wrong or
  unusable passphrase from ``$SUPERNET_KEY_PASSWORD`` is never echoed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from chain_fixtures import Actors
from eth_account import Account
from eth_account.typed_transactions import TypedTransaction
from hexbytes import HexBytes
from rpc_proxy import answer, rpc_proxy
from supernet.node.service.cli import app as node_app
from supernet.sdk.chain import Contracts
from supernet.sdk.keys import KeyLoadError, load_account, write_keystore
from supernet.sdk.keys_cli import app as keys_app
from supernet.sdk.money_cli import app as account_app
from typer.testing import CliRunner

GWEI = 10**9
FAST = {"kdf": "pbkdf2", "iterations": 2}  # tests only


def _key_env(acct: Any, var: str = "SUPERNET_USER_KEY") -> dict[str, str]:
    return {var: "0x" + bytes(acct.key).hex()}


def _rpc(c: Contracts) -> str:
    return str(c.w3.provider.endpoint_uri)  # type: ignore[attr-defined]


def _common(c: Contracts, tmp_path: Path, rpc: str | None = None) -> list[str]:
    dep = c.deployment.save(tmp_path / "deployment.json")
    return ["--rpc", rpc or _rpc(c), "--deployment", str(dep)]


def _clean_exit(result: Any) -> bool:
    """The command ended through typer (an exit status), not through an uncaught exception."""
    return result.exception is None or isinstance(result.exception, SystemExit)


@contextmanager
def _rpc_proxy(
    upstream: str, rewrite: Callable[[dict[str, Any]], Any]
) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """`rpc_proxy` answering ``rewrite(request)`` as the result where it is not None."""

    def respond(request: dict[str, Any], _: Any) -> dict[str, Any] | None:
        result = rewrite(request)
        return None if result is None else answer(request, result)

    with rpc_proxy(upstream, respond) as served:
        yield served


# ------------------------------------------------------------------ a malicious RPC endpoint


@pytest.mark.anvil
def test_defence_a_malicious_rpc_cannot_set_the_tip_the_user_pays(
    network: Contracts, actors: Actors, tmp_path: Path
) -> None:
    """Severity medium. `bindings.send` leaves the fees to web3, which asks the RPC for
    ``eth_maxPriorityFeePerGas`` and signs whatever comes back (the cap is twice the base fee plus
    that tip). An RPC answering 100,000 gwei makes ``account deposit NODE 1gwei --yes`` cost the
    user ~3 ETH of tips (gas used x tip), paid to whoever builds the block: a builder or sequencer
    that runs (or pays) a public RPC gains it. ``--yes`` or not, the prompt names the deposit only.

    Fix (by design): one fee policy in `bindings.send` for every transaction the tools sign: a tip
    and a fee cap within a ceiling the user controls (``--max-fee-per-gas``/``--max-priority-fee``,
    with a fixed default ceiling, e.g. a 10 gwei tip, not derived from the RPC's own answers), a
    refusal above it, and the prompt showing the most the transaction can cost in gas."""
    user, node = actors.users[0], actors.node.address

    def tip(request: dict[str, Any]) -> Any:
        return hex(100_000 * GWEI) if request["method"] == "eth_maxPriorityFeePerGas" else None

    before = network.w3.eth.get_balance(user.address)
    with _rpc_proxy(_rpc(network), tip) as (url, _):
        args = ["deposit", node, "1gwei", "--yes", *_common(network, tmp_path, url)]
        result = CliRunner().invoke(account_app, args, env=_key_env(user))
    assert _clean_exit(result), result.exception
    lost = before - network.w3.eth.get_balance(user.address)
    assert lost < 10**16, f"a 1 gwei deposit cost {lost / 10**18:.3f} ETH: {result.output}"


@pytest.mark.anvil
def test_defence_a_malicious_rpc_gets_no_transaction_signed_for_another_chain(
    network: Contracts, actors: Actors, tmp_path: Path
) -> None:
    """Severity medium. `Contracts.connect` checks the RPC's chain id against the deployment once;
    `bindings.send` then asks ``eth_chainId`` again for every transaction and signs with the
    answer. An RPC that answers the deployment's id first and ``1`` afterwards receives, from
    ``account deposit NODE AMOUNT --yes``, a ``Payments.deposit{value: AMOUNT}`` signed for chain 1
    with the nonce the RPC chose: it can broadcast it there, where the Payments address usually has
    no code (the value is burnt) - or any chain where the user holds ether. The RPC then refuses
    the transaction here and the CLI ends in a Web3RPCError traceback (no ValueError in web3 8).

    Fix (by design): the chain id is the deployment's, read from the RPC once and compared (as
    connect does), then passed to every signature (`send` takes it from the `Contracts`, never from
    a fresh ``eth_chainId``); RPC errors on sending become one line in `cli_errors.explain`."""
    user, node = actors.users[0], actors.node.address
    asked = {"n": 0}

    def two_faced(request: dict[str, Any]) -> Any:
        if request["method"] != "eth_chainId":
            return None
        asked["n"] += 1
        return hex(network.deployment.chain_id) if asked["n"] == 1 else "0x1"

    with _rpc_proxy(_rpc(network), two_faced) as (url, seen):
        args = ["deposit", node, "1gwei", "--yes", *_common(network, tmp_path, url)]
        result = CliRunner().invoke(account_app, args, env=_key_env(user))
    signed_for = [
        TypedTransaction.from_bytes(HexBytes(r["params"][0])).as_dict()["chainId"]
        for r in seen
        if r["method"] == "eth_sendRawTransaction"
    ]
    assert all(cid == network.deployment.chain_id for cid in signed_for), (
        f"signed for chains {signed_for}, deployment is on {network.deployment.chain_id}"
    )
    assert _clean_exit(result), repr(result.exception)


@pytest.mark.anvil
def test_known_limit_a_transaction_reverted_after_its_estimate_is_reported_without_its_error(
    network: Contracts, actors: Actors, tmp_path: Path
) -> None:
    """A revert is decoded when the estimate catches it (before anything is sent). One that only
    reverts once mined - a race with another transaction, or an RPC that answers
    ``eth_estimateGas`` for a call that reverts - is a clean one-line failure (exit 1, nothing
    changed but the gas), yet it names no custom error: ``failed in block N (gas used ...)``.
    Acceptable: the user learns it failed and nothing moved. Fix: on status 0, replay the call
    (``eth_call`` with the same from/to/data/value at the receipt's block) and raise the decoded
    error; a fee ceiling (finding 1) bounds the gas an RPC can waste this way."""
    user, node = actors.users[0], actors.node.address

    def estimate(request: dict[str, Any]) -> Any:
        return hex(100_000) if request["method"] == "eth_estimateGas" else None

    before = network.payments.channel(user.address, node)
    with _rpc_proxy(_rpc(network), estimate) as (url, _):
        args = ["withdraw", node, "--cancel", *_common(network, tmp_path, url)]
        result = CliRunner().invoke(account_app, args, env=_key_env(user))
    assert result.exit_code == 1 and _clean_exit(result), result.output
    assert "failed in block" in result.output and "NoWithdrawalRequested" not in result.output
    assert network.payments.channel(user.address, node) == before
    # without the lie, the estimate catches it and the custom error is named
    honest = CliRunner().invoke(
        account_app, ["withdraw", node, "--cancel", *_common(network, tmp_path)], env=_key_env(user)
    )
    assert honest.exit_code == 1 and "NoWithdrawalRequested" in honest.output, honest.output


# ------------------------------------------------------------------ the hurried user


@pytest.mark.anvil
def test_defence_deposit_into_a_closing_channel_is_refused(
    network: Contracts, actors: Actors, tmp_path: Path
) -> None:
    """Severity low. After ``account withdraw NODE`` (a request), ``account deposit NODE 1gwei``
    deposits and reports "the channel holds ..." with exit 0. The channel is still closing: the
    node admits no task against it (docs/protocol.md, "Admission"), so the user pays for nothing
    until they find ``withdraw --cancel``; `Client.ensure_deposit` refuses the same deposit.

    Fix (by design): one rule for every deposit path: ``account deposit`` reads the channel first
    and refuses a closing one with the fix (``supernet account withdraw NODE --cancel``), as the
    client does (or offers to cancel in the same prompt)."""
    user, node = actors.users[0], actors.node.address
    common = _common(network, tmp_path)
    asked = CliRunner().invoke(account_app, ["withdraw", node, "--yes", *common], env=_key_env(user))
    assert asked.exit_code == 0 and "withdrawal requested" in asked.output, asked.output
    deposited = network.payments.channel(user.address, node).deposited
    result = CliRunner().invoke(account_app, ["deposit", node, "1gwei", "--yes", *common], env=_key_env(user))
    assert network.payments.channel(user.address, node).deposited == deposited, result.output
    assert result.exit_code == 1 and "--cancel" in result.output, result.output


@pytest.mark.anvil
def test_defence_an_address_in_a_common_form_is_taken_or_a_usage_error(
    network: Contracts, actors: Actors, tmp_path: Path
) -> None:
    """Severity low (nothing is sent). web3 8 refuses an all-lowercase address (how explorers,
    logs and ``cast`` often print one), a bad EIP-55 checksum, a wrong length or a name with
    exceptions that are no ValueError (InvalidAddress, MismatchedABI, an AttributeError from its
    ENS path): ``account deposit|withdraw|balance --node`` let them out of ``_one_line_errors``, and
    ``supernet`` prints a traceback. A bad checksum is exactly the typo a checksum exists to catch:
    it deserves the clearest message.

    Fix (by design): one typer ``click_type`` for every address argument/option (the money
    commands, ``task``, ``node``), parsed before connecting: all-lowercase (or uppercase) taken and
    checksummed, a mixed case with a bad checksum, a wrong length or non-hex refused as a usage
    error naming the argument."""
    user, node = actors.users[0], actors.node.address
    common = _common(network, tmp_path)
    bad_sum = node[:-1] + ("a" if node[-1] != "a" else "b")
    deposited = network.payments.channel(user.address, node).deposited
    escaped = []
    for text in (node.lower(), bad_sum, node[:-2], "mynode"):
        for args in (
            ["deposit", text, "1gwei", "--yes"],
            ["withdraw", text, "--cancel"],
            ["balance", "--node", text],
        ):
            result = CliRunner().invoke(account_app, [*args, *common], env=_key_env(user))
            if not _clean_exit(result):
                escaped.append(f"{args[0]} {text}: {type(result.exception).__name__}")
            elif text != node.lower():
                assert result.exit_code != 0, (args, result.output)
    assert network.payments.channel(user.address, node).deposited <= deposited + GWEI  # lowercase may pay
    code = subprocess.run(
        [sys.executable, "-m", "supernet.sdk.cli", "account", "deposit", bad_sum, "1gwei", "--yes", *common],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **_key_env(user)},
    )
    assert "Traceback" not in code.stderr and code.returncode != 0, code.stderr[-400:]
    assert escaped == [], escaped


@pytest.mark.anvil
def test_defence_amounts_as_typed_mean_what_they_say_or_change_nothing(
    network: Contracts, actors: Actors, tmp_path: Path
) -> None:
    """Spaces and case are tolerated (``0.1 ether``, `` 5000 ``, ``1ETH``); ``1.5wei``, ``1e3gwei``
    and ``0.1.1ether`` are usage errors (exit 2) before anything is signed."""
    user, node = actors.users[1], actors.node.address
    common = _common(network, tmp_path)
    channel = network.payments.channel
    start = channel(user.address, node).deposited
    expected = start
    env = _key_env(user)
    for text, wei in (("0.1 ether", 10**17), (" 5000 ", 5000), ("1ETH", 10**18)):
        result = CliRunner().invoke(account_app, ["deposit", node, text, "--yes", *common], env=env)
        expected += wei
        assert result.exit_code == 0 and channel(user.address, node).deposited == expected, result.output
    for text in ("1.5wei", "1e3gwei", "0.1.1ether", "1 0", "ether"):
        result = CliRunner().invoke(account_app, ["deposit", node, text, "--yes", *common], env=env)
        assert result.exit_code == 2 and "Invalid value for amount" in result.output, (text, result.output)
    assert channel(user.address, node).deposited == expected


@pytest.mark.anvil
def test_defence_a_leaving_node_and_contract_refusals_are_one_line_and_change_nothing(
    network: Contracts, actors: Actors, tmp_path: Path
) -> None:
    """A node that deregistered gets no deposit (its stake is unbonding: nothing behind new work);
    the zero address is refused even with ``--force`` (the contract's ``ZeroAddress``); ``unbond``
    above the stake and a ``--cancel`` with no request name the decoded custom error in one line."""
    user, node = actors.users[1], actors.node
    common = _common(network, tmp_path)
    node_env = _key_env(node, "SUPERNET_IDENTITY__PRIVATE_KEY")
    too_much = CliRunner().invoke(node_app, ["unbond", "100ether", "--yes", *common], env=node_env)
    assert too_much.exit_code == 1 and "AmountExceedsStake" in too_much.output, too_much.output
    left = CliRunner().invoke(node_app, ["deregister", "--yes", *common], env=node_env)
    assert left.exit_code == 0, left.output
    for target, extra, says in (
        (node.address, [], "not a registered node"),
        ("0x" + "00" * 20, ["--force"], "ZeroAddress"),
    ):
        result = CliRunner().invoke(
            account_app, ["deposit", target, "1gwei", "--yes", *extra, *common], env=_key_env(user)
        )
        assert result.exit_code == 1 and says in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
        assert network.payments.channel(user.address, target).deposited == (
            10**18 if target == node.address else 0
        )
    args = ["withdraw", node.address, "--cancel", *common]
    cancel = CliRunner().invoke(account_app, args, env=_key_env(user))
    assert cancel.exit_code == 1 and "NoWithdrawalRequested" in cancel.output, cancel.output


# ------------------------------------------------------------------ keys: another user on the machine


def test_defence_keys_new_into_a_missing_directory_is_one_line(tmp_path: Path) -> None:
    """Severity low. ``supernet keys new --keystore nodir/node.json`` (a typo in the directory)
    prints a FileNotFoundError traceback: ``keys new`` catches KeyLoadError only, and
    `cli_errors.explain` knows no OSError. Nothing is written; the new key is simply lost.

    Fix: `write_keystore` turns an ``OSError`` from ``os.open`` into a KeyLoadError naming the path
    and its reason (as `check_private` already does for reading)."""
    target = tmp_path / "nodir" / "node.json"
    proc = subprocess.run(
        [sys.executable, "-m", "supernet.sdk.cli", "keys", "new", "--keystore", str(target)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SUPERNET_KEY_PASSWORD": "correct horse"},
    )
    assert proc.returncode == 1 and not target.exists()
    assert "Traceback" not in proc.stderr and "nodir" in proc.stderr, proc.stderr[-400:]


def test_defence_key_files_in_every_common_shape_load_and_odd_files_are_refused(tmp_path: Path) -> None:
    """What a careless operator writes into a key file loads when it is the key (``0x``, bare,
    ``0X``, uppercase, LF or CRLF), and is refused naming the file, never the key, when it is not;
    a directory, a FIFO, a dangling link and a link to a world-readable file are refused; a link to
    a 0600 file is the file."""
    acct = Account.create()
    hexkey = bytes(acct.key).hex()

    def key_file(name: str, text: str, mode: int = 0o600) -> Path:
        path = tmp_path / name
        path.write_text(text, newline="")
        path.chmod(mode)
        return path

    for name, text in {
        "prefixed": "0x" + hexkey,
        "bare": hexkey,
        "upper": "0X" + hexkey.upper(),
        "lf": "0x" + hexkey + "\n",
        "crlf": "0x" + hexkey + "\r\n",
    }.items():
        assert load_account(key_file=key_file(name, text)).address == acct.address, name
    bad = {
        "empty": "",
        "short": "0x" + hexkey[:-2],
        "padded": "0x" + hexkey + "00",
        "spaced": "0x" + hexkey[:20] + " " + hexkey[20:],
        "zero": "0x" + "00" * 32,
        "beyond_n": "0x" + "ff" * 32,
        "quoted": f'"0x{hexkey}"',
        "bom": "\ufeff0x" + hexkey,
    }
    for name, text in bad.items():
        with pytest.raises(KeyLoadError, match="does not hold a 32-byte hex private key") as err:
            load_account(key_file=key_file(name, text))
        assert hexkey[:12] not in str(err.value) and hexkey[-12:] not in str(err.value), name
    (tmp_path / "dir").mkdir(mode=0o700)
    os.mkfifo(tmp_path / "fifo", 0o600)
    os.symlink(key_file("public", "0x" + hexkey, 0o644), tmp_path / "to_public")
    os.symlink(tmp_path / "nothing", tmp_path / "dangling")
    for name, says in (
        ("dir", "not a regular file"),
        ("fifo", "not a regular file"),  # refused before any open: a FIFO would block the read
        ("to_public", "chmod 600"),
        ("dangling", "cannot read"),
    ):
        with pytest.raises(KeyLoadError, match=says):
            load_account(key_file=tmp_path / name)
    os.symlink(tmp_path / "crlf", tmp_path / "to_private")
    assert load_account(key_file=tmp_path / "to_private").address == acct.address
    # the CLI that encrypts an existing key takes the same shapes
    made = CliRunner().invoke(
        keys_app,
        ["new", "--keystore", str(tmp_path / "k.json"), "--key-file", str(tmp_path / "upper")],
        env={"SUPERNET_KEY_PASSWORD": "correct horse"},
    )
    assert made.exit_code == 0 and made.output.strip() == acct.address, made.output


def test_defence_keys_new_never_writes_through_a_link_and_never_echoes_the_passphrase(
    tmp_path: Path,
) -> None:
    """Another user who can plant a link where an operator will write a keystore gets nothing:
    ``keys new`` refuses an existing path, a dangling link included (O_EXCL), and the link's target
    is not created. A wrong passphrase, and a keystore whose KDF is unusable, are refused without
    the passphrase from ``$SUPERNET_KEY_PASSWORD`` in the message."""
    target = tmp_path / "elsewhere" / "stolen.json"
    target.parent.mkdir()
    link = tmp_path / "node.json"
    os.symlink(target, link)
    env = {"SUPERNET_KEY_PASSWORD": "s3cret-Passphrase"}
    made = CliRunner().invoke(keys_app, ["new", "--keystore", str(link)], env=env)
    assert made.exit_code == 1 and "not overwriting" in made.output, made.output
    assert not target.exists()

    acct = Account.create()
    store = write_keystore(tmp_path / "real.json", acct, "right-one", **FAST)
    wrong = CliRunner().invoke(keys_app, ["address", "--keystore", str(store)], env=env)
    assert wrong.exit_code != 0 and "wrong passphrase" in wrong.output
    doc = json.loads(store.read_text())
    doc["crypto"]["kdf"] = "argon2"
    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps(doc))
    odd.chmod(0o600)
    unusable = CliRunner().invoke(keys_app, ["address", "--keystore", str(odd)], env=env)
    assert unusable.exit_code != 0 and "not a usable keystore" in unusable.output, unusable.output
    for out in (made.output, wrong.output, unusable.output):
        assert "s3cret" not in out and bytes(acct.key).hex()[:12] not in out
    right = CliRunner().invoke(
        keys_app, ["address", "--keystore", str(store)], env={"SUPERNET_KEY_PASSWORD": "right-one"}
    )
    assert right.output.strip() == acct.address
