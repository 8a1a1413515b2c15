"""jobs: the emissions review's figures, stored (actual, run-now and saved grams, forecast error)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FIGURES = ("actual_emissions_g", "run_now_emissions_g", "saved_g", "forecast_error")


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        for name in FIGURES:
            batch.add_column(sa.Column(name, sa.Float(), nullable=True))
    # Jobs stored before this revision get the figures the store now writes with their
    # review (scheduler.models.review_figures, as of this revision); NULL stays NULL.
    op.execute("UPDATE jobs SET "
               "actual_emissions_g = energy_kwh * actual_intensity, "
               "run_now_emissions_g = energy_kwh * run_now_actual_intensity, "
               "saved_g = energy_kwh * run_now_actual_intensity - energy_kwh * actual_intensity, "
               "forecast_error = planned_intensity - planned_window_actual_intensity")


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        for name in reversed(FIGURES):
            batch.drop_column(name)
