"""``SqlStore``: pipelines, runs and task runs in SQLite (default) or any SQLAlchemy database.

Every state change is one short transaction guarded by the state it leaves, so a
write that lost a race changes nothing and says so (returns False).
"""

from __future__ import annotations

import secrets
import socket
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

from sqlalchemy import create_engine, event, func, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import sessionmaker

from nbsched.dag import RunState, TaskState
from nbsched.errors import ConfigError, NotFound
from nbsched.store.models import Base, PipelineRow, RunRow, TaskRunRow

HOST = socket.gethostname()


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True, kw_only=True)
class TaskRunRecord:
    task: str
    state: TaskState
    try_number: int
    max_tries: int
    host: str | None
    error: str | None
    output_path: str | None
    outputs: dict[str, Any]
    queued_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None
    next_try_at: datetime | None


@dataclass(frozen=True, kw_only=True)
class RunRecord:
    id: str
    pipeline: str
    pipeline_version: int
    params: dict[str, Any]
    logical_date: datetime
    trigger: str
    state: RunState
    host: str | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    tasks: dict[str, TaskRunRecord] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class PipelineRecord:
    name: str
    version: int
    spec: dict[str, Any]
    source_path: str | None
    created_at: datetime


def new_run_id(now: datetime) -> str:
    """Sortable and short enough to type: ``20261128T143012-3fa2c1``."""
    return f"{now.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"


class SqlStore:
    def __init__(self, url: str) -> None:
        self.url = url
        try:
            self.engine: Engine = _make_engine(url)
        except (ArgumentError, ImportError) as exc:
            raise ConfigError(f"database URL {url!r}: {exc}") from None
        self._session = sessionmaker(self.engine, expire_on_commit=False)
        self._write = sessionmaker(self.engine.execution_options(nbsched_write=True), expire_on_commit=False)
        try:
            Base.metadata.create_all(self.engine)
        except OperationalError as exc:
            raise ConfigError(f"database {url!r}: cannot open: {exc.orig}") from None

    def close(self) -> None:
        self.engine.dispose()

    # -- pipelines --------------------------------------------------------------------
    def save_pipeline(self, name: str, spec: dict[str, Any], source_path: str | None) -> int:
        """Store ``spec`` as the pipeline's newest version unless it equals the current one."""
        with self._write() as s, s.begin():
            latest = s.scalars(select(PipelineRow).where(PipelineRow.name == name)
                               .order_by(PipelineRow.version.desc()).limit(1)).first()
            if latest is not None and latest.spec == spec and latest.source_path == source_path:
                return latest.version
            version = (latest.version + 1) if latest else 1
            s.add(PipelineRow(name=name, version=version, spec=spec, source_path=source_path,
                              created_at=utcnow()))
            return version

    def get_pipeline(self, name: str, version: int | None = None) -> PipelineRecord:
        with self._session() as s:
            q = select(PipelineRow).where(PipelineRow.name == name)
            q = q.where(PipelineRow.version == version) if version else q.order_by(PipelineRow.version.desc())
            row = s.scalars(q.limit(1)).first()
            if row is None:
                raise NotFound(f"pipeline '{name}'" + (f" version {version}" if version else "") + " not found")
            return PipelineRecord(name=row.name, version=row.version, spec=row.spec,
                                  source_path=row.source_path, created_at=row.created_at)

    # -- runs -------------------------------------------------------------------------
    def create_run(self, *, pipeline: str, version: int, params: Mapping[str, Any], logical_date: datetime,
                   trigger: str, tasks: Mapping[str, int], run_id: str | None = None) -> str:
        """Create a queued run and its pending task runs (``tasks``: name -> max tries, in order)."""
        now = utcnow()
        run_id = run_id or new_run_id(now)
        with self._write() as s, s.begin():
            s.add(RunRow(id=run_id, pipeline=pipeline, pipeline_version=version, params=dict(params),
                         logical_date=logical_date, trigger=trigger, state=RunState.QUEUED.value,
                         created_at=now))
            s.flush()
            s.add_all(TaskRunRow(run_id=run_id, task=name, position=i, state=TaskState.PENDING.value,
                                 try_number=0, max_tries=tries, outputs={}, updated_at=now)
                      for i, (name, tries) in enumerate(tasks.items()))
        return run_id

    def set_run_state(self, run_id: str, state: RunState, *, expect: Iterable[RunState] | None = None,
                      **fields: Any) -> bool:
        values: dict[str, Any] = {"state": state.value, **fields}
        if state is RunState.RUNNING:
            values.setdefault("started_at", utcnow())
            values.setdefault("host", HOST)
        if state.finished:
            values.setdefault("ended_at", utcnow())
        q = update(RunRow).where(RunRow.id == run_id)
        if expect is not None:
            q = q.where(RunRow.state.in_([e.value for e in expect]))
        with self._write() as s, s.begin():
            return s.execute(q.values(**values)).rowcount == 1

    def set_task_state(self, run_id: str, task: str, state: TaskState, *,
                       expect: Iterable[TaskState] | None = None, **fields: Any) -> bool:
        """One transition of one task, guarded by the states it may leave."""
        now = utcnow()
        values: dict[str, Any] = {"state": state.value, "updated_at": now, **fields}
        if state is TaskState.QUEUED:
            values.setdefault("queued_at", now)
        elif state is TaskState.RUNNING:
            values.setdefault("started_at", now)
            values.setdefault("host", HOST)
            values.setdefault("ended_at", None)
        elif state.finished or state is TaskState.UP_FOR_RETRY:
            values.setdefault("ended_at", now)
        q = update(TaskRunRow).where(TaskRunRow.run_id == run_id, TaskRunRow.task == task)
        if expect is not None:
            q = q.where(TaskRunRow.state.in_([e.value for e in expect]))
        with self._write() as s, s.begin():
            return s.execute(q.values(**values)).rowcount == 1

    def cancel_unfinished_tasks(self, run_id: str, error: str) -> list[str]:
        """Mark every task of the run that has not finished ``cancelled``; returns their names."""
        open_states = [s.value for s in TaskState if not s.finished]
        now = utcnow()
        with self._write() as s, s.begin():
            names = list(s.scalars(select(TaskRunRow.task).where(
                TaskRunRow.run_id == run_id, TaskRunRow.state.in_(open_states))))
            s.execute(update(TaskRunRow).where(TaskRunRow.run_id == run_id, TaskRunRow.state.in_(open_states))
                      .values(state=TaskState.CANCELLED.value, error=error, ended_at=now, updated_at=now))
        return names

    def get_run(self, run_id: str) -> RunRecord:
        with self._session() as s:
            row = s.get(RunRow, run_id)
            if row is None:
                raise NotFound(f"run '{run_id}' not found")
            tasks = s.scalars(select(TaskRunRow).where(TaskRunRow.run_id == run_id)
                              .order_by(TaskRunRow.position)).all()
            return _run_record(row, tasks)

    def list_runs(self, *, pipeline: str | None = None, state: RunState | None = None,
                  limit: int = 20) -> list[RunRecord]:
        with self._session() as s:
            q = select(RunRow).order_by(RunRow.created_at.desc(), RunRow.id.desc()).limit(limit)
            if pipeline:
                q = q.where(RunRow.pipeline == pipeline)
            if state:
                q = q.where(RunRow.state == state.value)
            rows = s.scalars(q).all()
            by_run: dict[str, list[TaskRunRow]] = {r.id: [] for r in rows}
            if rows:
                for t in s.scalars(select(TaskRunRow).where(TaskRunRow.run_id.in_(list(by_run)))
                                   .order_by(TaskRunRow.position)):
                    by_run[t.run_id].append(t)
            return [_run_record(r, by_run[r.id]) for r in rows]

    def count_runs(self) -> int:
        with self._session() as s:
            return s.scalar(select(func.count()).select_from(RunRow)) or 0


def _run_record(row: RunRow, tasks: Iterable[TaskRunRow]) -> RunRecord:
    return RunRecord(
        id=row.id, pipeline=row.pipeline, pipeline_version=row.pipeline_version, params=row.params or {},
        logical_date=row.logical_date, trigger=row.trigger, state=RunState(row.state), host=row.host,
        error=row.error, created_at=row.created_at, started_at=row.started_at, ended_at=row.ended_at,
        tasks={t.task: TaskRunRecord(
            task=t.task, state=TaskState(t.state), try_number=t.try_number, max_tries=t.max_tries,
            host=t.host, error=t.error, output_path=t.output_path, outputs=t.outputs or {},
            queued_at=t.queued_at, started_at=t.started_at, ended_at=t.ended_at, next_try_at=t.next_try_at,
        ) for t in tasks},
    )


def _make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})
        _sqlite_setup(engine)
        return engine
    return create_engine(url, pool_pre_ping=True)


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")  # readers in other processes see runs as they go
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Writers lock at BEGIN, so two writers queue on busy_timeout instead of one
        # failing later with "database is locked" on a read-to-write upgrade.
        immediate = conn.get_execution_options().get("nbsched_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

