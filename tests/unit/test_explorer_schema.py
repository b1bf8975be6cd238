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
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == "0004"


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
