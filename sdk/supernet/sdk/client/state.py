"""The user's local payment state per node: last nonce and cumulative voucher total.

One small JSON file (``<state_dir>/client-state.json``, written atomically) so that nonces keep
increasing and vouchers stay cumulative across runs, and so ``supernet task receipt ID`` knows
which node ran a task and what its input was.

Several processes share one state directory (two terminals, a script running tasks in parallel,
the OpenAI gateway beside the CLI): every `ClientState.save` is a read-modify-write under an
exclusive ``flock`` of ``<state_dir>/client-state.lock`` that merges this process's changes into
the file as it is now (`ClientState.save` says how), so no run drops another's task records.
The directory is the user's alone: created 0700, tightened to 0700 if it is the user's and
writable by others, refused (`StateDirError`) if it is writable by another user.

>>> st = ClientState.open(Path("/tmp/supernet-doc"))  # doctest: +SKIP
>>> st.account("31337:0xPay", "0xUser", "0xNode").nonce
0
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from supernet.sdk.client.freshness import SeenRoot
from supernet.sdk.client.types import ClientError

log = logging.getLogger(__name__)

DEFAULT_STATE_DIR = Path.home() / ".supernet"
STATE_FILE = "client-state.json"
LOCK_FILE = "client-state.lock"
"""Held (``flock``, exclusive) by every save for its read-merge-replace of `STATE_FILE`."""


class StateDirError(ClientError):
    """The state directory is not safe to use: another user may write to it."""


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


# how far a task got, for merging two processes' records of one task (`ClientState.save`)
_STATUS_RANK = {
    "sent": 0,
    "submitted": 1,
    "accepted": 2,
    "running": 3,
    "failed": 4,
    "refused": 4,
    "done": 5,
    "answer_mismatch": 6,  # a done task whose receipt failed the answer check
}


@dataclass
class ClientState:
    """All accounts and tasks of this state directory."""

    path: Path
    accounts: dict[str, NodeAccount] = field(default_factory=dict)
    tasks: dict[str, TaskRecord] = field(default_factory=dict)
    # the last memory and file root of each node's namespaces this client saw (`check_latest`)
    roots: dict[str, SeenRoot] = field(default_factory=dict)
    clock: int = 0  # the last value `tick` gave
    # per deployment (`supernet.sdk.client.ladder.domain_key`): the last block up to which every
    # challenge opened on a task of this state is settled (`Client.claim_refunds` reads on from it)
    refund_scans: dict[str, int] = field(default_factory=dict)
    # the file as this process last read or wrote it: what `save` tells this process's changes
    # from other processes' by
    _base: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def open(cls, state_dir: Path | None = None) -> ClientState:
        """Load the state file (an empty state if there is none).

        Raises:
            StateDirError: the state directory is writable by another user.
        """
        directory = state_dir or DEFAULT_STATE_DIR
        _secure_dir(directory, create=False)
        path = directory / STATE_FILE
        doc = _read(path)
        state = cls(
            path,
            {k: NodeAccount(**v) for k, v in doc["accounts"].items()},
            {k: TaskRecord(**v) for k, v in doc["tasks"].items()},
            {k: SeenRoot(**v) for k, v in doc["roots"].items()},
            doc["clock"],
            dict(doc["refund_scans"]),
        )
        state._base = doc
        return state

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
        """Merge this process's changes into the file as it is now and write it atomically (temp
        file + rename, fsync'd), all under the directory's exclusive lock (`LOCK_FILE`).

        What another process saved since this one last read or wrote the file is kept, and this
        state takes it in (the objects callers hold are updated in place). A task or an account
        field only one side changed since this process last read or wrote the file takes that
        side's value (a deletion, a total taken back, included); where both changed it, a task
        keeps the record that got further (`_STATUS_RANK`, then the one with the node's promise,
        then the one saved first) with its empty fields filled from the other, and an account's
        nonce and cumulative total the larger value. Each root is the later one (``done_seq``, as
        `check_latest` keeps them); the clock the larger.

        Raises:
            StateDirError: the state directory is writable by another user.
        """
        directory = self.path.parent
        _secure_dir(directory, create=True)
        with _locked(directory / LOCK_FILE):
            self._merge(_read(self.path))
            doc = self._doc()
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=".state-")
            try:
                with os.fdopen(fd, "w") as f:
                    json.dump(doc, f, indent=1)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            self._base = doc

    def _doc(self) -> dict[str, Any]:
        """This state as the file's JSON document (plain JSON values: comparable with a read one)."""
        doc = {
            "accounts": {k: asdict(v) for k, v in self.accounts.items()},
            "tasks": {k: asdict(v) for k, v in self.tasks.items()},
            "roots": {k: asdict(v) for k, v in self.roots.items()},
            "clock": self.clock,
            "refund_scans": self.refund_scans,
        }
        normal: dict[str, Any] = json.loads(json.dumps(doc))
        return normal

    def _merge(self, theirs: dict[str, Any]) -> None:
        """Take in the file's document ``theirs`` (see `save`), in place."""
        mine, base = self._doc(), self._base or _empty()
        for key, acct in _merged(
            mine["accounts"], theirs["accounts"], base["accounts"], _larger_fields
        ).items():
            if acct is None:
                self.accounts.pop(key, None)
            elif key in self.accounts:
                _assign(self.accounts[key], acct)
            else:
                self.accounts[key] = NodeAccount(**acct)
        for task_id, record in _merged(mine["tasks"], theirs["tasks"], base["tasks"], _further).items():
            if record is None:
                self.tasks.pop(task_id, None)
            elif task_id in self.tasks:
                _assign(self.tasks[task_id], record)
            else:
                self.tasks[task_id] = TaskRecord(**record)
        for key, root in theirs["roots"].items():
            if key not in self.roots or self.roots[key].done_seq < root["done_seq"]:
                self.roots[key] = SeenRoot(**root)
        self.clock = max(self.clock, theirs["clock"])
        self._merge_marks(theirs["refund_scans"], base.get("refund_scans", {}))

    def _merge_marks(self, theirs: dict[str, int], base: dict[str, int]) -> None:
        """Take in the file's refund scan marks: the side that moved a mark since ``base`` wins
        (a mark moved back is a chain started anew); where both moved it, the later (a mark says
        "settled up to here": the later of two true ones is true)."""
        for key, block in theirs.items():
            mine, old = self.refund_scans.get(key), base.get(key)
            if block == old:
                continue
            self.refund_scans[key] = block if mine is None or mine == old else max(mine, block)


def _empty() -> dict[str, Any]:
    return {"accounts": {}, "tasks": {}, "roots": {}, "clock": 0, "refund_scans": {}}


def _read(path: Path) -> dict[str, Any]:
    """The state file's document, every part present (empty when there is no file)."""
    if not path.exists():
        return _empty()
    doc = json.loads(path.read_text())
    return {  # every field present (a file of an older version lacks some)
        "accounts": {k: asdict(NodeAccount(**v)) for k, v in doc.get("accounts", {}).items()},
        "tasks": {k: asdict(TaskRecord(**v)) for k, v in doc.get("tasks", {}).items()},
        "roots": {k: asdict(SeenRoot(**v)) for k, v in doc.get("roots", {}).items()},
        "clock": int(doc.get("clock", 0)),
        "refund_scans": {k: int(v) for k, v in doc.get("refund_scans", {}).items()},
    }


Entry = dict[str, Any] | None


def _merged(
    mine: dict[str, Any], theirs: dict[str, Any], base: dict[str, Any], both: Callable[[Any, Any, Any], Any]
) -> dict[str, Entry]:
    """Three-way merge by key: the side that changed an entry since ``base`` wins (None: deleted);
    ``both(mine, theirs, base)`` where each side changed it (an entry deleted on one side and
    changed on the other is kept). Only the keys whose merged entry differs from ``mine``."""
    out: dict[str, Entry] = {}
    for key in mine.keys() | theirs.keys():
        m, t, b = mine.get(key), theirs.get(key), base.get(key)
        if m == t or t == b:
            continue
        if m == b:
            out[key] = t
        elif m is None or t is None:
            out[key] = t if m is None else m
        else:
            out[key] = both(m, t, b)
        if out[key] == m:
            del out[key]
    return out


def _larger_fields(mine: dict[str, Any], theirs: dict[str, Any], base: Entry) -> dict[str, Any]:
    """An account both sides changed: each field as the side that changed it has it, the larger
    value where both did."""
    old = base or {}
    return {
        name: value
        if theirs[name] == old.get(name)
        else theirs[name]
        if value == old.get(name)
        else max(value, theirs[name])
        for name, value in mine.items()
    }


def _further(mine: dict[str, Any], theirs: dict[str, Any], base: Entry) -> dict[str, Any]:
    """A task both sides changed: the record that got further (a promise, then the saved one on a
    tie), with its empty fields filled from the other."""

    def progress(record: dict[str, Any]) -> tuple[int, bool]:
        return _STATUS_RANK.get(record["status"], 0), record.get("promise") is not None

    first, second = (mine, theirs) if progress(mine) > progress(theirs) else (theirs, mine)
    return {name: second.get(name) if value is None else value for name, value in first.items()}


def _assign(obj: Any, values: dict[str, Any]) -> None:
    """Set a dataclass's fields to ``values`` in place (callers may hold the object)."""
    for f in fields(obj):
        setattr(obj, f.name, values[f.name])


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold ``path`` (created 0600) locked exclusively: against other processes and other threads
    (each opens its own descriptor, and ``flock`` locks belong to descriptors)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _secure_dir(directory: Path, *, create: bool) -> None:
    """Make sure no other user can write to the state directory (delete or swap its files).

    It is created 0700 (whatever the umask); one of this user's that others may write to (made by
    an older version under ``umask 0``) is tightened to 0700, with a warning. Without ``create``
    a missing directory is left missing.

    Raises:
        StateDirError: it is not a directory, or another user owns it or may write to it.
    """
    if create and not directory.exists():
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
    try:
        st = os.stat(directory)
    except FileNotFoundError:
        if create:
            raise
        return
    if not stat.S_ISDIR(st.st_mode):
        raise StateDirError(f"state directory {directory} is not a directory")
    me = os.getuid()
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022 and st.st_uid == me:
        os.chmod(directory, 0o700)
        log.warning(
            "state directory %s was writable by other users (mode %o): now 0700; its files may have "
            "been changed by them",
            directory,
            mode,
        )
        mode = 0o700
    if mode & 0o022 or st.st_uid not in (me, 0):
        raise StateDirError(
            f"state directory {directory} (mode {mode:o}, owner uid {st.st_uid}) can be written by "
            "another user, who could delete or replace its tasks, promises and node URLs: use a "
            "directory of your own (--state-dir / SUPERNET_STATE_DIR) or make it yours and "
            "`chmod 700` it"
        )
