"""Mapped tasks: one task run once per parameter set. Pure.

- ``grid: {region: [eu, us], model: [linear, tree]}``: once per combination (the Cartesian
  product, in the order written), each combination's values parameters of its instance.
- ``for_each: "{{ upstream.list_files.files }}"`` (or a literal list): once per item of a
  list known when the task's upstream tasks have run, the item the parameter named by ``as``
  (default ``item``); a dict item without ``as`` gives its keys as parameters.

An instance is named ``train[0]``, ``train[1]`` ... and shown with its values
(``train[region=eu, model=linear]``).
"""

from __future__ import annotations

import itertools
import json
import keyword
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from nbsched.errors import SpecError

FANOUT_KEYS = ("grid", "for_each", "as", "max_parallel", "max_instances")
DEFAULT_MAX_INSTANCES = 1000
MAX_INSTANCES = 10_000
_EXPRESSION = re.compile(r"\s*\{\{(.*)\}\}\s*", re.DOTALL)  # the whole for_each template: one expression
_INSTANCE = re.compile(r"(?P<task>[a-z0-9][a-z0-9_-]{0,99})\[(?P<index>\d{1,5})\]")
_UPSTREAM_REF = re.compile(r"upstream\s*(?:\.\s*([A-Za-z0-9_]+)|\[\s*['\"]([a-z0-9_-]+)['\"]\s*\])")

Error = Callable[[str, str], SpecError]  # (field path, problem) -> the error to raise


@dataclass(frozen=True, kw_only=True)
class Fanout:
    grid: dict[str, list[Any]] | None = None
    for_each: str | list[Any] | None = None  # one "{{ expression }}", or the items themselves
    as_name: str | None = None
    max_parallel: int | None = None  # instances of it running at once (None: no limit)
    max_instances: int = DEFAULT_MAX_INSTANCES

    @property
    def static(self) -> bool:
        """Its instances are known when a run is made (a grid, or a literal list)."""
        return self.grid is not None or isinstance(self.for_each, list)


def parse_fanout(raw: Mapping[str, Any], path: str, upstream: tuple[str, ...], error: Error) -> Fanout | None:
    """The fan-out of a task's fields, checked; None for a plain task."""
    if not any(k in raw for k in FANOUT_KEYS):
        return None
    if "grid" in raw and "for_each" in raw:
        raise error(f"{path}.for_each", "a task has grid or for_each, not both")
    if "grid" not in raw and "for_each" not in raw:
        key = next(k for k in FANOUT_KEYS if k in raw)
        raise error(f"{path}.{key}", "goes with grid or for_each")
    limit = raw.get("max_instances", DEFAULT_MAX_INSTANCES)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_INSTANCES:
        raise error(f"{path}.max_instances", f"expected a whole number from 1 to {MAX_INSTANCES:,}, got {limit!r}")
    parallel = raw.get("max_parallel")
    if parallel is not None and (isinstance(parallel, bool) or not isinstance(parallel, int) or parallel < 1):
        raise error(f"{path}.max_parallel", f"expected a whole number of at least 1, got {parallel!r}")
    if "grid" in raw:
        if "as" in raw:
            raise error(f"{path}.as", "goes with for_each (a grid's keys are its parameters)")
        grid = _grid(raw["grid"], f"{path}.grid", limit, error)
        return Fanout(grid=grid, max_parallel=parallel, max_instances=limit)
    as_name = raw.get("as")
    if as_name is not None and (
        not isinstance(as_name, str) or not as_name.isidentifier() or keyword.iskeyword(as_name)
    ):
        raise error(f"{path}.as", f"expected a parameter name, got {as_name!r}")
    items = raw["for_each"]
    if isinstance(items, list):
        if not items or len(items) > limit:
            raise error(f"{path}.for_each", f"expected 1 to {limit:,} items, got {len(items):,}")
    elif isinstance(items, str):
        match = _EXPRESSION.fullmatch(items)
        if match is None or "{{" in match.group(1) or "{%" in items:
            raise error(f"{path}.for_each", "expected a list, or one '{{ expression }}' like '{{ upstream.ls.files }}'")
        for ref in _UPSTREAM_REF.finditer(match.group(1)):
            name = ref.group(1) or ref.group(2)
            if name not in upstream:
                raise error(f"{path}.for_each", f"names upstream '{name}', which is not one of its upstream tasks")
        if not upstream:
            raise error(f"{path}.for_each", "a list recorded at run time needs an upstream task to record it")
    else:
        raise error(f"{path}.for_each", f"expected a list or a template, got {type(items).__name__}")
    return Fanout(for_each=items, as_name=as_name, max_parallel=parallel, max_instances=limit)


def _grid(value: Any, path: str, limit: int, error: Error) -> dict[str, list[Any]]:
    if not isinstance(value, Mapping) or not value:
        raise error(path, f"expected a mapping of parameter names to lists, got {value!r}"[:200])
    grid: dict[str, list[Any]] = {}
    for key, values in value.items():
        if not isinstance(key, str) or not key.isidentifier() or keyword.iskeyword(key):
            raise error(f"{path}.{key}", "expected a parameter name")
        if not isinstance(values, list) or not values:
            raise error(f"{path}.{key}", f"expected a non-empty list of values, got {values!r}"[:200])
        grid[key] = list(values)
    count = 1
    for values in grid.values():
        count *= len(values)
    if count > limit:
        raise error(path, f"{count:,} combinations (at most max_instances, {limit:,})")
    return grid


def grid_instances(fanout: Fanout) -> list[dict[str, Any]]:
    """A grid's parameter sets, in the order written (the last key varies fastest)."""
    assert fanout.grid is not None
    keys = list(fanout.grid)
    return [dict(zip(keys, combination, strict=True)) for combination in itertools.product(*fanout.grid.values())]


def item_params(fanout: Fanout, item: Any, where: str) -> dict[str, Any]:
    """The parameters of one for_each item: ``{as: item}``, or a dict item's own keys."""
    if fanout.as_name is not None:
        return {fanout.as_name: item}
    if isinstance(item, dict):
        bad = [k for k in item if not isinstance(k, str) or not k.isidentifier() or keyword.iskeyword(k)]
        if bad:
            raise SpecError(f"{where}: item key {bad[0]!r} is not a parameter name (name one with 'as')")
        return dict(item)
    return {"item": item}


def for_each_list(fanout: Fanout, render: Callable[[str], str], where: str) -> list[Any]:
    """The items of a for_each: the literal list, or its expression's value (rendered as JSON
    through ``render``, the bounded sandbox), checked to be a list of at most max_instances."""
    if isinstance(fanout.for_each, list):
        return list(fanout.for_each)
    assert isinstance(fanout.for_each, str)
    match = _EXPRESSION.fullmatch(fanout.for_each)
    assert match is not None
    expression = match.group(1).strip()
    try:
        value = json.loads(render("{{ (" + expression + ") | tojson }}"))
    except TypeError as exc:  # not data: a method or a type, where a recorded value was meant
        raise SpecError(
            f"{where}: {expression} is not a recorded value ({exc}); name one by its key, "
            f"like upstream.TASK.KEY or upstream.TASK['KEY']"
        ) from None
    if not isinstance(value, list):
        raise SpecError(f"{where}: {expression} is a {type(value).__name__}, not a list")
    if len(value) > fanout.max_instances:
        raise SpecError(
            f"{where}: {expression} has {len(value):,} items (at most max_instances, {fanout.max_instances:,})"
        )
    return value


def fanout_note(fanout: Fanout | None) -> str:
    """A mapped task's fan-out in words: ``grid: 6 instances``, ``for_each: 3 items``, ``for_each
    upstream.ls.files``; empty for a plain task."""
    if fanout is None:
        return ""
    if fanout.grid is not None:
        return f"grid: {len(grid_instances(fanout)):,} instances"
    if isinstance(fanout.for_each, list):
        return f"for_each: {len(fanout.for_each):,} items"
    match = _EXPRESSION.fullmatch(fanout.for_each or "")
    return f"for_each {match.group(1).strip() if match else fanout.for_each}"


def instance_name(task: str, index: int) -> str:
    return f"{task}[{index}]"


def parse_instance(name: str) -> tuple[str, int] | None:
    """``("train", 3)`` for ``train[3]``; None for a task's own name."""
    match = _INSTANCE.fullmatch(name)
    return (match.group("task"), int(match.group("index"))) if match else None


def task_of(name: str) -> str:
    """The spec's task of a run's row: ``train`` for its instance ``train[3]``, else the name itself."""
    if not name.endswith("]"):  # a task's own name (the runner asks for every row at every look)
        return name
    instance = parse_instance(name)
    return instance[0] if instance else name


def instance_label(task: str, params: Mapping[str, Any]) -> str:
    """``train[region=eu, model=linear]``: an instance shown with its values."""
    values = ", ".join(f"{k}={_short(v)}" for k, v in params.items())
    return f"{task}[{values}]"


def _short(value: Any, limit: int = 40) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."
