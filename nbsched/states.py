"""The run model's states, what may follow what, and the other closed sets of words it keeps.

Pure data. The transitions are declared as Prefect declares its orchestration rules, a state
with the states it may go to, so what may follow what is read here and not from call sites: the
store's guarded updates take the states a write may leave from these tables, and a transition
the tables do not hold cannot be written.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import Enum
from typing import Generic, TypeVar


class _Word(str, Enum):
    """Shown, formatted and stored as its value, as ``StrEnum`` does (Python 3.10 has none)."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class RunState(_Word):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in RUN_FINISHED


class TaskState(_Word):
    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    UP_FOR_RETRY = "up_for_retry"
    SKIPPED = "skipped"
    UPSTREAM_FAILED = "upstream_failed"
    CANCELLED = "cancelled"
    REMOVED = "removed"  # an instance no longer in its for_each list, since a repair expanded it again

    @property
    def finished(self) -> bool:
        return self in TASK_FINISHED


class StopReason(_Word):
    """Why a runner stopped a try before its notebook ended."""

    CANCELLED = "cancelled"  # its run was cancelled, or the runner was told to stop
    TIMED_OUT = "timed out"  # past its task's timeout (shown as "timed out after 2m")
    RUNNER_LOST = "runner lost"  # the try is no longer this runner's (presumed dead, or its database gone)


class RunTrigger(_Word):
    """What created a run."""

    MANUAL = "manual"  # ``nbsched run``, ``trigger``, the REST API, a notebook
    SCHEDULE = "schedule"  # a schedule's fire time, on time or within its misfire grace
    CATCHUP = "catchup"  # a schedule with catchup, making up for fire times missed
    BACKFILL = "backfill"  # ``nbsched backfill``
    AFTER = "after"  # an ``after:`` schedule, for a run of another pipeline that ended
    FILE = "file"  # a ``files:`` schedule, for a file that arrived or changed


class ScheduleOrigin(_Word):
    """Where a schedule came from, and so who may change it."""

    SPEC = "spec"  # the pipeline's spec: replaced when the spec is registered again
    CLI = "cli"  # added by a user (CLI, REST, magics, panel): left alone by a new spec


class NotifyEvent(_Word):
    """What a notification is sent for (``notify: [{on: [...]}]`` in a spec)."""

    START = "start"  # the run started
    SUCCESS = "success"  # the run (a task: its try) ended successfully
    FAILURE = "failure"  # the run ended failed (a task: failed for good, no try left)
    RETRY = "retry"  # a task is up for retry
    SLA_MISSED = "sla_missed"  # the run (a task's try) has not ended within its sla: it goes on
    SCHEDULE_MISSED = "schedule_missed"  # a schedule's fire skipped by its misfire rules: no run


class NoticeState(_Word):
    """Where a notification of the outbox is."""

    PENDING = "pending"  # to be sent (again, after a failed attempt, at its next_attempt_at)
    SENT = "sent"  # every service of its target took it
    FAILED = "failed"  # given up on, after a day of attempts


S = TypeVar("S", RunState, TaskState)


class IllegalTransition(ValueError):
    """Code asked the store for a transition the tables do not hold: a bug, not a race."""


class Transitions(Generic[S]):
    """Each state with the states it may go to."""

    def __init__(self, table: Mapping[S, Iterable[S]]) -> None:
        self.table: dict[S, frozenset[S]] = {state: frozenset(to) for state, to in table.items()}

    def sources(self, new: S) -> frozenset[S]:
        """The states from which ``new`` may be reached."""
        return frozenset(old for old, to in self.table.items() if new in to)

    def guard(self, new: S, expect: Iterable[S] | None = None) -> frozenset[S]:
        """The states a write of ``new`` may leave: those of ``expect`` (every one the table
        allows, when None), each of which must be allowed."""
        sources = self.sources(new)
        if expect is None:
            return sources
        wanted = frozenset(expect)
        if not wanted <= sources:
            illegal = ", ".join(sorted(s.value for s in wanted - sources))
            raise IllegalTransition(f"{illegal} -> {new.value}: not a transition of {type(new).__name__}")
        return wanted


RUN: Transitions[RunState] = Transitions(
    {
        RunState.QUEUED: {RunState.RUNNING, RunState.CANCELLED},
        RunState.RUNNING: {RunState.SUCCESS, RunState.FAILED, RunState.CANCELLED},
        RunState.SUCCESS: {RunState.QUEUED},  # repaired: chosen tasks run again
        RunState.FAILED: {RunState.QUEUED},  # retried
        RunState.CANCELLED: {RunState.QUEUED},  # retried
    }
)

TASK: Transitions[TaskState] = Transitions(
    {
        # FAILED straight from waiting: its parameters cannot be rendered, so no try can start
        TaskState.PENDING: {
            TaskState.QUEUED,
            TaskState.SKIPPED,
            TaskState.UPSTREAM_FAILED,
            TaskState.FAILED,
            TaskState.CANCELLED,
            TaskState.REMOVED,  # past the end of its for_each's new list (Airflow's REMOVED)
        },
        TaskState.QUEUED: {TaskState.RUNNING, TaskState.CANCELLED},
        # QUEUED again: claimed as the connection was lost, never started, put back
        TaskState.RUNNING: {
            TaskState.SUCCESS,
            TaskState.FAILED,
            TaskState.UP_FOR_RETRY,
            TaskState.CANCELLED,
            TaskState.QUEUED,
        },
        TaskState.UP_FOR_RETRY: {TaskState.QUEUED, TaskState.FAILED, TaskState.CANCELLED},
        # a repaired run's chosen tasks wait again, whatever they ended in
        TaskState.SUCCESS: {TaskState.PENDING},
        TaskState.SKIPPED: {TaskState.PENDING},
        # a retried run's tasks wait again
        TaskState.FAILED: {TaskState.PENDING},
        TaskState.UPSTREAM_FAILED: {TaskState.PENDING},
        TaskState.CANCELLED: {TaskState.PENDING},
        # in its for_each's list again (a repair of the task, or a longer list)
        TaskState.REMOVED: {TaskState.PENDING},
    }
)

RUN_FINISHED = frozenset({RunState.SUCCESS, RunState.FAILED, RunState.CANCELLED})
TASK_FINISHED = frozenset(
    {
        TaskState.SUCCESS,
        TaskState.FAILED,
        TaskState.SKIPPED,
        TaskState.UPSTREAM_FAILED,
        TaskState.CANCELLED,
        TaskState.REMOVED,
    }
)
