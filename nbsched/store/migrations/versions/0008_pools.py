"""Pools and task concurrency: ``pools`` (a name and its slots), ``task_runs.pool`` (the pool
each try of the task takes a slot of) and ``runs.max_active_tasks`` (the pipeline's cap on its
running tasks, from the spec the run was made with).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "pools",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("slots", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )
    with op.batch_alter_table("task_runs") as batch_op:
        batch_op.add_column(sa.Column("pool", sa.String(100), nullable=True))
        batch_op.create_index("ix_task_runs_pool", ["pool", "state"])
    with op.batch_alter_table("runs") as batch_op:
        batch_op.add_column(sa.Column("max_active_tasks", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch_op:
        batch_op.drop_column("max_active_tasks")
    with op.batch_alter_table("task_runs") as batch_op:
        batch_op.drop_index("ix_task_runs_pool")
        batch_op.drop_column("pool")
    op.drop_table("pools")
