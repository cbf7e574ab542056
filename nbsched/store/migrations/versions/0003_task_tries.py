"""A row per try of a task (task_tries), filled from each task's last try; the runs lists (all,
and a pipeline's, newest first) read in the order of an index.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "task_tries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("task", sa.String(length=200), nullable=False),
        sa.Column("try_number", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("runner", sa.String(length=64), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("ended_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("run_id", "task", "try_number"),
    )
    # what a database made before kept of its tries: the last one of each task that started
    op.execute(
        "INSERT INTO task_tries (run_id, task, try_number, state, runner, host, error, started_at, ended_at) "
        "SELECT run_id, task, try_number, state, COALESCE(owner, ''), host, error, started_at, ended_at "
        "FROM task_runs WHERE try_number > 0 AND started_at IS NOT NULL "
        "AND state NOT IN ('pending', 'queued')"
    )
    with op.batch_alter_table("runs") as batch_op:
        batch_op.create_index("ix_runs_created", ["created_at", "id"], unique=False)
        batch_op.drop_index("ix_runs_pipeline_created")
        batch_op.create_index("ix_runs_pipeline_created", ["pipeline", "created_at", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch_op:
        batch_op.drop_index("ix_runs_pipeline_created")
        batch_op.create_index("ix_runs_pipeline_created", ["pipeline", "created_at"], unique=False)
        batch_op.drop_index("ix_runs_created")
    op.drop_table("task_tries")
