"""Mapped tasks: a task with a grid or for_each runs as instances, each a ``task_runs`` row
named ``train[3]`` with ``mapped_from`` (its task), ``map_index`` and ``instance_params``.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("task_runs") as batch_op:
        batch_op.add_column(sa.Column("mapped_from", sa.String(200), nullable=True))
        batch_op.add_column(sa.Column("map_index", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("instance_params", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("task_runs") as batch_op:
        batch_op.drop_column("instance_params")
        batch_op.drop_column("map_index")
        batch_op.drop_column("mapped_from")
