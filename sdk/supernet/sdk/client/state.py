"""The user's local payment state per node: last nonce and cumulative voucher total.

One small JSON file (``<state_dir>/client-state.json``, written atomically) so that nonces keep
increasing and vouchers stay cumulative across runs, and so ``supernet task receipt ID`` knows
which node ran a task and what its input was.

>>> st = ClientState.open(Path("/tmp/supernet-doc"))  # doctest: +SKIP
>>> st.account("31337:0xPay", "0xUser", "0xNode").nonce
0
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from supernet.sdk.client.freshness import SeenRoot

DEFAULT_STATE_DIR = Path.home() / ".supernet"


@dataclass
class NodeAccount:
    """The user's running totals with one node (mutable: updated as tasks go)."""

    nonce: int = 0
    cumulative: int = 0


@dataclass
class TaskRecord:
    """What the user remembers of a submitted task (to fetch and verify its receipt later)."""

    node: str
    node_url: str
    input: Any
    model_id: str
    fee: int
    output: str | None = None
    status: str = "submitted"
    # the signed TaskRequest (its JSON form): proves this user's claim to a fraud refund
    request: dict[str, str] | None = None
    # the node's signed promise to commit the receipt: {"leaf", "commitBy", "signature",
    # "receipt"} (an omission claim shows it and the promised receipt, `Client.claim_omission`)
    promise: dict[str, Any] | None = None
    # when this client sent the task and received its result, on the state's own logical clock
    # (`ClientState.tick`; a wall clock can step back): which tasks had finished before it was sent
    # (`supernet.sdk.client.freshness`)
    sent_seq: int | None = None
    done_seq: int | None = None


@dataclass
class ClientState:
    """All accounts and tasks of this state directory."""

    path: Path
    accounts: dict[str, NodeAccount] = field(default_factory=dict)
    tasks: dict[str, TaskRecord] = field(default_factory=dict)
    # the last memory and file root of each node's namespaces this client saw (`check_latest`)
    roots: dict[str, SeenRoot] = field(default_factory=dict)
    clock: int = 0  # the last value `tick` gave

    @classmethod
    def open(cls, state_dir: Path | None = None) -> ClientState:
        """Load the state file (an empty state if there is none)."""
        path = (state_dir or DEFAULT_STATE_DIR) / "client-state.json"
        if not path.exists():
            return cls(path)
        doc = json.loads(path.read_text())
        return cls(
            path,
            {k: NodeAccount(**v) for k, v in doc.get("accounts", {}).items()},
            {k: TaskRecord(**v) for k, v in doc.get("tasks", {}).items()},
            {k: SeenRoot(**v) for k, v in doc.get("roots", {}).items()},
            int(doc.get("clock", 0)),
        )

    @staticmethod
    def key(domain_key: str, user: str, node: str) -> str:
        """The account key of (deployment, user, node)."""
        return f"{domain_key}:{user.lower()}:{node.lower()}"

    def account(self, domain_key: str, user: str, node: str) -> NodeAccount:
        """The (possibly new) account of ``user`` with ``node``."""
        return self.accounts.setdefault(self.key(domain_key, user, node), NodeAccount())

    def record_sent(
        self,
        task_id: str,
        node: str,
        node_url: str,
        task_input: Any,
        model_id: str,
        fee: int,
        request: dict[str, str],
    ) -> TaskRecord:
        """Remember a signed task before it is sent (saved): if the node stores it but its answer is
        lost, the next sync finds the task on the node and counts its fee (`Client`), and its
        receipt can be verified and claimed on by any client of this state directory."""
        record = TaskRecord(
            node, node_url, task_input, model_id, fee, status="sent", request=request, sent_seq=self.tick()
        )
        self.tasks[task_id] = record
        self.save()
        return record

    def tick(self) -> int:
        """The next value of this state's logical clock (persisted with it): orders this client's
        sends and results whatever the machine's clock does."""
        self.clock += 1
        return self.clock

    def save(self) -> None:
        """Write the state atomically (temp file + rename, fsync'd)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "accounts": {k: asdict(v) for k, v in self.accounts.items()},
            "tasks": {k: asdict(v) for k, v in self.tasks.items()},
            "roots": {k: asdict(v) for k, v in self.roots.items()},
            "clock": self.clock,
        }
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".state-")
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
