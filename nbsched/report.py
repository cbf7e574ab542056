"""A run's HTML report: its DAG and its timeline as inline SVG, and the page that holds them.

Pure: plain data in, markup out; no clock (the caller passes ``now``). The service writes the
pages; the widget panel embeds :func:`dag_svg`. The layouts are computed here, the markup comes
from the templates ``run_report.html.j2``, ``dag.svg.j2`` and ``gantt.svg.j2`` (:mod:`nbsched.render`),
which a project may replace. No graphviz: a layered left-to-right layout is enough for DAGs
written by hand, and the picture is then the same everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from nbsched.dag import layers
from nbsched.failures import INJECTED_LABEL
from nbsched.fanout import task_of
from nbsched.render import markup, render
from nbsched.states import RunTrigger, TaskState
from nbsched.views import task_rows

_CHAR_W = 7.0  # average width of a 12px sans-serif character; good enough to size boxes

# DAG geometry (px)
_BOX_H, _GAP_X, _GAP_Y, _PAD, _ARROW = 40, 56, 16, 12, 8
_SLOT_H = 6  # the room a link passing through a column takes there
# timeline geometry (px)
_PLOT_W, _ROW_H, _BAR_H, _AXIS_H = 560, 22, 14, 26

Link = tuple[str, str]  # (upstream task, task)
TaskTimes = tuple[str, str, datetime | None, datetime | None]  # (task, state, started_at, ended_at)
Point = tuple[float, float]


def where_running(cell: Mapping[str, Any]) -> str:
    """``cell 5/9: time.sleep(3)``: where a running notebook is (a task view's ``cell``), numbered
    as the user's notebook numbers its cells; or ``injected parameters cell``."""
    if cell.get("injected"):
        return INJECTED_LABEL
    return f"cell {cell['index']}/{cell['count']}: {cell['source']}"


def _fit(name: str, width: float) -> str:
    """``name`` cut with an ellipsis to fit ``width`` px (the full name stays in the tooltip)."""
    room = max(3, int(width / _CHAR_W))
    return name if len(name) <= room else name[: room - 1] + "…"


# -- the DAG ------------------------------------------------------------------------------------


_Slot = tuple[str, str, int]  # where a link that skips layers crosses column ``int``


@dataclass
class _Layout:
    pos: dict[str, tuple[float, float]]  # top-left corner of each box
    via: dict[Link, list[float]]  # the heights at which a link crosses the columns it skips
    width: float
    height: float


def _dag_layout(
    order: Sequence[str], upstream: Mapping[str, Sequence[str]], links: list[Link], box_w: float
) -> _Layout:
    """Columns by layer; a link that skips layers takes a slot in each column between its ends
    (Sugiyama's dummy nodes), so it is drawn around the boxes there rather than through them."""
    layer = layers(order, upstream)  # a column each
    columns: list[list[str | _Slot]] = [[] for _ in range(max(layer.values(), default=-1) + 1)]
    before: dict[str | _Slot, list[str | _Slot]] = {name: [] for name in order}  # neighbours one column left
    for name in order:
        columns[layer[name]].append(name)
    for up, name in links:
        prev: str | _Slot = up
        for col in range(layer[up] + 1, layer[name]):
            slot = (up, name, col)
            columns[col].append(slot)
            before[slot], prev = [prev], slot
        before[name].append(prev)
    seq = {item: i for i, item in enumerate(item for column in columns for item in column)}

    def size(item: str | _Slot) -> float:
        return _BOX_H if isinstance(item, str) else _SLOT_H

    heights = [sum(map(size, c)) + _GAP_Y * (len(c) - 1) for c in columns]
    tallest = max(heights, default=0.0)
    centre: dict[str | _Slot, float] = {}
    pos: dict[str, tuple[float, float]] = {}
    for col, items in enumerate(columns):
        if col:  # one barycentre pass: an item sits near the mean height of its neighbours on the left

            def key(item: str | _Slot) -> tuple[float, int]:
                ys = [centre[b] for b in before[item]]
                return (sum(ys) / len(ys) if ys else 0.0, seq[item])

            items.sort(key=key)
        x, y = _PAD + col * (box_w + _GAP_X), _PAD + (tallest - heights[col]) / 2
        for item in items:
            centre[item] = y + size(item) / 2
            if isinstance(item, str):
                pos[item] = (x, y)
            y += size(item) + _GAP_Y
    via = {(up, name): [centre[(up, name, col)] for col in range(layer[up] + 1, layer[name])] for up, name in links}
    width = 2 * _PAD + len(columns) * box_w + max(0, len(columns) - 1) * _GAP_X
    return _Layout(pos=pos, via=via, width=width, height=2 * _PAD + tallest)


def _ports(links: list[Link], layout: _Layout, side: str) -> dict[Link, float]:
    """Where each link meets a box's side: spread over the middle half of the side, in the order
    of the heights the links come from (or go to), so arrows into one box neither meet nor cross."""
    by_box: dict[str, list[Link]] = {}
    for link in links:
        by_box.setdefault(link[0] if side == "out" else link[1], []).append(link)

    def other_end(link: Link) -> float:
        if layout.via[link]:
            return layout.via[link][0 if side == "out" else -1]
        return layout.pos[link[1] if side == "out" else link[0]][1] + _BOX_H / 2

    ports = {}
    for box, mine in by_box.items():
        mine.sort(key=other_end)
        for i, link in enumerate(mine):
            ports[link] = layout.pos[box][1] + _BOX_H / 4 + _BOX_H / 2 * (i + 1) / (len(mine) + 1)
    return ports


@dataclass(frozen=True)
class DagBox:
    name: str
    state: str
    x: float
    y: float
    label: str  # the name, shortened to fit
    note: str  # under it: its state, or a mapped task's instances by state ("6: 5 success, 1 failed")


@dataclass(frozen=True)
class DagLink:
    up: str
    down: str
    route: list[Point]  # past the columns a link skips (empty for one that skips none)
    x1: float
    y1: float
    x2: float
    y2: float
    head: list[Point]  # the arrowhead, its tip first


def dag_svg(
    order: list[str],
    upstream: Mapping[str, Sequence[str]],
    states: Mapping[str, str],
    *,
    home: Path | None = None,
    notes: Mapping[str, str] | None = None,
) -> str:
    """The DAG drawn left to right, one column per layer, each box coloured by its task's state:
    ``<g class="task" data-task=NAME data-state=STATE>``. Each upstream link ends in one
    ``<line class="edge" data-from=U data-to=T>`` and its ``<polygon class="arrow">``; a link
    that skips layers first runs along a ``<polyline class="route">`` past the columns between.
    ``home``: the project's nbsched folder, whose ``templates/dag.svg.j2`` may restyle it."""
    box_w = min(220.0, max(96.0, _CHAR_W * max((len(n) for n in order), default=0) + 24))
    known = set(order)
    links = [(up, name) for name in order for up in upstream.get(name, ()) if up in known]
    layout = _dag_layout(order, upstream, links, box_w)
    pos = layout.pos
    y_out, y_in = _ports(links, layout, "out"), _ports(links, layout, "in")
    drawn: list[DagLink] = []
    for up, name in links:
        x1, y1 = pos[up][0] + box_w, y_out[up, name]
        route: list[Point] = []
        if layout.via[up, name]:  # straight through each skipped column, in its slot
            route = [(x1, y1)]
            for i, y in enumerate(layout.via[up, name], start=1):
                left = x1 + i * _GAP_X + (i - 1) * box_w
                route += [(left, y), (left + box_w, y)]
            x1, y1 = route[-1]
        # the last stretch stops where the arrowhead (a polygon along it) begins
        x2, y2 = pos[name][0], y_in[up, name]
        length = math.hypot(x2 - x1, y2 - y1) or 1.0
        ux, uy = (x2 - x1) / length, (y2 - y1) / length
        bx, by = x2 - ux * _ARROW, y2 - uy * _ARROW
        drawn.append(
            DagLink(
                up=up,
                down=name,
                route=route,
                x1=x1,
                y1=y1,
                x2=bx,
                y2=by,
                head=[(x2, y2), (bx - uy * 4, by + ux * 4), (bx + uy * 4, by - ux * 4)],
            )
        )
    boxes = [
        DagBox(
            name=name,
            state=states.get(name, "pending"),
            x=pos[name][0],
            y=pos[name][1],
            label=_fit(name, box_w - 12),
            # a smaller font: a note may be a fifth longer than a name
            note=_fit(notes[name], (box_w - 12) * 1.2) if notes and name in notes else states.get(name, "pending"),
        )
        for name in order
    ]
    return render(
        "dag.svg.j2",
        home,
        width=layout.width,
        height=layout.height,
        box_width=box_w,
        box_height=_BOX_H,
        boxes=boxes,
        links=drawn,
    )


# -- the timeline -------------------------------------------------------------------------------

_STEPS = (
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.5,
    1,
    2,
    5,
    10,
    15,
    30,
    60,
    120,
    300,
    600,
    900,
    1800,
    3600,
    7200,
    10800,
    21600,
    43200,
    86400,
)


def tick_step(total: float, most: int = 6) -> float:
    """A round step (seconds) that puts at most ``most`` intervals on an axis ``total`` seconds long."""
    for step in _STEPS:
        if total / step <= most:
            return step
    return 86400.0 * -(-total // (86400 * most))


@dataclass(frozen=True)
class GanttTick:
    x: float
    seconds: float


@dataclass(frozen=True)
class GanttBar:
    name: str
    state: str
    label: str  # the name, shortened to fit
    y: float  # its row's top
    start: float  # seconds since the first start
    length: float  # seconds
    x: float
    width: float


def gantt_svg(tasks: Sequence[TaskTimes], *, now: datetime | None = None, home: Path | None = None) -> str:
    """A timeline: one ``<rect class="bar" data-task=NAME ...>`` per task that started, ordered by
    start, x = seconds since the first start. A task still running ends at ``now`` (default: the
    latest time in ``tasks``), so the picture depends on its arguments only. ``home``: the
    project's nbsched folder, whose ``templates/gantt.svg.j2`` may restyle it."""
    started = sorted(((n, s, a, b) for n, s, a, b in tasks if a is not None), key=lambda t: t[2])
    label_w = min(200.0, max(60.0, _CHAR_W * max((len(t[0]) for t in started), default=0) + 16))
    ticks: list[GanttTick] = []
    bars: list[GanttBar] = []
    if started:
        t0 = started[0][2]
        known = [t for _, _, a, b in started for t in (a, b) if t is not None]
        until = now or max(known)
        spans = [
            (n, s, (a - t0).total_seconds(), max(0.0, ((b or until) - a).total_seconds())) for n, s, a, b in started
        ]
        total = max(start + length for _, _, start, length in spans) or 1.0
        scale, left = _PLOT_W / total, _PAD + label_w
        step = tick_step(total)
        ticks = [
            GanttTick(x=left + tick * scale, seconds=tick)
            for tick in (round(i * step, 6) for i in range(int(total / step + 1e-9) + 1))
        ]
        bars = [
            GanttBar(
                name=name,
                state=state,
                label=_fit(name, label_w - 10),
                y=_PAD + row * _ROW_H,
                start=start,
                length=length,
                x=left + start * scale,
                width=max(1.0, length * scale),
            )
            for row, (name, state, start, length) in enumerate(spans)
        ]
    plot_h = len(bars) * _ROW_H
    return render(
        "gantt.svg.j2",
        home,
        width=_PAD * 2 + label_w + _PLOT_W,
        height=_PAD * 2 + plot_h + _AXIS_H if bars else 40,
        pad=_PAD,
        label_width=label_w,
        plot_width=_PLOT_W,
        axis_y=_PAD + plot_h,
        row_height=_ROW_H,
        bar_height=_BAR_H,
        ticks=ticks,
        bars=bars,
    )


# -- the page -----------------------------------------------------------------------------------


def run_report_html(
    view: Mapping[str, Any],
    dag: str,
    gantt: str,
    task_links: Mapping[str, Mapping[str, str]],
    *,
    home: Path | None = None,
    took: str | None = None,
) -> str:
    """One run's report as a self-contained page (inline CSS, nothing fetched). ``view`` is
    ``RunView.to_json()``; ``dag`` and ``gantt`` come from :func:`dag_svg` and :func:`gantt_svg`
    and are inserted as they are; ``task_links`` maps a task to ``{label: href}`` (its report and
    notebook: files beside the page, or the REST routes), so one page shape serves both.
    ``home``: the project's nbsched folder, whose ``templates/run_report.html.j2`` may restyle it.
    ``took``: how long it ran in all (its runs before a retry or repair included)."""
    return render(
        "run_report.html.j2",
        home,
        view=view,
        trigger=trigger_label(view),
        took=took,
        dag=markup(dag),
        gantt=markup(gantt),
        task_links=task_links,
        comparisons=comparisons(view["tasks"]),
    )


@dataclass(frozen=True)
class Comparison:
    """A mapped task's instances side by side: a row per instance, a column per parameter of its
    grid or for_each and per scalar value its notebooks recorded."""

    task: str
    params: list[str]
    outputs: list[str]
    rows: list[dict[str, Any]]  # name, label, state, params: [values], outputs: [values] (None: missing)


def comparisons(tasks: Mapping[str, Mapping[str, Any]]) -> list[Comparison]:
    """One :class:`Comparison` per mapped task of a run (its ``tasks`` JSON), in run order."""
    tables = []
    for task_name, task in tasks.items():
        instances = task.get("instances") or []
        if not instances:
            continue
        params = list(dict.fromkeys(k for t in instances for k in (t.get("instance_params") or {})))
        outputs = list(dict.fromkeys(k for t in instances for k, v in (t.get("outputs") or {}).items() if _scalar(v)))
        rows = [
            {
                "name": t["name"],
                "label": t.get("label", t["name"]),
                "state": t["state"],
                "params": [(t.get("instance_params") or {}).get(k) for k in params],
                "outputs": [v if _scalar(v := (t.get("outputs") or {}).get(k)) else None for k in outputs],
            }
            for t in instances
        ]
        tables.append(Comparison(task=task_name, params=params, outputs=outputs, rows=rows))
    return tables


def _scalar(value: Any) -> bool:
    return isinstance(value, (int, float, bool)) or (isinstance(value, str) and len(value) <= 80)


def task_states(tasks: Mapping[str, Mapping[str, Any]]) -> tuple[dict[str, str], dict[str, str]]:
    """The state of each of a run's tasks for its DAG picture (its ``tasks`` JSON), and for each
    mapped task a note of its instances by state: ``6: 5 success, 1 failed``."""
    states = {name: task["state"] for name, task in tasks.items()}
    notes = {
        name: f"{len(task['instances'])}: " + ", ".join(f"{n} {s}" for s, n in task["instance_states"].items())
        for name, task in tasks.items()
        if task.get("instances")
    }
    return states, notes


def tasks_done(view: Mapping[str, Any]) -> str:
    """``3/4``: how many of a run's task rows (a mapped task's instances one by one) succeeded or
    were skipped; a partial run counts those it selected, and says how many it did not run."""
    rows = task_rows(view["tasks"])
    selection = view.get("selection")
    chosen = {task_of(r) for r in selection["tasks"]} if selection else None
    rows = {name: row for name, row in rows.items() if row["state"] != TaskState.REMOVED}  # a repair took them out
    mine = [row for name, row in rows.items() if chosen is None or task_of(name) in chosen]
    done = sum(row["state"] in (TaskState.SUCCESS, TaskState.SKIPPED) for row in mine)
    left = len(rows) - len(mine)
    return f"{done}/{len(mine)}" + (f" ({left} not selected)" if left else "")


def trigger_label(view: Mapping[str, Any]) -> str:
    """What made a run, for people: ``schedule 3``, ``catchup (schedule 3)``, ``after run X of
    ingest (schedule 4)``, ``file incoming/a.csv (schedule 5)``; a partial run says which tasks
    it ran (``manual --only report``), and a run started again says how often (``manual,
    repaired ×2``). ``view`` is ``RunView.to_json()``."""  # noqa: RUF002 - a multiplication sign
    trigger = view.get("trigger") or "–"  # noqa: RUF001 - an en dash, as in the tables
    fired_by = view.get("fired_by") or {}
    if "run" in fired_by:
        upstream = fired_by["run"]
        label = f"after run {upstream['run_id']} of {upstream['pipeline']} (schedule {fired_by['schedule_id']})"
    elif "file" in fired_by:
        label = f"file {fired_by['file']['path']} (schedule {fired_by['schedule_id']})"
    elif view.get("schedule_id") is not None:
        sched = f"schedule {view['schedule_id']}"
        label = sched if trigger == RunTrigger.SCHEDULE else f"{trigger} ({sched})"
    else:
        label = str(trigger)
    selection = view.get("selection")
    if selection:
        label += f" --from {selection['from']}" if "from" in selection else f" --only {_names(selection)}"
    repairs = len(view.get("repairs") or ())
    # each retry or repair that started it again left a span; a repair of a run that never started did not
    retries = max(0, len(view.get("spans") or ()) - 1 - repairs)
    for count, what in ((repairs, "repaired"), (retries, "retried")):
        if count:
            label += f", {what} ×{count}"  # noqa: RUF001 - a multiplication sign
    return label


def _names(selection: Mapping[str, Any], most: int = 3) -> str:
    """The tasks a partial run was given (its rows' tasks for a run made before they were kept),
    the first ``most`` of them."""
    names = selection.get("only") or list(dict.fromkeys(task_of(row) for row in selection["tasks"]))
    return ",".join(names[:most]) + (f",… (+{len(names) - most})" if len(names) > most else "")
