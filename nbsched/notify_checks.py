"""What ``validate`` and ``register`` check of a spec's notifications, and ``notify test``.

At register, not at 6 am: a title or body that cannot render, a notification URL the operator
does not allow, an Apprise configuration file that does not parse are errors (one line naming
the file and field); a tag no service has and an sla that no rule reports are warnings.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING

from nbsched.errors import SpecError
from nbsched.messages import TEST_NOTE, occasions, render_message, render_template, why
from nbsched.notices import is_url
from nbsched.states import NotifyEvent
from nbsched.targets import check_file, defined_tags, send, shown_target

if TYPE_CHECKING:
    from nbsched.config import Config
    from nbsched.notices import NotifyRule
    from nbsched.notify_policy import NotifyAllow
    from nbsched.spec import PipelineSpec


def _rules(spec: PipelineSpec) -> list[tuple[str, NotifyRule, str | None]]:
    """Every rule with its field path and its task (None: the pipeline's)."""
    return [(f"notify[{i}]", rule, None) for i, rule in enumerate(spec.notify)] + [
        (f"tasks.{name}.notify[{i}]", rule, name)
        for name, task in spec.tasks.items()
        for i, rule in enumerate(task.notify)
    ]


def checked(spec: PipelineSpec, source: str, config: Config, now: datetime, *, remote: bool) -> PipelineSpec:
    """``spec`` with the warnings of its notifications, once their errors are ruled out.
    ``remote``: it came over REST, and its URLs are held to what the operator allows from there."""
    try:
        check_templates(spec, now)
        _check_allowed(spec, config.notify_policy(remote=remote))
    except SpecError as exc:
        raise SpecError(f"{source}: {exc}") from None
    warnings = [*_tag_warnings(spec, source, config), *_sla_warnings(spec, source)]
    return replace(spec, warnings=(*spec.warnings, *warnings)) if warnings else spec


def check_templates(spec: PipelineSpec, now: datetime) -> None:
    """Render every title and body of ``spec``'s rules for each message they can make (about a
    made-up run as each event finds it); the first that fails is a SpecError naming its field,
    and its event for a rule of several."""
    from nbsched.templates import budget

    for path, rule, task in _rules(spec):
        for occasion in occasions(spec, rule, task):
            context = occasion.context(spec, now)
            for field, template in (("title", rule.title), ("body", rule.body)):
                if not template:
                    continue
                try:
                    with budget():
                        render_template(template, context)
                except Exception as exc:  # noqa: BLE001 - a user's template, whatever it raises
                    event = f" (event {occasion.event})" if len(rule.on) > 1 else ""
                    raise SpecError(f"{path}.{field}{event}: {why(exc)}") from None


def _check_allowed(spec: PipelineSpec, policy: NotifyAllow) -> None:
    for path, rule, _ in _rules(spec):
        for target in rule.to:
            refused = policy.refusal(target)
            if refused is not None:
                raise SpecError(f"{path}.to: {shown_target(target)}: {refused}")


def _tag_warnings(spec: PipelineSpec, source: str, config: Config) -> list[str]:
    """A warning for each tag no service of the Apprise configuration file has (it may be
    defined before the first notification is sent); the file's own errors are errors."""
    tags = {t for _, rule, _ in _rules(spec) for t in rule.to if not is_url(t)}
    if not tags:
        return []
    file = config.notify_file
    check_file(file)
    missing = sorted(tags - defined_tags(file))
    if not file.is_file():
        where = f"no Apprise configuration file at {file} (create it, or set NBSCHED_NOTIFY_CONFIG)"
        return [f"{source}: notify: tag '{t}': {where}" for t in missing]
    return [f"{source}: notify: no service of the Apprise configuration file {file} has the tag '{t}'" for t in missing]


def _sla_warnings(spec: PipelineSpec, source: str) -> list[str]:
    """An sla that no rule is for sla_missed of: it would pass unseen."""
    nothing = "is for sla_missed: nothing reports it"
    warnings = []
    if spec.sla is not None and not any(NotifyEvent.SLA_MISSED in r.on for r in spec.notify):
        warnings.append(f"{source}: sla: no notify rule of the pipeline {nothing}")
    for name, task in spec.tasks.items():
        if task.sla is not None and not any(NotifyEvent.SLA_MISSED in r.on for r in task.reported_by):
            warnings.append(f"{source}: tasks.{name}.sla: no notify rule of the task or the pipeline {nothing}")
    return warnings


def send_tests(
    spec: PipelineSpec, event: NotifyEvent, config: Config, now: datetime, timeout: float
) -> list[tuple[str, bool, str]]:
    """A test message of ``event`` to each target of ``spec``'s rules for it, about a made-up run
    as the event finds it, labelled a test in its title and body; ``(target, delivered, answer)``."""
    from nbsched.errors import ConfigError

    chosen = [(rule, task) for _, rule, task in _rules(spec) if event in rule.on]
    if not chosen:
        raise ConfigError(f"pipeline '{spec.name}': no notify rule is for the event '{event}'")
    try:  # a spec registered by an older nbsched, or one whose templates no longer render
        check_templates(spec, now)
    except SpecError as exc:
        raise SpecError(f"pipeline '{spec.name}': {exc}") from None
    if any(not is_url(t) for rule, _ in chosen for t in rule.to):
        check_file(config.notify_file)
    results = []
    for rule, task in chosen:
        occasion = next(o for o in occasions(spec, rule, task) if o.event is event)
        context = occasion.context(spec, now)
        default_title, default_body = occasion.defaults()
        title, body = render_message(rule.title, rule.body, context, default_title, default_body)
        title, body = f"[test] {title}", TEST_NOTE + body
        payload = context.get("run") or context.get("detail")
        for target in rule.to:
            ok, answer = send(target, title, body, config.notify_file, timeout=timeout, payload=payload)
            results.append((shown_target(target), ok, answer))
    return results
