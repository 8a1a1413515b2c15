"""jobs: a plan's note as structure (regions left out, replayed data, chunk count)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Jobs planned before keep their words in plan_note; a re-plan writes the new columns
    # (and NULL there) for every job it writes.
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("plan_left_out", sa.Text(), nullable=True))
        batch.add_column(sa.Column("plan_replayed", sa.Boolean(), nullable=True))
        batch.add_column(sa.Column("plan_chunk_count", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("plan_chunk_count")
        batch.drop_column("plan_replayed")
        batch.drop_column("plan_left_out")
