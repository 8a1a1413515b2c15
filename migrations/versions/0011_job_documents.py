"""job_documents: each finished job's report object, encoded once

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Jobs that finished before stay without one: `gridshift db upgrade` encodes them
    # after migrating (scheduler.migrate), and a report encodes any still missing.
    op.create_table(
        "job_documents",
        sa.Column("job_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("json_head", sa.Text(), nullable=False),
        sa.Column("json_tail", sa.Text(), nullable=False),
        sa.Column("csv_head", sa.Text(), nullable=False),
        sa.Column("csv_tail", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"]),
        sa.PrimaryKeyConstraint("job_id"),
    )


def downgrade() -> None:
    op.drop_table("job_documents")
