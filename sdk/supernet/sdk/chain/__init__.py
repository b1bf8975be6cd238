"""The chain layer of the SDK: contract bindings, EIP-712 signing, receipts and their Merkle tree.

>>> from supernet.sdk.chain import Contracts, Deployment, ReceiptTree, sign_voucher, Voucher
>>> dep = Deployment.load("deployment.json")                     # doctest: +SKIP
>>> c = Contracts.connect("http://127.0.0.1:8545", dep, account)  # doctest: +SKIP
>>> c.payments.deposit(10**18)                                   # doctest: +SKIP
"""

from supernet.sdk.chain.bindings import Binding, TxResult, load_abi, load_bytecode
from supernet.sdk.chain.contracts import Contracts, make_web3
from supernet.sdk.chain.deployment import CONTRACT_NAMES, Deployment, DeploymentError
from supernet.sdk.chain.eip712 import (
    Confirmation,
    Domain,
    TaskRequest,
    Voucher,
    hash_confirmation,
    hash_task_request,
    hash_voucher,
    recover_confirmation,
    recover_task_request,
    recover_voucher,
    sign_confirmation,
    sign_task_request,
    sign_voucher,
)
from supernet.sdk.chain.errors import (
    BindingsError,
    ChainError,
    ContractError,
    PanicError,
    RevertError,
    TransactionFailed,
    UnknownContractError,
    decode_revert,
)
from supernet.sdk.chain.merkle import MerkleError, ReceiptTree
from supernet.sdk.chain.params import ProtocolParams
from supernet.sdk.chain.payments import Payments
from supernet.sdk.chain.receipts import (
    Receipt,
    input_hash,
    output_hash,
    recover_receipt_signer,
    sign_receipt,
    trace_hash,
)
from supernet.sdk.chain.registry import Model, ModelRegistry, NodeView, Operator, Role, ServiceManager
from supernet.sdk.chain.tasks import Batch, Challenge, ChallengeStatus, TaskManager, Vote, vote_commitment

__all__ = [
    "CONTRACT_NAMES",
    "Batch",
    "Binding",
    "BindingsError",
    "ChainError",
    "Challenge",
    "ChallengeStatus",
    "Confirmation",
    "ContractError",
    "Contracts",
    "Deployment",
    "DeploymentError",
    "Domain",
    "MerkleError",
    "Model",
    "ModelRegistry",
    "NodeView",
    "Operator",
    "PanicError",
    "Payments",
    "ProtocolParams",
    "Receipt",
    "ReceiptTree",
    "RevertError",
    "Role",
    "ServiceManager",
    "TaskManager",
    "TaskRequest",
    "TransactionFailed",
    "TxResult",
    "UnknownContractError",
    "Vote",
    "Voucher",
    "decode_revert",
    "hash_confirmation",
    "hash_task_request",
    "hash_voucher",
    "input_hash",
    "load_abi",
    "load_bytecode",
    "make_web3",
    "output_hash",
    "recover_confirmation",
    "recover_receipt_signer",
    "recover_task_request",
    "recover_voucher",
    "sign_confirmation",
    "sign_receipt",
    "sign_task_request",
    "sign_voucher",
    "trace_hash",
    "vote_commitment",
]
