"""The facade every surface calls (CLI now; server, magics and widgets later).

Surfaces never touch the store, the runner or the executors directly.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping
from urllib.parse import quote

from nbsched.clock import utcnow
from nbsched.daemon import Daemon, DaemonOptions
from nbsched.dag import RunState
from nbsched.errors import ConfigError, Conflict, NotFound, ScheduleError, SpecError
from nbsched.params import task_parameters
from nbsched.report import dag_svg, gantt_svg, run_report_html
from nbsched.runner import Runner
from nbsched.scheduler import Scheduler, schedule_trigger
from nbsched.spec import (MAX_ACTIVE_RUNS, SCHEDULE_KEYS, PipelineSpec, check_notebooks, confine_notebooks, load_pipeline,
                          parse_duration, parse_pipeline, spec_file)
from nbsched.store import PipelineRecord, RunRecord, ScheduleRecord, SqlStore
from nbsched.timefmt import when
from nbsched.triggers import get_zone, trigger_from_fields

DEFAULT_HOME = ".nbsched"
DEFAULT_RUNS = "nbsched-runs"
DEFAULT_MISFIRE_GRACE = 600.0  # a fire up to 10 minutes late still runs (e.g. the daemon restarted)


@dataclass(frozen=True, kw_only=True)
class Config:
    """Where state and outputs live and how much runs at once.

    Default layout of a project folder: the database in ``.nbsched/``, the executed notebooks and
    reports in ``nbsched-runs/``. The outputs are kept out of the hidden folder because Jupyter
    refuses to open hidden files (``ContentsManager.allow_hidden`` is off by default), and they are
    what people open. An explicit ``home`` keeps both in it (outputs in ``<home>/runs``).
    """

    home: Path
    db_url: str
    runs_dir: Path
    workers: int | None  # tries at once; None: the executor's own default (the cores, a cluster's threads)
    executor: str = "local"  # local, dask, dask://HOST:PORT
    kernel_pool: bool = True  # local kernels started ahead of need (each still used for one task)
    kernel_fork: bool = True  # local kernels forked from a process with ipykernel imported
    kernel_preload: tuple[str, ...] = ()  # modules that process imports too (with kernel_fork)
    # seconds a command waits for a database that is down or busy before it gives up in one line
    # (None: forever, as `serve` does); daemons and foreground runs wait forever whatever this says
    db_patience: float | None = 60.0

    def __post_init__(self) -> None:
        from nbsched.executors import check_workers, executor_address

        # a ConfigError names what is wrong, before anything starts
        executor_address(self.executor)
        if self.workers is not None:
            check_workers(self.executor, self.workers)

    def with_workers(self, workers: int | None) -> Config:
        """This config with another worker count (checked), or itself for None."""
        return self if workers is None else replace(self, workers=workers)

    @property
    def kernels(self) -> dict[str, Any]:
        """How the local executor starts kernels (``make_executor``'s keywords)."""
        return {"pool": self.kernel_pool, "fork": self.kernel_fork, "preload": self.kernel_preload}

    @classmethod
    def resolve(cls, *, project: str | Path | None = None, home: str | Path | None = None,
                db_url: str | None = None, runs_dir: str | Path | None = None,
                workers: int | None = None, executor: str | None = None, kernel_pool: bool = True,
                kernel_fork: bool = True, kernel_preload: Iterable[str] = ()) -> Config:
        folder = Path(project or ".").absolute()
        home_path = Path(home).absolute() if home else folder / DEFAULT_HOME
        default_runs = home_path / "runs" if home else folder / DEFAULT_RUNS
        return cls(
            home=home_path,
            db_url=db_url or f"sqlite:///{home_path / 'nbsched.db'}",
            runs_dir=Path(runs_dir).absolute() if runs_dir else default_runs,
            workers=workers or None,
            executor=executor or "local",
            kernel_pool=kernel_pool,
            kernel_fork=kernel_fork,
            kernel_preload=tuple(kernel_preload),
        )

    @classmethod
    def discover(cls, start: Path) -> Config:
        """For code running inside a project (a notebook's kernel): ``NBSCHED_HOME``,
        ``NBSCHED_DB_URL`` and ``NBSCHED_RUNS_DIR`` (a Jupyter server with the extension sets the
        last two for its kernels), else the project at or above ``start`` that has a ``.nbsched/``
        folder (a Jupyter server keeps one in its root), else ``start`` itself."""
        env = {k: os.environ.get(f"NBSCHED_{k.upper()}") or None for k in ("home", "db_url", "runs_dir")}
        project = None
        if not env["home"]:
            project = next((d for d in (start, *start.parents) if (d / DEFAULT_HOME).is_dir()), start)
        return cls.resolve(project=project, **env)


class Service:
    def __init__(self, config: Config) -> None:
        self.config = config
        self._store: SqlStore | None = None
        self._daemon: Daemon | None = None  # set when this process also runs the daemon

    @property
    def store(self) -> SqlStore:
        if self._store is None:
            self._store = SqlStore(self.config.db_url, patience=self.config.db_patience)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()

    # -- pipelines ------------------------------------------------------------------------
    def validate(self, path: str | Path, params: Mapping[str, Any] | None = None, *, confine_to: Path | None = None,
                 shown: str | None = None) -> PipelineSpec:
        """Load and check a spec, its notebooks, its schedules and its parameter templates. With
        ``confine_to``, every notebook must lie inside that folder (checked before one is read);
        errors name the file as ``shown`` (default: ``path``)."""
        spec = load_pipeline(path, root=confine_to, shown=shown)
        now = utcnow()
        try:
            _dry_render(spec, params or {}, self.config.runs_dir, now)
            for i, sched in enumerate(spec.schedules):
                schedule_fields(sched.fields, now=now, where=f"schedules[{i}]")
        except (SpecError, ScheduleError) as exc:
            raise SpecError(f"{spec_file(path, shown)[1]}: {exc}") from None
        return spec

    def register(self, path: str | Path, *, now: datetime | None = None, confine_to: Path | None = None,
                 shown: str | None = None) -> tuple[PipelineSpec, int, list[int]]:
        """Store the spec as the pipeline's newest version and make its ``schedules:`` current.
        Returns the spec, its version and the ids of its schedules. With ``confine_to``, every
        notebook must lie inside that folder, now and whenever a try reads it."""
        spec = self.validate(path, confine_to=confine_to, shown=shown)
        version = self._save(spec)
        now = now or utcnow()
        rows = [schedule_fields(s.fields, now=now) for s in spec.schedules]
        ids = self.store.sync_spec_schedules(spec.name, rows)
        self._changed()
        return spec, version, ids

    def register_spec(self, data: Any, base_dir: Path, *, source: str = "spec", now: datetime | None = None,
                      confine_to: Path | None = None) -> tuple[PipelineSpec, int, list[int]]:
        """Register a spec given as data (not a file); notebook paths are relative to ``base_dir``."""
        try:
            spec = parse_pipeline(data, base_dir=Path(base_dir).resolve(), source=source)
            if confine_to is not None:
                spec = confine_notebooks(spec, confine_to, source)  # before any notebook is read
            spec = replace(spec, warnings=tuple(check_notebooks(spec, source=source)))
            now = now or utcnow()
            _dry_render(spec, {}, self.config.runs_dir, now)
            rows = [schedule_fields(s.fields, now=now, where=f"schedules[{i}]") for i, s in enumerate(spec.schedules)]
        except ScheduleError as exc:
            raise SpecError(f"{source}: {exc}") from None
        version = self._save(spec)
        ids = self.store.sync_spec_schedules(spec.name, rows)
        self._changed()
        return spec, version, ids

    def list_pipelines(self) -> list[PipelineRecord]:
        return self.store.list_pipelines()

    def pipeline_versions(self, name: str) -> list[PipelineRecord]:
        versions = self.store.pipeline_versions(name)
        if not versions:
            raise NotFound(f"pipeline '{name}' not found")
        return versions

    def pipeline_spec(self, name: str) -> PipelineSpec:
        return self._spec(name)

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
        record = self.store.get_pipeline(pipeline, version)
        snap = record.spec
        spec = parse_pipeline(snap["raw"], base_dir=Path(snap["base_dir"]), source=f"{record.name} v{record.version}")
        return replace(spec, root=Path(snap["root"])) if snap.get("root") else spec

    # -- runs -----------------------------------------------------------------------------
    def run_pipeline(self, path: str | Path, *, params: Mapping[str, Any] | None = None,
                     workers: int | None = None, logical_date: datetime | None = None,
                     listener: Callable[..., None] | None = None,
                     on_created: Callable[[str, PipelineSpec], None] | None = None) -> RunRecord:
        """Run a pipeline here and now, to its end (or Ctrl-C). Returns the finished run."""
        overrides = dict(params or {})
        spec = self.validate(path, overrides)  # a bad spec or override fails here, before a run exists
        now = utcnow()
        with self._foreground(workers, listener) as runner:  # so do bad settings: before a version is saved
            version = self._save(spec)
            run_id = self._create_run(spec, version, overrides, logical_date or now, "manual", owner=runner.id)
            assert run_id is not None
            if on_created is not None:
                on_created(run_id, spec)
            runner.run([run_id])
        return self.store.get_run(run_id, with_tries=True)

    def trigger(self, pipeline: str, params: Mapping[str, Any] | None = None,
                logical_date: datetime | None = None) -> str:
        """Queue a run of a registered pipeline for `nbsched serve`; returns its id."""
        spec = self._spec(pipeline)
        _dry_render(spec, params or {}, self.config.runs_dir, utcnow())
        run_id = self._create_run(spec, self.store.get_pipeline(pipeline).version, dict(params or {}),
                                  logical_date or utcnow(), "manual")
        assert run_id is not None
        self._changed()
        return run_id

    def backfill(self, pipeline: str, start: str | datetime, end: str | datetime, *,
                 schedule_id: int | None = None, params: Mapping[str, Any] | None = None) -> tuple[list[str], int]:
        """Queue one run per fire time of the pipeline's schedule in [start, end]. Dates that
        already have a run are left alone. Returns the new run ids and how many existed."""
        schedules = self.store.list_schedules(pipeline=pipeline)
        if schedule_id is not None:
            schedules = [s for s in schedules if s.id == schedule_id]
        if len(schedules) != 1:
            raise ConfigError(f"backfill {pipeline}: " + (
                "it has no schedule (add one with `nbsched schedule add`)" if not schedules else
                f"it has {len(schedules)} schedules; choose one with --schedule "
                f"({', '.join(str(s.id) for s in schedules)})"))
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
            run_id = self._create_run(spec, version, merged, at, "backfill", schedule_id=sched.id,
                                      max_active_runs=sched.max_active_runs)
            if run_id is None:
                existing += 1
            else:
                created.append(run_id)
            at = trigger.next_after(at)
        self._changed()
        return created, existing

    def run_queued(self, run_ids: list[str], *, workers: int | None = None,
                   listener: Callable[..., None] | None = None) -> list[RunRecord]:
        """Execute already-queued runs here (e.g. a backfill), oldest first, to their end."""
        with self._foreground(workers, listener) as runner:
            for run_id in run_ids:
                self.store.set_run_owner(run_id, runner.id)
            runner.run(run_ids)
        return [self.store.get_run(r, with_tries=True) for r in run_ids]

    def cancel(self, run_id: str) -> RunRecord:
        run = self.store.get_run(run_id)
        if not self.store.cancel_run(run_id, "cancelled by user"):
            raise Conflict(f"run '{run_id}' has already ended ({self.store.get_run(run_id).state.value})")
        return self.store.get_run(run.id)

    def retry(self, run_id: str) -> list[str]:
        """Re-queue a failed or cancelled run's failed, upstream_failed and cancelled tasks."""
        run = self.store.get_run(run_id)
        spec = self.spec_of(run)
        tasks = self.store.retry_run(run_id, {n: t.max_tries for n, t in spec.tasks.items()})
        if not tasks:
            raise Conflict(f"run '{run_id}' is {run.state.value}: only failed or cancelled runs can be retried")
        self._changed()
        return tasks

    def get_run(self, run_id: str) -> RunRecord:
        return self.store.get_run(run_id, with_tries=True)

    def list_runs(self, *, pipeline: str | None = None, state: str | None = None, limit: int = 20,
                  since: datetime | None = None, until: datetime | None = None,
                  before: tuple[datetime, str] | None = None) -> list[RunRecord]:
        return self.store.list_runs(pipeline=pipeline, state=RunState(state) if state else None, limit=limit,
                                    since=since, until=until, before=before, with_tries=True)

    def task_output(self, run_id: str, task: str) -> tuple[RunRecord, Any]:
        run = self.store.get_run(run_id)
        if task not in run.tasks:
            raise NotFound(f"run '{run_id}' has no task '{task}'")
        return run, run.tasks[task]

    def task_notebook(self, run_id: str, task: str) -> Path:
        """The executed notebook of a task's last try. Only ever a file in the runs folder: the
        path comes from the database, and the file may have become a symlink since it was written."""
        _, t = self.task_output(run_id, task)
        if not t.output_path or not Path(t.output_path).is_file():
            raise NotFound(f"task '{task}' of run '{run_id}' has no output notebook (it is {t.state.value})")
        notebook = Path(t.output_path).resolve()
        if not notebook.is_relative_to(self.config.runs_dir.resolve()):
            raise NotFound(f"task '{task}' of run '{run_id}': its output notebook is not in the runs folder")
        return notebook

    def task_report(self, run_id: str, task: str, *, hide_code: bool = False) -> Path:
        """The task's HTML report (nbconvert), made on first request and kept beside the notebook."""
        notebook = self.task_notebook(run_id, task)
        html = notebook.with_suffix(".nocode.html" if hide_code else ".html")
        if html.is_symlink():  # it is written here and served: never through a link out of the folder
            html.unlink()
        if not html.exists() or html.stat().st_mtime < notebook.stat().st_mtime:
            from nbconvert import HTMLExporter

            body, _ = HTMLExporter(exclude_input=hide_code).from_filename(str(notebook))
            html.write_text(body, encoding="utf-8")
        return html

    def run_report(self, run_id: str, *, hide_code: bool = False) -> Path:
        """Write the run's report into its folder: each task's HTML report (nbconvert) beside its
        notebook, and ``index.html`` (``index.nocode.html`` with ``hide_code``) with the DAG, the
        timeline and the tasks, linking them relatively so the folder can be moved or served as is.
        Returns the index page."""
        run = self.store.get_run(run_id, with_tries=True)
        outputs = [Path(t.output_path).parent for t in run.tasks.values() if t.output_path]
        folder = outputs[0] if outputs else self.config.runs_dir / run.pipeline / run.id
        links: dict[str, dict[str, str]] = {}
        for name, t in run.tasks.items():
            if _has_notebook(t):
                report = self.task_report(run_id, name, hide_code=hide_code)
                links[name] = {"report": _href(report, folder), "notebook": _href(Path(t.output_path), folder)}
        folder.mkdir(parents=True, exist_ok=True)
        index = folder / ("index.nocode.html" if hide_code else "index.html")
        index.write_text(self._report_page(run, links), encoding="utf-8")
        return index

    def run_report_page(self, run_id: str, task_links: Callable[[str], Mapping[str, str]]) -> str:
        """The run's report page, not written anywhere; ``task_links(task)`` gives ``{label: href}``
        for each task that has an output notebook (the REST API links its own task routes, whose
        reports are made on request)."""
        run = self.store.get_run(run_id, with_tries=True)
        return self._report_page(run, {n: task_links(n) for n, t in run.tasks.items() if _has_notebook(t)})

    def _report_page(self, run: RunRecord, links: Mapping[str, Mapping[str, str]]) -> str:
        try:
            spec = self.spec_of(run)
            order, upstream = spec.order, {n: list(spec.tasks[n].upstream) for n in spec.order}
        except NotFound:  # its pipeline was deleted (its runs stay): draw the tasks without edges
            order, upstream = list(run.tasks), {}
        states = {n: t.state.value for n, t in run.tasks.items()}
        times = [(n, t.state.value, t.started_at, t.ended_at) for n, t in run.tasks.items()]
        home = self.config.home
        return run_report_html(run_view(run), dag_svg(order, upstream, states, home=home),
                               gantt_svg(times, now=run.ended_at or utcnow(), home=home), links, home=home)

    def update_schedule(self, schedule_id: int, changes: Mapping[str, Any], *,
                        now: datetime | None = None) -> ScheduleRecord:
        """Change some fields of a schedule (as in ``add_schedule``); a new trigger restarts its fire times."""
        current = self.store.get_schedule(schedule_id)
        now = now or utcnow()
        if "pipeline" in changes:
            raise ScheduleError("schedule.pipeline: cannot be changed (add a new schedule instead)")
        trigger_keys = {"cron", "every", "at", "start", "timezone"}
        fields: dict[str, Any] = {} if trigger_keys & set(changes) else dict(current.trigger)
        fields.update({"params": current.params, "catchup": current.catchup,
                       "misfire_grace": current.misfire_grace, "max_active_runs": current.max_active_runs,
                       "enabled": current.enabled})
        if trigger_keys & set(changes) and "timezone" not in changes:
            fields["timezone"] = current.trigger.get("timezone", "UTC")
        fields.update(changes)
        row = schedule_fields(fields, now=now)
        if row["trigger"] == current.trigger and current.next_fire_at is not None:
            row["next_fire_at"] = current.next_fire_at  # same trigger: keep its place
        if row["enabled"] and not current.enabled and not current.catchup:
            row["next_fire_at"] = schedule_trigger_of(row["trigger"], current.created_at).next_after(now)
        _dry_render(self._spec(current.pipeline), row["params"], self.config.runs_dir, now)
        self.store.update_schedule(schedule_id, **row)
        self._changed()
        return self.store.get_schedule(schedule_id)

    def _create_run(self, spec: PipelineSpec, version: int, params: Mapping[str, Any], logical_date: datetime,
                    trigger: str, *, owner: str | None = None, schedule_id: int | None = None,
                    max_active_runs: int | None = None) -> str | None:
        return self.store.create_run(
            pipeline=spec.name, version=version, params=params, logical_date=logical_date, trigger=trigger,
            tasks={name: spec.tasks[name].max_tries for name in spec.order}, owner=owner,
            schedule_id=schedule_id, max_active_runs=max_active_runs)

    def _run_for_schedule(self, schedule: ScheduleRecord, logical_date: datetime, kind: str) -> str | None:
        spec = self._spec(schedule.pipeline)
        return self._create_run(spec, self.store.get_pipeline(schedule.pipeline).version, schedule.params,
                                logical_date, kind, schedule_id=schedule.id,
                                max_active_runs=schedule.max_active_runs)

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

    # -- schedules ------------------------------------------------------------------------
    def add_schedule(self, pipeline: str, fields: Mapping[str, Any], *, now: datetime | None = None) -> ScheduleRecord:
        """``fields`` as in a spec's ``schedules:`` entry (cron/every/at, timezone, params, ...)."""
        spec = self._spec(pipeline)
        now = now or utcnow()
        row = schedule_fields(fields, now=now)
        _dry_render(spec, row["params"], self.config.runs_dir, now)
        schedule_id = self.store.add_schedule(pipeline=pipeline, origin="cli", **row)
        self._changed()
        return self.store.get_schedule(schedule_id)

    def get_schedule(self, schedule_id: int) -> ScheduleRecord:
        return self.store.get_schedule(schedule_id)

    def list_schedules(self, pipeline: str | None = None) -> list[ScheduleRecord]:
        return self.store.list_schedules(pipeline=pipeline)

    def pause(self, schedule_id: int) -> ScheduleRecord:
        return self.update_schedule(schedule_id, {"enabled": False})

    def resume(self, schedule_id: int, *, now: datetime | None = None) -> ScheduleRecord:
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
        runner = Runner(self.store, executor, self.config.runs_dir, spec_loader=self.spec_of, kind="serve",
                        lease=options.lease, poll=options.poll)
        scheduler = Scheduler(self.store, self._run_for_schedule) if options.scheduler else None
        self._daemon = Daemon(runner, scheduler, options)
        return self._daemon

    def _changed(self) -> None:
        """Wake an in-process daemon at once; daemons elsewhere see the change on their next poll."""
        if self._daemon is not None:
            self._daemon.wake()


def schedule_fields(fields: Mapping[str, Any], *, now: datetime, where: str = "schedule") -> dict[str, Any]:
    """Validate a schedule's fields; returns the store's row fields with its first fire time."""
    bad = [k for k in fields if k not in SCHEDULE_KEYS]
    if bad:
        raise ScheduleError(f"{where}.{bad[0]}: unknown key")
    trigger = trigger_from_fields(fields, now=now.replace(microsecond=0))  # `every` anchors on a whole second
    params = fields.get("params") or {}
    if not isinstance(params, Mapping):
        raise ScheduleError(f"{where}.params: expected a mapping, got {params!r}")
    try:
        grace = parse_duration(fields.get("misfire_grace", DEFAULT_MISFIRE_GRACE))
    except ValueError as exc:
        raise ScheduleError(f"{where}.misfire_grace: {exc}") from None
    max_active = fields.get("max_active_runs", 1)
    if isinstance(max_active, bool) or not isinstance(max_active, int) or not 1 <= max_active <= MAX_ACTIVE_RUNS:
        raise ScheduleError(f"{where}.max_active_runs: expected a whole number from 1 to {MAX_ACTIVE_RUNS:,}, "
                            f"got {max_active!r}")
    for key in ("catchup", "enabled"):
        if not isinstance(fields.get(key, False), bool):
            raise ScheduleError(f"{where}.{key}: expected true or false, got {fields[key]!r}")
    return {
        "trigger": trigger.to_fields(),
        "params": dict(params),
        "catchup": fields.get("catchup", False),
        "misfire_grace": grace,
        "max_active_runs": max_active,
        "enabled": fields.get("enabled", True),
        "next_fire_at": trigger.next_after(now),
    }


def _moment(value: str | datetime, zone: Any, option: str, *, end_of_day: bool = False) -> datetime:
    try:
        return when(value, zone, end_of_day=end_of_day)
    except ValueError:
        raise ConfigError(f"{option} {value!r}: not a date (use 2026-11-01 or 2026-11-01T06:00)") from None


def pipeline_view(service: Service, name: str) -> dict[str, Any]:
    """A pipeline's newest version, in short."""
    record = service.store.get_pipeline(name)
    spec = service._spec(name, record.version)
    return {"name": name, "version": record.version, "source_path": record.source_path,
            "created_at": _iso(record.created_at), "schedules": len(service.store.list_schedules(pipeline=name)),
            "tasks": spec.order}


def pipeline_detail(service: Service, name: str) -> dict[str, Any]:
    """A pipeline with its DAG, its versions and its schedules (the REST API's pipeline resource)."""
    view = pipeline_view(service, name)
    spec = service._spec(name, view["version"])
    return {
        **view,
        "versions": [{"version": p.version, "created_at": _iso(p.created_at)}
                     for p in service.store.pipeline_versions(name)],
        "spec": spec.raw,
        "dag": {"order": spec.order, "tasks": [
            {"name": t.name, "notebook": str(t.notebook), "upstream": list(t.upstream),
             "trigger_rule": t.trigger_rule.value} for t in (spec.tasks[n] for n in spec.order)]},
        "schedule_list": [schedule_view(s) for s in service.store.list_schedules(pipeline=name)],
    }


def schedule_trigger_of(trigger: Mapping[str, Any], created_at: datetime) -> Any:
    return trigger_from_fields(trigger, now=created_at)


def describe_schedule(s: ScheduleRecord) -> str:
    """``cron 0 6 * * 1-5 (Europe/Paris) +catchup``."""
    return schedule_trigger(s).describe() + (" +catchup" if s.catchup else "")


def next_fire_local(s: ScheduleRecord) -> datetime | None:
    """The next fire time in the schedule's own zone."""
    if s.next_fire_at is None:
        return None
    return s.next_fire_at.astimezone(get_zone(s.trigger.get("timezone", "UTC")))


def schedule_view(s: ScheduleRecord) -> dict[str, Any]:
    """The JSON shape of a schedule (CLI ``--json`` and the REST API)."""
    local = next_fire_local(s)
    return {
        "id": s.id, "pipeline": s.pipeline, "description": describe_schedule(s),
        "next_fire_local": local.isoformat() if local else None,
        "trigger": s.trigger, "params": s.params, "enabled": s.enabled,
        "catchup": s.catchup, "misfire_grace": s.misfire_grace, "max_active_runs": s.max_active_runs,
        "origin": s.origin, "next_fire_at": _iso(s.next_fire_at), "last_fire_at": _iso(s.last_fire_at),
    }


def _dry_render(spec: PipelineSpec, params: Mapping[str, Any], runs_dir: Path, now: datetime) -> None:
    from nbsched.templates import budget

    with budget():  # one for the whole spec: its templates render once per task
        for task in spec.tasks.values():
            task_parameters(spec, task, overrides=params, run_id="validate", logical_date=now,
                            run_dir=str(runs_dir / spec.name / "validate"), upstream={})


def run_view(run: RunRecord) -> dict[str, Any]:
    """The JSON shape of a run, shared by ``show --json``, ``run --json`` and the REST API."""
    return {
        "run_id": run.id,
        "pipeline": run.pipeline,
        "pipeline_version": run.pipeline_version,
        "state": run.state.value,
        "params": run.params,
        "logical_date": _iso(run.logical_date),
        "trigger": run.trigger,
        "schedule_id": run.schedule_id,
        "error": run.error,
        "created_at": _iso(run.created_at),
        "started_at": _iso(run.started_at),
        "ended_at": _iso(run.ended_at),
        "tasks": {
            name: {
                "state": t.state.value,
                "try_number": t.try_number,
                "max_tries": t.max_tries,
                "error": t.error,
                "output_path": t.output_path,
                "outputs": t.outputs,
                "cell": t.cell,
                "host": t.host,
                "started_at": _iso(t.started_at),
                "ended_at": _iso(t.ended_at),
                "tries": [{"try_number": a.try_number, "state": a.state.value, "runner": a.runner, "host": a.host,
                           "error": a.error, "started_at": _iso(a.started_at), "ended_at": _iso(a.ended_at)}
                          for a in t.tries],
            }
            for name, t in run.tasks.items()
        },
    }


def _has_notebook(task: Any) -> bool:
    return bool(task.output_path) and Path(task.output_path).is_file()


def _href(target: Path, folder: Path) -> str:
    """A relative URL from a page in ``folder`` to ``target``."""
    return quote(Path(os.path.relpath(target, folder)).as_posix())


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
