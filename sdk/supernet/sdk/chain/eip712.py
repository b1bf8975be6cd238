"""EIP-712 messages of the protocol: `TaskRequest`, `Voucher`, `Confirmation` (docs/protocol.md).

One domain for all of them: ``name="Supernet"``, ``version="1"``, the chain id and the Payments
contract as ``verifyingContract``. Encoding and signing are eth-account's own
(`encode_typed_data`, `Account.sign_message`); the digests equal the contracts'
``hashTaskRequest`` / ``hashVoucher`` views (checked by the integration tests).

>>> from eth_account import Account
>>> acct = Account.from_key("0x" + "11" * 32)
>>> domain = Domain(chain_id=31337, verifying_contract="0x" + "22" * 20)
>>> v = Voucher(user=acct.address, node="0x" + "33" * 20, cumulative_amount=10**15)
>>> sig = sign_voucher(v, domain, acct)
>>> recover_voucher(v, domain, sig) == acct.address
True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from eth_account import Account
from eth_account.messages import SignableMessage, encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address
from supernet.sdk.chain.signatures import require_canonical

DOMAIN_NAME = "Supernet"
DOMAIN_VERSION = "1"

_DOMAIN_FIELDS = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]


@dataclass(frozen=True)
class Domain:
    """The EIP-712 domain: chain id and the Payments contract address."""

    chain_id: int
    verifying_contract: str

    def as_dict(self) -> dict[str, Any]:
        """The domain as eth-account's ``domain`` mapping."""
        return {
            "name": DOMAIN_NAME,
            "version": DOMAIN_VERSION,
            "chainId": self.chain_id,
            "verifyingContract": to_checksum_address(self.verifying_contract),
        }


class _Typed:
    """Mixin for dataclasses that are EIP-712 structs: one ``TYPE`` name and its field list."""

    TYPE: ClassVar[str]
    FIELDS: ClassVar[list[dict[str, str]]]

    def message(self) -> dict[str, Any]:
        """The struct as an EIP-712 message mapping (protocol field names)."""
        raise NotImplementedError


@dataclass(frozen=True)
class TaskRequest(_Typed):
    """A user's signed request for one task on one node; its digest is the task id."""

    user: str
    node: str
    model_id: bytes
    agent_hash: bytes
    input_hash: bytes
    max_fee: int
    nonce: int
    deadline: int

    TYPE: ClassVar[str] = "TaskRequest"
    FIELDS: ClassVar[list[dict[str, str]]] = [
        {"name": "user", "type": "address"},
        {"name": "node", "type": "address"},
        {"name": "modelId", "type": "bytes32"},
        {"name": "agentHash", "type": "bytes32"},
        {"name": "inputHash", "type": "bytes32"},
        {"name": "maxFee", "type": "uint256"},
        {"name": "nonce", "type": "uint256"},
        {"name": "deadline", "type": "uint256"},
    ]

    def to_json(self) -> dict[str, str]:
        """The request as manifests, traces and APIs carry it (hex bytes, decimal integers)."""
        return {
            "user": to_checksum_address(self.user),
            "node": to_checksum_address(self.node),
            "modelId": "0x" + self.model_id.hex(),
            "agentHash": "0x" + self.agent_hash.hex(),
            "inputHash": "0x" + self.input_hash.hex(),
            "maxFee": str(self.max_fee),
            "nonce": str(self.nonce),
            "deadline": str(self.deadline),
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> TaskRequest:
        """Inverse of `to_json` (``ValueError`` / ``KeyError`` / ``TypeError`` on a bad field)."""
        if set(obj) != {f["name"] for f in cls.FIELDS}:
            raise ValueError(f"a TaskRequest has exactly the fields {[f['name'] for f in cls.FIELDS]}")

        def b32(key: str) -> bytes:
            value = bytes.fromhex(str(obj[key]).removeprefix("0x"))
            if len(value) != 32:
                raise ValueError(f"{key} must be 32 bytes")
            return value

        def uint(key: str) -> int:
            value = int(str(obj[key]), 10)
            if not 0 <= value < 2**256:
                raise ValueError(f"{key} must be a uint256")
            return value

        return cls(
            user=to_checksum_address(obj["user"]),
            node=to_checksum_address(obj["node"]),
            model_id=b32("modelId"),
            agent_hash=b32("agentHash"),
            input_hash=b32("inputHash"),
            max_fee=uint("maxFee"),
            nonce=uint("nonce"),
            deadline=uint("deadline"),
        )

    def message(self) -> dict[str, Any]:
        return {
            "user": to_checksum_address(self.user),
            "node": to_checksum_address(self.node),
            "modelId": self.model_id,
            "agentHash": self.agent_hash,
            "inputHash": self.input_hash,
            "maxFee": self.max_fee,
            "nonce": self.nonce,
            "deadline": self.deadline,
        }


@dataclass(frozen=True)
class Voucher(_Typed):
    """A cumulative payment promise: the user owes the node ``cumulative_amount`` wei in total."""

    user: str
    node: str
    cumulative_amount: int

    TYPE: ClassVar[str] = "Voucher"
    FIELDS: ClassVar[list[dict[str, str]]] = [
        {"name": "user", "type": "address"},
        {"name": "node", "type": "address"},
        {"name": "cumulativeAmount", "type": "uint256"},
    ]

    def message(self) -> dict[str, Any]:
        return {
            "user": to_checksum_address(self.user),
            "node": to_checksum_address(self.node),
            "cumulativeAmount": self.cumulative_amount,
        }


@dataclass(frozen=True)
class Confirmation(_Typed):
    """The task owner's consent to one irreversible action of the task ``request_hash``."""

    request_hash: bytes
    action_hash: bytes

    TYPE: ClassVar[str] = "Confirmation"
    FIELDS: ClassVar[list[dict[str, str]]] = [
        {"name": "requestHash", "type": "bytes32"},
        {"name": "actionHash", "type": "bytes32"},
    ]

    def message(self) -> dict[str, Any]:
        return {"requestHash": self.request_hash, "actionHash": self.action_hash}


@dataclass(frozen=True)
class ReceiptPromise(_Typed):
    """A node's promise to commit the receipt with leaf ``leaf`` of task ``request_hash`` in one of
    its batches by ``commit_by`` (unix seconds). Broken, it is slashable
    (``TaskManager.challengeOmission``, docs/protocol.md "Omission")."""

    request_hash: bytes
    leaf: bytes
    commit_by: int

    TYPE: ClassVar[str] = "ReceiptPromise"
    FIELDS: ClassVar[list[dict[str, str]]] = [
        {"name": "requestHash", "type": "bytes32"},
        {"name": "leaf", "type": "bytes32"},
        {"name": "commitBy", "type": "uint256"},
    ]

    def message(self) -> dict[str, Any]:
        return {"requestHash": self.request_hash, "leaf": self.leaf, "commitBy": self.commit_by}


@dataclass(frozen=True)
class ReadGrant(_Typed):
    """The user's permission, until ``expiry`` (unix seconds), to read its own tasks' results,
    streams and receipts on node ``node``. Bound to one node, so a node cannot replay a grant it
    was given to read the same user's results elsewhere; short-lived, so a leaked one expires."""

    user: str
    node: str
    expiry: int

    TYPE: ClassVar[str] = "ReadGrant"
    FIELDS: ClassVar[list[dict[str, str]]] = [
        {"name": "user", "type": "address"},
        {"name": "node", "type": "address"},
        {"name": "expiry", "type": "uint256"},
    ]

    def message(self) -> dict[str, Any]:
        return {
            "user": to_checksum_address(self.user),
            "node": to_checksum_address(self.node),
            "expiry": self.expiry,
        }


# ---------------------------------------------------------------------------------------------
# Generic encode / hash / sign / recover
# ---------------------------------------------------------------------------------------------


def typed_data(msg: _Typed, domain: Domain) -> dict[str, Any]:
    """The full EIP-712 document (``types``, ``primaryType``, ``domain``, ``message``) of ``msg``."""
    return {
        "types": {"EIP712Domain": _DOMAIN_FIELDS, msg.TYPE: msg.FIELDS},
        "primaryType": msg.TYPE,
        "domain": domain.as_dict(),
        "message": msg.message(),
    }


def signable(msg: _Typed, domain: Domain) -> SignableMessage:
    """eth-account's EIP-191 (version 0x01) wrapping of ``msg``."""
    return encode_typed_data(full_message=typed_data(msg, domain))


def hash_typed(msg: _Typed, domain: Domain) -> bytes:
    """The 32-byte EIP-712 digest ``keccak256(0x1901 ‖ domainSeparator ‖ structHash)``."""
    s = signable(msg, domain)
    return keccak(b"\x19" + s.version + s.header + s.body)


def sign_typed(msg: _Typed, domain: Domain, account: LocalAccount) -> bytes:
    """Sign ``msg`` with ``account``; returns the 65-byte ``r ‖ s ‖ v`` signature."""
    return bytes(account.sign_message(signable(msg, domain)).signature)


def recover_typed(msg: _Typed, domain: Domain, signature: bytes) -> str:
    """The checksum address that produced ``signature`` over ``msg``.

    Raises:
        NonCanonicalSignature: a form the contracts refuse (`require_canonical`).
    """
    return str(Account.recover_message(signable(msg, domain), signature=require_canonical(signature)))


# ---------------------------------------------------------------------------------------------
# Named helpers (what callers use)
# ---------------------------------------------------------------------------------------------


def hash_task_request(req: TaskRequest, domain: Domain) -> bytes:
    """The request's EIP-712 digest, which is also the task id (``requestHash``)."""
    return hash_typed(req, domain)


def sign_task_request(req: TaskRequest, domain: Domain, account: LocalAccount) -> bytes:
    """Sign a task request as its user."""
    return sign_typed(req, domain, account)


def recover_task_request(req: TaskRequest, domain: Domain, signature: bytes) -> str:
    """Address that signed ``req`` (compare with ``req.user``)."""
    return recover_typed(req, domain, signature)


def hash_voucher(voucher: Voucher, domain: Domain) -> bytes:
    """The voucher's EIP-712 digest (the Payments contract's ``hashVoucher``)."""
    return hash_typed(voucher, domain)


def sign_voucher(voucher: Voucher, domain: Domain, account: LocalAccount) -> bytes:
    """Sign a cumulative voucher as its user."""
    return sign_typed(voucher, domain, account)


def recover_voucher(voucher: Voucher, domain: Domain, signature: bytes) -> str:
    """Address that signed ``voucher`` (compare with ``voucher.user``)."""
    return recover_typed(voucher, domain, signature)


def sign_receipt_promise(promise: ReceiptPromise, domain: Domain, account: LocalAccount) -> bytes:
    """Sign, as the node, the promise to commit a receipt by a time."""
    return sign_typed(promise, domain, account)


def recover_receipt_promise(promise: ReceiptPromise, domain: Domain, signature: bytes) -> str:
    """The address that signed a receipt promise."""
    return recover_typed(promise, domain, signature)


def hash_confirmation(conf: Confirmation, domain: Domain) -> bytes:
    """The confirmation's EIP-712 digest."""
    return hash_typed(conf, domain)


def sign_confirmation(conf: Confirmation, domain: Domain, account: LocalAccount) -> bytes:
    """Sign the task owner's consent to one irreversible action."""
    return sign_typed(conf, domain, account)


def recover_confirmation(conf: Confirmation, domain: Domain, signature: bytes) -> str:
    """Address that signed ``conf`` (compare with the task's user)."""
    return recover_typed(conf, domain, signature)
