"""SQLAlchemy tables: pipelines (versioned specs), runs and task runs."""

from __future__ import annotations

from datetime import datetime, timezone
from enum import Enum
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy import Enum as SqlEnum
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from nbsched.failures import TaskFailure
from nbsched.states import NoticeState, NotifyEvent, RunState, RunTrigger, ScheduleOrigin, TaskState


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, whatever the database keeps (SQLite keeps none)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: nbsched stores aware datetimes only")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return value.replace(tzinfo=timezone.utc) if value is not None else None


class FailureJSON(TypeDecorator[TaskFailure]):
    """A ``TaskFailure`` in and out, kept as a JSON object."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value: TaskFailure | None, dialect: Any) -> dict[str, Any] | None:
        return value.to_json() if value is not None else None

    def process_result_value(self, value: dict[str, Any] | None, dialect: Any) -> TaskFailure | None:
        return TaskFailure.from_json(value) if value is not None else None


def _words(enum: type[Enum], length: int) -> SqlEnum:
    """An enum kept as its lowercase value in the VARCHAR(``length``) that held the bare string
    before (no CHECK constraint: no migration, and a database written before reads the same)."""
    return SqlEnum(
        enum,
        native_enum=False,
        create_constraint=False,
        length=length,
        values_callable=lambda members: [m.value for m in members],
    )


class Base(DeclarativeBase):
    pass


class PipelineRow(Base):
    __tablename__ = "pipelines"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    source_path: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ScheduleRow(Base):
    __tablename__ = "schedules"
    __table_args__ = (Index("ix_schedules_pipeline", "pipeline"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pipeline: Mapped[str] = mapped_column(String(200))
    trigger: Mapped[dict[str, Any]] = mapped_column(JSON)  # {"cron"|"every"|"at": ..., "timezone": ...}
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    catchup: Mapped[bool] = mapped_column(Boolean, default=False)
    misfire_grace: Mapped[float] = mapped_column(Float)
    max_active_runs: Mapped[int] = mapped_column(Integer)
    origin: Mapped[ScheduleOrigin] = mapped_column(_words(ScheduleOrigin, 16))
    next_fire_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_fire_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class PoolRow(Base):
    """A pool of slots: a task naming it runs only while fewer of its tasks than ``slots`` run,
    over every runner sharing the database (the claim counts them in its transaction)."""

    __tablename__ = "pools"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    slots: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class CounterRow(Base):
    """Named counters other processes watch, e.g. ``schedules`` bumps on every schedule change."""

    __tablename__ = "counters"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(Integer)


class FireRow(Base):
    """An event an ``after`` or ``files`` schedule fired a run for (or, with ``run_id`` None, a
    file there when the schedule was made): UNIQUE per schedule and key (the upstream run's id, or
    a hash of the file's path, size and modification time), written in the transaction that
    creates the run, so daemons racing on one event make one run."""

    __tablename__ = "schedule_fires"
    __table_args__ = (UniqueConstraint("schedule_id", "key", name="uq_schedule_fires_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    schedule_id: Mapped[int] = mapped_column(ForeignKey("schedules.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(64))
    run_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class RunnerRow(Base):
    """A live runner (a ``run`` or ``serve`` process); its heartbeat vouches for its tasks."""

    __tablename__ = "runners"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime)
    lease: Mapped[float | None] = mapped_column(Float)  # its own: the others judge its heartbeat by it


class RunRow(Base):
    __tablename__ = "runs"
    # the lists of runs, newest first, read in index order: all runs, and a pipeline's
    __table_args__ = (
        Index("ix_runs_pipeline_created", "pipeline", "created_at", "id"),
        Index("ix_runs_created", "created_at", "id"),
        Index("ix_runs_state", "state"),
        UniqueConstraint("schedule_id", "logical_date", name="uq_runs_schedule_logical_date"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    pipeline: Mapped[str] = mapped_column(String(200))
    pipeline_version: Mapped[int] = mapped_column(Integer)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    logical_date: Mapped[datetime] = mapped_column(UTCDateTime)
    trigger: Mapped[RunTrigger] = mapped_column(_words(RunTrigger, 32))
    schedule_id: Mapped[int | None] = mapped_column(Integer)
    max_active_runs: Mapped[int | None] = mapped_column(Integer)
    owner: Mapped[str | None] = mapped_column(String(64))  # a foreground `nbsched run` keeps its run to itself
    state: Mapped[RunState] = mapped_column(_words(RunState, 32))
    host: Mapped[str | None] = mapped_column(String(255))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sla_missed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # set once: sla_missed is sent once
    # what an event schedule fired it for: {"schedule_id", "run": {...}} or {"schedule_id", "file": {...}}
    fired_by: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # each repair: {"at", "tasks", "downstream", "params"}, oldest first
    repairs: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    # its earlier executions, before each retry or repair started it again: [[started, ended]], ISO
    past_spans: Mapped[list[list[str]] | None] = mapped_column(JSON)
    # a partial run's: {"tasks": [the selected], "borrowed": {task: the run whose outputs it lends}}
    selection: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    max_active_tasks: Mapped[int | None] = mapped_column(Integer)  # its pipeline's cap, from its spec


class TaskRunRow(Base):
    __tablename__ = "task_runs"
    __table_args__ = (
        UniqueConstraint("run_id", "task"),
        Index("ix_task_runs_state", "state"),
        Index("ix_task_runs_pool", "pool", "state"),
        Index("ix_task_runs_mapped_from", "run_id", "mapped_from"),  # a mapped task's instances
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    task: Mapped[str] = mapped_column(String(200))
    position: Mapped[int] = mapped_column(Integer)  # topological order, for display
    state: Mapped[TaskState] = mapped_column(_words(TaskState, 32))
    owner: Mapped[str | None] = mapped_column(String(64))  # the runner executing the current try
    try_number: Mapped[int] = mapped_column(Integer, default=0)
    max_tries: Mapped[int] = mapped_column(Integer)
    host: Mapped[str | None] = mapped_column(String(255))
    error: Mapped[str | None] = mapped_column(Text)  # one line, shown as it is
    failure: Mapped[TaskFailure | None] = mapped_column(FailureJSON)  # the error as data, when the notebook raised
    output_path: Mapped[str | None] = mapped_column(Text)
    outputs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    branch: Mapped[list[str] | None] = mapped_column(JSON)
    params: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # a repair's overrides, for this task only
    pool: Mapped[str | None] = mapped_column(String(100))  # the pool whose slot each try takes
    # an instance of a mapped task (grid, for_each): named "train[3]", of task "train", with its values
    mapped_from: Mapped[str | None] = mapped_column(String(200))
    map_index: Mapped[int | None] = mapped_column(Integer)
    instance_params: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    cell: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # a running try's cell: index, count, source
    warnings: Mapped[list[str] | None] = mapped_column(JSON)  # papermill's, of its last try, each once
    queued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_try_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class TaskTryRow(Base):
    """One try of a task, kept when the task moves on to its next (Airflow's task-instance
    history): written when a runner claims the try and when the try ends, in the transactions
    that change the task, so a try that died before its kernel answered leaves its row too."""

    __tablename__ = "task_tries"
    __table_args__ = (UniqueConstraint("run_id", "task", "try_number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    task: Mapped[str] = mapped_column(String(200))
    try_number: Mapped[int] = mapped_column(Integer)
    state: Mapped[TaskState] = mapped_column(_words(TaskState, 32))  # running, then the state the task took
    runner: Mapped[str] = mapped_column(String(64))
    host: Mapped[str | None] = mapped_column(String(255))
    error: Mapped[str | None] = mapped_column(Text)
    failure: Mapped[TaskFailure | None] = mapped_column(FailureJSON)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # taken from a runner that was alive (paused, starved): it spent no retry
    uncounted: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class NoticeRow(Base):
    """The outbox: a notification, written in the transaction of the state change that causes
    it, then claimed and sent by one sender (as a task is claimed by one runner)."""

    __tablename__ = "notifications"
    # once a transition: written by the guarded write of the transition, which happens once
    __table_args__ = (
        Index("ix_notifications_due", "state", "next_attempt_at"),
        Index("ix_notifications_run", "run_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str | None] = mapped_column(
        ForeignKey("runs.id", ondelete="CASCADE")
    )  # None: no run (schedule_missed)
    pipeline: Mapped[str | None] = mapped_column(String(200))  # of an event without a run
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # what an event without a run is about
    task: Mapped[str] = mapped_column(String(200))  # "" for the run's own events
    try_number: Mapped[int] = mapped_column(Integer)
    event: Mapped[NotifyEvent] = mapped_column(_words(NotifyEvent, 32))
    target: Mapped[str] = mapped_column(Text)  # an Apprise URL, or a tag of the Apprise config file
    attach_report: Mapped[bool] = mapped_column(Boolean, default=False)
    title: Mapped[str | None] = mapped_column(Text)  # the spec's templates, when it has its own
    body: Mapped[str | None] = mapped_column(Text)
    state: Mapped[NoticeState] = mapped_column(_words(NoticeState, 16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    answer: Mapped[str | None] = mapped_column(Text)  # what the target answered last, one line
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
