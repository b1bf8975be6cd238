"""The node's key: configured, read from a file, or created once in the data directory."""

from __future__ import annotations

import logging
import os
import secrets

from eth_account.signers.local import LocalAccount
from supernet.node.service.config import NodeSettings
from supernet.sdk.keys import from_hex, read_secret
from supernet.sdk.keys import load_account as load_keys

log = logging.getLogger(__name__)


def load_account(settings: NodeSettings) -> LocalAccount:
    """The node's signing account.

    Order: ``identity.private_key``, then ``identity.keystore`` (over ``identity.key_file`` when
    both are set; `supernet.sdk.keys`: files must be mode 0600), then ``<data_dir>/node.key``,
    which is created (mode 0600) when nothing else is configured and the chain is disabled.

    Raises:
        supernet.sdk.keys.KeyLoadError: the configured key cannot be loaded (missing, readable by
            others, malformed, wrong passphrase).
    """
    ident = settings.identity
    if ident.private_key is not None:
        return from_hex(ident.private_key.get_secret_value(), "identity.private_key")
    if ident.key_file is not None or ident.keystore is not None:
        return load_keys(
            key_file=ident.key_file if ident.keystore is None else None,
            keystore=ident.keystore,
            password_file=ident.password_file,
        )
    path = settings.data_dir / "node.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("0x" + secrets.token_hex(32) + "\n")
        log.info("created a new node key in %s", path)
    return from_hex(read_secret(path), str(path))
