"""Pipeline specs: load ``pipeline.yaml`` (or one notebook) and validate every field.

Parsing is pure (:func:`parse_pipeline` takes a mapping); :func:`load_pipeline` adds
the reading of the spec file and the notebooks it names. Every mistake is a
:class:`SpecError` whose one-line message names the file, the task and the field.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any

from nbsched.bounds import check_depth, json_depth_ok, load_yaml, read_spec_text
from nbsched.dag import TriggerRule, downstream_of, topological_order
from nbsched.errors import CycleError, ScheduleError, SpecError
from nbsched.events import EVENT_KEYS, SCHEDULE_KINDS, event_from_fields, is_event
from nbsched.fanout import FANOUT_KEYS, Fanout, parse_fanout
from nbsched.notices import NotifyRule, parse_rules, task_rules, with_on_keys
from nbsched.paramvalues import json_problem
from nbsched.timefmt import MAX_DURATION, duration, parse_duration
from nbsched.triggers import MIN_EVERY, IntervalTrigger, trigger_from_fields

NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,99}")  # whole names only (fullmatch): "$" let "a\n" in
MAX_NAME = 100  # characters of a pipeline, task or pool name (NAME_RE's bound)
# Bounds on a spec's numbers and counts: sane values, and values that time arithmetic, the
# database's integers and the file system can hold (10**30 retries used to fail at run time).
MAX_RETRIES = 100
MAX_ACTIVE_RUNS = 1000  # a schedule's runs active at once
MAX_TASKS = 1000
MAX_SCHEDULES = 100
MAX_PATH = 1024  # characters of a notebook path
DEFAULT_MISFIRE_GRACE = 600.0  # a fire up to 10 minutes late still runs (e.g. the daemon restarted)
# whether a schedule is valid does not depend on when it is checked: its fire times are worked out
# from any moment (the first one, at registration, from the moment it is registered)
_ANY_MOMENT = datetime(2000, 1, 1, tzinfo=timezone.utc)

PIPELINE_KEYS = ("name", "description", "params", "defaults", "tasks", "schedules", "notify", "sla", "max_active_tasks")
MAX_ACTIVE_TASKS = 10_000  # a pipeline's tasks running at once, over all its runs
POLICY_KEYS = (
    "retries",
    "retry_delay",
    "retry_exponential_backoff",
    "max_retry_delay",
    "timeout",
    "kernel",
    "resources",
    "pool",
)
TASK_KEYS = (
    "notebook",
    "description",
    "params",
    "upstream",
    "trigger_rule",
    "notify",
    "sla",
    *POLICY_KEYS,
    *FANOUT_KEYS,
)
SCHEDULE_KEYS = (
    "cron",
    "every",
    "at",
    "start",
    "timezone",
    "params",
    "catchup",
    "misfire_grace",
    "max_active_runs",
    "enabled",
    *EVENT_KEYS,
)
# what each kind of schedule takes besides its own key and params, max_active_runs and enabled
KIND_KEYS: dict[str, tuple[str, ...]] = {
    "cron": ("timezone", "catchup", "misfire_grace"),
    "every": ("start", "timezone", "catchup", "misfire_grace"),
    "at": ("timezone", "catchup", "misfire_grace"),
    "after": ("state",),
    "files": ("poll", "settle", "existing"),
}
_OWNERS = {  # who has a key, for the message naming it
    "timezone": "a time schedule (cron, every or at)",
    "catchup": "a time schedule (cron, every or at)",
    "misfire_grace": "a time schedule (cron, every or at)",
    "start": "an every schedule",
    "state": "an after schedule",
    "poll": "a files schedule",
    "settle": "a files schedule",
    "existing": "a files schedule",
}


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
    pool: str | None = None  # a try runs only while this pool has a free slot
    description: str = ""
    notify: tuple[NotifyRule, ...] = ()  # notifications of this task's tries
    # what its tries notify under: its own rules, and its pipeline's for a retry or an sla missed
    reported_by: tuple[NotifyRule, ...] = ()
    sla: float | None = None  # seconds a try should end within (sla_missed when not; it goes on)
    fanout: Fanout | None = None  # a grid or for_each: the task runs once per parameter set

    @property
    def max_tries(self) -> int:
        return self.retries + 1

    def retry_wait(self, try_number: int) -> float:
        """Seconds to wait before the try after ``try_number`` (Airflow's backoff: delay * 2**(n-1)),
        never more than a duration may be (a hundred doublings would overflow a date)."""
        doublings = min(try_number - 1, 64) if self.retry_exponential_backoff else 0
        wait = min(self.retry_delay * 2.0**doublings, MAX_DURATION)
        return min(wait, self.max_retry_delay) if self.max_retry_delay is not None else wait


@dataclass(frozen=True, kw_only=True)
class ScheduleSpec:
    """A schedule as written in the spec (checked by :func:`schedule_fields`)."""

    fields: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class PipelineSpec:
    name: str
    tasks: dict[str, TaskSpec]
    params: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    schedules: tuple[ScheduleSpec, ...] = ()
    notify: tuple[NotifyRule, ...] = ()  # notifications of the run's events
    sla: float | None = None  # seconds a run should end within once started (sla_missed when not)
    max_active_tasks: int | None = None  # its tasks running at once, over all its runs
    base_dir: Path
    # the folder every notebook must stay in whenever it is read (see confine_notebooks); None
    # for a spec of the user's own files, which may name any notebook the user can read
    root: Path | None = None
    source: Path | None = None
    raw: dict[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    @cached_property
    def order(self) -> list[str]:
        return topological_order({t.name: t.upstream for t in self.tasks.values()})

    @cached_property
    def position(self) -> dict[str, int]:
        """Each task's place in ``order``."""
        return {name: i for i, name in enumerate(self.order)}

    @cached_property
    def downstream(self) -> dict[str, list[str]]:
        """Each task's direct downstream tasks."""
        return downstream_of({t.name: t.upstream for t in self.tasks.values()})


class _Where:
    """Builds one-line error messages: ``<file>: <field path>: <problem>``."""

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, path: str, problem: str, cls: type[SpecError] = SpecError) -> SpecError:
        path = _one_line(path)  # a key may hold a newline: the message stays one line
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
        if not isinstance(value, str) or not NAME_RE.fullmatch(value):
            shown = repr(value[:100] + "...") if isinstance(value, str) and len(value) > 100 else repr(value)
            raise self.error(
                path,
                f"bad {what} name {shown}: use lower-case letters, digits, '_' "
                "and '-', starting with a letter or digit, at most 100 characters",
            )
        return value

    def convert(self, value: Any, path: str, fn: Callable[[Any], Any]) -> Any:
        try:
            return fn(value)
        except (TypeError, ValueError) as exc:
            raise self.error(path, str(exc)) from None


def _one_line(text: str, limit: int = 200) -> str:
    """``text`` with its control characters escaped (``\\n``), and cut when long."""
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:limit])
    return shown + "..." if len(text) > limit else shown


def _did_you_mean(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _policy(where: _Where, raw: Mapping[str, Any], path: str, base: Mapping[str, Any]) -> dict[str, Any]:
    """Retry/timeout/kernel fields, each falling back to ``base`` (the pipeline defaults)."""
    out = dict(base)
    if "retries" in raw:
        r = raw["retries"]
        if isinstance(r, bool) or not isinstance(r, int) or not 0 <= r <= MAX_RETRIES:
            raise where.error(f"{path}.retries", f"expected a whole number from 0 to {MAX_RETRIES}, got {r!r}")
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
            if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not 0 < amount < math.inf:
                raise where.error(f"{path}.resources.{key}", f"expected a number > 0, got {amount!r}")
        out["resources"] = dict(resources)
    if "pool" in raw:
        pool = raw["pool"]
        out["pool"] = None if pool is None else where.name(pool, f"{path}.pool", "pool")
    return out


def _max_active_tasks(where: _Where, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ACTIVE_TASKS:
        raise where.error("max_active_tasks", f"expected a whole number from 1 to {MAX_ACTIVE_TASKS:,}, got {value!r}")
    return value


def _sla(where: _Where, value: Any, path: str) -> float | None:
    if value is None:
        return None
    seconds = float(where.convert(value, path, parse_duration))
    if seconds <= 0:
        raise where.error(path, "expected a duration > 0, like '30m'")
    return seconds


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
    check_depth(data, source)  # data given as data (REST, magics, Python) is bounded like a YAML file
    raw = with_on_keys(where.mapping(data, ""))
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
    if len(tasks_raw) > MAX_TASKS:
        raise where.error("tasks", f"{len(tasks_raw):,} tasks (at most {MAX_TASKS:,})")
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
        if len(notebook) > MAX_PATH or "\0" in notebook:  # the file system refuses both, with a traceback
            raise where.error(
                f"{path}.notebook",
                f"a path of {len(notebook):,} characters (at most {MAX_PATH:,})"
                if len(notebook) > MAX_PATH
                else "the path contains a NUL character",
            )
        rule = task_raw.get("trigger_rule", TriggerRule.ALL_SUCCESS.value)
        if not isinstance(rule, str):
            raise where.error(f"{path}.trigger_rule", f"expected a trigger rule name, got {rule!r}")
        if rule not in {r.value for r in TriggerRule}:
            hint = _did_you_mean(rule, [r.value for r in TriggerRule])
            raise where.error(f"{path}.trigger_rule", f"unknown trigger rule {rule!r}{hint}")
        upstream = _upstream(where, task_raw.get("upstream"), f"{path}.upstream")
        tasks[task_name] = TaskSpec(
            name=task_name,
            notebook=(base_dir / notebook),
            params=where.mapping(task_raw.get("params"), f"{path}.params"),
            upstream=upstream,
            fanout=parse_fanout(task_raw, path, upstream, where.error),
            trigger_rule=TriggerRule(rule),
            description=str(task_raw.get("description") or ""),
            notify=parse_rules(task_raw.get("notify"), f"{path}.notify", where.error, task=True),
            sla=_sla(where, task_raw.get("sla"), f"{path}.sla"),
            **_policy(where, task_raw, path, defaults),
        )

    for task in tasks.values():
        for up in task.upstream:
            if up not in tasks:
                raise where.error(f"tasks.{task.name}.upstream", f"unknown task '{up}'{_did_you_mean(up, tasks)}")
            if up == task.name:
                raise where.error(f"tasks.{task.name}.upstream", "a task cannot be its own upstream", CycleError)
    try:
        topological_order({t.name: t.upstream for t in tasks.values()})
    except CycleError as exc:
        raise where.error("tasks", str(exc), CycleError) from None

    schedules_raw = raw.get("schedules") or []
    if not isinstance(schedules_raw, list):
        raise where.error("schedules", f"expected a list, got {type(schedules_raw).__name__}")
    if len(schedules_raw) > MAX_SCHEDULES:
        raise where.error("schedules", f"{len(schedules_raw):,} schedules (at most {MAX_SCHEDULES})")
    schedules = []
    for i, s in enumerate(schedules_raw):
        s = where.mapping(s, f"schedules[{i}]")
        where.known(s, SCHEDULE_KEYS, f"schedules[{i}]")
        try:
            schedule_fields(s, now=_ANY_MOMENT, where=f"schedules[{i}]", pipeline=name, folder=base_dir)
        except ScheduleError as exc:
            raise where.error("", str(exc)) from None
        schedules.append(ScheduleSpec(fields=s))
    # the spec is stored as JSON: what else it holds that JSON cannot (in params, a description) is refused now
    problem = json_problem(raw)
    if problem is not None:
        raise where.error(*problem)

    notify = parse_rules(raw.get("notify"), "notify", where.error)
    return PipelineSpec(
        name=name,
        description=str(raw.get("description") or ""),
        params=params,
        tasks={n: replace(t, reported_by=task_rules(t.notify, notify)) for n, t in tasks.items()},
        schedules=tuple(schedules),
        notify=notify,
        sla=_sla(where, raw.get("sla"), "sla"),
        max_active_tasks=_max_active_tasks(where, raw.get("max_active_tasks")),
        base_dir=base_dir,
        source=None,
        raw=raw,
    )


def schedule_fields(
    fields: Mapping[str, Any],
    *,
    now: datetime,
    where: str = "schedule",
    pipeline: str | None = None,
    folder: Path | None = None,
    root: Path | None = None,
) -> dict[str, Any]:
    """Validate a schedule's fields (a spec's ``schedules:`` entry, or a schedule added or changed
    later); returns the store's row fields with its first fire time after ``now`` (None for an
    ``after`` or ``files`` schedule, which waits for events). ``pipeline`` is the schedule's own
    (an ``after`` may not name it); ``folder`` is the spec's, where a ``files`` pattern looks, and
    ``root`` (a spec registered through Jupyter) the folder it must stay in whenever it looks."""
    bad = [k for k in fields if k not in SCHEDULE_KEYS]
    if bad:
        raise ScheduleError(f"{where}.{bad[0]}: unknown key")
    kinds = [k for k in SCHEDULE_KINDS if k in fields]
    if not kinds:
        raise ScheduleError(f"{where}: a schedule needs one of cron, every, at, after or files")
    if len(kinds) > 1:
        raise ScheduleError(
            f"{where}: a schedule takes one of cron, every, at, after or files, not {' and '.join(kinds)}"
        )
    kind = kinds[0]
    for key in fields:  # a field of another kind is a mistake, never dropped
        if key in _OWNERS and key not in KIND_KEYS[kind]:
            a = "an" if kind[0] in "ae" else "a"
            raise ScheduleError(f"{where}.{key}: only {_OWNERS[key]} has {key} (this one is {a} {kind} schedule)")
    if is_event(fields):
        return _event_fields(fields, where, pipeline, folder, root)
    trigger = trigger_from_fields(fields, now=now.replace(microsecond=0))  # `every` anchors on a whole second
    if isinstance(trigger, IntervalTrigger) and trigger.every < MIN_EVERY:  # `every: 1ms` made 322 runs in 8 s
        raise ScheduleError(
            f"{where}.every: {fields['every']!r}: at least {duration(MIN_EVERY)} (a schedule fires at most once a second)"
        )
    try:
        grace = parse_duration(fields.get("misfire_grace", DEFAULT_MISFIRE_GRACE))
    except ValueError as exc:
        raise ScheduleError(f"{where}.misfire_grace: {exc}") from None
    if not isinstance(fields.get("catchup", False), bool):
        raise ScheduleError(f"{where}.catchup: expected true or false, got {fields['catchup']!r}")
    return {
        "trigger": trigger.to_fields(),
        **_common_fields(fields, where),
        "catchup": fields.get("catchup", False),
        "misfire_grace": grace,
        "next_fire_at": trigger.next_after(now),
    }


def _event_fields(
    fields: Mapping[str, Any], where: str, pipeline: str | None, folder: Path | None, root: Path | None
) -> dict[str, Any]:
    if "files" in fields:
        fields = {**fields, "folder": str(folder) if folder is not None else ""}
        if root is not None:
            fields["root"] = str(root)
    trigger = event_from_fields(fields, where=where, pipeline=pipeline)
    return {
        "trigger": trigger.to_fields(),
        **_common_fields(fields, where),
        "catchup": False,
        "misfire_grace": 0.0,
        "next_fire_at": None,
    }


def _common_fields(fields: Mapping[str, Any], where: str) -> dict[str, Any]:
    """What every kind of schedule may have: its runs' parameters, how many may be active, enabled."""
    params = fields.get("params") or {}
    if not isinstance(params, Mapping):
        raise ScheduleError(f"{where}.params: expected a mapping, got {params!r}")
    max_active = fields.get("max_active_runs", 1)
    if isinstance(max_active, bool) or not isinstance(max_active, int) or not 1 <= max_active <= MAX_ACTIVE_RUNS:
        raise ScheduleError(
            f"{where}.max_active_runs: expected a whole number from 1 to {MAX_ACTIVE_RUNS:,}, got {max_active!r}"
        )
    if not isinstance(fields.get("enabled", True), bool):
        raise ScheduleError(f"{where}.enabled: expected true or false, got {fields['enabled']!r}")
    return {"params": dict(params), "max_active_runs": max_active, "enabled": fields.get("enabled", True)}


def load_pipeline(path: str | Path, *, root: Path | None = None, shown: str | None = None) -> PipelineSpec:
    """Load a ``pipeline.yaml`` or a single ``.ipynb`` (a one-task pipeline) and check its notebooks.
    With ``root``, every notebook must lie inside it, checked before any notebook is read.
    Errors name the file as ``shown`` (default: as given)."""
    path, shown = spec_file(path, shown)
    if not path.is_file():
        raise SpecError(f"{shown}: file not found")
    resolved = path.resolve()
    if path.suffix == ".ipynb":
        stem = re.sub(r"[^a-z0-9_-]+", "-", path.stem.lower()).strip("-_")[:100] or "notebook"
        data: Any = {"name": stem, "tasks": {stem: {"notebook": path.name}}}
    else:
        data = load_yaml(read_spec_text(path, shown), shown)
    spec = parse_pipeline(data, base_dir=resolved.parent, source=shown)
    if root is not None:
        spec = confine_notebooks(spec, root, shown)
    warnings = check_notebooks(spec, source=shown)
    return replace(spec, source=resolved, warnings=tuple(warnings))


def spec_file(path: str | Path, shown: str | None = None) -> tuple[Path, str]:
    """The spec file ``path`` names (a folder's ``pipeline.yaml``), and how errors name it: as
    the user wrote it (``shown``, else ``path``), never made absolute."""
    path = Path(path)
    if path.is_dir():
        return path / "pipeline.yaml", f"{(shown or str(path)).rstrip('/')}/pipeline.yaml"
    return path, shown or str(path)


def confine_notebooks(spec: PipelineSpec, root: Path, source: str) -> PipelineSpec:
    """The spec, bound to ``root``: each notebook must resolve inside it. Checked on the paths
    alone, before a notebook is read, and with the same answer for every path outside (one
    that exists or not, a notebook or not): the answer must not tell what is there."""
    for task in spec.tasks.values():
        confined_notebook(task, root, source)
    return replace(spec, root=root)


def confined_notebook(task: TaskSpec, root: Path, source: str = "") -> Path:
    """The task's notebook resolved (symlinks followed) when it lies inside ``root``; the runner
    asks again before each try, since a file may become a symlink after it was registered."""
    where = f"{source}: tasks.{task.name}.notebook" if source else f"tasks.{task.name}.notebook"
    try:
        resolved = task.notebook.resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # too long, a symlink loop (RuntimeError on 3.11)
        raise SpecError(f"{where}: cannot be resolved ({_problem(exc)})") from None
    if not resolved.is_relative_to(root):  # resolved paths, never a prefix test (root2/ would pass)
        raise SpecError(f"{where}: outside the server root")
    return resolved


def _problem(exc: BaseException) -> str:
    """What went wrong, without the file's full path (messages reach REST clients)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, RuntimeError):  # pathlib's "Symlink loop from '<absolute path>'" (Python 3.11)
        return "a symlink loop"
    return " ".join(str(exc).split())[:200] or type(exc).__name__


def check_notebooks(spec: PipelineSpec, *, source: str) -> list[str]:
    """Check each task's notebook exists and is a notebook; warn (like papermill) when params
    are given but the notebook has no cell tagged ``parameters``."""
    warnings = []
    for task in spec.tasks.values():
        field_path = f"tasks.{task.name}.notebook"
        rel = os.path.relpath(task.notebook, spec.base_dir)  # as written: never the machine's absolute path
        try:
            found = task.notebook.is_file()
        except OSError as exc:  # a name the file system refuses (too long): not "not found"
            raise SpecError(f"{source}: {field_path}: cannot be read ({_problem(exc)})") from None
        if not found:
            raise SpecError(f"{source}: {field_path}: notebook not found: {rel}")
        try:
            text = task.notebook.read_text(encoding="utf-8")
            if not json_depth_ok(text):  # json.loads would end in a RecursionError
                raise ValueError("nested deeper than 100 levels")
            nb = json.loads(text)
            has_parameters = any("parameters" in ((c.get("metadata") or {}).get("tags") or []) for c in nb["cells"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise SpecError(f"{source}: {field_path}: {rel} is not a valid notebook ({_problem(exc)})") from None
        if (spec.params or task.params) and not has_parameters:
            warnings.append(
                f"{source}: {field_path}: {rel} has no cell tagged 'parameters'; "
                "parameters are injected at the top of the notebook"
            )
    return warnings
