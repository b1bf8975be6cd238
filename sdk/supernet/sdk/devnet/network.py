"""A local Supernet chain: Anvil, the contracts, a model, staked nodes and validators, funded users.

Roles come from Anvil's dev accounts (public keys of a public mnemonic: never hold value with
them): account 0 deploys, then nodes, validators and users in that order. The state lives in one
folder (``.supernet/devnet`` by default): ``deployment.json``, ``devnet.json`` (roles, account
indexes, URLs), ``devnet.pid`` and ``anvil.log``.

>>> net = Devnet.start(DevnetConfig(port=0))       # doctest: +SKIP
>>> net.contracts.service_manager.nodes()         # doctest: +SKIP
>>> net.stop()                                    # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from supernet.sdk.chain import Contracts, ProtocolParams
from supernet.sdk.chain.anvil import Anvil, dev_account, process_alive
from supernet.sdk.chain.receipts import canonical_json
from supernet.sdk.errors import SupernetError
from supernet.sdk.models import (
    COMPUTE_PRECISIONS,
    CPU_DEFAULT_COMPUTE,
    WEIGHTS_MANIFEST_FORMAT,
    served_manifest,
    served_model_id,
)

ETHER = 10**18
DEFAULT_STATE_DIR = Path(".supernet/devnet")
DEVNET_MODEL_MANIFEST = b"supernet devnet placeholder model manifest"
"""Registered when no real model is given (nodes compute real ids from their weights manifests)."""


def pulled_model_manifest(model: str = "smollm2-135m") -> bytes | None:
    """The canonical weights manifest of a pulled model (``supernet model pull`` writes it next to
    the weights), checked against the model id recorded with it; None if the model is not pulled, or
    was pulled by a version whose manifest format names other ids than the nodes' (they would serve
    ids nobody registered)."""
    home = Path(os.environ.get("SUPERNET_HOME", Path.home() / ".cache" / "supernet"))
    try:
        doc = json.loads((home / "models" / model / "manifest.json").read_text())
        recorded = bytes.fromhex(str(doc.pop("model_id")).removeprefix("0x"))
    except (OSError, KeyError, ValueError):
        return None
    if doc.get("format") != WEIGHTS_MANIFEST_FORMAT:
        return None
    manifest = canonical_json(doc)
    return manifest if hashlib.sha256(manifest).digest() == recorded else None


class DevnetError(SupernetError, RuntimeError):
    """The devnet cannot start, or no running devnet was found."""


@dataclass(frozen=True)
class DevnetConfig:
    """Shape of the local network."""

    port: int = 8545
    nodes: int = 2
    validators: int = 3
    users: int = 3
    node_stake: int = 10 * ETHER
    validator_stake: int = 5 * ETHER
    user_deposit: int = 2 * ETHER
    price_per_token: int = 10**9
    node_base_port: int = 8101
    model_manifest: bytes = DEVNET_MODEL_MANIFEST
    model_name: str = "smollm2-135m"
    state_dir: Path = DEFAULT_STATE_DIR
    params: ProtocolParams = field(default_factory=ProtocolParams.devnet)
    block_time: float | None = None
    """Seconds between blocks; None mines one block per transaction (fast tests). A network
    with validators wants blocks to keep coming: a batch's sampling seed is a later block's hash."""

    @property
    def weights_id(self) -> bytes:
        """The registered weights' id: sha256 of their manifest (the registry computes the same)."""
        return hashlib.sha256(self.model_manifest).digest()

    @property
    def model_id(self) -> bytes:
        """The id nodes serve on a CPU: those weights in the CPU's default format (`supernet.sdk.models`)."""
        return bytes.fromhex(served_model_id("0x" + self.weights_id.hex(), CPU_DEFAULT_COMPUTE)[2:])

    @property
    def accounts_needed(self) -> int:
        """Dev accounts Anvil must fund: deployer + every role."""
        return 1 + self.nodes + self.validators + self.users


@dataclass(frozen=True)
class Actor:
    """One dev account with its role on the devnet."""

    role: str
    index: int
    account: LocalAccount
    url: str = ""

    @property
    def address(self) -> str:
        """Checksum address."""
        return str(self.account.address)


def make_actors(cfg: DevnetConfig) -> list[Actor]:
    """Deployer, nodes, validators and users from consecutive dev accounts."""
    actors = [Actor("deployer", 0, dev_account(0))]
    i = 1
    for role, count in (("node", cfg.nodes), ("validator", cfg.validators), ("user", cfg.users)):
        for k in range(count):
            url = f"http://127.0.0.1:{cfg.node_base_port + k}" if role == "node" else ""
            actors.append(Actor(role, i, dev_account(i), url))
            i += 1
    return actors


def register_models(contracts: Contracts, weights_manifest: bytes, name: str) -> None:
    """Register the weights and their served ids in every precision (`supernet.sdk.models`), so
    anyone reading the chain can tell what each served id computes; idempotent."""
    weights_id = "0x" + hashlib.sha256(weights_manifest).hexdigest()
    entries = [(weights_manifest, name)] + [
        (served_manifest(weights_id, compute), f"{name}@{compute}") for compute in COMPUTE_PRECISIONS
    ]
    for manifest, label in entries:
        if not contracts.model_registry.is_registered(hashlib.sha256(manifest).digest()):
            contracts.model_registry.register_model(manifest, label)


def populate(contracts: Contracts, cfg: DevnetConfig, actors: list[Actor]) -> None:
    """Register the model, register and stake nodes and validators, and fund each user's payment
    channel to every node (``user_deposit`` split evenly: a channel pays one node only)."""
    register_models(contracts, cfg.model_manifest, cfg.model_name)
    for a in actors:
        c = contracts.as_account(a.account)
        if a.role == "node":
            c.service_manager.register_node(a.url, [cfg.model_id], cfg.price_per_token, cfg.node_stake)
        elif a.role == "validator":
            c.service_manager.register_validator(cfg.validator_stake)
        elif a.role == "user":
            nodes = [n for n in actors if n.role == "node"]
            for n in nodes:
                c.payments.deposit(n.address, cfg.user_deposit // len(nodes))


@dataclass
class Devnet:
    """A running devnet: the Anvil process, the deployed contracts and who plays which role."""

    config: DevnetConfig
    anvil: Anvil
    contracts: Contracts
    actors: list[Actor]

    @classmethod
    def start(cls, cfg: DevnetConfig, *, populated: bool = True) -> Devnet:
        """Start Anvil, deploy, and (unless ``populated=False``) set up every role.

        Raises:
            DevnetError: a devnet already runs from this state folder.
        """
        running = read_pid_file(cfg.state_dir)
        if running and process_alive(running.get("pid", 0)):
            raise DevnetError(f"a devnet already runs (pid {running['pid']}); `supernet devnet down` first")
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        anvil = Anvil(
            port=cfg.port,
            accounts=max(10, cfg.accounts_needed),
            log_path=cfg.state_dir / "anvil.log",
            block_time=cfg.block_time,
        )
        anvil.start()
        try:
            actors = make_actors(cfg)
            contracts = Contracts.deploy(anvil.url, actors[0].account, cfg.params)
            if populated:
                populate(contracts, cfg, actors)
        except BaseException:
            anvil.stop()
            raise
        return cls(cfg, anvil, contracts, actors)

    def by_role(self, role: str) -> list[Actor]:
        """The actors of one role, in account order."""
        return [a for a in self.actors if a.role == role]

    def write_state(self) -> None:
        """Write deployment.json, devnet.json and devnet.pid into the state folder."""
        d = self.config.state_dir
        self.contracts.deployment.save(d / "deployment.json")
        roles = [
            {"role": a.role, "accountIndex": a.index, "address": a.address, "url": a.url} for a in self.actors
        ]
        doc = {"rpcUrl": self.anvil.url, "modelId": "0x" + self.config.model_id.hex(), "actors": roles}
        (d / "devnet.json").write_text(json.dumps(doc, indent=2) + "\n")
        pid = {
            "pid": os.getpid(),
            "anvilPid": self.anvil.pid,
            "anvilStates": str(self.anvil.state_dir or ""),
            "rpcUrl": self.anvil.url,
        }
        (d / "devnet.pid").write_text(json.dumps(pid) + "\n")

    def stop(self) -> None:
        """Stop Anvil and remove the pid file (the deployment file stays for inspection)."""
        self.anvil.stop()
        (self.config.state_dir / "devnet.pid").unlink(missing_ok=True)


def read_pid_file(state_dir: Path) -> dict[str, Any] | None:
    """The running devnet's pid file, or None."""
    try:
        doc: dict[str, Any] = json.loads((state_dir / "devnet.pid").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return doc
