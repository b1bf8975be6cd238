"""The explorer's index: one SQLAlchemy schema for SQLite and PostgreSQL, with Alembic migrations."""
