"""An index on the instances of a run's mapped tasks: a runner reads a task's rows (a mapped
task's: its instances) by name, and without it each such read scanned every row of the run.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_task_runs_mapped_from", "task_runs", ["run_id", "mapped_from"])


def downgrade() -> None:
    op.drop_index("ix_task_runs_mapped_from", table_name="task_runs")
