"""Adversarial / demanding-user review of the operators' and users' tools: the ``supernet`` CLI
(``task``, ``account``, ``keys``, ``node``, ``validator``), configuration loading (TOML, env, defaults),
key handling, and the SDK calls the commands make.

``test_known_limit_*`` pass while the hole exists (each shows the attack concretely, its docstring
says the harm and a fix); ``test_defence_*`` assert an attack the code already defeats. Real parts:
a real Anvil with the real contracts (``network``/``deployed``), the real CLI (in-process with
typer's runner, or as a subprocess of the venv through ``supernet.sdk.cli:main``), the real SDK
`Client`, the real node service on the FAKE executor/chain of ``tests/node_fixtures.py`` where only
its batching is under test. A malicious "node" is a small stdlib HTTP server (the attacker's own
code; nothing of the user's side is replaced).

What was tried, and what was found:

1. FIXED  ``task submit --node URL`` paid whatever address the server at URL claims in its
   ``GET /v1/node``: an unregistered, unstaked address gets an automatic 0.01 ETH deposit (the
   CLI's ``--deposit`` default, no prompt) and a redeemable voucher for its quoted fee. Now whom a
   task pays is decided by the chain (`Client._registered`): an address that is not an active node
   gets nothing.
2. FIXED  ``account deposit NODE AMOUNT`` deposited to any address; now only to an active node
   (``--force`` to pre-fund), and the prompt names the node's endpoint and stake.
3. FIXED  a validator key with one stray character (a CRLF env file, a ``0X`` prefix) makes
   ``validator run`` print a traceback whose pydantic ``input_value`` holds 43 of the key's 64 hex
   digits; an unquoted TOML key (``private_key = 0x...``, a TOML integer) prints most of its
   decimal digits for the node and the validator alike. Now no settings model echoes a value
   (``hide_input_in_errors``) and the CLI reports a ValidationError in one line.
4. FIXED  a typo in a key of a config *section* (node ``[pricing]``, ``[api]``, ``[batch]``,
   ``[chain]``, ``[identity]``; validator ``[chain]``, ``[model]``) is silently ignored and the
   default used, while a typo in a section name is refused. Now every section of both derives from
   one `supernet.node.service.config.Section` (unknown keys refused).
5. FIXED  ``batch.promise_s`` below ``batch.max_age_s`` was accepted: every receipt's signed promise
   fell due before its batch was even cut, so every user could slash the (honest) node. Now
   ``promise_s`` must be at least ``commit_margin_s`` (2 * max_age_s + 60).
6. FIXED  ``keys new`` encrypted a key under an empty passphrase without a word; now refused.
7. FIXED  an amount out of uint256 range (``account deposit``) or a typo in ``task submit --offer``
   ended in a Python traceback instead of the one-line error (nothing is sent); now a usage error.
8. holds  unit confusion (``1e18``, ``-1``, ``0x10``, ``1.5`` wei, ``0.5wei``, non-ASCII digits, 0)
   is refused by ``account deposit`` and ``node unbond`` with exit 2 and nothing changes on chain.
9. holds  keystores and the node's own key file are created mode 0600 even under ``umask 0``.
10. holds a node URL quoting a fee above the (default) ``max_fee`` gets no deposit, no voucher.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from chain_fixtures import MODEL_COMPUTE, MODEL_ID, MODEL_WEIGHTS_ID, Actors
from eth_account import Account
from node_fixtures import FAKE_AGENT_HASH, FakeExecutor, make_fake_node
from pydantic import ValidationError
from supernet.node.service.cli import app as node_app
from supernet.node.service.config import NodeSettings
from supernet.node.service.identity import load_account as node_account
from supernet.sdk.chain import Contracts
from supernet.sdk.client_cli import app as task_app
from supernet.sdk.keys import load_keystore, write_keystore
from supernet.sdk.keys_cli import app as keys_app
from supernet.sdk.money_cli import app as account_app
from supernet.validator.config import ValidatorSettings
from typer.testing import CliRunner

from tests.integration.test_cli_errors import supernet  # `supernet ARGS` as a user runs it

FEE = 10**12


def _key_env(acct: Any, var: str = "SUPERNET_USER_KEY") -> dict[str, str]:
    return {var: "0x" + bytes(acct.key).hex()}


def _common(c: Contracts, tmp_path: Path) -> list[str]:
    dep = c.deployment.save(tmp_path / "deployment.json")
    return ["--rpc", c.w3.provider.endpoint_uri, "--deployment", str(dep)]  # type: ignore[attr-defined]


# ------------------------------------------------------------------ a malicious "node" at a URL


@contextmanager
def _impostor(claimed: str, c: Contracts, task_fee: int) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """An HTTP server that answers the node API as a node named ``claimed`` would (a well-formed
    ``/v1/node`` with a chat agent profile), records every task body posted, and refuses each task
    (400) once it holds the voucher. Yields (its URL, the bodies posted)."""
    cards = FakeExecutor().agent_cards()
    info = {
        "address": claimed,
        "chainId": c.domain.chain_id,
        "verifyingContract": c.domain.verifying_contract,
        "taskFee": task_fee,
        # the model the chain's nodes registered: the address, not the model, is what is tried here
        "models": ["0x" + MODEL_ID.hex()],
        "modelNames": {"fake-model": "0x" + MODEL_ID.hex()},
        "modelFormats": {"0x" + MODEL_ID.hex(): {"weights": MODEL_WEIGHTS_ID, "compute": MODEL_COMPUTE}},
        "agents": {"chat": FAKE_AGENT_HASH},
        "agentCards": cards,
    }
    posted: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_: Any) -> None:
            pass

        def _send(self, code: int, doc: Any) -> None:
            body = json.dumps(doc).encode()
            self.send_response(code)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path == "/healthz":
                self._send(200, {"status": "ok"})
            elif self.path == "/v1/node":
                self._send(200, info)
            elif self.path.startswith("/v1/accounts/"):
                user = self.path.rsplit("/", 1)[1]
                self._send(200, {"user": user, "lastNonce": 0, "billed": 0, "redeemed": 0})
            else:
                self._send(404, {"error": {"message": "no such thing"}})

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            posted.append(json.loads(self.rfile.read(length)))
            self._send(400, {"error": {"code": "bad_request", "message": "try again later"}})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", posted
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.anvil
def test_defence_task_submit_to_a_node_url_pays_no_unregistered_unstaked_address(
    network: Contracts, actors: Actors, tmp_path: Path
) -> None:
    """``supernet task submit TEXT --node URL`` trusts the address the server at URL names in its
    own ``GET /v1/node``: the client never asks the chain whether that address is a registered,
    staked node, nor whether URL is the endpoint registered for it (discovery does, from the chain;
    the ``node_url`` path of `Client._choose` builds ``NodeChoice(info.address, node_url, 0, 0,
    info)`` from the server's word alone).

    Attack: any server the user is pointed at (a phishing "fast node" link, a typo'd or hijacked
    host, plain-HTTP MITM) claims an address of its own that never registered or staked. The CLI,
    without any prompt, deposits 0.01 ETH (``--deposit`` default, 10,000x the default fee) into the
    user's channel to that address and signs a voucher for the quoted fee (up to the default
    ``max_fee`` of 1e15); the server answers 400, the user sees an error, yet the stranger redeems
    the voucher on chain. Nothing can ever be slashed or refunded: there is no stake behind the
    receipts (the whole "only fees of a node that cheats, refunded from its stake" guarantee is
    void), and the rest of the deposit is locked for the withdrawal delay.

    Fix (by design): one code path decides whom to pay: resolve ``node_url`` through the registry
    (``ServiceManager.getNode(info.address)``) and refuse unless the node is active, holds at least
    the slash amount, and its registered endpoint is ``node_url`` (or take ``--node ADDRESS`` and
    read the URL from the chain); and never make a deposit the user did not confirm (``--yes`` /
    an explicit ``--deposit``)."""
    user, stranger = actors.users[2], Account.create()
    assert not network.service_manager.get_node(stranger.address).registered
    for claimed in (stranger.address, actors.validators[0].address):  # no node / a validator
        with _impostor(claimed, network, task_fee=10**15) as (url, posted):
            args = ["submit", "hello", *_common(network, tmp_path), "--node", url, "--no-verify"]
            args += ["--state-dir", str(tmp_path / "state")]
            result = CliRunner().invoke(task_app, args, env=_key_env(user))
        assert result.exit_code == 1 and "not an active node on chain" in result.output, result.output
        assert posted == [], "no voucher left the client"
        assert network.payments.channel(user.address, claimed).deposited == 0, "nothing deposited"
    # the same server naming a registered, staked node, at a URL that is not its registered
    # endpoint, gets nothing either (`Client._read_auth`: no read grant, so no voucher); once the
    # node's registered endpoint is that URL, the chain vouches for both: paid
    with _impostor(actors.node.address, network, task_fee=FEE) as (url, posted):
        args = ["submit", "hello", *_common(network, tmp_path), "--node", url, "--no-verify"]
        args += ["--state-dir", str(tmp_path / "state")]
        result = CliRunner().invoke(task_app, args, env=_key_env(user))
        assert result.exit_code == 1 and "is not the endpoint" in result.output, result.output
        assert posted == [], "no voucher left the client"
        network.as_account(actors.node).service_manager.update_endpoint(url)
        result = CliRunner().invoke(task_app, args, env=_key_env(user))
    assert len(posted) == 1, result.output
    assert int(posted[0]["voucher"]["cumulativeAmount"]) >= FEE


@pytest.mark.anvil
def test_defence_a_node_url_quoting_a_fee_above_max_fee_gets_no_deposit_and_no_voucher(
    network: Contracts, actors: Actors, tmp_path: Path
) -> None:
    """A node (or impostor) at a URL quoting a task fee above the default ``max_fee`` (1e15) is
    refused before any deposit or signature; so is any node under a negative ``--max-fee``."""
    user, who = actors.users[1], actors.node2.address
    before = network.payments.channel(user.address, who).deposited
    for fee, extra in ((10**15 + 1, []), (FEE, ["--max-fee", "-5"])):
        with _impostor(who, network, task_fee=fee) as (url, posted):
            args = ["submit", "hello", *_common(network, tmp_path), "--node", url, "--no-verify", *extra]
            args += ["--state-dir", str(tmp_path / "state")]
            result = CliRunner().invoke(task_app, args, env=_key_env(user))
        assert result.exit_code == 1 and "above" in result.output, result.output
        assert posted == [], "no voucher left the client"
    assert network.payments.channel(user.address, who).deposited == before


@pytest.mark.anvil
def test_defence_account_deposit_pays_no_address_that_is_no_node(
    network: Contracts, actors: Actors, tmp_path: Path
) -> None:
    """``supernet account deposit NODE AMOUNT`` sends the deposit to any non-zero address: a typo'd
    or pasted wrong address (a node's *payout* wallet, a validator, an exchange) is accepted with
    the same prompt as a real node ("deposit 0.5 ETH into your channel to 0x..?") and exit 0. No
    node can ever use that channel; the money is locked until a withdrawal request and its delay
    (1 day by default) have passed, and a user who does not know to withdraw loses track of it.

    Fix: ``deposit`` (and `Client.ensure_deposit`) read ``ServiceManager.getNode(NODE)`` and refuse
    an address that is not an active registered node (``--force`` for the rare pre-funding case);
    the prompt names the node's endpoint and stake so the user sees whom they pay."""
    user, not_a_node = actors.users[0], actors.validators[0].address
    args = ["deposit", not_a_node, "0.5ether", *_common(network, tmp_path)]
    result = CliRunner().invoke(account_app, args, input="y\n", env=_key_env(user))
    assert result.exit_code == 1 and "not a registered node" in result.output, result.output
    assert network.payments.channel(user.address, not_a_node).deposited == 0
    forced = CliRunner().invoke(account_app, [*args, "--force"], input="y\n", env=_key_env(user))
    assert forced.exit_code == 0, forced.output  # pre-funding, asked for in so many words
    assert network.payments.channel(user.address, not_a_node).deposited == 5 * 10**17
    node = actors.node.address
    shown = CliRunner().invoke(
        account_app, ["deposit", node, "1gwei", *_common(network, tmp_path)], input="n\n", env=_key_env(user)
    )
    endpoint = network.service_manager.get_node(node).endpoint
    assert endpoint in shown.output and "stake" in shown.output, shown.output  # whom the user pays


# ------------------------------------------------------------------ keys


def test_defence_a_malformed_key_is_never_printed_in_the_error(tmp_path: Path) -> None:
    """``ValidatorSettings``' key check (`ChainSettings._key_is_hex`) runs on the raw string, and
    pydantic's ``ValidationError`` shows ``input_value`` as the first 24 and last 24 characters of
    its repr. A key with one stray character - ``\\r`` from a CRLF ``.env`` file, a trailing space,
    ``0X`` - makes ``supernet validator run`` end in a traceback (the root's one-line handler does
    not know ValidationError) holding 43 of the 64 hex digits of the real key. The 21 unknown hex
    digits are one contiguous run: with the validator's public key (on chain from its first
    transaction) a baby-step giant-step search over 2^84 takes ~2^42 steps. The log of a crash-
    looping container keeps it. Likewise an unquoted TOML key (``private_key = 0x...`` is a TOML
    integer) for the node and the validator prints ~49 of its 77 decimal digits.

    Fix: never let pydantic echo a secret: declare the key fields with a ``BeforeValidator`` that
    accepts only ``str`` and raises a message-only error (``hide_input_in_errors=True`` in the
    settings' model_config, for the node's and validator's settings), and catch ``ValidationError``
    in `supernet.sdk.cli_errors.explain` as one line."""
    acct = Account.create()
    key = "0x" + bytes(acct.key).hex()
    code, out = supernet(
        "validator",
        "run",
        "--deployment",
        str(tmp_path / "deployment.json"),
        env={"SUPERNET_VALIDATOR_CHAIN__KEY": key + "\r"},
    )
    assert code == 1 and "Traceback" not in out and "chain.key" in out, out  # one line, the field named
    assert key[2:10] not in out and key[-8:] not in out, "no part of the key is printed"

    toml = tmp_path / "node.toml"
    toml.write_text(f"[identity]\nprivate_key = {key}\n")  # unquoted: a TOML hex integer
    with pytest.raises(ValidationError) as node_err:
        NodeSettings.load(toml)
    assert str(int(key, 16))[:8] not in str(node_err.value)
    vtoml = tmp_path / "validator.toml"
    vtoml.write_text(f'[chain]\ndeployment = "d.json"\nkey = {key}\n')
    with pytest.raises(ValidationError) as val_err:
        ValidatorSettings.from_toml(vtoml)
    assert str(int(key, 16))[:8] not in str(val_err.value)


def test_defence_keys_new_refuses_an_empty_passphrase(tmp_path: Path) -> None:
    """``supernet keys new`` takes ``$SUPERNET_KEY_PASSWORD`` as it is: an empty value (an unset
    variable in a compose file becomes ``""``; a password file holding only a newline is stripped
    to ``""``) encrypts the key under the empty passphrase, prints the address and exits 0. The
    keystore then looks protected (mode 0600, scrypt) but is not: anyone who copies it decrypts it.

    Fix: `supernet.sdk.keys.passphrase` refuses an empty (or whitespace-only) passphrase for
    writing (a minimum length), and ``keys new`` says so."""
    path = tmp_path / "node.json"
    for empty in ("", "  "):
        made = CliRunner().invoke(
            keys_app, ["new", "--keystore", str(path)], env={"SUPERNET_KEY_PASSWORD": empty}
        )
        assert made.exit_code == 1 and "empty passphrase" in made.output, made.output
        assert not path.exists(), "no keystore written"
    made = CliRunner().invoke(keys_app, ["new", "--keystore", str(path)], env={"SUPERNET_KEY_PASSWORD": "pw"})
    assert made.exit_code == 0 and load_keystore(path, "pw").address == made.output.strip()


def test_defence_keystores_and_the_node_key_are_private_even_under_umask_0(tmp_path: Path) -> None:
    """A permissive umask (0, as some container images run) does not widen the key files the tools
    create: ``O_CREAT`` with mode 0600 keeps group and others out; the node's key created on first
    start (chain disabled, no key configured) is 0600 too, and a second start reuses it."""
    old = os.umask(0)
    try:
        ks = write_keystore(tmp_path / "k.json", Account.create(), "pw", kdf="pbkdf2", iterations=2)
        settings = NodeSettings.load(None, data_dir=tmp_path / "node")
        first = node_account(settings)
    finally:
        os.umask(old)
    assert ks.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "node" / "node.key").stat().st_mode & 0o777 == 0o600
    assert node_account(settings).address == first.address


# ------------------------------------------------------------------ configuration


def test_defence_a_typo_inside_a_config_section_is_refused(tmp_path: Path) -> None:
    """`NodeSettings` forbids unknown top-level keys (``[batchs]`` is refused) but its sections
    (``ApiSettings``, ``PricingSettings``, ``BatchSettings``, ``ChainSettings``,
    ``IdentitySettings``, ... plain ``BaseModel``s) ignore unknown keys, as do every section of
    `ValidatorSettings`. So a misspelt safety setting falls back to its default without a word:

    - ``[api] max_input_char = 1000``: the node keeps accepting 16 KiB inputs;
    - ``[pricing] price_per_token = 5``: the node registers and charges 1 gwei per token;
    - ``[batch] promise = 60``: promises stay at 600 s;
    - ``[chain] enable = true``: the node runs off chain, its receipts under a dev domain;
    - ``[identity] keyfile = ...``: with the chain off, a new random key is made in data_dir;
    - validator ``[chain] confirmation = 12``: the validator acts at the chain head (0 blocks);
    - validator ``[model] arbiter_fraction = 0.1``: ignored (the operator thinks it applied).

    Fix (by design, for the whole class): one base class for every config section with
    ``model_config = {"extra": "forbid"}`` (already used by ``[access]``, ``[[mcp.servers]]``,
    ``[[engine.models]]``), and the validator's settings too; a test walking every section."""
    toml = tmp_path / "node.toml"
    toml.write_text(
        "[api]\nmax_input_char = 1000\n[pricing]\nprice_per_token = 5\n[batch]\npromise = 60\n"
        '[chain]\nenable = true\nrpc_url = "http://127.0.0.1:8545"\ndeployment = "d.json"\n'
        '[identity]\nkeyfile = "/secure/node.key"\n'
    )
    with pytest.raises(ValidationError) as err:
        NodeSettings.load(toml)
    wrong = {".".join(str(p) for p in e["loc"]) for e in err.value.errors()}
    assert wrong == {
        "api.max_input_char",
        "pricing.price_per_token",
        "batch.promise",
        "chain.enable",
        "identity.keyfile",
    }, wrong
    bad_section = tmp_path / "bad.toml"
    bad_section.write_text("[batchs]\nmax_size = 1\n")
    with pytest.raises(ValidationError, match="batchs"):
        NodeSettings.load(bad_section)
    # the same words through the environment
    os.environ["SUPERNET_PRICING__PRICE_PER_TOKEN"] = "5"
    try:
        with pytest.raises(ValidationError, match="price_per_token"):
            NodeSettings.load(None)
    finally:
        del os.environ["SUPERNET_PRICING__PRICE_PER_TOKEN"]

    vtoml = tmp_path / "validator.toml"
    vtoml.write_text(
        '[chain]\ndeployment = "d.json"\nkey = "0x' + "11" * 32 + '"\nconfirmation = 12\n'
        "[model]\narbiter_fraction = 0.1\n"
    )
    with pytest.raises(ValidationError) as verr:
        ValidatorSettings.from_toml(vtoml)
    vwrong = {".".join(str(p) for p in e["loc"]) for e in verr.value.errors()}
    assert vwrong == {"chain.confirmation", "model.arbiter_fraction"}, vwrong


async def test_defence_a_promise_shorter_than_the_batch_can_take_is_refused(tmp_path: Path) -> None:
    """``[batch] promise_s`` is only bounded by ``gt=0`` (and above by the chain's
    MAX_PROMISE_DELAY at start-up); its own description says "keep it well above max_age_s" but
    nothing checks it. With ``promise_s = 1`` and ``max_age_s = 3`` the node signs, with each
    receipt, a promise to commit it within 1 s, then cuts the batch 3 s later: every promise is
    broken by construction, and every user can open an omission claim that the node cannot answer
    (``OmissionManager.answerOmission`` reverts ``CommittedTooLate``) - an honest but misconfigured
    node is slashed on every task.

    Fix: validate the pair at load (`BatchSettings` model validator): ``promise_s >= 2 * max_age_s
    + 60`` (the worker's own ``commit_margin_s``), refusing the config with that formula."""
    with pytest.raises(ValidationError, match=r"promise_s \(1\) must be at least"):
        await make_fake_node(tmp_path / "n", batch={"max_size": 16, "max_age_s": 3.0, "promise_s": 1})
    with pytest.raises(ValidationError, match="promise_s"):  # 2 * 30 + 60 = 120 > 100
        NodeSettings.load(None, batch={"max_age_s": 30.0, "promise_s": 100})
    ok = NodeSettings.load(None, batch={"max_age_s": 30.0, "promise_s": 120})
    assert ok.batch.commit_margin_s == 120  # what the worker keeps between a task's end and its due time


# ------------------------------------------------------------------ amounts and bad input


@pytest.mark.anvil
def test_defence_unit_confusion_is_refused_and_changes_nothing(
    network: Contracts, actors: Actors, tmp_path: Path
) -> None:
    """Amounts typed as a float exponent, negative, hex, a fraction of a wei, non-ASCII digits or
    zero are refused by ``account deposit`` (and ``node unbond``) with exit 2 before anything is
    signed (``unbond 0`` reaches the contract, which reverts ``ZeroAmount``: exit 1): the channel
    and the stake are unchanged. (A bare number is wei, the safe direction:
    ``deposit NODE 1`` is 1 wei, never 1 ether.)"""
    user, node = actors.users[0], actors.node
    common = _common(network, tmp_path)
    deposited = network.payments.channel(user.address, node.address).deposited
    stake = network.service_manager.get_operator(node.address).stake
    for text in ("1e18", "-1", "0x10", "1.5", "0.5wei", "\u0661\u0660", "1ether2", "0", "0ether"):
        dep = CliRunner().invoke(
            account_app, ["deposit", node.address, text, "--yes", *common], env=_key_env(user)
        )
        assert dep.exit_code == 2, (text, dep.output)
        unb = CliRunner().invoke(
            node_app, ["unbond", text, "--yes", *common], env=_key_env(node, "SUPERNET_IDENTITY__PRIVATE_KEY")
        )
        assert unb.exit_code != 0, (text, unb.output)
    assert network.payments.channel(user.address, node.address).deposited == deposited
    assert network.service_manager.get_operator(node.address).stake == stake
    assert network.service_manager.get_operator(node.address).unbonding == 0


@pytest.mark.anvil
def test_defence_bad_amounts_are_usage_errors_not_tracebacks(
    deployed: Contracts, actors: Actors, tmp_path: Path
) -> None:
    """Two amount mistakes escape the one-line error handling (nothing is sent either way):

    - ``account deposit NODE 1e80ether``-like amounts beyond uint256: `supernet.sdk.units.
      parse_amount` lets eth-utils' plain ``ValueError`` ("Resulting wei value must be between 0
      and 2**256 - 1") out instead of an ``AmountError``, so ``_amount`` does not turn it into a
      BadParameter and the root prints a traceback;
    - ``task submit --offer 3000gwe``: the offer is parsed inside the coroutine after connecting,
      and only ``ClientError`` is caught there: the ``AmountError`` surfaces as a traceback.

    Fix: ``parse_amount`` wraps every conversion error as ``AmountError`` (bound check first), and
    every amount option is parsed by one typer ``click_type`` (e.g. ``AmountParam``) before the
    command runs, so each is a usage error (exit 2) naming the option."""
    huge = "9" * 80
    code, out = supernet(
        "account", "deposit", actors.node.address, huge, "--yes", "--deployment", str(tmp_path / "none.json")
    )
    assert code == 2 and "Traceback" not in out and "too large" in out, out
    dep = str(deployed.deployment.save(tmp_path / "deployment.json"))
    rpc = deployed.w3.provider.endpoint_uri  # type: ignore[attr-defined]
    code, out = supernet(
        "task",
        "submit",
        "hi",
        "--rpc",
        rpc,
        "--deployment",
        dep,
        "--node",
        "http://127.0.0.1:9",
        "--offer",
        "3000gwe",
        env={**_key_env(actors.users[0]), "SUPERNET_STATE_DIR": str(tmp_path / "state")},
    )
    assert code == 2 and "Traceback" not in out and "--offer" in out, out
