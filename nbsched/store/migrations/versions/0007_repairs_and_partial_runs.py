"""Repairs and partial runs: ``task_runs.params``, the parameter overrides a repair gave one
task; ``runs.repairs``, what each repair of a run re-ran and with which values; and
``runs.selection``, the tasks a partial run runs and the runs its other tasks lend values from.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("task_runs") as batch_op:
        batch_op.add_column(sa.Column("params", sa.JSON(), nullable=True))
    with op.batch_alter_table("runs") as batch_op:
        batch_op.add_column(sa.Column("repairs", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("selection", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch_op:
        batch_op.drop_column("selection")
        batch_op.drop_column("repairs")
    with op.batch_alter_table("task_runs") as batch_op:
        batch_op.drop_column("params")
