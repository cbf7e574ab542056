"""Each runner's own lease (``runners.lease``), by which the others judge its heartbeat, and the
tries taken from a runner that was alive (``task_tries.uncounted``), which spend no retry.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("runners") as batch_op:
        batch_op.add_column(sa.Column("lease", sa.Float(), nullable=True))
    with op.batch_alter_table("task_tries") as batch_op:
        batch_op.add_column(sa.Column("uncounted", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("task_tries") as batch_op:
        batch_op.drop_column("uncounted")
    with op.batch_alter_table("runners") as batch_op:
        batch_op.drop_column("lease")
