"""Lengths of time and moments written for people, and both read from what people write
(``parse_duration``: ``30s``, ``10m``, ``1h30m`` in specs, schedules and flags; ``when``).

Pure: no clock and no I/O; a caller that needs "now" passes it. A length of time is written one
of four ways, each for where it is read:

- :func:`duration`, exact, as a setting is written (``parse_duration`` reads it back): ``1h30m``.
- :func:`elapsed`, how long something ran, in a column of runs or tasks: ``75.0s``, ``2m05s``.
- :func:`span`, roughly how long, in a sentence: ``in 3h 12m`` (:func:`relative`).
- :func:`axis_label`, on a timeline's axis: ``0.5s``, ``1m30s``.
"""

from __future__ import annotations

import math
import re
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from typing import Any

UTC = timezone.utc
_MS_UNITS = (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1))
_UNITS = (("d", 86_400), ("h", 3600), ("m", 60), ("s", 1))
_PRECISE_BELOW = 120.0  # seconds: shorter runs are told to the tenth, where a retry's 0.4 s shows


# -- lengths of time ----------------------------------------------------------------------------

# written in specs, schedules and flags: ``30s``, ``10m``, ``1h30m``
MAX_DURATION = 3650 * 86400.0  # ten years: a date that far ahead is still a date
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_PARSE_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> float:
    """``30s``, ``10m``, ``1h30m``, ``2d``, ``500ms`` or a number of seconds."""
    if isinstance(value, bool):
        raise ValueError(f"bad duration {value!r}")
    if isinstance(value, (int, float)):
        if value < 0 or not math.isfinite(value):
            raise ValueError(f"bad duration {value!r}: negative" if value < 0 else f"bad duration {value!r}")
        return _bounded_duration(value, value)
    text = str(value).strip().replace(" ", "")
    pos, total = 0, 0.0
    for m in _DURATION_RE.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _PARSE_UNITS[m.group(2)]
        pos = m.end()
    if not text or pos != len(text):
        raise ValueError(f"bad duration {value!r} (use e.g. 30s, 10m, 1h30m)")
    return _bounded_duration(total, value)


def _bounded_duration(seconds: float, value: Any) -> float:
    if seconds > MAX_DURATION:
        raise ValueError(f"bad duration {value!r}: longer than {MAX_DURATION / 86400:.0f} days")
    return float(seconds)


def duration(seconds: float) -> str:
    """``900`` -> ``15m``, ``5400`` -> ``1h30m``, ``0.5`` -> ``500ms``: exact to the millisecond,
    and what ``parse_duration`` reads back (an interval, a timeout, a lease)."""
    rest, parts = round(seconds * 1000), []
    for unit, size in _MS_UNITS:
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or f"{seconds:g}s"


def elapsed(seconds: float) -> str:
    """How long something ran: to the tenth of a second under two minutes (``75.0s``), then its two
    largest units, the second zero-padded so a column lines up (``2m05s``, ``1h02m``, ``3d04h``)."""
    if seconds < _PRECISE_BELOW:
        return f"{seconds:.1f}s"
    (big, unit), (small, small_unit) = _two_largest_units(seconds)
    return f"{big}{unit}{small:02d}{small_unit}"


def elapsed_between(start: datetime | None, end: datetime | None) -> str | None:
    """:func:`elapsed` from ``start`` to ``end``; None when either is unknown (not started, or not
    ended and the caller has no "now" to put in its place)."""
    if start is None or end is None:
        return None
    return elapsed((end - start).total_seconds())


def span(seconds: float) -> str:
    """Roughly how long, in whole seconds, for a sentence: ``45s``, ``3m 5s``, ``2h 12m``, ``1d 3h``."""
    return " ".join(f"{count}{unit}" for count, unit in _two_largest_units(seconds))


def relative(seconds: float) -> str:
    """A moment ``seconds`` from now (negative: in the past): ``in 3h 12m``, ``due 5m 3s ago``."""
    return f"due {span(-seconds)} ago" if seconds < 0 else f"in {span(seconds)}"


def axis_label(seconds: float) -> str:
    """A label on a time axis whose ticks are round numbers: ``0.5s``, ``45s``, ``1m30s``, ``2h``."""
    return f"{round(seconds, 3):g}s" if seconds < 60 else duration(round(seconds))


def _two_largest_units(seconds: float) -> list[tuple[int, str]]:
    """Whole seconds as the largest unit they fill and the next one down: ``[(2, "h"), (12, "m")]``;
    ``[(45, "s")]`` under a minute."""
    whole = int(seconds)
    for i, (unit, size) in enumerate(_UNITS[:-1]):
        if whole >= size:
            count, rest = divmod(whole, size)
            small_unit, small_size = _UNITS[i + 1]
            return [(count, unit), (rest // small_size, small_unit)]
    return [(whole, "s")]


# -- moments ------------------------------------------------------------------------------------


def local_time(moment: datetime | None) -> str:
    """In this machine's zone, to the second, for a terminal or a notebook: ``2026-11-28 07:00:00``;
    ``-`` for no moment."""
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def zoned_time(moment: datetime) -> str:
    """In the moment's own zone, named, for a page read anywhere: ``2026-11-28 06:00:00 UTC``."""
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z").strip()


def wall_clock(moment: datetime) -> str:
    """The moment's own wall-clock time, seconds only when it has some: ``2026-12-01 06:00``."""
    return moment.strftime("%Y-%m-%d %H:%M:%S" if moment.second or moment.microsecond else "%Y-%m-%d %H:%M")


def when(value: str | date | datetime, zone: tzinfo, *, end_of_day: bool = False) -> datetime:
    """The moment an ISO date-time string, a datetime or a date names. A naive one is wall-clock time
    in ``zone``, read as :func:`instant` does (DST gaps and folds). A bare date is its midnight, or
    with ``end_of_day`` its last microsecond (an inclusive end: "up to 2026-11-01" takes that day).
    A ValueError for anything else."""
    moment: date | datetime = _from_iso(value) if isinstance(value, str) else value
    if not isinstance(moment, date):
        raise ValueError(f"not a date-time: {value!r}")
    if not isinstance(moment, datetime):
        moment = datetime.combine(moment, time()) + (timedelta(days=1, microseconds=-1) if end_of_day else timedelta())
    return instant(moment, zone) if moment.utcoffset() is None else moment


def _from_iso(text: str) -> date | datetime:
    for parse in (date.fromisoformat, datetime.fromisoformat):  # a bare date first: its end may be wanted
        try:
            return parse(text.strip())
        except ValueError:
            continue
    raise ValueError(f"not a date-time: {text!r}")


def instant(local: datetime, zone: tzinfo) -> datetime:
    """The UTC instant of a naive wall-clock time in ``zone``: its first occurrence when the clock
    goes back, the end of the gap when the clock jumps over it."""
    utc = local.replace(tzinfo=zone).astimezone(UTC)
    if utc.astimezone(zone).replace(tzinfo=None) == local:
        return utc
    # skipped: fold=0 reads it with the offset before the jump (an instant after the gap),
    # fold=1 with the offset after it (an instant before the gap)
    return offset_change(zone, local.replace(tzinfo=zone, fold=1).astimezone(UTC), utc)


def offset_change(zone: tzinfo, lo: datetime, hi: datetime) -> datetime:
    """The instant in ``(lo, hi]`` where the zone's UTC offset changes (bisection; transitions fall on
    whole seconds)."""
    before = lo.astimezone(zone).utcoffset()
    a, b = math.floor(lo.timestamp()), math.ceil(hi.timestamp())
    while b - a > 1:
        mid = (a + b) // 2
        if datetime.fromtimestamp(mid, zone).utcoffset() == before:
            a = mid
        else:
            b = mid
    return datetime.fromtimestamp(b, UTC)
