"""The validator's progress in SQLite, so a restart neither skips nor repeats work.

* ``cursor``: the next block the follower scans. Events of a block range and the new cursor are
  written in one transaction, so a batch is recorded exactly once whatever the crash point.
* ``checkpoints``: hashes of blocks read (the last block of each scanned range and blocks below
  it at distances 1, 2, 4, ...; the most recent ``CHECKPOINTS`` and, older, two per power of two
  of distance), written with the cursor: the follower's fork check (`undo_after`). Each batch and
  challenge carries the block it came from (``commit_block``, ``block``), a check's own challenge
  the block it is known to be in (``challenge_block``), a challenge's settlement and an
  availability claim's last step the block they were seen by (``settled_block``,
  ``claim_block``), so a reorg undoes exactly what the orphaned blocks brought.
* ``batches``: each committed batch, ``pending`` until every sampled receipt has a verdict.
* ``checks``: one row per (batch, receipt index) this validator checked, with the verdict, the
  evidence CID and the challenge it opened (if any). A restart skips receipts already checked.
* ``challenges``: every challenge seen on chain, with this validator's vote and payout steps. A
  vote is sealed on chain (commit-reveal): its side, salt and evidence are written here before
  the commit is sent, so a validator restarted before the reveal phase still reveals it.
* ``sealed_votes``: the side, salt and evidence of every vote sealed here, by challenge, batch and
  leaf, never undone: a challenge row a reorg removed gets its vote back when the challenge is
  read again with the same batch and leaf, so a commit of this validator's re-included on the new
  branch is still revealed (and one that is not is sent again, the same), and a commit on chain
  that is not the row's is matched by its commitment (`kept_votes`, `Disputes._adopt`).
* ``receipts`` / ``indexed``: where each committed receipt of a node is, by request hash, read
  from the batches' manifests once (`supernet.validator.origin_check.ReceiptIndex`); ``indexed``
  says which batches are read, and whether wholly (a posted manifest may be partial).
* ``verified_roots``: memory and file roots the origin check found sound, with their history.
* ``diverged``: entries whose writer replay diverged (`WriteLog`), until their full check is
  settled (`Validator.check_entry`): a failure on the way is retried, never dropped. Also entries
  whose check failed on this validator (`mark_recheck`): ``attempts`` such failures, due again
  at chain time ``next_at``; ``outcome`` ``unchecked`` when the window closed while the check
  still failed here, ``unchallenged`` when a fault it found could not be challenged in time.
* ``memory_entries``: memory entries' texts read from committed traces (`WriteLog`) and their
  vectors computed here (`supernet.validator.search_check`), by entry CID.

The schema's version is SQLite's ``user_version``: `_MIGRATIONS` brings a file of any earlier
version up to date when it is opened (``_SCHEMA`` is version 0, the tables as first shipped).

>>> db = Database(":memory:")
>>> db.cursor(default=7)
7
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from supernet.sdk.chain.forks import Checkpoint
from supernet.sdk.sqlite import DurableSQLite
from supernet.sdk.store.cids import canonical_cid
from supernet.validator.chain import (
    BatchCommitted,
    ChainEvent,
    ChallengeOpened,
    ChallengeResolved,
    VoteExtended,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
  batch_id INTEGER PRIMARY KEY, node TEXT NOT NULL, root TEXT NOT NULL, count INTEGER NOT NULL,
  commit_block INTEGER NOT NULL, manifest_cid TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'pending',
  error TEXT);
CREATE TABLE IF NOT EXISTS checks (
  batch_id INTEGER NOT NULL, idx INTEGER NOT NULL, ok INTEGER NOT NULL, kinds TEXT NOT NULL,
  evidence_cid TEXT, challenge_id INTEGER, PRIMARY KEY (batch_id, idx));
CREATE TABLE IF NOT EXISTS challenges (
  challenge_id INTEGER PRIMARY KEY, batch_id INTEGER NOT NULL, challenger TEXT NOT NULL,
  node TEXT NOT NULL, leaf TEXT NOT NULL, vote_deadline INTEGER NOT NULL, evidence_cid TEXT NOT NULL,
  status TEXT NOT NULL DEFAULT 'open', my_vote INTEGER, my_evidence TEXT, fraud INTEGER);
CREATE TABLE IF NOT EXISTS missing (
  batch_id INTEGER NOT NULL, idx INTEGER NOT NULL, reason TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0, next_try REAL NOT NULL, availability_id INTEGER,
  status TEXT NOT NULL DEFAULT 'retrying', PRIMARY KEY (batch_id, idx));
CREATE TABLE IF NOT EXISTS receipts (
  batch_id INTEGER NOT NULL, idx INTEGER NOT NULL, node TEXT NOT NULL, request_hash TEXT NOT NULL,
  user TEXT NOT NULL, trace_cid TEXT NOT NULL, PRIMARY KEY (batch_id, idx));
CREATE INDEX IF NOT EXISTS receipts_by_request ON receipts (node, request_hash);
CREATE TABLE IF NOT EXISTS indexed (batch_id INTEGER PRIMARY KEY, complete INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS verified_roots (node TEXT NOT NULL, root TEXT NOT NULL, PRIMARY KEY (node, root));
CREATE TABLE IF NOT EXISTS ingested (
  batch_id INTEGER NOT NULL, idx INTEGER NOT NULL, status TEXT NOT NULL,
  failures INTEGER NOT NULL DEFAULT 0, next_try REAL NOT NULL DEFAULT 0, PRIMARY KEY (batch_id, idx));
CREATE TABLE IF NOT EXISTS root_blocks (node TEXT NOT NULL, root TEXT NOT NULL, block BLOB NOT NULL,
  PRIMARY KEY (node, root));
CREATE TABLE IF NOT EXISTS refused (
  batch_id INTEGER NOT NULL, idx INTEGER NOT NULL, PRIMARY KEY (batch_id, idx));
CREATE TABLE IF NOT EXISTS writes (
  node TEXT NOT NULL, root TEXT NOT NULL, prev TEXT, area TEXT NOT NULL, namespace TEXT NOT NULL,
  writer TEXT NOT NULL, user TEXT NOT NULL, batch_id INTEGER NOT NULL, idx INTEGER NOT NULL,
  PRIMARY KEY (node, root));
CREATE TABLE IF NOT EXISTS memory_entries (cid TEXT PRIMARY KEY, text TEXT, vector BLOB);
CREATE TABLE IF NOT EXISTS diverged (
  batch_id INTEGER NOT NULL, idx INTEGER NOT NULL, done INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (batch_id, idx));
"""

_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: sealed votes. ``my_salt`` (hex) is written with ``my_vote`` before the commit is sent;
    # ``reveal``: pending | done | lost | late (`drop_sealed`). Votes recorded before were open already.
    (
        "ALTER TABLE challenges ADD COLUMN my_salt TEXT",
        "ALTER TABLE challenges ADD COLUMN reveal TEXT NOT NULL DEFAULT 'pending'",
        "UPDATE challenges SET reveal = 'done' WHERE my_vote IS NOT NULL",
    ),
    # 2: re-checks of local failures back off (`Database.mark_recheck`); rows from before
    # (diverged writers and re-checks alike) get ``attempts`` 0: checked each step, as they were.
    (
        "ALTER TABLE diverged ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE diverged ADD COLUMN next_at INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE diverged ADD COLUMN outcome TEXT",
    ),
    # 3: reorgs (`Database.undo_after`). Challenges seen before carry block 0 and checks'
    # challenges sent before ``challenge_block`` 0: older than any fork found from now on.
    (
        "CREATE TABLE checkpoints (number INTEGER PRIMARY KEY, hash TEXT NOT NULL)",
        "ALTER TABLE challenges ADD COLUMN block INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE checks ADD COLUMN challenge_leaf TEXT",
        "ALTER TABLE checks ADD COLUMN challenge_block INTEGER",
        "UPDATE checks SET challenge_block = 0 WHERE challenge_id IS NOT NULL",
    ),
    # 4: what a reorg's undo keeps or resets. The secrets of the votes sealed so far are kept
    # apart from their challenges' rows; settlements and availability claims seen before carry
    # no block (older than any fork found from now on: never reset).
    (
        "CREATE TABLE sealed_votes (challenge_id INTEGER NOT NULL, batch_id INTEGER NOT NULL, "
        "leaf TEXT NOT NULL, fraud INTEGER NOT NULL, salt TEXT NOT NULL, evidence TEXT, "
        "PRIMARY KEY (challenge_id, salt))",
        "INSERT OR IGNORE INTO sealed_votes (challenge_id, batch_id, leaf, fraud, salt, evidence) "
        "SELECT challenge_id, batch_id, leaf, my_vote, my_salt, my_evidence FROM challenges "
        "WHERE my_salt IS NOT NULL AND my_vote IS NOT NULL",
        "ALTER TABLE challenges ADD COLUMN settled_block INTEGER",
        "ALTER TABLE missing ADD COLUMN claim_block INTEGER",
    ),
)
"""Schema changes, version ``i + 1`` at index ``i``; each runs once, in one transaction."""

CHECKPOINTS = 256
"""Recent checkpoints kept (`Database.record_events`); older ones thin out to one per half power of
two of distance from the newest (`_put_checkpoints`), so the fork of a deep reorg is still found,
at most about twice as deep as it is. Only a reorg below every checkpoint (a chain restarted) is
an unknown fork: the follower scans again from its first block."""


@dataclass(frozen=True)
class ReceiptRow:
    """Where one committed receipt is (``node`` and ``user`` lower-case, ``request_hash`` 0x-hex)."""

    batch_id: int
    index: int
    node: str
    request_hash: str
    user: str
    trace_cid: str


@dataclass(frozen=True)
class BatchRow:
    """A batch to check."""

    batch_id: int
    node: str
    root: bytes
    count: int
    commit_block: int
    manifest_cid: str
    status: str


@dataclass(frozen=True)
class CheckRow:
    """This validator's verdict on one receipt."""

    batch_id: int
    index: int
    ok: bool
    kinds: str
    evidence_cid: str | None
    challenge_id: int | None


@dataclass(frozen=True)
class ChallengeRow:
    """A challenge seen on chain and this validator's part in it."""

    challenge_id: int
    batch_id: int
    challenger: str
    node: str
    leaf: bytes
    vote_deadline: int
    evidence_cid: str
    status: str  # open | voted (this validator's vote is on chain) | resolved | claimed
    my_vote: bool | None
    fraud: bool | None
    salt: bytes | None = None  # of this validator's sealed vote (written before the commit)
    reveal: str = "pending"  # pending | done | lost (sealed, cannot be revealed) | late (too late to seal)
    my_evidence: str | None = None
    block: int = 0  # where it was opened (0: seen before blocks were recorded)


@dataclass(frozen=True)
class WriteRow:
    """One memory or file write of a committed trace, read in its window and found sound: ``root``
    (a CID) is ``prev`` with the write's one change, written by task ``writer`` of ``user``."""

    node: str
    root: str
    prev: str | None
    area: str
    namespace: str
    writer: str
    user: str
    batch_id: int
    index: int


Outcome = Literal["unchecked", "unchallenged"]
"""How an entry's full check ended without a verdict acted on (`Database.settle_diverged`)."""


@dataclass(frozen=True)
class DivergedRow:
    """An entry to check in full (`Validator.check_entry`): a diverged writer (``attempts`` 0), or
    one whose check failed on this validator ``attempts`` times, due again at chain time
    ``next_at`` (`service.recheck_at`)."""

    batch_id: int
    index: int
    attempts: int = 0
    next_at: int = 0


@dataclass(frozen=True)
class MissingRow:
    """A sampled entry whose data could not be fetched, on its way to an availability challenge."""

    batch_id: int
    index: int
    reason: str
    attempts: int
    next_try: float
    availability_id: int | None
    status: str  # retrying | challenged | fetched | answered | slashed | expired


class Database:
    """Thread-safe access to the validator's SQLite file (``:memory:`` for tests)."""

    def __init__(self, path: str | Path) -> None:
        self._db = DurableSQLite(path, _SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        version = int(self._all("PRAGMA user_version")[0][0])
        for number, statements in enumerate(_MIGRATIONS[version:], start=version + 1):
            with self._tx() as c:
                for sql in statements:
                    c.execute(sql)
                c.execute(f"PRAGMA user_version = {number}")

    def schema_version(self) -> int:
        """The file's schema version (``len(_MIGRATIONS)`` once opened)."""
        return int(self._all("PRAGMA user_version")[0][0])

    def close(self) -> None:
        """Close the file."""
        self._db.close()

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        return self._db.transaction()

    def _all(self, sql: str, *args: object) -> list[tuple]:
        return self._db.all(sql, args)

    # -- follower --------------------------------------------------------------------------------

    def last_ids(self) -> tuple[int | None, int | None]:
        """The highest batch id and challenge id recorded (None: none yet): what the next ones read
        must follow (`Follower`: ids are sequential on chain, so a gap is a log answer cut short)."""
        batch = self._all("SELECT MAX(batch_id) FROM batches")[0][0]
        challenge = self._all("SELECT MAX(challenge_id) FROM challenges")[0][0]
        return (None if batch is None else int(batch)), (None if challenge is None else int(challenge))

    def cursor(self, default: int) -> int:
        """The next block to scan (``default`` before the first scan)."""
        cursor = self.meta("cursor")
        return default if cursor is None else int(cursor)

    def meta(self, key: str) -> str | None:
        """A value of the ``meta`` table (None when unset)."""
        rows = self._all("SELECT value FROM meta WHERE key = ?", key)
        return str(rows[0][0]) if rows else None

    def set_meta(self, key: str, value: str) -> None:
        with self._tx() as c:
            _put_meta(c, key, value)

    def record_history(self, batches: Iterable[BatchCommitted], scanned_to: int) -> None:
        """Record ``batches`` (status ``history``, never sampled; a batch already recorded keeps its
        row) and that the history backfill has scanned up to block ``scanned_to``, atomically."""
        with self._tx() as c:
            for ev in batches:
                _put_batch(c, ev, "history")
            _put_meta(c, "backfilled_to", str(scanned_to))

    def record_events(
        self,
        events: Iterable[ChainEvent],
        next_block: int,
        history: Collection[int] = (),
        checkpoints: Iterable[Checkpoint] = (),
    ) -> None:
        """Store the events of a scanned range and advance the cursor, atomically (idempotent).
        Batches in ``history`` are recorded for the receipt index only (status ``history``).
        ``checkpoints``: blocks of the range as read (kept for the fork check, `undo_after`)."""
        with self._tx() as c:
            for ev in events:
                if isinstance(ev, BatchCommitted):
                    _put_batch(c, ev, "history" if ev.batch_id in history else "pending")
                elif isinstance(ev, ChallengeOpened):
                    c.execute(
                        "INSERT OR IGNORE INTO challenges (challenge_id, batch_id, challenger, node, leaf, "
                        "vote_deadline, evidence_cid, block) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            ev.challenge_id,
                            ev.batch_id,
                            ev.challenger,
                            ev.node,
                            ev.leaf.hex(),
                            ev.vote_deadline,
                            ev.evidence_cid,
                            ev.block,
                        ),
                    )
                    # read again after a reorg removed its row: the vote sealed on it here comes back
                    # (`kept_votes`), revealed if its commit is on this branch, sent again if not
                    c.execute(
                        "UPDATE challenges SET (my_vote, my_salt, my_evidence) = (SELECT s.fraud, s.salt, "
                        "s.evidence FROM sealed_votes s WHERE s.challenge_id = challenges.challenge_id "
                        "AND s.batch_id = challenges.batch_id AND s.leaf = challenges.leaf "
                        "ORDER BY s.rowid DESC LIMIT 1) WHERE challenge_id = ? AND my_vote IS NULL "
                        "AND my_salt IS NULL AND status = 'open' AND reveal = 'pending' AND EXISTS "
                        "(SELECT 1 FROM sealed_votes s WHERE s.challenge_id = challenges.challenge_id "
                        "AND s.batch_id = challenges.batch_id AND s.leaf = challenges.leaf)",
                        (ev.challenge_id,),
                    )
                    # a check's challenge (this validator's, or one found on its leaf) is in this block
                    c.execute(
                        "UPDATE checks SET challenge_block = ? WHERE challenge_id = ? AND batch_id = ? "
                        "AND COALESCE(challenge_leaf, ?) = ? "
                        "AND (challenge_block IS NULL OR challenge_block > ?)",
                        (ev.block, ev.challenge_id, ev.batch_id, ev.leaf.hex(), ev.leaf.hex(), ev.block),
                    )
                elif isinstance(ev, VoteExtended):  # voters wait for the claimed entry's answer
                    c.execute(
                        "UPDATE challenges SET vote_deadline = MAX(vote_deadline, ?) WHERE challenge_id = ?",
                        (ev.vote_deadline, ev.challenge_id),
                    )
                elif isinstance(ev, ChallengeResolved):  # undone with its block (`undo_after`)
                    c.execute(
                        "UPDATE challenges SET fraud = ?, status = CASE WHEN status = 'claimed' "
                        "THEN status ELSE 'resolved' END, settled_block = MAX(COALESCE(settled_block, 0), ?) "
                        "WHERE challenge_id = ?",
                        (int(ev.fraud), ev.block, ev.challenge_id),
                    )
            _put_meta(c, "cursor", str(next_block))
            _put_checkpoints(c, checkpoints)

    def add_checkpoints(self, checkpoints: Iterable[Checkpoint]) -> None:
        """Keep blocks read before this database kept checkpoints (`Follower`: a file migrated
        from before the fork check)."""
        with self._tx() as c:
            _put_checkpoints(c, checkpoints)

    def checkpoints(self) -> list[Checkpoint]:
        """The blocks kept for the fork check, oldest first."""
        rows = self._all("SELECT number, hash FROM checkpoints ORDER BY number")
        return [Checkpoint(int(n), bytes.fromhex(h)) for n, h in rows]

    def undo_after(self, block: int, seed_delay: int = 0) -> list[int]:
        """Undo what blocks after ``block`` brought, atomically: the chain was reorganised and
        they are orphaned. Batches committed after it go with everything derived from them
        (verdicts, the receipt index, the writes read, the availability path, the re-checks, the
        roots found sound of their nodes); challenges opened after it (or on those batches) go with
        this validator's votes on them; a check whose challenge was opened after it goes back to
        "not challenged" and to the re-checks (`Validator.check_entry` sends its challenge again
        while the entry's window is open); sealed votes not yet resolved are looked up on chain
        again (their commit or reveal may have been orphaned: `Disputes.vote_open` adopts what it
        finds, or seals again); a settlement seen after it (a resolve, this validator's claim)
        goes back to unsettled (`Disputes.settle` reads the chain again and redoes what the new
        branch lacks); an availability claim opened after it goes back to ``retrying`` (claimed
        again, or the entry's claim on the new branch adopted), one answered or resolved after it
        to ``challenged`` (followed again).
        The secrets of sealed votes stay (``sealed_votes``): a challenge read again on the new
        branch with the same batch and leaf gets its vote back (`record_events`), and a commit of
        this validator's found there is revealed from it (`Disputes._adopt`). The checkpoints
        after ``block`` are dropped, the cursor (and the refusals' cursor) set back to
        ``block + 1`` at most. A batch that stays but whose seed block (``seed_delay`` blocks after
        its commit) was orphaned, and that this validator had finished (``done``: checked, or
        nothing sampled), is pending again: its seed, so its sample, is the new block's (a finished
        batch was never sampled again, and the entries the contract now picks this validator for
        went unchecked). Returns the batches undone."""
        with self._tx() as c:
            later = "SELECT batch_id FROM batches WHERE commit_block > ?"
            undone = [r[0] for r in c.execute(later + " ORDER BY batch_id", (block,))]
            c.execute(
                "DELETE FROM verified_roots WHERE node IN "
                "(SELECT DISTINCT lower(node) FROM batches WHERE commit_block > ?)",
                (block,),
            )
            for table in ("checks", "missing", "receipts", "indexed", "ingested", "refused", "writes"):
                c.execute(f"DELETE FROM {table} WHERE batch_id IN ({later})", (block,))
            c.execute(f"DELETE FROM diverged WHERE batch_id IN ({later})", (block,))
            c.execute(f"DELETE FROM challenges WHERE block > ? OR batch_id IN ({later})", (block, block))
            c.execute("DELETE FROM batches WHERE commit_block > ?", (block,))
            c.execute(
                "UPDATE batches SET status = 'pending', error = NULL WHERE status = 'done' "
                "AND commit_block + ? > ?",
                (seed_delay, block),
            )
            reset = c.execute(
                "SELECT batch_id, idx FROM checks WHERE challenge_id IS NOT NULL AND challenge_block > ?",
                (block,),
            ).fetchall()
            _reset_check_challenges(c, reset)
            c.execute(
                "UPDATE challenges SET status = CASE WHEN my_vote IS NOT NULL "
                "AND reveal IN ('pending', 'done') THEN 'voted' ELSE 'open' END, fraud = NULL, "
                "settled_block = NULL "
                "WHERE status IN ('resolved', 'claimed') AND settled_block > ?",
                (block,),
            )
            # this validator's availability claims: one opened after it is claimed again (`_open`
            # adopts the entry's claim if the new branch holds one), one answered or resolved
            # after it is followed again (`Availability._follow` reads what the chain holds now)
            c.execute(
                "UPDATE missing SET status = CASE WHEN status = 'challenged' THEN 'retrying' "
                "ELSE 'challenged' END, availability_id = CASE WHEN status = 'challenged' THEN NULL "
                "ELSE availability_id END, next_try = 0, claim_block = NULL WHERE claim_block > ? "
                "AND availability_id IS NOT NULL AND status IN ('challenged', 'answered', 'slashed')",
                (block,),
            )
            c.execute(
                "UPDATE challenges SET status = 'open', reveal = 'pending' WHERE status IN ('open', 'voted') "
                "AND my_salt IS NOT NULL AND my_vote IS NOT NULL AND reveal IN ('pending', 'done')"
            )
            c.execute("DELETE FROM checkpoints WHERE number > ?", (block,))
            # the next block each scans: the cursor's, and the refusals' (`ManifestWatch`) after its value
            for key, value in (("cursor", block + 1), ("refusals_to", block)):
                c.execute(
                    "UPDATE meta SET value = ? WHERE key = ? AND CAST(value AS INTEGER) > ?",
                    (str(value), key, value),
                )
            return undone

    def unanchored_challenges(self) -> list[tuple[int, int, int, bytes | None]]:
        """Checks whose challenge (sent here, or found on their leaf) is not yet known to be in a
        block (`anchor_challenges`): ``(batch, index, challenge id, leaf or None)``."""
        rows = self._all(
            "SELECT batch_id, idx, challenge_id, challenge_leaf FROM checks "
            "WHERE challenge_id IS NOT NULL AND challenge_block IS NULL ORDER BY batch_id, idx"
        )
        return [(b, i, cid, None if leaf is None else bytes.fromhex(leaf)) for b, i, cid, leaf in rows]

    def anchor_challenges(
        self, at: Checkpoint, found: Iterable[tuple[int, int, int]], lost: Iterable[tuple[int, int, int]]
    ) -> None:
        """Checks' challenges looked up on chain at block ``at`` (kept as a checkpoint): ``found``
        ``(batch, index, challenge id)`` there (known to be in ``at`` or before: undone if ``at``
        is orphaned), or ``lost`` (orphaned before they were seen: the check goes back to "not
        challenged", as in `undo_after`), atomically."""
        with self._tx() as c:
            c.executemany(
                "UPDATE checks SET challenge_block = ? WHERE batch_id = ? AND idx = ? AND challenge_id = ? "
                "AND challenge_block IS NULL",
                [(at.number, b, i, cid) for b, i, cid in found],
            )
            gone = [
                (b, i)
                for b, i, cid in lost
                if c.execute(
                    "SELECT 1 FROM checks WHERE batch_id = ? AND idx = ? AND challenge_id = ? "
                    "AND challenge_block IS NULL",
                    (b, i, cid),
                ).fetchone()
            ]
            _reset_check_challenges(c, gone)
            _put_checkpoints(c, [at])

    # -- batches and checks ----------------------------------------------------------------------

    def pending_batches(self, after: int = 0) -> list[BatchRow]:
        """Batches not finished yet, oldest first (of ids above ``after``)."""
        rows = self._all(
            "SELECT batch_id, node, root, count, commit_block, manifest_cid, status FROM batches "
            "WHERE status = 'pending' AND batch_id > ? ORDER BY batch_id",
            after,
        )
        return [BatchRow(r[0], r[1], bytes.fromhex(r[2]), r[3], r[4], r[5], r[6]) for r in rows]

    def batch(self, batch_id: int) -> BatchRow | None:
        """One recorded batch."""
        rows = self._all(
            "SELECT batch_id, node, root, count, commit_block, manifest_cid, status FROM batches "
            "WHERE batch_id = ?",
            batch_id,
        )
        return BatchRow(rows[0][0], rows[0][1], bytes.fromhex(rows[0][2]), *rows[0][3:]) if rows else None

    def commit_block(self, batch_id: int) -> int | None:
        """A recorded batch's ``commitBlock``, where its ``BatchCommitted`` event is (None: not
        recorded): `TaskManagerClient.commit_block_of`."""
        rows = self._all("SELECT commit_block FROM batches WHERE batch_id = ?", batch_id)
        return int(rows[0][0]) if rows else None

    def batch_ids(self) -> list[int]:
        """Every recorded batch id (ascending)."""
        return [r[0] for r in self._all("SELECT batch_id FROM batches ORDER BY batch_id")]

    def finish_batch(self, batch_id: int, status: str = "done", error: str | None = None) -> None:
        """Mark a batch ``done`` (or ``error`` with a reason: it will not be retried)."""
        with self._tx() as c:
            c.execute(
                "UPDATE batches SET status = ?, error = ? WHERE batch_id = ?", (status, error, batch_id)
            )

    def record_check(self, row: CheckRow) -> None:
        """Store a verdict (first one wins: a re-run never overwrites it)."""
        with self._tx() as c:
            c.execute(
                "INSERT OR IGNORE INTO checks (batch_id, idx, ok, kinds, evidence_cid, challenge_id) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (row.batch_id, row.index, int(row.ok), row.kinds, row.evidence_cid, row.challenge_id),
            )

    def set_check_challenge(
        self, batch_id: int, index: int, challenge_id: int, leaf: bytes | None = None
    ) -> None:
        """Remember the challenge opened on a checked receipt (its ``leaf``, where known), not yet
        known to be in a block: the follower looks it up on chain (`anchor_challenges`)."""
        with self._tx() as c:
            c.execute(
                "UPDATE checks SET challenge_id = ?, challenge_leaf = ?, challenge_block = NULL "
                "WHERE batch_id = ? AND idx = ?",
                (challenge_id, None if leaf is None else leaf.hex(), batch_id, index),
            )

    _CHECKS = "SELECT batch_id, idx, ok, kinds, evidence_cid, challenge_id FROM checks"

    @staticmethod
    def _check_row(r: tuple) -> CheckRow:
        return CheckRow(r[0], r[1], bool(r[2]), r[3], r[4], r[5])

    def checks(self, batch_id: int | None = None) -> list[CheckRow]:
        """Verdicts, of one batch or all."""
        rows = (
            self._all(self._CHECKS + " WHERE batch_id = ? ORDER BY idx", batch_id)
            if batch_id is not None
            else self._all(self._CHECKS + " ORDER BY batch_id, idx")
        )
        return [self._check_row(r) for r in rows]

    def missing_indexes(self, batch_id: int) -> set[int]:
        """The entries of a batch the availability path holds (whatever their status)."""
        return {r[0] for r in self._all("SELECT idx FROM missing WHERE batch_id = ?", batch_id)}

    def check(self, batch_id: int, index: int) -> CheckRow | None:
        """The verdict recorded for one entry, if any."""
        rows = self._all(self._CHECKS + " WHERE batch_id = ? AND idx = ?", batch_id, index)
        return self._check_row(rows[0]) if rows else None

    # -- availability ----------------------------------------------------------------------------

    def add_missing(self, batch_id: int, index: int, reason: str, next_try: float) -> None:
        """Start retrying an entry whose data could not be fetched (idempotent). An entry whose
        data was read before (``fetched``, ``answered``, ``checked``) or given up on (``expired``)
        is retried again: data once served can be withheld later (a writer's trace a reader needs
        now); one being retried, challenged, awaited or already slashed for keeps its course."""
        with self._tx() as c:
            c.execute(
                "INSERT INTO missing (batch_id, idx, reason, next_try) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (batch_id, idx) DO UPDATE SET status = 'retrying', attempts = 0, "
                "reason = excluded.reason, next_try = excluded.next_try "
                "WHERE status IN ('fetched', 'answered', 'checked', 'expired')",
                (batch_id, index, reason, next_try),
            )

    def add_awaiting(self, batch_id: int, index: int, reason: str, next_try: float) -> None:
        """Check an entry again later: the data its roots' origins need cannot be read yet
        (status ``awaiting``; a row already there keeps its course unless its data was read)."""
        with self._tx() as c:
            c.execute(
                "INSERT INTO missing (batch_id, idx, reason, next_try, status) "
                "VALUES (?, ?, ?, ?, 'awaiting') "
                "ON CONFLICT (batch_id, idx) DO UPDATE SET status = 'awaiting', reason = excluded.reason, "
                "next_try = excluded.next_try, attempts = 0 WHERE status IN ('fetched', 'answered')",
                (batch_id, index, reason, next_try),
            )

    def missing(self, *statuses: str) -> list[MissingRow]:
        """Missing entries in the given statuses (all if none given)."""
        sql = "SELECT batch_id, idx, reason, attempts, next_try, availability_id, status FROM missing"
        if statuses:
            sql += f" WHERE status IN ({','.join('?' * len(statuses))})"
        return [MissingRow(*r) for r in self._all(sql + " ORDER BY batch_id, idx", *statuses)]

    def update_missing(
        self, batch_id: int, index: int, at: Checkpoint | None = None, **fields: object
    ) -> None:
        """Set columns of a missing entry (``attempts``, ``next_try``, ``reason``, ``availability_id``,
        ``status``). ``at``: a block its availability claim's step (opened, answered, resolved) was
        seen by, kept as a checkpoint: a reorg past it sends the row back to following the claim
        (`undo_after`)."""
        allowed = {"attempts", "next_try", "reason", "availability_id", "status"}
        if not fields or not set(fields) <= allowed:
            raise ValueError(f"update_missing takes {sorted(allowed)}")
        if at is not None:
            fields = {**fields, "claim_block": at.number}
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self._tx() as c:
            c.execute(
                f"UPDATE missing SET {cols} WHERE batch_id = ? AND idx = ?",
                (*fields.values(), batch_id, index),
            )
            if at is not None:
                _put_checkpoints(c, [at])

    # -- challenges ------------------------------------------------------------------------------

    def challenges(self, *statuses: str) -> list[ChallengeRow]:
        """Challenges in the given statuses (all if none given), by id."""
        sql = (
            "SELECT challenge_id, batch_id, challenger, node, leaf, vote_deadline, evidence_cid, status, "
            "my_vote, fraud, my_salt, reveal, my_evidence, block FROM challenges"
        )
        if statuses:
            rows = self._all(
                sql + f" WHERE status IN ({','.join('?' * len(statuses))}) ORDER BY challenge_id", *statuses
            )
        else:
            rows = self._all(sql + " ORDER BY challenge_id")
        return [
            ChallengeRow(
                r[0],
                r[1],
                r[2],
                r[3],
                bytes.fromhex(r[4]),
                r[5],
                r[6],
                r[7],
                None if r[8] is None else bool(r[8]),
                None if r[9] is None else bool(r[9]),
                None if r[10] is None else bytes.fromhex(r[10]),
                r[11],
                r[12],
                r[13],
            )
            for r in rows
        ]

    def set_vote(self, challenge_id: int, fraud: bool, evidence_cid: str | None) -> None:
        """Record this validator's vote as open on chain (its own challenge's implicit fraud vote,
        or a vote found revealed there); evidence already recorded is kept when none is given."""
        with self._tx() as c:
            c.execute(
                "UPDATE challenges SET my_vote = ?, my_evidence = COALESCE(?, my_evidence), reveal = 'done', "
                "status = CASE WHEN status = 'open' THEN 'voted' ELSE status END WHERE challenge_id = ?",
                (int(fraud), evidence_cid, challenge_id),
            )

    def seal_vote(self, challenge_id: int, fraud: bool, salt: bytes, evidence_cid: str) -> None:
        """Persist a vote about to be sealed (before the commit is sent: a crash after the send
        must still be able to reveal it); the challenge stays ``open`` until `mark_committed`. Its
        secret is also kept apart (``sealed_votes``), by the challenge's batch and leaf: a reorg
        that removes the challenge's row does not take it (`kept_votes`)."""
        with self._tx() as c:
            c.execute(
                "UPDATE challenges SET my_vote = ?, my_salt = ?, my_evidence = ?, reveal = 'pending' "
                "WHERE challenge_id = ?",
                (int(fraud), salt.hex(), evidence_cid, challenge_id),
            )
            c.execute(
                "INSERT OR IGNORE INTO sealed_votes (challenge_id, batch_id, leaf, fraud, salt, evidence) "
                "SELECT challenge_id, batch_id, leaf, ?, ?, ? FROM challenges WHERE challenge_id = ?",
                (int(fraud), salt.hex(), evidence_cid, challenge_id),
            )

    def kept_votes(
        self, challenge_id: int, batch_id: int, leaf: bytes
    ) -> list[tuple[bool, bytes, str | None]]:
        """The votes this validator sealed on challenge ``challenge_id`` while it named ``batch_id``
        and ``leaf`` (its row may have been removed by a reorg since): ``(fraud, salt, evidence)``,
        the latest first."""
        rows = self._all(
            "SELECT fraud, salt, evidence FROM sealed_votes WHERE challenge_id = ? AND batch_id = ? "
            "AND leaf = ? ORDER BY rowid DESC",
            challenge_id,
            batch_id,
            leaf.hex(),
        )
        return [(bool(f), bytes.fromhex(s), e) for f, s, e in rows]

    def adopt_sealed(self, challenge_id: int, fraud: bool, salt: bytes, evidence_cid: str | None) -> None:
        """Put a kept vote (`kept_votes`) whose commit is on chain on its challenge's row (``voted``,
        to be revealed from it)."""
        with self._tx() as c:
            c.execute(
                "UPDATE challenges SET my_vote = ?, my_salt = ?, my_evidence = ?, reveal = 'pending', "
                "status = CASE WHEN status = 'open' THEN 'voted' ELSE status END WHERE challenge_id = ?",
                (int(fraud), salt.hex(), evidence_cid, challenge_id),
            )

    def drop_sealed(self, challenge_id: int) -> None:
        """The contract refused the commit because sealing is over: forget the vote (it was never
        on chain) and never seal one on this challenge again (``reveal`` ``late``)."""
        with self._tx() as c:
            c.execute(
                "UPDATE challenges SET my_vote = NULL, my_salt = NULL, my_evidence = NULL, reveal = 'late' "
                "WHERE challenge_id = ? AND status = 'open'",
                (challenge_id,),
            )

    def mark_committed(self, challenge_id: int, reveal: str = "pending") -> None:
        """This validator's sealed vote is on chain (``reveal`` ``lost``: it cannot be revealed)."""
        with self._tx() as c:
            c.execute(
                "UPDATE challenges SET reveal = ?, status = CASE WHEN status = 'open' THEN 'voted' "
                "ELSE status END WHERE challenge_id = ?",
                (reveal, challenge_id),
            )

    def mark_revealed(self, challenge_id: int, reveal: str = "done") -> None:
        """This validator's sealed vote was revealed (or is ``lost``: it cannot be)."""
        with self._tx() as c:
            c.execute("UPDATE challenges SET reveal = ? WHERE challenge_id = ?", (reveal, challenge_id))

    # -- receipt index ---------------------------------------------------------------------------

    def unindexed_batches(self, node: str, up_to: int) -> list[BatchRow]:
        """``node``'s batches up to ``up_to`` whose manifests are not wholly indexed yet."""
        rows = self._all(
            "SELECT b.batch_id, b.node, b.root, b.count, b.commit_block, b.manifest_cid, b.status "
            "FROM batches b LEFT JOIN indexed i ON i.batch_id = b.batch_id "
            "WHERE lower(b.node) = lower(?) AND b.batch_id <= ? AND COALESCE(i.complete, 0) = 0 "
            "ORDER BY b.batch_id",
            node,
            up_to,
        )
        return [BatchRow(r[0], r[1], bytes.fromhex(r[2]), r[3], r[4], r[5], r[6]) for r in rows]

    def unindexed_since(self, batch_id: int) -> list[BatchRow]:
        """Every node's batches from ``batch_id`` on whose manifests are not wholly indexed yet."""
        rows = self._all(
            "SELECT b.batch_id, b.node, b.root, b.count, b.commit_block, b.manifest_cid, b.status "
            "FROM batches b LEFT JOIN indexed i ON i.batch_id = b.batch_id "
            "WHERE b.batch_id >= ? AND COALESCE(i.complete, 0) = 0 ORDER BY b.batch_id",
            batch_id,
        )
        return [BatchRow(r[0], r[1], bytes.fromhex(r[2]), r[3], r[4], r[5], r[6]) for r in rows]

    def index_receipts(self, batch_id: int, rows: Iterable[ReceiptRow], complete: bool) -> None:
        """Record the receipts read from a batch's manifest (idempotent)."""
        with self._tx() as c:
            c.executemany(
                "INSERT OR IGNORE INTO receipts (batch_id, idx, node, request_hash, user, trace_cid) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(r.batch_id, r.index, r.node, r.request_hash, r.user, r.trace_cid) for r in rows],
            )
            c.execute(
                "INSERT INTO indexed (batch_id, complete) VALUES (?, ?) ON CONFLICT(batch_id) "
                "DO UPDATE SET complete = MAX(complete, excluded.complete)",
                (batch_id, int(complete)),
            )

    def find_receipt(self, node: str, request_hash: str, up_to: int) -> ReceiptRow | None:
        """The first committed receipt of ``node`` for ``request_hash`` in batches up to ``up_to``."""
        rows = self.find_receipts(node, request_hash, up_to, limit=1)
        return rows[0] if rows else None

    def find_receipts(self, node: str, request_hash: str, up_to: int, limit: int = 16) -> list[ReceiptRow]:
        """The committed receipts of ``node`` for ``request_hash`` in batches up to ``up_to``, in
        commit order (a request committed more than once: the first ``limit``)."""
        rows = self._all(
            "SELECT batch_id, idx, node, request_hash, user, trace_cid FROM receipts "
            "WHERE node = lower(?) AND request_hash = lower(?) AND batch_id <= ? "
            "ORDER BY batch_id, idx LIMIT ?",
            node,
            request_hash,
            up_to,
            limit,
        )
        return [ReceiptRow(*r) for r in rows]

    # -- writes read in their window -----------------------------------------------------------

    def unread_traces(self, from_batch: int, now: float, limit: int = 256) -> list[tuple[ReceiptRow, int]]:
        """Indexed receipts of followed (not ``history``) batches from ``from_batch`` on whose
        traces are due to be read for their writes (never tried, or retried at ``now``), with
        the failed reads so far (entries waiting for a retry never crowd out the others)."""
        rows = self._all(
            "SELECT r.batch_id, r.idx, r.node, r.request_hash, r.user, r.trace_cid, "
            "COALESCE(i.failures, 0) FROM receipts r "
            "JOIN batches b ON b.batch_id = r.batch_id "
            "LEFT JOIN ingested i ON i.batch_id = r.batch_id AND i.idx = r.idx "
            "WHERE (i.batch_id IS NULL OR (i.status = 'pending' AND i.next_try <= ?)) "
            "AND b.status != 'history' AND r.batch_id >= ? ORDER BY r.batch_id, r.idx LIMIT ?",
            now,
            from_batch,
            limit,
        )
        return [(ReceiptRow(*r[:6]), int(r[6])) for r in rows]

    def first_unread_batch(self) -> int | None:
        """The lowest batch with an entry whose trace is still to be read (the reader's floor)."""
        rows = self._all(
            "SELECT MIN(r.batch_id) FROM receipts r JOIN batches b ON b.batch_id = r.batch_id "
            "LEFT JOIN ingested i ON i.batch_id = r.batch_id AND i.idx = r.idx "
            "WHERE (i.batch_id IS NULL OR i.status = 'pending') AND b.status != 'history'"
        )
        return None if not rows or rows[0][0] is None else int(rows[0][0])

    def retry_read(self, batch_id: int, index: int, failures: int, next_try: float) -> None:
        """An entry's trace could not be read: try again at ``next_try``."""
        with self._tx() as c:
            c.execute(
                "INSERT OR REPLACE INTO ingested (batch_id, idx, status, failures, next_try) "
                "VALUES (?, ?, 'pending', ?, ?)",
                (batch_id, index, failures, next_try),
            )

    def read_status(self, batch_id: int, index: int) -> str | None:
        """What reading an entry's trace for its writes came to (None: not tried yet)."""
        rows = self._all("SELECT status FROM ingested WHERE batch_id = ? AND idx = ?", batch_id, index)
        return str(rows[0][0]) if rows else None

    def keep_root_block(self, node: str, root: str, block: bytes) -> None:
        """A root block read from a writer's witness, below which no write was read here."""
        with self._tx() as c:
            c.execute(
                "INSERT OR IGNORE INTO root_blocks (node, root, block) VALUES (?, ?, ?)",
                (node.lower(), canonical_cid(root), block),
            )

    def root_block(self, node: str, root: str) -> bytes | None:
        """A root block kept by `keep_root_block`."""
        rows = self._all(
            "SELECT block FROM root_blocks WHERE node = ? AND root = ?", node.lower(), canonical_cid(root)
        )
        return bytes(rows[0][0]) if rows else None

    def mark_diverged(self, batch_id: int, index: int) -> None:
        """An entry whose writer replay diverged: to be checked in full (once)."""
        with self._tx() as c:
            c.execute("INSERT OR IGNORE INTO diverged (batch_id, idx) VALUES (?, ?)", (batch_id, index))

    def mark_recheck(self, batch_id: int, index: int, next_at: int) -> None:
        """An entry whose check failed on this validator (`Verdict.local_failure`) once more: to be
        checked in full again (with the diverged writers) from chain time ``next_at`` on, whether
        or not it was settled before (`recheck_attempts` counts the failures)."""
        with self._tx() as c:
            c.execute(
                "INSERT INTO diverged (batch_id, idx, attempts, next_at) VALUES (?, ?, 1, ?)"
                " ON CONFLICT (batch_id, idx) DO UPDATE SET done = 0, outcome = NULL,"
                " attempts = attempts + 1, next_at = excluded.next_at",
                (batch_id, index, next_at),
            )

    def recheck_attempts(self, batch_id: int, index: int) -> int:
        """How many times checking the entry failed on this validator (`mark_recheck`)."""
        rows = self._all("SELECT attempts FROM diverged WHERE batch_id = ? AND idx = ?", batch_id, index)
        return int(rows[0][0]) if rows else 0

    def diverged_pending(self) -> list[tuple[int, int]]:
        """Diverged entries whose full check is not settled yet, oldest first."""
        return [(r.batch_id, r.index) for r in self.diverged_rows()]

    def diverged_rows(self) -> list[DivergedRow]:
        """The rows of `diverged_pending`, with their back-off."""
        rows = self._all("SELECT batch_id, idx, attempts, next_at FROM diverged WHERE done = 0 ORDER BY 1, 2")
        return [DivergedRow(*r) for r in rows]

    def settle_diverged(self, batch_id: int, index: int, outcome: Outcome | None = None) -> None:
        """The full check of a diverged entry is settled (checked and challenged, or handed on;
        ``outcome`` ``unchecked``: its window closed while checking it failed here;
        ``unchallenged``: it closed before the fault found could be challenged). An outcome
        recorded before stays."""
        with self._tx() as c:
            c.execute(
                "UPDATE diverged SET done = 1, outcome = COALESCE(?, outcome) WHERE batch_id = ? AND idx = ?",
                (outcome, batch_id, index),
            )

    def mark_unchallenged(self, batch_id: int, index: int) -> None:
        """A fault this validator found in an entry, sampled or re-checked, whose challenge the
        contract refused: its window had closed (`Disputes.challenge`)."""
        with self._tx() as c:
            c.execute(
                "INSERT INTO diverged (batch_id, idx, done, outcome) VALUES (?, ?, 1, 'unchallenged')"
                " ON CONFLICT (batch_id, idx) DO UPDATE SET done = 1, outcome = 'unchallenged'",
                (batch_id, index),
            )

    def unchecked(self) -> list[tuple[int, int]]:
        """Entries whose window closed while checking them still failed on this validator (an
        operator's list: no verdict of this validator's exists on them)."""
        return self._ended("unchecked")

    def unchallenged(self) -> list[tuple[int, int]]:
        """Entries whose fault this validator found too late to challenge (an operator's list)."""
        return self._ended("unchallenged")

    def _ended(self, outcome: Outcome) -> list[tuple[int, int]]:
        rows = self._all("SELECT batch_id, idx FROM diverged WHERE outcome = ? ORDER BY 1, 2", outcome)
        return [(b, i) for b, i in rows]

    def keep_entry_texts(self, texts: Mapping[str, str]) -> None:
        """Memory entries' texts (by CID), read from a verified witness."""
        with self._tx() as c:
            c.executemany(
                "INSERT INTO memory_entries (cid, text) VALUES (?, ?) ON CONFLICT (cid) DO NOTHING",
                [(canonical_cid(k), v) for k, v in texts.items()],
            )

    def keep_entry_vectors(self, vectors: Mapping[str, bytes]) -> None:
        """Memory entries' vectors (float32 bytes, by CID), computed here from their texts."""
        with self._tx() as c:
            c.executemany(
                "INSERT INTO memory_entries (cid, vector) VALUES (?, ?) "
                "ON CONFLICT (cid) DO UPDATE SET vector = excluded.vector",
                [(canonical_cid(k), v) for k, v in vectors.items()],
            )

    def entry_texts(self, cids: Sequence[str]) -> dict[str, str]:
        """The texts kept of ``cids`` (canonical CIDs), those known only."""
        return {c: t for c, t in self._entries("text", cids) if t is not None}

    def entry_vectors(self, cids: Sequence[str]) -> dict[str, bytes]:
        """The vectors kept of ``cids`` (canonical CIDs), those known only."""
        return {c: bytes(v) for c, v in self._entries("vector", cids) if v is not None}

    def _entries(self, column: str, cids: Sequence[str]) -> list[tuple]:
        rows: list[tuple] = []
        for start in range(0, len(cids), 500):  # under SQLite's bound on parameters
            chunk = list(cids[start : start + 500])
            marks = ",".join("?" * len(chunk))
            rows += self._all(f"SELECT cid, {column} FROM memory_entries WHERE cid IN ({marks})", *chunk)
        return rows

    def record_refusals(self, entries: Iterable[tuple[int, int]]) -> None:
        """Entries (``index`` -1: a whole manifest) the node refused to show on chain (final)."""
        with self._tx() as c:
            c.executemany("INSERT OR IGNORE INTO refused (batch_id, idx) VALUES (?, ?)", list(entries))

    def refused(self, batch_id: int, index: int) -> bool:
        """Whether the entry (or its batch's manifest) was refused on chain, as far as followed."""
        rows = self._all("SELECT 1 FROM refused WHERE batch_id = ? AND idx IN (?, -1)", batch_id, index)
        return bool(rows)

    def record_writes(self, batch_id: int, index: int, writes: Iterable[WriteRow], status: str) -> None:
        """The writes read from one entry's trace and the entry's status (``read``, or why none
        were: ``unreadable``, ``refused``), in one transaction."""
        with self._tx() as c:
            c.executemany(
                "INSERT OR IGNORE INTO writes "
                "(node, root, prev, area, namespace, writer, user, batch_id, idx) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        w.node.lower(),
                        canonical_cid(w.root),
                        None if w.prev is None else canonical_cid(w.prev),
                        w.area,
                        w.namespace,
                        w.writer.lower(),
                        w.user.lower(),
                        w.batch_id,
                        w.index,
                    )
                    for w in writes
                ],
            )
            c.execute(
                "INSERT OR REPLACE INTO ingested (batch_id, idx, status) VALUES (?, ?, ?)",
                (batch_id, index, status),
            )

    def write_of(self, node: str, root: str) -> WriteRow | None:
        """The recorded write that produced ``root`` of ``node``'s (None: none read here)."""
        rows = self._all(
            "SELECT node, root, prev, area, namespace, writer, user, batch_id, idx FROM writes "
            "WHERE node = ? AND root = ?",
            node.lower(),
            canonical_cid(root),
        )
        return WriteRow(*rows[0]) if rows else None

    def root_verified(self, node: str, root: str) -> bool:
        """Whether the origin check found ``root`` (and every root below it) sound already, as a
        root of ``node``'s (its writers that node's committed receipts)."""
        rows = self._all(
            "SELECT 1 FROM verified_roots WHERE node = ? AND root = ?", node.lower(), canonical_cid(root)
        )
        return bool(rows)

    def forget_verified_roots(self, node: str) -> int:
        """Drop every root of ``node`` found sound (the node refused data on chain since, which may
        unmake a writer below them: each is walked again); returns how many."""
        with self._tx() as c:
            return c.execute("DELETE FROM verified_roots WHERE node = ?", (node.lower(),)).rowcount

    def mark_roots_verified(self, node: str, roots: Iterable[str]) -> None:
        """Record roots of ``node`` the origin check found sound, with every root below them."""
        with self._tx() as c:
            c.executemany(
                "INSERT OR IGNORE INTO verified_roots (node, root) VALUES (?, ?)",
                [(node.lower(), canonical_cid(r)) for r in roots],
            )

    def drop_challenge(self, challenge_id: int) -> None:
        """Forget a challenge the chain no longer holds as recorded (orphaned by a reorg)."""
        with self._tx() as c:
            c.execute("DELETE FROM challenges WHERE challenge_id = ?", (challenge_id,))

    def set_challenge_status(
        self, challenge_id: int, status: str, fraud: bool | None = None, at: Checkpoint | None = None
    ) -> None:
        """Move a challenge to ``resolved`` or ``claimed``; ``at``: a block the step was seen by
        (kept as a checkpoint: a reorg past it makes the challenge unsettled again, `undo_after`)."""
        with self._tx() as c:
            c.execute(
                "UPDATE challenges SET status = ?, fraud = COALESCE(?, fraud), "
                "settled_block = COALESCE(?, settled_block) WHERE challenge_id = ?",
                (
                    status,
                    None if fraud is None else int(fraud),
                    None if at is None else at.number,
                    challenge_id,
                ),
            )
            if at is not None:
                _put_checkpoints(c, [at])


def _put_batch(c: sqlite3.Connection, ev: BatchCommitted, status: str) -> None:
    """Record a committed batch (a batch already recorded keeps its row)."""
    c.execute(
        "INSERT OR IGNORE INTO batches (batch_id, node, root, count, commit_block, manifest_cid, status) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (ev.batch_id, ev.node, ev.root.hex(), ev.count, ev.commit_block, ev.manifest_cid, status),
    )


def _put_checkpoints(c: sqlite3.Connection, cps: Iterable[Checkpoint]) -> None:
    """Keep checkpoints: the most recent ``CHECKPOINTS``, and of the older ones the oldest at each
    half power of two of distance from the newest (``d * d`` in ``[2**k, 2**(k+1))``), so that as
    blocks come the kept ones age into the next and the span reaches back to the first: the
    newest kept at or below any block is at most about twice as far from the newest."""
    rows = [(cp.number, cp.hash.hex()) for cp in cps]
    if not rows:
        return
    c.executemany("INSERT OR REPLACE INTO checkpoints (number, hash) VALUES (?, ?)", rows)
    numbers = [int(r[0]) for r in c.execute("SELECT number FROM checkpoints ORDER BY number DESC")]
    if len(numbers) <= CHECKPOINTS:
        return
    newest, powers, drop = numbers[0], set(), []
    for number in reversed(numbers[CHECKPOINTS:]):  # oldest first: the oldest of each power stays
        power = ((newest - number) ** 2).bit_length()
        if power in powers:
            drop.append((number,))
        powers.add(power)
    c.executemany("DELETE FROM checkpoints WHERE number = ?", drop)


def _reset_check_challenges(c: sqlite3.Connection, entries: Sequence[tuple[int, int]]) -> None:
    """Checks whose challenge is not on chain (orphaned): back to "not challenged", and due for
    their full check again (`Validator.check_entry` re-sends the challenge in the entry's window)."""
    c.executemany(
        "UPDATE checks SET challenge_id = NULL, challenge_leaf = NULL, challenge_block = NULL "
        "WHERE batch_id = ? AND idx = ?",
        entries,
    )
    c.executemany(
        "INSERT INTO diverged (batch_id, idx) VALUES (?, ?) ON CONFLICT (batch_id, idx) "
        "DO UPDATE SET done = 0, outcome = NULL, next_at = 0",
        entries,
    )


def _put_meta(c: sqlite3.Connection, key: str, value: str) -> None:
    c.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (key, value),
    )
