"""The explorer's schema: the Alembic migrations build exactly the models' tables, idempotently."""

from __future__ import annotations

import json
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from supernet.explorer.db.engine import MIGRATIONS, database_url, make_engine, migrate, open_database
from supernet.explorer.db.models import Base


def test_migrations_build_the_models_schema(tmp_path: Path) -> None:
    engine = open_database(str(tmp_path / "x.sqlite"))
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []
    assert {"events", "operators", "batches", "receipts", "challenges", "votes"} <= set(
        inspect(engine).get_table_names()
    )
    migrate(engine)  # a second upgrade is a no-op
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == "0005"


def test_an_index_from_before_sealed_votes_upgrades_keeping_its_votes(tmp_path: Path) -> None:
    """0001 -> 0002: the opened votes already indexed stay; a sealed (sideless) vote fits after."""
    engine = make_engine(str(tmp_path / "old.sqlite"))
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        conn.exec_driver_sql(
            "INSERT INTO votes (challenge_id, validator, fraud, weight, timestamp)"
            " VALUES (1, '0xab', 1, '5', 9)"
        )
    migrate(engine)
    with engine.begin() as conn:
        assert conn.exec_driver_sql("SELECT fraud, weight, sealed_at FROM votes").all() == [(1, "5", None)]
        conn.exec_driver_sql(
            "INSERT INTO votes (challenge_id, validator, fraud, weight, timestamp, sealed_at)"
            " VALUES (2, '0xab', NULL, '5', 10, 10)"
        )
        assert conn.exec_driver_sql("SELECT count(*) FROM votes WHERE fraud IS NULL").scalar() == 1


def test_an_index_from_before_held_refunds_upgrades_its_totals(tmp_path: Path) -> None:
    """0004 -> 0005: totals recounted from the events already indexed: "refunded" is what was
    claimed, "refunds_held" what verdicts hold unclaimed, "burned" gains the availability answers'
    burns, and a claimed challenge gets its claim time."""
    engine = make_engine(str(tmp_path / "old.sqlite"))
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    events = [
        (1, "ChallengeResolved", {"challengeId": 1, "refund": 300, "burned": 50}),
        (2, "ChallengeResolved", {"challengeId": 2, "refund": 200, "burned": 40}),
        (3, "RefundClaimed", {"challengeId": 1, "user": "0xab", "amount": 100, "burned": 200}),
        (4, "AvailabilitySettled", {"availabilityId": 1, "answerCost": 1, "refunded": 2, "burned": 7}),
    ]
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0004")
        for block, name, args in events:
            conn.exec_driver_sql(
                "INSERT INTO events (block, log_index, tx_hash, timestamp, contract, name, args)"
                " VALUES (?, 0, '0x', ?, 'TaskManager', ?, ?)",
                (block, 1000 + block, name, json.dumps(args)),
            )
        for cid in (1, 2):
            conn.exec_driver_sql(
                "INSERT INTO challenges (challenge_id, batch_id, challenger, node, leaf, request_hash,"
                " vote_deadline, evidence_cid, opened_at, status, fraud_stake, honest_stake, slashed,"
                " refund, challenger_reward, voter_pool, burned) VALUES"
                " (?, 1, '0x', '0x', '0x', '0x', 0, 'b', 0, 'fraud', '0', '0', '0', '0', '0', '0', '0')",
                (cid,),
            )
        # what 0004's folding left: each verdict's refund counted at once, less what its claim burned
        for key, value in (("refunded", 300 + 200 - 200), ("burned", 50 + 40 + 200)):
            conn.exec_driver_sql("INSERT INTO totals (key, value) VALUES (?, ?)", (key, str(value)))
    migrate(engine)
    with engine.begin() as conn:
        totals = dict(conn.exec_driver_sql("SELECT key, value FROM totals").all())
        assert (totals["refunded"], totals["refunds_held"], totals["burned"]) == ("100", "200", "297")
        claimed = conn.exec_driver_sql("SELECT challenge_id, refund_claimed_at FROM challenges").all()
        assert sorted(claimed) == [(1, 1003), (2, None)]


def test_database_url_forms(tmp_path: Path) -> None:
    assert database_url(str(tmp_path / "a.sqlite")) == f"sqlite:///{tmp_path / 'a.sqlite'}"
    assert database_url("postgresql://u:p@h/db") == "postgresql+psycopg://u:p@h/db"
    assert database_url("postgres://h/db") == "postgresql+psycopg://h/db"
    assert database_url("sqlite://") == "sqlite://"


def test_committed_openapi_document_is_current() -> None:
    from supernet.explorer.cli import openapi_json

    committed = Path(__file__).resolve().parents[2] / "docs" / "explorer" / "openapi.json"
    assert committed.read_text() == openapi_json(), (
        "run: supernet explorer --openapi docs/explorer/openapi.json"
    )
    assert {"/api/v1/network", "/api/v1/tasks/{task_id}", "/api/v1/live"} <= set(
        json.loads(openapi_json())["paths"]
    )
