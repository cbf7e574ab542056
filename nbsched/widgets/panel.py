"""The run-history panel: a VBox of stock ipywidgets over the service.

Pipeline selector; runs table with state colours; the chosen run's DAG picture, tasks,
links to output notebooks and inline reports; a progress bar; buttons Run now (with
parameter overrides), Cancel, Retry failed, Pause/Resume schedules, and a task's Re-run and
Re-run with downstream (a repair, with the Params box's values). It refreshes itself
from a background thread while shown and stops that thread when closed. Button handlers
report their mistakes in the panel's status line instead of raising, so the panel never breaks.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import ipywidgets as w

from nbsched.clock import utcnow
from nbsched.errors import NbschedError
from nbsched.params import parse_override
from nbsched.render import markup, render_macro
from nbsched.report import Comparison, comparisons, dag_svg, task_states, trigger_label, where_running
from nbsched.service import Service
from nbsched.states import RunState, TaskState
from nbsched.views import task_rows

ALL = "(all pipelines)"
_TEMPLATE = "panel.html.j2"


def _button(description: str, icon: str, style: str = "") -> w.Button:
    # as wide as its words, never squeezed by a narrow notebook
    return w.Button(
        description=description, icon=icon, button_style=style, layout=w.Layout(width="auto", flex="0 0 auto")
    )


class RunPanel(w.VBox):
    def __init__(
        self, service: Service, pipeline: str | None = None, *, refresh_every: float = 2.0, limit: int = 15
    ) -> None:
        if pipeline:
            service.pipeline(pipeline)  # an unknown name is a NotFound, before any widget exists
        self.service = service
        self.limit = limit
        self.refresh_every = refresh_every
        self.pipeline = w.Dropdown(description="Pipeline", options=[ALL])
        self.run_choice = w.Dropdown(description="Run", options=[])
        self.params = w.Text(
            description="Params", placeholder="key=value, key=value", layout=w.Layout(width="auto", flex="1 1 240px")
        )
        self.run_now = _button("Run now", "play", "success")
        self.cancel_run = _button("Cancel", "stop", "danger")
        self.retry_run = _button("Retry failed", "redo")
        self.toggle_schedule = _button("Pause schedules", "pause")
        self.progress = w.IntProgress(description="Tasks", min=0, max=1, value=0)
        self.progress_label = w.Label()
        self.schedules = w.HTML()
        self.runs_table = w.HTML()
        self.detail = w.HTML()
        self.task_choice = w.Dropdown(description="Task", options=[])
        self.show_report = _button("Show report", "file")
        self.rerun_task = _button("Re-run", "repeat")
        self.rerun_downstream = _button("Re-run with downstream", "forward")
        self.report = w.HTML()
        self.compare_sort = w.Dropdown(description="Sort by", options=[("run order", None)], value=None)
        self.comparison = w.HTML()
        self.status = w.HTML()
        super().__init__(
            children=[
                w.HTML(render_macro(_TEMPLATE, "style", service.config.home)),
                w.HBox([self.pipeline, self.params, self.run_now, self.toggle_schedule]),
                self.schedules,
                self.runs_table,
                w.HBox([self.run_choice, self.cancel_run, self.retry_run]),
                w.HBox([self.progress, self.progress_label]),
                self.detail,
                w.HBox([self.task_choice, self.show_report, self.rerun_task, self.rerun_downstream]),
                self.report,
                self.compare_sort,
                self.comparison,
                self.status,
            ]
        )
        self.add_class("nbsched-panel")
        self.run_now.on_click(self._guard(self._on_run_now))
        self.cancel_run.on_click(self._guard(self._on_cancel))
        self.retry_run.on_click(self._guard(self._on_retry))
        self.toggle_schedule.on_click(self._guard(self._on_toggle_schedule))
        self.show_report.on_click(self._guard(self._on_show_report))
        self.rerun_task.on_click(self._guard(lambda _: self._rerun(downstream=False)))
        self.rerun_downstream.on_click(self._guard(lambda _: self._rerun(downstream=True)))
        self.pipeline.observe(self._guard(lambda _: self.refresh()), names="value")
        self.run_choice.observe(self._guard(lambda _: self._render()), names="value")
        self.task_choice.observe(self._guard(lambda _: self._drop_stale_report()), names="value")
        self.compare_sort.observe(self._guard(lambda _: self._render()), names="value")
        self._report_of: tuple[str, str] | None = None  # (run, task) of the report shown
        self._stop = threading.Event()
        self._lock = threading.RLock()
        self.refresh()
        if pipeline:
            self.pipeline.value = pipeline
        self._thread: threading.Thread | None = None
        if refresh_every > 0:
            self._thread = threading.Thread(target=self._refresh_loop, name="nbsched-panel", daemon=True)
            self._thread.start()

    # -- refreshing ---------------------------------------------------------------------------------
    def refresh(self) -> None:
        with self._lock:
            names = [p.name for p in self.service.list_pipelines()]
            options = [ALL, *names]
            if list(self.pipeline.options) != options:
                current = self.pipeline.value
                self.pipeline.options = options
                self.pipeline.value = current if current in options else ALL
            pipeline = None if self.pipeline.value == ALL else self.pipeline.value
            self.run_now.disabled = pipeline is None
            # the page is drawn from the runs' JSON form, as the run report is
            records = self.service.list_runs(pipeline=pipeline, limit=self.limit)
            self._runs = [r.to_json() for r in records]
            self._ran = {r.id: r.ran_text for r in records}  # how long each ran in all, by the time it is drawn
            ids = [r["run_id"] for r in self._runs]
            chosen = self.run_choice.value
            if list(self.run_choice.options) != ids:
                self.run_choice.options = ids
                self.run_choice.value = chosen if chosen in ids else (ids[0] if ids else None)
            schedules = self.service.list_schedules(pipeline) if pipeline else []
            self.toggle_schedule.disabled = not schedules
            paused = bool(schedules) and not any(s.enabled for s in schedules)
            self.toggle_schedule.description = "Resume schedules" if paused else "Pause schedules"
            self.schedules.value = self._html("schedules", schedules=[s.to_json() for s in schedules])
            self._render()

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.refresh_every):
            try:
                self.refresh()
            except Exception as exc:  # noqa: BLE001 - keep refreshing: the database may be busy for a moment
                self._say(f"refresh failed: {exc}")

    def _say(self, message: str) -> None:
        self.status.value = self._html("status", message=message)

    def _html(self, piece: str, **arguments: Any) -> str:
        return render_macro(_TEMPLATE, piece, self.service.config.home, **arguments)

    def close(self) -> None:
        stop = getattr(self, "_stop", None)  # close() also runs from __del__ of a half-built panel
        if stop is not None:
            stop.set()
        super().close()

    # -- rendering ----------------------------------------------------------------------------------
    def _render(self) -> None:
        with self._lock:
            self.runs_table.value = self._runs_html()
            self._render_detail()

    def _runs_html(self) -> str:
        now = utcnow()
        took = {run_id: ran_text(now) for run_id, ran_text in self._ran.items()}
        labels = {r["run_id"]: trigger_label(r) for r in self._runs}
        return self._html(
            "runs_table", runs=self._runs, chosen=self.run_choice.value, now=now, labels=labels, took=took
        )

    def _selected(self) -> dict[str, Any] | None:
        return next((r for r in self._runs if r["run_id"] == self.run_choice.value), None)

    def _render_comparisons(self, tasks: dict[str, Any]) -> None:
        """The mapped tasks' instances side by side, sorted by the column the user chose."""
        tables = comparisons(tasks)
        columns = list(dict.fromkeys(k for c in tables for k in [*c.params, *c.outputs]))
        options = [("run order", None)] + [
            (f"{k} {arrow}", f"{k}:{d}") for k in columns for arrow, d in (("↑", "a"), ("↓", "d"))
        ]
        if list(self.compare_sort.options) != options:
            chosen = self.compare_sort.value
            self.compare_sort.options = options
            self.compare_sort.value = chosen if chosen in dict(options).values() else None
        self.compare_sort.layout.display = None if tables else "none"
        self.comparison.value = "".join(
            self._html("comparison", c=c, rows=_sorted_rows(c, self.compare_sort.value)) for c in tables
        )

    def _render_detail(self) -> None:
        view = self._selected()
        if view is None:
            self.detail.value, self.progress.max, self.progress.value = "", 1, 0
            self.progress_label.value = ""
            self.task_choice.options = []
            self._drop_stale_report()
            self._render_comparisons({})
            return
        self._render_comparisons(view["tasks"])
        tasks = task_rows(view["tasks"])  # a mapped task's instances one by one
        done = sum(TaskState(t["state"]).finished for t in tasks.values())
        self.progress.max, self.progress.value = max(1, len(tasks)), done
        states = {n: TaskState(t["state"]) for n, t in tasks.items()}
        running = [
            f"{n} ({where_running(t['cell'])})" if t["cell"] else n
            for n, t in tasks.items()
            if states[n] is TaskState.RUNNING
        ]
        self.progress_label.value = f"{done}/{len(tasks)} done" + (
            f" · running: {', '.join(running)}" if running else ""
        )
        state = RunState(view["state"])
        self.cancel_run.disabled = state.finished
        self.retry_run.disabled = state not in (RunState.FAILED, RunState.CANCELLED)
        self.rerun_task.disabled = self.rerun_downstream.disabled = not state.finished
        spec = self.service.pipeline_spec_for_run(view["run_id"])
        dag_states, notes = task_states(view["tasks"])
        picture = dag_svg(
            spec.order,
            {n: list(spec.tasks[n].upstream) for n in spec.order},
            dag_states,
            home=self.service.config.home,
            notes=notes,
        )
        # relative to the kernel's folder, so JupyterLab opens the notebook in a tab
        notebooks = {
            n: (os.path.relpath(t["output_path"]), os.path.basename(t["output_path"]))
            for n, t in tasks.items()
            if t["output_path"]
        }
        cells = {n: where_running(t["cell"]) for n, t in tasks.items() if states[n] is TaskState.RUNNING and t["cell"]}
        self.detail.value = self._html(
            "run_detail", run=view, tasks=tasks, picture=markup(picture), notebooks=notebooks, cells=cells, now=utcnow()
        )
        names = [n for n, t in tasks.items() if t["output_path"]]
        if list(self.task_choice.options) != names:
            chosen = self.task_choice.value
            self.task_choice.options = names
            self.task_choice.value = chosen if chosen in names else (names[0] if names else None)
        self._drop_stale_report()

    def _drop_stale_report(self) -> None:
        """A report stays only while its run and task are the chosen ones."""
        if self._report_of is not None and self._report_of != (self.run_choice.value, self.task_choice.value):
            self._report_of, self.report.value = None, ""

    # -- buttons -----------------------------------------------------------------------------------
    def _guard(self, fn: Any) -> Any:
        def handler(*args: Any) -> None:
            self.status.value = ""
            try:
                fn(*args)
            except (NbschedError, ValueError) as exc:
                self._say(str(exc))
            except Exception as exc:  # noqa: BLE001 - a bug must not take the panel down with it
                self._say(f"{type(exc).__name__}: {exc}")

        return handler

    def _overrides(self) -> dict[str, Any]:
        return dict(parse_override(p.strip()) for p in self.params.value.split(",") if p.strip())

    def _on_run_now(self, _: Any) -> None:
        run_id = self.service.trigger(self.pipeline.value, self._overrides())
        self.refresh()
        self.run_choice.value = run_id

    def _on_cancel(self, _: Any) -> None:
        self.service.cancel(self.run_choice.value)
        self.refresh()

    def _on_retry(self, _: Any) -> None:
        self.service.retry(self.run_choice.value)
        self.refresh()

    def _rerun(self, *, downstream: bool) -> None:
        """Repair the chosen run: its chosen task (and downstream) again, with the Params box's values."""
        self.service.retry(
            self.run_choice.value, [self.task_choice.value], downstream=downstream, params=self._overrides()
        )
        self.refresh()

    def _on_toggle_schedule(self, _: Any) -> None:
        schedules = self.service.list_schedules(self.pipeline.value)
        resume = not any(s.enabled for s in schedules)
        for s in schedules:
            (self.service.resume if resume else self.service.pause)(s.id)
        self.refresh()

    def _on_show_report(self, _: Any) -> None:
        report = self.service.task_report(self.run_choice.value, self.task_choice.value)
        self.report.value = self._html("report_frame", page=report.read_text(encoding="utf-8"))
        self._report_of = (self.run_choice.value, self.task_choice.value)


def _sorted_rows(table: Comparison, key: str | None) -> list[dict[str, Any]]:
    """``table``'s rows sorted by the column ``key`` ("score:d": descending), empty cells last."""
    if key is None:
        return table.rows
    column, _, direction = key.rpartition(":")
    if column in table.params:
        where, i = "params", table.params.index(column)
    elif column in table.outputs:
        where, i = "outputs", table.outputs.index(column)
    else:
        return table.rows
    present = [r for r in table.rows if r[where][i] is not None]
    missing = [r for r in table.rows if r[where][i] is None]
    # numbers before text, each in its order: a column may hold both
    present.sort(key=lambda r: (isinstance(r[where][i], str), r[where][i]), reverse=direction == "d")
    return present + missing
