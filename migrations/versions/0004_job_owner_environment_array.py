"""jobs: owner (uid, gid, name), captured environment and umask, array id and index

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Jobs stored before this revision keep NULLs: they run as the daemon's user with the
    # daemon's environment plus their --env values, as they always did.
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("owner_uid", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("owner_gid", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("owner_name", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("environment", sa.Text(), nullable=True))
        batch.add_column(sa.Column("umask", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("array_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("array_index", sa.Integer(), nullable=True))
    op.create_index("ix_jobs_owner_uid", "jobs", ["owner_uid"])
    op.create_index("ix_jobs_array_id", "jobs", ["array_id"])


def downgrade() -> None:
    op.drop_index("ix_jobs_array_id", table_name="jobs")
    op.drop_index("ix_jobs_owner_uid", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        for name in ("array_index", "array_id", "umask", "environment", "owner_name",
                     "owner_gid", "owner_uid"):
            batch.drop_column(name)
