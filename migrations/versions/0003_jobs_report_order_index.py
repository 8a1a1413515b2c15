"""jobs: a partial index in report order (started_at, id), covering state

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_jobs_report_order", "jobs", ["started_at", "id", "state"],
                    sqlite_where=sa.text("started_at IS NOT NULL"),
                    postgresql_where=sa.text("started_at IS NOT NULL"))


def downgrade() -> None:
    op.drop_index("ix_jobs_report_order", table_name="jobs")
