"""The node's durable state: SQLite (stdlib ``sqlite3``) in WAL mode, fsync on every commit.

Every state that matters is committed here *before* it is acknowledged: a task is inserted
together with its voucher and the user's new nonce in one transaction before ``POST /v1/tasks``
answers, and a receipt is stored before the task reads as done. Calls are short and local, so
they run inline on the event loop; one lock serialises the connection.

>>> db = Database.open(Path(":memory:"))  # doctest: +SKIP
>>> db.last_nonce("0xabc")
-1

Big integers (wei, uint256 nonces) are stored as decimal text and compared in Python.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from supernet.node.service.models import BatchRow, NewTask, ReceiptRow, TaskRow, TaskStatus
from supernet.node.service.ports import RootsSnapshot
from supernet.sdk.chain.eip712 import Domain
from supernet.sdk.chain.forks import Checkpoint
from supernet.sdk.errors import SupernetError
from supernet.sdk.sqlite import DurableSQLite

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY, user TEXT NOT NULL, nonce TEXT NOT NULL, model_id TEXT NOT NULL,
    agent TEXT NOT NULL, agent_hash TEXT NOT NULL, input TEXT NOT NULL, input_hash TEXT NOT NULL,
    max_fee TEXT NOT NULL, fee TEXT NOT NULL, deadline INTEGER NOT NULL, signature TEXT NOT NULL,
    status TEXT NOT NULL, output TEXT, trace_cid TEXT, error TEXT,
    created_at REAL NOT NULL, updated_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS tasks_user ON tasks(user, status);
CREATE INDEX IF NOT EXISTS tasks_status ON tasks(status);
CREATE TABLE IF NOT EXISTS nonces (user TEXT PRIMARY KEY, last_nonce TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS vouchers (
    task_id TEXT PRIMARY KEY REFERENCES tasks(id), user TEXT NOT NULL,
    cumulative TEXT NOT NULL, signature TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS vouchers_user ON vouchers(user);
CREATE TABLE IF NOT EXISTS commit_txs (
    batch_id INTEGER PRIMARY KEY REFERENCES batches(id), tx_hash TEXT NOT NULL, raw TEXT NOT NULL,
    nonce INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS answer_txs (
    claim TEXT PRIMARY KEY, raw TEXT NOT NULL, nonce INTEGER NOT NULL, hashes TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY AUTOINCREMENT, root TEXT NOT NULL, count INTEGER NOT NULL,
    manifest_cid TEXT NOT NULL, status TEXT NOT NULL, tx_hash TEXT, chain_batch_id INTEGER,
    created_at REAL NOT NULL, committed_at REAL);
CREATE TABLE IF NOT EXISTS receipts (
    task_id TEXT PRIMARY KEY REFERENCES tasks(id), leaf TEXT NOT NULL, body TEXT NOT NULL,
    signature TEXT NOT NULL, batch_id INTEGER REFERENCES batches(id), batch_index INTEGER,
    proof TEXT, created_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS receipts_pending ON receipts(batch_id, created_at);
CREATE TABLE IF NOT EXISTS promises (
    task_id TEXT PRIMARY KEY REFERENCES receipts(task_id), commit_by INTEGER NOT NULL,
    signature TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS redemptions (
    user TEXT PRIMARY KEY, redeemed TEXT NOT NULL, tx_hash TEXT, updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS closing_channels (user TEXT PRIMARY KEY, block INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS chain_cursors (name TEXT PRIMARY KEY, block INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS decoys (
    task_id TEXT PRIMARY KEY, account_index INTEGER NOT NULL, signature TEXT NOT NULL,
    planted_at REAL NOT NULL, revealed_challenge INTEGER);
CREATE TABLE IF NOT EXISTS audit (
    task_id TEXT NOT NULL, seq INTEGER NOT NULL, time REAL NOT NULL, agent TEXT NOT NULL,
    user TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL, allowed INTEGER NOT NULL,
    reason TEXT NOT NULL, PRIMARY KEY (task_id, seq));
CREATE TABLE IF NOT EXISTS namespace_roots (
    id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL, roots TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS grants (
    namespace TEXT NOT NULL, cid TEXT NOT NULL, PRIMARY KEY (namespace, cid)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS irreversible_calls (
    task_id TEXT NOT NULL, action TEXT NOT NULL, tool TEXT NOT NULL, started_at REAL NOT NULL,
    PRIMARY KEY (task_id, action));
CREATE TABLE IF NOT EXISTS signing_domain (
    id INTEGER PRIMARY KEY CHECK (id = 1), chain_id INTEGER NOT NULL,
    verifying_contract TEXT NOT NULL, recorded_at REAL NOT NULL);
"""

_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: the reorg watch. The block (number, 0x hash) a batch's commit was in when the node last
    # looked; NULL for batches committed before (deeper than any reorg by now: not watched).
    (
        "ALTER TABLE batches ADD COLUMN commit_block INTEGER",
        "ALTER TABLE batches ADD COLUMN commit_block_hash TEXT",
    ),
    # 2: the settlement scan (`supernet.node.service.redeemer`). The channel's deposit as last read
    # (NULL: not read, or a deposit since) and the chain's head when ``redeemed`` was last read
    # (NULL: recorded from a redemption, not read back since). Rows from before: read long ago (0).
    (
        "ALTER TABLE redemptions ADD COLUMN deposited TEXT",
        "ALTER TABLE redemptions ADD COLUMN block INTEGER DEFAULT 0",
    ),
    # 3: store-read grants in a table of their own, added with each receipt, instead of the whole
    # index inside the roots snapshot (rewritten at every task's end): moved out of it once.
    (
        "INSERT OR IGNORE INTO grants SELECT g.key, c.value FROM namespace_roots, "
        "json_each(namespace_roots.roots, '$.grants') AS g, json_each(g.value) AS c",
        "UPDATE namespace_roots SET roots = json_remove(roots, '$.grants')",
    ),
)
"""Schema changes, version ``i + 1`` at index ``i``; each runs once, in one transaction. A new
table needs none: `SCHEMA` runs on every open, so its ``CREATE TABLE IF NOT EXISTS`` adds the table
to a file an older node left (``signing_domain``: such a file has receipts and no record of their
domain, which its first start on a chain records; `Database.bind_domain`)."""


class DatabaseInUseError(SupernetError):
    """Another process holds the node's database (a second node on the same data directory)."""


class DomainMismatchError(SupernetError):
    """The database belongs to another EIP-712 domain (a chain and its Payments contract) than the
    one this start signs for, or to a chain while this start is off chain (dev mode): its receipts
    were promised to be committed on that chain, and only a start on it can keep the promises."""


_BILLED = (TaskStatus.ACCEPTED, TaskStatus.RUNNING, TaskStatus.DONE)


class Database:
    """Typed access to the node's tables; see the module docstring for the durability rule."""

    def __init__(self, db: DurableSQLite, lock_fd: int | None = None) -> None:
        self._db = db
        self._lock_fd = lock_fd  # `open(exclusive=True)`'s lock, released by `close`
        self._migrate()

    def _migrate(self) -> None:
        version = int(self._all("PRAGMA user_version")[0][0])
        for number, statements in enumerate(_MIGRATIONS[version:], start=version + 1):
            with self.transaction() as c:
                for sql in statements:
                    c.execute(sql)
                c.execute(f"PRAGMA user_version = {number}")

    def schema_version(self) -> int:
        """The file's schema version (``len(_MIGRATIONS)`` once opened)."""
        return int(self._all("PRAGMA user_version")[0][0])

    @classmethod
    def open(cls, path: Path, *, exclusive: bool = False) -> Database:
        """Open (and create) the database at ``path``; ``:memory:`` for tests.

        Args:
            exclusive: hold it against every other process until `close` (the running node: two
                processes on one database each sign an answer to the same claim, or a commit of
                the same batch, at consecutive nonces, and the second reverts at the node's cost;
                tests/unit/test_review_session_changes24.py). A POSIX lock of ``<path>.lock``:
                another process's is refused at once, this process may open it again.

        Raises:
            DatabaseInUseError: ``exclusive`` and another process holds it.
        """
        lock_fd = _lock(path) if exclusive and str(path) != ":memory:" else None
        try:
            return cls(DurableSQLite(path, SCHEMA, row_factory=sqlite3.Row), lock_fd)
        except BaseException:
            if lock_fd is not None:
                os.close(lock_fd)
            raise

    def close(self) -> None:
        """Close the connection (pending transactions are rolled back by SQLite) and release the
        exclusive lock, if held."""
        self._db.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``), committed durably on exit."""
        return self._db.transaction()

    def _all(self, sql: str, args: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        return self._db.all(sql, args)

    # ---------------------------------------------------------------- the domain it signs for

    def signing_domain(self) -> Domain | None:
        """The EIP-712 domain this database's receipts and promises are signed for (recorded at the
        node's first start on a chain; None: never started on one since it was recorded)."""
        rows = self._all("SELECT chain_id, verifying_contract FROM signing_domain WHERE id = 1")
        return Domain(int(rows[0]["chain_id"]), str(rows[0]["verifying_contract"])) if rows else None

    def chain_history(self) -> bool:
        """Whether the file shows a life on a chain (a commit sent, a redemption or a channel read,
        a log cursor, a decoy): what tells an older file's chain life from dev mode's."""
        marks = (
            "SELECT 1 FROM batches WHERE tx_hash IS NOT NULL OR commit_block IS NOT NULL",
            "SELECT 1 FROM commit_txs",
            "SELECT 1 FROM redemptions",
            "SELECT 1 FROM chain_cursors",
            "SELECT 1 FROM decoys",
        )
        return any(self._all(sql + " LIMIT 1") for sql in marks)

    def bind_domain(self, domain: Domain | None, where: str) -> None:
        """Bind the file to the domain it signs for, or refuse this start.

        ``domain``: the domain of this start's chain (None: dev mode, off chain). A start on a
        chain records its domain the first time (an older file that shows a chain life too) and
        must match it afterwards; a start off chain is refused over a file bound to a chain, or
        over an older file that shows a chain life (`chain_history`), since dev mode marks batches
        committed without a transaction and the receipts' promises would never be kept
        (tests/unit/test_review_operator_tools.py, 1); a start on a chain is refused over a file
        that holds dev mode's receipts (receipts and no chain life), whose batches carry local ids
        as chain batch ids and whose receipts are signed for no chain
        (tests/unit/test_review_session_changes20.py). ``where`` names the file in the error.

        Raises:
            DomainMismatchError: this start cannot keep the promises the file holds.
        """
        bound = self.signing_domain()
        if bound is None:
            if domain is not None:
                if not self.chain_history() and self._all("SELECT 1 FROM receipts LIMIT 1"):
                    # dev mode's receipts: signed for no chain, their batches "committed" under local
                    # ids that a chain's batch ids would meet (tests/unit/test_review_session_changes20.py)
                    raise DomainMismatchError(
                        f"{where} holds receipts signed in dev mode (no chain), whose batches were "
                        "never committed: give the node on a chain another data_dir"
                    )
                with self.transaction() as c:
                    c.execute(
                        "INSERT OR IGNORE INTO signing_domain VALUES (1, ?, ?, ?)",
                        (domain.chain_id, domain.verifying_contract, time.time()),
                    )
                return
            if self.chain_history():
                raise DomainMismatchError(
                    f"{where} was used on a chain (it holds commits, redemptions or a log cursor) "
                    "and does not record which: start the node on that chain once (it records it), "
                    "or give dev mode another data_dir"
                )
            return
        owner = (
            f"{where} belongs to chain {bound.chain_id} (Payments {bound.verifying_contract}): "
            "its receipts are signed and promised to be committed there"
        )
        if domain is None:
            raise DomainMismatchError(
                f"{owner}, and this start is in dev mode (no chain): start the node on that chain "
                "(--rpc and --deployment), or give dev mode another data_dir"
            )
        if domain.chain_id != bound.chain_id or domain.verifying_contract.lower() != (
            bound.verifying_contract.lower()
        ):
            raise DomainMismatchError(
                f"{owner}, and this start is for chain {domain.chain_id} (Payments "
                f"{domain.verifying_contract}): start the node with that chain's RPC and deployment, "
                "or give this one another data_dir"
            )

    def oldest_uncommitted(self) -> tuple[float, int | None] | None:
        """The oldest receipt not yet committed on chain: when it was stored and the earliest
        ``commitBy`` among such receipts' promises (None: none promised); None: all committed.
        Receipts are batched in order, so these are the first unfinished batch's and those in no
        batch yet, each set read through the receipts' batch index (`Batcher`, while commits fail)."""
        first = self._all("SELECT MIN(id) AS id FROM batches WHERE status != 'committed'")[0]["id"]
        query = (
            "SELECT MIN(r.created_at) AS at, MIN(p.commit_by) AS due FROM receipts r "
            "LEFT JOIN promises p ON p.task_id = r.task_id WHERE r.batch_id "
        )
        rows = self._all(query + "IS NULL")
        if first is not None:
            rows += self._all(query + "= ?", (int(first),))
        at = [float(r["at"]) for r in rows if r["at"] is not None]
        due = [int(r["due"]) for r in rows if r["due"] is not None]
        return (min(at), min(due, default=None)) if at else None

    # ---------------------------------------------------------------- users: nonces, billing

    def last_nonce(self, user: str) -> int:
        """The highest nonce accepted from ``user`` (-1 if none)."""
        rows = self._all("SELECT last_nonce FROM nonces WHERE user = ?", (user,))
        return int(rows[0]["last_nonce"]) if rows else -1

    def billed(self, user: str, *, done_only: bool = False) -> int:
        """Sum of the fees of ``user``'s tasks that are (or will be) charged."""
        statuses = (TaskStatus.DONE,) if done_only else _BILLED
        marks = ",".join("?" * len(statuses))
        rows = self._all(f"SELECT fee FROM tasks WHERE user = ? AND status IN ({marks})", (user, *statuses))
        return sum(int(r["fee"]) for r in rows)

    def unfinished_fees(self, user: str) -> set[int]:
        """The fees of ``user``'s tasks still accepted or running."""
        rows = self._all(
            "SELECT DISTINCT fee FROM tasks WHERE user = ? AND status IN (?, ?)",
            (user, TaskStatus.ACCEPTED, TaskStatus.RUNNING),
        )
        return {int(r["fee"]) for r in rows}

    def unfinished_count(self, user: str) -> int:
        """How many of ``user``'s tasks are still accepted or running."""
        rows = self._all(
            "SELECT COUNT(*) AS n FROM tasks WHERE user = ? AND status IN (?, ?)",
            (user, TaskStatus.ACCEPTED, TaskStatus.RUNNING),
        )
        return int(rows[0]["n"])

    def insert_task(self, task: NewTask, guard: Callable[[int, int], None] | None = None) -> None:
        """Store an accepted task, its voucher and the user's nonce in one durable transaction.

        Args:
            task: the authenticated task.
            guard: called inside the transaction with the user's last nonce and billed total;
                it raises to refuse the task, so the check and the write are atomic.
        """
        now = time.time()
        with self.transaction() as c:
            if guard is not None:
                guard(self.last_nonce(task.user), self.billed(task.user))
            c.execute(
                "INSERT INTO tasks VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,NULL,NULL,NULL,?,?)",
                (
                    task.id,
                    task.user,
                    str(task.nonce),
                    task.model_id,
                    task.agent,
                    task.agent_hash,
                    task.input_json,
                    task.input_hash,
                    str(task.max_fee),
                    str(task.fee),
                    task.deadline,
                    task.signature,
                    TaskStatus.ACCEPTED,
                    now,
                    now,
                ),
            )
            c.execute(
                "INSERT INTO vouchers VALUES (?,?,?,?)",
                (task.id, task.user, str(task.voucher_amount), task.voucher_signature),
            )
            c.execute(
                "INSERT INTO nonces VALUES (?, ?) ON CONFLICT(user) DO UPDATE SET last_nonce = ?",
                (task.user, str(task.nonce), str(task.nonce)),
            )

    # ---------------------------------------------------------------- tasks

    def task(self, task_id: str) -> TaskRow | None:
        """One task by id, or None."""
        rows = self._all("SELECT * FROM tasks WHERE id = ?", (task_id,))
        return TaskRow.from_row(rows[0]) if rows else None

    def tasks_with_status(self, *statuses: TaskStatus) -> list[TaskRow]:
        """Tasks in any of ``statuses``, oldest first."""
        marks = ",".join("?" * len(statuses))
        rows = self._all(f"SELECT * FROM tasks WHERE status IN ({marks}) ORDER BY created_at", statuses)
        return [TaskRow.from_row(r) for r in rows]

    def set_status(self, task_id: str, status: TaskStatus, *, error: str | None = None) -> None:
        """Move a task to ``status`` (running, failed, refused)."""
        with self.transaction() as c:
            c.execute(
                "UPDATE tasks SET status = ?, error = ?, updated_at = ? WHERE id = ?",
                (status, error, time.time(), task_id),
            )

    def finish_task(
        self,
        task_id: str,
        output: str,
        trace_cid: str,
        receipt: ReceiptRow,
        promise: tuple[int, str] | None = None,
        roots: RootsSnapshot | None = None,
    ) -> None:
        """Store the output, the signed receipt and the signed promise to commit it (``commitBy``,
        signature), and mark the task done, atomically; with the namespace roots holding the task's
        writes when given (a crash keeps both or neither)."""
        now = time.time()
        with self.transaction() as c:
            if roots is not None:
                _put_roots(c, roots)
            c.execute(
                "UPDATE tasks SET status = ?, output = ?, trace_cid = ?, updated_at = ? WHERE id = ?",
                (TaskStatus.DONE, output, trace_cid, now, task_id),
            )
            c.execute(
                "INSERT INTO receipts VALUES (?,?,?,?,NULL,NULL,NULL,?)",
                (task_id, receipt.leaf, receipt.body, receipt.signature, now),
            )
            if promise is not None:
                c.execute("INSERT INTO promises VALUES (?,?,?)", (task_id, promise[0], promise[1]))

    def promise(self, task_id: str) -> tuple[int, str] | None:
        """The node's signed promise to commit the task's receipt: (``commitBy``, signature)."""
        rows = self._all("SELECT commit_by, signature FROM promises WHERE task_id = ?", (task_id,))
        return (int(rows[0]["commit_by"]), str(rows[0]["signature"])) if rows else None

    def receipt_by_leaf(self, leaf: str) -> ReceiptRow | None:
        """The receipt with Merkle leaf ``leaf`` (0x hex), if this node signed one."""
        rows = self._all("SELECT * FROM receipts WHERE leaf = ?", (leaf.lower(),))
        return ReceiptRow.from_row(rows[0]) if rows else None

    def count_by_status(self) -> dict[str, int]:
        """Number of tasks per status (for metrics)."""
        rows = self._all("SELECT status, COUNT(*) AS n FROM tasks GROUP BY status")
        return {r["status"]: int(r["n"]) for r in rows}

    def count_unfinished(self) -> dict[str, int]:
        """Number of tasks accepted and running: the node's load, read through the status index
        (its cost follows the unfinished tasks, bounded per user, not the node's whole history)."""
        query = "SELECT COUNT(*) AS n FROM tasks WHERE status = ?"
        unfinished = (TaskStatus.ACCEPTED, TaskStatus.RUNNING)
        return {str(s): int(self._all(query, (s,))[0]["n"]) for s in unfinished}

    def task_count(self) -> int:
        """Number of tasks ever admitted (decoys included)."""
        return int(self._all("SELECT COUNT(*) AS n FROM tasks")[0]["n"])

    def recent_inputs(self, limit: int) -> list[str | dict[str, Any]]:
        """Inputs of the latest finished ``chat`` tasks that are not decoys, newest first, as they
        were sent (the column holds their JSON: a decoy sent that text would be an input quoted
        once more, which no user sends)."""
        rows = self._all(
            "SELECT input FROM tasks WHERE status = ? AND agent = 'chat' "
            "AND id NOT IN (SELECT task_id FROM decoys) ORDER BY created_at DESC LIMIT ?",
            (TaskStatus.DONE.value, limit),
        )
        return [json.loads(r["input"]) for r in rows]

    # ---------------------------------------------------------------- decoys

    def insert_decoy(self, task_id: str, account_index: int, signature: str, planted_at: float) -> None:
        """Record a decoy (before its task is sent: a crash never loses the means to reveal it)."""
        with self._db.transaction() as c:
            c.execute(
                "INSERT INTO decoys (task_id, account_index, signature, planted_at) VALUES (?, ?, ?, ?)",
                (task_id, account_index, signature, planted_at),
            )

    def decoys(self) -> list[sqlite3.Row]:
        """Every decoy planted, oldest first."""
        return self._all("SELECT * FROM decoys ORDER BY planted_at")

    def decoy(self, task_id: str) -> sqlite3.Row | None:
        """The decoy record of ``task_id`` (None: not a decoy)."""
        rows = self._all("SELECT * FROM decoys WHERE task_id = ?", (task_id,))
        return rows[0] if rows else None

    def mark_decoy_revealed(self, task_id: str, challenge_id: int) -> None:
        """Record that ``task_id`` was shown a decoy in challenge ``challenge_id``."""
        with self._db.transaction() as c:
            c.execute("UPDATE decoys SET revealed_challenge = ? WHERE task_id = ?", (challenge_id, task_id))

    # ---------------------------------------------------------------- agents' memory and files

    def save_roots(self, snapshot: RootsSnapshot) -> None:
        """Persist the namespace roots, unless a newer snapshot is already stored."""
        with self.transaction() as c:
            _put_roots(c, snapshot)

    def load_roots(self) -> RootsSnapshot | None:
        """The last namespace roots persisted (None on a new node), with every grant kept
        (``grants``: namespace -> CIDs)."""
        rows = self._all("SELECT seq, roots FROM namespace_roots WHERE id = 1")
        if not rows:
            return None
        grants: dict[str, list[str]] = {}
        for r in self._all("SELECT namespace, cid FROM grants ORDER BY namespace, cid"):
            grants.setdefault(str(r["namespace"]), []).append(str(r["cid"]))
        return RootsSnapshot(int(rows[0]["seq"]), {**json.loads(rows[0]["roots"]), "grants": grants})

    def grant_count(self) -> int:
        """How many store-read grants are kept (namespace, CID)."""
        return int(self._all("SELECT COUNT(*) AS n FROM grants")[0]["n"])

    # ---------------------------------------------------------------- access audit

    def begin_irreversible(self, task_id: str, action: str, tool: str) -> bool:
        """Record that an irreversible call of ``task_id`` (``action``: its action hash) is about to
        run, before it runs; False (nothing written) when it was recorded before: it ran, or may
        have, in an earlier run of the task (`AccessManager.begin_irreversible`)."""
        with self.transaction() as c:
            cur = c.execute(
                "INSERT OR IGNORE INTO irreversible_calls VALUES (?,?,?,?)",
                (task_id, action.lower(), tool, time.time()),
            )
            return cur.rowcount == 1

    def irreversible_calls(self, task_id: str) -> list[tuple[str, str]]:
        """The irreversible calls ``task_id`` ran or began (tool, action), oldest first."""
        rows = self._all(
            "SELECT tool, action FROM irreversible_calls WHERE task_id = ? ORDER BY started_at, action",
            (task_id,),
        )
        return [(str(r[0]), str(r[1])) for r in rows]

    def save_audit(self, task_id: str, entries: Sequence[Mapping[str, Any]]) -> None:
        """Persist the access decisions of one task run (``AuditEntry.to_json`` dicts), replacing
        those of an earlier run of the same task (a task re-run after a restart decides again)."""
        with self.transaction() as c:
            c.execute("DELETE FROM audit WHERE task_id = ?", (task_id,))
            c.executemany(
                "INSERT INTO audit VALUES (?,?,?,?,?,?,?,?,?)",
                [
                    (
                        task_id,
                        i,
                        float(e["time"]),
                        str(e["agent_id"]),
                        str(e["user"]),
                        str(e["action"]),
                        str(e["target"]),
                        int(bool(e["allowed"])),
                        str(e.get("reason", "")),
                    )
                    for i, e in enumerate(entries)
                ],
            )

    def audit(self, task_id: str) -> list[dict[str, Any]]:
        """The persisted access decisions of ``task_id``, in the order they were made."""
        rows = self._all("SELECT * FROM audit WHERE task_id = ? ORDER BY seq", (task_id,))
        return [
            {
                "time": r["time"],
                "agent": r["agent"],
                "action": r["action"],
                "target": r["target"],
                "allowed": bool(r["allowed"]),
                "reason": r["reason"],
            }
            for r in rows
        ]

    # ---------------------------------------------------------------- receipts and batches

    def receipt(self, task_id: str) -> ReceiptRow | None:
        """The receipt of ``task_id``, with its batch fields once committed."""
        rows = self._all("SELECT * FROM receipts WHERE task_id = ?", (task_id,))
        return ReceiptRow.from_row(rows[0]) if rows else None

    def pending_receipts(self, limit: int) -> list[ReceiptRow]:
        """Receipts not yet in a batch, in the order they were stored (not by the wall clock, which
        can step back): a task's receipt is stored before its user's next task may read its
        writes, so it is committed no later (docs/validator.md, "Where a task's roots come from")."""
        rows = self._all("SELECT * FROM receipts WHERE batch_id IS NULL ORDER BY rowid LIMIT ?", (limit,))
        return [ReceiptRow.from_row(r) for r in rows]

    def seal_batch(self, root: str, manifest_cid: str, task_ids: list[str]) -> int:
        """Record a batch (status ``sealed``) and assign its receipts their index; returns its id."""
        with self.transaction() as c:
            cur = c.execute(
                "INSERT INTO batches (root, count, manifest_cid, status, created_at) VALUES (?,?,?,?,?)",
                (root, len(task_ids), manifest_cid, "sealed", time.time()),
            )
            batch_id = int(cur.lastrowid or 0)
            for i, tid in enumerate(task_ids):
                c.execute(
                    "UPDATE receipts SET batch_id = ?, batch_index = ? WHERE task_id = ?", (batch_id, i, tid)
                )
        return batch_id

    def record_commit_tx(self, batch_id: int, tx_hash: str, raw: bytes, nonce: int) -> None:
        """Persist a signed commit transaction *before* it is broadcast (status ``sent``)."""
        with self.transaction() as c:
            c.execute(
                "INSERT OR REPLACE INTO commit_txs (batch_id, tx_hash, raw, nonce) VALUES (?, ?, ?, ?)",
                (batch_id, tx_hash, raw.hex(), nonce),
            )
            c.execute("UPDATE batches SET status = 'sent', tx_hash = ? WHERE id = ?", (tx_hash, batch_id))

    def commit_tx(self, batch_id: int) -> tuple[str, bytes, int] | None:
        """The signed commit transaction of a batch not known to be dead: (hash, raw, nonce)."""
        rows = self._all("SELECT tx_hash, raw, nonce FROM commit_txs WHERE batch_id = ?", (batch_id,))
        if not rows:
            return None
        return str(rows[0]["tx_hash"]), bytes.fromhex(rows[0]["raw"]), int(rows[0]["nonce"])

    def drop_commit_tx(self, batch_id: int) -> None:
        """Forget a commit transaction that can never land (reverted, or its nonce went elsewhere)."""
        with self.transaction() as c:
            c.execute("DELETE FROM commit_txs WHERE batch_id = ?", (batch_id,))

    def record_answer_tx(self, claim: str, tx_hash: str, raw: bytes, nonce: int) -> None:
        """Persist a signed answer to data claim ``claim`` (its `availability._key`) *before* it is
        broadcast; a replacement at the same nonce is added to the hashes of the versions sent
        before (any of them may be the one mined)."""
        with self.transaction() as c:
            rows = c.execute("SELECT hashes FROM answer_txs WHERE claim = ?", (claim,)).fetchall()
            hashes = json.loads(rows[0]["hashes"]) if rows else []
            c.execute(
                "INSERT OR REPLACE INTO answer_txs (claim, raw, nonce, hashes) VALUES (?, ?, ?, ?)",
                (claim, raw.hex(), nonce, json.dumps([*hashes, tx_hash])),
            )

    def answer_tx(self, claim: str) -> tuple[bytes, int, list[str]] | None:
        """The latest signed answer to ``claim`` and the hashes of every version sent: (raw, nonce,
        hashes)."""
        rows = self._all("SELECT raw, nonce, hashes FROM answer_txs WHERE claim = ?", (claim,))
        if not rows:
            return None
        return bytes.fromhex(rows[0]["raw"]), int(rows[0]["nonce"]), list(json.loads(rows[0]["hashes"]))

    def answer_txs(self) -> list[tuple[bytes, int, list[str]]]:
        """Every stored answer: (raw, nonce, hashes)."""
        rows = self._all("SELECT raw, nonce, hashes FROM answer_txs")
        return [(bytes.fromhex(r["raw"]), int(r["nonce"]), list(json.loads(r["hashes"]))) for r in rows]

    def drop_answer_tx(self, claim: str) -> None:
        """Forget the answer to ``claim`` (settled, reverted, or its nonce went to another)."""
        with self.transaction() as c:
            c.execute("DELETE FROM answer_txs WHERE claim = ?", (claim,))

    def mark_batch_sent(self, batch_id: int, tx_hash: str) -> None:
        """Remember the commit transaction before waiting for it (so a restart can find it)."""
        with self.transaction() as c:
            c.execute("UPDATE batches SET status = 'sent', tx_hash = ? WHERE id = ?", (tx_hash, batch_id))

    def mark_batch_committed(
        self,
        batch_id: int,
        chain_batch_id: int,
        proofs: dict[str, str],
        block: Checkpoint | None = None,
    ) -> None:
        """Store the on-chain batch id, every receipt's Merkle proof (JSON list of hex) and the
        block the commit is in (None: not watched for reorgs)."""
        number, block_hash = (None, None) if block is None else (block.number, "0x" + block.hash.hex())
        with self.transaction() as c:
            c.execute(
                "UPDATE batches SET status = 'committed', chain_batch_id = ?, committed_at = ?, "
                "commit_block = ?, commit_block_hash = ? WHERE id = ?",
                (chain_batch_id, time.time(), number, block_hash, batch_id),
            )
            for tid, proof in proofs.items():
                c.execute("UPDATE receipts SET proof = ? WHERE task_id = ?", (proof, tid))

    def watched_batches(self, since_block: int) -> list[BatchRow]:
        """Committed batches whose commit was in block ``since_block`` or later, by local id
        (what the reorg watch re-checks)."""
        rows = self._all(
            "SELECT * FROM batches WHERE status = 'committed' AND commit_block >= ? ORDER BY id",
            (since_block,),
        )
        return [BatchRow.from_row(r) for r in rows]

    def after_reorg(self, moved: Mapping[int, tuple[int, Checkpoint]], gone: Sequence[int]) -> None:
        """What the reorg watch found of committed batches whose commit block was orphaned, stored
        in one transaction. ``moved``: local id -> (chain batch id, block) where the commit is now
        (the same id, or another when another commit came first; the proofs stand, the root is the
        same). ``gone``: batches whose commit is on chain no more; each goes back to ``sent`` (its
        stored signed transaction is broadcast again, or a new one signed if it can never land;
        ``sealed`` if it has none) with no chain id, block or proofs. Receipts keep their index."""
        with self.transaction() as c:
            for batch_id, (chain_batch_id, block) in moved.items():
                c.execute(
                    "UPDATE batches SET chain_batch_id = ?, commit_block = ?, commit_block_hash = ? "
                    "WHERE id = ? AND status = 'committed'",
                    (chain_batch_id, block.number, "0x" + block.hash.hex(), batch_id),
                )
            for batch_id in gone:
                c.execute(
                    "UPDATE batches SET status = CASE WHEN tx_hash IS NULL THEN 'sealed' ELSE 'sent' END, "
                    "chain_batch_id = NULL, committed_at = NULL, commit_block = NULL, "
                    "commit_block_hash = NULL WHERE id = ? AND status = 'committed'",
                    (batch_id,),
                )
                c.execute("UPDATE receipts SET proof = NULL WHERE batch_id = ?", (batch_id,))

    def batch(self, batch_id: int) -> BatchRow | None:
        """One batch by local id."""
        rows = self._all("SELECT * FROM batches WHERE id = ?", (batch_id,))
        return BatchRow.from_row(rows[0]) if rows else None

    def unfinished_batches(self) -> list[BatchRow]:
        """Batches sealed or sent but not known to be committed (resumed after a restart)."""
        rows = self._all("SELECT * FROM batches WHERE status != 'committed' ORDER BY id")
        return [BatchRow.from_row(r) for r in rows]

    def receipt_at(self, chain_batch_id: int, index: int) -> ReceiptRow | None:
        """Entry ``index`` of the batch committed on chain as ``chain_batch_id``."""
        rows = self._all(
            "SELECT r.* FROM receipts r JOIN batches b ON r.batch_id = b.id "
            "WHERE b.chain_batch_id = ? AND r.batch_index = ?",
            (chain_batch_id, index),
        )
        return ReceiptRow.from_row(rows[0]) if rows else None

    def batch_by_chain_id(self, chain_batch_id: int) -> BatchRow | None:
        """The batch committed on chain as ``chain_batch_id``."""
        rows = self._all("SELECT * FROM batches WHERE chain_batch_id = ?", (chain_batch_id,))
        return BatchRow.from_row(rows[0]) if rows else None

    def batch_receipts(self, batch_id: int) -> list[ReceiptRow]:
        """A batch's receipts in commit (manifest) order."""
        rows = self._all("SELECT * FROM receipts WHERE batch_id = ? ORDER BY batch_index", (batch_id,))
        return [ReceiptRow.from_row(r) for r in rows]

    # ---------------------------------------------------------------- vouchers and redemption

    def redeemable_voucher(self, user: str) -> tuple[int, str] | None:
        """The largest voucher of ``user`` for at most the fees of its done tasks.

        A voucher is the user's signed promise of a cumulative total (the billed total plus its
        task's fee at admission), whichever task it came with: the node collects the largest one
        its done work covers. So it never collects for work that may still fail or did fail, and
        no order of tasks makes done work free: a task still running ahead of done ones (even
        one held unfinished while the user withdraws) or failures queued ahead of them leave
        a smaller voucher that covers exactly the done fees (with one price, always one). Earlier
        rules each left a hole (`tests/integration/test_node_api_attacks2.py`,
        `tests/unit/test_review_payments_many_nodes.py`): only a done task's voucher within the
        done fees made done tasks queued behind failures free; a done task's voucher sent after
        finished tasks only collected failed fees as credit a user who left lost, and let one
        unfinished task shield all later done work until the user withdrew.
        """
        done = self.billed(user, done_only=True)
        rows = self._all("SELECT cumulative, signature FROM vouchers WHERE user = ?", (user,))
        covered = [(int(r["cumulative"]), str(r["signature"])) for r in rows if int(r["cumulative"]) <= done]
        return max(covered, default=None)

    def voucher_amount(self, task_id: str) -> int | None:
        """The cumulative amount of the voucher that came with task ``task_id`` (None: no voucher)."""
        rows = self._all("SELECT cumulative FROM vouchers WHERE task_id = ?", (task_id,))
        return int(rows[0]["cumulative"]) if rows else None

    def latest_voucher(self, user: str) -> tuple[int, str] | None:
        """The largest voucher of ``user`` whose task is billed (accepted, running or done): with
        exact vouchers (billed + fee at admission) it covers the billed total, and the user's
        own signature proves it to a client that kept no state."""
        marks = ",".join("?" * len(_BILLED))
        rows = self._all(
            "SELECT v.cumulative, v.signature FROM vouchers v JOIN tasks t ON t.id = v.task_id "
            f"WHERE v.user = ? AND t.status IN ({marks})",
            (user, *_BILLED),
        )
        return max(((int(r["cumulative"]), r["signature"]) for r in rows), default=None)

    def users_with_vouchers(self) -> list[str]:
        """Every user that has sent a voucher."""
        return [r["user"] for r in self._all("SELECT DISTINCT user FROM vouchers")]

    def redeemable_vouchers(self) -> dict[str, tuple[int, str]]:
        """`redeemable_voucher` of every user that has one, in two scans (the redeemer's start)."""
        done: dict[str, int] = {}
        for r in self._all("SELECT user, fee FROM tasks WHERE status = ?", (TaskStatus.DONE.value,)):
            done[r["user"]] = done.get(r["user"], 0) + int(r["fee"])
        best: dict[str, tuple[int, str]] = {}
        for r in self._all("SELECT user, cumulative, signature FROM vouchers"):
            user, voucher = r["user"], (int(r["cumulative"]), str(r["signature"]))
            if voucher[0] <= done.get(user, 0) and voucher > best.get(user, (-1, "")):
                best[user] = voucher
        return best

    def receipts_mark(self) -> int:
        """The newest receipt's row number (0: none): `users_done_since` starts after it."""
        return int(self._all("SELECT COALESCE(MAX(rowid), 0) AS n FROM receipts")[0]["n"])

    def users_done_since(self, mark: int) -> tuple[set[str], int]:
        """The users with a task done (its receipt stored) after receipt row ``mark``, and the new
        mark. A user's `redeemable_voucher` only grows when one of its tasks is done (a voucher is
        its task's billed total plus its fee, above the done fees when it is admitted). Receipts
        are never deleted nor the file vacuumed, so their row numbers only grow."""
        rows = self._all(
            "SELECT r.rowid AS n, t.user FROM receipts r JOIN tasks t ON t.id = r.task_id WHERE r.rowid > ?",
            (mark,),
        )
        return {str(r["user"]) for r in rows}, max((int(r["n"]) for r in rows), default=mark)

    def redeemed(self, user: str) -> int:
        """What the node has redeemed from ``user`` so far (as last recorded)."""
        rows = self._all("SELECT redeemed FROM redemptions WHERE user = ?", (user,))
        return int(rows[0]["redeemed"]) if rows else 0

    def set_redeemed(self, amounts: dict[str, int], tx_hash: str) -> None:
        """Record the cumulative amounts redeemed by one transaction (read back after it landed;
        not yet confirmed: a reorg may undo it, see `redemption_records`)."""
        now = time.time()
        with self.transaction() as c:
            for user, amount in amounts.items():
                c.execute(
                    "INSERT INTO redemptions (user, redeemed, tx_hash, updated_at, block) "
                    "VALUES (?,?,?,?,NULL) ON CONFLICT(user) DO UPDATE "
                    "SET redeemed = excluded.redeemed, tx_hash = excluded.tx_hash, "
                    "updated_at = excluded.updated_at, block = NULL",
                    (user, str(amount), tx_hash, now),
                )

    def record_channel(self, user: str, redeemed: int, deposited: int, block: int) -> None:
        """Record ``user``'s channel as read from the chain (its redeemed amount and deposit);
        ``block``: the head when this redeemed amount was first read, or 0 once a read
        `CONFIRMATIONS` blocks later found it still there (see `redemption_records`)."""
        with self.transaction() as c:
            c.execute(
                "INSERT INTO redemptions (user, redeemed, tx_hash, updated_at, deposited, block) "
                "VALUES (?,?,'',?,?,?) ON CONFLICT(user) DO UPDATE SET redeemed = excluded.redeemed, "
                "updated_at = excluded.updated_at, deposited = excluded.deposited, block = excluded.block",
                (user, str(redeemed), time.time(), str(deposited), block),
            )

    def redemption_records(self) -> dict[str, tuple[int, int | None, int | None]]:
        """Per user with a record: (redeemed, the deposit as last read or None when unknown or
        topped up since, ``block``). ``block``: None when ``redeemed`` was recorded from a
        redemption and not read back since; the chain's head when it was first read, until a read
        `supernet.node.service.redeemer.CONFIRMATIONS` blocks later finds it unchanged; then 0
        (confirmed; also a record from before the node kept blocks)."""
        rows = self._all("SELECT user, redeemed, deposited, block FROM redemptions")
        return {
            str(r["user"]): (
                int(r["redeemed"]),
                None if r["deposited"] is None else int(r["deposited"]),
                None if r["block"] is None else int(r["block"]),
            )
            for r in rows
        }

    # ---------------------------------------------------------------- channels' events

    def closing_channels(self) -> dict[str, int]:
        """Users whose channel to this node a withdrawal request was seen for (and not seen open
        again since), with the block of the request."""
        rows = self._all("SELECT user, block FROM closing_channels")
        return {str(r["user"]): int(r["block"]) for r in rows}

    def _cursor(self, name: str) -> int | None:
        rows = self._all("SELECT block FROM chain_cursors WHERE name = ?", (name,))
        return int(rows[0]["block"]) if rows else None

    def claims_cursor(self) -> int | None:
        """The last block whose data claims against this node the responder read (None: never)."""
        return self._cursor("claims")

    def set_claims_cursor(self, block: int) -> None:
        """Record `claims_cursor` (the responder re-reads a few blocks behind it: reorgs)."""
        with self.transaction() as c:
            _put_cursor(c, "claims", block)

    def channel_events_cursor(self) -> int | None:
        """The last block whose channel events were recorded once it was past any reorg (the scan
        goes on from the next one; None: never scanned)."""
        return self._cursor("channel_events")

    def record_channel_events(
        self, closing: Mapping[str, int], funded: Sequence[str], cursor: int | None
    ) -> None:
        """In one transaction: channels seen closing, channels topped up (their recorded deposit
        is no longer known) and the new `channel_events_cursor` (None: left as it is)."""
        with self.transaction() as c:
            c.executemany(
                "INSERT INTO closing_channels VALUES (?, ?) ON CONFLICT(user) DO UPDATE "
                "SET block = MAX(block, excluded.block)",
                list(closing.items()),
            )
            c.executemany("UPDATE redemptions SET deposited = NULL WHERE user = ?", [(u,) for u in funded])
            if cursor is not None:
                _put_cursor(c, "channel_events", cursor)

    def channel_open(self, user: str) -> None:
        """``user``'s channel was read not closing (the request was cancelled, or it withdrew)."""
        with self.transaction() as c:
            c.execute("DELETE FROM closing_channels WHERE user = ?", (user,))


def _lock(path: Path) -> int:
    """An exclusive POSIX lock of ``<path>.lock`` (per process: not held against this one), as an
    open descriptor; closing it releases the lock.

    Raises:
        DatabaseInUseError: another process holds it.
    """
    lock_path = path.with_name(path.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)  # a new data directory, as SQLite's file
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        raise DatabaseInUseError(
            f"another process holds the node's database {path} ({lock_path} is locked): stop the "
            "other node on this data directory first"
        ) from exc
    return fd


def _put_cursor(c: sqlite3.Connection, name: str, block: int) -> None:
    c.execute(
        "INSERT INTO chain_cursors VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET block = excluded.block",
        (name, block),
    )


def _put_roots(c: sqlite3.Connection, snapshot: RootsSnapshot) -> None:
    """The roots, unless newer ones are stored, and the grants the snapshot adds (``granted``
    pairs; a whole ``grants`` index, as a roots file from before had it), whatever its order:
    grants only accumulate."""
    roots = dict(snapshot.roots)
    granted = [tuple(g) for g in roots.pop("granted", ())]
    granted += [(ns, cid) for ns, cids in roots.pop("grants", {}).items() for cid in cids]
    c.executemany("INSERT OR IGNORE INTO grants VALUES (?, ?)", granted)
    c.execute(
        "INSERT INTO namespace_roots VALUES (1, ?, ?) ON CONFLICT(id) DO UPDATE SET seq = excluded.seq, "
        "roots = excluded.roots WHERE excluded.seq > namespace_roots.seq",
        (snapshot.seq, json.dumps(roots, sort_keys=True)),
    )
