"""Plain, immutable records the store hands out; nothing outside store/ sees a database row."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from nbsched.failures import TaskFailure
from nbsched.states import NoticeState, NotifyEvent, RunState, RunTrigger, ScheduleOrigin, TaskState


@dataclass(frozen=True, kw_only=True)
class TaskTryRecord:
    """One try of a task: who ran it where, when, and how it ended."""

    try_number: int
    state: TaskState  # RUNNING while it runs
    runner: str
    host: str | None
    error: str | None
    started_at: datetime
    ended_at: datetime | None
    failure: TaskFailure | None = None  # the error as data, when the notebook raised it


class TaskVersion(NamedTuple):
    """What tells a task row's writes apart without reading the row: every write of a row sets
    its ``updated_at``, and a try number only grows."""

    state: TaskState
    try_number: int
    updated_at: datetime | None


@dataclass(frozen=True, kw_only=True)
class TaskRunRecord:
    task: str
    state: TaskState
    try_number: int
    max_tries: int
    owner: str | None
    host: str | None
    error: str | None
    failure: TaskFailure | None
    output_path: str | None
    outputs: dict[str, Any]
    branch: list[str] | None
    cell: dict[str, Any] | None  # while running: {"index": 4, "count": 9, "source": "...", "injected": False}
    queued_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None
    next_try_at: datetime | None
    mapped_from: str | None = None  # an instance's task (its own name is "train[3]")
    map_index: int | None = None
    instance_params: dict[str, Any] | None = None  # an instance's grid or for_each values
    pool: str | None = None  # the pool each try takes a slot of
    params: dict[str, Any] | None = None  # a repair's parameter overrides for this task
    warnings: tuple[str, ...] = ()  # papermill's warnings of its last try, each once
    tries: tuple[TaskTryRecord, ...] = ()  # oldest first; read only when asked for (``with_tries``)
    updated_at: datetime | None = None  # its last write

    @property
    def version(self) -> TaskVersion:
        return TaskVersion(self.state, self.try_number, self.updated_at)

    @property
    def spec_task(self) -> str:
        """The spec's task this row runs: its own name, or an instance's task."""
        return self.mapped_from or self.task


@dataclass(frozen=True, kw_only=True)
class RunRecord:
    id: str
    pipeline: str
    pipeline_version: int
    params: dict[str, Any]
    logical_date: datetime
    trigger: RunTrigger
    schedule_id: int | None
    max_active_runs: int | None
    owner: str | None
    state: RunState
    host: str | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    tasks: dict[str, TaskRunRecord] = field(default_factory=dict)
    sla_missed_at: datetime | None = None  # when it was found running past its sla
    fired_by: dict[str, Any] | None = None  # what an after or files schedule fired it for
    repairs: tuple[dict[str, Any], ...] = ()  # each repair: {"at", "tasks", "downstream", "params"}
    # (started, ended) of each earlier execution, before a retry or repair started it again
    past_spans: tuple[tuple[datetime, datetime], ...] = ()
    selection: dict[str, Any] | None = None  # a partial run's: {"tasks": [...], "borrowed": {task: run id}}
    max_active_tasks: int | None = None  # its pipeline's cap on running tasks


@dataclass(frozen=True, kw_only=True)
class PipelineRecord:
    name: str
    version: int
    spec: dict[str, Any]
    source_path: str | None
    created_at: datetime


@dataclass(frozen=True, kw_only=True)
class ScheduleRecord:
    id: int
    pipeline: str
    trigger: dict[str, Any]
    params: dict[str, Any]
    enabled: bool
    catchup: bool
    misfire_grace: float
    max_active_runs: int
    origin: ScheduleOrigin
    next_fire_at: datetime | None
    last_fire_at: datetime | None
    created_at: datetime
    updated_at: datetime
    last_run_id: str | None = None  # an event schedule's newest run


@dataclass(frozen=True, kw_only=True)
class RunnerRecord:
    """A runner as it registered: where its process is, and the lease it heartbeats within."""

    id: str
    host: str
    pid: int
    started_at: datetime
    lease: float | None  # None: registered by an nbsched that kept no lease


@dataclass(frozen=True, kw_only=True)
class HeldTry:
    """A running try whose runner stopped heartbeating: to be taken back."""

    run_id: str
    task: str
    spec_task: str
    try_number: int
    max_tries: int
    owner: str | None
    runner: RunnerRecord | None  # None: its runner's row was gone already


@dataclass(frozen=True, kw_only=True)
class ClaimedTask:
    """A task try this runner now owns and must execute."""

    run_id: str
    task: str
    try_number: int
    pool_gone: str | None = None  # the pool it names no longer exists: the runner fails the try at once


@dataclass(frozen=True, kw_only=True)
class NoticeRecord:
    """A notification of the outbox (see ``models.NoticeRow``)."""

    id: int
    run_id: str | None  # None for an event without a run (schedule_missed)
    pipeline: str | None
    detail: dict[str, Any] | None
    task: str  # "" for the run's own events
    try_number: int
    event: NotifyEvent
    target: str
    attach_report: bool
    title: str | None
    body: str | None
    state: NoticeState
    attempts: int
    next_attempt_at: datetime
    answer: str | None
    created_at: datetime
    sent_at: datetime | None
    claimed_by: str | None = None  # the sender sending it, until its claim expires
    lease_until: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class PoolRecord:
    """A pool, with how many of its slots running tries hold and how many tries wait for one."""

    name: str
    slots: int
    running: int
    queued: int
