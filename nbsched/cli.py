"""The ``nbsched`` command line. Thin: parses, calls the service, prints.

Exit codes: 0 success, 1 a run failed or was cancelled, 2 bad input (one line, no traceback).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from nbsched.cli_params import param_options
from nbsched.clock import utcnow
from nbsched.config import environment_setting
from nbsched.console import table as _table
from nbsched.errors import NbschedError
from nbsched.states import NotifyEvent
from nbsched.timefmt import elapsed_between, local_time

if TYPE_CHECKING:
    from nbsched.service import Service
    from nbsched.states import TaskState
    from nbsched.views import RunView, ScheduleView


NOTIFY_EVENTS = [e.value for e in NotifyEvent]


class UserError(click.ClickException):
    exit_code = 2


def _environment(key: str) -> Callable[[], str | None]:
    """An option's default: its environment variable, read when the option is not given."""
    return lambda: environment_setting(key)


def _executor_option(command: Any) -> Any:
    """``--executor`` and ``--kernel-pool`` for the commands that execute notebooks; they set the
    service's config."""

    def setting(field: str) -> Any:
        def apply(ctx: click.Context, param: click.Parameter, value: Any) -> None:
            from dataclasses import replace

            if value is None or value == ():  # not given (a flag's None, a repeatable option's ())
                return
            try:
                ctx.obj.config = replace(ctx.obj.config, **{field: value})
            except NbschedError as exc:
                raise click.BadParameter(str(exc)) from None

        return apply

    command = click.option(
        "--kernel-pool/--no-kernel-pool",
        default=None,
        expose_value=False,
        callback=setting("kernel_pool"),
        help="Local executor: start kernels ahead of need, each still used for one task [default: on].",
    )(command)
    command = click.option(
        "--kernel-fork/--no-kernel-fork",
        default=None,
        expose_value=False,
        callback=setting("kernel_fork"),
        help="Local executor: fork kernels from a process that has ipykernel imported, "
        "instead of starting a new Python each time [default: on].",
    )(command)
    command = click.option(
        "--kernel-preload",
        "kernel_preload",
        multiple=True,
        metavar="MODULE",
        expose_value=False,
        callback=setting("kernel_preload"),
        help="With --kernel-fork: a module the fork server imports once for every kernel (repeatable); "
        "'auto' (the default) adds what the run's notebooks import at their top level, 'none' turns that off.",
    )(command)
    return click.option(
        "--executor",
        default=_environment("executor"),
        metavar="KIND",
        expose_value=False,
        callback=setting("executor"),
        help="Where notebooks run: local (default), dask (a Dask cluster "
        "started here), dask://HOST:PORT (an existing one) [env NBSCHED_EXECUTOR].",
    )(command)


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except NbschedError as exc:
            raise UserError(str(exc)) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home",
    default=_environment("home"),
    type=click.Path(file_okay=False),
    help="Folder for the database and run outputs (in <home>/runs) [env NBSCHED_HOME; "
    "default: the database in ./.nbsched, outputs in ./nbsched-runs].",
)
@click.option(
    "--db",
    "db_url",
    default=_environment("db_url"),
    metavar="URL",
    help="SQLAlchemy database URL [env NBSCHED_DB_URL; default sqlite:///<home>/nbsched.db].",
)
@click.option(
    "--runs-dir",
    default=_environment("runs_dir"),
    type=click.Path(file_okay=False),
    help="Folder for executed notebooks and reports [env NBSCHED_RUNS_DIR].",
)
@click.version_option(package_name="nbsched")
@click.pass_context
def cli(ctx: click.Context, home: str | None, db_url: str | None, runs_dir: str | None) -> None:
    """Run and schedule pipelines of Jupyter notebooks."""
    from nbsched.config import Config
    from nbsched.service import Service

    given = any(ctx.get_parameter_source(p) is click.core.ParameterSource.COMMANDLINE for p in ctx.params)
    if isinstance(ctx.obj, Service) and not given:
        return  # a notebook's magics bring the service of their project
    service = Service(Config.resolve(home=home, db_url=db_url, runs_dir=runs_dir))
    ctx.obj = service
    ctx.call_on_close(service.close)


@cli.command()
@click.argument("path", type=click.Path())
@click.pass_obj
def validate(service: Service, path: str) -> None:
    """Check a pipeline.yaml (or a notebook) without running it; draw its DAG's layers."""
    from nbsched.dag import layer_lines

    spec = service.validate(path)
    for warning in spec.warnings:
        click.echo(f"warning: {warning}", err=True)
    lines = layer_lines(spec.order, spec.tasks)  # tasks of a layer wait for none of each other
    click.echo(f"{path}: ok — pipeline '{spec.name}', {len(spec.tasks)} task(s) in {len(lines)} layer(s)")
    click.echo("\n".join(f"  {line}" for line in lines))


@cli.command()
@click.argument("path", type=click.Path())
@param_options("Override a parameter for every task (repeatable).")
@click.option("-w", "--workers", type=click.IntRange(min=1), help="Notebooks run at once [default: cores].")
@_executor_option
@click.option("--json", "as_json", is_flag=True, help="Print the finished run as one JSON object.")
@click.option("--only", metavar="A,B", help="Run just these tasks (the values they need: from earlier runs).")
@click.option("--from", "start", metavar="TASK", help="Run this task and everything downstream of it.")
@click.option(
    "--report",
    "with_report",
    is_flag=True,
    help="Then write the run's HTML report (as `nbsched report` does) and print its path.",
)
@click.pass_obj
def run(
    service: Service,
    path: str,
    overrides: dict[str, Any],
    workers: int | None,
    as_json: bool,
    only: str | None,
    start: str | None,
    with_report: bool,
) -> None:
    """Run a pipeline (or one notebook) now and wait for it."""
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    progress = _Progress(enabled=not as_json)
    try:
        record = service.run_pipeline(
            path,
            params=overrides,
            workers=workers,
            listener=progress.update,
            on_created=progress.start,
            only=_names(only),
            start=start,
        )
    finally:
        progress.close()
    report = service.run_report(record.id) if with_report else None
    if as_json:
        click.echo(json.dumps({**record.to_json(), **({"report": str(report)} if report else {})}, indent=2))
    else:
        _print_run(record)
        click.echo(f"outputs: {_rel(service.config.runs_dir / record.pipeline / record.id)}")
        if report is not None:
            click.echo(f"report:  {_rel(report)}")
    _exit_by([record])


@cli.command()
@click.option("--pipeline", help="Only runs of this pipeline.")
@click.option("--state", type=click.Choice(["queued", "running", "success", "failed", "cancelled"]))
@click.option("-n", "--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@click.pass_obj
def runs(service: Service, pipeline: str | None, state: str | None, limit: int, as_json: bool) -> None:
    """List recent runs, newest first."""
    from nbsched.report import tasks_done, trigger_label
    from nbsched.views import no_runs_text

    records = service.list_runs(pipeline=pipeline, state=state, limit=limit)
    if as_json:
        click.echo(json.dumps([r.to_json() for r in records], indent=2))
        return
    if not records:
        click.echo(no_runs_text(pipeline, state, service.pipeline_names() if pipeline else ()))
        return
    now, rows = utcnow(), []
    for r in records:
        view = r.to_json()
        rows.append(
            [
                r.id,
                r.pipeline,
                _state(r.state.value),
                trigger_label(view),
                local_time(r.first_started_at or r.created_at),  # a retry or repair does not move it
                r.ran_text(now),  # its runs' time in all
                tasks_done(view),
            ]
        )
    _table(["RUN", "PIPELINE", "STATE", "TRIGGER", "STARTED", "DURATION", "TASKS OK"], rows)


@cli.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_obj
def show(service: Service, run_id: str, as_json: bool) -> None:
    """Show one run and its tasks."""
    record = service.get_run(run_id)
    if as_json:
        click.echo(json.dumps(record.to_json(), indent=2))
    else:
        _print_run(record)


@cli.command()
@click.argument("run_id")
@click.option("--hide-code", is_flag=True, help="Leave the notebooks' code out of the task reports.")
@click.option("--open", "open_it", is_flag=True, help="Open the report in the default browser.")
@click.pass_obj
def report(service: Service, run_id: str, hide_code: bool, open_it: bool) -> None:
    """Write a run's HTML report (its DAG, timeline and tasks, each task's notebook as HTML); prints its path."""
    path = service.run_report(run_id, hide_code=hide_code)
    click.echo(_rel(path))
    if open_it:
        click.launch(str(path))


@cli.command()
@click.argument("path", type=click.Path())
@click.pass_obj
def register(service: Service, path: str) -> None:
    """Store a pipeline (a new version if it changed) and its schedules, for `serve` to run."""
    spec, version, ids = service.register(path)
    for warning in spec.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"registered {spec.name} v{version}: {len(spec.tasks)} task(s), {len(ids)} schedule(s) from the spec")
    for sched in service.list_schedules(spec.name):
        click.echo(f"  schedule {sched.id}: {sched.description}  next: {_next_fire(sched)}")


@cli.command()
@click.argument("pipeline")
@param_options("Override a parameter (repeatable).")
@click.option("--only", metavar="A,B", help="Run just these tasks (the values they need: from earlier runs).")
@click.option("--from", "start", metavar="TASK", help="Run this task and everything downstream of it.")
@click.option("--json", "as_json", is_flag=True, help='Print {"run_id": ...}.')
@click.pass_obj
def trigger(
    service: Service, pipeline: str, overrides: dict[str, Any], only: str | None, start: str | None, as_json: bool
) -> str:
    """Queue a run of a registered pipeline for `nbsched serve`; prints its run id."""
    run_id = service.trigger(pipeline, overrides, only=_names(only), start=start)
    click.echo(json.dumps({"run_id": run_id}) if as_json else run_id)
    return run_id  # for a notebook's `run_id = %nbsched trigger ...`


@cli.command()
@click.argument("pipeline")
@click.option("--start", required=True, help="First logical date (ISO date or date-time; the schedule's zone).")
@click.option("--end", required=True, help="Last logical date, inclusive (a bare date means its whole day).")
@click.option("--schedule", "schedule_id", type=int, help="Which schedule's fire times (if it has several).")
@param_options("Override a parameter (repeatable).")
@click.option("--run", "run_here", is_flag=True, help="Execute the runs here, oldest first, instead of queueing.")
@click.option("-w", "--workers", type=click.IntRange(min=1), help="With --run: notebooks at once.")
@_executor_option
@click.pass_obj
def backfill(
    service: Service,
    pipeline: str,
    start: str,
    end: str,
    schedule_id: int | None,
    overrides: dict[str, Any],
    run_here: bool,
    workers: int | None,
) -> None:
    """Create the runs a schedule would have made between two dates."""
    created, existing = service.backfill(pipeline, start, end, schedule_id=schedule_id, params=overrides)
    click.echo(f"{len(created)} run(s) queued" + (f", {existing} date(s) already had a run" if existing else ""))
    for run_id in created:
        click.echo(f"  {run_id}")
    if run_here and created:
        records = service.run_queued(created, workers=workers)
        for record in records:
            click.echo(f"{record.id}  {local_time(record.logical_date)}  {_state(record.state.value)}")
        _exit_by(records)


@cli.command()
@click.argument("run_id")
@click.pass_obj
def cancel(service: Service, run_id: str) -> None:
    """Cancel a queued or running run; the runner executing it stops its kernels."""
    record = service.cancel(run_id)
    click.echo(f"run {record.id}: {record.state.value}")


@cli.command()
@click.argument("run_id")
@click.option("--task", "tasks", multiple=True, metavar="NAME", help="Re-run this task, whatever it ended in (repeat).")
@click.option("--downstream", is_flag=True, help="With --task: every task downstream of them too.")
@param_options("With --task: a parameter of the re-run tasks (repeatable).")
@click.option("--run", "run_here", is_flag=True, help="Execute the re-queued tasks here instead of by `serve`.")
@_executor_option
@click.pass_obj
def retry(
    service: Service, run_id: str, tasks: tuple[str, ...], downstream: bool, overrides: dict[str, Any], run_here: bool
) -> None:
    """Re-queue a run's failed, upstream_failed and cancelled tasks; with --task, repair a
    finished run: re-run those tasks (and --downstream) with new -p values, the others kept."""
    chosen = [name.strip() for given in tasks for name in given.split(",") if name.strip()] if tasks else None
    requeued = service.retry(run_id, chosen, downstream=downstream, params=overrides)
    click.echo(f"run {run_id}: re-queued {', '.join(requeued)}")
    if run_here:
        (record,) = service.run_queued([run_id])
        _print_run(record)
        _exit_by([record])


@cli.command()
@click.option(
    "-w",
    "--workers",
    type=click.IntRange(min=1),
    help="Notebooks at once [default: the cores; with an existing Dask cluster, its worker threads].",
)
@_executor_option
@click.option(
    "--lease",
    default="60s",
    show_default=True,
    help="A runner silent this long is presumed dead; its tasks are retried.",
)
@click.option(
    "--grace",
    default="30s",
    show_default=True,
    help="On SIGTERM, how long running tasks may finish before they are cancelled.",
)
@click.option("--poll", default="1s", show_default=True, help="How often to look for changes by other processes.")
@click.option("--no-scheduler", is_flag=True, help="Only execute queued runs; fire no schedules.")
@click.pass_obj
def serve(service: Service, workers: int | None, lease: str, grace: str, poll: str, no_scheduler: bool) -> None:
    """Fire schedules and execute queued runs until stopped (SIGTERM / Ctrl-C).

    Exit codes: 0 stopped cleanly, 3 stopped but tasks still running after --grace were
    cancelled, 1 an unexpected error, 2 bad options.
    """
    # a stop asked for while the daemon is being built (a service manager's SIGTERM right after
    # the start, on a loaded machine seconds away) is kept and honoured, not fatal (exit -15)
    asked: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: asked.append(signum))
    signal.signal(signal.SIGINT, lambda signum, frame: asked.append(signum))
    import logging

    from nbsched.config import DaemonOptions
    from nbsched.timefmt import parse_duration

    try:
        durations = {k: parse_duration(v) for k, v in (("lease", lease), ("grace", grace), ("poll", poll))}
    except ValueError as exc:
        raise UserError(str(exc)) from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    options = DaemonOptions(workers=workers, scheduler=not no_scheduler, **durations)
    from dataclasses import replace

    service.config = replace(service.config, db_patience=None)  # a daemon starts on a database that is away too
    daemon = service.daemon(options)

    def stop(signum: int, frame: Any) -> None:
        logging.getLogger("nbsched.serve").info("received %s: stopping", signal.Signals(signum).name)
        daemon.request_stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if asked:
        stop(asked[0], None)
    sys.exit(daemon.serve())


@cli.command()
@click.option("--run", "run_id", metavar="RUN", help="Only the notifications of this run.")
@click.option("-n", "--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@click.pass_obj
def notifications(service: Service, run_id: str | None, limit: int, as_json: bool) -> None:
    """List notifications, newest first: what each was for, where it went, what it answered."""
    found = service.list_notifications(run_id, limit)
    if as_json:
        click.echo(json.dumps([n.to_json() for n in found], indent=2))
        return
    if not found:
        click.echo("no notifications" + (f" of run {run_id}" if run_id else ""))
        return
    rows = [
        [
            str(n.id),
            n.run_id or f"({n.pipeline} schedule)",
            n.task or "-",
            str(n.event),
            n.target,
            _notice_state(n.shown_state),
            str(n.attempts),
            n.answer or "",
        ]
        for n in found
    ]
    _table(["ID", "RUN", "TASK", "EVENT", "TARGET", "STATE", "TRIES", "ANSWER"], rows)


@cli.group()
def notify() -> None:
    """Notifications: send a sample to a pipeline's targets."""


@notify.command("test")
@click.argument("pipeline")
@click.option("--event", type=click.Choice(NOTIFY_EVENTS), default="failure", show_default=True)
@click.pass_obj
def notify_test(service: Service, pipeline: str, event: str) -> None:
    """Send a test message of EVENT (about a made-up run) to every target PIPELINE notifies of
    it, and print what each answered (exit 1 when one was not sent)."""
    results = service.notify_test(pipeline, NotifyEvent(event))
    for target, ok, answer in results:
        click.echo(f"{target}: {'sent' if ok else 'NOT SENT'} ({answer})")
    sys.exit(0 if all(ok for _, ok, _ in results) else 1)


@cli.group()
def schedule() -> None:
    """Add, list, pause, resume and remove schedules."""


@schedule.command("add")
@click.argument("pipeline")
@click.option("--cron", help='Cron expression, 5 or 6 fields or @daily etc.: "0 6 * * 1-5".')
@click.option("--every", help="Interval: 15m, 1h, 30s ...")
@click.option("--at", help="One-off date-time: 2026-12-01T06:00.")
@click.option("--start", help="With --every: the date-time it counts from [default: now].")
@click.option("--after", metavar="PIPELINE", help="A run after each run of PIPELINE that ends (see --state).")
@click.option("--state", type=click.Choice(["success", "failed", "finished"]), help="With --after [default success].")
@click.option(
    "--files", metavar="GLOB", help="A run for each new or changed file: 'incoming/*.csv' (in the spec's folder)."
)
@click.option("--poll", help="With --files: how often to look [default 30s].")
@click.option("--settle", help="With --files: how long a file must be unchanged [default 5s].")
@click.option("--existing", is_flag=True, help="With --files: the files already there fire too.")
@click.option("--tz", "timezone", help="IANA time zone: Europe/Paris [default UTC].")
@param_options("A parameter of its runs (repeatable).")
@click.option("--catchup", is_flag=True, help="Create a run for every missed fire (backfill).")
@click.option("--misfire-grace", help="How late a missed fire may still run [default 10m].")
@click.option("--max-active-runs", type=click.IntRange(min=1), default=1, show_default=True)
@click.pass_obj
def schedule_add(
    service: Service,
    /,
    pipeline: str,
    overrides: dict[str, Any],
    max_active_runs: int,
    catchup: bool,
    existing: bool,
    **given: str | None,
) -> None:
    """Schedule a registered pipeline: on a clock (--cron, --every, --at), after another
    pipeline's runs (--after) or on files arriving (--files)."""
    fields: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    fields.update(params=overrides, max_active_runs=max_active_runs)
    fields.update({k: True for k, on in (("catchup", catchup), ("existing", existing)) if on})
    sched = service.add_schedule(pipeline, fields)
    click.echo(f"schedule {sched.id}: {pipeline} {sched.description}  next: {_next_fire(sched)}")


@schedule.command("list")
@click.option("--pipeline", help="Only this pipeline's schedules.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def schedule_list(service: Service, pipeline: str | None, as_json: bool) -> None:
    """List schedules with their next fire time."""
    scheds = service.list_schedules(pipeline)
    if as_json:
        click.echo(json.dumps([s.to_json() for s in scheds], indent=2))
        return
    if not scheds:
        click.echo("no schedules — add one with: nbsched schedule add PIPELINE --cron '0 6 * * *'")
        return
    rows = [
        [
            str(s.id),
            s.pipeline,
            s.description,
            "active" if s.enabled else "paused",
            _next_fire(s),
            local_time(s.last_fire_at) + (f" ({s.last_run_id})" if s.last_run_id else ""),
            s.origin,
        ]
        for s in scheds
    ]
    _table(["ID", "PIPELINE", "TRIGGER", "STATE", "NEXT FIRE", "LAST FIRE", "FROM"], rows)


@schedule.command("pause")
@click.argument("schedule_id", type=int)
@click.pass_obj
def schedule_pause(service: Service, schedule_id: int) -> None:
    """Stop firing a schedule."""
    service.pause(schedule_id)
    click.echo(f"schedule {schedule_id}: paused")


@schedule.command("resume")
@click.argument("schedule_id", type=int)
@click.pass_obj
def schedule_resume(service: Service, schedule_id: int) -> None:
    """Fire a paused schedule again."""
    sched = service.resume(schedule_id)
    click.echo(f"schedule {schedule_id}: active, next: {_next_fire(sched)}")


@schedule.command("rm")
@click.argument("schedule_id", type=int)
@click.pass_obj
def schedule_rm(service: Service, schedule_id: int) -> None:
    """Delete a schedule (its past runs stay)."""
    service.remove_schedule(schedule_id)
    click.echo(f"schedule {schedule_id}: removed")


@cli.group()
def pool() -> None:
    """Pools of slots that tasks (`pool: NAME`) share across every runner of the database."""


@pool.command("set")
@click.argument("name")
@click.argument("slots", type=int)
@click.pass_obj
def pool_set(service: Service, name: str, slots: int) -> None:
    """Create a pool of SLOTS, or change its slots."""
    view, new = service.set_pool(name, slots)
    click.echo(f"pool {view.name}: {view.slots} slot(s){' (new)' if new else ''}, {view.running} in use")


@pool.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def pool_list(service: Service, as_json: bool) -> None:
    """Pools with their slots, the tries holding one and the tries queued for one."""
    pools = service.list_pools()
    if as_json:
        click.echo(json.dumps([p.to_json() for p in pools], indent=2))
        return
    if not pools:
        click.echo("no pools — make one with: nbsched pool set gpu 1")
        return
    _table(
        ["POOL", "SLOTS", "RUNNING", "QUEUED"], [[p.name, str(p.slots), str(p.running), str(p.queued)] for p in pools]
    )


@pool.command("rm")
@click.argument("name")
@click.option("--force", is_flag=True, help="Remove it even if used: its waiting tries fail at once.")
@click.pass_obj
def pool_rm(service: Service, name: str, force: bool) -> None:
    """Remove a pool no registered pipeline and no unfinished task uses (--force: whatever uses it)."""
    click.echo(service.remove_pool(name, force=force))


# -- output helpers ---------------------------------------------------------------------------
_COLOURS = {
    "success": "green",
    "failed": "red",
    "upstream_failed": "red",
    "running": "blue",
    "queued": "cyan",
    "up_for_retry": "yellow",
    "skipped": "bright_black",
    "removed": "bright_black",
    "cancelled": "magenta",
}


def _state(value: str) -> str:
    return click.style(value, fg=_COLOURS.get(value))


def _notice_state(value: str) -> str:
    return click.style(value, fg={"sent": "green", "failed": "red"}.get(value, "yellow"))


def _exit_by(records: list[RunView]) -> NoReturn:
    """Exit 0 when every run succeeded, else 1 (a run failed or was cancelled)."""
    from nbsched.states import RunState

    sys.exit(0 if all(r.state is RunState.SUCCESS for r in records) else 1)


def _print_run(r: RunView) -> None:
    from nbsched.fanout import task_of
    from nbsched.report import comparisons, trigger_label, where_running
    from nbsched.selection import unselected as not_selected
    from nbsched.states import TaskState

    view, now = r.to_json(), utcnow()
    for warning in r.warnings():
        click.echo(f"warning: {warning}", err=True)
    params = ", ".join(f"{k}={v!r}" for k, v in r.params.items()) or "-"
    click.echo(
        f"run {r.id}  pipeline {r.pipeline} v{r.pipeline_version}  {_state(r.state.value)}  "
        f"{r.ran_text(now)}  params: {params}"
    )
    click.echo(f"trigger: {trigger_label(view)}" + (f"  started: {r.started_text(now)}" if r.spans else ""))
    if r.error:  # why it was cancelled: by whom, or the runner that stopped
        click.echo(f"{r.state.value}: {r.error}")
    if r.selection:
        lent = ", ".join(f"{task} from run {run_id}" for task, run_id in r.selection["borrowed"].items())
        selected = dict.fromkeys(task_of(n) for n in r.selection["tasks"])  # a mapped task once
        click.echo(f"partial run: {', '.join(selected)}" + (f"; values of {lent}" if lent else ""))
    for repair in r.repairs:
        values = ", ".join(f"{k}={v!r}" for k, v in repair["params"].items())
        click.echo(
            f"repaired {local_time(datetime.fromisoformat(repair['at']))}: {', '.join(repair['tasks'])}"
            + (" (+downstream)" if repair["downstream"] else "")
            + (f" with {values}" if values else "")
        )
    rows = [
        [
            t.label,
            _state(t.state.value),
            f"{t.try_number}/{t.max_tries}",
            _took(t.started_at, t.ended_at),
            _rel(t.output_path) if t.output_path else "-",
        ]
        for name, t in r.tasks.items()
    ]
    _table(["TASK", "STATE", "TRIES", "DURATION", "OUTPUT"], rows)
    outside = not_selected(r.tasks, r.selection)
    unselected = [n for n in r.tasks if n in outside]
    if unselected:  # a partial run's other tasks, once each
        click.echo(f"  not selected: {', '.join(dict.fromkeys(task_of(n) for n in unselected))}")
    for name, t in r.tasks.items():
        if name in unselected:
            continue
        if t.error and t.state in (TaskState.FAILED, TaskState.UP_FOR_RETRY, TaskState.SKIPPED, TaskState.REMOVED):
            click.echo(f"  {name}: {t.error}")
        elif t.cell and t.state is TaskState.RUNNING:
            click.echo(f"  {name}: at {where_running(t.cell)}")
        elif t.waiting:
            click.echo(f"  {name}: {t.waiting}")
    for table in comparisons(view["tasks"]):  # a mapped task's instances side by side
        click.echo(f"compared: {table.task}")
        _table(
            ["  INSTANCE", "STATE", *table.params, *table.outputs],
            [
                [f"  {row['name']}", _state(row["state"]), *(_cell(v) for v in [*row["params"], *row["outputs"]])]
                for row in table.rows
            ],
        )
    retried = [(name, a) for name, t in r.tasks.items() if len(t.tries) > 1 for a in t.tries]
    if retried:  # what each try did: where it ran, who ran it, how it ended
        click.echo("tries:")
        _table(
            ["  TASK", "TRY", "STATE", "DURATION", "HOST", "RUNNER", "ERROR"],
            [
                [
                    f"  {name}",
                    str(a.try_number),
                    _state(a.state.value),
                    _took(a.started_at, a.ended_at),
                    a.host or "-",
                    a.runner,
                    a.error or "",
                ]
                for name, a in retried
            ],
        )


def _names(value: str | None) -> list[str] | None:
    """``--only a,b``'s names."""
    return [n.strip() for n in value.split(",") if n.strip()] if value is not None else None


def _cell(value: Any) -> str:
    """A value in a table: ``-`` when missing, JSON's spelling otherwise (``true``, ``0.93``)."""
    return "-" if value is None else value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _next_fire(sched: ScheduleView) -> str:
    return sched.next_fire_text(utcnow())


def _took(start: datetime | None, end: datetime | None) -> str:
    """How long it ran, or has been running."""
    return elapsed_between(start, end or utcnow()) or "-"


def _rel(path: str | Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def _interrupt(signum: int, frame: Any) -> NoReturn:
    """First Ctrl-C or SIGTERM: cancel the run. Later ones must not cut its clean-up short."""
    signal.signal(signal.SIGINT, _cancelling)
    signal.signal(signal.SIGTERM, _cancelling)
    raise KeyboardInterrupt


def _cancelling(signum: int, frame: Any) -> None:
    click.echo("cancelling: stopping the kernels and recording the run...", err=True)


class _Progress:
    """A tqdm bar over the run's tasks, with a line for each failure and retry."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None
        self.running: set[str] = set()

    def start(self, run_id: str, spec: Any) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        click.echo(f"run {run_id}: pipeline '{spec.name}', {len(spec.tasks)} task(s)", err=True)
        self.bar = tqdm(
            total=len(spec.tasks),
            unit="task",
            desc=spec.name,
            file=sys.stderr,
            leave=False,
            disable=not sys.stderr.isatty(),
        )

    def update(self, run_id: str, task: str, state: TaskState, detail: str | None) -> None:
        from nbsched.states import TaskState

        if self.bar is None:
            return
        if state is TaskState.RUNNING:
            self.running.add(task)
        else:
            self.running.discard(task)
        if state.finished:
            self.bar.update(1)
        if state in (TaskState.FAILED, TaskState.UP_FOR_RETRY):
            self.bar.write(f"{task}: {state.value}: {detail}", file=sys.stderr)
        self.bar.set_postfix_str(", ".join(sorted(self.running)))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def main() -> None:
    _without_slow_format_checks()
    cli(prog_name="nbsched")


def _without_slow_format_checks() -> None:
    """jsonschema imports ``rfc3987_syntax`` when it is installed (jupyter-server's dependencies
    bring it) for its "iri" format, and that module builds a Lark parser as it is imported: 1.5 s
    of every ``nbsched run`` before the first notebook (nbformat imports jsonschema). nbsched's
    process validates notebooks, which use no such format: jsonschema is told the module is
    absent (it skips that one check) unless something imported it already."""
    if "jsonschema" not in sys.modules:
        sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
