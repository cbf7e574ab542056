"""The parameters a task notebook receives: merge, template, add the built-ins. Pure."""

from __future__ import annotations

import keyword
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from nbsched.errors import ConfigError, SpecError
from nbsched.paramvalues import check_json, resolve_type
from nbsched.spec import PipelineSpec, TaskSpec

EVENT_BUILTINS = ("trigger_run", "trigger_file")  # only in a run an after or files schedule made
BUILTINS = ("nbsched_run_id", "nbsched_task", "nbsched_try", "logical_date", "upstream", *EVENT_BUILTINS)


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` from the command line (``-p``, the magics, the panel's Run-now box); the
    value typed as papermill's ``-p`` types it (:func:`nbsched.paramvalues.resolve_type`), or,
    nbsched's addition, JSON when it starts with ``[`` or ``{`` (not a template's ``{{``/``{%``)."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key.isidentifier() or keyword.iskeyword(key):
        raise ConfigError(f"-p {_cut(text)}: expected key=value with a Python identifier as key")
    start = value.strip()[:2]
    # a half-typed list must not run as a string; "{{" and "{%" open a template, never JSON
    if start[:1] in ("[", "{") and start not in ("{{", "{%"):
        from nbsched.bounds import loads_json

        try:
            parsed = loads_json(value, f"-p {key}")
        except SpecError as exc:
            raise ConfigError(f"{exc} (a value that starts with '[' or '{{' must be valid JSON)") from None
        return key, _json_only(parsed, key)
    return key, _json_only(resolve_type(value), key)


def _json_only(value: Any, key: str) -> Any:
    try:
        check_json(value, f"-p {key}")
    except SpecError as exc:
        raise ConfigError(str(exc)) from None
    return value


def _cut(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def task_parameters(
    spec: PipelineSpec,
    task: TaskSpec,
    *,
    overrides: Mapping[str, Any],
    run_id: str,
    logical_date: datetime,
    run_dir: str,
    upstream: Mapping[str, Any],  # a task's recorded values; a mapped task's, a list of its instances
    try_number: int = 1,
    fired_by: Mapping[str, Any] | None = None,
    instance: Mapping[str, Any] | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """pipeline params < task params < run overrides, Jinja-templated, plus the built-ins; a run
    an event schedule made (``fired_by``) also gets ``trigger_run`` (the upstream run: its id,
    pipeline, state and outputs) or ``trigger_file`` (the file's path, relative to the spec's
    folder), in its notebooks and in its templates. An instance of a mapped task (``name``
    ``train[3]``) gets its grid or for_each values (``instance``) after the task's own
    parameters; a run's override may not change them."""
    instance = dict(instance or {})
    for key, value in overrides.items():  # from any surface (REST, Python): stored as JSON
        check_json(value, f"-p {key}")
    fixed = sorted(set(instance) & set(overrides))
    if fixed:
        raise SpecError(
            f"-p {fixed[0]}: '{fixed[0]}' is a value of each instance of task {task.name} (its grid or for_each)"
        )
    merged = {**spec.params, **task.params, **instance, **overrides}
    field = "grid" if task.fanout is not None and task.fanout.grid is not None else "for_each"
    # where each value came from, so an error names the field the user wrote
    origin = {
        **{k: f"params.{k}" for k in spec.params},
        **{k: f"tasks.{task.name}.params.{k}" for k in task.params},
        **{k: f"tasks.{task.name}.{field}.{k}" for k in instance},
        **{k: f"-p {k}" for k in overrides},
    }
    clash = sorted(set(merged) & set(BUILTINS))
    if clash:
        raise SpecError(f"{origin[clash[0]]}: '{clash[0]}' is set by nbsched and cannot be a parameter")
    context = {
        "logical_date": logical_date,
        "run_id": run_id,
        "params": merged,
        "task": name or task.name,
        "pipeline": spec.name,
        "run_dir": run_dir,
        "trigger_run": None,
        "trigger_file": None,
    }
    event: dict[str, Any] = {}
    if fired_by and "run" in fired_by:
        event["trigger_run"] = fired_by["run"]
    if fired_by and "file" in fired_by:
        event["trigger_file"] = fired_by["file"]["path"]
    context.update(event)
    from nbsched.templates import budget, environment

    env = environment()
    with budget():  # one budget for all of a task's parameters (and all tasks of a dry run)
        rendered = {k: _render(env, v, context, origin[k]) for k, v in merged.items()}
    return {
        **rendered,
        "nbsched_run_id": run_id,
        "nbsched_task": name or task.name,
        "nbsched_try": try_number,
        "logical_date": logical_date.isoformat(),
        "upstream": {up: list(values) if isinstance(values, list) else dict(values) for up, values in upstream.items()},
        **event,
    }


def _render(env: Any, value: Any, context: dict[str, Any], where: str) -> Any:
    from nbsched.templates import spend

    spend(3)  # walking a value costs too: a spec's params are walked once per task
    if isinstance(value, str):
        if "{{" not in value and "{%" not in value:
            return value
        try:
            return env.render(value, context)
        except Exception as exc:  # noqa: BLE001 - a template is the user's code: any failure is theirs to fix
            raise SpecError(f"{where}: template error in {_shown(value)}: {_one_line(exc)}") from None
    if isinstance(value, list):
        return [_render(env, v, context, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _render(env, v, context, f"{where}.{k}") for k, v in value.items()}
    return value


def _shown(template: str, limit: int = 80) -> str:
    """The template in a message: quoted on one line, and cut when long (it may be megabytes)."""
    return repr(template if len(template) <= limit else template[:limit] + "...")


def _one_line(exc: BaseException) -> str:
    import jinja2

    text = " ".join(str(exc).split()) or type(exc).__name__
    if not isinstance(exc, jinja2.TemplateError):  # ZeroDivisionError, TypeError ...: say which
        text = f"{type(exc).__name__}: {text}"
    return text if len(text) <= 300 else text[:300] + "..."
