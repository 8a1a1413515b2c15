"""Apply Alembic migrations; cheap check first so the CLI stays fast when up to date."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, inspect, text

from scheduler.errors import GridshiftError

# The newest revision in migrations/versions; tests check it matches Alembic's head.
HEAD_REVISION = "0001"
MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return None
        return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def ensure_schema(engine: Engine) -> None:
    """Bring the database to HEAD_REVISION; a no-op (one query) when already there."""
    if current_revision(engine) == HEAD_REVISION:
        return
    upgrade(engine)


def upgrade(engine: Engine) -> None:
    from alembic import command
    from alembic.config import Config as AlembicConfig

    if not (MIGRATIONS_DIR / "env.py").is_file():
        raise GridshiftError(f"migrations not found at {MIGRATIONS_DIR}; install with pip -e")
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
