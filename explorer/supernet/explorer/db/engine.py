"""Opening the index: an engine for a database URL, brought to the latest schema by Alembic.

>>> engine = open_database("sqlite://")
>>> sorted(engine.dialect.name for _ in [0])
['sqlite']
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.pool import StaticPool

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def database_url(db: str) -> str:
    """A SQLAlchemy URL from ``--db``: a URL is kept, anything else is a SQLite file path.

    ``postgresql://`` is mapped to the psycopg 3 driver (the one this package installs).
    """
    if "://" not in db:
        return f"sqlite:///{Path(db).expanduser().resolve()}"
    if db.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + db.split("://", 1)[1]
    return db


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets pages read while the indexer writes; NORMAL sync is durable at each WAL checkpoint.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()


def make_engine(db: str) -> Engine:
    """An engine for ``db`` (a URL or a SQLite path; ``sqlite://`` is one shared in-memory DB)."""
    url = database_url(db)
    if url.startswith("sqlite"):
        kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False}}
        if url in ("sqlite://", "sqlite:///:memory:"):
            kwargs["poolclass"] = StaticPool  # one connection, else each would see its own empty DB
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


def migrate(engine: Engine) -> None:
    """Apply every Alembic migration not applied yet (``upgrade head``)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def open_database(db: str) -> Engine:
    """`make_engine` then `migrate`: the index ready to use."""
    engine = make_engine(db)
    migrate(engine)
    return engine
