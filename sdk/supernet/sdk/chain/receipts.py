"""The task receipt (docs/protocol.md "Receipts and batches"): struct, leaf hash, node signature.

``leaf = keccak256(keccak256(abi.encode(receipt)))``; the node signs the leaf with EIP-191
``personal_sign``. Helpers compute the protocol's content hashes (sha256 of inputs and outputs,
and of the dag-cbor trace block: the digest inside the trace's CID, which a contract can recompute
from posted bytes).

>>> from eth_account import Account
>>> from supernet.sdk.store.cids import compute_cid
>>> node = Account.from_key("0x" + "11" * 32)
>>> r = Receipt(request_hash=b"\\x01" * 32, user="0x" + "22" * 20, model_id=b"\\x02" * 32,
...             input_hash=input_hash("hi"), output_hash=output_hash("hello"),
...             trace_hash=trace_hash(compute_cid(b"\\xa0", "dag-cbor")), fee=1000)
>>> recover_receipt_signer(r, sign_receipt(r, node)) == node.address
True
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import rfc8785
from eth_abi import decode, encode
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address
from supernet.sdk.chain.signatures import require_canonical
from supernet.sdk.store.cids import cid_digest, cid_of_digest
from supernet.sdk.store.errors import InvalidCIDError

RECEIPT_ABI_TYPES = ("bytes32", "address", "bytes32", "bytes32", "bytes32", "bytes32", "uint256")
"""The Solidity ``Receipt`` struct's field types, in order (a static tuple)."""


def canonical_json(obj: Any) -> bytes:
    """Sorted-key compact JSON, UTF-8: the encoding of model weight manifests (``modelId``).

    Task inputs and tool actions use `canonical_input` (RFC 8785) instead.
    """
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class InputEncodingError(ValueError):
    """A task input (or tool action) the protocol cannot hash and record the same way everywhere:
    a non-finite number, an integer beyond ±(2**53 - 1), a lone surrogate, a non-string key."""


def canonical_input(task_input: Any) -> bytes:
    """The one encoding of a task input: its RFC 8785 (JCS) canonical JSON, strings included.

    It is what ``inputHash`` hashes, what admission refuses when it fails, and it round-trips through
    the dag-cbor trace unchanged (JCS admits only finite numbers and safe integers, which dag-cbor
    holds exactly), so a validator recomputes the same hash from the trace. Clients in any language
    compute it with an RFC 8785 library. A string is encoded as a JSON string too (it used to be
    its bare UTF-8, so the string that spelled an object's canonical JSON had that object's hash,
    and a signed object input could be swapped for that text: the type is part of the input).

    Raises:
        InputEncodingError: the input has no canonical form.
    """
    try:
        return bytes(rfc8785.dumps(task_input))
    except (rfc8785.CanonicalizationError, TypeError, ValueError, RecursionError, UnicodeEncodeError) as exc:
        raise InputEncodingError(f"the input has no RFC 8785 canonical JSON form: {exc}") from None


def input_hash(task_input: str | Mapping[str, Any]) -> bytes:
    """sha256 of `canonical_input` (the signed ``inputHash``).

    Raises:
        InputEncodingError: the input has no canonical form.
    """
    return hashlib.sha256(canonical_input(task_input)).digest()


def action_hash(tool: str, args: Mapping[str, Any]) -> bytes:
    """The ``actionHash`` a ``Confirmation`` signs for a tool call: sha256 of the RFC 8785 JSON of
    ``{"tool", "args"}`` (the node checks it, the user's client computes it).

    Raises:
        InputEncodingError: the arguments have no canonical form.
    """
    return hashlib.sha256(canonical_input({"tool": tool, "args": dict(args)})).digest()


def output_hash(output: str) -> bytes:
    """sha256 of the UTF-8 output text."""
    return hashlib.sha256(output.encode()).digest()


def trace_hash(trace_cid: str) -> bytes:
    """The receipt's ``traceHash`` of a trace: sha256 of its dag-cbor block, read off its CID.

    Raises:
        InvalidCIDError: not a CIDv1 dag-cbor sha2-256 CID (a trace is always one).
    """
    codec, digest = cid_digest(trace_cid)
    if codec != "dag-cbor":
        raise InvalidCIDError(f"a trace is a dag-cbor block, not {codec}: {trace_cid}")
    return digest


def trace_cid(trace_hash: bytes) -> str:
    """The CID of the trace a receipt commits to (the inverse of `trace_hash`)."""
    return cid_of_digest(trace_hash, "dag-cbor")


@dataclass(frozen=True)
class Receipt:
    """One executed task, as committed in a batch (mirrors the Solidity struct field by field)."""

    request_hash: bytes
    user: str
    model_id: bytes
    input_hash: bytes
    output_hash: bytes
    trace_hash: bytes
    fee: int

    @classmethod
    def from_tuple(cls, values: tuple[Any, ...]) -> Receipt:
        """From the Solidity struct's values in field order (as web3 decodes them)."""
        rh, user, model, inp, out, trace, fee = values
        return cls(
            bytes(rh), to_checksum_address(user), bytes(model), bytes(inp), bytes(out), bytes(trace), int(fee)
        )

    def as_tuple(self) -> tuple[bytes, str, bytes, bytes, bytes, bytes, int]:
        """The struct as a tuple in field order, as web3 passes it to a contract call."""
        return (
            self.request_hash,
            to_checksum_address(self.user),
            self.model_id,
            self.input_hash,
            self.output_hash,
            self.trace_hash,
            self.fee,
        )

    def encode(self) -> bytes:
        """``abi.encode(receipt)``: seven 32-byte words."""
        return encode(list(RECEIPT_ABI_TYPES), list(self.as_tuple()))

    @classmethod
    def decode(cls, data: bytes) -> Receipt:
        """Inverse of `encode`."""
        rh, user, mid, ih, oh, th, fee = decode(list(RECEIPT_ABI_TYPES), data)
        return cls(rh, to_checksum_address(user), mid, ih, oh, th, fee)

    def leaf(self) -> bytes:
        """The Merkle leaf: double keccak256 of the ABI encoding (no second-preimage attacks)."""
        return keccak(keccak(self.encode()))

    def to_json(self) -> dict[str, Any]:
        """JSON-friendly mapping (hex strings) for manifests and APIs."""
        return {
            "requestHash": "0x" + self.request_hash.hex(),
            "user": to_checksum_address(self.user),
            "modelId": "0x" + self.model_id.hex(),
            "inputHash": "0x" + self.input_hash.hex(),
            "outputHash": "0x" + self.output_hash.hex(),
            "traceHash": "0x" + self.trace_hash.hex(),
            "fee": str(self.fee),
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Receipt:
        """Inverse of `to_json`."""
        return cls(
            request_hash=bytes.fromhex(obj["requestHash"].removeprefix("0x")),
            user=to_checksum_address(obj["user"]),
            model_id=bytes.fromhex(obj["modelId"].removeprefix("0x")),
            input_hash=bytes.fromhex(obj["inputHash"].removeprefix("0x")),
            output_hash=bytes.fromhex(obj["outputHash"].removeprefix("0x")),
            trace_hash=bytes.fromhex(obj["traceHash"].removeprefix("0x")),
            fee=int(obj["fee"]),
        )


def sign_receipt(receipt: Receipt, node: LocalAccount) -> bytes:
    """The node's EIP-191 ``personal_sign`` of the receipt's leaf (65 bytes)."""
    return bytes(node.sign_message(encode_defunct(primitive=receipt.leaf())).signature)


def recover_receipt_signer(receipt: Receipt, signature: bytes) -> str:
    """Address that signed the receipt's leaf.

    Raises:
        NonCanonicalSignature: a form the contracts refuse (`require_canonical`).
    """
    leaf = encode_defunct(primitive=receipt.leaf())
    return str(Account.recover_message(leaf, signature=require_canonical(signature)))
