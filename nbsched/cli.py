"""The ``nbsched`` command line. Thin: parses, calls the service, prints.

Exit codes: 0 success, 1 a run failed or was cancelled, 2 bad input (one line, no traceback).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import click

from nbsched.errors import NbschedError


class UserError(click.ClickException):
    exit_code = 2


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except NbschedError as exc:
            raise UserError(str(exc)) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--home", envvar="NBSCHED_HOME", type=click.Path(file_okay=False),
              help="Folder for the database and run outputs [env NBSCHED_HOME; default ./.nbsched].")
@click.option("--db", "db_url", envvar="NBSCHED_DB_URL", metavar="URL",
              help="SQLAlchemy database URL [env NBSCHED_DB_URL; default sqlite:///<home>/nbsched.db].")
@click.version_option(package_name="nbsched")
@click.pass_context
def cli(ctx: click.Context, home: str | None, db_url: str | None) -> None:
    """Run and schedule pipelines of Jupyter notebooks."""
    from nbsched.service import Config, Service

    service = Service(Config.resolve(home=home, db_url=db_url))
    ctx.obj = service
    ctx.call_on_close(service.close)


@cli.command()
@click.argument("path", type=click.Path())
@click.pass_obj
def validate(service: Any, path: str) -> None:
    """Check a pipeline.yaml (or a notebook) without running it."""
    spec = service.validate(path)
    for warning in spec.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"{path}: ok — pipeline '{spec.name}', {len(spec.tasks)} task(s): {' → '.join(spec.order)}")


@cli.command()
@click.argument("path", type=click.Path())
@click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE",
              help="Override a parameter for every task (repeatable).")
@click.option("-w", "--workers", type=click.IntRange(min=1), help="Notebooks run at once [default: cores].")
@click.option("--json", "as_json", is_flag=True, help="Print the finished run as one JSON object.")
@click.pass_obj
def run(service: Any, path: str, params: tuple[str, ...], workers: int | None, as_json: bool) -> None:
    """Run a pipeline (or one notebook) now and wait for it."""
    import logging

    from nbsched.params import parse_override
    from nbsched.service import run_view

    overrides = dict(parse_override(p) for p in params)
    logging.getLogger("papermill").setLevel(logging.CRITICAL)  # task errors are reported by us
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    progress = _Progress(enabled=not as_json)
    try:
        record = service.run_pipeline(path, params=overrides, workers=workers,
                                      listener=progress.update, on_created=progress.start)
    finally:
        progress.close()
    if as_json:
        click.echo(json.dumps(run_view(record), indent=2))
    else:
        _print_run(record)
        click.echo(f"outputs: {_rel(service.config.runs_dir / record.pipeline / record.id)}")
    sys.exit(0 if record.state.value == "success" else 1)


@cli.command()
@click.option("--pipeline", help="Only runs of this pipeline.")
@click.option("--state", type=click.Choice(["queued", "running", "success", "failed", "cancelled"]))
@click.option("-n", "--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@click.pass_obj
def runs(service: Any, pipeline: str | None, state: str | None, limit: int, as_json: bool) -> None:
    """List recent runs, newest first."""
    from nbsched.service import run_view

    records = service.list_runs(pipeline=pipeline, state=state, limit=limit)
    if as_json:
        click.echo(json.dumps([run_view(r) for r in records], indent=2))
        return
    if not records:
        click.echo("no runs yet — start one with: nbsched run pipeline.yaml")
        return
    rows = []
    for r in records:
        done = sum(t.state.value in ("success", "skipped") for t in r.tasks.values())
        rows.append([r.id, r.pipeline, _state(r.state.value), r.trigger, _local(r.started_at or r.created_at),
                     _duration(r.started_at, r.ended_at), f"{done}/{len(r.tasks)}"])
    _table(["RUN", "PIPELINE", "STATE", "TRIGGER", "STARTED", "DURATION", "TASKS OK"], rows)


@cli.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_obj
def show(service: Any, run_id: str, as_json: bool) -> None:
    """Show one run and its tasks."""
    from nbsched.service import run_view

    record = service.get_run(run_id)
    if as_json:
        click.echo(json.dumps(run_view(record), indent=2))
    else:
        _print_run(record)


# -- output helpers ---------------------------------------------------------------------------
_COLOURS = {"success": "green", "failed": "red", "upstream_failed": "red", "running": "blue",
            "queued": "cyan", "up_for_retry": "yellow", "skipped": "bright_black", "cancelled": "magenta"}


def _state(value: str) -> str:
    return click.style(value, fg=_COLOURS.get(value))


def _print_run(r: Any) -> None:
    params = ", ".join(f"{k}={v!r}" for k, v in r.params.items()) or "-"
    click.echo(f"run {r.id}  pipeline {r.pipeline} v{r.pipeline_version}  {_state(r.state.value)}  "
               f"{_duration(r.started_at, r.ended_at)}  params: {params}")
    rows = [[name, _state(t.state.value), f"{t.try_number}/{t.max_tries}", _duration(t.started_at, t.ended_at),
             _rel(t.output_path) if t.output_path else "-"] for name, t in r.tasks.items()]
    _table(["TASK", "STATE", "TRIES", "DURATION", "OUTPUT"], rows)
    for name, t in r.tasks.items():
        if t.error and t.state.value in ("failed", "up_for_retry"):
            click.echo(f"  {name}: {t.error}")


def _table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(click.unstyle(str(c))) for c in col) for col in zip(headers, *rows)]
    for row in [headers, *rows]:
        click.echo("  ".join(str(c) + " " * (w - len(click.unstyle(str(c)))) for c, w in zip(row, widths)).rstrip())


def _duration(start: datetime | None, end: datetime | None) -> str:
    if start is None:
        return "-"
    seconds = ((end or datetime.now(start.tzinfo)) - start).total_seconds()
    return f"{seconds:.1f}s" if seconds < 120 else f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def _local(value: datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value else "-"


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
        self.bar = tqdm(total=len(spec.tasks), unit="task", desc=spec.name, file=sys.stderr, leave=False,
                        disable=not sys.stderr.isatty())

    def update(self, run_id: str, task: str, state: Any, detail: str | None) -> None:
        if self.bar is None:
            return
        value = state.value
        if value == "running":
            self.running.add(task)
        else:
            self.running.discard(task)
        if state.finished:
            self.bar.update(1)
        if value in ("failed", "up_for_retry"):
            self.bar.write(f"{task}: {value}: {detail}", file=sys.stderr)
        self.bar.set_postfix_str(", ".join(sorted(self.running)))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def main() -> None:
    cli(prog_name="nbsched")


if __name__ == "__main__":
    main()
