"""The request bodies the REST API takes, as typed models. Each is built from a body its
operation's schema in ``openapi.yaml`` found well-formed (``Contract.check_body``, run by the
handlers' ``@checked``)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from typing_extensions import Self


@dataclass(frozen=True, kw_only=True)
class _Body:
    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Self:
        """The model's fields from the body; those it leaves out keep their defaults."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in body.items() if k in names})


@dataclass(frozen=True, kw_only=True)
class RegisterPipeline(_Body):
    """A pipeline from a file under the server root (``path``) or given as data (``spec``, its
    notebook paths relative to ``dir``)."""

    path: str | None = None
    spec: dict[str, Any] | None = None
    dir: str = "."


@dataclass(frozen=True, kw_only=True)
class TriggerRun(_Body):
    """A run to queue now, with parameter overrides; a partial run with ``only`` or ``from``."""

    params: dict[str, Any] = field(default_factory=dict)
    only: list[str] | None = None
    start: str | None = None  # the body's "from", as the CLI's --from

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Self:
        return super().from_json({**body, "start": body.get("from")})


@dataclass(frozen=True, kw_only=True)
class RetryRun(_Body):
    """A retry of a run's failed tasks (no ``tasks``), or a repair of the ``tasks`` named."""

    tasks: list[str] | None = None
    downstream: bool = False
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class SetPool(_Body):
    """A pool's slots."""

    slots: int


@dataclass(frozen=True, kw_only=True)
class CreateSchedule(_Body):
    """A schedule of a registered pipeline; the other fields as in a spec's ``schedules:`` entry."""

    pipeline: str
    fields: dict[str, Any]

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> CreateSchedule:
        rest = dict(body)
        return cls(pipeline=rest.pop("pipeline"), fields=rest)


@dataclass(frozen=True, kw_only=True)
class ChangeSchedule(_Body):
    """Some of a schedule's fields, changed; the others stay."""

    changes: dict[str, Any]

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> ChangeSchedule:
        return cls(changes=dict(body))
