"""A run's HTML report: its DAG and its timeline as inline SVG, and the page that holds them.

Pure: plain data in, markup out; no files, no clock (the caller passes ``now``). The service
writes the pages; the widget panel embeds :func:`dag_svg`. No graphviz: a layered left-to-right
layout is enough for DAGs written by hand, and the picture is then the same everywhere.
Colours are SVG attributes rather than CSS classes, so a picture keeps them wherever it is pasted
(a JupyterLab widget, a sandboxed page); arrowheads are polygons rather than ``<marker>``s, which
need document-wide ids that two pictures on one page would share.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping, Sequence

STATE_COLOURS: dict[str, str] = {
    "success": "#2e7d32", "failed": "#c62828", "upstream_failed": "#c62828", "running": "#1565c0",
    "queued": "#00838f", "up_for_retry": "#ef6c00", "skipped": "#757575", "cancelled": "#6a1b9a",
    "pending": "#bdbdbd",
}
_LIGHT = frozenset({"pending"})  # fills that need dark text
_UNKNOWN = "#9e9e9e"
_FONT = "-apple-system, 'Segoe UI', Helvetica, Arial, sans-serif"
_CHAR_W = 7.0  # average width of a 12px sans-serif character; good enough to size boxes

# DAG geometry (px)
_BOX_H, _GAP_X, _GAP_Y, _PAD, _ARROW = 40, 56, 16, 12, 8
_SLOT_H = 6  # the room a link passing through a column takes there
# timeline geometry (px)
_PLOT_W, _ROW_H, _BAR_H, _AXIS_H = 560, 22, 14, 26

Link = tuple[str, str]  # (upstream task, task)
TaskTimes = tuple[str, str, datetime | None, datetime | None]  # (task, state, started_at, ended_at)


def cell_label(cell: Mapping[str, Any]) -> str:
    """``cell 5/9: time.sleep(3)``: where a running notebook is (a task view's ``cell``)."""
    return f"cell {cell['index']}/{cell['count']}: {cell['source']}"


def state_colour(state: str) -> str:
    return STATE_COLOURS.get(state, _UNKNOWN)


def _text_colour(state: str) -> str:
    return "#212121" if state in _LIGHT else "#ffffff"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _n(value: float) -> str:
    """A coordinate: at most one decimal, no trailing zeros."""
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _svg_open(cls: str, width: float, height: float, label: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="{cls}" width="{_n(width)}" height="{_n(height)}" '
            f'viewBox="0 0 {_n(width)} {_n(height)}" role="img" aria-label="{_e(label)}" '
            f'font-family="{_e(_FONT)}" font-size="12">')


def _fit(name: str, width: float) -> str:
    """``name`` cut with an ellipsis to fit ``width`` px (the full name stays in the tooltip)."""
    room = max(3, int(width / _CHAR_W))
    return name if len(name) <= room else name[: room - 1] + "…"


# -- the DAG ------------------------------------------------------------------------------------

def dag_layers(order: Sequence[str], upstream: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """Each task's column: the length of the longest path to it from a task without upstream
    tasks. ``order`` must be topological (``PipelineSpec.order``); unknown upstream names are ignored."""
    layer: dict[str, int] = {}
    for name in order:
        ups = [layer[u] for u in upstream.get(name, ()) if u in layer]
        layer[name] = 1 + max(ups) if ups else 0
    return layer


_Slot = tuple[str, str, int]  # where a link that skips layers crosses column ``int``


@dataclass
class _Layout:
    pos: dict[str, tuple[float, float]]  # top-left corner of each box
    via: dict[Link, list[float]]  # the heights at which a link crosses the columns it skips
    width: float
    height: float


def _dag_layout(order: Sequence[str], upstream: Mapping[str, Sequence[str]], links: list[Link],
                box_w: float) -> _Layout:
    """Columns by layer; a link that skips layers takes a slot in each column between its ends
    (Sugiyama's dummy nodes), so it is drawn around the boxes there rather than through them."""
    layer = dag_layers(order, upstream)
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


def dag_svg(order: list[str], upstream: Mapping[str, Sequence[str]], states: Mapping[str, str]) -> str:
    """The DAG drawn left to right, one column per layer, each box coloured by its task's state:
    ``<g class="task" data-task=NAME data-state=STATE>``. Each upstream link ends in one
    ``<line class="edge" data-from=U data-to=T>`` and its ``<polygon class="arrow">``; a link
    that skips layers first runs along a ``<polyline class="route">`` past the columns between."""
    box_w = min(220.0, max(96.0, _CHAR_W * max((len(n) for n in order), default=0) + 24))
    known = set(order)
    links = [(up, name) for name in order for up in upstream.get(name, ()) if up in known]
    layout = _dag_layout(order, upstream, links, box_w)
    pos, width, height = layout.pos, layout.width, layout.height
    parts = [_svg_open("nbsched-dag", width, height, f"pipeline graph, {len(order)} task(s)")]
    y_out, y_in = _ports(links, layout, "out"), _ports(links, layout, "in")
    for up, name in links:
        ends = f'data-from="{_e(up)}" data-to="{_e(name)}"'
        x1, y1 = pos[up][0] + box_w, y_out[up, name]
        if layout.via[up, name]:  # straight through each skipped column, in its slot
            points = [(x1, y1)]
            for i, y in enumerate(layout.via[up, name], start=1):
                left = x1 + i * _GAP_X + (i - 1) * box_w
                points += [(left, y), (left + box_w, y)]
            parts.append(f'<polyline class="route" {ends} points="{" ".join(f"{_n(a)},{_n(b)}" for a, b in points)}" '
                         'fill="none" stroke="#757575" stroke-width="1.5"/>')
            x1, y1 = points[-1]
        # the last stretch stops where the arrowhead (a polygon along it) begins
        x2, y2 = pos[name][0], y_in[up, name]
        length = math.hypot(x2 - x1, y2 - y1) or 1.0
        ux, uy = (x2 - x1) / length, (y2 - y1) / length
        bx, by = x2 - ux * _ARROW, y2 - uy * _ARROW
        parts.append(
            f'<line class="edge" {ends} x1="{_n(x1)}" y1="{_n(y1)}" x2="{_n(bx)}" y2="{_n(by)}" '
            f'stroke="#757575" stroke-width="1.5"/>'
            f'<polygon class="arrow" {ends} points="{_n(x2)},{_n(y2)} {_n(bx - uy * 4)},{_n(by + ux * 4)} '
            f'{_n(bx + uy * 4)},{_n(by - ux * 4)}" fill="#757575"/>')
    for name in order:
        state = states.get(name, "pending")
        x, y = pos[name]
        parts.append(
            f'<g class="task" data-task="{_e(name)}" data-state="{_e(state)}">'
            f'<title>{_e(name)}: {_e(state)}</title>'
            f'<rect x="{_n(x)}" y="{_n(y)}" width="{_n(box_w)}" height="{_BOX_H}" rx="6" '
            f'fill="{state_colour(state)}" stroke="#616161" stroke-width="0.5"/>'
            f'<text x="{_n(x + box_w / 2)}" y="{_n(y + 17)}" text-anchor="middle" font-weight="600" '
            f'fill="{_text_colour(state)}">{_e(_fit(name, box_w - 12))}</text>'
            f'<text x="{_n(x + box_w / 2)}" y="{_n(y + 31)}" text-anchor="middle" font-size="10" '
            f'fill="{_text_colour(state)}">{_e(state)}</text></g>')
    parts.append("</svg>")
    return "".join(parts)


# -- the timeline -------------------------------------------------------------------------------

_STEPS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200,
          10800, 21600, 43200, 86400)


def tick_step(total: float, most: int = 6) -> float:
    """A round step (seconds) that puts at most ``most`` intervals on an axis ``total`` seconds long."""
    for step in _STEPS:
        if total / step <= most:
            return step
    return 86400.0 * -(-total // (86400 * most))


def format_seconds(seconds: float) -> str:
    """An axis label: ``0.5s``, ``45s``, ``1m30s``, ``2h``."""
    if seconds < 60:
        return f"{round(seconds, 3):g}s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m" if minutes else f"{hours}h"
    return f"{minutes}m{secs:02d}s" if secs else f"{minutes}m"


def gantt_svg(tasks: Sequence[TaskTimes], *, now: datetime | None = None) -> str:
    """A timeline: one ``<rect class="bar" data-task=NAME ...>`` per task that started, ordered by
    start, x = seconds since the first start. A task still running ends at ``now`` (default: the
    latest time in ``tasks``), so the picture depends on its arguments only."""
    started = sorted(((n, s, a, b) for n, s, a, b in tasks if a is not None), key=lambda t: t[2])
    label_w = min(200.0, max(60.0, _CHAR_W * max((len(t[0]) for t in started), default=0) + 16))
    width = _PAD * 2 + label_w + _PLOT_W
    if not started:
        return (_svg_open("nbsched-gantt", width, 40, "task timeline")
                + f'<text x="{_PAD}" y="24" fill="#616161">no task has started yet</text></svg>')
    t0 = started[0][2]
    known = [t for _, _, a, b in started for t in (a, b) if t is not None]
    until = now or max(known)
    spans = [(n, s, (a - t0).total_seconds(), max(0.0, ((b or until) - a).total_seconds())) for n, s, a, b in started]
    total = max(start + length for _, _, start, length in spans) or 1.0
    scale = _PLOT_W / total
    left, plot_h = _PAD + label_w, len(spans) * _ROW_H
    height = _PAD * 2 + plot_h + _AXIS_H
    parts = [_svg_open("nbsched-gantt", width, height, "task timeline")]
    step = tick_step(total)
    ticks = [round(i * step, 6) for i in range(int(total / step + 1e-9) + 1)]
    axis_y = _PAD + plot_h
    for tick in ticks:
        x = left + tick * scale
        parts.append(f'<line class="tick" x1="{_n(x)}" y1="{_PAD}" x2="{_n(x)}" y2="{_n(axis_y + 4)}" '
                     f'stroke="#e0e0e0"/><text x="{_n(x)}" y="{_n(axis_y + 17)}" text-anchor="middle" '
                     f'font-size="10" fill="#616161">{_e(format_seconds(tick))}</text>')
    parts.append(f'<line class="axis" x1="{_n(left)}" y1="{_n(axis_y)}" x2="{_n(left + _PLOT_W)}" '
                 f'y2="{_n(axis_y)}" stroke="#9e9e9e"/>')
    for row, (name, state, start, length) in enumerate(spans):
        y = _PAD + row * _ROW_H
        # a bar of at least one pixel: a task that took no time still shows that it ran
        parts.append(
            f'<text x="{_n(left - 6)}" y="{_n(y + _ROW_H / 2 + 4)}" text-anchor="end" fill="#212121">'
            f'{_e(_fit(name, label_w - 10))}</text>'
            f'<rect class="bar" data-task="{_e(name)}" data-state="{_e(state)}" data-start="{start:.3f}" '
            f'data-duration="{length:.3f}" x="{_n(left + start * scale)}" y="{_n(y + (_ROW_H - _BAR_H) / 2)}" '
            f'width="{_n(max(1.0, length * scale))}" height="{_BAR_H}" rx="2" fill="{state_colour(state)}">'
            f'<title>{_e(name)}: {_e(state)}, {length:.1f}s from +{start:.1f}s</title></rect>')
    parts.append("</svg>")
    return "".join(parts)


# -- the page -----------------------------------------------------------------------------------

_CSS = """
body { font-family: %s; margin: 24px; color: #212121; max-width: 1200px; }
h1 { font-size: 22px; margin: 0 0 14px; } h2 { font-size: 17px; margin: 28px 0 8px; }
.badge { color: #fff; padding: 1px 7px; border-radius: 3px; font-size: 13px; font-weight: normal; }
.badge.light { color: #212121; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border-bottom: 1px solid #e0e0e0; padding: 5px 10px; text-align: left; vertical-align: top; }
th { background: #fafafa; }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: 4px 16px; font-size: 14px; margin: 0; }
dl.facts dt { color: #616161; } dl.facts dd { margin: 0; }
pre { margin: 0; white-space: pre-wrap; word-break: break-word; font-size: 12px; }
.error { color: #b71c1c; } .none { color: #9e9e9e; }
.picture { overflow-x: auto; }
td.links a { margin-right: 10px; } td.time { white-space: nowrap; }
""" % _FONT


def _badge(state: str) -> str:
    light = " light" if state in _LIGHT else ""
    return f'<span class="badge{light}" style="background:{state_colour(state)}">{_e(state)}</span>'


def _when(iso: str | None) -> datetime | None:
    return datetime.fromisoformat(iso) if iso else None


def _time(iso: str | None) -> str:
    when = _when(iso)
    return _e(when.strftime("%Y-%m-%d %H:%M:%S %Z").strip()) if when else '<span class="none">–</span>'


def _duration(started: str | None, ended: str | None) -> str:
    a, b = _when(started), _when(ended)
    if a is None or b is None:
        return '<span class="none">–</span>'
    seconds = (b - a).total_seconds()
    return f"{seconds:.1f}s" if seconds < 120 else format_seconds(seconds)


def _json(value: Any) -> str:
    return _e(json.dumps(value, ensure_ascii=False, default=str))


def run_report_html(view: Mapping[str, Any], dag: str, gantt: str,
                    task_links: Mapping[str, Mapping[str, str]]) -> str:
    """One run's report as a self-contained page (inline CSS, nothing fetched). ``view`` is
    ``run_view(run)``; ``dag`` and ``gantt`` come from :func:`dag_svg` and :func:`gantt_svg`
    and are inserted as they are; ``task_links`` maps a task to ``{label: href}`` (its report and
    notebook: files beside the page, or the REST routes), so one page shape serves both."""
    pipeline, run_id, state = view["pipeline"], view["run_id"], view["state"]
    trigger = view.get("trigger") or "–"
    if view.get("schedule_id") is not None:
        sched = f"schedule {view['schedule_id']}"
        trigger = sched if trigger == "schedule" else f"{trigger} ({sched})"
    facts = [
        ("Pipeline", f"{_e(pipeline)} v{_e(view.get('pipeline_version', '?'))}"),
        ("Run", _e(run_id)), ("State", _badge(state)), ("Trigger", _e(trigger)),
        ("Logical date", _time(view.get("logical_date"))), ("Created", _time(view.get("created_at"))),
        ("Started", _time(view.get("started_at"))), ("Ended", _time(view.get("ended_at"))),
        ("Duration", _duration(view.get("started_at"), view.get("ended_at"))),
    ]
    if view.get("error"):
        facts.append(("Error", f'<span class="error">{_e(view["error"])}</span>'))
    params = view.get("params") or {}
    params_html = ("<table class=\"params\"><thead><tr><th>name</th><th>value</th></tr></thead><tbody>"
                   + "".join(f'<tr data-param="{_e(k)}"><td>{_e(k)}</td><td><code>{_json(v)}</code></td></tr>'
                             for k, v in params.items()) + "</tbody></table>"
                   if params else '<p class="none">none given: the pipeline\'s own values</p>')
    rows = []
    for name, t in view.get("tasks", {}).items():
        error = f'<pre class="error">{_e(t["error"])}</pre>' if t.get("error") else ""
        earlier = [a for a in t.get("tries", []) if a["try_number"] < t.get("try_number", 0)]
        if earlier:  # what the tries before the last did
            error += ('<details class="tries"><summary>earlier tries</summary><ol>' + "".join(
                f'<li data-try="{_e(a["try_number"])}">try {_e(a["try_number"])} {_badge(a["state"])} '
                f'on {_e(a.get("host") or "?")}, {_duration(a.get("started_at"), a.get("ended_at"))}'
                + (f'<pre class="error">{_e(a["error"])}</pre>' if a.get("error") else "") + "</li>"
                for a in earlier) + "</ol></details>")
        outputs = f'<pre class="outputs">{_json(t["outputs"])}</pre>' if t.get("outputs") else ""
        links = "".join(f'<a href="{_e(href)}">{_e(label)}</a>' for label, href in task_links.get(name, {}).items())
        rows.append(
            f'<tr data-task="{_e(name)}" data-state="{_e(t["state"])}"><td>{_e(name)}</td>'
            f'<td>{_badge(t["state"])}</td><td>{_e(t.get("try_number", 0))}/{_e(t.get("max_tries", 1))}</td>'
            f'<td class="time">{_time(t.get("started_at"))}</td>'
            f'<td class="time">{_duration(t.get("started_at"), t.get("ended_at"))}</td>'
            f'<td>{error}</td><td>{outputs}</td><td class="links">{links}</td></tr>')
    title = f"{pipeline} · run {run_id} · {state}"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<h1>{_e(pipeline)} {_badge(state)}</h1>
<dl class="facts">{"".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)}</dl>
<h2>Parameters</h2>
{params_html}
<h2>Graph</h2>
<div class="picture">{dag}</div>
<h2>Timeline</h2>
<div class="picture">{gantt}</div>
<h2>Tasks</h2>
<table class="tasks"><thead><tr><th>task</th><th>state</th><th>tries</th><th>started</th><th>duration</th>
<th>error</th><th>recorded outputs</th><th>links</th></tr></thead>
<tbody>
{"".join(rows)}
</tbody></table>
</body>
</html>
"""
