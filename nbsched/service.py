"""The facade every surface calls: the CLI, the REST API, the magics and the panel.

Surfaces never touch the store, the runner or the executors directly; they get views
(``nbsched.views``) back.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from nbsched.clock import utcnow
from nbsched.config import Config, DaemonOptions
from nbsched.daemon import Daemon
from nbsched.errors import (
    ConfigError,
    Conflict,
    DatabaseUnavailable,
    NbschedError,
    NotFound,
    ScheduleError,
    SpecError,
)
from nbsched.events import FilesTrigger, Fire, after_cycle, event_from_fields, is_event
from nbsched.fanout import task_of
from nbsched.notices import Notice, is_url, notices_for
from nbsched.notify_checks import checked, send_tests
from nbsched.params import task_parameters
from nbsched.pool_use import pool_users, refusal, removal
from nbsched.reporting import output_notebook, run_page, task_html, write_run_report
from nbsched.runner import Runner
from nbsched.schedule_changes import TRIGGER_KEYS, changed_trigger
from nbsched.scheduler import Scheduler, scan_files, schedule_trigger
from nbsched.selection import (
    Selection,
    chosen_rows,
    chosen_tasks,
    lend_instances,
    refuse_removed,
    repaired_selection,
    run_rows,
)
from nbsched.sender import Delivery, Sender
from nbsched.spec import (
    MAX_NAME,
    NAME_RE,
    PipelineSpec,
    check_notebooks,
    confine_notebooks,
    load_pipeline,
    parse_pipeline,
    schedule_fields,
    spec_file,
)
from nbsched.states import NotifyEvent, RunState, RunTrigger, ScheduleOrigin, TaskState
from nbsched.store import PipelineRecord, RunRecord, ScheduleRecord, SqlStore
from nbsched.store.records import NoticeRecord, PoolRecord
from nbsched.targets import shown_target
from nbsched.timefmt import when
from nbsched.triggers import get_zone, trigger_from_fields
from nbsched.views import NoticeView, PipelineDetail, PipelineView, PoolView, RunView, ScheduleView, TaskView

log = logging.getLogger("nbsched.notify")
MAX_POOL_SLOTS = 10_000
FLUSH_NOTIFICATIONS = 10.0
_NOT_TRIGGER = frozenset(
    {"enabled", "params", "max_active_runs", "catchup", "misfire_grace"}
)  # seconds a foreground run gives its notifications at its end


class Service:
    """Register pipelines, schedule them, run them and read what they did."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._store: SqlStore | None = None
        self._daemon: Daemon | None = None  # set when this process also runs the daemon

    @property
    def store(self) -> SqlStore:
        if self._store is None:
            # reached by the first call that needs it: a server can start while its database is away
            self._store = SqlStore(
                self.config.db_url, patience=self.config.db_patience, open_now=False, reached=self.config.reached_file
            )
        return self._store

    def open_database(self, seconds: float) -> None:
        """Reach the database now (and make its schema current), waiting ``seconds`` at most."""
        self.store.open(seconds)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()

    # -- pipelines ------------------------------------------------------------------------
    def validate(
        self,
        path: str | Path,
        params: Mapping[str, Any] | None = None,
        *,
        confine_to: Path | None = None,
        shown: str | None = None,
    ) -> PipelineSpec:
        """Load and check a spec, its notebooks, its schedules and its parameter templates. With
        ``confine_to``, every notebook must lie inside that folder (checked before one is read);
        errors name the file as ``shown`` (default: ``path``)."""
        spec = load_pipeline(path, root=confine_to, shown=shown)
        try:
            _dry_render(spec, params or {}, self.config.runs_dir, utcnow())
        except SpecError as exc:
            raise SpecError(f"{spec_file(path, shown)[1]}: {exc}") from None
        self._check_pools(spec, spec_file(path, shown)[1])
        return checked(spec, spec_file(path, shown)[1], self.config, utcnow(), remote=False)

    def _check_pools(self, spec: PipelineSpec, source: str) -> None:
        """Every pool a task names exists (``nbsched pool set``)."""
        named = {t.pool for t in spec.tasks.values() if t.pool}
        if not named:
            return
        known = {p.name for p in self.store.list_pools(sorted(named))}
        for task in spec.tasks.values():
            if task.pool and task.pool not in known:
                raise SpecError(
                    f"{source}: tasks.{task.name}.pool: unknown pool '{task.pool}' "
                    f"(create it with: nbsched pool set {task.pool} SLOTS)"
                )

    def register(
        self, path: str | Path, *, now: datetime | None = None, confine_to: Path | None = None, shown: str | None = None
    ) -> tuple[PipelineSpec, int, list[int]]:
        """Store the spec as the pipeline's newest version and make its ``schedules:`` current.
        Returns the spec, its version and the ids of its schedules. With ``confine_to``, every
        notebook must lie inside that folder, now and whenever a try reads it."""
        spec = self.validate(path, confine_to=confine_to, shown=shown)
        now = now or utcnow()
        rows, spec = self._spec_schedules(spec, spec_file(path, shown)[1], now)
        version = self._save(spec)
        ids = self.store.sync_spec_schedules(spec.name, rows)
        self._changed()
        return spec, version, ids

    def register_spec(
        self,
        data: Any,
        base_dir: Path,
        *,
        source: str = "spec",
        now: datetime | None = None,
        confine_to: Path | None = None,
    ) -> tuple[PipelineSpec, int, list[int]]:
        """Register a spec given as data (not a file); notebook paths are relative to ``base_dir``."""
        spec = parse_pipeline(data, base_dir=Path(base_dir).resolve(), source=source)
        if confine_to is not None:
            spec = confine_notebooks(spec, confine_to, source)  # before any notebook is read
        spec = replace(spec, warnings=tuple(check_notebooks(spec, source=source)))
        self._check_pools(spec, source)
        now = now or utcnow()
        _dry_render(spec, {}, self.config.runs_dir, now)
        # a spec confined to a server's root came over REST, perhaps from someone the operator
        # does not trust: its notification URLs are held to what the operator allows
        spec = checked(spec, source, self.config, now, remote=confine_to is not None)
        rows, spec = self._spec_schedules(spec, source, now)
        version = self._save(spec)
        ids = self.store.sync_spec_schedules(spec.name, rows)
        self._changed()
        return spec, version, ids

    def _spec_schedules(
        self, spec: PipelineSpec, source: str, now: datetime
    ) -> tuple[list[dict[str, Any]], PipelineSpec]:
        """The store's rows of a spec's ``schedules:``, and the spec with a warning for each
        ``after`` naming a pipeline not registered (yet); an ``after`` that closes a cycle is an error."""
        rows, warnings = [], []
        kept = [
            s for s in self.store.list_schedules() if s.pipeline != spec.name or s.origin is not ScheduleOrigin.SPEC
        ]
        known = {p.name for p in self.store.list_pipelines()} | {spec.name}
        for i, schedule in enumerate(spec.schedules):
            where = f"schedules[{i}]"
            try:
                row = self._schedule_row(spec, schedule.fields, now, where=where, others=kept)
            except ScheduleError as exc:
                raise ScheduleError(f"{source}: {exc}") from None
            upstream = row["trigger"].get("after")
            if upstream is not None and upstream not in known:
                warnings.append(f"{source}: {where}.after: no pipeline '{upstream}' is registered (yet)")
            rows.append(row)
        return rows, replace(spec, warnings=(*spec.warnings, *warnings))

    def _schedule_row(
        self,
        spec: PipelineSpec,
        fields: Mapping[str, Any],
        now: datetime,
        *,
        where: str = "schedule",
        others: list[ScheduleRecord] | None = None,
        scan: bool = True,
    ) -> dict[str, Any]:
        """A schedule's row; for a files schedule, the files already there as ``seen`` (unless
        ``existing``); for an after schedule, checked against the cycles it would close among
        ``others`` (default: every schedule stored)."""
        pipeline = spec.name
        row = schedule_fields(fields, now=now, where=where, pipeline=pipeline, folder=spec.base_dir, root=spec.root)
        trigger = row["trigger"]
        if "after" in trigger:
            waits_for: dict[str, set[str]] = {pipeline: {trigger["after"]}}
            for other in self.store.list_schedules() if others is None else others:
                if "after" in other.trigger:
                    waits_for.setdefault(other.pipeline, set()).add(other.trigger["after"])
            cycle = after_cycle(pipeline, waits_for)
            if cycle:
                raise ScheduleError(f"{where}.after: {' -> '.join(cycle)} is a cycle (each runs after the next)")
        if scan and "files" in trigger and not trigger["existing"]:
            files = event_from_fields(trigger)
            assert isinstance(files, FilesTrigger)
            row["seen"] = [found.key for found in scan_files(files)]
        return row

    def list_pipelines(self) -> list[PipelineView]:
        counts = Counter(s.pipeline for s in self.store.list_schedules())
        return [PipelineView.of(p, _snapshot_spec(p), schedules=counts[p.name]) for p in self.store.list_pipelines()]

    def pipeline_names(self) -> list[str]:
        return [p.name for p in self.store.list_pipelines()]

    def pipeline(self, name: str) -> PipelineView:
        """A pipeline's newest version, in short."""
        record = self.store.get_pipeline(name)
        return PipelineView.of(record, _snapshot_spec(record), schedules=len(self.store.list_schedules(pipeline=name)))

    def pipeline_detail(self, name: str) -> PipelineDetail:
        """A pipeline with its DAG, its versions and its schedules."""
        record = self.store.get_pipeline(name)
        spec, schedules = _snapshot_spec(record), self.list_schedules(name)
        return PipelineDetail(
            pipeline=PipelineView.of(record, spec, schedules=len(schedules)),
            spec=spec,
            versions=tuple((p.version, p.created_at) for p in self.store.pipeline_versions(name)),
            schedule_list=tuple(schedules),
        )

    def delete_pipeline(self, name: str) -> None:
        active = self.store.list_runs(pipeline=name, states=[RunState.QUEUED, RunState.RUNNING], limit=1)
        if active:
            raise Conflict(f"pipeline '{name}' has a {active[0].state.value} run ({active[0].id}); cancel it first")
        if not self.store.delete_pipeline(name):
            raise NotFound(f"pipeline '{name}' not found")
        self._changed()

    def _save(self, spec: PipelineSpec) -> int:
        # "root": the folder the runner confines each try's notebook to. A pipeline registered
        # through the server has the server's root (its notebooks are files of the server, and a
        # file may be swapped for a symlink after registering); one the CLI or a notebook registered
        # has none: those are the user's own files, run with the user's own rights.
        snapshot = {"raw": spec.raw, "base_dir": str(spec.base_dir), "root": str(spec.root) if spec.root else None}
        return self.store.save_pipeline(spec.name, snapshot, str(spec.source) if spec.source else None)

    def pipeline_spec_for_run(self, run_id: str) -> PipelineSpec:
        return self.spec_of(self.store.get_run(run_id))

    def spec_of(self, run: RunRecord) -> PipelineSpec:
        """The spec a run was created with (its pipeline version's snapshot)."""
        return self._spec(run.pipeline, run.pipeline_version)

    def _spec(self, pipeline: str, version: int | None = None) -> PipelineSpec:
        return _snapshot_spec(self.store.get_pipeline(pipeline, version))

    # -- runs -----------------------------------------------------------------------------
    def run_pipeline(
        self,
        path: str | Path,
        *,
        params: Mapping[str, Any] | None = None,
        workers: int | None = None,
        logical_date: datetime | None = None,
        listener: Callable[..., None] | None = None,
        on_created: Callable[[str, PipelineSpec], None] | None = None,
        only: Iterable[str] | None = None,
        start: str | None = None,
    ) -> RunView:
        """Run a pipeline here and now, to its end (or Ctrl-C). Returns the finished run. A partial
        run runs the tasks of ``only``, or ``start`` and everything downstream of it; the values
        its tasks need from the others come from the latest run in which each succeeded."""
        overrides = dict(params or {})
        spec = self.validate(path, overrides)  # a bad spec or override fails here, before a run exists
        selection = self._selection(spec, only, start)
        now = utcnow()
        with self._foreground(workers, listener) as runner:  # so do bad settings: before a version is saved
            version = self._save(spec)
            run_id = self._create_run(
                spec,
                version,
                overrides,
                logical_date or now,
                RunTrigger.MANUAL,
                owner=runner.id,
                selection=selection,
            )
            assert run_id is not None
            if on_created is not None:
                on_created(run_id, spec)
            with self._sending([run_id]):
                runner.run([run_id])
        return self.get_run(run_id)

    def _selection(self, spec: PipelineSpec, only: Iterable[str] | None, start: str | None) -> Selection | None:
        """A partial run's selection, and the rows and outputs its other tasks lend: what each
        recorded in the latest run in which it succeeded (a mapped task: every instance of it)."""
        if only is None and start is None:
            return None
        if only is not None and start is not None:
            raise ConfigError("--only and --from: give one of them")
        names = list(only) if only is not None else [start or ""]
        option = "--only" if only is not None else "--from"
        chosen = set(chosen_tasks(spec, names, downstream=start is not None, option=option))
        rows, instances = run_rows(spec)
        borrowed: dict[str, str] = {}
        lent: dict[str, dict[str, Any]] = {}
        for name, needed in ((n, up) for n in spec.order if n in chosen for up in spec.tasks[n].upstream):
            if needed in chosen or needed in borrowed:
                continue
            missing = ConfigError(
                f"{option}: task '{name}' needs the values of '{needed}', which never succeeded in a run of "
                f"{spec.name} (run it first, or select it too)"
            )
            if spec.tasks[needed].fanout is None:
                if (one := self.store.latest_success(spec.name, needed)) is None:
                    raise missing
                borrowed[needed], lent[needed] = one
                continue
            if (found := self.store.latest_instances(spec.name, needed)) is None:
                raise missing
            borrowed[needed] = found[0]
            rows = lend_instances(rows, instances, lent, needed, found[1])
        given = {"only": names} if only is not None else {"from": start}  # as asked, for people
        return Selection(
            {"tasks": [row for row in rows if task_of(row) in chosen], "borrowed": borrowed, **given},
            lent,
            (rows, instances),
        )

    def trigger(
        self,
        pipeline: str,
        params: Mapping[str, Any] | None = None,
        logical_date: datetime | None = None,
        *,
        only: Iterable[str] | None = None,
        start: str | None = None,
    ) -> str:
        """Queue a run of a registered pipeline for `nbsched serve`; returns its id. ``only`` and
        ``start``: a partial run, as ``run_pipeline``'s."""
        spec = self._spec(pipeline)
        _dry_render(spec, params or {}, self.config.runs_dir, utcnow())
        self._check_pools(spec, f"pipeline {pipeline}")  # a pool removed since it was registered
        run_id = self._create_run(
            spec,
            self.store.get_pipeline(pipeline).version,
            dict(params or {}),
            logical_date or utcnow(),
            RunTrigger.MANUAL,
            selection=self._selection(spec, only, start),
        )
        assert run_id is not None
        self._changed()
        return run_id

    def backfill(
        self,
        pipeline: str,
        start: str | datetime,
        end: str | datetime,
        *,
        schedule_id: int | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> tuple[list[str], int]:
        """Queue one run per fire time of the pipeline's schedule in [start, end]. Dates that
        already have a run are left alone. Returns the new run ids and how many existed."""
        schedules = self.store.list_schedules(pipeline=pipeline)
        if schedule_id is not None:
            schedules = [s for s in schedules if s.id == schedule_id]
        if len(schedules) != 1:
            raise ConfigError(
                f"backfill {pipeline}: "
                + (
                    "it has no schedule (add one with `nbsched schedule add`)"
                    if not schedules
                    else f"it has {len(schedules)} schedules; choose one with --schedule "
                    f"({', '.join(str(s.id) for s in schedules)})"
                )
            )
        sched = schedules[0]
        zone = get_zone(sched.trigger.get("timezone", "UTC"))
        start, end = _moment(start, zone, "--start"), _moment(end, zone, "--end", end_of_day=True)
        if end < start:
            raise ConfigError(f"backfill {pipeline}: --end {end.isoformat()} is before --start {start.isoformat()}")
        trigger = schedule_trigger(sched)
        spec, version = self._spec(pipeline), self.store.get_pipeline(pipeline).version
        merged = {**sched.params, **(params or {})}
        created, existing = [], 0
        at = trigger.next_after(start - timedelta(microseconds=1))
        while at is not None and at <= end:
            run_id = self._create_run(
                spec,
                version,
                merged,
                at,
                RunTrigger.BACKFILL,
                schedule_id=sched.id,
                max_active_runs=sched.max_active_runs,
            )
            if run_id is None:
                existing += 1
            else:
                created.append(run_id)
            at = trigger.next_after(at)
        self._changed()
        return created, existing

    def run_queued(
        self, run_ids: list[str], *, workers: int | None = None, listener: Callable[..., None] | None = None
    ) -> list[RunView]:
        """Execute already-queued runs here (e.g. a backfill), oldest first, to their end."""
        with self._foreground(workers, listener) as runner:
            for run_id in run_ids:
                self.store.set_run_owner(run_id, runner.id)
            with self._sending(run_ids):  # as a run of its own: no daemon may be there to send them
                runner.run(run_ids)
        return [self.get_run(r) for r in run_ids]

    def cancel(self, run_id: str) -> RunView:
        run = self.store.get_run(run_id)
        if not self.store.cancel_run(run_id, "cancelled by user"):
            raise Conflict(f"run '{run_id}' has already ended ({self.store.get_run(run_id).state.value})")
        return self.get_run(run.id)

    def retry(
        self,
        run_id: str,
        tasks: Iterable[str] | None = None,
        *,
        downstream: bool = False,
        params: Mapping[str, Any] | None = None,
    ) -> list[str]:
        """Re-queue a failed or cancelled run's failed, upstream_failed and cancelled tasks; or
        repair a finished run: re-run the ``tasks`` named (any state they ended in) and, with
        ``downstream``, every task downstream of them, with ``params`` overriding for those tasks
        only. The other tasks keep their results. Returns the tasks re-queued."""
        run = self.store.get_run(run_id)
        spec = self.spec_of(run)
        tries = {row: spec.tasks[task_of(row)].max_tries for row in run.tasks}
        if tasks is None:
            if params or downstream:
                raise ConfigError("retry: -p and --downstream go with --task (the tasks to re-run)")
            queued = self.store.retry_run(run_id, tries)
            if not queued:
                raise Conflict(f"run '{run_id}' is {run.state.value}: only failed or cancelled runs can be retried")
            self._changed()
            return queued
        tasks = list(tasks)
        refuse_removed(tasks, {n: t.error or "" for n, t in run.tasks.items() if t.state is TaskState.REMOVED}, run_id)
        chosen = chosen_rows(spec, list(run.tasks), tasks, downstream)
        if not run.state.finished:
            raise Conflict(f"run '{run_id}' is {run.state.value}: wait for it to end (or cancel it) to repair it")
        _dry_render(spec, {**run.params, **(params or {})}, self.config.runs_dir, run.logical_date)
        selection = repaired_selection(spec, run_id, run.selection, list(run.tasks), chosen) if run.selection else None
        repair = {"tasks": list(tasks), "downstream": downstream, "params": dict(params or {})}
        queued = self.store.retry_run(run_id, tries, tasks=chosen, params=params, repair=repair, selection=selection)
        if not queued:
            raise Conflict(f"run '{run_id}' changed meanwhile: it is no longer finished")
        self._changed()
        return queued

    # -- notifications ------------------------------------------------------------------------
    def list_notifications(self, run_id: str | None = None, limit: int = 100) -> list[NoticeView]:
        """The newest notifications first, of one run with ``run_id``."""
        if run_id is not None:
            self.store.get_run(run_id)  # NotFound for a run that does not exist
        now = utcnow()
        notices = self.store.list_notices(run_id=run_id, limit=limit)
        return [NoticeView.of(n, shown_target(n.target), now) for n in notices]

    def notify_test(self, pipeline: str, event: NotifyEvent = NotifyEvent.FAILURE) -> list[tuple[str, bool, str]]:
        """Send a test message of ``event`` to each target the pipeline's spec notifies of it,
        about a made-up run; ``(target, delivered, answer)`` each."""
        return send_tests(self._spec(pipeline), event, self.config, utcnow(), self.config.notify_seconds)

    def _notice_refusal(self, notice: NoticeRecord) -> str | None:
        """Why a notification's URL may not be reached now: the allow-list of where its spec
        came from (a spec registered over REST keeps the server's root), checked again as it is
        sent (a name resolves anew, the list may have changed since the spec was registered)."""
        if not is_url(notice.target):
            return None
        try:
            if notice.run_id is not None:
                run = self.store.get_run(notice.run_id, tasks=())
                record: PipelineRecord | None = self.store.get_pipeline(run.pipeline, run.pipeline_version)
            else:
                record = self.store.get_pipeline(notice.pipeline or "")
        except NotFound:
            record = None  # its pipeline is gone: held to the strictest
        remote = record is None or bool(record.spec.get("root"))
        return self.config.notify_policy(remote=remote).refusal(notice.target)

    def get_run(self, run_id: str) -> RunView:
        """A run with its tasks and tries; a queued task waiting for its pool says how full it is."""
        record = self.store.get_run(run_id, with_tries=True)
        return RunView.of(record, self._pools_waited_for([record]))

    def _pools_waited_for(self, runs: list[RunRecord]) -> dict[str, PoolRecord]:
        """The pools the queued tasks of ``runs`` take a slot of, to say how full each is."""
        waiting = sorted({t.pool for r in runs for t in r.tasks.values() if t.pool and t.state is TaskState.QUEUED})
        return {p.name: p for p in self.store.list_pools(waiting)} if waiting else {}

    # -- pools ------------------------------------------------------------------------------
    def set_pool(self, name: str, slots: int) -> tuple[PoolView, bool]:
        """Create a pool of ``slots`` or change its slots; the pool and whether it is new."""
        if isinstance(name, str) and len(name) > MAX_NAME:
            raise ConfigError(f"pool {name[:20]!r}...: {len(name):,} characters (a name has at most {MAX_NAME})")
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            raise ConfigError(
                f"pool {name!r}: use lower-case letters, digits, '_' and '-', starting with a letter or digit"
            )
        if isinstance(slots, bool) or not isinstance(slots, int) or not 1 <= slots <= MAX_POOL_SLOTS:
            raise ConfigError(f"pool {name}: slots {slots!r}: expected a whole number from 1 to {MAX_POOL_SLOTS:,}")
        new = self.store.set_pool(name, slots)
        self._changed()
        (pool,) = self.store.list_pools([name])
        return PoolView.of(pool), new

    def list_pools(self) -> list[PoolView]:
        return [PoolView.of(p) for p in self.store.list_pools()]

    def get_pool(self, name: str) -> PoolView:
        found = self.store.list_pools([name])
        if not found:
            raise NotFound(f"pool '{name}' not found")
        return PoolView.of(found[0])

    def remove_pool(self, name: str, *, force: bool = False) -> str:
        """Remove a pool that no registered pipeline's newest version and no unfinished task
        names; with ``force``, whatever names it: its waiting tries then fail at once, as will the
        tries of those pipelines' next runs. Returns what the removal left, in one line."""
        self.get_pool(name)  # NotFound first
        named = pool_users(name, ((p.name, _snapshot_spec(p)) for p in self.store.list_pipelines()))
        using = self.store.pool_use(name)
        if (named or using) and not force:
            raise Conflict(refusal(name, named, using))
        failing = self.store.delete_pool(name, force=True) if force else self.store.delete_pool(name)
        self._changed()
        return removal(name, named, using if failing else {})

    def list_runs(
        self,
        *,
        pipeline: str | None = None,
        state: str | None = None,
        limit: int = 20,
        since: datetime | None = None,
        until: datetime | None = None,
        before: tuple[datetime, str] | None = None,
    ) -> list[RunView]:
        records = self.store.list_runs(
            pipeline=pipeline,
            state=RunState(state) if state else None,
            limit=limit,
            since=since,
            until=until,
            before=before,
            with_tries=True,
        )
        pools = self._pools_waited_for(records)
        return [RunView.of(r, pools) for r in records]

    def task_output(self, run_id: str, task: str) -> TaskView:
        run = self.store.get_run(run_id)
        if task not in run.tasks:
            raise NotFound(f"run '{run_id}' has no task '{task}'")
        return TaskView.of(run.tasks[task])

    def task_notebook(self, run_id: str, task: str) -> Path:
        """The executed notebook of a task's last try. Only ever a file in the runs folder: the
        path comes from the database, and the file may have become a symlink since it was written."""
        t = self.task_output(run_id, task)
        if not t.output_path or not Path(t.output_path).is_file():
            raise NotFound(f"task '{task}' of run '{run_id}' has no output notebook (it is {t.state.value})")
        notebook = Path(t.output_path).resolve()
        if not notebook.is_relative_to(self.config.runs_dir.resolve()):
            raise NotFound(f"task '{task}' of run '{run_id}': its output notebook is not in the runs folder")
        return notebook

    def task_report(self, run_id: str, task: str, *, hide_code: bool = False) -> Path:
        """The task's HTML report (nbconvert), made on first request and kept beside the notebook."""
        return task_html(self.task_notebook(run_id, task), hide_code=hide_code)

    def run_report(self, run_id: str, *, hide_code: bool = False) -> Path:
        """Write the run's report into its folder: each task's HTML report beside its notebook (a
        mapped task's instances link their notebooks), and ``index.html`` (``index.nocode.html``
        with ``hide_code``) with the DAG, the timeline and the tasks, linking them relatively.
        Returns the index page."""
        run = self.get_run(run_id)
        outputs = [Path(t.output_path).parent for t in run.tasks.values() if t.output_path]
        folder = outputs[0] if outputs else self.config.runs_dir / run.pipeline / run.id
        # a mapped task's instances link their notebooks: an HTML report each (nbconvert, 0.4 s and
        # 300 KB apiece) made 500 instances a 3-minute, 150 MB report; the server makes one on request
        files = {
            name: (None if t.mapped_from else self.task_report(run_id, name, hide_code=hide_code), notebook)
            for name, t in run.tasks.items()
            if (notebook := output_notebook(t))
        }
        return write_run_report(
            run, self._spec_kept(run), folder, files, hide_code=hide_code, now=utcnow(), home=self.config.home
        )

    def run_report_page(self, run_id: str, task_links: Callable[[str], Mapping[str, str]]) -> str:
        """The run's report page, not written anywhere; ``task_links(task)`` gives ``{label: href}``
        for each task that has an output notebook (the REST API links its own task routes, whose
        reports are made on request)."""
        run = self.get_run(run_id)
        links = {n: task_links(n) for n, t in run.tasks.items() if output_notebook(t)}
        return run_page(run, self._spec_kept(run), links, now=utcnow(), home=self.config.home)

    def _spec_kept(self, run: RunView) -> PipelineSpec | None:
        """The spec of the run's pipeline version; None when the pipeline was deleted (its runs stay)."""
        try:
            return self._spec(run.pipeline, run.pipeline_version)
        except NotFound:
            return None

    def update_schedule(
        self, schedule_id: int, changes: Mapping[str, Any], *, now: datetime | None = None
    ) -> ScheduleView:
        """Change some fields of a schedule (as in ``add_schedule``); a new trigger restarts its fire times."""
        current = self.store.get_schedule(schedule_id)
        now = now or utcnow()
        if "pipeline" in changes:
            raise ScheduleError("schedule.pipeline: cannot be changed (add a new schedule instead)")
        trigger = changed_trigger(current.trigger, changes)
        fields = trigger or {k: v for k, v in current.trigger.items() if k not in ("folder", "root")}
        event = is_event(fields)
        fields.update(params=current.params, max_active_runs=current.max_active_runs, enabled=current.enabled)
        if not event and not is_event(current.trigger):  # a time schedule's own (an event's are defaults)
            fields.update(catchup=current.catchup, misfire_grace=current.misfire_grace)
        fields.update({k: v for k, v in changes.items() if k not in TRIGGER_KEYS})
        spec = self._spec(current.pipeline)
        # only a change of what it looks for looks at the files: a pause or a resume does not
        row = self._schedule_row(spec, fields, now, scan=trigger is not None)
        if row["trigger"] == current.trigger:
            row.pop("seen", None)  # the same files schedule: what it fired and saw stays
            if current.next_fire_at is not None:
                row["next_fire_at"] = current.next_fire_at  # same trigger: keep its place
        if row["enabled"] and not current.enabled and not current.catchup and not event:
            row["next_fire_at"] = trigger_from_fields(row["trigger"], now=current.created_at).next_after(now)
        _dry_render(spec, row["params"], self.config.runs_dir, now)
        self.store.update_schedule(schedule_id, **row)
        self._changed()
        return self.get_schedule(schedule_id)

    def _create_run(
        self,
        spec: PipelineSpec,
        version: int,
        params: Mapping[str, Any],
        logical_date: datetime,
        trigger: RunTrigger,
        *,
        owner: str | None = None,
        schedule_id: int | None = None,
        max_active_runs: int | None = None,
        fire: tuple[int, str, dict[str, Any]] | None = None,
        selection: Selection | None = None,
    ) -> str | None:
        rows, instances = selection.layout if selection is not None else run_rows(spec)
        return self.store.create_run(
            pipeline=spec.name,
            version=version,
            params=params,
            logical_date=logical_date,
            trigger=trigger,
            tasks={row: spec.tasks[instances[row][0] if row in instances else row].max_tries for row in rows},
            instances=instances,
            owner=owner,
            schedule_id=schedule_id,
            max_active_runs=max_active_runs,
            fire=fire,
            selection=selection.chosen if selection is not None else None,
            lent=selection.lent if selection is not None else None,
            pools={row: pool for row in rows if (pool := spec.tasks[task_of(row)].pool) is not None},
            max_active_tasks=spec.max_active_tasks,
        )

    def _missed_notices(self, schedule: ScheduleRecord, skipped: dict[str, Any]) -> list[Notice]:
        try:
            spec = self._spec(schedule.pipeline)
        except NbschedError:
            return []
        return notices_for(spec.notify, NotifyEvent.SCHEDULE_MISSED, detail=skipped)

    def _run_for_schedule(
        self, schedule: ScheduleRecord, logical_date: datetime, kind: RunTrigger, fire: Fire | None = None
    ) -> str | None:
        """The run a schedule's fire time (or, for an event schedule, its event ``fire``) makes."""
        spec = self._spec(schedule.pipeline)
        return self._create_run(
            spec,
            self.store.get_pipeline(schedule.pipeline).version,
            schedule.params,
            logical_date,
            kind,
            schedule_id=schedule.id if fire is None else None,
            max_active_runs=schedule.max_active_runs,
            fire=(schedule.id, fire.key, fire.fired_by) if fire is not None else None,
        )

    @contextmanager
    def _foreground(self, workers: int | None, listener: Callable[..., None] | None) -> Iterator[Runner]:
        from nbsched.executors import make_executor

        config = self.config.with_workers(workers)
        executor = make_executor(config.executor, config.workers, **config.kernels)
        runner = Runner(self.store, executor, self.config.runs_dir, spec_loader=self.spec_of, listener=listener)
        try:
            # a foreground run waits out a lost database too, its kernels running meanwhile
            with self.store.patient(runner.keep_time), runner:
                yield runner
        finally:
            executor.shutdown()

    @contextmanager
    def _sending(self, run_ids: list[str]) -> Iterator[None]:
        """The notifications of a foreground run, sent while it runs; at its end it gives them
        a few seconds, and a daemon sends what is left."""
        sender = Sender(self.store, self.delivery, poll=1.0, run_ids=run_ids).start()
        try:
            yield
        except BaseException:  # Ctrl-C, a database gone while stopping: no waiting for notifications
            sender.stop(timeout=0)
            raise
        try:
            # never longer than that, whatever the database or the services do meanwhile
            with self.store.patience.patient(FLUSH_NOTIFICATIONS):
                sender.finish(FLUSH_NOTIFICATIONS)
        except DatabaseUnavailable as exc:
            log.warning("notifications of run %s left to a daemon: %s", ", ".join(run_ids), exc)

    # -- schedules ------------------------------------------------------------------------
    def add_schedule(self, pipeline: str, fields: Mapping[str, Any], *, now: datetime | None = None) -> ScheduleView:
        """``fields`` as in a spec's ``schedules:`` entry (cron/every/at/after/files, timezone, params, ...)."""
        spec = self._spec(pipeline)
        now = now or utcnow()
        row = self._schedule_row(spec, fields, now)
        _dry_render(spec, row["params"], self.config.runs_dir, now)
        schedule_id = self.store.add_schedule(pipeline=pipeline, origin=ScheduleOrigin.CLI, **row)
        self._changed()
        return self.get_schedule(schedule_id)

    def get_schedule(self, schedule_id: int) -> ScheduleView:
        return ScheduleView.of(self.store.get_schedule(schedule_id))

    def list_schedules(self, pipeline: str | None = None) -> list[ScheduleView]:
        return [ScheduleView.of(s) for s in self.store.list_schedules(pipeline=pipeline)]

    def pause(self, schedule_id: int) -> ScheduleView:
        return self.update_schedule(schedule_id, {"enabled": False})

    def resume(self, schedule_id: int, *, now: datetime | None = None) -> ScheduleView:
        """Enable again. With catchup the fires missed while paused get runs; without, the
        schedule goes on from now."""
        return self.update_schedule(schedule_id, {"enabled": True}, now=now)

    def remove_schedule(self, schedule_id: int) -> None:
        if not self.store.delete_schedule(schedule_id):
            raise NotFound(f"schedule {schedule_id} not found")
        self._changed()

    # -- the daemon -----------------------------------------------------------------------
    def daemon(self, options: DaemonOptions) -> Daemon:
        from nbsched.executors import make_executor

        config = self.config.with_workers(options.workers)
        executor = make_executor(config.executor, config.workers, **config.kernels)
        runner = Runner(
            self.store,
            executor,
            self.config.runs_dir,
            spec_loader=self.spec_of,
            kind="serve",
            lease=options.lease,
            poll=options.poll,
        )
        scheduler = Scheduler(self.store, self._run_for_schedule, self._missed_notices) if options.scheduler else None
        # woken by this process's notifications, and by the daemon's loop when it finds others
        # due (a retry's time come, another process's): its thread polls nothing itself
        sender = Sender(self.store, self.delivery, poll=None)
        sender.tell_file_problem()  # now, once: not at every notification
        self._daemon = Daemon(runner, scheduler, options, sender)
        return self._daemon

    @property
    def delivery(self) -> Delivery:
        """How this project's notifications reach people (see ``sender.py``)."""
        return Delivery(
            config_file=self.config.notify_file,
            public_url=self.config.report_url,
            report=self.run_report,
            timeout=self.config.notify_seconds,
            refusal=self._notice_refusal,
        )

    def _changed(self) -> None:
        """Wake an in-process daemon at once; daemons elsewhere see the change on their next poll."""
        if self._daemon is not None:
            self._daemon.wake()


def _moment(value: str | datetime, zone: Any, option: str, *, end_of_day: bool = False) -> datetime:
    try:
        return when(value, zone, end_of_day=end_of_day)
    except ValueError:
        raise ConfigError(f"{option} {value!r}: not a date (use 2026-11-01 or 2026-11-01T06:00)") from None


def _snapshot_spec(record: PipelineRecord) -> PipelineSpec:
    """The spec a pipeline version was registered with."""
    snap = record.spec
    spec = parse_pipeline(snap["raw"], base_dir=Path(snap["base_dir"]), source=f"{record.name} v{record.version}")
    return replace(spec, root=Path(snap["root"])) if snap.get("root") else spec


def _dry_render(spec: PipelineSpec, params: Mapping[str, Any], runs_dir: Path, now: datetime) -> None:
    from nbsched.templates import budget

    _, instances = run_rows(spec)
    first = {values[0]: row for row, values in reversed(instances.items())}  # each mapped task's first instance
    with budget():  # one for the whole spec: its templates render once per task
        for task in spec.tasks.values():
            sample: dict[str, Any] | None = None  # a mapped task renders with its first values
            if task.name in first:
                sample = instances[first[task.name]][2]
            elif task.fanout is not None and task.fanout.as_name is not None:
                sample = {task.fanout.as_name: None}  # its list is known at run time only
            task_parameters(
                spec,
                task,
                overrides=params,
                run_id="validate",
                logical_date=now,
                run_dir=str(runs_dir / spec.name / "validate"),
                upstream={},
                instance=sample,
            )
