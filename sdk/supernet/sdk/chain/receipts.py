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
from supernet.sdk.models import canonical_json as canonical_json  # where manifests are defined
from supernet.sdk.store.cids import cid_digest, cid_of_digest
from supernet.sdk.store.errors import InvalidCIDError

RECEIPT_ABI_TYPES = ("bytes32", "address", "bytes32", "bytes32", "bytes32", "bytes32", "uint256")
"""The Solidity ``Receipt`` struct's field types, in order (a static tuple)."""


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


def normal_input(task_input: Any) -> Any:
    """The input as its canonical JSON reads back: what a node runs and records, and the only form
    of an input a trace may hold (`is_normal_input`).

    RFC 8785 spells ``8.0`` and ``8`` (and ``-0.0`` and ``0``) alike, so one ``inputHash`` names
    several values that dag-cbor, Python and an agent tell apart (``isinstance(x, int)``, a
    schema's ``integer``, ``json.dumps``). Reading the canonical bytes back picks one of them, the
    same everywhere, so the value an agent sees is a function of the hash the user signed.

    Raises:
        InputEncodingError: the input has no canonical form, or its normal form has none (a float
            such as 1e16 is spelled as an integer beyond 2**53 - 1, which no canonical form holds):
            such an input names no value every party can hash again, so it is refused like one
            without a canonical form.
    """
    value = json.loads(canonical_input(task_input))
    canonical_input(value)  # closed: the normal form is itself hashable (and its own normal form)
    return value


def is_normal_input(value: Any) -> bool:
    """Whether ``value`` is its own `normal_input`, types included (``8.0`` is not: its normal form
    is ``8``). Raises `InputEncodingError` when it has no canonical form."""
    return _same_typed(value, normal_input(value))


def _same_typed(a: Any, b: Any) -> bool:
    if isinstance(a, list | tuple) and isinstance(b, list):
        return len(a) == len(b) and all(_same_typed(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Mapping) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_typed(a[k], b[k]) for k in b)
    return type(a) is type(b) and a == b


def input_hash(task_input: str | Mapping[str, Any]) -> bytes:
    """sha256 of `canonical_input` (the signed ``inputHash``).

    Raises:
        InputEncodingError: the input has no canonical form.
    """
    return hashlib.sha256(canonical_input(task_input)).digest()


def action_hash(tool: str, args: Mapping[str, Any], occurrence: int = 0) -> bytes:
    """The ``actionHash`` a ``Confirmation`` signs for a tool call: sha256 of the RFC 8785 JSON of
    ``{"tool", "args", "occurrence"}`` (the node checks it, the user's client computes it).

    ``occurrence`` numbers the task's calls of this tool with these arguments, from 0, refused
    ones included: a signature allows one call, never a retry the user let time out nor a repeat
    of the same payment (tests/unit/test_review_confirmations.py).

    Raises:
        InputEncodingError: the arguments have no canonical form.
    """
    body = {"tool": tool, "args": dict(args), "occurrence": occurrence}
    return hashlib.sha256(canonical_input(body)).digest()


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
        """Inverse of `to_json`, and only of it: every hash exactly 32 bytes of ``0x`` hex and the
        fee a uint256 in decimal (or an integer), so one leaf has one JSON form (a short hash would
        be zero-padded by the ABI encoding into another spelling of the same leaf).

        Raises:
            ValueError: a field is missing its form (``KeyError`` if it is missing).
        """
        return cls(
            request_hash=_bytes32(obj["requestHash"], "requestHash"),
            user=to_checksum_address(obj["user"]),
            model_id=_bytes32(obj["modelId"], "modelId"),
            input_hash=_bytes32(obj["inputHash"], "inputHash"),
            output_hash=_bytes32(obj["outputHash"], "outputHash"),
            trace_hash=_bytes32(obj["traceHash"], "traceHash"),
            fee=_uint256(obj["fee"], "fee"),
        )


def _bytes32(value: Any, name: str) -> bytes:
    if not isinstance(value, str) or not value.startswith("0x") or len(value) != 66:
        raise ValueError(f"{name} must be 32 bytes of 0x-prefixed hex")
    return bytes.fromhex(value[2:])


def _uint256(value: Any, name: str) -> int:
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**256:
        raise ValueError(f"{name} must be a uint256 (decimal digits or an integer)")
    return value


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
