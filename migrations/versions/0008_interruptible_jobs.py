"""interruptible jobs: the paused state, chunk and progress columns, job_chunks, job_runs

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STATES_BEFORE = ("queued", "planned", "running", "succeeded", "failed", "cancelled", "lost")
_STATES_AFTER = (*_STATES_BEFORE, "paused")


def _state_check(states: Sequence[str]) -> str:
    return "state IN (" + ", ".join(f"'{state}'" for state in states) + ")"


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint("ck_jobs_state", type_="check")
        batch.create_check_constraint("ck_jobs_state", _state_check(_STATES_AFTER))
        batch.add_column(sa.Column("interruptible", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("min_chunk_s", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("max_pauses", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("restart_overhead_s", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("checkpoint_signal", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("checkpoint_grace_s", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("work_done_s", sa.Float(), nullable=True))
        batch.add_column(sa.Column("run_count", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("chunk_end", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("checkpoint_sent_at", sa.DateTime(), nullable=True))
    op.create_index("ix_jobs_interruptible", "jobs", ["interruptible"])
    op.create_table(
        "job_chunks",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("region", sa.String(length=100), nullable=False),
        sa.Column("start", sa.DateTime(), nullable=False),
        sa.Column("end", sa.DateTime(), nullable=False),
        sa.Column("intensity", sa.Float(), nullable=True),
        sa.CheckConstraint('"end" > start', name="ck_job_chunks_interval"),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job_id", "seq", name="uq_job_chunks_job_seq"),
    )
    op.create_table(
        "job_runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("run", sa.Integer(), nullable=False),
        sa.Column("region", sa.String(length=100), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("ended_at", sa.DateTime(), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("work_s", sa.Float(), nullable=True),
        sa.Column("energy_kwh", sa.Float(), nullable=True),
        sa.Column("energy_method", sa.String(length=16), nullable=True),
        sa.Column("actual_intensity", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job_id", "run", name="uq_job_runs_job_run"),
    )


def downgrade() -> None:
    op.drop_table("job_runs")
    op.drop_table("job_chunks")
    op.drop_index("ix_jobs_interruptible", table_name="jobs")
    op.execute("UPDATE jobs SET state = 'failed' WHERE state = 'paused'")
    with op.batch_alter_table("jobs") as batch:
        for name in ("checkpoint_sent_at", "chunk_end", "run_count", "work_done_s",
                     "checkpoint_grace_s", "checkpoint_signal", "restart_overhead_s",
                     "max_pauses", "min_chunk_s", "interruptible"):
            batch.drop_column(name)
        batch.drop_constraint("ck_jobs_state", type_="check")
        batch.create_check_constraint("ck_jobs_state", _state_check(_STATES_BEFORE))
