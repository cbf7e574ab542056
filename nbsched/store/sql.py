"""``SqlStore``: pipelines, runs and task runs in SQLite (default) or any SQLAlchemy database.

Every state change is one short transaction guarded by the states it may leave, taken from the
transition tables of ``nbsched.states``: a write that lost a race changes nothing and says so
(returns False), and one the tables do not allow cannot be written.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from enum import Enum
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, delete, event, func, or_, select, update
from sqlalchemy.engine import Connection, Engine, Row
from sqlalchemy.exc import ArgumentError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from nbsched.clock import SYSTEM_CLOCK, Clock
from nbsched.errors import ConfigError, NotFound
from nbsched.notices import Notice
from nbsched.states import RUN, TASK, RunState, RunTrigger, TaskState
from nbsched.store import schema
from nbsched.store.fires import FireStore
from nbsched.store.liveness import HOST, LivenessStore, try_of
from nbsched.store.locks import changed, serialize
from nbsched.store.mapping import MappingStore
from nbsched.store.models import FireRow, PipelineRow, PoolRow, RunRow, TaskRunRow, TaskTryRow
from nbsched.store.outbox import OutboxStore
from nbsched.store.pools import PoolStore
from nbsched.store.reached import ReachedServers
from nbsched.store.records import ClaimedTask, PipelineRecord, RunRecord, TaskRunRecord, TaskTryRecord, TaskVersion
from nbsched.store.retry import Patience, retried
from nbsched.store.schedules import ScheduleStore

_RUNNING = (TaskState.RUNNING,)  # a try's own writes leave only this state
NOT_SELECTED = "not selected"  # a partial run's task outside its selection
CLAIM_LOOKAHEAD = 50  # queued tasks a claim looks past the ones it wants, for those waiting for a slot
_UNFINISHED_RUN = [state for state in RunState if not state.finished]
_RETRIED = TASK.guard(TaskState.PENDING, [TaskState.FAILED, TaskState.UPSTREAM_FAILED, TaskState.CANCELLED])
SQLITE_BUSY_TIMEOUT = 5.0  # seconds


class _Taken(Enum):
    """A run id already used by another run."""

    TAKEN = "taken"


def new_run_id(now: datetime) -> str:
    """Sortable and short enough to type: ``20261128T143012-3fa2c1``."""
    return f"{now.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"


class SqlStore(ScheduleStore, OutboxStore, FireStore, PoolStore, MappingStore, LivenessStore):
    """``patience``: seconds a call waits for a database that is down or busy before it raises
    ``DatabaseUnavailable`` (None: forever); ``patient()`` makes the calls of one thread wait
    forever (daemons and foreground runs: see ``retry.py``). ``clock`` stamps what it writes."""

    def __init__(
        self,
        url: str,
        *,
        patience: float | None = 60.0,
        clock: Clock = SYSTEM_CLOCK,
        open_now: bool = True,
        reached: Path | None = None,
    ) -> None:
        self.url = url
        self.clock = clock
        self.notice_listeners = []
        try:
            self.engine: Engine = _make_engine(url)
        except (ArgumentError, ImportError) as exc:
            raise ConfigError(f"database URL {url!r}: {exc}") from None
        # the schema is made current by the first call (now, unless not ``open_now``); SQLite may
        # answer "locked" at once while another process switches a new file to WAL or migrates
        # it: that waits like any busy transaction
        prepare = partial(schema.prepare, self.engine, url)
        self.patience = Patience(self.engine, patience, clock, prepare=prepare, reached=ReachedServers(reached))
        self._session = sessionmaker(self.engine, expire_on_commit=False)
        self._write = sessionmaker(self.engine.execution_options(nbsched_write=True), expire_on_commit=False)
        if open_now:
            self.open()

    def open(self, seconds: float | None = None) -> None:
        """Reach the database and make its schema current now, waiting ``seconds`` at most for a
        database that is away (default: this store's patience)."""
        if seconds is None:
            self.patience.run(_nothing)
            return
        with self.patience.patient(seconds):
            self.patience.run(_nothing)

    def patient(self, while_waiting: Callable[[], None] | None = None) -> AbstractContextManager[None]:
        """Within it, this thread's calls wait for the database for as long as it takes, calling
        ``while_waiting()`` between tries."""
        return self.patience.patient(None, while_waiting=while_waiting)

    def close(self) -> None:
        self.engine.dispose()

    # -- pipelines --------------------------------------------------------------------
    @retried
    def save_pipeline(self, name: str, spec: dict[str, Any], source_path: str | None) -> int:
        """Store ``spec`` as the pipeline's newest version unless it equals the current one."""
        with self._write() as s, s.begin():
            serialize(s, f"pipeline:{name}")
            latest = s.scalars(
                select(PipelineRow).where(PipelineRow.name == name).order_by(PipelineRow.version.desc()).limit(1)
            ).first()
            if latest is not None and latest.spec == spec and latest.source_path == source_path:
                return latest.version
            version = (latest.version + 1) if latest else 1
            s.add(
                PipelineRow(name=name, version=version, spec=spec, source_path=source_path, created_at=self.clock.now())
            )
            return version

    @retried
    def get_pipeline(self, name: str, version: int | None = None) -> PipelineRecord:
        with self._session() as s:
            q = select(PipelineRow).where(PipelineRow.name == name)
            q = q.where(PipelineRow.version == version) if version else q.order_by(PipelineRow.version.desc())
            row = s.scalars(q.limit(1)).first()
            if row is None:
                raise NotFound(f"pipeline '{name}'" + (f" version {version}" if version else "") + " not found")
            return _pipeline_record(row)

    @retried
    def list_pipelines(self) -> list[PipelineRecord]:
        """The newest version of every pipeline, by name."""
        with self._session() as s:
            newest = (
                select(PipelineRow.name, func.max(PipelineRow.version).label("v")).group_by(PipelineRow.name).subquery()
            )
            rows = s.scalars(
                select(PipelineRow)
                .join(newest, (PipelineRow.name == newest.c.name) & (PipelineRow.version == newest.c.v))
                .order_by(PipelineRow.name)
            )
            return [_pipeline_record(r) for r in rows]

    @retried
    def pipeline_versions(self, name: str) -> list[PipelineRecord]:
        with self._session() as s:
            return [
                _pipeline_record(r)
                for r in s.scalars(select(PipelineRow).where(PipelineRow.name == name).order_by(PipelineRow.version))
            ]

    @retried
    def delete_pipeline(self, name: str) -> bool:
        """Forget a pipeline's versions and schedules; its past runs stay readable."""
        from nbsched.store.models import ScheduleRow
        from nbsched.store.schedules import _bump

        with self._write() as s, s.begin():
            gone = changed(s, delete(PipelineRow).where(PipelineRow.name == name))
            if gone and changed(s, delete(ScheduleRow).where(ScheduleRow.pipeline == name)):
                _bump(s)
            return bool(gone)

    # -- runs -------------------------------------------------------------------------
    def create_run(
        self,
        *,
        pipeline: str,
        version: int,
        params: Mapping[str, Any],
        logical_date: datetime,
        trigger: RunTrigger,
        tasks: Mapping[str, int],
        schedule_id: int | None = None,
        max_active_runs: int | None = None,
        owner: str | None = None,
        fire: tuple[int, str, dict[str, Any]] | None = None,
        selection: Mapping[str, Any] | None = None,
        lent: Mapping[str, Mapping[str, Any]] | None = None,
        pools: Mapping[str, str] | None = None,
        max_active_tasks: int | None = None,
        instances: Mapping[str, tuple[str, int, dict[str, Any]]] | None = None,
    ) -> str | None:
        """Create a queued run and its pending task runs (``tasks``: name -> max tries, in order).

        Returns None when the schedule already has a run for ``logical_date``: the UNIQUE
        (schedule_id, logical_date) constraint makes racing schedulers create it once. An event
        schedule's run passes ``fire`` (schedule id, event key, what fired it) instead of a
        ``schedule_id``: None when that event already fired (UNIQUE schedule and key). A partial
        run passes its ``selection`` ({"tasks": [...], "borrowed": {task: run id}}): the tasks
        outside it start skipped, those of ``lent`` holding the outputs they lend downstream.
        ``pools``: the pool each task's tries take a slot of; ``max_active_tasks``: the pipeline's
        cap on its running tasks. ``instances``: the rows of ``tasks`` that are instances of a
        mapped task, each (its task, its index, its values).
        """
        fields = {
            "pipeline": pipeline,
            "pipeline_version": version,
            "params": dict(params),
            "logical_date": logical_date,
            "trigger": trigger,
            "schedule_id": schedule_id,
            "max_active_runs": max_active_runs,
            "owner": owner,
            "fired_by": {"schedule_id": fire[0], **fire[2]} if fire is not None else None,
            "selection": dict(selection) if selection is not None else None,
            "max_active_tasks": max_active_tasks,
        }
        while True:
            # the id is chosen before the transaction, so that a retry after a commit that was lost
            # with its connection finds the run it made rather than making a second
            made = self.patience.run(
                self._insert_run, new_run_id(self.clock.now()), fields, tasks, fire, lent, pools or {}, instances or {}
            )
            if made is not _Taken.TAKEN:
                return made

    def _insert_run(
        self,
        run_id: str,
        fields: dict[str, Any],
        tasks: Mapping[str, int],
        fire: tuple[int, str, dict[str, Any]] | None,
        lent: Mapping[str, Mapping[str, Any]] | None = None,
        pools: Mapping[str, str] | None = None,
        instances: Mapping[str, tuple[str, int, dict[str, Any]]] | None = None,
    ) -> str | _Taken | None:
        now = self.clock.now()
        try:
            with self._write() as s, s.begin():
                s.add(RunRow(id=run_id, state=RunState.QUEUED, created_at=now, **fields))
                s.flush()
                if fire is not None:  # first: a second daemon's insert fails here, before the tasks
                    s.add(FireRow(schedule_id=fire[0], key=fire[1], run_id=run_id, created_at=now))
                    s.flush()
                chosen = set(fields["selection"]["tasks"]) if fields["selection"] else set(tasks)
                instances = instances or {}
                s.add_all(
                    TaskRunRow(
                        run_id=run_id,
                        task=name,
                        mapped_from=instances[name][0] if name in instances else None,
                        map_index=instances[name][1] if name in instances else None,
                        instance_params=instances[name][2] if name in instances else None,
                        position=i,
                        state=TaskState.PENDING if name in chosen else TaskState.SKIPPED,
                        try_number=0,
                        max_tries=tries,
                        outputs=dict((lent or {}).get(name, {})),
                        error=None if name in chosen else NOT_SELECTED,
                        pool=(pools or {}).get(name),
                        updated_at=now,
                    )
                    for i, (name, tries) in enumerate(tasks.items())
                )
        except IntegrityError:
            if fire is not None:  # that event fired: by an earlier attempt of ours whose commit was lost, or another
                return run_id if self.fired_run(fire[0], fire[1]) == run_id else None
            if fields["schedule_id"] is not None:
                return None  # that schedule's run for that date exists
            with self._session() as s:
                row = s.get(RunRow, run_id)
                mine = row is not None and all(getattr(row, k) == v for k, v in fields.items() if k != "logical_date")
            return run_id if mine else _Taken.TAKEN  # made by an earlier attempt, or another run's id: a new one
        return run_id

    @retried
    def start_run(self, run_id: str, notices: Iterable[Notice] = ()) -> bool:
        """queued -> running, unless its pipeline already has ``max_active_runs`` running runs;
        ``notices`` are written with the change (see ``outbox.py``)."""
        with self._write() as s, s.begin():
            run = s.get(RunRow, run_id, with_for_update=True)
            if run is None or run.state not in RUN.guard(RunState.RUNNING):
                return False
            if run.max_active_runs:
                serialize(s, f"active-runs:{run.pipeline}")  # the count below stays true until commit
                active = (
                    s.scalar(
                        select(func.count())
                        .select_from(RunRow)
                        .where(RunRow.pipeline == run.pipeline, RunRow.state == RunState.RUNNING)
                    )
                    or 0
                )
                if active >= run.max_active_runs:
                    return False
            run.state, run.started_at, run.host = RunState.RUNNING, self.clock.now(), HOST
            self._add_notices(s, run_id, notices)
            return True

    @retried
    def set_run_state(
        self,
        run_id: str,
        state: RunState,
        *,
        expect: Iterable[RunState] | None = None,
        notices: Iterable[Notice] = (),
        **fields: Any,
    ) -> bool:
        """One transition of one run, from the states of ``expect`` (None: any the table allows),
        with the ``notices`` it causes."""
        values: dict[str, Any] = {"state": state, **fields}
        if state is RunState.RUNNING:
            values.setdefault("started_at", self.clock.now())
            values.setdefault("host", HOST)
        if state.finished:
            values.setdefault("ended_at", self.clock.now())
        q = update(RunRow).where(RunRow.id == run_id, RunRow.state.in_(RUN.guard(state, expect)))
        with self._write() as s, s.begin():
            if changed(s, q.values(**values)) != 1:
                return False
            self._add_notices(s, run_id, notices)
            return True

    @retried
    def set_task_state(
        self, run_id: str, task: str, state: TaskState, *, expect: Iterable[TaskState] | None = None, **fields: Any
    ) -> bool:
        """One transition of one task, from the states of ``expect`` (None: any the table allows)."""
        now = self.clock.now()
        values: dict[str, Any] = {"state": state, "updated_at": now, **fields}
        if state is TaskState.QUEUED:
            values.setdefault("queued_at", now)
        elif state is TaskState.RUNNING:
            values.setdefault("started_at", now)
            values.setdefault("host", HOST)
            values.setdefault("ended_at", None)
        elif state.finished or state is TaskState.UP_FOR_RETRY:
            values.setdefault("ended_at", now)
        q = update(TaskRunRow).where(
            TaskRunRow.run_id == run_id, TaskRunRow.task == task, TaskRunRow.state.in_(TASK.guard(state, expect))
        )
        with self._write() as s, s.begin():
            return changed(s, q.values(**values)) == 1

    @retried
    def set_run_owner(self, run_id: str, owner: str | None) -> bool:
        """Keep a queued or running run to one foreground runner (None: any daemon may take it)."""
        with self._write() as s, s.begin():
            return (
                changed(
                    s, update(RunRow).where(RunRow.id == run_id, RunRow.state.in_(_UNFINISHED_RUN)).values(owner=owner)
                )
                == 1
            )

    @retried
    def cancel_run(self, run_id: str, error: str) -> bool:
        """End a queued or running run ``cancelled`` with every unfinished task, in one transaction.
        Runners executing its tasks notice and stop their kernels."""
        now = self.clock.now()
        with self._write() as s, s.begin():
            done = changed(
                s,
                update(RunRow)
                .where(RunRow.id == run_id, RunRow.state.in_(RUN.guard(RunState.CANCELLED)))
                .values(state=RunState.CANCELLED, error=error, ended_at=now),
            )
            if not done:
                return False
            s.execute(
                update(TaskRunRow)
                .where(TaskRunRow.run_id == run_id, TaskRunRow.state.in_(TASK.guard(TaskState.CANCELLED)))
                .values(state=TaskState.CANCELLED, error=error, failure=None, ended_at=now, updated_at=now, cell=None)
            )
            s.execute(
                update(TaskTryRow)
                .where(TaskTryRow.run_id == run_id, TaskTryRow.state.in_(TASK.guard(TaskState.CANCELLED, _RUNNING)))
                .values(state=TaskState.CANCELLED, error=error, ended_at=now)
            )
            return True

    @retried
    def retry_run(
        self,
        run_id: str,
        tries: Mapping[str, int],
        *,
        tasks: Iterable[str] | None = None,
        params: Mapping[str, Any] | None = None,
        repair: Mapping[str, Any] | None = None,
        selection: Mapping[str, Any] | None = None,
    ) -> list[str]:
        """Re-queue a finished run's failed, upstream_failed and cancelled tasks (each keeping
        the overrides it ran with), or (a repair) the ``tasks`` named, whatever they ended in,
        with ``params`` as their overrides (those of an earlier repair go: a repair's values are
        its own) and ``repair`` appended to the run's record of repairs. Each gets
        ``tries[task]`` more tries; the others keep their state, outputs and tries. A partial
        run's repair writes its ``selection`` anew (the tasks it re-runs are selected). Returns the
        tasks reset."""
        now = self.clock.now()
        chosen = None if tasks is None else set(tasks)
        with self._write() as s, s.begin():
            run = s.get(RunRow, run_id, with_for_update=True)
            if run is None:
                raise NotFound(f"run '{run_id}' not found")
            if run.state not in RUN.guard(RunState.QUEUED):
                return []
            leaving = _RETRIED if chosen is None else TASK.guard(TaskState.PENDING)
            q = select(TaskRunRow).where(TaskRunRow.run_id == run_id, TaskRunRow.state.in_(leaving))
            if chosen is not None:
                q = q.where(TaskRunRow.task.in_(chosen))
            names = []
            for t in s.scalars(q.order_by(TaskRunRow.position, TaskRunRow.map_index)):
                names.append(t.task)
                t.state, t.max_tries, t.owner = TaskState.PENDING, t.try_number + tries.get(t.task, 1), None
                t.error, t.failure, t.next_try_at, t.branch, t.updated_at = None, None, None, None, now
                if chosen is not None:  # it runs again: what it recorded before goes, its notebooks stay
                    t.outputs, t.params = {}, dict(params) if params else None
            if not names:
                return []
            if run.started_at is not None and run.ended_at is not None:  # it starts again: keep when it ran
                run.past_spans = [*(run.past_spans or []), [run.started_at.isoformat(), run.ended_at.isoformat()]]
            run.state, run.error, run.started_at, run.ended_at, run.owner = RunState.QUEUED, None, None, None, None
            run.sla_missed_at = None  # it starts again: its sla runs again, and is reported again
            if repair is not None:
                run.repairs = [*(run.repairs or []), {"at": now.isoformat(), **repair}]
            if selection is not None:
                run.selection = dict(selection)
            return names

    # -- claiming and fencing ---------------------------------------------------------------
    @retried
    def claim_tasks(self, runner_id: str, limit: int, run_ids: Iterable[str] | None = None) -> list[ClaimedTask]:
        """Atomically take up to ``limit`` queued tasks of running runs: those of ``run_ids`` (a
        foreground run) or, without it, of runs no foreground process keeps to itself.
        PostgreSQL: FOR UPDATE SKIP LOCKED; SQLite: the write lock taken at BEGIN IMMEDIATE."""
        if limit <= 0:
            return []
        claimable = TASK.guard(TaskState.RUNNING, [TaskState.QUEUED])
        q = (
            select(TaskRunRow, RunRow.pipeline, RunRow.max_active_tasks)
            .join(RunRow, RunRow.id == TaskRunRow.run_id)
            .where(TaskRunRow.state.in_(claimable), RunRow.state == RunState.RUNNING)
            .order_by(TaskRunRow.queued_at, TaskRunRow.id)
            .limit(limit + CLAIM_LOOKAHEAD)  # tasks waiting for a slot must not hide those that may run
            .with_for_update(skip_locked=True, of=TaskRunRow)
        )
        if run_ids is not None:
            q = q.where(RunRow.id.in_(list(run_ids)), RunRow.owner == runner_id)
        else:
            q = q.where(RunRow.owner.is_(None))
        claimed: list[ClaimedTask] = []
        with self._write() as s, s.begin():
            candidates = s.execute(q).all()
            room = _Room(s, candidates)
            # its start is read once the locks are held: a try that ended while this claim waited for
            # its pool's lock ended before this one starts, in the recorded times too
            now = self.clock.now()
            for row, pipeline, cap in candidates:
                if len(claimed) == limit:
                    break
                gone = row.pool if row.pool in room.gone else None
                if gone is None and not room.take(row.pool, pipeline, cap):
                    continue  # its pool's slots, or its pipeline's max_active_tasks, are all taken
                ok = changed(
                    s,
                    update(TaskRunRow)
                    .where(TaskRunRow.id == row.id, TaskRunRow.state.in_(claimable))
                    .values(
                        state=TaskState.RUNNING,
                        owner=runner_id,
                        host=HOST,
                        started_at=now,
                        ended_at=None,
                        updated_at=self._clock(),
                    ),
                )  # the reaper's guard for a try no heartbeat covers yet
                if ok:
                    s.add(
                        TaskTryRow(
                            run_id=row.run_id,
                            task=row.task,
                            try_number=row.try_number,
                            state=TaskState.RUNNING,
                            runner=runner_id,
                            host=HOST,
                            started_at=now,
                        )
                    )
                    claimed.append(
                        ClaimedTask(run_id=row.run_id, task=row.task, try_number=row.try_number, pool_gone=gone)
                    )
        return claimed

    @retried
    def release_claim(self, run_id: str, task: str, *, owner: str, try_number: int) -> bool:
        """Put back a try this runner holds but never started (its claim committed while the
        connection was lost, so the runner never heard of it): queued again, for any runner."""
        with self._write() as s, s.begin():
            if not changed(
                s,
                update(TaskRunRow)
                .where(
                    *try_of(run_id, task, owner, try_number),
                    TaskRunRow.state.in_(TASK.guard(TaskState.QUEUED, _RUNNING)),
                )
                .values(state=TaskState.QUEUED, owner=None, started_at=None, updated_at=self.clock.now()),
            ):
                return False
            s.execute(
                delete(TaskTryRow).where(
                    TaskTryRow.run_id == run_id, TaskTryRow.task == task, TaskTryRow.try_number == try_number
                )
            )
            return True

    @retried
    def finish_task(
        self,
        run_id: str,
        task: str,
        *,
        owner: str,
        try_number: int,
        state: TaskState,
        notices: Iterable[Notice] = (),
        publish: Callable[[], str | None] | None = None,
        **fields: Any,
    ) -> bool:
        """Record how a try ended, only if this runner still owns that very try (a runner paused
        past its lease must not overwrite what the retry did), with the ``notices`` it causes.
        ``publish()`` makes the try's output the task's, under the same fence, before the
        commit, and returns the path to record (see ``nbsched.outputs``; it must be idempotent:
        a transaction is run again after a lost connection)."""
        now = self.clock.now()
        leaving = TASK.guard(state, _RUNNING)
        with self._write() as s, s.begin():
            this_try = try_of(run_id, task, owner, try_number)
            if not changed(
                s,
                update(TaskRunRow)
                .where(*this_try, TaskRunRow.state.in_(leaving))
                .values(state=state, ended_at=now, updated_at=now, cell=None, **fields),
            ):
                return False
            if publish is not None:  # the row is this try's and locked until the commit
                s.execute(update(TaskRunRow).where(*this_try).values(output_path=publish()))
            ended = {"state": state, "ended_at": now, "error": fields.get("error"), "failure": fields.get("failure")}
            if fields.get("host"):
                ended["host"] = fields["host"]  # where it ran, when not here (a Dask worker)
            s.execute(
                update(TaskTryRow)
                .where(TaskTryRow.run_id == run_id, TaskTryRow.task == task, TaskTryRow.try_number == try_number)
                .values(**ended)
            )
            self._add_notices(s, run_id, notices)
            return True

    @retried
    def keep_cancelled_notebook(
        self, run_id: str, task: str, *, owner: str, try_number: int, publish: Callable[[], str | None]
    ) -> bool:
        """A try stopped because its run was cancelled (``cancel_run`` ended its task): its runner
        still makes the try's notebook, marked where it stopped, the task's; fenced as ``finish_task``."""
        with self._write() as s, s.begin():
            this_try = (*try_of(run_id, task, owner, try_number), TaskRunRow.state == TaskState.CANCELLED)
            if s.scalar(select(TaskRunRow.id).where(*this_try).with_for_update()) is None:
                return False
            s.execute(update(TaskRunRow).where(*this_try).values(output_path=publish()))
            return True

    @retried
    def record_cells(self, owner: str, cells: Iterable[tuple[str, str, int, dict[str, Any]]]) -> None:
        """Note the cell each of ``owner``'s running tries is on: ``(run, task, try, cell)``,
        in one transaction; fenced like ``finish_task``."""
        with self._write() as s, s.begin():
            for run_id, task, try_number, cell in cells:
                s.execute(
                    update(TaskRunRow)
                    .where(*try_of(run_id, task, owner, try_number), TaskRunRow.state == TaskState.RUNNING)
                    .values(cell=cell)
                )

    @retried
    def owned_tasks_still_running(self, runner_id: str) -> set[tuple[str, str, int]]:
        """(run, task, try) of the tasks this runner owns that the database still has running."""
        with self._session() as s:
            rows = s.execute(
                select(TaskRunRow.run_id, TaskRunRow.task, TaskRunRow.try_number).where(
                    TaskRunRow.owner == runner_id, TaskRunRow.state == TaskState.RUNNING
                )
            ).all()
            return {(r, t, n) for r, t, n in rows}

    @retried
    def latest_success(self, pipeline: str, task: str) -> tuple[str, dict[str, Any]] | None:
        """The run of ``pipeline`` in which ``task`` last succeeded, and what it recorded there."""
        q = (
            select(TaskRunRow.run_id, TaskRunRow.outputs)
            .join(RunRow, RunRow.id == TaskRunRow.run_id)
            .where(RunRow.pipeline == pipeline, TaskRunRow.task == task, TaskRunRow.state == TaskState.SUCCESS)
            .order_by(TaskRunRow.ended_at.desc(), TaskRunRow.id.desc())
            .limit(1)
        )
        with self._session() as s:
            found = s.execute(q).first()
            return (found[0], dict(found[1] or {})) if found is not None else None

    @retried
    def get_run(self, run_id: str, *, with_tries: bool = False, tasks: Collection[str] | None = None) -> RunRecord:
        """A run and its tasks; ``with_tries``: each task's tries too (for people, not the runner);
        ``tasks``: only these tasks' rows (a mapped task's: its instances), so what a runner
        reads for one task does not grow with the run."""
        with self._session() as s:
            row = s.get(RunRow, run_id)
            if row is None:
                raise NotFound(f"run '{run_id}' not found")
            q = select(TaskRunRow).where(TaskRunRow.run_id == run_id)
            if tasks is None:
                rows = list(s.scalars(q.order_by(TaskRunRow.position, TaskRunRow.map_index)))
            elif names := list(tasks):  # by name, and a mapped task's instances: two index lookups
                rows = [  # (one query with an OR of both scanned every row of the run)
                    *s.scalars(q.where(TaskRunRow.task.in_(names))),
                    *s.scalars(q.where(TaskRunRow.mapped_from.in_(names))),
                ]
                rows.sort(key=lambda t: (t.position, -1 if t.map_index is None else t.map_index))
            else:
                rows = []
            return _run_record(row, rows, _tries(s, [run_id]) if with_tries else {})

    @retried
    def task_versions(
        self, run_ids: Collection[str], states: Collection[TaskState] | None = None
    ) -> dict[str, dict[str, TaskVersion]]:
        """The version of each task row of these runs (only of those in ``states``), by run and
        task: three small columns, from which a runner knows the rows that changed since it read
        them without reading them."""
        out: dict[str, dict[str, TaskVersion]] = {run_id: {} for run_id in run_ids}
        if not run_ids:
            return out
        q = select(
            TaskRunRow.run_id, TaskRunRow.task, TaskRunRow.state, TaskRunRow.try_number, TaskRunRow.updated_at
        ).where(TaskRunRow.run_id.in_(list(run_ids)))
        if states is not None:
            q = q.where(TaskRunRow.state.in_(list(states)))
        with self._session() as s:
            for run_id, task, state, try_number, updated_at in s.execute(q):
                out[run_id][task] = TaskVersion(state, try_number, updated_at)
        return out

    @retried
    def task_counts(self, run_ids: Collection[str]) -> dict[str, Counter[TaskState]]:
        """How many task rows of each run are in each state (counted by the database)."""
        out: dict[str, Counter[TaskState]] = {run_id: Counter() for run_id in run_ids}
        if not run_ids:
            return out
        with self._session() as s:
            for run_id, state, count in s.execute(
                select(TaskRunRow.run_id, TaskRunRow.state, func.count())
                .where(TaskRunRow.run_id.in_(list(run_ids)))
                .group_by(TaskRunRow.run_id, TaskRunRow.state)
            ):
                out[run_id][state] = count
        return out

    @retried
    def list_runs(
        self,
        *,
        pipeline: str | None = None,
        state: RunState | None = None,
        states: Iterable[RunState] | None = None,
        ids: Iterable[str] | None = None,
        unowned: bool = False,
        limit: int | None = 20,
        oldest_first: bool = False,
        since: datetime | None = None,
        until: datetime | None = None,
        before: tuple[datetime, str] | None = None,
        with_tries: bool = False,
        tasks: bool = True,
    ) -> list[RunRecord]:
        """Runs, newest first (or oldest first); ``before`` (created_at, id) continues a page;
        ``tasks=False``: the runs alone, their ``tasks`` left empty."""
        with self._session() as s:
            order = (RunRow.created_at, RunRow.id) if oldest_first else (RunRow.created_at.desc(), RunRow.id.desc())
            q = select(RunRow).order_by(*order).limit(limit)
            if pipeline:
                q = q.where(RunRow.pipeline == pipeline)
            if state:
                q = q.where(RunRow.state == state)
            if states is not None:
                q = q.where(RunRow.state.in_(list(states)))
            if ids is not None:
                q = q.where(RunRow.id.in_(list(ids)))
            if unowned:
                q = q.where(RunRow.owner.is_(None))
            if since is not None:
                q = q.where(RunRow.created_at >= since)
            if until is not None:
                q = q.where(RunRow.created_at < until)
            if before is not None:
                at, run_id = before
                q = q.where(or_(RunRow.created_at < at, (RunRow.created_at == at) & (RunRow.id < run_id)))
            rows = s.scalars(q).all()
            by_run: dict[str, list[TaskRunRow]] = {r.id: [] for r in rows}
            if rows and tasks:
                for t in s.scalars(
                    select(TaskRunRow)
                    .where(TaskRunRow.run_id.in_(list(by_run)))
                    .order_by(TaskRunRow.position, TaskRunRow.map_index)
                ):
                    by_run[t.run_id].append(t)
            tries = _tries(s, list(by_run)) if with_tries and rows else {}
            return [_run_record(r, by_run[r.id], tries) for r in rows]


class _Room:
    """The free slots of the pools and the room under the ``max_active_tasks`` of the pipelines
    that ``candidates`` (claim rows) need, counted inside the claim's transaction: each pool and
    pipeline is locked first (PostgreSQL; SQLite's write lock already serializes claims), in
    sorted order, so two claims never both see the last slot free and never deadlock."""

    def __init__(self, s: Session, candidates: Sequence[Row[TaskRunRow, str, int | None]]) -> None:
        pools = sorted({row.pool for row, _, _ in candidates if row.pool})
        capped = sorted({pipeline for _, pipeline, cap in candidates if cap})
        for key in [f"pool:{p}" for p in pools] + [f"active-tasks:{p}" for p in capped]:
            serialize(s, key)
        self.free: dict[str, int] = {}
        self.gone: set[str] = set()  # pools named that no longer exist: their tries are claimed to be failed
        self.active: dict[str, int] = {}
        if pools:
            # .all(): a Result has keys(), which dict() would take it for a mapping by
            slots = dict(s.execute(select(PoolRow.name, PoolRow.slots).where(PoolRow.name.in_(pools))).all())
            running = dict(
                s.execute(
                    select(TaskRunRow.pool, func.count())
                    .where(TaskRunRow.pool.in_(pools), TaskRunRow.state == TaskState.RUNNING)
                    .group_by(TaskRunRow.pool)
                ).all()
            )
            self.free = {p: slots[p] - running.get(p, 0) for p in pools if p in slots}
            self.gone = {p for p in pools if p not in slots}
        if capped:
            self.active = dict(
                s.execute(
                    select(RunRow.pipeline, func.count())
                    .join(TaskRunRow, TaskRunRow.run_id == RunRow.id)
                    .where(RunRow.pipeline.in_(capped), TaskRunRow.state == TaskState.RUNNING)
                    .group_by(RunRow.pipeline)
                ).all()
            )

    def take(self, pool: str | None, pipeline: str, cap: int | None) -> bool:
        if pool is not None and self.free.get(pool, 0) <= 0:
            return False
        if cap and self.active.get(pipeline, 0) >= cap:
            return False
        if pool is not None:
            self.free[pool] -= 1
        if cap:
            self.active[pipeline] = self.active.get(pipeline, 0) + 1
        return True


def _pipeline_record(row: PipelineRow) -> PipelineRecord:
    return PipelineRecord(
        name=row.name, version=row.version, spec=row.spec, source_path=row.source_path, created_at=row.created_at
    )


def _tries(s: Session, run_ids: list[str]) -> dict[tuple[str, str], tuple[TaskTryRecord, ...]]:
    """The tries of these runs' tasks, by (run, task), oldest first."""
    out: dict[tuple[str, str], list[TaskTryRecord]] = {}
    for t in s.scalars(
        select(TaskTryRow)
        .where(TaskTryRow.run_id.in_(run_ids))
        .order_by(TaskTryRow.run_id, TaskTryRow.task, TaskTryRow.try_number)
    ):
        out.setdefault((t.run_id, t.task), []).append(
            TaskTryRecord(
                try_number=t.try_number,
                state=t.state,
                runner=t.runner,
                host=t.host,
                error=t.error,
                failure=t.failure,
                started_at=t.started_at,
                ended_at=t.ended_at,
            )
        )
    return {key: tuple(tries) for key, tries in out.items()}


def _task_record(t: TaskRunRow, tries: tuple[TaskTryRecord, ...] = ()) -> TaskRunRecord:
    return TaskRunRecord(
        task=t.task,
        state=t.state,
        try_number=t.try_number,
        max_tries=t.max_tries,
        owner=t.owner,
        host=t.host,
        error=t.error,
        failure=t.failure,
        output_path=t.output_path,
        outputs=t.outputs or {},
        branch=t.branch,
        cell=t.cell,
        queued_at=t.queued_at,
        started_at=t.started_at,
        ended_at=t.ended_at,
        next_try_at=t.next_try_at,
        mapped_from=t.mapped_from,
        map_index=t.map_index,
        instance_params=t.instance_params,
        pool=t.pool,
        params=t.params,
        warnings=tuple(t.warnings or ()),
        tries=tries,
        updated_at=t.updated_at,
    )


def _run_record(
    row: RunRow, tasks: Iterable[TaskRunRow], tries: Mapping[tuple[str, str], tuple[TaskTryRecord, ...]] | None = None
) -> RunRecord:
    return RunRecord(
        id=row.id,
        pipeline=row.pipeline,
        pipeline_version=row.pipeline_version,
        params=row.params or {},
        logical_date=row.logical_date,
        trigger=row.trigger,
        # an event schedule's run keeps the schedule in fired_by: runs.schedule_id is the key of time fires
        schedule_id=row.schedule_id if row.schedule_id is not None else (row.fired_by or {}).get("schedule_id"),
        max_active_runs=row.max_active_runs,
        owner=row.owner,
        state=row.state,
        host=row.host,
        error=row.error,
        created_at=row.created_at,
        started_at=row.started_at,
        ended_at=row.ended_at,
        tasks={t.task: _task_record(t, (tries or {}).get((row.id, t.task), ())) for t in tasks},
        sla_missed_at=row.sla_missed_at,
        fired_by=row.fired_by,
        repairs=tuple(row.repairs or ()),
        past_spans=tuple((datetime.fromisoformat(a), datetime.fromisoformat(b)) for a, b in row.past_spans or ()),
        selection=row.selection,
        max_active_tasks=row.max_active_tasks,
    )


def _nothing() -> None:
    """A call that only reaches the database (and makes its schema current, the first time)."""


def _make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # SQLite waits for another writer's lock this long in one try; longer waits are retries
        # (retry.py), bounded by the caller's patience rather than by this
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT})
        _sqlite_setup(engine)
        return engine
    # a server that does not answer (stopped, partitioned) fails a connection in 10 s, which is
    # then retried like a refused one, rather than hanging on the operating system's timeout
    args = {} if "connect_timeout" in url else {"connect_timeout": 10}
    return create_engine(url, pool_pre_ping=True, connect_args=args)


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below)
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT * 1000)}")
        # WAL: readers in other processes see runs as they go. Switching needs a lock, so only
        # the first connection to a new database does it (it stays WAL in the file).
        if cur.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Writers lock at BEGIN, so two writers queue on busy_timeout instead of one
        # failing later with "database is locked" on a read-to-write upgrade.
        immediate = conn.get_execution_options().get("nbsched_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
