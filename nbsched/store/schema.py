"""The database schema, made current when a store opens a database.

A new database gets the tables of ``models.py`` and is stamped with the newest revision; an older
one is upgraded by the Alembic migrations in ``migrations/versions``; one made before nbsched had
migrations holds the ``BASELINE`` schema and is stamped with it first. Opening a current database
reads one row and does not import Alembic (it costs a quarter of a second).
"""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

from nbsched.errors import ConfigError
from nbsched.store.locks import serialize
from nbsched.store.models import Base

HEAD = "0013"  # the newest file in migrations/versions (a test keeps them in step)
BASELINE = "0001"  # the schema of databases made before there were migrations
MIGRATIONS = Path(__file__).with_name("migrations")

log = logging.getLogger("nbsched.store")


def revision(conn: Connection) -> str | None:
    if not inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def prepare(engine: Engine, url: str) -> None:
    """Create or upgrade the schema of ``engine``'s database to ``HEAD``."""
    with engine.connect() as conn:
        if revision(conn) == HEAD:
            return
    # SQLite: BEGIN IMMEDIATE (see sql.py) makes one process the migrator; the others wait and
    # then find the database current. SQLite and PostgreSQL both roll back DDL with the rest.
    with engine.execution_options(nbsched_write=True).begin() as conn:
        serialize(conn, "schema")  # one migrator at a time
        current = revision(conn)
        if current == HEAD:
            return
        from alembic import command
        from alembic.config import Config
        from alembic.script import ScriptDirectory

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = conn
        if current is None and not inspect(conn).has_table("runs"):
            Base.metadata.create_all(conn)
            command.stamp(config, HEAD)
            return
        known = {r.revision for r in ScriptDirectory.from_config(config).walk_revisions()}
        if current is not None and current not in known:
            raise ConfigError(
                f"database {url!r}: its schema (revision {current}) is newer than this "
                f"nbsched knows (up to {HEAD}); upgrade nbsched"
            )
        if current is None:
            command.stamp(config, BASELINE)
        command.upgrade(config, HEAD)
        log.info("database %s: schema upgraded from revision %s to %s", url, current or BASELINE, HEAD)
