"""Writing under guard: serializing read-then-write transactions that row locks alone do not
cover, and counting the rows a guarded statement changed."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import CursorResult, Delete, Update, text
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session


def serialize(s: Session | Connection, key: str) -> None:
    """Hold ``key`` until the transaction ends, so that transactions on one key run one at a
    time (e.g. counting a pipeline's running runs, then starting one). PostgreSQL: an advisory
    lock; SQLite needs none, since BEGIN IMMEDIATE already makes every writer wait for the last."""
    dialect = (s.get_bind() if isinstance(s, Session) else s).dialect
    if dialect.name == "postgresql":
        s.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": key})


def changed(s: Session, statement: Update | Delete) -> int:
    """How many rows ``statement`` changed: 0 when its guard (``WHERE state IN ...``) let none."""
    return cast(CursorResult[Any], s.execute(statement)).rowcount
