"""Lengths of time and moments for people (nbsched.timefmt). Pure: plain numbers and datetimes.

The DST instants were checked by hand against the 2026 transitions: Paris jumps 02:00 -> 03:00 on
03-29 and goes back 03:00 -> 02:00 on 10-25 (both at 01:00Z); New York jumps 02:00 -> 03:00 on
03-08 (07:00Z) and goes back 02:00 -> 01:00 on 11-01 (06:00Z).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from nbsched.timefmt import (
    axis_label,
    duration,
    elapsed,
    elapsed_between,
    instant,
    local_time,
    parse_duration,
    relative,
    span,
    wall_clock,
    when,
    zoned_time,
)

UTC = timezone.utc
PARIS, NEW_YORK = ZoneInfo("Europe/Paris"), ZoneInfo("America/New_York")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# -- lengths of time ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (900, "15m"),
        (5400, "1h30m"),
        (90, "1m30s"),
        (86400, "1d"),
        (0.5, "500ms"),
        (93784.5, "1d2h3m4s500ms"),
        (0, "0s"),
        (0.25, "250ms"),
        (59.9, "59s900ms"),
        (7200, "2h"),
        (3 * 86400 + 1, "3d1s"),
    ],
)
def test_duration_is_exact_and_reads_back(seconds: float, text: str) -> None:
    assert duration(seconds) == text
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0.0s"),
        (0.04, "0.0s"),
        (0.4, "0.4s"),
        (59.9, "59.9s"),
        (75, "75.0s"),
        (119.94, "119.9s"),
        (120, "2m00s"),
        (125.7, "2m05s"),
        (3599, "59m59s"),
        (3600, "1h00m"),
        (3725, "1h02m"),
        (86400 + 3 * 3600 + 59, "1d03h"),
        (40 * 86400, "40d00h"),
    ],
)
def test_elapsed_is_to_the_tenth_under_two_minutes_then_two_units(seconds: float, text: str) -> None:
    assert elapsed(seconds) == text


def test_elapsed_between_two_moments_or_none() -> None:
    start = utc("2026-11-28T06:00")
    assert elapsed_between(start, start + timedelta(seconds=75)) == "75.0s"
    assert elapsed_between(start, start + timedelta(hours=2, minutes=1)) == "2h01m"
    assert elapsed_between(None, start) is None and elapsed_between(start, None) is None


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.4, "0s"),
        (59.9, "59s"),
        (60, "1m 0s"),
        (65, "1m 5s"),
        (3 * 3600 + 12 * 60 + 40, "3h 12m"),
        (86400 + 2 * 3600, "1d 2h"),
    ],
)
def test_span_is_its_two_largest_units_in_whole_seconds(seconds: float, text: str) -> None:
    assert span(seconds) == text


def test_relative_is_ahead_or_due() -> None:
    assert relative(3 * 3600 + 12 * 60) == "in 3h 12m"
    assert relative(0) == "in 0s"
    assert relative(-(5 * 60 + 3)) == "due 5m 3s ago"


def test_axis_labels() -> None:
    assert [axis_label(v) for v in (0, 0.5, 45, 60, 90, 3600, 5400)] == [
        "0s",
        "0.5s",
        "45s",
        "1m",
        "1m30s",
        "1h",
        "1h30m",
    ]
    assert [axis_label(v) for v in (0.05, 0.15000000000000002, 1.5, 59.9, 86400)] == [
        "0.05s",
        "0.15s",
        "1.5s",
        "59.9s",
        "1d",
    ]


# -- moments ------------------------------------------------------------------------------------


def test_moments_written_in_their_zone_or_this_machines() -> None:
    moment = utc("2026-11-28T06:00:05")
    assert zoned_time(moment) == "2026-11-28 06:00:05 UTC"
    assert zoned_time(moment.astimezone(PARIS)) == "2026-11-28 07:00:05 CET"
    assert zoned_time(datetime(2026, 7, 1, 8)) == "2026-07-01 08:00:00"  # naive: no zone to name
    assert wall_clock(datetime(2026, 12, 1, 6, 0, tzinfo=PARIS)) == "2026-12-01 06:00"
    assert wall_clock(datetime(2026, 12, 1, 6, 0, 30, tzinfo=PARIS)) == "2026-12-01 06:00:30"
    assert local_time(moment) == moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    assert local_time(None) == "-"


@pytest.mark.parametrize(
    ("text", "zone", "expected"),
    [
        # a wall time skipped by the jump: the end of the gap, the first instant that exists after it
        ("2026-03-29T02:30", PARIS, "2026-03-29T01:00"),
        ("2026-03-29T02:00", PARIS, "2026-03-29T01:00"),
        ("2026-03-08T02:30", NEW_YORK, "2026-03-08T07:00"),
        # a wall time that happens twice: its first occurrence, still on summer time
        ("2026-10-25T02:30", PARIS, "2026-10-25T00:30"),
        ("2026-11-01T01:30", NEW_YORK, "2026-11-01T05:30"),
        # either side of a transition: the offset of that side
        ("2026-03-29T01:59", PARIS, "2026-03-29T00:59"),
        ("2026-03-29T03:00", PARIS, "2026-03-29T01:00"),
        ("2026-10-25T03:00", PARIS, "2026-10-25T02:00"),
        ("2026-11-01T02:00", NEW_YORK, "2026-11-01T07:00"),
    ],
    ids=[
        "paris-gap",
        "paris-gap-start",
        "new-york-gap",
        "paris-fold",
        "new-york-fold",
        "paris-before-jump",
        "paris-after-jump",
        "paris-after-fold",
        "new-york-after-fold",
    ],
)
def test_a_naive_wall_time_in_a_dst_gap_or_fold(text: str, zone: ZoneInfo, expected: str) -> None:
    assert when(text, zone) == utc(expected)
    assert when(datetime.fromisoformat(text), zone) == utc(expected)
    assert instant(datetime.fromisoformat(text), zone) == utc(expected)


def test_a_moment_with_its_own_offset_is_kept_as_it_is() -> None:
    moment = when(" 2026-03-29T02:30+05:00 ", PARIS)
    assert moment.utcoffset() == timedelta(hours=5) and moment == utc("2026-03-28T21:30")
    aware = datetime(2026, 10, 25, 2, 30, tzinfo=PARIS, fold=1)  # the second 02:30, said so
    assert when(aware, PARIS) is aware


def test_a_bare_date_is_its_midnight_or_with_end_of_day_its_last_instant() -> None:
    assert when("2026-11-01", NEW_YORK) == utc("2026-11-01T04:00")
    assert when(date(2026, 11, 1), NEW_YORK) == utc("2026-11-01T04:00")
    end = when("2026-11-01", NEW_YORK, end_of_day=True)  # a 25-hour day: it ends on winter time
    assert end == utc("2026-11-02T05:00") - timedelta(microseconds=1)
    assert when(date(2026, 3, 29), PARIS, end_of_day=True) == utc("2026-03-29T22:00") - timedelta(microseconds=1)
    assert when("2026-11-01T06:00", NEW_YORK, end_of_day=True) == utc("2026-11-01T11:00")  # a time: as it is


@pytest.mark.parametrize("value", ["tomorrow", "", "2026-13-01T00:00", 12, None, 1.5])
def test_what_is_not_a_date_time_is_a_value_error(value: object) -> None:
    with pytest.raises(ValueError, match="not a date-time"):
        when(value, UTC)  # type: ignore[arg-type]
