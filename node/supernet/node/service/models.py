"""Internal messages of the node service: frozen dataclasses (pydantic stays at the edges).

Rows read from SQLite become these types at once, so the rest of the service never handles
``sqlite3.Row`` or string-encoded integers.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from supernet.sdk.chain.eip712 import TaskRequest
from supernet.sdk.chain.forks import Checkpoint


class TaskStatus(StrEnum):
    """Life of a task. Only ``done`` tasks are ever paid for."""

    ACCEPTED = "accepted"  # authenticated and stored, not started
    RUNNING = "running"  # in the kernel
    DONE = "done"  # output and signed receipt stored
    FAILED = "failed"  # the agent failed: not charged
    REFUSED = "refused"  # dropped after a restart (deadline passed): not charged


@dataclass(frozen=True)
class NewTask:
    """An authenticated task, ready to be stored."""

    id: str
    user: str
    nonce: int
    model_id: str
    agent: str
    agent_hash: str
    input: str | dict[str, Any]
    input_hash: str
    max_fee: int
    fee: int
    deadline: int
    signature: str
    voucher_amount: int
    voucher_signature: str

    @property
    def input_json(self) -> str:
        """The input as stored (JSON, so strings and objects round-trip)."""
        return json.dumps(self.input, ensure_ascii=False)


@dataclass(frozen=True)
class TaskRow:
    """A stored task."""

    id: str
    user: str
    nonce: int
    model_id: str
    agent: str
    agent_hash: str
    input: str | dict[str, Any]
    input_hash: str
    max_fee: int
    fee: int
    deadline: int
    signature: str
    status: TaskStatus
    output: str | None
    trace_cid: str | None
    error: str | None
    created_at: float
    updated_at: float

    def task_request(self, node: str) -> TaskRequest:
        """The signed EIP-712 ``TaskRequest`` (manifests and traces carry its ``to_json`` form)."""
        return TaskRequest(
            user=self.user,
            node=node,
            model_id=bytes.fromhex(self.model_id.removeprefix("0x")),
            agent_hash=bytes.fromhex(self.agent_hash.removeprefix("0x")),
            input_hash=bytes.fromhex(self.input_hash.removeprefix("0x")),
            max_fee=self.max_fee,
            nonce=self.nonce,
            deadline=self.deadline,
        )

    @classmethod
    def from_row(cls, r: sqlite3.Row) -> TaskRow:
        """Decode a ``tasks`` row."""
        return cls(
            id=r["id"],
            user=r["user"],
            nonce=int(r["nonce"]),
            model_id=r["model_id"],
            agent=r["agent"],
            agent_hash=r["agent_hash"],
            input=json.loads(r["input"]),
            input_hash=r["input_hash"],
            max_fee=int(r["max_fee"]),
            fee=int(r["fee"]),
            deadline=int(r["deadline"]),
            signature=r["signature"],
            status=TaskStatus(r["status"]),
            output=r["output"],
            trace_cid=r["trace_cid"],
            error=r["error"],
            created_at=float(r["created_at"]),
            updated_at=float(r["updated_at"]),
        )


@dataclass(frozen=True)
class ReceiptRow:
    """A signed receipt; batch fields are set once its batch is sealed / committed."""

    task_id: str
    leaf: str
    body: str  # the receipt as JSON (Receipt.to_json)
    signature: str
    batch_id: int | None = None
    batch_index: int | None = None
    proof: str | None = None  # JSON list of hex siblings
    created_at: float = 0.0

    @classmethod
    def from_row(cls, r: sqlite3.Row) -> ReceiptRow:
        """Decode a ``receipts`` row."""
        return cls(
            task_id=r["task_id"],
            leaf=r["leaf"],
            body=r["body"],
            signature=r["signature"],
            batch_id=r["batch_id"],
            batch_index=r["batch_index"],
            proof=r["proof"],
            created_at=float(r["created_at"]),
        )

    @property
    def receipt_json(self) -> dict[str, Any]:
        """The receipt fields (hex strings)."""
        return dict(json.loads(self.body))


@dataclass(frozen=True)
class BatchRow:
    """A batch of receipts: sealed locally, then sent, then committed on chain."""

    id: int
    root: str
    count: int
    manifest_cid: str
    status: str
    tx_hash: str | None
    chain_batch_id: int | None
    commit_block: Checkpoint | None = None
    """The block its commit was in when the node last looked (committed within the reorg watch)."""

    @classmethod
    def from_row(cls, r: sqlite3.Row) -> BatchRow:
        """Decode a ``batches`` row."""
        block = None
        if r["commit_block"] is not None:
            block = Checkpoint(int(r["commit_block"]), bytes.fromhex(r["commit_block_hash"][2:]))
        return cls(
            id=int(r["id"]),
            root=r["root"],
            count=int(r["count"]),
            manifest_cid=r["manifest_cid"],
            status=r["status"],
            tx_hash=r["tx_hash"],
            chain_batch_id=r["chain_batch_id"],
            commit_block=block,
        )
