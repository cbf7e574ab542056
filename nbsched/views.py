"""What the service hands to every surface (CLI, REST API, magics, panel): runs, tasks, pipelines
and schedules as frozen views built from the store's records. Each has ``to_json()``, the one
JSON shape of ``--json`` output and of the REST API (``jupyter_ext/openapi.yaml`` describes it)."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from nbsched.events import SCHEDULE_KINDS, event_from_fields, is_event
from nbsched.fanout import instance_label
from nbsched.states import NoticeState, NotifyEvent, RunState, RunTrigger, ScheduleOrigin, TaskState
from nbsched.timefmt import elapsed, local_time, relative, zoned_time
from nbsched.triggers import get_zone, trigger_from_fields

if TYPE_CHECKING:
    from nbsched.failures import TaskFailure
    from nbsched.spec import PipelineSpec
    from nbsched.store import PipelineRecord, RunRecord, ScheduleRecord, TaskRunRecord, TaskTryRecord
    from nbsched.store.records import NoticeRecord, PoolRecord

Json = dict[str, Any]
_V = TypeVar("_V")


@dataclass(frozen=True, kw_only=True)
class TryView:
    """One try of a task: who ran it where, when, and how it ended."""

    try_number: int
    state: TaskState  # RUNNING while it runs
    runner: str
    host: str | None
    error: str | None
    failure: TaskFailure | None
    started_at: datetime
    ended_at: datetime | None

    @classmethod
    def of(cls, record: TaskTryRecord) -> TryView:
        return _copy(cls, record)

    def to_json(self) -> Json:
        return {
            "try_number": self.try_number,
            "state": self.state.value,
            "runner": self.runner,
            "host": self.host,
            "error": self.error,
            "failure": _failure(self.failure),
            "started_at": _iso(self.started_at),
            "ended_at": _iso(self.ended_at),
        }


@dataclass(frozen=True, kw_only=True)
class TaskView:
    """A task of a run: its state, its last try's error and output, and every try."""

    name: str
    state: TaskState
    try_number: int
    max_tries: int
    label: str  # its name, or an instance's with its values: ``train[region=eu, model=linear]``
    error: str | None = None
    failure: TaskFailure | None = None
    output_path: str | None = None
    outputs: Mapping[str, Any] = field(default_factory=dict)
    cell: Mapping[str, Any] | None = None  # while running: the cell executing now
    host: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    params: Mapping[str, Any] | None = None  # a repair's overrides for this task only
    pool: str | None = None  # the pool whose slot each try takes
    waiting: str | None = None  # queued, and why it waits: ``waiting for pool gpu: 1/1 used``
    mapped_from: str | None = None  # an instance's task: ``train`` of ``train[3]``
    map_index: int | None = None
    instance_params: Mapping[str, Any] | None = None  # an instance's grid or for_each values
    warnings: tuple[str, ...] = ()  # papermill's, of its last try (a mapped task: of its instances), each once
    tries: tuple[TryView, ...] = ()
    # a mapped task: its instances in order; its own state, times and error roll them up
    instances: tuple[TaskView, ...] = ()

    @classmethod
    def of(cls, record: TaskRunRecord, pools: Mapping[str, PoolRecord] | None = None) -> TaskView:
        label = instance_label(record.mapped_from, record.instance_params or {}) if record.mapped_from else record.task
        return _copy(
            cls,
            record,
            name=record.task,
            waiting=_waiting(record, pools),
            label=label,
            tries=tuple(TryView.of(t) for t in record.tries),
            instances=(),
        )

    @classmethod
    def mapped(cls, name: str, instances: tuple[TaskView, ...]) -> TaskView:
        """A mapped task as one: the state that tells most of its instances' (what still moves,
        then what went wrong), its first start, its last end once every instance ended. Those
        removed from its for_each list count only when every one was (its list emptied)."""
        kept = tuple(i for i in instances if i.state is not TaskState.REMOVED) or instances
        found = [i.state for i in kept]
        failed = found.count(TaskState.FAILED)
        ends = [i.ended_at for i in kept]
        return cls(
            name=name,
            state=next(s for s in ROLLUP if s in found),
            try_number=0,
            max_tries=instances[0].max_tries,
            label=name,
            error=f"{failed} of {len(found)} instances failed" if failed else None,
            started_at=min((i.started_at for i in kept if i.started_at), default=None),
            ended_at=None if None in ends else max(e for e in ends if e is not None),
            pool=instances[0].pool,
            warnings=tuple(dict.fromkeys(w for i in instances for w in i.warnings)),
            instances=instances,
        )

    @property
    def instance_states(self) -> dict[str, int]:
        """How many of a mapped task's instances are in each state, most telling first."""
        found = [i.state for i in self.instances]
        return {s.value: found.count(s) for s in ROLLUP if s in found}

    def to_json(self) -> Json:
        return {
            "name": self.name,
            "state": self.state.value,
            "try_number": self.try_number,
            "max_tries": self.max_tries,
            "error": self.error,
            "failure": _failure(self.failure),
            "output_path": self.output_path,
            "outputs": self.outputs,
            "cell": self.cell,
            "host": self.host,
            "started_at": _iso(self.started_at),
            "ended_at": _iso(self.ended_at),
            "params": self.params,
            "pool": self.pool,
            "waiting": self.waiting,
            "mapped_from": self.mapped_from,
            "map_index": self.map_index,
            "instance_params": self.instance_params,
            "label": self.label,
            "warnings": list(self.warnings),
            "tries": [t.to_json() for t in self.tries],
            "instances": [i.to_json() for i in self.instances],
            "instance_states": self.instance_states,
        }


@dataclass(frozen=True, kw_only=True)
class RunView:
    """A run of a pipeline with its tasks, in run order."""

    id: str
    pipeline: str
    pipeline_version: int
    state: RunState
    params: Mapping[str, Any]
    logical_date: datetime
    trigger: RunTrigger  # what created it
    schedule_id: int | None
    fired_by: Mapping[str, Any] | None  # an event schedule's: {"schedule_id", "run": {...}} or {..., "file": {...}}
    repairs: tuple[Mapping[str, Any], ...]  # each: {"at", "tasks", "downstream", "params"}
    selection: Mapping[str, Any] | None  # a partial run's: {"tasks": [...], "borrowed": {task: run id}}
    error: str | None
    created_at: datetime
    started_at: datetime | None  # of its latest execution: a retry or a repair starts it again
    ended_at: datetime | None
    tasks: Mapping[str, TaskView]  # every row, by its name: tasks and instances (``train[3]``)
    past_spans: tuple[tuple[datetime, datetime], ...] = ()  # its earlier executions' (start, end)

    @classmethod
    def of(cls, record: RunRecord, pools: Mapping[str, PoolRecord] | None = None) -> RunView:
        """``pools``: those its queued tasks wait for, to say how full each is."""
        return _copy(cls, record, tasks={name: TaskView.of(t, pools) for name, t in record.tasks.items()})

    @property
    def spans(self) -> tuple[tuple[datetime, datetime | None], ...]:
        """(start, end) of each of its executions, oldest first: the first, then one per retry
        or repair that started it again (the last one's end is None while it runs)."""
        now = ((self.started_at, self.ended_at),) if self.started_at is not None else ()
        return (*self.past_spans, *now)

    @property
    def first_started_at(self) -> datetime | None:
        return self.spans[0][0] if self.spans else None

    def ran_for(self, now: datetime) -> float | None:
        """Seconds it ran in all, its earlier executions included (a running one up to ``now``);
        None if it never started."""
        if not self.spans:
            return None
        return sum(((end or now) - start).total_seconds() for start, end in self.spans)

    def ran_text(self, now: datetime) -> str:
        """:meth:`ran_for` for people: ``41.2s``, ``2m05s``; ``-`` if it never started."""
        seconds = self.ran_for(now)
        return "-" if seconds is None else elapsed(seconds)

    def started_text(self, now: datetime) -> str:
        """Its first start, and what each of its runs took when a retry or repair ran it again:
        ``2026-12-06 19:31:05, ran 3 times: 5.0s + 0.7s + 0.5s``."""
        first = local_time(self.first_started_at)
        if len(self.spans) < 2:
            return first
        return f"{first}, ran {len(self.spans)} times: " + " + ".join(
            elapsed(((end or now) - start).total_seconds()) for start, end in self.spans
        )

    def by_task(self) -> dict[str, TaskView]:
        """Its tasks as the pipeline names them, in run order: a mapped task as one, with its
        instances (``TaskView.mapped``)."""
        groups: dict[str, list[TaskView]] = {}
        for name, task in self.tasks.items():
            groups.setdefault(task.mapped_from or name, []).append(task)
        return {n: g[0] if g[0].mapped_from is None else TaskView.mapped(n, tuple(g)) for n, g in groups.items()}

    def warnings(self) -> list[str]:
        """``task: warning`` for each of papermill's warnings, once per task (a mapped task's
        instances share its notebook, so they warn once for it)."""
        return [f"{name}: {w}" for name, task in self.by_task().items() for w in task.warnings]

    def to_json(self) -> Json:
        return {
            "run_id": self.id,
            "pipeline": self.pipeline,
            "pipeline_version": self.pipeline_version,
            "state": self.state.value,
            "params": self.params,
            "logical_date": _iso(self.logical_date),
            "trigger": self.trigger.value,
            "schedule_id": self.schedule_id,
            "fired_by": self.fired_by,
            "repairs": list(self.repairs),
            "selection": self.selection,
            "error": self.error,
            "created_at": _iso(self.created_at),
            "started_at": _iso(self.started_at),
            "ended_at": _iso(self.ended_at),
            "first_started_at": _iso(self.first_started_at),
            "spans": [{"started_at": _iso(start), "ended_at": _iso(end)} for start, end in self.spans],
            # once it ended: it may run again (a retry, a repair), and then it has no duration yet
            "duration": self.ran_for(self.ended_at) if self.ended_at is not None and self.state.finished else None,
            "tasks": {name: t.to_json() for name, t in self.by_task().items()},
        }


@dataclass(frozen=True, kw_only=True)
class ScheduleView:
    """A schedule of a pipeline, with its next fire time in its own zone."""

    id: int
    pipeline: str
    kind: str  # cron, every, at, after or files
    description: str  # ``cron 0 6 * * 1-5 (Europe/Paris) +catchup``, ``after ingest (success)``
    trigger: Mapping[str, Any]
    params: Mapping[str, Any]
    enabled: bool
    catchup: bool
    misfire_grace: float
    max_active_runs: int
    origin: ScheduleOrigin  # a spec's schedules: or one added by hand
    next_fire_at: datetime | None
    next_fire_local: datetime | None
    last_fire_at: datetime | None
    last_run_id: str | None  # an event schedule's newest run
    waiting_for: str | None  # an event schedule's: ``a successful run of ingest``

    @classmethod
    def of(cls, record: ScheduleRecord) -> ScheduleView:
        kind = next(k for k in SCHEDULE_KINDS if k in record.trigger)
        if is_event(record.trigger):
            event = event_from_fields(record.trigger)
            return _copy(
                cls,
                record,
                kind=kind,
                description=event.describe(),
                next_fire_local=None,
                waiting_for=event.waiting_for(),
            )
        trigger = trigger_from_fields(record.trigger, now=record.created_at)
        zone = get_zone(record.trigger.get("timezone", "UTC"))
        return _copy(
            cls,
            record,
            kind=kind,
            description=trigger.describe() + (" +catchup" if record.catchup else ""),
            next_fire_local=record.next_fire_at.astimezone(zone) if record.next_fire_at else None,
            waiting_for=None,
        )

    def next_fire_text(self, now: datetime) -> str:
        """When it fires next, for people: in its own zone and how far away (``2026-12-01 06:00
        CET (in 3h 12m)``), what an event schedule waits for, ``paused`` or ``never (done)``."""
        if not self.enabled:
            return "paused"
        if self.waiting_for is not None:
            return self.waiting_for
        if self.next_fire_at is None or self.next_fire_local is None:
            return "never (done)"
        return f"{zoned_time(self.next_fire_local)} ({relative((self.next_fire_at - now).total_seconds())})"

    def to_json(self) -> Json:
        return {
            "id": self.id,
            "pipeline": self.pipeline,
            "kind": self.kind,
            "description": self.description,
            "next_fire_local": _iso(self.next_fire_local),
            "trigger": self.trigger,
            "params": self.params,
            "enabled": self.enabled,
            "catchup": self.catchup,
            "misfire_grace": self.misfire_grace,
            "max_active_runs": self.max_active_runs,
            "origin": self.origin.value,
            "next_fire_at": _iso(self.next_fire_at),
            "last_fire_at": _iso(self.last_fire_at),
            "last_run_id": self.last_run_id,
            "waiting_for": self.waiting_for,
        }


@dataclass(frozen=True, kw_only=True)
class PipelineView:
    """A pipeline's newest version, in short."""

    name: str
    version: int
    source_path: str | None
    created_at: datetime
    schedules: int  # how many it has
    tasks: tuple[str, ...]  # in run order

    @classmethod
    def of(cls, record: PipelineRecord, spec: PipelineSpec, schedules: int) -> PipelineView:
        return _copy(cls, record, schedules=schedules, tasks=tuple(spec.order))

    def to_json(self) -> Json:
        return {
            "name": self.name,
            "version": self.version,
            "source_path": self.source_path,
            "created_at": _iso(self.created_at),
            "schedules": self.schedules,
            "tasks": list(self.tasks),
        }


@dataclass(frozen=True, kw_only=True)
class PipelineDetail:
    """A pipeline with its DAG, its versions and its schedules (the REST API's pipeline resource)."""

    pipeline: PipelineView
    versions: tuple[tuple[int, datetime], ...]  # (version, created at), oldest first
    spec: PipelineSpec  # of the newest version
    schedule_list: tuple[ScheduleView, ...]

    def to_json(self) -> Json:
        tasks = [self.spec.tasks[name] for name in self.spec.order]
        return {
            **self.pipeline.to_json(),
            "versions": [{"version": v, "created_at": _iso(at)} for v, at in self.versions],
            "spec": self.spec.raw,
            "dag": {
                "order": self.spec.order,
                "tasks": [
                    {
                        "name": t.name,
                        "notebook": str(t.notebook),
                        "upstream": list(t.upstream),
                        "trigger_rule": t.trigger_rule.value,
                    }
                    for t in tasks
                ],
            },
            "schedule_list": [s.to_json() for s in self.schedule_list],
        }


@dataclass(frozen=True, kw_only=True)
class NoticeView:
    """A notification of the outbox: what it is for, where it goes, and how its sending went.
    ``target`` is shown as people may see it: an URL without its password, or a tag."""

    id: int
    run_id: str | None  # None for an event without a run (schedule_missed)
    pipeline: str | None  # of an event without a run
    task: str | None  # None for the run's own events
    event: NotifyEvent
    target: str
    state: NoticeState
    attempts: int
    answer: str | None  # what the target answered last
    created_at: datetime
    sent_at: datetime | None
    next_attempt_at: datetime | None  # while pending
    # while a sender holds it: which, until when, and whether that claim expired (its sender
    # stopped answering: the next sender takes it)
    claimed_by: str | None = None
    lease_until: datetime | None = None
    claim_expired: bool = False

    @classmethod
    def of(cls, record: NoticeRecord, shown_target: str, now: datetime) -> NoticeView:
        pending = record.state is NoticeState.PENDING
        held = pending and record.claimed_by is not None and record.lease_until is not None
        return _copy(
            cls,
            record,
            task=record.task or None,
            target=shown_target,
            next_attempt_at=record.next_attempt_at if pending else None,
            claimed_by=record.claimed_by if held else None,
            lease_until=record.lease_until if held else None,
            claim_expired=held and record.lease_until is not None and record.lease_until < now,
        )

    @property
    def shown_state(self) -> str:
        """Its state as a list shows it: a pending one being sent, or held by a claim that expired."""
        if self.claimed_by is None:
            return self.state.value
        if self.claim_expired and self.lease_until is not None:
            return f"pending (claim of {self.claimed_by} expired {local_time(self.lease_until)})"
        return f"sending ({self.claimed_by})"

    def to_json(self) -> Json:
        return {
            "id": self.id,
            "run_id": self.run_id,
            "pipeline": self.pipeline,
            "task": self.task,
            "event": self.event.value,
            "target": self.target,
            "state": self.state.value,
            "attempts": self.attempts,
            "answer": self.answer,
            "created_at": _iso(self.created_at),
            "sent_at": _iso(self.sent_at),
            "next_attempt_at": _iso(self.next_attempt_at),
            "claim": None
            if self.claimed_by is None
            else {"by": self.claimed_by, "until": _iso(self.lease_until), "expired": self.claim_expired},
        }


@dataclass(frozen=True, kw_only=True)
class PoolView:
    """A pool: its slots, the tries holding one, the tries queued for it."""

    name: str
    slots: int
    running: int
    queued: int

    @classmethod
    def of(cls, record: PoolRecord) -> PoolView:
        return _copy(cls, record)

    def to_json(self) -> Json:
        return {"name": self.name, "slots": self.slots, "running": self.running, "queued": self.queued}


# which state a mapped task shows of its instances': what still moves, then what went wrong
ROLLUP = (
    TaskState.RUNNING,
    TaskState.QUEUED,
    TaskState.UP_FOR_RETRY,
    TaskState.PENDING,
    TaskState.FAILED,
    TaskState.UPSTREAM_FAILED,
    TaskState.CANCELLED,
    TaskState.SUCCESS,
    TaskState.SKIPPED,
    TaskState.REMOVED,
)


def task_rows(tasks: Mapping[str, Json]) -> dict[str, Json]:
    """A run's ``tasks`` JSON (``RunView.to_json()``) as rows by name: each task, and each mapped
    task's instances in its place."""
    return {row.get("name", name): row for name, task in tasks.items() for row in (task.get("instances") or [task])}


def no_runs_text(pipeline: str | None, state: str | None, pipelines: Sequence[str]) -> str:
    """What a list of runs says when it is empty: none at all, or none that match its filters
    (named), and whether the pipeline asked for exists (``pipelines``: the names there are)."""
    if pipeline is None and state is None:
        return "no runs yet — start one with: nbsched run pipeline.yaml"
    given = " ".join(f"--{k} {v}" for k, v in (("pipeline", pipeline), ("state", state)) if v is not None)
    if pipeline is None or pipeline in pipelines:
        return f"no runs match {given}"
    close = difflib.get_close_matches(pipeline, list(pipelines), n=1)
    return f"no runs match {given}: no pipeline '{pipeline}' is registered" + (
        f" (did you mean '{close[0]}'?)" if close else ""
    )


def _waiting(task: TaskRunRecord, pools: Mapping[str, PoolRecord] | None) -> str | None:
    if task.state is not TaskState.QUEUED or task.pool is None or pools is None:
        return None
    pool = pools.get(task.pool)
    if pool is None:
        return f"waiting for pool {task.pool}, which does not exist (nbsched pool set {task.pool} SLOTS)"
    return f"waiting for pool {task.pool}: {pool.running}/{pool.slots} used" if pool.running >= pool.slots else None


def _copy(cls: type[_V], record: object, **given: Any) -> _V:
    """A view of ``record``: each of its fields ``given``, or else the record's of that name."""
    return cls(**{f.name: given[f.name] if f.name in given else getattr(record, f.name) for f in fields(cls)})  # type: ignore[arg-type]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _failure(failure: TaskFailure | None) -> Json | None:
    return failure.to_json() if failure is not None else None
