"""jobs: the Slurm job that runs a job in a Slurm region, where it is held, its begin time

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("slurm_job_id", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("slurm_region", sa.String(length=100), nullable=True))
        batch.add_column(sa.Column("slurm_begin", sa.DateTime(), nullable=True))
    op.create_index("ix_jobs_slurm_region", "jobs", ["slurm_region"])


def downgrade() -> None:
    op.drop_index("ix_jobs_slurm_region", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        for name in ("slurm_begin", "slurm_region", "slurm_job_id"):
            batch.drop_column(name)
