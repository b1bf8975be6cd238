"""The follower and the database: a crash at any point neither skips nor repeats a batch."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from supernet.validator.chain import BatchCommitted, ChainEvent, ChallengeOpened, ChallengeResolved
from supernet.validator.db import CheckRow, Database
from supernet.validator.follower import Follower


def batch(bid: int, block: int) -> BatchCommitted:
    return BatchCommitted(bid, "0x" + "11" * 20, bytes([bid]) * 32, 3, block, f"bafy{bid}", block, 0)


@dataclass
class FakeChain:
    """FAKE chain: a fixed event list, a movable head, and an optional crash on a range."""

    events_by_block: dict[int, list[ChainEvent]] = field(default_factory=dict)
    head_block: int = 0
    crash_at: int | None = None

    def head(self) -> int:
        return self.head_block

    def events(self, start: int, end: int) -> list[ChainEvent]:
        if self.crash_at is not None and start <= self.crash_at <= end:
            raise ConnectionError("rpc down")
        return [e for b in range(start, end + 1) for e in self.events_by_block.get(b, [])]


def test_follower_scans_from_deploy_block_in_ranges(tmp_path: Path) -> None:
    chain = FakeChain({3: [batch(1, 3)], 7: [batch(2, 7)], 12: [batch(3, 12)]}, head_block=15)
    f = Follower(chain, Database(tmp_path / "v.db"), start_block=2, max_range=4)  # type: ignore[arg-type]
    assert f.catch_up() == 3
    assert [b.batch_id for b in f.db.pending_batches()] == [1, 2, 3]
    assert f.db.cursor(default=0) == 16
    assert f.step() == 0  # nothing new


def test_an_unreadable_block_ends_the_scan_there_then_restart(tmp_path: Path) -> None:
    """A block whose logs cannot be read (the RPC down, a refused single block) ends the step there:
    the blocks before it are recorded, the cursor stops at it and the next step (or a restart)
    reads on from it (`LogRanges.scan`)."""
    chain = FakeChain({3: [batch(1, 3)], 9: [batch(2, 9)]}, head_block=12, crash_at=9)
    db_path = tmp_path / "v.db"
    f = Follower(chain, Database(db_path), start_block=0, max_range=5)  # type: ignore[arg-type]
    assert f.step() == 1
    assert f.step() == 0 and f.db.cursor(default=0) == 9  # blocks 5 to 8 read, block 9 not
    assert f.step() == 0 and f.db.cursor(default=0) == 9  # still unreadable: not skipped
    f.db.close()
    chain.crash_at = None
    again = Follower(chain, Database(db_path), start_block=0, max_range=5)  # type: ignore[arg-type]
    again.catch_up()
    assert [b.batch_id for b in again.db.pending_batches()] == [1, 2]


def test_recording_is_idempotent_and_checks_first_wins() -> None:
    db = Database(":memory:")
    evs: list[ChainEvent] = [
        batch(1, 3),
        ChallengeOpened(
            1, 1, "0x" + "22" * 20, "0x" + "11" * 20, b"\x01" * 32, b"\x02" * 32, 100, "bafyev", 4, 0
        ),
    ]
    db.record_events(evs, 5)
    db.record_events(evs, 5)  # a re-read of the same range
    assert len(db.pending_batches()) == 1 and len(db.challenges()) == 1
    db.record_check(CheckRow(1, 0, False, "llm.token", "bafyx", None))
    db.record_check(CheckRow(1, 0, True, "", "bafyy", None))
    assert db.checks(1) == [CheckRow(1, 0, False, "llm.token", "bafyx", None)]
    db.set_vote(1, True, None)
    assert db.challenges("voted")[0].my_vote is True
    db.record_events([ChallengeResolved(1, True, 10, 5, 6, 0)], 7)
    [row] = db.challenges("resolved")
    assert row.fraud is True
    db.finish_batch(1)
    assert db.pending_batches() == [] and db.batch(1) is not None


def test_batches_before_the_start_block_are_followed_for_the_receipt_index_only(tmp_path: Path) -> None:
    """A validator told to sample from a later block still records every batch from the deploy
    block on (as ``history``, never sampled): the origin check follows a task's memory to any
    earlier committed writer, and with a gap in its history it would take a writer committed
    before its start for one never committed, and challenge an honest node."""
    opened = ChallengeOpened(
        1, 1, "0x" + "22" * 20, "0x" + "11" * 20, b"\x01" * 32, b"\x02" * 32, 100, "bafyev", 4, 0
    )
    chain = FakeChain({3: [batch(1, 3), opened], 9: [batch(2, 9)]}, head_block=12)
    f = Follower(chain, Database(tmp_path / "v.db"), start_block=0, history_until=8)  # type: ignore[arg-type]
    f.catch_up()
    assert [b.batch_id for b in f.db.pending_batches()] == [2]  # only batch 2 is sampled
    assert [b.batch_id for b in f.db.unindexed_batches("0x" + "11" * 20, 2)] == [1, 2]  # both indexed
    assert f.db.challenges() == []  # a challenge opened before the start is not followed


def test_a_database_of_the_open_vote_era_is_migrated_in_place(tmp_path: Path) -> None:
    """A validator's file from before sealed votes (schema version 0: no salt, no reveal state)
    opens with its rows kept; the votes recorded then were open already, so none waits for a
    reveal; the migration runs once."""
    import sqlite3

    from supernet.validator.db import _MIGRATIONS, _SCHEMA

    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(path)
    old.executescript(_SCHEMA)
    old.execute(
        "INSERT INTO challenges (challenge_id, batch_id, challenger, node, leaf, vote_deadline, "
        "evidence_cid, status, my_vote) VALUES (1, 1, '0xc', '0xn', ?, 100, 'bafyev', 'voted', 1), "
        "(2, 1, '0xc', '0xn', ?, 100, 'bafyev', 'open', NULL)",
        ("01" * 32, "02" * 32),
    )
    old.commit()
    old.close()
    db = Database(path)
    assert db.schema_version() == len(_MIGRATIONS)
    voted, fresh = db.challenges()
    assert (voted.status, voted.my_vote, voted.reveal, voted.salt) == ("voted", True, "done", None)
    assert (fresh.status, fresh.reveal) == ("open", "pending")
    db.seal_vote(2, False, b"\x07" * 32, "bafymine")
    db.close()
    again = Database(path)  # opened again: nothing re-run, the sealed vote kept
    [row] = [r for r in again.challenges() if r.challenge_id == 2]
    assert (row.status, row.my_vote, row.salt, row.my_evidence) == ("open", False, b"\x07" * 32, "bafymine")
    again.mark_committed(2)
    again.mark_revealed(2)
    assert [(r.status, r.reveal) for r in again.challenges("voted")] == [("voted", "done"), ("voted", "done")]
