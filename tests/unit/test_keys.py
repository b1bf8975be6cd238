"""Keys at rest: V3 keystores, private files, and no raw key on a command line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from eth_account import Account
from supernet.sdk.keys import (
    PASSWORD_ENV,
    KeyLoadError,
    decrypt,
    load_account,
    load_keystore,
    write_keystore,
)
from typer.testing import CliRunner

# The PBKDF2 test vector of the Web3 Secret Storage Definition (ethereum.org, "Web3 secret storage
# definition", test vectors): what geth and every V3 implementation must decrypt.
SPEC_VECTOR = {
    "crypto": {
        "cipher": "aes-128-ctr",
        "cipherparams": {"iv": "6087dab2f9fdbbfaddc31a909735c1e6"},
        "ciphertext": "5318b4d5bcd28de64ee5559e671353e16f075ecae9f99c7a79a38af5f869aa46",
        "kdf": "pbkdf2",
        "kdfparams": {
            "c": 262144,
            "dklen": 32,
            "prf": "hmac-sha256",
            "salt": "ae3cd4e7013836a3df6bd7241b12db061dbe2c6785853cce422d148a624ce0bd",
        },
        "mac": "517ead924a9d0dc3124507e3393d175ce3ff7c1e96529c6c555ce9e51205e9b2",
    },
    "id": "3198bc9c-6672-5ab3-d995-4942343ae5b6",
    "version": 3,
}
SPEC_KEY = "0x7a28b5ba57c53603b0b07b56bba752f7784bf506fa95edc395f5cf6c7514fe9d"
FAST = {"kdf": "pbkdf2", "iterations": 2}  # tests only: a real keystore uses scrypt's defaults


def private_file(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_the_specification_vector_decrypts_and_a_wrong_passphrase_is_refused() -> None:
    assert decrypt(SPEC_VECTOR, "testpassword").address == Account.from_key(SPEC_KEY).address
    with pytest.raises(KeyLoadError, match="wrong passphrase"):
        decrypt(SPEC_VECTOR, "testpasswordd")
    with pytest.raises(KeyLoadError, match="version 3"):
        decrypt({**SPEC_VECTOR, "version": 1}, "testpassword")


def test_a_written_keystore_is_private_round_trips_and_is_never_overwritten(tmp_path: Path) -> None:
    acct = Account.create()
    path = write_keystore(tmp_path / "k.json", acct, "pw", **FAST)
    assert path.stat().st_mode & 0o777 == 0o600
    assert json.loads(path.read_text())["version"] == 3
    assert load_keystore(path, "pw").address == acct.address
    with pytest.raises(KeyLoadError, match="not overwriting"):
        write_keystore(path, Account.create(), "pw", **FAST)
    assert load_keystore(path, "pw").address == acct.address


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_secret_files_others_can_read_are_refused(tmp_path: Path, mode: int) -> None:
    acct = Account.create()
    key_file = private_file(tmp_path / "node.key", acct.key.hex())
    keystore = write_keystore(tmp_path / "k.json", acct, "pw", **FAST)
    password = private_file(tmp_path / "pw.txt", "pw\n")
    assert load_account(key_file=key_file).address == acct.address
    assert load_account(keystore=keystore, password_file=password).address == acct.address
    for victim in (key_file, keystore, password):
        victim.chmod(mode)
        with pytest.raises(KeyLoadError, match="chmod 600"):
            load_account(keystore=keystore, password_file=password) if victim != key_file else load_account(
                key_file=key_file
            )
        victim.chmod(0o600)


def test_exactly_one_key_source_and_errors_never_echo_the_key(tmp_path: Path) -> None:
    with pytest.raises(KeyLoadError, match="exactly one"):
        load_account()
    with pytest.raises(KeyLoadError, match="exactly one"):
        load_account(key=SPEC_KEY, key_file=tmp_path / "k")
    secret = "0x" + "zz" * 32
    with pytest.raises(KeyLoadError) as exc:
        load_account(key=secret)
    assert secret not in str(exc.value)
    keystore = write_keystore(tmp_path / "k.json", Account.create(), "pw", **FAST)
    with pytest.raises(KeyLoadError, match=PASSWORD_ENV):
        load_account(keystore=keystore, env={})
    assert load_account(keystore=keystore, env={PASSWORD_ENV: "pw"}).address


def test_no_command_takes_a_raw_key_on_its_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ps` shows arguments to every user: a raw --key is refused; the environment variable, a key
    file or a keystore are accepted (those commands then fail later, on the unreachable chain)."""
    from supernet.sdk.chain.cli import app as contracts
    from supernet.sdk.client_cli import app as task
    from supernet.validator.cli import app as validator

    runner = CliRunner()
    dead = "http://127.0.0.1:9"
    cases = [
        (contracts, ["deploy", "--rpc", dead], "SUPERNET_PRIVATE_KEY"),
        (task, ["receipt", "0x" + "00" * 32, "--rpc", dead], "SUPERNET_USER_KEY"),
        (
            validator,
            ["run", "--rpc", dead, "--deployment", str(tmp_path / "none.json")],
            "SUPERNET_VALIDATOR_CHAIN__KEY",
        ),
    ]
    for app, args, env in cases:
        refused = runner.invoke(app, [*args, "--key", SPEC_KEY])
        assert refused.exit_code == 2, refused.output
        assert "visible to every user" in refused.output
        accepted = runner.invoke(app, args, env={env: SPEC_KEY})
        assert "visible to every user" not in accepted.output
        assert accepted.exit_code != 0  # nothing to talk to, but the key itself was taken


def test_keys_cli_creates_a_keystore_every_role_can_load(tmp_path: Path) -> None:
    from supernet.node.service.config import NodeSettings
    from supernet.node.service.identity import load_account as node_account
    from supernet.sdk.keys_cli import app as keys
    from supernet.validator.config import ChainSettings

    password = private_file(tmp_path / "pw.txt", "correct horse\n")
    path = tmp_path / "node.json"
    made = CliRunner().invoke(keys, ["new", "--keystore", str(path), "--password-file", str(password)])
    assert made.exit_code == 0, made.output
    address = made.output.strip()
    assert path.stat().st_mode & 0o777 == 0o600
    shown = CliRunner().invoke(keys, ["address", "--keystore", str(path), "--password-file", str(password)])
    assert shown.output.strip() == address
    wrong = private_file(tmp_path / "wrong.txt", "battery staple")
    refused = CliRunner().invoke(keys, ["address", "--keystore", str(path), "--password-file", str(wrong)])
    assert refused.exit_code != 0 and "wrong passphrase" in refused.output
    settings = NodeSettings.load(None, identity={"keystore": str(path), "password_file": str(password)})
    assert node_account(settings).address == address
    chain = ChainSettings(deployment=tmp_path / "d.json", keystore=path, password_file=password)
    assert chain.account().address == address
    with pytest.raises(ValueError, match="exactly one"):
        ChainSettings(deployment=tmp_path / "d.json", keystore=path, key=SPEC_KEY)  # type: ignore[arg-type]


def test_the_node_refuses_a_key_file_others_can_read(tmp_path: Path) -> None:
    from supernet.node.service.config import NodeSettings
    from supernet.node.service.identity import load_account as node_account

    key = tmp_path / "node.key"
    key.write_text(SPEC_KEY)
    os.chmod(key, 0o644)
    with pytest.raises(KeyLoadError, match="chmod 600"):
        node_account(NodeSettings.load(None, identity={"key_file": str(key)}))
    key.chmod(0o600)
    assert (
        node_account(NodeSettings.load(None, identity={"key_file": str(key)})).address
        == Account.from_key(SPEC_KEY).address
    )
