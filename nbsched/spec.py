"""Pipeline specs: load ``pipeline.yaml`` (or one notebook) and validate every field.

Parsing is pure (:func:`parse_pipeline` takes a mapping); :func:`load_pipeline` adds
the reading of the spec file and the notebooks it names. Every mistake is a
:class:`SpecError` whose one-line message names the file, the task and the field.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Mapping

from nbsched.dag import TriggerRule, topological_order
from nbsched.errors import CycleError, SpecError

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}

PIPELINE_KEYS = ("name", "description", "params", "defaults", "tasks", "schedules")
POLICY_KEYS = ("retries", "retry_delay", "retry_exponential_backoff", "max_retry_delay", "timeout", "kernel",
               "resources")
TASK_KEYS = ("notebook", "description", "params", "upstream", "trigger_rule", *POLICY_KEYS)
SCHEDULE_KEYS = ("cron", "every", "at", "start", "timezone", "params", "catchup", "misfire_grace",
                 "max_active_runs", "enabled")


@dataclass(frozen=True, kw_only=True)
class TaskSpec:
    name: str
    notebook: Path
    params: dict[str, Any] = field(default_factory=dict)
    upstream: tuple[str, ...] = ()
    trigger_rule: TriggerRule = TriggerRule.ALL_SUCCESS
    retries: int = 0
    retry_delay: float = 0.0
    retry_exponential_backoff: bool = False
    max_retry_delay: float | None = None
    timeout: float | None = None
    kernel: str | None = None
    resources: dict[str, float] = field(default_factory=dict)  # Dask worker resources a try needs
    description: str = ""

    @property
    def max_tries(self) -> int:
        return self.retries + 1

    def retry_wait(self, try_number: int) -> float:
        """Seconds to wait before the try after ``try_number`` (Airflow's backoff: delay * 2**(n-1))."""
        wait = self.retry_delay * (2 ** (try_number - 1) if self.retry_exponential_backoff else 1)
        return min(wait, self.max_retry_delay) if self.max_retry_delay is not None else wait


@dataclass(frozen=True, kw_only=True)
class ScheduleSpec:
    """A schedule as written in the spec; the trigger itself is checked by the scheduler."""

    fields: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class PipelineSpec:
    name: str
    tasks: dict[str, TaskSpec]
    params: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    schedules: tuple[ScheduleSpec, ...] = ()
    base_dir: Path
    source: Path | None = None
    raw: dict[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    @cached_property
    def order(self) -> list[str]:
        return topological_order({t.name: t.upstream for t in self.tasks.values()})


def parse_duration(value: Any) -> float:
    """``30s``, ``10m``, ``1h30m``, ``2d``, ``500ms`` or a number of seconds."""
    if isinstance(value, bool):
        raise ValueError(f"bad duration {value!r}")
    if isinstance(value, (int, float)):
        if value < 0 or not math.isfinite(value):
            raise ValueError(f"bad duration {value!r}: negative" if value < 0 else f"bad duration {value!r}")
        return float(value)
    text = str(value).strip().replace(" ", "")
    pos, total = 0, 0.0
    for m in _DURATION_RE.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if not text or pos != len(text):
        raise ValueError(f"bad duration {value!r} (use e.g. 30s, 10m, 1h30m)")
    return total


class _Where:
    """Builds one-line error messages: ``<file>: <field path>: <problem>``."""

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, path: str, problem: str, cls: type[SpecError] = SpecError) -> SpecError:
        return cls(f"{self.source}: {path}: {problem}" if path else f"{self.source}: {problem}")

    def mapping(self, value: Any, path: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self.error(path, f"expected a mapping, got {type(value).__name__}")
        bad = [k for k in value if not isinstance(k, str)]
        if bad:
            raise self.error(path, f"keys must be strings, got {bad[0]!r}")
        return dict(value)

    def known(self, value: Mapping[str, Any], allowed: tuple[str, ...], path: str) -> None:
        for key in value:
            if key not in allowed:
                hint = _did_you_mean(key, allowed)
                raise self.error(f"{path}.{key}" if path else key, f"unknown key{hint}")

    def name(self, value: Any, path: str, what: str) -> str:
        if not isinstance(value, str) or not NAME_RE.match(value):
            raise self.error(path, f"bad {what} name {value!r}: use lower-case letters, digits, '_' "
                                   "and '-', starting with a letter or digit")
        return value

    def convert(self, value: Any, path: str, fn: Callable[[Any], Any]) -> Any:
        try:
            return fn(value)
        except (TypeError, ValueError) as exc:
            raise self.error(path, str(exc)) from None


def _did_you_mean(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _policy(where: _Where, raw: Mapping[str, Any], path: str, base: Mapping[str, Any]) -> dict[str, Any]:
    """Retry/timeout/kernel fields, each falling back to ``base`` (the pipeline defaults)."""
    out = dict(base)
    if "retries" in raw:
        r = raw["retries"]
        if isinstance(r, bool) or not isinstance(r, int) or r < 0:
            raise where.error(f"{path}.retries", f"expected a whole number >= 0, got {r!r}")
        out["retries"] = r
    for key in ("retry_delay", "max_retry_delay", "timeout"):
        if key in raw:
            value = raw[key]
            out[key] = None if value is None else where.convert(value, f"{path}.{key}", parse_duration)
    if "retry_exponential_backoff" in raw:
        value = raw["retry_exponential_backoff"]
        if not isinstance(value, bool):
            raise where.error(f"{path}.retry_exponential_backoff", f"expected true or false, got {value!r}")
        out["retry_exponential_backoff"] = value
    if "kernel" in raw:
        kernel = raw["kernel"]
        if kernel is not None and (not isinstance(kernel, str) or not kernel):
            raise where.error(f"{path}.kernel", f"expected a kernel name, got {kernel!r}")
        out["kernel"] = kernel
    if "resources" in raw:
        resources = where.mapping(raw["resources"], f"{path}.resources")
        for key, amount in resources.items():
            if isinstance(amount, bool) or not isinstance(amount, (int, float)) or amount <= 0:
                raise where.error(f"{path}.resources.{key}", f"expected a number > 0, got {amount!r}")
        out["resources"] = dict(resources)
    return out


def _upstream(where: _Where, value: Any, path: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise where.error(path, f"expected a list of task names, got {value!r}")
    if len(set(value)) != len(value):
        raise where.error(path, "lists a task twice")
    return tuple(value)


def parse_pipeline(data: Any, *, base_dir: Path, source: str = "<pipeline>") -> PipelineSpec:
    """Validate a spec mapping (as loaded from YAML). Pure: no file is read."""
    where = _Where(source)
    raw = where.mapping(data, "")
    where.known(raw, PIPELINE_KEYS, "")
    if "name" not in raw:
        raise where.error("name", "missing (every pipeline needs a name)")
    name = where.name(raw["name"], "name", "pipeline")
    params = where.mapping(raw.get("params"), "params")
    defaults_raw = where.mapping(raw.get("defaults"), "defaults")
    where.known(defaults_raw, POLICY_KEYS, "defaults")
    defaults = _policy(where, defaults_raw, "defaults", {})

    tasks_raw = where.mapping(raw.get("tasks"), "tasks")
    if not tasks_raw:
        raise where.error("tasks", "missing or empty (a pipeline needs at least one task)")
    tasks: dict[str, TaskSpec] = {}
    for task_name, task_raw in tasks_raw.items():
        path = f"tasks.{task_name}"
        where.name(task_name, path, "task")
        if isinstance(task_raw, str):  # shorthand: `extract: extract.ipynb`
            task_raw = {"notebook": task_raw}
        task_raw = where.mapping(task_raw, path)
        where.known(task_raw, TASK_KEYS, path)
        notebook = task_raw.get("notebook")
        if not isinstance(notebook, str) or not notebook:
            raise where.error(f"{path}.notebook", "missing (the path of the task's notebook)")
        rule = task_raw.get("trigger_rule", TriggerRule.ALL_SUCCESS.value)
        if not isinstance(rule, str):
            raise where.error(f"{path}.trigger_rule", f"expected a trigger rule name, got {rule!r}")
        if rule not in {r.value for r in TriggerRule}:
            hint = _did_you_mean(rule, [r.value for r in TriggerRule])
            raise where.error(f"{path}.trigger_rule", f"unknown trigger rule {rule!r}{hint}")
        tasks[task_name] = TaskSpec(
            name=task_name,
            notebook=(base_dir / notebook),
            params=where.mapping(task_raw.get("params"), f"{path}.params"),
            upstream=_upstream(where, task_raw.get("upstream"), f"{path}.upstream"),
            trigger_rule=TriggerRule(rule),
            description=str(task_raw.get("description") or ""),
            **_policy(where, task_raw, path, defaults),
        )

    for task in tasks.values():
        for up in task.upstream:
            if up not in tasks:
                raise where.error(f"tasks.{task.name}.upstream",
                                  f"unknown task '{up}'{_did_you_mean(up, tasks)}")
            if up == task.name:
                raise where.error(f"tasks.{task.name}.upstream", "a task cannot be its own upstream",
                                  CycleError)
    try:
        topological_order({t.name: t.upstream for t in tasks.values()})
    except CycleError as exc:
        raise where.error("tasks", str(exc), CycleError) from None

    schedules_raw = raw.get("schedules") or []
    if not isinstance(schedules_raw, list):
        raise where.error("schedules", f"expected a list, got {type(schedules_raw).__name__}")
    schedules = []
    for i, s in enumerate(schedules_raw):
        s = where.mapping(s, f"schedules[{i}]")
        where.known(s, SCHEDULE_KEYS, f"schedules[{i}]")
        schedules.append(ScheduleSpec(fields=s))

    return PipelineSpec(
        name=name,
        description=str(raw.get("description") or ""),
        params=params,
        tasks=tasks,
        schedules=tuple(schedules),
        base_dir=base_dir,
        source=None,
        raw=raw,
    )


def load_pipeline(path: str | Path) -> PipelineSpec:
    """Load a ``pipeline.yaml`` or a single ``.ipynb`` (a one-task pipeline) and check its notebooks."""
    path = Path(path)
    if path.is_dir():
        path = path / "pipeline.yaml"
    shown = str(path)  # errors name the file as the user wrote it
    if not path.is_file():
        raise SpecError(f"{shown}: file not found")
    resolved = path.resolve()
    if path.suffix == ".ipynb":
        stem = re.sub(r"[^a-z0-9_-]+", "-", path.stem.lower()).strip("-_") or "notebook"
        data: Any = {"name": stem, "tasks": {stem: {"notebook": path.name}}}
    else:
        data = _read_yaml(path, shown)
    spec = parse_pipeline(data, base_dir=resolved.parent, source=shown)
    warnings = check_notebooks(spec, source=shown)
    return replace(spec, source=resolved, warnings=tuple(warnings))


def _read_yaml(path: Path, shown: str) -> Any:
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{shown}: cannot read: {exc}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"{shown}{at}: invalid YAML: {problem}") from None


def check_notebooks(spec: PipelineSpec, *, source: str) -> list[str]:
    """Check each task's notebook exists and is a notebook; warn (like papermill) when params
    are given but the notebook has no cell tagged ``parameters``."""
    warnings = []
    for task in spec.tasks.values():
        field_path = f"tasks.{task.name}.notebook"
        rel = task.notebook.relative_to(spec.base_dir) if task.notebook.is_relative_to(spec.base_dir) \
            else task.notebook
        if not task.notebook.is_file():
            raise SpecError(f"{source}: {field_path}: notebook not found: {rel}")
        try:
            nb = json.loads(task.notebook.read_text(encoding="utf-8"))
            has_parameters = any("parameters" in ((c.get("metadata") or {}).get("tags") or [])
                                 for c in nb["cells"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise SpecError(f"{source}: {field_path}: {rel} is not a valid notebook ({exc})") from None
        if (spec.params or task.params) and not has_parameters:
            warnings.append(f"{source}: {field_path}: {rel} has no cell tagged 'parameters'; "
                            "parameters are injected at the top of the notebook")
    return warnings
