"""Runners' liveness (``runners``): registering, heartbeats, and taking back the tries of a runner
that stopped heartbeating, whether it died or was only paused.

Each runner heartbeats within its own lease (``nbsched serve --lease``, a foreground run's 60 s,
the Jupyter server's setting) and is judged by it, not by the lease of the runner looking: a
daemon with a lease of 2 s once took the tries of a foreground run that heartbeats every 15 s.
Leases are judged by the database's clock (see ``SqlStore._clock``).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, DateTime, and_, delete, func, or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from nbsched.clock import Clock
from nbsched.notices import Notice
from nbsched.states import RunState, TaskState
from nbsched.store.locks import changed
from nbsched.store.models import RunnerRow, RunRow, TaskRunRow, TaskTryRow, UTCDateTime
from nbsched.store.records import HeldTry, RunnerRecord
from nbsched.store.retry import retried

HOST = socket.gethostname()
# tries of one task that may be taken back from live runners without spending a retry: a notebook
# that stops its runner every time (a fork bomb, SIGSTOP) still ends failed
FREE_RETAKES = 3
_UNFINISHED_RUN = [state for state in RunState if not state.finished]
_GOING = (TaskState.PENDING, TaskState.QUEUED, TaskState.RUNNING, TaskState.UP_FOR_RETRY)


def try_of(run_id: str, task: str, owner: str, try_number: int) -> tuple[ColumnElement[bool], ...]:
    """The fence of a try's writes: the very try, still held by that runner."""
    return (
        TaskRunRow.run_id == run_id,
        TaskRunRow.task == task,
        TaskRunRow.owner == owner,
        TaskRunRow.try_number == try_number,
    )


class LivenessStore:
    """Mixin of ``SqlStore``: needs ``engine``, ``_write``, ``clock``, ``patience`` and ``_add_notices``."""

    engine: Engine
    _write: sessionmaker[Session]
    clock: Clock
    _add_notices: Callable[[Session, str | None, Iterable[Notice]], None]  # OutboxStore's

    def _clock(self) -> datetime | ColumnElement[datetime]:
        """Now, by the clock leases are judged by: the database's, so that runners on machines
        whose clocks disagree judge each other by one clock (a SQLite file is on this machine)."""
        if self.engine.dialect.name == "postgresql":
            return func.timezone("UTC", func.now(), type_=DateTime)
        return self.clock.now()

    def _now(self, s: Session) -> datetime:
        """``_clock()`` read, as an aware datetime."""
        if self.engine.dialect.name == "postgresql":
            return s.scalars(select(func.timezone("UTC", func.now(), type_=UTCDateTime))).one()
        return self.clock.now()

    @retried
    def register_runner(self, runner_id: str, kind: str, pid: int, lease: float | None = None) -> None:
        now = self.clock.now()
        with self._write() as s, s.begin():
            s.execute(delete(RunnerRow).where(RunnerRow.id == runner_id))  # again, after it was presumed dead
            s.add(
                RunnerRow(
                    id=runner_id, host=HOST, pid=pid, kind=kind, started_at=now, heartbeat_at=self._clock(), lease=lease
                )
            )

    @retried
    def heartbeat(self, runner_id: str) -> bool:
        """False when another runner has declared this one dead (its row is gone)."""
        with self._write() as s, s.begin():
            return (
                changed(s, update(RunnerRow).where(RunnerRow.id == runner_id).values(heartbeat_at=self._clock())) == 1
            )

    @retried
    def unregister_runner(self, runner_id: str) -> None:
        with self._write() as s, s.begin():
            s.execute(delete(RunnerRow).where(RunnerRow.id == runner_id))

    @retried
    def reap_dead_runners(self, lease: float, *, me: str | None = None) -> list[HeldTry]:
        """Forget runners whose heartbeat is older than their own lease (``lease`` for one that
        registered none), never ``me`` (the runner looking is alive); release the runs they kept
        to themselves; return the tries they left running, each with its runner's record."""
        with self._write() as s, s.begin():
            now = self._now(s)
            dead = {
                r.id: RunnerRecord(id=r.id, host=r.host, pid=r.pid, started_at=r.started_at, lease=r.lease)
                for r in s.scalars(select(RunnerRow).where(RunnerRow.id != (me or "")))
                if r.heartbeat_at < now - timedelta(seconds=r.lease or lease)
            }
            if dead:
                s.execute(delete(RunnerRow).where(RunnerRow.id.in_(list(dead))))
            live = select(RunnerRow.id)
            orphans = s.scalars(
                select(TaskRunRow).where(
                    TaskRunRow.state == TaskState.RUNNING,
                    or_(
                        TaskRunRow.owner.in_(list(dead)),
                        # a try of no known runner: judged by its claim's time
                        and_(
                            or_(TaskRunRow.owner.is_(None), TaskRunRow.owner.not_in(live)),
                            TaskRunRow.updated_at < now - timedelta(seconds=lease),
                        ),
                    ),
                )
            ).all()
            s.execute(
                update(RunRow)
                .where(RunRow.owner.is_not(None), RunRow.owner.not_in(live), RunRow.state.in_(_UNFINISHED_RUN))
                .values(owner=None)
            )
            return [
                HeldTry(
                    run_id=t.run_id,
                    task=t.task,
                    spec_task=t.mapped_from or t.task,
                    try_number=t.try_number,
                    max_tries=t.max_tries,
                    owner=t.owner,
                    runner=dead.get(t.owner or ""),
                )
                for t in orphans
            ]

    @retried
    def take_back(
        self,
        held: HeldTry,
        *,
        error: str,
        retry_at: datetime,
        runner_alive: bool = False,
        notices: Mapping[TaskState, Iterable[Notice]] | None = None,
    ) -> TaskState | None:
        """End a try whose runner stopped heartbeating, fenced as its runner's own end would be:
        retried at ``retry_at`` while it has tries left, else failed, with the ``notices`` of
        the state it takes. A try taken from a runner that is alive (``runner_alive``: paused or
        starved, not dead) spends no retry, up to ``FREE_RETAKES`` of them a task: it is queued
        again at once. Returns the state it took, None if the try had ended meanwhile."""
        now = self.clock.now()
        with self._write() as s, s.begin():
            fence = (
                *try_of(held.run_id, held.task, held.owner or "", held.try_number),
                TaskRunRow.state == TaskState.RUNNING,
            )
            row = s.scalars(select(TaskRunRow).where(*fence).with_for_update()).first()
            if row is None:
                return None
            values: dict[str, Any] = {"ended_at": now, "updated_at": now, "cell": None, "error": error}
            free = runner_alive and self._uncounted(s, held.run_id, held.task) < FREE_RETAKES
            if free:
                values.update(state=TaskState.UP_FOR_RETRY, next_try_at=now, max_tries=row.max_tries + 1)
            elif row.try_number < row.max_tries:
                values.update(state=TaskState.UP_FOR_RETRY, next_try_at=retry_at)
            else:
                values.update(state=TaskState.FAILED)
            s.execute(update(TaskRunRow).where(*fence).values(**values))
            s.execute(
                update(TaskTryRow)
                .where(*_the_try(held.run_id, held.task, held.try_number))
                .values(state=values["state"], ended_at=now, error=error, uncounted=free)
            )
            self._add_notices(s, held.run_id, (notices or {}).get(values["state"], ()))
            return TaskState(values["state"])

    @retried
    def uncount_try(self, run_id: str, task: str, *, runner: str, try_number: int) -> bool:
        """A runner that comes back finds this try of its taken from it: it was alive, so the try
        spends no retry (up to ``FREE_RETAKES`` a task), if its task is still going. False when
        it counted already."""
        with self._write() as s, s.begin():
            row = s.scalars(
                select(TaskRunRow)
                .where(TaskRunRow.run_id == run_id, TaskRunRow.task == task, TaskRunRow.state.in_(_GOING))
                .with_for_update()
            ).first()
            taken = s.scalars(
                select(TaskTryRow).where(
                    *_the_try(run_id, task, try_number),
                    TaskTryRow.runner == runner,
                    TaskTryRow.state != TaskState.RUNNING,
                    TaskTryRow.uncounted.is_(False),
                )
            ).first()
            if row is None or taken is None or self._uncounted(s, run_id, task) >= FREE_RETAKES:
                return False
            row.max_tries += 1
            taken.uncounted = True
            taken.error = f"{taken.error or 'taken back'}; its runner was alive: this try does not count"
            return True

    @staticmethod
    def _uncounted(s: Session, run_id: str, task: str) -> int:
        return (
            s.scalar(
                select(func.count()).where(
                    TaskTryRow.run_id == run_id, TaskTryRow.task == task, TaskTryRow.uncounted.is_(True)
                )
            )
            or 0
        )


def _the_try(run_id: str, task: str, try_number: int) -> tuple[ColumnElement[bool], ...]:
    return (TaskTryRow.run_id == run_id, TaskTryRow.task == task, TaskTryRow.try_number == try_number)
