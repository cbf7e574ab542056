"""What a notification says: the default title and body, what a spec's own templates see, and
how they render: checked at ``validate`` against a made-up run of each event of their rule, and
at send time never the reason an alert is lost (a template that fails gives way to the default
message, with a line saying why).

Templates render in the parameters' sandbox (``nbsched.templates``), with its bounds: a spec's
title or body is a user's template like any parameter.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from nbsched.states import NotifyEvent, RunState, RunTrigger, TaskState
from nbsched.timefmt import duration, elapsed
from nbsched.views import RunView, TaskView

if TYPE_CHECKING:
    from nbsched.notices import NotifyRule
    from nbsched.spec import PipelineSpec

MAX_MESSAGE = 100_000  # characters of a rendered title or body

DEFAULT_TITLE = "{{ pipeline }}: {% if task %}task {{ task }} {{ event_text }}{% else %}run {{ event_text }}{% endif %}"
DEFAULT_BODY = """\
Pipeline: {{ pipeline }}
Run: {{ run_id }} ({{ state }})
Trigger: {{ trigger }}, logical date {{ logical_date }}
{% if duration %}Duration: {{ duration }}
{% endif %}{% if failed %}Failed:
{% for f in failed %}  {{ f.task }}: {{ f.error }}
{% endfor %}{% endif %}{% if params %}Parameters: {{ params }}
{% endif %}Report: {{ report_url }}
"""
DEFAULT_MISSED_TITLE = "{{ pipeline }}: schedule {{ schedule_id }} missed {{ missed }} fire(s)"
DEFAULT_MISSED_BODY = """\
Pipeline: {{ pipeline }}
Schedule: {{ schedule_id }}
{% if error %}Missed: {{ missed }} fire(s), the last at {{ up_to }}: its run could not be made: {{ error }}
{% else %}Missed: {{ missed }} fire(s), the last at {{ up_to }}, {{ late }} late (misfire grace {{ misfire_grace }}):
no run was made for them (set catchup: true to run every missed fire).
{% endif %}"""
TEST_NOTE = "This is a test of nbsched notify test, not a real run: the run below is made up.\n\n"

_EVENT_TEXT = {
    NotifyEvent.START: "started",
    NotifyEvent.SUCCESS: "succeeded",
    NotifyEvent.FAILURE: "failed",
    NotifyEvent.RETRY: "is up for retry",
    NotifyEvent.SLA_MISSED: "missed its sla",
    NotifyEvent.SCHEDULE_MISSED: "missed fires",
}
SAMPLE_ERROR = "RuntimeError: a sample failure of nbsched notify test (cell 1: raise RuntimeError(...))"


def message_context(
    run: RunView, event: NotifyEvent, task: str | None, report_url: str, try_number: int = 0
) -> dict[str, Any]:
    """What a title or body template sees: the run's fields, the failed tasks with their errors
    (each names its cell; for a task's event, the error of the try it is about, whatever the task
    has done since), the event, and where the run's report is."""
    if task is not None and task in run.tasks:
        t = run.tasks[task]
        tried = next((x for x in t.tries if x.try_number == try_number), None)
        error = tried.error if tried is not None else t.error
        failed = [{"task": task, "error": error}] if error else []
    else:
        failed = [
            {"task": n, "error": t.error or "failed"} for n, t in run.tasks.items() if t.state is TaskState.FAILED
        ]
    end = run.ended_at
    return {
        "run": run.to_json(),
        "run_id": run.id,
        "pipeline": run.pipeline,
        "state": run.state.value,
        "trigger": run.trigger.value,
        "logical_date": f"{run.logical_date:%Y-%m-%d %H:%M %Z}",
        # as the command line shows how long a run took (75.0s, 2m05s)
        "duration": elapsed((end - run.started_at).total_seconds()) if end and run.started_at else "",
        "params": json.dumps(dict(run.params), default=str) if run.params else "",
        "failed": failed,
        "event": event.value,
        "event_text": _EVENT_TEXT[event],
        "task": task,
        "report_url": report_url,
        "succeeded": run.state is RunState.SUCCESS,
    }


def missed_context(pipeline: str, detail: dict[str, Any]) -> dict[str, Any]:
    """What the templates of a schedule_missed see: the schedule and the fires it skipped."""
    return {
        "pipeline": pipeline,
        "event": NotifyEvent.SCHEDULE_MISSED.value,
        "event_text": _EVENT_TEXT[NotifyEvent.SCHEDULE_MISSED],
        "schedule_id": detail.get("schedule_id"),
        "missed": detail.get("missed"),
        "up_to": detail.get("up_to"),
        "late": detail.get("late"),
        "misfire_grace": duration(float(detail.get("misfire_grace") or 0)),
        "error": detail.get("error"),  # the run of a fire could not be made: why
        "detail": detail,
        "run": None,
        "task": None,
    }


SAMPLE_MISSED = {
    "schedule_id": 1,
    "missed": 3,
    "up_to": "2026-01-01T06:00:00+00:00",
    "late": "3h00m",
    "misfire_grace": 600,
}


# -- rendering -------------------------------------------------------------------------------------
def render_template(template: str, context: dict[str, Any]) -> str:
    """One template, in the parameters' sandbox with its bounds; raises what Jinja raises."""
    from nbsched.templates import environment

    text = environment().render(template, context)
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + "..."


def render_message(
    title: str | None,
    body: str | None,
    context: dict[str, Any],
    default_title: str = DEFAULT_TITLE,
    default_body: str = DEFAULT_BODY,
) -> tuple[str, str]:
    """The title and body, from the spec's templates or the defaults. A spec's template that
    fails now (it rendered at ``validate``, but this run's values differ) gives way to the
    default, and the body ends with a line saying why: an alert is never lost for its wording."""
    notes: list[str] = []

    def one(field: str, own: str | None, default: str) -> str:
        if own:
            try:
                return render_template(own, context)
            except Exception as exc:  # noqa: BLE001 - a user's template, whatever it raises
                notes.append(
                    f"(The spec's {field} template could not render: {why(exc)}. This is the default {field}.)"
                )
        return render_template(default, context)

    shown_title, shown_body = one("title", title, default_title).strip(), one("body", body, default_body)
    if notes:
        shown_body = shown_body.rstrip("\n") + "\n\n" + "\n".join(notes) + "\n"
    return shown_title, shown_body


def why(exc: BaseException) -> str:
    """What went wrong in a template, in one line."""
    from jinja2 import TemplateError, TemplateSyntaxError

    if isinstance(exc, TemplateSyntaxError):
        text = f"{exc.message} (line {exc.lineno})"
    elif isinstance(exc, TemplateError):
        text = str(exc.message or type(exc).__name__)
    else:
        text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())


# -- made-up runs: notify test, and the check of a spec's templates --------------------------------
def sample_run(spec: PipelineSpec, event: NotifyEvent, now: datetime, task: str | None = None) -> RunView:
    """A made-up run of ``spec`` as ``event`` finds it (of ``task``, for a task's event): the run
    running at its start, at a retry or an sla; ended as the event says at its end."""
    run_state = {
        NotifyEvent.SUCCESS: RunState.SUCCESS,
        NotifyEvent.FAILURE: RunState.FAILED,
    }.get(event, RunState.RUNNING)
    if task is not None and event is NotifyEvent.SUCCESS:
        run_state = RunState.RUNNING  # a task's try succeeded: its run goes on
    subject = task or (spec.order[0] if spec.order else None)
    subject_state = {
        NotifyEvent.SUCCESS: TaskState.SUCCESS,
        NotifyEvent.FAILURE: TaskState.FAILED,
        NotifyEvent.RETRY: TaskState.UP_FOR_RETRY,
        NotifyEvent.SLA_MISSED: TaskState.RUNNING,
    }.get(event, TaskState.PENDING)
    others = TaskState.SUCCESS if run_state is RunState.SUCCESS else TaskState.PENDING
    tasks = {}
    for name in spec.order:
        state = subject_state if name == subject else others
        tasks[name] = TaskView(
            name=name,
            state=state,
            try_number=1,
            max_tries=spec.tasks[name].max_tries,
            error=SAMPLE_ERROR if state in (TaskState.FAILED, TaskState.UP_FOR_RETRY) else None,
            started_at=now,
            ended_at=None if state in (TaskState.PENDING, TaskState.RUNNING) else now,
            label=name,
        )
    return RunView(
        id="sample",
        pipeline=spec.name,
        pipeline_version=0,
        state=run_state,
        params=spec.params,
        logical_date=now,
        trigger=RunTrigger.MANUAL,
        schedule_id=None,
        fired_by=None,
        repairs=(),
        selection=None,
        error=None,
        created_at=now,
        started_at=now,
        ended_at=None if run_state is RunState.RUNNING else now,
        tasks=tasks,
    )


@dataclass(frozen=True, kw_only=True)
class Occasion:
    """One way a rule's message is made: its event, and the task it is about (None: the run's)."""

    event: NotifyEvent
    task: str | None = None

    def context(self, spec: PipelineSpec, now: datetime, report_url: str = "(report)") -> dict[str, Any]:
        if self.event is NotifyEvent.SCHEDULE_MISSED:
            return missed_context(spec.name, dict(SAMPLE_MISSED))
        return message_context(sample_run(spec, self.event, now, self.task), self.event, self.task, report_url, 1)

    def defaults(self) -> tuple[str, str]:
        if self.event is NotifyEvent.SCHEDULE_MISSED:
            return DEFAULT_MISSED_TITLE, DEFAULT_MISSED_BODY
        return DEFAULT_TITLE, DEFAULT_BODY


def occasions(spec: PipelineSpec, rule: NotifyRule, task: str | None) -> Iterator[Occasion]:
    """The messages ``rule`` (a pipeline's, or ``task``'s) can make: a task's rule is about its
    tries; a pipeline's ``retry`` about its tasks' tries, its ``sla_missed`` about the run's sla
    and each task's (``notices.task_rules``)."""
    for event in sorted(rule.on, key=lambda e: e.value):
        if task is not None:
            yield Occasion(event=event, task=task)
        elif event is NotifyEvent.RETRY:
            yield from (Occasion(event=event, task=name) for name in spec.order[:1])
        elif event is NotifyEvent.SLA_MISSED:
            timed = [name for name in spec.order if spec.tasks[name].sla]
            if spec.sla is not None or not timed:
                yield Occasion(event=event)
            yield from (Occasion(event=event, task=name) for name in timed[:1])
        else:
            yield Occasion(event=event)
