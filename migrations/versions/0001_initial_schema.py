"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "daemon_heartbeat",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(), nullable=False),
        sa.Column("stopped_at", sa.DateTime(), nullable=True),
        sa.CheckConstraint("id = 1", name="ck_daemon_heartbeat_single"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "forecast_points",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("provider", sa.String(length=100), nullable=False),
        sa.Column("zone", sa.String(length=100), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("start", sa.DateTime(), nullable=False),
        sa.Column("end", sa.DateTime(), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("units", sa.String(length=24), nullable=False),
        sa.Column("signal", sa.String(length=16), nullable=False),
        sa.Column("basis", sa.String(length=16), nullable=True),
        sa.Column("estimated", sa.Boolean(), nullable=False),
        sa.Column("vintage", sa.DateTime(), nullable=False),
        sa.Column("fetched_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("kind IN ('forecast', 'actual')", name="ck_forecast_points_kind"),
        sa.CheckConstraint('"end" > start', name="ck_forecast_points_interval"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "provider",
            "zone",
            "kind",
            "start",
            "end",
            "vintage",
            name="uq_forecast_points_identity",
        ),
    )
    with op.batch_alter_table("forecast_points", schema=None) as batch_op:
        batch_op.create_index(
            "ix_forecast_points_lookup", ["provider", "zone", "kind", "start"], unique=False
        )
        batch_op.create_index("ix_forecast_points_vintage", ["vintage"], unique=False)

    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("argv", sa.Text(), nullable=False),
        sa.Column("cwd", sa.Text(), nullable=False),
        sa.Column("env", sa.Text(), nullable=False),
        sa.Column("duration_s", sa.Integer(), nullable=False),
        sa.Column("not_before", sa.DateTime(), nullable=False),
        sa.Column("deadline", sa.DateTime(), nullable=False),
        sa.Column("regions", sa.Text(), nullable=False),
        sa.Column("power_watts", sa.Float(), nullable=False),
        sa.Column("submitted_at", sa.DateTime(), nullable=False),
        sa.Column("planned_region", sa.String(length=100), nullable=True),
        sa.Column("planned_start", sa.DateTime(), nullable=True),
        sa.Column("planned_intensity", sa.Float(), nullable=True),
        sa.Column("planned_vintage", sa.DateTime(), nullable=True),
        sa.Column("plan_note", sa.Text(), nullable=True),
        sa.Column("signal", sa.String(length=16), nullable=True),
        sa.Column("run_now_intensity", sa.Float(), nullable=True),
        sa.Column("run_region", sa.String(length=100), nullable=True),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("ended_at", sa.DateTime(), nullable=True),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("pid_started_at", sa.Float(), nullable=True),
        sa.Column("log_path", sa.Text(), nullable=True),
        sa.Column("cancel_requested_at", sa.DateTime(), nullable=True),
        sa.Column("deadline_missed", sa.Boolean(), nullable=False),
        sa.Column("end_reason", sa.Text(), nullable=True),
        sa.Column("energy_kwh", sa.Float(), nullable=True),
        sa.Column("energy_method", sa.String(length=16), nullable=True),
        sa.Column("energy_note", sa.Text(), nullable=True),
        sa.Column("actual_intensity", sa.Float(), nullable=True),
        sa.Column("run_now_actual_intensity", sa.Float(), nullable=True),
        sa.Column("planned_window_actual_intensity", sa.Float(), nullable=True),
        sa.Column("intensity_estimated", sa.Boolean(), nullable=True),
        sa.Column("actuals_state", sa.String(length=16), nullable=True),
        sa.Column("actuals_checked_at", sa.DateTime(), nullable=True),
        sa.CheckConstraint(
            "state IN ('queued', 'planned', 'running', 'succeeded', 'failed', 'cancelled', 'lost')",
            name="ck_jobs_state",
        ),
        sa.CheckConstraint("duration_s > 0", name="ck_jobs_duration_positive"),
        sa.CheckConstraint("power_watts > 0", name="ck_jobs_power_positive"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index("ix_jobs_state", ["state"], unique=False)
        batch_op.create_index("ix_jobs_submitted_at", ["submitted_at"], unique=False)

    op.create_table(
        "provider_refreshes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("provider", sa.String(length=100), nullable=False),
        sa.Column("zone", sa.String(length=100), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("points", sa.Integer(), nullable=False),
        sa.Column("horizon_end", sa.DateTime(), nullable=True),
        sa.Column("last_success_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("provider", "zone", "kind", name="uq_provider_refreshes"),
    )
    op.create_table(
        "job_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("old_state", sa.String(length=16), nullable=True),
        sa.Column("new_state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["jobs.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("job_events", schema=None) as batch_op:
        batch_op.create_index("ix_job_events_job_id", ["job_id"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("job_events", schema=None) as batch_op:
        batch_op.drop_index("ix_job_events_job_id")

    op.drop_table("job_events")
    op.drop_table("provider_refreshes")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_submitted_at")
        batch_op.drop_index("ix_jobs_state")

    op.drop_table("jobs")
    with op.batch_alter_table("forecast_points", schema=None) as batch_op:
        batch_op.drop_index("ix_forecast_points_vintage")
        batch_op.drop_index("ix_forecast_points_lookup")

    op.drop_table("forecast_points")
    op.drop_table("daemon_heartbeat")
