"""Keys at rest: Ethereum V3 keystores, private-key files, and where a passphrase may come from.

A keystore is the JSON file geth, ``cast wallet`` and MetaMask exports read and write (Web3 Secret
Storage, version 3: scrypt or PBKDF2, AES-128-CTR, a MAC over the ciphertext). Encryption and
decryption are eth-account's (`Account.encrypt` / `Account.decrypt`, on eth-keyfile and
pycryptodome), the reference implementation those tools interoperate with, rather than a second
implementation on ``cryptography``.

Rules, for every role (node, validator, user, deployer):

* a raw key is never taken from the command line (``ps`` shows every process's arguments to every
  user of the machine): from an environment variable, a key file, or a keystore;
* a key file, a keystore and a passphrase file must not be readable by group or others (mode
  0600 or stricter), or loading refuses with the ``chmod`` to run;
* the passphrase comes from a file (``--password-file``) or ``$SUPERNET_KEY_PASSWORD``.

>>> acct = Account.create()
>>> doc = encrypt(acct, "pass", kdf="pbkdf2", iterations=2)
>>> decrypt(doc, "pass").address == acct.address
True
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from eth_account import Account
from eth_account.signers.local import LocalAccount
from supernet.sdk.errors import SupernetError

PASSWORD_ENV = "SUPERNET_KEY_PASSWORD"
"""Environment variable holding a keystore's passphrase (when no ``--password-file`` is given)."""

MAX_KEY_FILE_BYTES = 64 * 1024


class KeyLoadError(SupernetError):
    """A key could not be loaded: missing, unsafe permissions, malformed, or a wrong passphrase."""


def check_private(path: Path) -> None:
    """Refuse a secret file that group or others can read or write.

    Raises:
        KeyLoadError: missing, not a regular file, or its mode grants anything to group/others.
    """
    try:
        st = path.stat()
    except OSError as exc:
        raise KeyLoadError(f"cannot read {path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise KeyLoadError(f"{path} is not a regular file")
    if st.st_mode & 0o077:
        mode = f"{stat.S_IMODE(st.st_mode):04o}"
        raise KeyLoadError(f"{path} is accessible to other users (mode {mode}); run: chmod 600 {path}")


def read_secret(path: Path) -> str:
    """The stripped text of a private file (``check_private`` first)."""
    check_private(path)
    if path.stat().st_size > MAX_KEY_FILE_BYTES:
        raise KeyLoadError(f"{path} is larger than any key or keystore ({MAX_KEY_FILE_BYTES} bytes at most)")
    return path.read_text().strip()


def passphrase(password_file: Path | None = None, env: Mapping[str, str] | None = None) -> str:
    """A keystore passphrase: the file's content, else ``$SUPERNET_KEY_PASSWORD``.

    Raises:
        KeyLoadError: neither is given (or the file is unsafe or unreadable).
    """
    if password_file is not None:
        return read_secret(Path(password_file))
    value = (os.environ if env is None else env).get(PASSWORD_ENV)
    if value is None:
        raise KeyLoadError(f"a keystore needs its passphrase: give --password-file or set ${PASSWORD_ENV}")
    return value


def from_hex(raw: str, source: str) -> LocalAccount:
    """An account from a hex private key; the error names ``source``, never the key."""
    try:
        return Account.from_key(raw.strip())
    except (ValueError, TypeError):
        raise KeyLoadError(f"{source} does not hold a 32-byte hex private key") from None


def encrypt(
    account: LocalAccount,
    password: str,
    kdf: Literal["scrypt", "pbkdf2"] = "scrypt",
    iterations: int | None = None,
) -> dict[str, Any]:
    """The V3 keystore document of ``account`` (scrypt by default, as geth writes it)."""
    doc: dict[str, Any] = Account.encrypt(account.key, password, kdf=kdf, iterations=iterations)
    return doc


def decrypt(doc: Mapping[str, Any], password: str, source: str = "the keystore") -> LocalAccount:
    """The account in a V3 keystore document.

    Raises:
        KeyLoadError: not a V3 keystore, or the passphrase is wrong (the MAC does not match).
    """
    if not isinstance(doc, Mapping) or doc.get("version") != 3 or not isinstance(doc.get("crypto"), Mapping):
        raise KeyLoadError(f"{source} is not a version 3 keystore")
    try:
        key = Account.decrypt(dict(doc), password)
    except ValueError as exc:
        if "MAC" in str(exc):
            raise KeyLoadError(f"wrong passphrase for {source}") from None
        raise KeyLoadError(f"{source} is not a usable keystore: {exc}") from None
    except (KeyError, TypeError) as exc:
        raise KeyLoadError(f"{source} is not a usable keystore: missing {exc}") from None
    return Account.from_key(key)


def load_keystore(path: Path, password: str) -> LocalAccount:
    """Decrypt the keystore file at ``path`` (mode 0600 or stricter)."""
    text = read_secret(Path(path))
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        raise KeyLoadError(f"{path} is not JSON (a V3 keystore is)") from None
    return decrypt(doc, password, str(path))


def write_keystore(path: Path, account: LocalAccount, password: str, **kdf: Any) -> Path:
    """Write ``account`` as a V3 keystore at ``path``, created with mode 0600; never overwrites.

    Raises:
        KeyLoadError: ``path`` exists or cannot be created (a missing directory, no permission),
            or the passphrase is empty or blank (an unset variable in a compose file reads as
            ``""``): such a keystore looks encrypted and protects nothing.
    """
    path = Path(path)
    if not password.strip():
        raise KeyLoadError(f"refusing to write {path} under an empty passphrase: anyone could decrypt it")
    doc = encrypt(account, password, **kdf)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyLoadError(f"{path} exists; not overwriting a key") from None
    except OSError as exc:  # a missing directory, no permission: nothing is written
        raise KeyLoadError(f"cannot create {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f)
        f.write("\n")
    return path


def load_account(
    *,
    key: str | None = None,
    key_file: Path | None = None,
    keystore: Path | None = None,
    password_file: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> LocalAccount:
    """The account from exactly one source: ``key`` (hex, e.g. from an environment variable), a
    ``key_file`` holding the hex key, or a ``keystore`` (passphrase from ``password_file`` or
    ``$SUPERNET_KEY_PASSWORD``).

    Raises:
        KeyLoadError: none or several sources, or the chosen one cannot be loaded.
    """
    given = [name for name, v in (("key", key), ("key file", key_file), ("keystore", keystore)) if v]
    if len(given) != 1:
        raise KeyLoadError(
            "give exactly one key source: an environment variable, --key-file or --keystore"
            + (f" (got {', '.join(given)})" if given else "")
        )
    if key:
        return from_hex(key, "the key")
    if key_file is not None:
        return from_hex(read_secret(Path(key_file)), str(key_file))
    assert keystore is not None
    return load_keystore(Path(keystore), passphrase(password_file, env))
