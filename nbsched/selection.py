"""Which rows a run has and which of them it runs: a new run's rows (a mapped task's instances
in its place), the tasks a repair re-runs or a partial run runs, and what a partial run's other
tasks lend it. Pure: the spec in, names out; the service reads the store for what is lent."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from nbsched.errors import ConfigError
from nbsched.fanout import grid_instances, instance_name, item_params, parse_instance, task_of

if TYPE_CHECKING:
    from nbsched.spec import PipelineSpec

Instances = dict[str, tuple[str, int, dict[str, Any]]]  # row -> (its task, its index, its values)


class Selection(NamedTuple):
    """A partial run: what it runs, and what its other tasks lend it (``store.create_run``)."""

    chosen: dict[str, Any]  # {"tasks": [rows it runs], "borrowed": {task: the run its values are from}}
    lent: dict[str, dict[str, Any]]  # row -> the outputs it recorded in that run
    layout: tuple[list[str], Instances]  # its rows, as run_rows gives them


def run_rows(spec: PipelineSpec) -> tuple[list[str], Instances]:
    """A new run's task rows, in run order: each task, or the instances of a grid or of a
    literal for_each list (a for_each of a recorded list is one row until it is expanded)."""
    rows: list[str] = []
    instances: Instances = {}
    for name in spec.order:
        fanout = spec.tasks[name].fanout
        if fanout is None or not fanout.static:
            rows.append(name)
            continue
        values = (
            grid_instances(fanout)
            if fanout.grid is not None
            else [item_params(fanout, item, f"tasks.{name}.for_each") for item in fanout.for_each or []]
        )
        for i, params in enumerate(values):
            row = instance_name(name, i)
            rows.append(row)
            instances[row] = (name, i, params)
    return rows, instances


def chosen_rows(spec: PipelineSpec, rows: list[str], names: list[str], downstream: bool) -> list[str]:
    """The rows of a run a repair re-runs: those of the tasks named (every instance of a mapped
    one), the instances named (``train[3]``), and with ``downstream`` the rows of every task below."""
    _no_such_instance(spec, rows, names)
    instances = [n for n in names if n in rows and parse_instance(n) is not None]
    tasks = [n for n in names if n not in instances]
    chosen = set(chosen_tasks(spec, tasks, downstream)) if tasks or not instances else set()
    if downstream:
        for instance in instances:
            chosen |= set(chosen_tasks(spec, [task_of(instance)], True)) - {task_of(instance)}
    return [row for row in rows if task_of(row) in chosen or row in instances]


def refuse_removed(names: Iterable[str], removed: Mapping[str, str], run_id: str) -> None:
    """An instance a repair removed from its for_each list (``removed``: each with why) is not
    re-run alone: its values are gone from the list; re-running its task expands it again."""
    for name in names:
        if name in removed:
            raise ConfigError(
                f"--task {name!r}: removed from run {run_id} ({removed[name]}); "
                f"re-run {task_of(name)} to expand it again"
            )


def unselected(rows: Iterable[str], selection: Mapping[str, Any] | None) -> set[str]:
    """A partial run's rows outside its selection, which lend what an earlier run recorded: by
    task, so the instances a selected for_each is expanded into as it runs are selected too."""
    if not selection:
        return set()
    selected = {task_of(row) for row in selection["tasks"]}
    return {row for row in rows if task_of(row) not in selected}


def repaired_selection(
    spec: PipelineSpec, run_id: str, selection: Mapping[str, Any], rows: list[str], chosen: list[str]
) -> dict[str, Any]:
    """A partial run's selection once a repair re-runs its ``chosen`` rows: their tasks are
    selected too, and no longer borrowed. Each task re-run needs the values of each upstream
    task from this run or from the run it borrowed them from; an instance of a borrowed mapped
    task is not re-run alone (the others would no longer be lent): one line each."""
    lent = unselected(rows, selection)
    tasks = {task_of(row) for row in [*selection["tasks"], *chosen]}
    for row in chosen:
        name = task_of(row)
        if row != name and row in lent and not {r for r in rows if task_of(r) == name} <= set(chosen):
            raise ConfigError(
                f"--task {row!r}: partial run {run_id} borrowed {name} from run {selection['borrowed'][name]}; "
                f"re-run {name} (every instance) instead"
            )
        for up in spec.tasks[name].upstream:
            if up not in tasks and up not in selection["borrowed"]:
                raise ConfigError(
                    f"--task {name!r}: partial run {run_id} neither ran nor borrowed {up!r}, whose values it "
                    f"needs (re-run {up} too)"
                )
    borrowed = {task: run for task, run in selection["borrowed"].items() if task not in tasks}
    return {"tasks": [row for row in rows if task_of(row) in tasks], "borrowed": borrowed}


def _no_such_instance(spec: PipelineSpec, rows: list[str], names: list[str]) -> None:
    """An instance named (``train[9]``) that the run does not have, of a task it has: one line
    saying which instances there are, rather than that the task is unknown."""
    for name in names:
        parsed = parse_instance(name)
        if parsed is None or name in rows or parsed[0] not in spec.tasks:
            continue
        task = parsed[0]
        have = [r for r in rows if task_of(r) == task and r != task]
        if not have:
            kind = "a task without instances" if spec.tasks[task].fanout is None else "not expanded in this run"
            raise ConfigError(f"--task {name!r}: {task} is {kind} (name it: --task {task})")
        raise ConfigError(
            f"--task {name!r}: {task} has {len(have)} instance(s) in this run ({have[0]}..{have[-1]})"
            if len(have) > 1
            else f"--task {name!r}: {task} has 1 instance in this run ({have[0]})"
        )


def chosen_tasks(spec: PipelineSpec, names: list[str], downstream: bool, option: str = "--task") -> list[str]:
    """The tasks a repair re-runs (or a partial run runs), in run order: ``names`` and, with
    ``downstream``, every task downstream of them; an unknown name is a one-line error naming
    ``option`` and suggesting the closest."""
    if not names:
        raise ConfigError(f"{option}: name at least one task")
    for name in names:
        if name not in spec.tasks:
            close = difflib.get_close_matches(name, list(spec.tasks), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (tasks: {', '.join(spec.order)})"
            raise ConfigError(f"{option} {name!r}: pipeline {spec.name} has no such task{hint}")
    chosen = set(names)
    if downstream:
        below = spec.downstream
        for name in names:
            chosen |= all_below(name, below)
    return [n for n in spec.order if n in chosen]


def all_below(name: str, below: Mapping[str, Iterable[str]]) -> set[str]:
    found: set[str] = set()
    todo = list(below.get(name, ()))
    while todo:
        task = todo.pop()
        if task not in found:
            found.add(task)
            todo.extend(below.get(task, ()))
    return found


def lend_instances(
    rows: list[str],
    instances: Instances,
    lent: dict[str, dict[str, Any]],
    task: str,
    found: list[tuple[int, dict[str, Any], dict[str, Any]]],
) -> list[str]:
    """A partial run's rows with those of the mapped ``task`` replaced by the instances of the
    run it borrows them from (a for_each's list was that run's): each ``(index, values,
    outputs)`` of ``found`` a row in ``instances``, its outputs ``lent``."""
    at = next(i for i, row in enumerate(rows) if task_of(row) == task)
    out = [row for row in rows if task_of(row) != task]
    for index, values, outputs in found:
        row = instance_name(task, index)
        out.insert(at + index, row)
        instances[row], lent[row] = (task, index, values), outputs
    return out
