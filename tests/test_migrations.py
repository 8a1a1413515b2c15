"""The schema comes only from Alembic: `upgrade head` must equal the models' metadata."""

from __future__ import annotations

import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, inspect

from scheduler.migrate import (
    HEAD_REVISION,
    MIGRATIONS_DIR,
    current_revision,
    known_revisions,
    upgrade,
)
from scheduler.models import Base
from scheduler.store import make_engine
from tests.conftest import Workspace
from tests.postgres_server import PostgresServer


def migrated(path: Path) -> Engine:
    return migrated_url(f"sqlite:///{path}")


def migrated_url(url: str) -> Engine:
    engine = make_engine(url)
    upgrade(engine)
    return engine


def at_revision(path: Path, revision: str) -> Engine:
    """A new SQLite database at ``path`` migrated to ``revision`` only (an older one)."""
    from alembic import command

    engine = make_engine(f"sqlite:///{path}")
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
    return engine


@pytest.fixture(params=["sqlite", "postgresql"])
def two_databases(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """Two empty databases on one backend (each backend in turn)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'migrated.db'}", f"sqlite:///{tmp_path / 'created.db'}"
    server: PostgresServer = request.getfixturevalue("postgresql_server")
    return server.create_database(), server.create_database()


def schema_of(engine: Engine) -> dict[str, Any]:
    """Everything about each table that the schema can enforce, in comparable form."""
    inspector = inspect(engine)
    where = f"{engine.dialect.name}_where"  # a partial index's condition
    tables: dict[str, Any] = {}
    for table in sorted(inspector.get_table_names()):
        if table == "alembic_version":
            continue
        tables[table] = {
            "columns": [(c["name"], str(c["type"]), c["nullable"], c.get("default"))
                        for c in inspector.get_columns(table)],
            "primary_key": inspector.get_pk_constraint(table)["constrained_columns"],
            "foreign_keys": sorted((tuple(fk["constrained_columns"]), fk["referred_table"],
                                    tuple(fk["referred_columns"]))
                                   for fk in inspector.get_foreign_keys(table)),
            "indexes": sorted((i["name"], tuple(i["column_names"]), bool(i["unique"]),
                               str(i.get("dialect_options", {}).get(where)))
                              for i in inspector.get_indexes(table)),
            "unique": sorted((u["name"], tuple(u["column_names"]))
                             for u in inspector.get_unique_constraints(table)),
            "checks": sorted((c["name"], " ".join(c["sqltext"].split()))
                             for c in inspector.get_check_constraints(table)),
        }
    tables["(triggers)"] = triggers_of(engine)
    return tables


def triggers_of(engine: Engine) -> list[Any]:
    """Each trigger's table, name and definition (the reflection API knows no triggers),
    and on PostgreSQL each function they call."""
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            return sorted(connection.exec_driver_sql(
                "SELECT tbl_name, name, sql FROM sqlite_master WHERE type = 'trigger'").all())
        triggers = connection.exec_driver_sql(
            "SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(oid) FROM pg_trigger "
            "WHERE NOT tgisinternal").all()
        functions = connection.exec_driver_sql(
            "SELECT '(function)', proname, prosrc FROM pg_proc "
            "WHERE pronamespace = 'public'::regnamespace").all()
        return sorted([*triggers, *functions])


def test_upgrade_head_equals_the_models_metadata(two_databases: tuple[str, str]) -> None:
    migrated_at, created_at = two_databases
    from_migrations = migrated_url(migrated_at)
    from_models = create_engine(created_at)
    Base.metadata.create_all(from_models)
    try:
        with from_migrations.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection),
                                           Base.metadata)
        assert differences == []
        assert schema_of(from_migrations) == schema_of(from_models)
        triggers = [row[1] for row in schema_of(from_models)["(triggers)"]]
        assert {"job_events_no_update", "job_events_no_delete"} <= set(triggers)
    finally:
        from_migrations.dispose()
        from_models.dispose()


def test_head_revision_constant_matches_the_script_directory(tmp_path: Path) -> None:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    assert ScriptDirectory.from_config(config).get_heads() == [HEAD_REVISION]
    engine = migrated(tmp_path / "migrated.db")
    try:
        assert current_revision(engine) == HEAD_REVISION
    finally:
        engine.dispose()


def test_db_upgrade_creates_a_fresh_database_and_is_idempotent(
    make_workspace: Callable[..., Workspace]
) -> None:
    workspace = make_workspace('[providers.uk]\nkind = "carbonintensity_uk"\n'
                               '[regions.gb]\nprovider = "uk"\n')
    assert not workspace.db_path.exists()
    for _ in range(2):
        result = workspace.cli("db", "upgrade")
        assert result.returncode == 0, result.stderr
        assert f"at revision {HEAD_REVISION}" in result.stdout
    with sqlite3.connect(workspace.db_path) as connection:
        tables = {row[0] for row in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert connection.execute("SELECT version_num FROM alembic_version").fetchall() == [
            (HEAD_REVISION,)]
    assert set(Base.metadata.tables) <= tables


def test_db_upgrade_creates_missing_parent_directories(
    make_workspace: Callable[..., Workspace], tmp_path: Path
) -> None:
    workspace = make_workspace('[providers.uk]\nkind = "carbonintensity_uk"\n'
                               '[regions.gb]\nprovider = "uk"\n')
    nested = tmp_path / "new" / "dir" / "gridshift.db"
    text = workspace.config_path.read_text(encoding="utf-8")
    workspace.config_path.write_text(
        text.replace(str(workspace.db_path), str(nested)), encoding="utf-8")
    result = workspace.cli("db", "upgrade")
    assert result.returncode == 0, result.stderr
    assert nested.is_file()


def test_processes_starting_together_on_a_fresh_database_all_succeed(
    make_workspace: Callable[..., Workspace]
) -> None:
    """The first start of a daemon and a few CLI commands at once must not race on
    creating the schema (the loser would see "table already exists")."""
    workspace = make_workspace('[providers.uk]\nkind = "carbonintensity_uk"\n'
                               '[regions.gb]\nprovider = "uk"\n')
    processes = [workspace.popen("db", "upgrade", stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE) for _ in range(4)]
    outcomes = [(p.wait(120), p.stderr.read() if p.stderr else "") for p in processes]
    for process in processes:
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
    assert outcomes == [(0, "")] * 4


def test_a_database_from_a_newer_gridshift_is_refused_untouched(
    make_workspace: Callable[..., Workspace]
) -> None:
    """After a downgrade of gridshift, every command that opens the database says what
    happened in one line (exit 1) instead of an Alembic traceback, and changes nothing."""
    workspace = make_workspace('[providers.uk]\nkind = "carbonintensity_uk"\n'
                               '[regions.gb]\nprovider = "uk"\n')
    assert workspace.cli("db", "upgrade").returncode == 0
    with sqlite3.connect(workspace.db_path) as connection:
        connection.execute("UPDATE alembic_version SET version_num = '0999'")
    before = dump(workspace.db_path)
    for command in (("db", "upgrade"), ("list",),
                    ("submit", "--duration", "1h", "--within", "1d", "--", "true")):
        result = workspace.cli(*command)
        assert result.returncode == 1, (command, result.stdout)
        assert result.stderr.splitlines() == [
            "gridshift: the database is at schema revision 0999, which this gridshift does not "
            f"know (its newest is {HEAD_REVISION}): a newer gridshift upgraded it; run that "
            "version"], command
    assert dump(workspace.db_path) == before


def dump(path: Path) -> list[str]:
    with sqlite3.connect(path) as connection:
        return list(connection.iterdump())


def test_known_revisions_are_alembics(tmp_path: Path) -> None:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    assert known_revisions() == {script.revision for script in
                                 ScriptDirectory.from_config(config).walk_revisions()}


def test_upgrade_to_0007_stores_the_review_figures_of_existing_jobs(tmp_path: Path) -> None:
    """A database at 0006 with a reviewed job and one awaiting actuals: after the upgrade,
    the reviewed job's actual, run-now and saved grams and forecast error are stored, and
    the other's stay unknown."""
    path = tmp_path / "old.db"
    engine = at_revision(path, "0006")
    row = ("'train', 'succeeded', '[\"true\"]', '/', '{{}}', 3600, '2026-03-01 10:00:00.000000', "
           "'2026-03-02 10:00:00.000000', '[\"north\"]', 500.0, '2026-03-01 10:00:00.000000', "
           "0, {}, {}, {}, {}, {}")
    with sqlite3.connect(path) as connection:
        # energy, actual and run-now intensity, planned and planned-window intensity
        for values in ((0.5, 200.0, 300.0, 250.0, 210.0), (0.5, "NULL", "NULL", 250.0, "NULL")):
            connection.execute(
                "INSERT INTO jobs (name, state, argv, cwd, env, duration_s, not_before, "
                "deadline, regions, power_watts, submitted_at, deadline_missed, energy_kwh, "
                "actual_intensity, run_now_actual_intensity, planned_intensity, "
                "planned_window_actual_intensity) VALUES (" + row.format(*values) + ")")
    upgrade(engine)
    engine.dispose()
    with sqlite3.connect(path) as connection:
        stored = connection.execute(
            "SELECT actual_emissions_g, run_now_emissions_g, saved_g, forecast_error "
            "FROM jobs ORDER BY id").fetchall()
    assert stored == [(100.0, 150.0, 50.0, 40.0), (None, None, None, None)]


def test_upgrade_to_0011_stores_the_documents_of_jobs_that_finished_before(
        tmp_path: Path) -> None:
    """A database at 0010 with a job that ran and finished and one cancelled before it
    started: after the upgrade, the first has its stored document (what a report reads),
    the second none (no report holds it)."""
    path = tmp_path / "old.db"
    engine = at_revision(path, "0010")
    with sqlite3.connect(path) as connection:
        for state, started in (("succeeded", "'2026-03-01 11:00:00.000000'"),
                               ("cancelled", "NULL")):
            connection.execute(
                "INSERT INTO jobs (name, state, argv, cwd, env, duration_s, not_before, "
                "deadline, regions, power_watts, submitted_at, deadline_missed, started_at, "
                "plan_note) VALUES ('train', ?, '[\"python\", \"fit.py\"]', '/', '{}', 3600, "
                "'2026-03-01 10:00:00.000000', '2026-03-02 10:00:00.000000', '[\"north\"]', "
                f"500.0, '2026-03-01 10:00:00.000000', 0, {started}, 'older words')",
                (state,))
    upgrade(engine)
    engine.dispose()
    with sqlite3.connect(path) as connection:
        stored = connection.execute(
            "SELECT job_id, json_head, csv_head FROM job_documents").fetchall()
    [(job_id, json_head, csv_head)] = stored
    assert job_id == 1
    assert json_head.startswith('{"id":1,"name":"train","state":"succeeded",'
                                '"argv":["python","fit.py"],')
    assert '"plan_note":"older words"' in json_head
    assert csv_head.startswith('1,train,succeeded,"[""python"", ""fit.py""]",')
