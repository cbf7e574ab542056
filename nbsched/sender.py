"""Sends the outbox's notifications through Apprise, in a thread of every process that runs
tasks (``nbsched serve``, the Jupyter server's daemon, a foreground ``nbsched run``).

Each notification is claimed by one sender under a lease (``store/outbox.py``), so two daemons
never both send it; one that cannot be delivered is tried again with backoff for a day, then
marked failed. Sending never blocks a run: it happens beside it, in its own thread.
"""

from __future__ import annotations

import functools
import json
import logging
import secrets
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbsched.clock import SYSTEM_CLOCK, Clock
from nbsched.errors import NbschedError
from nbsched.notices import is_url
from nbsched.states import NotifyEvent, RunState, RunTrigger, TaskState
from nbsched.timefmt import duration
from nbsched.views import RunView, TaskView

if TYPE_CHECKING:
    from nbsched.spec import PipelineSpec
    from nbsched.store import SqlStore
    from nbsched.store.records import NoticeRecord

log = logging.getLogger("nbsched.notify")

BATCH = 20  # notifications claimed at once
LEASE = 300.0  # seconds a claim holds: longer than any one delivery (Apprise's timeouts are shorter)
GIVE_UP_AFTER = 24 * 3600.0  # a notification not delivered within a day is marked failed
MAX_MESSAGE = 100_000  # characters of a rendered title or body


def backoff(attempts: int) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones: 10 s, doubling, at most an hour."""
    return min(10.0 * 2.0 ** min(attempts - 1, 20), 3600.0)


@dataclass(frozen=True, kw_only=True)
class Delivery:
    """How notifications reach people: the Apprise configuration file that defines the tags,
    the public URL of the run reports (a Jupyter server's), and the report of a run as a file."""

    config_file: Path
    public_url: str | None = None
    report: Callable[[str], Path] | None = None  # run id -> its report page, written


class Sender:
    """Claims due notifications and sends them; ``start()`` does so in a thread of its own."""

    def __init__(
        self,
        store: SqlStore,
        delivery: Delivery,
        *,
        clock: Clock = SYSTEM_CLOCK,
        poll: float | None = 5.0,  # None: it sends when woken only (a daemon's loop wakes it)
        run_ids: list[str] | None = None,
    ) -> None:
        self.store = store
        self.delivery = delivery
        self.clock = clock
        self.poll = poll
        self.run_ids = run_ids  # a foreground run's sender sends its run's notifications only
        self.id = f"sender-{secrets.token_hex(6)}"
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the thread ----------------------------------------------------------------------------
    def start(self) -> Sender:
        self.store.notice_listeners.append(self.wake)
        self._thread = threading.Thread(target=self._loop, name="nbsched-sender", daemon=True)
        self._thread.start()
        return self

    def wake(self) -> None:
        """Look for new notifications now (a state change wrote some)."""
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        if self.wake in self.store.notice_listeners:
            self.store.notice_listeners.remove(self.wake)
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        if self.poll is None:
            self._on_wake()
            return
        while not self._stop.is_set():
            try:
                with self.store.patient(while_waiting=self._stop_waiting):
                    wait = self._until_next()
                    if wait <= 0 and self.send_due(self.run_ids):  # claims write: only when something is due
                        wait = self._until_next()
                    elif wait <= 0:  # another sender holds what is due
                        wait = self.poll
            except _Stopping:
                return
            except Exception as exc:  # noqa: BLE001 - a sender that stops would silence every pipeline
                log.warning("notifications: %s", exc)
                wait = self.poll
            self._wake.wait(wait)
            self._wake.clear()

    def _on_wake(self) -> None:
        """Without a poll of its own (a daemon's): sleep until woken, send what is due, again."""
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            try:
                with self.store.patient(while_waiting=self._stop_waiting):
                    while not self._stop.is_set() and self.send_due(self.run_ids):
                        pass
            except _Stopping:
                return
            except Exception as exc:  # noqa: BLE001 - a sender that stops would silence every pipeline
                log.warning("notifications: %s", exc)

    def _stop_waiting(self) -> None:
        if self._stop.is_set():
            raise _Stopping

    def _until_next(self) -> float:
        due = self.store.next_notice_at(self.run_ids)
        if due is None or self.poll is None:
            return self.poll or 0.0
        return max(0.0, min(self.poll, (due - self.clock.now()).total_seconds()))

    def due(self) -> bool:
        """Whether a notification no sender holds is due now (one read)."""
        at = self.store.next_notice_at(self.run_ids)
        return at is not None and at <= self.clock.now()

    # -- one pass ------------------------------------------------------------------------------
    def send_due(self, run_ids: Iterable[str] | None = None) -> int:
        """Send what is due now (of ``run_ids``, when given); returns how many were tried."""
        claimed = self.store.claim_notices(self.id, BATCH, LEASE, run_ids)
        for notice in claimed:
            self._send(notice)
        return len(claimed)

    def flush(self, run_ids: Iterable[str], timeout: float) -> None:
        """Send the notifications of ``run_ids`` due now, for up to ``timeout`` seconds (a
        foreground run, before it exits); what is left waits for a daemon."""
        ids = list(run_ids)
        deadline = self.clock.monotonic() + timeout
        while self.clock.monotonic() < deadline and self.send_due(ids):
            pass

    def _send(self, notice: NoticeRecord) -> None:
        try:
            ok, answer = self.deliver(notice)
        except Exception as exc:  # noqa: BLE001 - a template or a service that breaks: noted, tried again
            ok, answer = False, f"{type(exc).__name__}: {exc}"
        answer = " ".join(answer.split()) or ("sent" if ok else "not sent")
        if ok:
            self.store.notice_sent(notice.id, self.id, answer)
            log.info(
                "notification %s (%s of run %s) sent to %s",
                notice.id,
                notice.event,
                notice.run_id,
                shown_target(notice.target),
            )
            return
        first = notice.created_at
        retry_at = self.clock.now() + timedelta(seconds=backoff(notice.attempts + 1))
        give_up = retry_at - first > timedelta(seconds=GIVE_UP_AFTER)
        self.store.notice_not_sent(notice.id, self.id, answer, None if give_up else retry_at)
        log.warning(
            "notification %s (%s of run %s) to %s %s: %s",
            notice.id,
            notice.event,
            notice.run_id,
            shown_target(notice.target),
            "failed for good" if give_up else f"not sent, again at {retry_at:%H:%M:%S}",
            answer,
        )

    def deliver(self, notice: NoticeRecord) -> tuple[bool, str]:
        """Render and send one notification; (delivered, what the services answered)."""
        if notice.run_id is None:  # an event without a run: a schedule's missed fires
            context = missed_context(notice.pipeline or "?", notice.detail or {})
            title, body = render_message(notice.title, notice.body, context, DEFAULT_MISSED_TITLE, DEFAULT_MISSED_BODY)
            return send(notice.target, title, body, self.delivery.config_file, payload=notice.detail)
        run = RunView.of(self.store.get_run(notice.run_id, with_tries=True))
        context = message_context(run, notice.event, notice.task or None, self.delivery, notice.try_number)
        title, body = render_message(notice.title, notice.body, context)
        attach = None
        if notice.attach_report and self.delivery.report is not None:
            attach = self.delivery.report(run.id)
        return send(notice.target, title, body, self.delivery.config_file, attach=attach, payload=run.to_json())


class _Stopping(Exception):
    pass


# -- messages ------------------------------------------------------------------------------------
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

_EVENT_TEXT = {
    NotifyEvent.START: "started",
    NotifyEvent.SUCCESS: "succeeded",
    NotifyEvent.FAILURE: "failed",
    NotifyEvent.RETRY: "is up for retry",
    NotifyEvent.SLA_MISSED: "missed its sla",
    NotifyEvent.SCHEDULE_MISSED: "missed fires",
}


def message_context(
    run: RunView, event: NotifyEvent, task: str | None, delivery: Delivery, try_number: int = 0
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
        "duration": duration((end - run.started_at).total_seconds()) if end and run.started_at else "",
        "params": json.dumps(dict(run.params), default=str) if run.params else "",
        "failed": failed,
        "event": event.value,
        "event_text": _EVENT_TEXT[event],
        "task": task,
        "report_url": report_url(run.id, delivery),
        "succeeded": run.state is RunState.SUCCESS,
    }


def report_url(run_id: str, delivery: Delivery) -> str:
    """The run's report: on the Jupyter server when its public URL is known, else its file."""
    if delivery.public_url:
        return f"{delivery.public_url.rstrip('/')}/nbsched/api/v1/runs/{run_id}/report"
    if delivery.report is not None:
        try:
            return str(delivery.report(run_id))
        except (NbschedError, OSError) as exc:
            return f"(no report: {exc})"
    return "(no report)"


def render_message(
    title: str | None,
    body: str | None,
    context: dict[str, Any],
    default_title: str = DEFAULT_TITLE,
    default_body: str = DEFAULT_BODY,
) -> tuple[str, str]:
    """The title and body, from the spec's templates or the defaults, in Jinja's sandbox."""
    return _render(title or default_title, context).strip(), _render(body or default_body, context)


DEFAULT_MISSED_TITLE = "{{ pipeline }}: schedule {{ schedule_id }} missed {{ missed }} fire(s)"
DEFAULT_MISSED_BODY = """\
Pipeline: {{ pipeline }}
Schedule: {{ schedule_id }}
Missed: {{ missed }} fire(s), the last at {{ up_to }}, {{ late }} late (misfire grace {{ misfire_grace }}):
no run was made for them (set catchup: true to run every missed fire).
"""


def missed_context(pipeline: str, detail: dict[str, Any]) -> dict[str, Any]:
    """What the templates of a schedule_missed see: the schedule and the fires it skipped."""
    return {
        "pipeline": pipeline,
        "event": NotifyEvent.SCHEDULE_MISSED.value,
        "event_text": "missed fires",
        "schedule_id": detail.get("schedule_id"),
        "missed": detail.get("missed"),
        "up_to": detail.get("up_to"),
        "late": detail.get("late"),
        "misfire_grace": duration(float(detail.get("misfire_grace") or 0)),
        "detail": detail,
        "run": None,
        "task": None,
    }


def _render(template: str, context: dict[str, Any]) -> str:
    """In the parameters' sandbox, with its bounds on what a template may make and do (a spec's
    title or body is a user's template like any parameter)."""
    from nbsched.templates import budget, environment

    with budget():
        text = environment().from_string(template).render(context)
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + "..."


def sample_run(spec: PipelineSpec, event: NotifyEvent, now: datetime) -> RunView:
    """A made-up run of ``spec`` as ``event`` would find it, for ``nbsched notify test``."""
    failed = event is NotifyEvent.FAILURE
    state = {NotifyEvent.START: RunState.RUNNING, NotifyEvent.SUCCESS: RunState.SUCCESS}.get(event, RunState.FAILED)
    tasks = {}
    for i, name in enumerate(spec.order):
        bad = failed and i == 0
        task_state = (
            TaskState.FAILED if bad else TaskState.PENDING if failed or state is RunState.RUNNING else TaskState.SUCCESS
        )
        tasks[name] = TaskView(
            name=name,
            state=task_state,
            try_number=1,
            max_tries=spec.tasks[name].max_tries,
            error="RuntimeError: a sample failure of nbsched notify test (cell 1: raise RuntimeError(...))"
            if bad
            else None,
            started_at=now,
            ended_at=now,
            label=name,
        )
    return RunView(
        id="sample",
        pipeline=spec.name,
        pipeline_version=0,
        state=state,
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
        ended_at=None if state is RunState.RUNNING else now,
        tasks=tasks,
    )


# -- Apprise ---------------------------------------------------------------------------------------
def send(
    target: str,
    title: str,
    body: str,
    config_file: Path,
    *,
    attach: Path | None = None,
    payload: dict[str, Any] | None = None,
) -> tuple[bool, str]:
    """Send to ``target`` (an Apprise URL, or a tag of ``config_file``); (delivered, answers).
    A webhook (``json://``) carries ``payload`` (the run's JSON view; what was missed) under ``run``."""
    import apprise

    services = list(_services(target, config_file))
    if not services:
        return False, _no_service(target, config_file)
    ap = apprise.Apprise()
    names = {service.url_id(): str(service.service_name) for service in services}
    for service in services:
        extras = getattr(service, "payload_extras", None)
        if payload is not None and isinstance(extras, dict):
            extras["run"] = payload
        ap.add(service)
    attachment = apprise.AppriseAttachment(str(attach)) if attach is not None else None
    result = ap.notify(body=body, title=title, body_format=apprise.NotifyFormat.TEXT, attach=attachment)
    answers = []
    for r in result:
        lines = [e.message for e in r.logs() if e.level in ("WARNING", "ERROR", "CRITICAL")]
        name = names.get(r.url_id, "service")
        answers.append(f"{name}: {r.status.name.lower()}" + (f" ({lines[-1]})" if lines else ""))
    return bool(result), "; ".join(answers)


def _services(target: str, config_file: Path) -> Iterable[Any]:
    import apprise

    if is_url(target):
        service = apprise.Apprise.instantiate(target)
        return [service] if service is not None else []
    if not config_file.is_file():
        return []
    config = apprise.AppriseConfig()
    config.add(str(config_file))
    ap = apprise.Apprise()
    ap.add(config)
    return list(ap.find(tag=target))


def _no_service(target: str, config_file: Path) -> str:
    if is_url(target):
        return f"Apprise cannot use the URL {shown_target(target)}"
    if not config_file.is_file():
        return f"no Apprise configuration file at {config_file} for the tag '{target}'"
    return f"no service of {config_file} has the tag '{target}'"


def defined_tags(config_file: Path) -> set[str]:
    """The tags the Apprise configuration file defines (none when it is missing)."""
    import apprise

    if not config_file.is_file():
        return set()
    config = apprise.AppriseConfig()
    config.add(str(config_file))
    return {tag for service in config.services() for tag in service.tags}


@functools.lru_cache(maxsize=512)  # a list of notifications shows the same few targets again and again
def shown_target(target: str) -> str:
    """A target as logs and lists show it: an URL without its password."""
    if not is_url(target):
        return f"tag '{target}'"
    import apprise

    service = apprise.Apprise.instantiate(target)
    if service is None:
        return target.split("://", 1)[0] + "://..."
    return str(service.url(privacy=True))  # type: ignore[no-untyped-call]
