"""Typed wrappers of the operator registry (``ServiceManager``) and the ``ModelRegistry``.

>>> sm = ServiceManager(w3, dep.address("ServiceManager"), node_account)   # doctest: +SKIP
>>> sm.register_node("http://127.0.0.1:8001", [model_id], price_per_token=10**9, stake=10**18)
>>> sm.get_node(node_account.address).active                                # doctest: +SKIP
True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

from supernet.sdk.chain.bindings import Binding, TxResult
from supernet.sdk.store.cids import cid_of_digest


class Role(IntEnum):
    """What an address registered as (fixed at first registration)."""

    NONE = 0
    NODE = 1
    VALIDATOR = 2


@dataclass(frozen=True)
class Operator:
    """Stake bookkeeping of one operator (``ServiceManager.getOperator``)."""

    role: Role
    registered: bool
    frozen_count: int
    slash_count: int
    unbonding_ready_at: int
    locked_until: int
    staked_at: int  # last stake increase: only older stake votes on a challenge
    stake: int
    unbonding: int


@dataclass(frozen=True)
class NodeView:
    """Everything a client needs to discover and price a node (``ServiceManager.getNode``)."""

    node: str
    endpoint: str
    model_ids: list[bytes]
    price_per_token: int
    stake: int
    unbonding: int
    unbonding_ready_at: int
    locked_until: int
    frozen_count: int
    slash_count: int
    registered: bool
    active: bool


@dataclass(frozen=True)
class Model:
    """One registered model (``ModelRegistry.getModel``)."""

    model_id: bytes
    name: str
    publisher: str
    registered_at: int

    @property
    def manifest_cid(self) -> str:
        """The manifest's content-store CID: a raw block whose sha256 is the model id."""
        return cid_of_digest(self.model_id, "raw")


class ServiceManager(Binding):
    """Registry of staked nodes and validators (stake in native ETH)."""

    NAME = "ServiceManager"

    # -- registration and stake ----------------------------------------------------------------

    def register_node(
        self, endpoint: str, model_ids: Sequence[bytes], price_per_token: int, stake: int
    ) -> TxResult:
        """Register the bound account as a node with ``stake`` wei."""
        return self.transact("registerNode", endpoint, list(model_ids), price_per_token, value=stake)

    def register_validator(self, stake: int) -> TxResult:
        """Register the bound account as a validator with ``stake`` wei."""
        return self.transact("registerValidator", value=stake)

    def add_stake(self, amount: int) -> TxResult:
        """Add ``amount`` wei to the bound account's active stake."""
        return self.transact("addStake", value=amount)

    def update_endpoint(self, endpoint: str) -> TxResult:
        """Replace the node's endpoint URL."""
        return self.transact("updateEndpoint", endpoint)

    def update_models(self, model_ids: Sequence[bytes]) -> TxResult:
        """Replace the node's model list."""
        return self.transact("updateModels", list(model_ids))

    def declare_checked_models(self, model_ids: Sequence[bytes]) -> TxResult:
        """As a validator, declare the served model ids it checks (replaces the last declaration)."""
        return self.transact("declareCheckedModels", list(model_ids))

    def checked_models(self, validator: str) -> list[bytes]:
        """The served model ids ``validator`` declared it checks."""
        return [bytes(m) for m in self.call("checkedModels", validator)]

    def update_price(self, price_per_token: int) -> TxResult:
        """Replace the node's price per generated token (wei)."""
        return self.transact("updatePrice", price_per_token)

    def request_unbond(self, amount: int) -> TxResult:
        """Move ``amount`` of active stake to unbonding (restarts the unbonding clock)."""
        return self.transact("requestUnbond", amount)

    def deregister(self) -> TxResult:
        """Leave: the whole active stake starts unbonding."""
        return self.transact("deregister")

    def withdraw_unbonded(self) -> TxResult:
        """Pay out the unbonding stake (after the period, with no dispute open and no lock)."""
        return self.transact("withdrawUnbonded")

    # -- views ---------------------------------------------------------------------------------

    def get_operator(self, address: str) -> Operator:
        """Stake bookkeeping of any address (zeroes for unknown ones)."""
        role, *rest = self.call("getOperator", address)
        return Operator(Role(role), *rest)

    def stake_leaves_at(self, operator: str, keep: int) -> int:
        """When ``operator``'s stake may fall below ``keep`` (unix seconds): 0 while it is an active
        node, its active stake is at least ``keep`` or nothing is unbonding (``stakeLeavesAt``; an
        omission claim against a leaving node opens a challenge window before it)."""
        return int(self.call("stakeLeavesAt", operator, keep))

    def voting_stake(self, validator: str, since: int) -> int:
        """Stake of ``validator`` that may vote on a challenge opened at ``since`` (0: none)."""
        return int(self.call("votingStake", validator, since))

    def get_node(self, address: str) -> NodeView:
        """Full view of a node."""
        node, endpoint, model_ids, *rest = self.call("getNode", address)
        return NodeView(node, endpoint, [bytes(m) for m in model_ids], *rest)

    def is_active_node(self, address: str) -> bool:
        """Registered node with at least the minimum stake."""
        return bool(self.call("isActiveNode", address))

    def is_active_validator(self, address: str) -> bool:
        """Registered validator with at least the minimum stake."""
        return bool(self.call("isActiveValidator", address))

    def validator_stake(self, address: str) -> int:
        """Active stake of an active validator (its vote weight), else 0."""
        return int(self.call("validatorStake", address))

    def total_validator_stake(self) -> int:
        """Sum of the active stake of registered validators (the quorum base)."""
        return int(self.call("totalValidatorStake"))

    def nodes(self, start: int = 0, limit: int = 1000) -> list[str]:
        """Node addresses in registration order (one page)."""
        return [str(a) for a in self.call("getNodes", start, limit)]

    def validators(self) -> list[str]:
        """Every address that ever registered as a validator."""
        return [str(self.call("validatorAt", i)) for i in range(self.call("validatorCount"))]

    def task_manager(self) -> str:
        """The wired TaskManager address."""
        return str(self.call("taskManager"))

    def unbonding_period(self) -> int:
        """Seconds between ``requestUnbond`` and ``withdrawUnbonded``."""
        return int(self.call("UNBONDING_PERIOD"))

    def min_node_stake(self) -> int:
        """Least active stake for an active node (wei)."""
        return int(self.call("MIN_NODE_STAKE"))

    def min_validator_stake(self) -> int:
        """Least active stake for an active validator (wei)."""
        return int(self.call("MIN_VALIDATOR_STAKE"))


class ModelRegistry(Binding):
    """Content-addressed model ids: the contract hashes the posted weights manifest itself."""

    NAME = "ModelRegistry"

    def register_model(self, manifest: bytes, name: str = "") -> TxResult:
        """Register the model whose canonical manifest is ``manifest``; ``value`` is its id
        (``sha256(manifest)``, computed on chain: nobody can claim an id for other bytes)."""
        tx = self.transact("registerModel", manifest, name)
        return TxResult(tx.receipt, bytes(self.events(tx, "ModelRegistered")[0]["args"]["modelId"]))

    def get_model(self, model_id: bytes) -> Model:
        """The registered model; raises ``UnknownModel`` if none."""
        name, publisher, registered_at = self.call("getModel", model_id)
        return Model(model_id, name, publisher, registered_at)

    def is_registered(self, model_id: bytes) -> bool:
        """True iff ``model_id`` is registered."""
        return bool(self.call("isRegistered", model_id))

    def model_ids(self) -> list[bytes]:
        """Every registered model id, in registration order."""
        return [bytes(self.call("modelAt", i)) for i in range(self.call("modelCount"))]
