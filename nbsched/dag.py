"""Trigger rules, dependency order and layers: pure functions over plain data."""

from __future__ import annotations

import graphlib
import heapq
from collections.abc import Iterable, Mapping, Sequence
from enum import Enum
from typing import Protocol

from nbsched.errors import CycleError
from nbsched.fanout import Fanout, fanout_note
from nbsched.states import TaskState

_FAILED = frozenset({TaskState.FAILED, TaskState.UPSTREAM_FAILED})


class TriggerRule(str, Enum):
    """Airflow's trigger rules, with Airflow's meaning."""

    ALL_SUCCESS = "all_success"
    ALL_FAILED = "all_failed"
    ALL_DONE = "all_done"
    ONE_SUCCESS = "one_success"
    ONE_FAILED = "one_failed"
    NONE_FAILED = "none_failed"
    NONE_FAILED_MIN_ONE_SUCCESS = "none_failed_min_one_success"
    ALWAYS = "always"


class Decision(str, Enum):
    WAIT = "wait"
    RUN = "run"
    SKIP = "skipped"
    UPSTREAM_FAILED = "upstream_failed"


def decide(rule: TriggerRule, upstream: Iterable[TaskState]) -> Decision:
    """What a pending task does, given its rule and its upstream tasks' states."""
    states = list(upstream)
    if rule is TriggerRule.ALWAYS or not states:
        return Decision.RUN
    n = len(states)
    done = sum(s.finished for s in states)
    success = sum(s is TaskState.SUCCESS for s in states)
    failed = sum(s in _FAILED for s in states)
    skipped = sum(s is TaskState.SKIPPED for s in states)
    not_ok = done - success - skipped  # finished but neither succeeded nor skipped (failed, cancelled)
    all_done = done == n

    if rule is TriggerRule.ALL_SUCCESS:
        if not_ok:
            return Decision.UPSTREAM_FAILED
        if skipped:
            return Decision.SKIP
        return Decision.RUN if success == n else Decision.WAIT
    if rule is TriggerRule.ALL_FAILED:
        if done - failed:  # something finished without failing
            return Decision.SKIP
        return Decision.RUN if all_done else Decision.WAIT
    if rule is TriggerRule.ALL_DONE:
        return Decision.RUN if all_done else Decision.WAIT
    if rule is TriggerRule.ONE_SUCCESS:
        if success:
            return Decision.RUN
        if not all_done:
            return Decision.WAIT
        return Decision.SKIP if skipped == n else Decision.UPSTREAM_FAILED
    if rule is TriggerRule.ONE_FAILED:
        if failed:
            return Decision.RUN
        return Decision.SKIP if all_done else Decision.WAIT
    if rule is TriggerRule.NONE_FAILED:
        if not_ok:
            return Decision.UPSTREAM_FAILED
        return Decision.RUN if all_done else Decision.WAIT
    if rule is TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS:
        if not_ok:
            return Decision.UPSTREAM_FAILED
        if not all_done:
            return Decision.WAIT
        return Decision.SKIP if skipped == n else Decision.RUN
    raise ValueError(f"unknown trigger rule {rule!r}")


def topological_order(upstream: Mapping[str, Iterable[str]]) -> list[str]:
    """Tasks in an order where each comes after its upstream tasks; ties keep spec order."""
    order = {name: i for i, name in enumerate(upstream)}
    sorter = graphlib.TopologicalSorter({t: list(u) for t, u in upstream.items()})
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        cycle = exc.args[1]
        raise CycleError(f"cycle in upstream links: {' -> '.join(cycle)}") from None
    # Take ready tasks one at a time, earliest in the spec first, so a spec already
    # written in dependency order keeps its order.
    ready = [(order[t], t) for t in sorter.get_ready()]
    heapq.heapify(ready)
    result: list[str] = []
    while ready:
        _, name = heapq.heappop(ready)
        result.append(name)
        sorter.done(name)
        for t in sorter.get_ready():
            heapq.heappush(ready, (order[t], t))
    return result


def downstream_of(upstream: Mapping[str, Iterable[str]]) -> dict[str, list[str]]:
    """Invert the upstream map: each task's direct downstream tasks."""
    down: dict[str, list[str]] = {t: [] for t in upstream}
    for task, ups in upstream.items():
        for u in ups:
            down[u].append(task)
    return down


def layers(order: Sequence[str], upstream: Mapping[str, Iterable[str]]) -> dict[str, int]:
    """Each task's layer: the length of the longest path to it from a task without upstream
    tasks, so the tasks of one layer never wait for each other. ``order`` must be topological;
    unknown upstream names are ignored."""
    layer: dict[str, int] = {}
    for name in order:
        ups = [layer[u] for u in upstream.get(name, ()) if u in layer]
        layer[name] = 1 + max(ups) if ups else 0
    return layer


class _Task(Protocol):
    @property
    def upstream(self) -> tuple[str, ...]: ...

    @property
    def fanout(self) -> Fanout | None: ...


def layer_lines(order: Sequence[str], tasks: Mapping[str, _Task]) -> list[str]:
    """The DAG in words, a line per layer: ``layer 2: clean (after extract), by_region (after
    extract)``; each task with the tasks it waits for, and a mapped task with its fan-out
    (``train (grid: 6 instances)``)."""
    layer = layers(order, {n: t.upstream for n, t in tasks.items()})
    lines: list[list[str]] = [[] for _ in range(max(layer.values(), default=-1) + 1)]
    for name in order:
        task = tasks[name]
        notes = [note for note in (fanout_note(task.fanout), _after(task.upstream)) if note]
        lines[layer[name]].append(name + (f" ({'; '.join(notes)})" if notes else ""))
    return [f"layer {i}: {', '.join(names)}" for i, names in enumerate(lines, start=1)]


def _after(upstream: Sequence[str]) -> str:
    return f"after {', '.join(upstream)}" if upstream else ""
