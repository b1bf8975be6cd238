"""Challenge evidence, ``supernet/evidence/v1``: why a validator says a receipt is (or is not) fraud.

A validator writes one document per verdict to the content store; a challenge carries its CID so
that other validators and anyone else can read the findings before they re-check the receipt
themselves. Expected and claimed values come from traces a node wrote, so `plain` makes any
value encodable (no NaN, no integer past 64 bits, no lone surrogate) and bounded in depth.

>>> e = Evidence.from_dag(example_dag())
>>> e.fraud, e.findings[0].check
(True, 'llm.token')
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from multiformats import CID
from supernet.sdk.formats.fields import (
    FormatError,
    boolean,
    data,
    hex0x,
    hexbytes,
    integer,
    items,
    optional,
    record,
    string,
)

EVIDENCE_TYPE = "supernet/evidence/v1"


@dataclass(frozen=True)
class EvidenceFinding:
    """One mismatch: the check, a sentence, where (call, token position), expected vs claimed."""

    check: str
    message: str
    call: int | None = None
    position: int | None = None
    expected: Any = None
    claimed: Any = None

    def to_dag(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "message": plain(self.message),
            "call": self.call,
            "position": self.position,
            "expected": plain(self.expected),
            "claimed": plain(self.claimed),
        }

    @classmethod
    def from_dag(cls, obj: Any, path: str) -> EvidenceFinding:
        r = record(obj, path, ("check", "message", "call", "position", "expected", "claimed"))
        return cls(
            check=string(r["check"], f"{path}.check"),
            message=string(r["message"], f"{path}.message"),
            call=optional(integer)(r["call"], f"{path}.call"),
            position=optional(integer)(r["position"], f"{path}.position"),
            expected=data(r["expected"], f"{path}.expected"),
            claimed=data(r["claimed"], f"{path}.claimed"),
        )


@dataclass(frozen=True)
class Evidence:
    """A validator's verdict on one receipt, as published."""

    batch_id: int
    index: int
    leaf: bytes
    request_hash: bytes
    validator: str
    model_id: str
    unverifiable: str | None
    llm_calls: int
    tool_calls: int
    findings: tuple[EvidenceFinding, ...]

    @property
    def fraud(self) -> bool:
        """Whether anything was found wrong."""
        return bool(self.findings)

    def to_dag(self) -> dict[str, Any]:
        return {
            "type": EVIDENCE_TYPE,
            "batchId": self.batch_id,
            "index": self.index,
            "leaf": hex0x(self.leaf),
            "requestHash": hex0x(self.request_hash),
            "validator": self.validator,
            "modelId": self.model_id,
            "fraud": self.fraud,
            "unverifiable": self.unverifiable,
            "llmCalls": self.llm_calls,
            "toolCalls": self.tool_calls,
            "findings": [f.to_dag() for f in self.findings],
        }

    @classmethod
    def from_dag(cls, obj: Any) -> Evidence:
        """Read an evidence document (``FormatError`` naming the field)."""
        fields = (
            "type", "batchId", "index", "leaf", "requestHash", "validator", "modelId", "fraud",
            "unverifiable", "llmCalls", "toolCalls", "findings",
        )  # fmt: skip
        r = record(obj, "", fields)
        if r["type"] != EVIDENCE_TYPE:
            raise FormatError(f"type must be {EVIDENCE_TYPE!r}")
        evidence = cls(
            batch_id=integer(r["batchId"], "batchId", 0),
            index=integer(r["index"], "index", 0),
            leaf=hexbytes(r["leaf"], "leaf"),
            request_hash=hexbytes(r["requestHash"], "requestHash"),
            validator=string(r["validator"], "validator"),
            model_id=string(r["modelId"], "modelId"),
            unverifiable=optional(string)(r["unverifiable"], "unverifiable"),
            llm_calls=integer(r["llmCalls"], "llmCalls", 0),
            tool_calls=integer(r["toolCalls"], "toolCalls", 0),
            findings=items(r["findings"], "findings", EvidenceFinding.from_dag),
        )
        if boolean(r["fraud"], "fraud") != evidence.fraud:
            raise FormatError("fraud must say whether there are findings")
        return evidence


_MAX_DEPTH = 32


def plain(value: Any, depth: int = 0) -> Any:
    """Any value as dag-cbor-safe data (no NaN/inf, no tuples, bytes as hex, 64-bit integers)."""
    if depth > _MAX_DEPTH:
        return "…"
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, Mapping):
        return {plain(str(k)): plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v, depth + 1) for v in value]
    if isinstance(value, str):  # lone surrogates are not UTF-8: escape them
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        return str(value)  # dag-cbor holds 64-bit integers
    if value is None or isinstance(value, int | bool):
        return value
    return str(value) if isinstance(value, CID) else repr(value)


def example_dag() -> dict[str, Any]:
    """A small well-formed evidence document (for docs and tests)."""
    finding = EvidenceFinding("llm.token", "token 5 is not the argmax", 0, 5, 17, 99)
    return Evidence(
        1, 0, b"\x01" * 32, b"\x02" * 32, "0x" + "33" * 20, "0x" + "07" * 32, None, 1, 0, (finding,)
    ).to_dag()
