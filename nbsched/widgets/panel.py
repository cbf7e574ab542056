"""The run-history panel: a VBox of stock ipywidgets over the service.

Pipeline selector; runs table with state colours; the chosen run's DAG picture, tasks,
links to output notebooks and inline reports; a progress bar; buttons Run now (with
parameter overrides), Cancel, Retry failed, Pause/Resume schedules. It refreshes itself
from a background thread while shown and stops that thread when closed. Button handlers
report their mistakes in the panel's status line instead of raising, so the panel never breaks.
"""

from __future__ import annotations

import html
import os
import threading
from datetime import datetime
from typing import Any

import ipywidgets as w

from nbsched.dag import TaskState
from nbsched.errors import NbschedError
from nbsched.params import parse_override
from nbsched.report import STATE_COLOURS, cell_label
from nbsched.service import Service

ALL = "(all pipelines)"
_CHOSEN = ' class="nbsched-chosen"'

# Scoped to the panel; JupyterLab's theme variables, so a dark theme stays readable.
_STYLE = """<style>
.nbsched-panel table { border-collapse: collapse; font-size: 12.5px; margin: 4px 0 8px; }
.nbsched-panel th { text-align: left; font-weight: 600; padding: 3px 12px 3px 4px;
  border-bottom: 2px solid var(--jp-border-color1, #ccc); }
.nbsched-panel td { padding: 3px 12px 3px 4px; vertical-align: top;
  border-bottom: 1px solid var(--jp-border-color2, #e0e0e0); }
.nbsched-panel tr.nbsched-chosen td { background: var(--jp-layout-color2, #eeeeee); }
.nbsched-panel a { color: var(--jp-content-link-color, #1565c0); text-decoration: underline; }
.nbsched-panel .nbsched-cell { color: var(--jp-ui-font-color2, #616161); font-family: var(--jp-code-font-family, monospace); }
.nbsched-panel .nbsched-error { color: #c62828; }
</style>"""


def _badge(state: str) -> str:
    return (f'<span class="nbsched-state" data-state="{state}" style="color:white;background:'
            f'{STATE_COLOURS.get(state, "#616161")};padding:1px 6px;border-radius:3px">{state}</span>')


def _duration(view: dict[str, Any]) -> str:
    if not view["started_at"]:
        return "-"
    end = datetime.fromisoformat(view["ended_at"]) if view["ended_at"] else datetime.now().astimezone()
    return f"{(end - datetime.fromisoformat(view['started_at'])).total_seconds():.1f}s"


def _local(iso: str | None) -> str:
    """An ISO time as this machine's wall-clock time, to the second."""
    return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M:%S") if iso else "-"


def _button(description: str, icon: str, style: str = "") -> w.Button:
    # as wide as its words, never squeezed by a narrow notebook
    return w.Button(description=description, icon=icon, button_style=style,
                    layout=w.Layout(width="auto", flex="0 0 auto"))


class RunPanel(w.VBox):
    def __init__(self, service: Service, pipeline: str | None = None, *, refresh_every: float = 2.0,
                 limit: int = 15) -> None:
        if pipeline:
            service.pipeline(pipeline)  # an unknown name is a NotFound, before any widget exists
        self.service = service
        self.limit = limit
        self.refresh_every = refresh_every
        self.pipeline = w.Dropdown(description="Pipeline", options=[ALL])
        self.run_choice = w.Dropdown(description="Run", options=[])
        self.params = w.Text(description="Params", placeholder="key=value, key=value",
                             layout=w.Layout(width="auto", flex="1 1 240px"))
        self.run_now = _button("Run now", "play", "success")
        self.cancel_run = _button("Cancel", "stop", "danger")
        self.retry_run = _button("Retry failed", "redo")
        self.toggle_schedule = _button("Pause schedules", "pause")
        self.progress = w.IntProgress(description="Tasks", min=0, max=1, value=0)
        self.progress_label = w.Label()
        self.runs_table = w.HTML()
        self.detail = w.HTML()
        self.task_choice = w.Dropdown(description="Task", options=[])
        self.show_report = _button("Show report", "file")
        self.report = w.HTML()
        self.status = w.HTML()
        super().__init__(children=[
            w.HTML(_STYLE),
            w.HBox([self.pipeline, self.params, self.run_now, self.toggle_schedule]),
            self.runs_table,
            w.HBox([self.run_choice, self.cancel_run, self.retry_run]),
            w.HBox([self.progress, self.progress_label]),
            self.detail,
            w.HBox([self.task_choice, self.show_report]),
            self.report, self.status,
        ])
        self.add_class("nbsched-panel")
        self.run_now.on_click(self._guard(self._on_run_now))
        self.cancel_run.on_click(self._guard(self._on_cancel))
        self.retry_run.on_click(self._guard(self._on_retry))
        self.toggle_schedule.on_click(self._guard(self._on_toggle_schedule))
        self.show_report.on_click(self._guard(self._on_show_report))
        self.pipeline.observe(self._guard(lambda _: self.refresh()), names="value")
        self.run_choice.observe(self._guard(lambda _: self._render()), names="value")
        self.task_choice.observe(self._guard(lambda _: self._drop_stale_report()), names="value")
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
            self._runs = [r.to_json() for r in self.service.list_runs(pipeline=pipeline, limit=self.limit)]
            ids = [r["run_id"] for r in self._runs]
            chosen = self.run_choice.value
            if list(self.run_choice.options) != ids:
                self.run_choice.options = ids
                self.run_choice.value = chosen if chosen in ids else (ids[0] if ids else None)
            schedules = self.service.list_schedules(pipeline) if pipeline else []
            self.toggle_schedule.disabled = not schedules
            paused = bool(schedules) and not any(s.enabled for s in schedules)
            self.toggle_schedule.description = "Resume schedules" if paused else "Pause schedules"
            self._render()

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.refresh_every):
            try:
                self.refresh()
            except Exception as exc:  # keep refreshing: the database may be busy for a moment
                self._say(f"refresh failed: {exc}")

    def _say(self, message: str) -> None:
        self.status.value = f'<span class="nbsched-status" style="color:#c62828">nbsched: {html.escape(message)}</span>'


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
        if not self._runs:
            return "<p>No runs yet.</p>"
        chosen = self.run_choice.value
        rows = "".join(
            f'<tr data-run="{html.escape(r["run_id"])}"{_CHOSEN if r["run_id"] == chosen else ""}>'
            f'<td>{html.escape(r["run_id"])}</td><td>{html.escape(r["pipeline"])}</td><td>{_badge(r["state"])}</td>'
            f'<td>{html.escape(r["trigger"])}</td><td>{_local(r["started_at"] or r["created_at"])}</td>'
            f'<td>{_duration(r)}</td></tr>'
            for r in self._runs)
        return ('<table class="nbsched-runs"><thead><tr><th>run</th><th>pipeline</th><th>state</th>'
                f'<th>trigger</th><th>started</th><th>duration</th></tr></thead><tbody>{rows}</tbody></table>')

    def _selected(self) -> dict[str, Any] | None:
        return next((r for r in self._runs if r["run_id"] == self.run_choice.value), None)

    def _render_detail(self) -> None:
        from nbsched.report import dag_svg

        view = self._selected()
        if view is None:
            self.detail.value, self.progress.max, self.progress.value = "", 1, 0
            self.progress_label.value = ""
            self.task_choice.options = []
            self._drop_stale_report()
            return
        tasks = view["tasks"]
        done = sum(TaskState(t["state"]).finished for t in tasks.values())
        self.progress.max, self.progress.value = max(1, len(tasks)), done
        running = [f"{n} ({cell_label(t['cell'])})" if t["cell"] else n
                   for n, t in tasks.items() if t["state"] == "running"]
        self.progress_label.value = f"{done}/{len(tasks)} done" + (f" · running: {', '.join(running)}" if running else "")
        self.cancel_run.disabled = view["state"] not in ("queued", "running")
        self.retry_run.disabled = view["state"] not in ("failed", "cancelled")
        spec = self.service.pipeline_spec_for_run(view["run_id"])
        picture = dag_svg(spec.order, {n: list(spec.tasks[n].upstream) for n in spec.order},
                          {n: t["state"] for n, t in tasks.items()})
        rows = "".join(
            f'<tr data-task="{html.escape(n)}"><td>{html.escape(n)}</td><td>{_badge(t["state"])}</td>'
            f'<td>{t["try_number"]}/{t["max_tries"]}</td><td>{_duration(t)}</td>'
            f'<td>{self._note(t)}</td><td>{self._link(t["output_path"])}</td></tr>'
            for n, t in tasks.items())
        self.detail.value = (
            f'<div class="nbsched-detail"><b>{html.escape(view["pipeline"])}</b> run '
            f'{html.escape(view["run_id"])} {_badge(view["state"])}<div>{picture}</div>'
            '<table class="nbsched-tasks"><thead><tr><th>task</th><th>state</th><th>tries</th><th>duration</th>'
            f'<th>error / now at</th><th>notebook</th></tr></thead><tbody>{rows}</tbody></table></div>')
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

    @staticmethod
    def _note(task: dict[str, Any]) -> str:
        if task["state"] == "running" and task["cell"]:
            return f'<span class="nbsched-cell">{html.escape(cell_label(task["cell"]))}</span>'
        return f'<span class="nbsched-error">{html.escape(task["error"])}</span>' if task["error"] else ""

    @staticmethod
    def _link(path: str | None) -> str:
        if not path:
            return ""
        # relative to the kernel's folder, so JupyterLab opens the notebook in a tab
        rel = os.path.relpath(path)
        return f'<a href="{html.escape(rel)}" target="_blank">{html.escape(os.path.basename(path))}</a>'

    # -- buttons -----------------------------------------------------------------------------------
    def _guard(self, fn: Any) -> Any:
        def handler(*args: Any) -> None:
            self.status.value = ""
            try:
                fn(*args)
            except (NbschedError, ValueError) as exc:
                self._say(str(exc))
            except Exception as exc:  # a bug must not take the panel down with it
                self._say(f"{type(exc).__name__}: {exc}")
        return handler

    def _on_run_now(self, _: Any) -> None:
        overrides = dict(parse_override(p.strip()) for p in self.params.value.split(",") if p.strip())
        run_id = self.service.trigger(self.pipeline.value, overrides)
        self.refresh()
        self.run_choice.value = run_id

    def _on_cancel(self, _: Any) -> None:
        self.service.cancel(self.run_choice.value)
        self.refresh()

    def _on_retry(self, _: Any) -> None:
        self.service.retry(self.run_choice.value)
        self.refresh()

    def _on_toggle_schedule(self, _: Any) -> None:
        schedules = self.service.list_schedules(self.pipeline.value)
        resume = not any(s.enabled for s in schedules)
        for s in schedules:
            (self.service.resume if resume else self.service.pause)(s.id)
        self.refresh()

    def _on_show_report(self, _: Any) -> None:
        report = self.service.task_report(self.run_choice.value, self.task_choice.value)
        page = html.escape(report.read_text(encoding="utf-8"))
        # a sandboxed frame: the report's scripts and styles stay out of JupyterLab's page
        self.report.value = (f'<iframe class="nbsched-report" sandbox="allow-scripts" srcdoc="{page}" '
                             'style="width:100%;height:480px;border:1px solid #ddd"></iframe>')
        self._report_of = (self.run_choice.value, self.task_choice.value)
