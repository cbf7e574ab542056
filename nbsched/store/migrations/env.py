"""Alembic's entry point for nbsched's schema.

nbsched upgrades a database itself when it opens it (``nbsched.store.schema``), handing its
connection in ``config.attributes["connection"]``. For a developer writing a migration:
``alembic -c nbsched/store/migrations/alembic.ini -x url=sqlite:///dev.db revision --autogenerate -m "..."``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from nbsched.store.models import Base


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = context.get_x_argument(as_dictionary=True).get("url") or context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("give the database: alembic -x url=<SQLAlchemy URL> ...")
    with create_engine(url).connect() as conn:
        _run(conn)
