"""Triggers: when a schedule fires. Pure: time is always a parameter, never read here.

Three kinds, each in an IANA time zone (default UTC):

- :class:`CronTrigger`: a cron expression in the zone's local wall-clock time (croniter).
  5 fields ``minute hour day-of-month month day-of-week``, or 6 with **seconds last**
  (croniter's default, ``second_at_beginning=False``): ``*/5 * * * * 30`` fires at second
  30 of every fifth minute. Aliases: ``@hourly @daily @midnight @weekly @monthly @yearly
  @annually``. croniter extras work too: ``L`` (last day of the month), ``15W``, ``5#2``,
  ``L5``, month and day names; hashed (``H``) and random (``R``) values do not, since a
  trigger must be a pure function of its fields. Day of month and day of week follow
  standard cron: when both are restricted (neither is ``*`` or ``?``) a day matching
  *either* fires (``0 0 13 * 5``: every 13th and every Friday).
  A local time skipped by a DST jump fires once, at the first instant after the gap; a
  local time that happens twice fires once, at its first occurrence.
- :class:`IntervalTrigger`: ``start + k * every`` in absolute time (DST does not matter),
  ``k >= 0``: ``start`` is the first fire.
- :class:`DateTrigger`: once, ``at``.
"""

from __future__ import annotations

import difflib
import math
import threading
import zoneinfo
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from croniter import CroniterBadDateError, croniter

from nbsched.errors import ScheduleError
from nbsched.timefmt import duration, instant, offset_change, parse_duration, wall_clock, when

UTC = timezone.utc
CRON_ALIASES = ("@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually")
_CRON_FIELDS = (
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31, L or 15W"),
    ("month", "1-12 or jan-dec"),
    ("day-of-week", "0-7, sun-sat, 5#2 or L5"),
    ("second", "0-59"),
)
_REFERENCE = datetime(2000, 1, 1)  # where an expression is first tried, to reject one that never fires
_ONE_SECOND = timedelta(seconds=1)
MIN_EVERY = 1.0  # seconds: the shortest interval a schedule may be given (a cron fires at most once a second too)


class Trigger(ABC):
    """When a schedule fires."""

    timezone: str

    @abstractmethod
    def next_after(self, after: datetime) -> datetime | None:
        """The first fire time strictly after the aware datetime ``after``, in UTC; None when it never fires again."""

    @abstractmethod
    def describe(self) -> str:
        """One short line for people: ``cron 0 6 * * 1-5 (Europe/Paris)``, ``every 15m``."""

    @abstractmethod
    def to_fields(self) -> dict[str, Any]:
        """JSON-safe fields that :func:`trigger_from_fields` turns back into an equal trigger."""


@dataclass(frozen=True, kw_only=True)
class CronTrigger(Trigger):
    expr: str
    timezone: str = "UTC"
    _zone: zoneinfo.ZoneInfo = field(init=False, repr=False, compare=False)
    # parsing costs more than a next_after, so each trigger keeps its croniter; the lock
    # makes its set_current + get_next pair safe when threads share the trigger
    _cron: croniter = field(init=False, repr=False, compare=False)
    _lock: threading.Lock = field(init=False, repr=False, compare=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if not isinstance(self.expr, str):
            raise ScheduleError(f"cron {self.expr!r}: expected an expression like '0 6 * * 1-5'")
        object.__setattr__(self, "expr", " ".join(self.expr.split()))
        object.__setattr__(self, "_cron", _parse_cron(self.expr))
        object.__setattr__(self, "_zone", get_zone(self.timezone))

    def next_after(self, after: datetime) -> datetime | None:
        after = _utc(after)
        zone = self._zone
        try:
            local = after.astimezone(zone)
            if local.fold:  # `after` is in the second pass of a repeated hour: its local times already fired
                local = _end_of_first_pass(after, local, zone)
            start = local.replace(tzinfo=None, microsecond=0, fold=0)  # candidates are whole seconds
            with self._lock:
                self._cron.set_current(start, force=True)
                # the first candidate is after `after` (gap times map past it, repeats were skipped above);
                # the loop keeps fires strictly increasing, which callers' loops rely on, whatever the zone
                while True:
                    fire = instant(self._cron.get_next(datetime), zone)
                    if fire > after:
                        return fire
        except (CroniterBadDateError, OverflowError):  # no match within croniter's horizon, or past year 9999
            return None

    def describe(self) -> str:
        return f"cron {self.expr} ({self.timezone})"

    def to_fields(self) -> dict[str, Any]:
        return {"cron": self.expr, "timezone": self.timezone}


@dataclass(frozen=True, kw_only=True)
class IntervalTrigger(Trigger):
    every: float  # seconds
    start: datetime  # the first fire; later ones follow every `every` seconds of absolute time
    timezone: str = "UTC"
    _step: timedelta = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        get_zone(self.timezone)
        every = self.every
        if isinstance(every, bool) or not isinstance(every, (int, float)) or not math.isfinite(every):
            raise ScheduleError(f"every {every!r}: expected a number of seconds")
        if round(every * 1_000_000) <= 0:
            raise ScheduleError(f"every {every!r}: must be at least a microsecond")
        if not isinstance(self.start, datetime) or self.start.utcoffset() is None:
            raise ScheduleError(f"start {self.start!r}: expected a timezone-aware datetime")
        try:
            object.__setattr__(self, "_step", timedelta(microseconds=round(every * 1_000_000)))
        except OverflowError:
            raise ScheduleError(f"every {every!r}: too long") from None

    @property
    def step(self) -> timedelta:
        return self._step

    def next_after(self, after: datetime) -> datetime | None:
        after = _utc(after)
        if after < self.start:
            return self.start.astimezone(UTC)
        k = (after - self.start) // self._step + 1  # exact: timedelta // timedelta is an int
        try:
            return (self.start + k * self._step).astimezone(UTC)
        except OverflowError:
            return None

    def describe(self) -> str:
        return f"every {duration(self.every)}"

    def to_fields(self) -> dict[str, Any]:
        return {"every": float(self.every), "start": self.start.isoformat(), "timezone": self.timezone}


@dataclass(frozen=True, kw_only=True)
class DateTrigger(Trigger):
    at: datetime
    timezone: str = "UTC"
    _zone: zoneinfo.ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_zone", get_zone(self.timezone))
        if not isinstance(self.at, datetime) or self.at.utcoffset() is None:
            raise ScheduleError(f"at {self.at!r}: expected a timezone-aware datetime")

    def next_after(self, after: datetime) -> datetime | None:
        return self.at.astimezone(UTC) if self.at > _utc(after) else None

    def describe(self) -> str:
        return f"at {wall_clock(self.at.astimezone(self._zone))} ({self.timezone})"

    def to_fields(self) -> dict[str, Any]:
        return {"at": self.at.astimezone(self._zone).isoformat(), "timezone": self.timezone}


def latest_fire(trigger: Trigger, first: datetime, until: datetime) -> datetime:
    """The last fire time at or before ``until``, given ``first``, a fire time at or before it.
    A bisection over ``next_after`` alone (about 50 steps for centuries), so it keeps every rule
    of the trigger (DST gaps and repeats) and costs the same however many fires lie between."""
    lo, hi = first, until  # lo: a fire <= until; no fire lies in (hi, until]
    while True:
        after = trigger.next_after(lo)
        if after is None or after > hi:
            return lo
        mid = lo + (hi - lo) / 2
        if after >= mid:
            lo = after
            continue
        probe = trigger.next_after(mid)
        if probe is not None and probe <= hi:
            lo = probe
        else:
            hi = mid


def count_fires(trigger: Trigger, first: datetime, last: datetime, cap: int = 10_000) -> int | None:
    """How many fire times lie in [first, last] (both fire times); None when more than ``cap``
    (counted one by one, except for an interval, whose count is exact arithmetic)."""
    if isinstance(trigger, IntervalTrigger):
        return (last - first) // trigger.step + 1
    count, at = 1, first
    while at < last:
        if count > cap:
            return None
        following = trigger.next_after(at)
        if following is None or following > last:
            break
        count, at = count + 1, following
    return count


def trigger_from_fields(fields: Mapping[str, Any], *, now: datetime) -> Trigger:
    """The trigger of a schedule's fields: exactly one of ``cron``, ``every`` or ``at``, an optional
    ``timezone`` and, for ``every``, an optional ``start`` (default ``now``). Other keys are ignored."""
    kinds = [k for k in ("cron", "every", "at") if k in fields]
    if not kinds:
        raise ScheduleError("a schedule needs one of cron, every or at")
    if len(kinds) > 1:
        raise ScheduleError(f"a schedule takes one of cron, every or at, not {' and '.join(kinds)}")
    kind, tz = kinds[0], fields.get("timezone", "UTC")
    zone = get_zone(tz)
    if kind == "cron":
        if "start" in fields:
            raise ScheduleError("start: only an every schedule has a start")
        return CronTrigger(expr=fields["cron"], timezone=tz)
    if kind == "at":
        if "start" in fields:
            raise ScheduleError("start: only an every schedule has a start")
        return DateTrigger(at=_moment(fields, "at", zone), timezone=tz)
    value = fields["every"]
    try:
        every = parse_duration(value)
    except ValueError as exc:
        raise ScheduleError(f"every: {exc}") from None
    if every <= 0:
        raise ScheduleError(f"every {value!r}: must be longer than 0s")
    start = _moment(fields, "start", zone) if "start" in fields else _utc(now)
    return IntervalTrigger(every=every, start=start, timezone=tz)


def get_zone(name: str) -> zoneinfo.ZoneInfo:
    """The IANA time zone ``name``; a :class:`ScheduleError` suggesting the closest name if unknown."""
    if not isinstance(name, str) or not name.strip():
        raise ScheduleError(f"timezone {name!r}: expected an IANA name like 'Europe/Paris'")
    if name == "localtime":  # the host's zone file: a schedule must not depend on the machine
        raise ScheduleError("timezone 'localtime': name the zone, like 'Europe/Paris'")
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        known = zoneinfo.available_timezones()
        by_lower = {k.lower(): k for k in known}
        close = (
            [by_lower[name.strip().lower()]]
            if name.strip().lower() in by_lower
            else difflib.get_close_matches(name, known, n=1)
        )
        hint = f"did you mean '{close[0]}'?" if close else "use an IANA name like 'Europe/Paris'"
        raise ScheduleError(f"unknown timezone {name!r} ({hint})") from None


def _parse_cron(expr: str) -> croniter[datetime]:
    """A croniter for ``expr``, or a one-line :class:`ScheduleError` naming the bad part."""
    parts = expr.split()
    if expr.startswith("@"):
        if expr.lower() not in CRON_ALIASES:
            close = difflib.get_close_matches(expr.lower(), CRON_ALIASES, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (use {', '.join(CRON_ALIASES)})"
            raise ScheduleError(f"cron {expr!r}: unknown alias{hint}")
    elif len(parts) not in (5, 6):
        raise ScheduleError(
            f"cron {expr!r}: expected 5 fields (minute hour day-of-month month day-of-week) "
            f"or 6 (seconds last), got {len(parts)}"
        )
    elif any(item[:1].lower() in ("h", "r") for part in parts for item in part.split(",")):
        raise ScheduleError(f"cron {expr!r}: hashed (H) and random (R) values are not supported")
    try:
        cron = croniter(expr, _REFERENCE, ret_type=datetime)
    except (ValueError, TypeError) as exc:  # croniter's errors are ValueErrors, and one TypeError
        raise ScheduleError(f"cron {expr!r}: {_bad_field(parts) or ' '.join(str(exc).split())}") from None
    try:
        cron.get_next()
    except CroniterBadDateError:
        raise ScheduleError(f"cron {expr!r}: never fires (no such date)") from None
    return cron


def _bad_field(parts: list[str]) -> str | None:
    """Name the field croniter rejects, trying each alone (croniter's own message does not)."""
    for i, part in enumerate(parts):
        alone = " ".join(part if j == i else "*" for j in range(len(parts)))
        try:
            croniter(alone, _REFERENCE)
        except (ValueError, TypeError):
            name, allowed = _CRON_FIELDS[i]
            return f"bad {name} field {part!r} (use {allowed})"
    return None


def _offset(local: datetime) -> timedelta:
    offset = local.utcoffset()
    assert offset is not None, "an aware datetime"
    return offset


def _end_of_first_pass(after: datetime, local: datetime, zone: zoneinfo.ZoneInfo) -> datetime:
    """For ``after`` in the second pass of a repeated hour: the last local second of the first pass.
    Every local time up to it already fired (at its first occurrence, before ``after``)."""
    repeat = _offset(local.replace(fold=0)) - _offset(local)
    return (offset_change(zone, after - repeat, after) - _ONE_SECOND).astimezone(zone)


def _moment(fields: Mapping[str, Any], key: str, zone: zoneinfo.ZoneInfo) -> datetime:
    try:
        return when(fields[key], zone)
    except ValueError:
        raise ScheduleError(f"{key} {fields[key]!r}: not a date-time (use e.g. 2026-12-01T06:00)") from None


def _utc(moment: datetime) -> datetime:
    if moment.utcoffset() is None:
        raise ValueError(f"expected a timezone-aware datetime, got {moment!r}")
    return moment.astimezone(UTC)
