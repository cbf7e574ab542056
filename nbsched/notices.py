"""Notifications as a spec declares them, and the ones an event of a run causes.

Pure: a spec's ``notify:`` entries become ``NotifyRule``s; when a run starts or ends or a task
ends a try, :func:`notices_for` picks the ``Notice``s to write into the outbox, in the
transaction of that state change. Sending them (Apprise) is ``nbsched.sender``'s.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from nbsched.errors import SpecError
from nbsched.states import NotifyEvent

RULE_KEYS = ("on", "to", "attach", "title", "body")
MAX_RULES = 20
MAX_TARGETS = 20
MAX_TEMPLATE = 10_000  # characters of a title or body template
ATTACHMENTS = ("report",)

Error = Callable[[str, str], SpecError]  # (field path, problem) -> the spec's one-line error


@dataclass(frozen=True, kw_only=True)
class NotifyRule:
    """``on`` these events, send to these targets: Apprise URLs (``scheme://...``) or tags of the
    Apprise configuration file; ``attach_report``: the run's HTML report goes along."""

    on: frozenset[NotifyEvent]
    to: tuple[str, ...]
    attach_report: bool = False
    title: str | None = None  # Jinja templates (sandboxed) replacing the default message
    body: str | None = None


@dataclass(frozen=True, kw_only=True)
class Notice:
    """One notification to write into the outbox: one event, one target."""

    event: NotifyEvent
    target: str
    task: str = ""  # "" for the run's own events
    try_number: int = 0
    attach_report: bool = False
    title: str | None = None
    body: str | None = None
    detail: dict[str, Any] | None = None  # what an event without a run is about (schedule_missed)


def is_url(target: str) -> bool:
    return "://" in target


def with_on_keys(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` with each ``notify:`` rule's key ``on`` a string again: YAML 1.1 reads a bare
    ``on:`` as true (as GitHub Actions' workflows know), and a stored spec must say ``on``."""

    def rules(value: Any) -> Any:
        if not isinstance(value, list | dict):
            return value
        fixed = [
            {"on" if key is True else key: v for key, v in rule.items()} if isinstance(rule, dict) else rule
            for rule in (value if isinstance(value, list) else [value])
        ]
        return fixed if isinstance(value, list) else fixed[0]

    out = dict(spec)
    if "notify" in out:
        out["notify"] = rules(out["notify"])
    tasks = out.get("tasks")
    if isinstance(tasks, dict):
        out["tasks"] = {
            name: {**task, "notify": rules(task["notify"])} if isinstance(task, dict) and "notify" in task else task
            for name, task in tasks.items()
        }
    return out


TASK_EVENTS = frozenset({NotifyEvent.SUCCESS, NotifyEvent.FAILURE, NotifyEvent.RETRY, NotifyEvent.SLA_MISSED})
# a pipeline's rule for these also hears of its tasks' tries (a run has no retry; an sla of a task
# under a pipeline's sla_missed rule is the user's sla too): its success and failure are the run's
COVERED_TASK_EVENTS = frozenset({NotifyEvent.RETRY, NotifyEvent.SLA_MISSED})


def task_rules(own: Iterable[NotifyRule], pipeline: Iterable[NotifyRule]) -> tuple[NotifyRule, ...]:
    """What a task's tries notify under: its own rules, and its pipeline's for a retry or an sla
    missed (only for those events: a pipeline's success is its run's, not each task's)."""
    covering = tuple(replace(r, on=r.on & COVERED_TASK_EVENTS) for r in pipeline if r.on & COVERED_TASK_EVENTS)
    return (*own, *covering)


def parse_rules(value: Any, path: str, error: Error, *, task: bool = False) -> tuple[NotifyRule, ...]:
    """A spec's ``notify:`` (a list of rules, or one rule), checked; ``error`` builds its errors.
    ``task``: a task's rules, whose events are those of its tries."""
    if value is None:
        return ()
    entries = value if isinstance(value, list) else [value]
    if len(entries) > MAX_RULES:
        raise error(path, f"{len(entries)} rules (at most {MAX_RULES})")
    rules = tuple(_rule(entry, f"{path}[{i}]", error) for i, entry in enumerate(entries))
    for i, rule in enumerate(rules):
        if task and not rule.on <= TASK_EVENTS:
            (event,) = sorted(e.value for e in rule.on - TASK_EVENTS)[:1]
            raise error(
                f"{path}[{i}].on",
                f"'{event}' is an event of the run (a task's are success, failure, retry, sla_missed)",
            )
    return rules


def _rule(entry: Any, path: str, error: Error) -> NotifyRule:
    if not isinstance(entry, dict):
        raise error(path, f"expected a mapping with 'on' and 'to', got {type(entry).__name__}")
    for key in entry:
        if key not in RULE_KEYS:
            raise error(f"{path}.{key}", f"unknown key (use {', '.join(RULE_KEYS)})")
    events = _words(entry.get("on"), f"{path}.on", error, "events")
    known = {e.value for e in NotifyEvent}
    for event in events:
        if event not in known:
            raise error(f"{path}.on", f"unknown event {event!r} (use {', '.join(sorted(known))})")
    targets = _words(entry.get("to"), f"{path}.to", error, "targets")
    if len(targets) > MAX_TARGETS:
        raise error(f"{path}.to", f"{len(targets)} targets (at most {MAX_TARGETS})")
    for target in targets:
        if is_url(target):
            _check_url(target, f"{path}.to", error)
    attach = entry.get("attach")
    if attach is not None and attach not in ATTACHMENTS:
        raise error(f"{path}.attach", f"expected {' or '.join(ATTACHMENTS)}, got {attach!r}")
    templates = {}
    for key in ("title", "body"):
        text = entry.get(key)
        if text is not None and (not isinstance(text, str) or len(text) > MAX_TEMPLATE):
            raise error(f"{path}.{key}", f"expected a template of at most {MAX_TEMPLATE:,} characters")
        templates[key] = text
    return NotifyRule(
        on=frozenset(NotifyEvent(e) for e in events), to=tuple(targets), attach_report=attach == "report", **templates
    )


def _words(value: Any, path: str, error: Error, what: str) -> list[str]:
    words = [value] if isinstance(value, str) else value
    if not isinstance(words, list) or not all(isinstance(w, str) and w.strip() for w in words):
        raise error(path, f"expected a list of {what}, got {value!r}")
    if not words:
        raise error(path, f"empty (name at least one of the {what})")
    return [w.strip() for w in words]


def _check_url(url: str, path: str, error: Error) -> None:
    """An Apprise URL Apprise can parse (its plugins are loaded on first use: 0.1 s)."""
    import apprise

    if apprise.Apprise.instantiate(url) is None:
        scheme = url.split("://", 1)[0]
        raise error(path, f"Apprise cannot use the URL of scheme {scheme!r} (see its wiki for the URL of a service)")


def notices_for(
    rules: Iterable[NotifyRule],
    event: NotifyEvent,
    *,
    task: str = "",
    try_number: int = 0,
    detail: dict[str, Any] | None = None,
) -> list[Notice]:
    """The notices ``event`` causes under ``rules``: one a target, a target named once."""
    out: dict[str, Notice] = {}
    for rule in rules:
        if event in rule.on:
            for target in rule.to:
                out.setdefault(
                    target,
                    Notice(
                        event=event,
                        target=target,
                        task=task,
                        try_number=try_number,
                        attach_report=rule.attach_report,
                        title=rule.title,
                        body=rule.body,
                        detail=detail,
                    ),
                )
    return list(out.values())
