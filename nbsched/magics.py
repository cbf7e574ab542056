"""IPython magics: ``%load_ext nbsched``, then ``%nbsched ...`` and ``%%nbsched_pipeline NAME``.

Thin, like the CLI: parse, call the service, display. Results show as HTML tables in a
notebook and as text in a terminal; a mistake prints one line, never a traceback.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

from IPython.core.magic import Magics, cell_magic, line_magic, magics_class

from nbsched.config import Config
from nbsched.errors import NbschedError
from nbsched.render import render
from nbsched.service import Service
from nbsched.states import TaskState
from nbsched.views import RunView

USAGE = """usage:
  %nbsched run PATH [-p key=value ...]       run a pipeline (or notebook) now
  %nbsched trigger PIPELINE [-p key=value]   queue a run for the scheduler
  %nbsched runs [PIPELINE]                   recent runs
  %nbsched show RUN_ID                       one run and its tasks
  %nbsched schedule PIPELINE --cron EXPR | --every DUR | --at TIME [--tz ZONE] [-p key=value]
  %nbsched schedule PIPELINE --after PIPELINE [--state success|failed|finished] | --files GLOB [--poll DUR]
  %nbsched schedules                         schedules
  %nbsched pause ID | %nbsched resume ID     pause or resume a schedule
  %nbsched panel [PIPELINE]                  the run-history panel (refreshes itself)
  %%nbsched_pipeline NAME                    a cell of pipeline YAML (tasks, params, schedules) to register"""


class Table:
    """A result that shows as an HTML table in a notebook and as text in a terminal. ``home``: the
    project's nbsched folder, whose ``templates/magics_table.html.j2`` may restyle it."""

    def __init__(
        self,
        title: str,
        headers: list[str],
        rows: list[list[Any]],
        state_column: int | None = None,
        *,
        home: Path | None = None,
    ):
        self.title, self.headers, self.rows, self.state_column = title, headers, rows, state_column
        self.home = home

    def __repr__(self) -> str:
        cells = [self.headers, *[[str(c) for c in r] for r in self.rows]]
        widths = [max(len(str(row[i])) for row in cells) for i in range(len(self.headers))]
        lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
        return "\n".join([self.title, *lines]) if self.title else "\n".join(lines)

    def _repr_html_(self) -> str:
        return render(
            "magics_table.html.j2",
            self.home,
            title=self.title,
            headers=self.headers,
            rows=self.rows,
            state_column=self.state_column,
        )


def run_table(run: RunView, home: Path | None = None) -> Table:
    rows = [
        [name, t.state.value, f"{t.try_number}/{t.max_tries}", t.error or "", t.output_path or ""]
        for name, t in run.tasks.items()
    ]
    return Table(
        f"run {run.id} · {run.pipeline} v{run.pipeline_version} · {run.state.value}",
        ["task", "state", "tries", "error", "output"],
        rows,
        state_column=1,
        home=home,
    )


@magics_class
class NbschedMagics(Magics):
    def __init__(self, shell: Any, service: Service | None = None) -> None:
        super().__init__(shell)
        self._service = service

    @property
    def service(self) -> Service:
        if self._service is None:
            self._service = Service(Config.discover(Path.cwd()))
        return self._service

    @line_magic
    def nbsched(self, line: str) -> Any:
        return self._guarded(lambda: self._dispatch(shlex.split(line)))

    @cell_magic
    def nbsched_pipeline(self, line: str, cell: str) -> Any:
        return self._guarded(lambda: self._register_cell(line.strip(), cell))

    def _guarded(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except (NbschedError, ValueError) as exc:
            print(f"nbsched: {exc}")
            return None

    def _dispatch(self, argv: list[str]) -> Any:
        from nbsched.params import parse_override

        if not argv or argv[0] in ("-h", "--help", "help"):
            print(USAGE)
            return None
        command, args = argv[0], argv[1:]
        positional, params, options = _split(args)
        overrides = dict(parse_override(p) for p in params)
        svc = self.service
        if command == "run" and len(positional) == 1:
            return run_table(svc.run_pipeline(positional[0], params=overrides), svc.config.home)
        if command == "trigger" and len(positional) == 1:
            run_id = svc.trigger(positional[0], overrides)
            print(f"queued run {run_id}")
            return run_id
        if command == "runs" and len(positional) <= 1:
            runs = svc.list_runs(pipeline=positional[0] if positional else None, limit=20)
            rows = [
                [
                    r.id,
                    r.pipeline,
                    r.state.value,
                    r.trigger,
                    r.logical_date.isoformat(timespec="seconds"),
                    sum(t.state in (TaskState.SUCCESS, TaskState.SKIPPED) for t in r.tasks.values()),
                    len(r.tasks),
                ]
                for r in runs
            ]
            return Table(
                "runs",
                ["run", "pipeline", "state", "trigger", "logical date", "tasks ok", "tasks"],
                rows,
                state_column=2,
                home=svc.config.home,
            )
        if command == "show" and len(positional) == 1:
            return run_table(svc.get_run(positional[0]), svc.config.home)
        if command == "schedule" and len(positional) == 1:
            keys = ("cron", "every", "at", "after", "state", "files", "poll", "settle")
            fields: dict[str, Any] = {k: v for k, v in options.items() if k in keys}
            if "tz" in options:
                fields["timezone"] = options["tz"]
            fields["params"] = overrides
            sched = svc.add_schedule(positional[0], fields)
            print(f"schedule {sched.id}: {positional[0]} {sched.description}")
            return sched.id
        if command == "schedules" and not positional:
            rows = [
                [
                    s.id,
                    s.pipeline,
                    s.description,
                    "active" if s.enabled else "paused",
                    s.waiting_for or (s.next_fire_at.isoformat(timespec="seconds") if s.next_fire_at else "-"),
                    s.last_run_id or "-",
                ]
                for s in svc.list_schedules()
            ]
            return Table(
                "schedules",
                ["id", "pipeline", "trigger", "state", "next fire (UTC) or waits for", "last run"],
                rows,
                home=svc.config.home,
            )
        if command in ("pause", "resume") and len(positional) == 1 and positional[0].isdigit():
            sched = (svc.pause if command == "pause" else svc.resume)(int(positional[0]))
            print(f"schedule {sched.id}: {'active' if sched.enabled else 'paused'}")
            return None
        if command == "panel" and len(positional) <= 1:
            from nbsched.widgets import RunPanel

            return RunPanel(svc, positional[0] if positional else None)
        raise ValueError(f"cannot read '%nbsched {' '.join(argv)}' (try %nbsched help)")

    def _register_cell(self, name: str, cell: str) -> Any:
        from nbsched.bounds import load_yaml

        if not name:
            raise ValueError("%%nbsched_pipeline needs a pipeline name: %%nbsched_pipeline NAME")
        # the cell is bounded as a spec file is: its size, its depth, its aliases, duplicate keys
        data = load_yaml(cell, f"%%nbsched_pipeline {name}") or {}
        if not isinstance(data, dict):
            raise ValueError(f"%%nbsched_pipeline {name}: the cell must be a YAML mapping (tasks: ...)")
        if "name" in data and data["name"] != name:
            raise ValueError(f"%%nbsched_pipeline {name}: the cell names the pipeline '{data['name']}'")
        spec, version, ids = self.service.register_spec({**data, "name": name}, Path.cwd(), source=name)
        print(
            f"registered {spec.name} v{version}: {len(spec.tasks)} task(s) ({' → '.join(spec.order)})"
            + (f", schedule(s) {', '.join(map(str, ids))}" if ids else "")
        )
        return None


def _split(args: list[str]) -> tuple[list[str], list[str], dict[str, str]]:
    """Positional words, ``-p key=value`` parameters and ``--option value`` pairs."""
    positional: list[str] = []
    params: list[str] = []
    options: dict[str, str] = {}
    it = iter(args)
    for word in it:
        if word in ("-p", "--param"):
            params.append(next(it, ""))
        elif word.startswith("--"):
            value = next(it, None)
            if value is None:
                raise ValueError(f"{word} needs a value")
            options[word[2:]] = value
        else:
            positional.append(word)
    return positional, params, options


def load_ipython_extension(ipython: Any) -> None:
    ipython.register_magics(NbschedMagics(ipython))
