"""job_events is append-only: triggers refuse UPDATE and DELETE

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Kept in step with scheduler.models.JOB_EVENTS_APPEND_ONLY (a test compares the schemas).
TRIGGERS = {
    "sqlite": tuple(
        f"CREATE TRIGGER job_events_no_{verb.lower()} BEFORE {verb} ON job_events "
        f"BEGIN SELECT RAISE(ABORT, 'job_events is append-only'); END"
        for verb in ("UPDATE", "DELETE")
    ),
    "postgresql": (
        "CREATE FUNCTION job_events_append_only() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'job_events is append-only'; END $$",
        *(f"CREATE TRIGGER job_events_no_{verb.lower()} BEFORE {verb} ON job_events "
          f"FOR EACH ROW EXECUTE FUNCTION job_events_append_only()"
          for verb in ("UPDATE", "DELETE")),
    ),
}


def upgrade() -> None:
    for statement in TRIGGERS[op.get_context().dialect.name]:
        op.execute(statement)


def downgrade() -> None:
    postgresql = op.get_context().dialect.name == "postgresql"
    for verb in ("update", "delete"):
        op.execute(f"DROP TRIGGER IF EXISTS job_events_no_{verb}"
                   + (" ON job_events" if postgresql else ""))
    if postgresql:
        op.execute("DROP FUNCTION IF EXISTS job_events_append_only()")
