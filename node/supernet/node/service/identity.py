"""The node's key: configured, read from a file, or created once in the data directory."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount
from supernet.node.service.config import NodeSettings

log = logging.getLogger(__name__)


def load_account(settings: NodeSettings) -> LocalAccount:
    """The node's signing account.

    Order: ``identity.private_key``, then ``identity.key_file``, then ``<data_dir>/node.key``,
    which is created (mode 0600) when nothing else is configured and the chain is disabled.

    Raises:
        FileNotFoundError: ``identity.key_file`` is set but missing.
    """
    ident = settings.identity
    if ident.private_key is not None:
        return Account.from_key(ident.private_key.get_secret_value().strip())
    if ident.key_file is not None:
        return Account.from_key(Path(ident.key_file).read_text().strip())
    path = settings.data_dir / "node.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("0x" + secrets.token_hex(32) + "\n")
        log.info("created a new node key in %s", path)
    return Account.from_key(path.read_text().strip())
