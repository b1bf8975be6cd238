"""All four protocol contracts as one object: deploy them with given parameters, or connect.

>>> from supernet.sdk.chain import Contracts, Deployment, ProtocolParams
>>> c = Contracts.deploy("http://127.0.0.1:8545", deployer, ProtocolParams.devnet())  # doctest: +SKIP
>>> c.deployment.save("deployment.json")                                            # doctest: +SKIP
>>> user_view = Contracts.connect("http://127.0.0.1:8545", Deployment.load("deployment.json"), user)
>>> user_view.payments.deposit(10**18)                                              # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_account.signers.local import LocalAccount
from supernet.sdk.chain.bindings import MAX_PRIORITY_FEE, deploy, pin_chain_id, send
from supernet.sdk.chain.deployment import CONTRACT_NAMES, Deployment, DeploymentError
from supernet.sdk.chain.eip712 import Domain
from supernet.sdk.chain.omission import OmissionManager
from supernet.sdk.chain.params import ProtocolParams
from supernet.sdk.chain.payments import Payments
from supernet.sdk.chain.registry import ModelRegistry, ServiceManager
from supernet.sdk.chain.tasks import TaskManager
from web3 import Web3
from web3.middleware import ExtraDataToPOAMiddleware
from web3.types import RPCEndpoint

FLOOR_PARAM = "minAnswerGasPrice"
"""The deployment file's answer gas price floor (`ProtocolParams.min_answer_gas_price`)."""


def make_web3(rpc: str | Web3, timeout: float = 60.0) -> Web3:
    """A Web3 client for an HTTP JSON-RPC URL (a `Web3` is returned as is). It reads the blocks of
    proof-of-authority chains too (BNB Chain, Polygon PoS: a seal in an extraData longer than the
    32 bytes web3 checks by default), the chains whose zero base fee needs the answer gas floor.

    Its chain id is asked once per thread (web3's cache is per thread) until it is pinned
    (`Contracts.connect` pins the deployment's once the RPC's first answer matches it): from then
    on web3's own checks of every call and estimate, in every thread, get the pinned id, never an
    RPC's later, different answer, and signing uses it (`bindings.pin_chain_id`, `chain_id`)."""
    if isinstance(rpc, Web3):
        return rpc
    provider = Web3.HTTPProvider(
        rpc,
        request_kwargs={"timeout": timeout},
        cache_allowed_requests=True,
        cacheable_requests={RPCEndpoint("eth_chainId")},
        request_cache_validation_threshold=None,  # else web3 asks the chain id again to set one
    )
    w3 = Web3(provider)
    w3.middleware_onion.inject(ExtraDataToPOAMiddleware, layer=0)
    return w3


@dataclass(frozen=True)
class Contracts:
    """The deployed protocol, bound to one client and one signing account (or none)."""

    w3: Web3
    deployment: Deployment
    account: LocalAccount | None
    service_manager: ServiceManager
    model_registry: ModelRegistry
    payments: Payments
    task_manager: TaskManager
    omission_manager: OmissionManager
    tip_ceiling: int = MAX_PRIORITY_FEE
    duty: bool = False
    answer_floor: int | None = None
    floor_vouched: bool = False
    """Whether `answer_floor` is vouched for (the deployment file's or the caller's) or only the
    RPC's answer (a file without ``minAnswerGasPrice``): only a vouched floor may take an answer's
    tip past ``tip_ceiling`` (`Binding.answer`)."""

    @classmethod
    def connect(
        cls,
        rpc: str | Web3,
        deployment: Deployment,
        account: LocalAccount | None = None,
        *,
        verify: bool = True,
        tip_ceiling: int = MAX_PRIORITY_FEE,
        duty: bool = False,
        answer_floor: int | None = None,
        floor_vouched: bool = True,
    ) -> Contracts:
        """Bind to an existing deployment.

        Args:
            rpc: JSON-RPC URL or a `Web3` client.
            deployment: the deployment file's contents.
            account: the signer for transactions (None: read-only).
            verify: check the chain id (then pinned: every transaction is signed for it, whatever
                the RPC answers later) and that every contract has code.
            tip_ceiling: the most priority fee its transactions may pay (`bindings.fees`; the
                daemons pass their ``[chain] max_priority_fee_gwei``).
            duty: its transactions are a daemon's duties (a refused tip is logged as an error).
            answer_floor: the deployment's ``MIN_ANSWER_GAS_PRICE`` (data claims' and answers'
                floor). None: the deployment file's ``minAnswerGasPrice``, else (a file without
                it) read once here when signing, then pinned: answers and claims never ask the
                RPC for it again. A floor read here is the RPC's word, not vouched for: answers
                and claims hold it to ``tip_ceiling`` as any tip the RPC suggests (signing
                daemons should run with a file that has it; ``supernet contracts deploy`` writes
                it).
            floor_vouched: whether a given ``answer_floor`` is vouched for (True: the caller's
                word; `as_account` passes on one read from the RPC as not).

        Raises:
            DeploymentError: wrong chain, or a contract address without code.
        """
        w3 = make_web3(rpc)
        if verify:
            chain_id = w3.eth.chain_id
            if chain_id != deployment.chain_id:
                raise DeploymentError(f"RPC is on chain {chain_id}, deployment is for {deployment.chain_id}")
            pin_chain_id(w3, chain_id)
            for name in CONTRACT_NAMES:
                if not w3.eth.get_code(Web3.to_checksum_address(deployment.address(name))):
                    raise DeploymentError(f"no code at {name} {deployment.address(name)}")
        at = deployment.address
        floor, vouched = answer_floor, floor_vouched
        if floor is None and FLOOR_PARAM in deployment.params:
            floor, vouched = int(deployment.params[FLOOR_PARAM]), True
        if floor is None and account is not None:
            floor, vouched = TaskManager(w3, at("TaskManager")).answer_floor, False  # the RPC's word
        vouched = floor is not None and vouched
        kw: dict[str, Any] = {"tip_ceiling": tip_ceiling, "duty": duty}
        pinned: dict[str, Any] = {"answer_floor": floor, "floor_vouched": vouched}
        return cls(
            w3=w3,
            deployment=deployment,
            account=account,
            service_manager=ServiceManager(w3, at("ServiceManager"), account, **kw),
            model_registry=ModelRegistry(w3, at("ModelRegistry"), account, **kw),
            payments=Payments(w3, at("Payments"), account, **kw),
            task_manager=TaskManager(w3, at("TaskManager"), account, **pinned, **kw),
            omission_manager=OmissionManager(w3, at("OmissionManager"), account, **pinned, **kw),
            tip_ceiling=tip_ceiling,
            duty=duty,
            **pinned,
        )

    @classmethod
    def deploy(
        cls,
        rpc: str | Web3,
        deployer: LocalAccount,
        params: ProtocolParams | None = None,
        *,
        rpc_url: str | None = None,
    ) -> Contracts:
        """Deploy ServiceManager, ModelRegistry, Payments, SeedBeacon, TaskManager and
        OmissionManager, then wire them (the beacon is found through ``TaskManager.SEED_BEACON``).

        Args:
            rpc: JSON-RPC URL or a `Web3` client.
            deployer: pays for and signs the deployment (and the one-time wiring).
            params: constructor parameters (`ProtocolParams` defaults when None).
            rpc_url: recorded in the deployment file (defaults to ``rpc`` when it is a URL).

        Returns:
            The contracts bound to ``deployer``; ``deployment`` holds the addresses.
        """
        w3 = make_web3(rpc)
        p = params or ProtocolParams()
        sm, sm_receipt = deploy(w3, deployer, "ServiceManager", *p.service_manager_args())
        mr, _ = deploy(w3, deployer, "ModelRegistry")
        pay, _ = deploy(w3, deployer, "Payments", *p.payments_args())
        beacon, _ = deploy(w3, deployer, "SeedBeacon", *p.seed_beacon_args())
        tm, _ = deploy(w3, deployer, "TaskManager", sm, pay, beacon, *p.task_manager_args())
        om, _ = deploy(w3, deployer, "OmissionManager", tm)  # its parameters are the TaskManager's
        service_manager = ServiceManager(w3, sm, deployer)
        send(w3, deployer, service_manager.contract.functions.setTaskManager(tm), "ServiceManager")
        send(w3, deployer, service_manager.contract.functions.setOmissionManager(om), "ServiceManager")
        payments = Payments(w3, pay, deployer)
        send(w3, deployer, payments.contract.functions.setTaskManager(tm), "Payments")
        deployment = Deployment(
            chain_id=w3.eth.chain_id,
            deploy_block=int(sm_receipt["blockNumber"]),
            contracts={
                "ServiceManager": sm,
                "ModelRegistry": mr,
                "Payments": pay,
                "TaskManager": tm,
                "OmissionManager": om,
            },
            params=p.to_dict(),
            deployer=deployer.address,
            rpc_url=rpc_url or (rpc if isinstance(rpc, str) else None),
        )
        return cls.connect(w3, deployment, deployer, verify=False)

    def as_account(self, account: LocalAccount | None) -> Contracts:
        """The same contracts on the same client, signing with ``account``."""
        return Contracts.connect(
            self.w3,
            self.deployment,
            account,
            verify=False,
            tip_ceiling=self.tip_ceiling,
            duty=self.duty,
            answer_floor=self.answer_floor,
            floor_vouched=self.floor_vouched,
        )

    @property
    def domain(self) -> Domain:
        """The protocol's EIP-712 domain on this deployment."""
        return self.deployment.domain

    @property
    def params(self) -> ProtocolParams:
        """The parameters recorded in the deployment file."""
        return ProtocolParams.from_dict(self.deployment.params)
