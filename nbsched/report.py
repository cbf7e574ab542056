"""Pictures of a run, as inline SVG strings (pure: data in, markup out)."""

from __future__ import annotations

import html
from typing import Mapping, Sequence

STATE_COLOURS = {"success": "#2e7d32", "failed": "#c62828", "upstream_failed": "#c62828", "running": "#1565c0",
                 "queued": "#00838f", "up_for_retry": "#ef6c00", "skipped": "#757575", "cancelled": "#6a1b9a",
                 "pending": "#bdbdbd"}
_W, _H, _GAP_X, _GAP_Y = 130, 34, 50, 16


def dag_svg(order: Sequence[str], upstream: Mapping[str, Sequence[str]], states: Mapping[str, str]) -> str:
    """The DAG left to right: a task's column is the longest path to it from a root; boxes
    are coloured by state and carry ``data-task``/``data-state`` for tests and tools."""
    layer: dict[str, int] = {}
    for name in order:  # topological order: upstream layers are known
        layer[name] = 1 + max((layer[u] for u in upstream.get(name, ())), default=-1)
    rows: dict[int, int] = {}
    pos: dict[str, tuple[int, int]] = {}
    for name in order:
        col = layer[name]
        pos[name] = (10 + col * (_W + _GAP_X), 10 + rows.get(col, 0) * (_H + _GAP_Y))
        rows[col] = rows.get(col, 0) + 1
    width = 20 + (max(layer.values(), default=0) + 1) * (_W + _GAP_X) - _GAP_X
    height = 20 + max(rows.values(), default=1) * (_H + _GAP_Y) - _GAP_Y
    edges = []
    for name in order:
        x2, y2 = pos[name]
        for u in upstream.get(name, ()):
            x1, y1 = pos[u]
            edges.append(f'<line class="edge" data-from="{html.escape(u)}" data-to="{html.escape(name)}" '
                         f'x1="{x1 + _W}" y1="{y1 + _H // 2}" x2="{x2}" y2="{y2 + _H // 2}" '
                         'stroke="#888" stroke-width="1.5" marker-end="url(#nbsched-arrow)"/>')
    boxes = []
    for name in order:
        x, y = pos[name]
        state = states.get(name, "pending")
        fill = STATE_COLOURS.get(state, "#bdbdbd")
        label = html.escape(name if len(name) <= 16 else name[:15] + "…")
        boxes.append(f'<g class="task" data-task="{html.escape(name)}" data-state="{html.escape(state)}">'
                     f'<title>{html.escape(name)}: {html.escape(state)}</title>'
                     f'<rect x="{x}" y="{y}" width="{_W}" height="{_H}" rx="5" fill="{fill}"/>'
                     f'<text x="{x + _W // 2}" y="{y + _H // 2 + 5}" text-anchor="middle" fill="white" '
                     f'font-family="sans-serif" font-size="13">{label}</text></g>')
    return (f'<svg class="nbsched-dag" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}"><defs><marker id="nbsched-arrow" viewBox="0 0 10 10" refX="10" '
            'refY="5" markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#888"/>'
            f'</marker></defs>{"".join(edges)}{"".join(boxes)}</svg>')
