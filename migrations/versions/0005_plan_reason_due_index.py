"""jobs: the placement's reason as flags, and an index for the jobs due to launch

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Jobs planned before this revision keep NULL: their plan_note holds the words.
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("plan_reason", sa.Integer(), nullable=True))
    # A tick asks for the planned jobs whose start has come: without this index it read
    # every planned job (100,000 in a large queue) every few seconds.
    op.create_index("ix_jobs_state_planned_start", "jobs", ["state", "planned_start"])


def downgrade() -> None:
    op.drop_index("ix_jobs_state_planned_start", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("plan_reason")
