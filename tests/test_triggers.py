"""Triggers (nbsched.triggers): cron in local wall-clock time across DST, intervals, one-off dates.

Pure: every instant is a parameter; the UTC instants below were checked by hand against the
2026 transitions (Paris 03-29 and 10-25 at 01:00Z, New York 03-08 at 07:00Z and 11-01 at 06:00Z,
Lord Howe 04-04 at 15:00Z and 10-03 at 15:30Z).
"""

from __future__ import annotations

import itertools
import json
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from croniter import CroniterBadDateError, croniter
from hypothesis import HealthCheck, event, given, reject, settings
from hypothesis import strategies as st

from nbsched.errors import NbschedError, ScheduleError
from nbsched.triggers import (
    CronTrigger,
    DateTrigger,
    IntervalTrigger,
    get_zone,
    trigger_from_fields,
)

UTC = timezone.utc
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def at(text: str) -> datetime:
    """An aware UTC instant from ``2026-03-29T01:00`` (always UTC)."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


TRANSITIONS = {  # 2026's, checked in test_transition_table_is_right
    "UTC": [],
    "Asia/Kolkata": [],
    "Europe/Paris": [at("2026-03-29T01:00"), at("2026-10-25T01:00")],
    "America/New_York": [at("2026-03-08T07:00"), at("2026-11-01T06:00")],
    "Australia/Lord_Howe": [at("2026-04-04T15:00"), at("2026-10-03T15:30")],
}


def fires(trigger, after: datetime, n: int) -> list[datetime]:
    out = []
    for _ in range(n):
        after = trigger.next_after(after)
        assert after is not None
        out.append(after)
    return out


def iso(moments: list[datetime]) -> list[str]:
    return [m.strftime("%Y-%m-%dT%H:%M:%S" if m.second else "%Y-%m-%dT%H:%M") for m in moments]


# -- cron in UTC ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expr",
    [
        "*/15 * * * *",
        "0 6 * * 1-5",
        "5 4 * * sun",
        "0 0,12 1 */2 *",
        "23 0-20/2 * * *",
        "0 0 1 jan,jul *",
        "0 9-17 * * mon-fri",
        "*/5 * * * * 30",
        "0 0 L * *",
        "30 8 * * 1#2",
    ],
)
def test_ordinary_utc_expressions_fire_exactly_when_croniter_does(expr: str) -> None:
    start = at("2026-01-01T00:00:07")
    reference = croniter(expr, start.replace(tzinfo=None), ret_type=datetime)
    expected = [reference.get_next().replace(tzinfo=UTC) for _ in range(60)]
    assert fires(CronTrigger(expr=expr), start, 60) == expected


def test_a_fire_time_is_strictly_after_and_in_utc() -> None:
    trigger = CronTrigger(expr="0 6 * * *", timezone="Europe/Paris")
    fire = at("2026-06-01T04:00")
    assert trigger.next_after(fire - timedelta(microseconds=1)) == fire
    assert trigger.next_after(fire) == fire + timedelta(days=1)
    assert trigger.next_after(fire + timedelta(microseconds=1)) == fire + timedelta(days=1)
    assert trigger.next_after(fire).tzinfo is UTC
    # `after` may be in any zone
    assert trigger.next_after(fire.astimezone(ZoneInfo("Asia/Tokyo")) - timedelta(seconds=1)) == fire


def test_naive_after_is_a_programming_error() -> None:
    for trigger in (CronTrigger(expr="@daily"), IntervalTrigger(every=60, start=NOW), DateTrigger(at=NOW)):
        with pytest.raises(ValueError, match="timezone-aware"):
            trigger.next_after(datetime(2026, 1, 1))


def test_month_ends() -> None:
    assert iso(fires(CronTrigger(expr="0 0 31 * *"), NOW, 8)) == [
        "2026-01-31T00:00",
        "2026-03-31T00:00",
        "2026-05-31T00:00",
        "2026-07-31T00:00",
        "2026-08-31T00:00",
        "2026-10-31T00:00",
        "2026-12-31T00:00",
        "2027-01-31T00:00",
    ]
    assert iso(fires(CronTrigger(expr="0 0 L * *"), NOW, 4)) == [
        "2026-01-31T00:00",
        "2026-02-28T00:00",
        "2026-03-31T00:00",
        "2026-04-30T00:00",
    ]
    assert iso(fires(CronTrigger(expr="0 0 L * *"), at("2028-02-01T00:00"), 1)) == ["2028-02-29T00:00"]
    assert iso(fires(CronTrigger(expr="0 0 L,15 * *"), NOW, 3)) == [
        "2026-01-15T00:00",
        "2026-01-31T00:00",
        "2026-02-15T00:00",
    ]


def test_leap_days() -> None:
    trigger = CronTrigger(expr="0 0 29 2 *")
    assert iso(fires(trigger, at("2026-05-01T00:00"), 2)) == ["2028-02-29T00:00", "2032-02-29T00:00"]
    assert iso(fires(trigger, at("2097-01-01T00:00"), 1)) == ["2104-02-29T00:00"]  # 2100 is no leap year


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        # both restricted: a day matching either fires (April 2026: Fridays 3, 10, 17, 24; the 13th is a Monday)
        ("0 0 13 * 5", ["2026-04-03", "2026-04-10", "2026-04-13", "2026-04-17", "2026-04-24", "2026-05-01"]),
        ("0 0 13 * *", ["2026-04-13", "2026-05-13", "2026-06-13"]),
        ("0 0 * * 5", ["2026-04-03", "2026-04-10", "2026-04-17"]),
        ("0 0 ? * fri", ["2026-04-03", "2026-04-10", "2026-04-17"]),
        ("0 0 1-31 * 5", ["2026-04-01", "2026-04-02", "2026-04-03"]),  # 1-31 is restricted: every day
        ("0 0 1-7 * 1", ["2026-04-01", "2026-04-02", "2026-04-03"]),  # not "first Monday": that is 1#1
        ("0 0 * * 1#1", ["2026-04-06", "2026-05-04", "2026-06-01"]),
        ("0 0 * * 7", ["2026-04-05", "2026-04-12", "2026-04-19"]),  # 7 is Sunday, like 0
        ("0 0 * * L5", ["2026-04-24", "2026-05-29", "2026-06-26"]),  # last Friday
    ],
)
def test_day_of_month_and_day_of_week(expr: str, expected: list[str]) -> None:
    got = fires(CronTrigger(expr=expr), at("2026-03-31T12:00"), len(expected))
    assert [f.date().isoformat() for f in got] == expected


def test_seconds_are_the_sixth_field() -> None:
    assert iso(fires(CronTrigger(expr="*/5 * * * * 30"), NOW, 3)) == [
        "2026-01-01T00:00:30",
        "2026-01-01T00:05:30",
        "2026-01-01T00:10:30",
    ]
    assert iso(fires(CronTrigger(expr="0 6 * * * */20", timezone="Europe/Paris"), NOW, 3)) == [
        "2026-01-01T05:00",
        "2026-01-01T05:00:20",
        "2026-01-01T05:00:40",
    ]


@pytest.mark.parametrize(
    ("alias", "expr"),
    [
        ("@hourly", "0 * * * *"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@weekly", "0 0 * * 0"),
        ("@monthly", "0 0 1 * *"),
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@Daily", "0 0 * * *"),
    ],
)
def test_aliases(alias: str, expr: str) -> None:
    start = at("2026-02-03T04:05")
    for zone in ("UTC", "Europe/Paris"):
        assert fires(CronTrigger(expr=alias, timezone=zone), start, 5) == fires(
            CronTrigger(expr=expr, timezone=zone), start, 5
        )


def test_whitespace_is_normalised() -> None:
    assert CronTrigger(expr="  0   6 * *\t1-5 ").expr == "0 6 * * 1-5"


def test_beyond_year_9999_it_never_fires_again() -> None:
    assert CronTrigger(expr="0 0 * * *").next_after(at("9999-12-31T01:00")) is None


# -- cron across DST --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "expr", "after", "expected"),
    [
        # Paris, spring forward 02:00 CET -> 03:00 CEST: 02:30 does not exist, fires at 03:00 CEST
        (
            "Europe/Paris",
            "30 2 * * *",
            "2026-03-27T12:00",
            ["2026-03-28T01:30", "2026-03-29T01:00", "2026-03-30T00:30"],
        ),
        # Paris, fall back 03:00 CEST -> 02:00 CET: 02:30 happens twice, fires once at the first (CEST)
        (
            "Europe/Paris",
            "30 2 * * *",
            "2026-10-23T12:00",
            ["2026-10-24T00:30", "2026-10-25T00:30", "2026-10-26T01:30"],
        ),
        (
            "Europe/Paris",
            "0 * * * *",
            "2026-03-28T22:30",
            ["2026-03-28T23:00", "2026-03-29T00:00", "2026-03-29T01:00", "2026-03-29T02:00", "2026-03-29T03:00"],
        ),
        # 02:00 CET (01:00Z) is the second pass of 02:00: skipped, so two hours pass between fires
        (
            "Europe/Paris",
            "0 * * * *",
            "2026-10-24T21:30",
            ["2026-10-24T22:00", "2026-10-24T23:00", "2026-10-25T00:00", "2026-10-25T02:00", "2026-10-25T03:00"],
        ),
        # several gap times collapse onto 03:00 CEST and fire once
        (
            "Europe/Paris",
            "0,30 2,3 * * *",
            "2026-03-28T23:00",
            ["2026-03-29T01:00", "2026-03-29T01:30", "2026-03-30T00:00"],
        ),
        # New York, spring forward 02:00 EST -> 03:00 EDT
        (
            "America/New_York",
            "30 2 * * *",
            "2026-03-06T12:00",
            ["2026-03-07T07:30", "2026-03-08T07:00", "2026-03-09T06:30"],
        ),
        (
            "America/New_York",
            "0 * * * *",
            "2026-03-08T04:30",
            ["2026-03-08T05:00", "2026-03-08T06:00", "2026-03-08T07:00", "2026-03-08T08:00"],
        ),
        # New York, fall back 02:00 EDT -> 01:00 EST: 01:30 twice (fires at EDT), 02:30 once (EST)
        (
            "America/New_York",
            "30 1 * * *",
            "2026-10-30T12:00",
            ["2026-10-31T05:30", "2026-11-01T05:30", "2026-11-02T06:30"],
        ),
        (
            "America/New_York",
            "30 2 * * *",
            "2026-10-30T12:00",
            ["2026-10-31T06:30", "2026-11-01T07:30", "2026-11-02T07:30"],
        ),
        (
            "America/New_York",
            "0 * * * *",
            "2026-11-01T03:30",
            ["2026-11-01T04:00", "2026-11-01T05:00", "2026-11-01T07:00", "2026-11-01T08:00"],
        ),
        # Lord Howe moves its clock by 30 minutes: 02:15 is skipped, 01:45 happens twice
        (
            "Australia/Lord_Howe",
            "15 2 * * *",
            "2026-10-02T12:00",
            ["2026-10-02T15:45", "2026-10-03T15:30", "2026-10-04T15:15"],
        ),
        (
            "Australia/Lord_Howe",
            "45 1 * * *",
            "2026-04-03T12:00",
            ["2026-04-03T14:45", "2026-04-04T14:45", "2026-04-05T15:15"],
        ),
    ],
)
def test_dst_transitions(zone: str, expr: str, after: str, expected: list[str]) -> None:
    assert iso(fires(CronTrigger(expr=expr, timezone=zone), at(after), len(expected))) == expected


@pytest.mark.parametrize(
    ("zone", "after", "expected"),
    [
        ("Europe/Paris", "2026-10-25T01:10", "2026-10-25T02:00"),  # 02:10 CET: 02:20 and 02:40 fired in CEST
        ("America/New_York", "2026-11-01T06:10", "2026-11-01T07:00"),  # 01:10 EST
        ("Europe/Paris", "2026-10-25T00:50", "2026-10-25T02:00"),  # 02:50 CEST, the end of the first pass
    ],
)
def test_from_inside_the_second_pass_the_repeated_times_do_not_fire_again(zone, after, expected) -> None:
    assert CronTrigger(expr="*/20 * * * *", timezone=zone).next_after(at(after)) == at(expected)


@pytest.mark.parametrize("zone", ["Europe/Paris", "America/New_York", "Australia/Lord_Howe"])
@pytest.mark.parametrize("expr", ["0 * * * *", "*/30 * * * *", "*/7 * * * * */10"])
def test_across_both_transitions_fires_never_repeat_or_go_back(zone: str, expr: str) -> None:
    trigger = CronTrigger(expr=expr, timezone=zone)
    for transition in TRANSITIONS[zone]:
        chain = fires(trigger, transition - timedelta(hours=3), 100)
        assert all(a < b for a, b in itertools.pairwise(chain))
        # the repeated hour's second pass is skipped (a jump of at most one hour more than usual)
        assert max(b - a for a, b in itertools.pairwise(chain)) <= timedelta(hours=2)


# -- interval and date ------------------------------------------------------------------------


def test_interval_is_anchored_to_its_start() -> None:
    trigger = IntervalTrigger(every=900, start=at("2026-01-01T00:00:07"))
    assert trigger.next_after(at("2026-01-01T10:20")) == at("2026-01-01T10:30:07")
    assert trigger.next_after(at("2026-01-01T10:30:07")) == at("2026-01-01T10:45:07")
    assert trigger.next_after(at("2026-01-01T10:30:07") - timedelta(microseconds=1)) == at("2026-01-01T10:30:07")
    # before its start, the start is the first fire
    assert trigger.next_after(at("2025-06-01T00:00")) == at("2026-01-01T00:00:07")
    assert trigger.next_after(at("2026-01-01T00:00:07")) == at("2026-01-01T00:15:07")


def test_interval_is_absolute_time_whatever_the_zone() -> None:
    hourly = IntervalTrigger(every=3600, start=at("2026-10-24T22:00"), timezone="Europe/Paris")
    assert iso(fires(hourly, at("2026-10-24T22:00"), 4)) == [
        "2026-10-24T23:00",
        "2026-10-25T00:00",
        "2026-10-25T01:00",
        "2026-10-25T02:00",
    ]
    daily = trigger_from_fields({"every": "1d", "start": "2026-03-28T06:00", "timezone": "Europe/Paris"}, now=NOW)
    assert iso(fires(daily, at("2026-03-28T05:00"), 2)) == ["2026-03-29T05:00", "2026-03-30T05:00"]  # 07:00 CEST


def test_interval_arithmetic_is_exact() -> None:
    trigger = IntervalTrigger(every=0.1, start=NOW)
    year = timedelta(days=365)
    assert trigger.next_after(NOW + year + timedelta(seconds=0.05)) == NOW + year + timedelta(seconds=0.1)
    assert trigger.next_after(NOW + year) == NOW + year + timedelta(seconds=0.1)


def test_interval_past_year_9999_never_fires_again() -> None:
    trigger = IntervalTrigger(every=86400, start=at("9999-12-31T00:00"))
    assert trigger.next_after(at("9999-12-31T00:00")) is None


def test_date_fires_once() -> None:
    when = at("2026-12-24T17:00")
    trigger = DateTrigger(at=when, timezone="Europe/Paris")
    assert trigger.next_after(when - timedelta(days=300)) == when
    assert trigger.next_after(when - timedelta(microseconds=1)) == when
    assert trigger.next_after(when) is None
    assert trigger.next_after(when + timedelta(days=1)) is None


@pytest.mark.parametrize(
    ("value", "zone", "expected"),
    [
        ("2026-12-24T18:00", "Europe/Paris", "2026-12-24T17:00"),  # naive: wall-clock time in the zone
        ("2026-12-24T18:00:00+00:00", "Europe/Paris", "2026-12-24T18:00"),
        ("2026-12-24T18:00Z", "UTC", "2026-12-24T18:00"),
        ("2026-12-24", "Europe/Paris", "2026-12-23T23:00"),
        (date(2026, 12, 24), "America/New_York", "2026-12-24T05:00"),
        (datetime(2026, 12, 24, 18), "Asia/Kolkata", "2026-12-24T12:30"),
        ("2026-03-29T02:30", "Europe/Paris", "2026-03-29T01:00"),  # skipped by DST: the end of the gap
        ("2026-10-25T02:30", "Europe/Paris", "2026-10-25T00:30"),  # twice: the first
    ],
)
def test_date_fields(value, zone: str, expected: str) -> None:
    trigger = trigger_from_fields({"at": value, "timezone": zone}, now=NOW)
    assert trigger.next_after(NOW) == at(expected)


# -- fields, descriptions, round trips --------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "described"),
    [
        ({"cron": "0 6 * * 1-5", "timezone": "Europe/Paris"}, "cron 0 6 * * 1-5 (Europe/Paris)"),
        ({"cron": "@daily"}, "cron @daily (UTC)"),
        ({"cron": "*/5 * * * * 30", "timezone": "Asia/Kolkata"}, "cron */5 * * * * 30 (Asia/Kolkata)"),
        ({"every": "15m"}, "every 15m"),
        ({"every": 0.25, "start": "2026-12-01T00:30:00+00:00"}, "every 250ms"),
        ({"every": "1h30m", "start": "2026-12-01T06:00", "timezone": "Europe/Paris"}, "every 1h30m"),
        ({"at": "2026-12-24T18:00", "timezone": "Europe/Paris"}, "at 2026-12-24 18:00 (Europe/Paris)"),
        ({"at": "2026-12-24T17:00:30Z"}, "at 2026-12-24 17:00:30 (UTC)"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_fields_round_trip_through_json(fields, described: str) -> None:
    trigger = trigger_from_fields(fields, now=NOW)
    assert trigger.describe() == described
    stored = json.loads(json.dumps(trigger.to_fields()))
    again = trigger_from_fields(stored, now=NOW + timedelta(days=100))  # a stored start wins over now
    assert again == trigger and again.to_fields() == stored and again.describe() == described
    assert again.next_after(NOW) == trigger.next_after(NOW) is not None


def test_every_starts_now_by_default_and_other_keys_are_ignored() -> None:
    fields = {"every": 3600, "params": {"region": "us"}, "catchup": True, "misfire_grace": "5m"}
    trigger = trigger_from_fields(fields, now=NOW)
    assert trigger == IntervalTrigger(every=3600.0, start=NOW)
    assert trigger.next_after(NOW) == NOW + timedelta(hours=1)
    assert trigger_from_fields({"cron": "@daily", "enabled": False}, now=NOW) == CronTrigger(expr="@daily")


def test_stored_fields_name_the_timezone_and_a_local_date() -> None:
    assert trigger_from_fields({"cron": "@daily"}, now=NOW).to_fields() == {"cron": "@daily", "timezone": "UTC"}
    assert trigger_from_fields({"at": "2026-07-01T08:00", "timezone": "Europe/Paris"}, now=NOW).to_fields() == {
        "at": "2026-07-01T08:00:00+02:00",
        "timezone": "Europe/Paris",
    }


def test_a_trigger_can_be_shared_by_threads() -> None:
    trigger = CronTrigger(expr="*/7 * * * *", timezone="Europe/Paris")
    afters = [NOW + timedelta(minutes=13 * i) for i in range(400)]
    expected = [trigger.next_after(a) for a in afters]
    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(trigger.next_after, afters)) == expected


# -- mistakes: one line each ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "a schedule needs one of cron, every or at"),
        ({"timezone": "Europe/Paris", "params": {}}, "a schedule needs one of cron, every or at"),
        ({"cron": "@daily", "every": "1h"}, "a schedule takes one of cron, every or at, not cron and every"),
        (
            {"cron": "@daily", "every": "1h", "at": "2026-12-01"},
            "a schedule takes one of cron, every or at, not cron and every and at",
        ),
        ({"cron": "0 25 * * *"}, "cron '0 25 * * *': bad hour field '25' (use 0-23)"),
        ({"cron": "61 * * * *"}, "cron '61 * * * *': bad minute field '61' (use 0-59)"),
        ({"cron": "0 0 32 * *"}, "cron '0 0 32 * *': bad day-of-month field '32' (use 1-31, L or 15W)"),
        ({"cron": "0 0 * 13 *"}, "cron '0 0 * 13 *': bad month field '13' (use 1-12 or jan-dec)"),
        ({"cron": "0 0 * foo *"}, "cron '0 0 * foo *': bad month field 'foo' (use 1-12 or jan-dec)"),
        ({"cron": "0 0 * * 8"}, "cron '0 0 * * 8': bad day-of-week field '8' (use 0-7, sun-sat, 5#2 or L5)"),
        ({"cron": "0 0 * * 5L"}, "cron '0 0 * * 5L': bad day-of-week field '5L' (use 0-7, sun-sat, 5#2 or L5)"),
        ({"cron": "0 0 * * * 60"}, "cron '0 0 * * * 60': bad second field '60' (use 0-59)"),
        ({"cron": "*/0 * * * *"}, "cron '*/0 * * * *': bad minute field '*/0' (use 0-59)"),
        (
            {"cron": "* * *"},
            "cron '* * *': expected 5 fields (minute hour day-of-month month day-of-week) or 6 (seconds last), got 3",
        ),
        (
            {"cron": "0 0 1 1 * * 2030"},
            (
                "cron '0 0 1 1 * * 2030': expected 5 fields (minute hour day-of-month "
                "month day-of-week) or 6 (seconds last), got 7"
            ),
        ),
        (
            {"cron": ""},
            "cron '': expected 5 fields (minute hour day-of-month month day-of-week) or 6 (seconds last), got 0",
        ),
        ({"cron": "@dayly"}, "cron '@dayly': unknown alias (did you mean '@daily'?)"),
        (
            {"cron": "@reboot"},
            "cron '@reboot': unknown alias (use @hourly, @daily, @midnight, @weekly, @monthly, @yearly, @annually)",
        ),
        ({"cron": "0 0 30 2 *"}, "cron '0 0 30 2 *': never fires (no such date)"),
        ({"cron": "0 0 31 4,6 *"}, "cron '0 0 31 4,6 *': never fires (no such date)"),
        ({"cron": "H * * * *"}, "cron 'H * * * *': hashed (H) and random (R) values are not supported"),
        ({"cron": "0 R(0-5) * * *"}, "cron '0 R(0-5) * * *': hashed (H) and random (R) values are not supported"),
        ({"cron": 5}, "cron 5: expected an expression like '0 6 * * 1-5'"),
        ({"cron": "@daily", "start": "2026-01-01"}, "start: only an every schedule has a start"),
        ({"at": "2026-12-01", "start": "2026-01-01"}, "start: only an every schedule has a start"),
        ({"every": "10 minutes"}, "every: bad duration '10 minutes' (use e.g. 30s, 10m, 1h30m)"),
        ({"every": -5}, "every: bad duration -5: negative"),
        ({"every": True}, "every: bad duration True"),
        ({"every": 0}, "every 0: must be longer than 0s"),
        ({"every": "0s"}, "every '0s': must be longer than 0s"),
        ({"every": "1h", "start": "soon"}, "start 'soon': not a date-time (use e.g. 2026-12-01T06:00)"),
        ({"at": "tomorrow"}, "at 'tomorrow': not a date-time (use e.g. 2026-12-01T06:00)"),
        ({"at": 12}, "at 12: not a date-time (use e.g. 2026-12-01T06:00)"),
        ({"at": "2026-13-01T00:00"}, "at '2026-13-01T00:00': not a date-time (use e.g. 2026-12-01T06:00)"),
        (
            {"cron": "@daily", "timezone": "Europe/Pariss"},
            "unknown timezone 'Europe/Pariss' (did you mean 'Europe/Paris'?)",
        ),
        ({"every": "1h", "timezone": "europe/paris"}, "unknown timezone 'europe/paris' (did you mean 'Europe/Paris'?)"),
        (
            {"at": "2026-12-01", "timezone": "Mars/Olympus_Mons"},
            "unknown timezone 'Mars/Olympus_Mons' (use an IANA name like 'Europe/Paris')",
        ),
        ({"cron": "@daily", "timezone": ""}, "timezone '': expected an IANA name like 'Europe/Paris'"),
        ({"cron": "@daily", "timezone": None}, "timezone None: expected an IANA name like 'Europe/Paris'"),
        ({"cron": "@daily", "timezone": "localtime"}, "timezone 'localtime': name the zone, like 'Europe/Paris'"),
    ],
)
def test_mistakes_are_one_clear_line(fields, message: str) -> None:
    with pytest.raises(ScheduleError) as info:
        trigger_from_fields(fields, now=NOW)
    assert str(info.value) == message
    assert isinstance(info.value, NbschedError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize("name", ["Europe", "/etc/passwd", "../etc/x", "Europe/Paris/"])
def test_zone_names_that_are_not_zones(name: str) -> None:
    with pytest.raises(ScheduleError, match=rf"^unknown timezone '{re.escape(name)}' \(") as info:
        get_zone(name)
    assert "\n" not in str(info.value)


def test_zones() -> None:
    assert get_zone("Europe/Paris") == ZoneInfo("Europe/Paris")
    assert get_zone("UTC") == ZoneInfo("UTC")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: IntervalTrigger(every=0, start=NOW), r"^every 0: must be at least a microsecond$"),
        (lambda: IntervalTrigger(every=float("nan"), start=NOW), r"^every nan: expected a number of seconds$"),
        (lambda: IntervalTrigger(every="1h", start=NOW), r"^every '1h': expected a number of seconds$"),
        (lambda: IntervalTrigger(every=1e300, start=NOW), r"^every 1e\+300: too long$"),
        (lambda: IntervalTrigger(every=60, start=datetime(2026, 1, 1)), r"^start .*: expected a timezone-aware"),
        (lambda: DateTrigger(at=datetime(2026, 1, 1)), r"^at .*: expected a timezone-aware datetime$"),
        (lambda: CronTrigger(expr="@daily", timezone="Nowhere"), r"^unknown timezone 'Nowhere'"),
    ],
)
def test_constructors_validate(make, message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        make()


# -- property: any expression, any zone, any start ----------------------------------------------


def test_transition_table_is_right() -> None:
    for name, instants in TRANSITIONS.items():
        zone = ZoneInfo(name)
        for t in instants:
            assert (t - timedelta(seconds=1)).astimezone(zone).utcoffset() != t.astimezone(zone).utcoffset()


def cron_field(lo: int, hi: int, *extra: str) -> st.SearchStrategy[str]:
    """``*`` or a list of values, ranges and steps within [lo, hi]."""
    number = st.integers(lo, hi)
    span = st.tuples(number, number).map(lambda p: f"{min(p)}-{max(p)}")
    step = st.tuples(st.just("*") | span, st.integers(1, hi - lo)).map(lambda p: f"{p[0]}/{p[1]}")
    item = number.map(str) | span | step
    if extra:
        item |= st.sampled_from(extra)
    return st.just("*") | st.lists(item, min_size=1, max_size=3).map(",".join)


ZONES = list(TRANSITIONS)
FIELDS = [cron_field(0, 59), cron_field(0, 23), cron_field(1, 31, "L"), cron_field(1, 12), cron_field(0, 6)]


@st.composite
def cron_exprs(draw: st.DrawFn) -> str:
    fields = [draw(f) for f in FIELDS]
    if draw(st.integers(0, 3)) == 0:
        fields.append(draw(cron_field(0, 59)))  # seconds
    return " ".join(fields)


@st.composite
def starts(draw: st.DrawFn, zone: str) -> datetime:
    if TRANSITIONS[zone] and draw(st.booleans()):  # around a DST transition, where the rules matter
        seconds = draw(st.integers(-2 * 3600, 3 * 3600) | st.integers(-86400, 3 * 86400))
        return draw(st.sampled_from(TRANSITIONS[zone])) + timedelta(seconds=seconds)
    return draw(st.datetimes(datetime(2020, 1, 1), datetime(2030, 12, 31))).replace(tzinfo=UTC)


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(expr=cron_exprs(), name=st.sampled_from(ZONES), data=st.data())
def test_property_fires_increase_and_match_the_expression(expr: str, name: str, data: st.DataObject) -> None:
    check_chain(expr, name, data.draw(starts(name), "start"))


# every night in the small hours, from at most two hours before to three after a transition (often
# within the hour after it: the second pass of a repeated hour)
NIGHTLY = st.tuples(cron_field(0, 59), st.sampled_from(["*", "1", "2", "1,2,3", "0-3", "*/2", "2-4/2"]))


@settings(max_examples=150, deadline=None, database=None)
@given(
    nightly=NIGHTLY,
    name=st.sampled_from([z for z in ZONES if TRANSITIONS[z]]),
    which=st.integers(0, 1),
    seconds=st.integers(0, 5 * 3600) | st.integers(2 * 3600, 3 * 3600),
)
def test_property_around_dst_transitions(nightly: tuple[str, str], name: str, which: int, seconds: int) -> None:
    start = TRANSITIONS[name][which] - timedelta(hours=2) + timedelta(seconds=seconds)
    check_chain(f"{nightly[0]} {nightly[1]} * * *", name, start)


def check_chain(expr: str, name: str, start: datetime) -> None:
    """20 fires from ``start``: strictly increasing, each a match of ``expr`` in local time (or the end
    of a DST gap that skipped a match), none missed; exactly croniter's chain in a fixed-offset zone."""
    zone = ZoneInfo(name)
    try:
        trigger = CronTrigger(expr=expr, timezone=name)
    except ScheduleError as exc:  # e.g. only the 30th of February
        assert str(exc).endswith("never fires (no such date)")
        with pytest.raises(CroniterBadDateError):
            croniter(expr, datetime(2000, 1, 1)).get_next()
        reject()
    if start.astimezone(zone).fold:
        event("started in the second pass of a repeated hour")
    chain = fires(trigger, start, 20)
    assert start < chain[0] and all(a < b for a, b in itertools.pairwise(chain))
    for fire in chain:
        assert fire.tzinfo is UTC and fire.microsecond == 0
        local = fire.astimezone(zone)
        assert local.fold == 0  # a repeated local time fires at its first occurrence
        naive = local.replace(tzinfo=None)
        if naive.replace(tzinfo=zone, fold=1).utcoffset() != local.utcoffset():
            event("fired at a repeated local time")
        if not croniter.match(expr, naive):
            # allowed only at the end of a DST gap, for a skipped local time that matched
            event("fired at the end of a DST gap")
            jump = local.utcoffset() - (fire - timedelta(seconds=1)).astimezone(zone).utcoffset()
            assert jump > timedelta(0), (expr, name, fire)
            skipped = croniter(expr, naive - jump - timedelta(seconds=1), ret_type=datetime).get_next()
            assert skipped < naive, (expr, name, fire)
    # nothing is missed: every matching local time in the span that exists exactly once fired
    fired = set(chain)
    first_local, last_local = (chain[i].astimezone(zone).replace(tzinfo=None) for i in (0, -1))
    candidates = croniter(expr, first_local - timedelta(seconds=1), ret_type=datetime)
    for _ in range(100):
        naive = candidates.get_next()
        if naive >= last_local:
            break
        early, late = naive.replace(tzinfo=zone), naive.replace(tzinfo=zone, fold=1)
        if early.utcoffset() == late.utcoffset():
            assert early.astimezone(UTC) in fired, (expr, name, naive)
    if name in ("UTC", "Asia/Kolkata"):  # fixed offsets: exactly croniter's chain, shifted
        offset = start.astimezone(zone).utcoffset()
        reference = croniter(expr, (start + offset).replace(tzinfo=None), ret_type=datetime)
        assert chain == [(reference.get_next() - offset).replace(tzinfo=UTC) for _ in range(20)]
