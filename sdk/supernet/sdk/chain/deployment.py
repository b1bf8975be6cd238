"""The deployment file: where the protocol's contracts live on one chain.

A small JSON document (``format`` version 1)::

    {"format": 1, "chainId": 31337, "deployBlock": 1,
     "contracts": {"ServiceManager": "0x…", "ModelRegistry": "0x…", "Payments": "0x…", "TaskManager": "0x…"},
     "params": {"minNodeStake": "1000000000000000000", …},
     "deployer": "0x…", "rpcUrl": "http://127.0.0.1:8545"}

Integers in ``params`` are written as decimal strings (wei amounts overflow JSON numbers in
some readers) and read back as ``int``.

>>> dep = Deployment(chain_id=31337, deploy_block=1, contracts={"Payments": "0x" + "11" * 20})
>>> Deployment.from_json(dep.to_json()) == dep
True
>>> dep.domain.chain_id
31337
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_utils import to_checksum_address
from supernet.sdk.chain.eip712 import Domain
from supernet.sdk.chain.errors import ChainError

FORMAT_VERSION = 1
CONTRACT_NAMES = ("ServiceManager", "ModelRegistry", "Payments", "TaskManager", "OmissionManager")
"""The protocol's contracts, in deployment order."""


class DeploymentError(ChainError, ValueError):
    """A deployment file is missing, malformed, or lacks a contract."""


@dataclass(frozen=True)
class Deployment:
    """Chain id, contract addresses, deploy block and the parameters the contracts were built with."""

    chain_id: int
    deploy_block: int
    contracts: Mapping[str, str]
    params: Mapping[str, int] = field(default_factory=dict)
    deployer: str | None = None
    rpc_url: str | None = None

    def address(self, name: str) -> str:
        """The checksum address of contract ``name``.

        Raises:
            DeploymentError: the deployment has no such contract.
        """
        try:
            return to_checksum_address(self.contracts[name])
        except KeyError:
            raise DeploymentError(f"deployment has no contract {name!r}") from None

    @property
    def domain(self) -> Domain:
        """The protocol's EIP-712 domain on this deployment (verifying contract: Payments)."""
        return Domain(chain_id=self.chain_id, verifying_contract=self.address("Payments"))

    def to_json(self) -> dict[str, Any]:
        """The JSON document (see the module docstring)."""
        doc: dict[str, Any] = {
            "format": FORMAT_VERSION,
            "chainId": self.chain_id,
            "deployBlock": self.deploy_block,
            "contracts": {k: to_checksum_address(v) for k, v in self.contracts.items()},
            "params": {k: str(v) for k, v in self.params.items()},
        }
        if self.deployer:
            doc["deployer"] = to_checksum_address(self.deployer)
        if self.rpc_url:
            doc["rpcUrl"] = self.rpc_url
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Deployment:
        """Parse a deployment document.

        Raises:
            DeploymentError: unknown format version or missing keys.
        """
        if doc.get("format") != FORMAT_VERSION:
            raise DeploymentError(f"unsupported deployment format {doc.get('format')!r}")
        try:
            return cls(
                chain_id=int(doc["chainId"]),
                deploy_block=int(doc["deployBlock"]),
                contracts={k: to_checksum_address(v) for k, v in doc["contracts"].items()},
                params={k: int(v) for k, v in doc.get("params", {}).items()},
                deployer=doc.get("deployer"),
                rpc_url=doc.get("rpcUrl"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DeploymentError(f"malformed deployment document: {exc}") from exc

    def save(self, path: str | Path) -> Path:
        """Write the document to ``path`` (parents created); returns the path."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        return p

    @classmethod
    def load(cls, path: str | Path) -> Deployment:
        """Read a deployment file.

        Raises:
            DeploymentError: the file is missing or malformed.
        """
        try:
            doc = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DeploymentError(f"cannot read deployment file {path}: {exc}") from exc
        return cls.from_json(doc)
