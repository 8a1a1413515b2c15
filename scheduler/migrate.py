"""Apply Alembic migrations; cheap check first so the CLI stays fast when up to date."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from scheduler.errors import GridshiftError

if TYPE_CHECKING:  # SQLAlchemy loads only when a migration is checked
    from sqlalchemy import Connection, Engine

log = logging.getLogger("gridshift.migrate")

# The newest revision in migrations/versions; tests check it matches Alembic's head.
HEAD_REVISION = "0011"
# The revision that added models.JobDocument: finished jobs are encoded after it.
DOCUMENTS_REVISION = "0011"
# The PostgreSQL advisory lock that makes migrations take turns (see ``upgrade``).
MIGRATION_LOCK_KEY = 0x6772_6964_7368_02


def _migrations_dir() -> Path:
    """Inside the installed package (a wheel maps migrations/ there), else the source tree's
    top-level migrations/ (an editable install or a checkout)."""
    package = Path(__file__).resolve().parent
    installed = package / "migrations"
    return installed if (installed / "env.py").is_file() else package.parent / "migrations"


MIGRATIONS_DIR = _migrations_dir()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return _revision(connection)


def _revision(connection: Connection) -> str | None:
    from sqlalchemy import inspect, text

    if not inspect(connection).has_table("alembic_version"):
        return None
    return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def known_revisions() -> set[str]:
    """The revision ids in migrations/versions (Alembic names each file ``<id>_<slug>.py``)."""
    return {path.name.split("_", 1)[0] for path in (MIGRATIONS_DIR / "versions").glob("*_*.py")}


def ensure_schema(engine: Engine) -> None:
    """Bring the database to HEAD_REVISION; a no-op (one query) when already there."""
    if current_revision(engine) == HEAD_REVISION:
        return
    upgrade(engine)


def upgrade(engine: Engine) -> None:
    from alembic import command
    from alembic.config import Config as AlembicConfig

    if not (MIGRATIONS_DIR / "env.py").is_file():
        raise GridshiftError(f"migrations not found at {MIGRATIONS_DIR}: this gridshift "
                             f"was installed without them; reinstall it from a wheel")
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Take the write lock first (BEGIN IMMEDIATE, see store.make_engine; on PostgreSQL an
    # advisory lock held to the end of the transaction, which holds the DDL too):
    # processes starting together on a fresh database migrate one after the other, and
    # the later ones find the work done.
    with engine.execution_options(gridshift_begin="IMMEDIATE").begin() as connection:
        if connection.dialect.name == "postgresql":
            from sqlalchemy import text

            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                               {"key": MIGRATION_LOCK_KEY})
        before = _revision(connection)
        if before == HEAD_REVISION:
            return
        if before is not None and before not in known_revisions():
            raise GridshiftError(
                f"the database is at schema revision {before}, which this gridshift does not "
                f"know (its newest is {HEAD_REVISION}): a newer gridshift upgraded it; "
                f"run that version")
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    log.info("database migrated from revision %s to %s", before or "(empty)", HEAD_REVISION)
    if before is not None and before < DOCUMENTS_REVISION:
        # Encoded by the running code, which a migration script must not import.
        from scheduler.store import Store

        count = Store(engine).store_missing_documents()
        log.info("stored the documents of %d finished jobs", count)
