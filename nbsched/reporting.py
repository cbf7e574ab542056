"""Run reports as files and pages: each task's executed notebook as HTML (nbconvert), and the
run's page with its DAG, timeline and tasks (drawn by ``nbsched.report``)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from nbsched.report import dag_svg, gantt_svg, run_report_html, task_states

if TYPE_CHECKING:
    from nbsched.spec import PipelineSpec
    from nbsched.views import RunView, TaskView

Links = Mapping[str, Mapping[str, str]]  # task -> {label: href}


def output_notebook(task: TaskView) -> Path | None:
    """The task's executed notebook, if it has one and the file is there."""
    return Path(task.output_path) if task.output_path and Path(task.output_path).is_file() else None


def task_html(notebook: Path, *, hide_code: bool = False) -> Path:
    """The task's HTML report (nbconvert), made on first request and kept beside ``notebook``.
    It carries the modification time of the notebook it was made from, and is made again when
    the notebook's differs: being newer proves nothing, since the task's notebook may become a
    try's file saved before the report was made (``nbsched.outputs``)."""
    html = notebook.with_suffix(".nocode.html" if hide_code else ".html")
    if html.is_symlink():  # it is written here and served: never through a link out of the folder
        html.unlink()
    made_from = notebook.stat()  # before reading it: a notebook that changes meanwhile is made again next time
    if not html.exists() or html.stat().st_mtime_ns != made_from.st_mtime_ns:
        from nbconvert import HTMLExporter

        body, _ = HTMLExporter(exclude_input=hide_code).from_filename(str(notebook))
        written = html.with_name(f".{html.name}.{secrets.token_hex(4)}.tmp")  # a reader never sees half of it
        written.write_text(body, encoding="utf-8")
        os.utime(written, ns=(made_from.st_atime_ns, made_from.st_mtime_ns))
        os.replace(written, html)
    return html


def run_page(run: RunView, spec: PipelineSpec | None, links: Links, *, now: datetime, home: Path | None = None) -> str:
    """The run's report page; without ``spec`` (its pipeline was deleted, its runs stay) the tasks
    are drawn without their edges. A task that has not ended is drawn up to ``now``. ``home``: the
    project's nbsched folder, whose ``templates/`` may restyle the page."""
    if spec is None:
        order, upstream = list(dict.fromkeys(t.mapped_from or n for n, t in run.tasks.items())), {}
    else:
        order, upstream = spec.order, {n: list(spec.tasks[n].upstream) for n in spec.order}
    view = run.to_json()
    states, notes = task_states(view["tasks"])
    times = [(n, t.state.value, t.started_at, t.ended_at) for n, t in run.tasks.items()]
    return run_report_html(
        view,
        dag_svg(order, upstream, states, home=home, notes=notes),
        gantt_svg(times, now=run.ended_at or now, home=home),
        links,
        home=home,
        took=run.ran_text(run.ended_at or now) if run.spans else None,
    )


def write_run_report(
    run: RunView,
    spec: PipelineSpec | None,
    folder: Path,
    files: Mapping[str, tuple[Path | None, Path]],
    *,
    hide_code: bool,
    now: datetime,
    home: Path | None = None,
) -> Path:
    """Write ``index.html`` (``index.nocode.html`` with ``hide_code``) into ``folder``, linking
    each task's ``(report, notebook)`` relatively (its notebook only, without a report), so the
    folder can be moved or served as it is. Returns the page's path."""
    links = {
        name: {**({"report": _href(report, folder)} if report else {}), "notebook": _href(notebook, folder)}
        for name, (report, notebook) in files.items()
    }
    folder.mkdir(parents=True, exist_ok=True)
    index = folder / ("index.nocode.html" if hide_code else "index.html")
    index.write_text(run_page(run, spec, links, now=now, home=home), encoding="utf-8")
    return index


def _href(target: Path, folder: Path) -> str:
    """A relative URL from a page in ``folder`` to ``target``."""
    return quote(Path(os.path.relpath(target, folder)).as_posix())
