"""The scheduler with an injected clock: no sleeping, no kernels (runs are created, not executed),
on SQLite and on the real PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from conftest import write_notebook, write_yaml

from nbsched.errors import ScheduleError
from nbsched.scheduler import Scheduler
from nbsched.service import Config, Service
from nbsched.states import RunState

UTC = timezone.utc
T0 = datetime(2026, 11, 2, 5, 0, tzinfo=UTC)  # a Monday


@pytest.fixture
def service(project, db_url):
    svc = Service(Config.resolve(project=project, db_url=db_url))
    yield svc
    svc.close()


@pytest.fixture
def registered(project, service):
    write_notebook(project / "nb.ipynb", "x = 1", params="region = 'eu'\nupstream = {}")
    write_yaml(project / "pipeline.yaml", "name: daily\ntasks:\n  only: {notebook: nb.ipynb}\n")
    service.register(project / "pipeline.yaml", now=T0)
    return service


def _scheduler(service):
    return Scheduler(service.store, service._run_for_schedule)


def _dates(service, schedule_id=None):
    runs = service.store.list_runs(limit=None, oldest_first=True)
    return [r.logical_date for r in runs if schedule_id is None or r.schedule_id == schedule_id]


def test_an_interval_fires_on_time_once(registered):
    sched = registered.add_schedule("daily", {"every": "1h", "params": {"region": "us"}}, now=T0)
    scheduler = _scheduler(registered)
    assert scheduler.fire_due(T0 + timedelta(minutes=59)) == []
    (run_id,) = scheduler.fire_due(T0 + timedelta(hours=1))
    assert scheduler.fire_due(T0 + timedelta(hours=1)) == []
    run = registered.get_run(run_id)
    assert run.logical_date == T0 + timedelta(hours=1)
    assert (run.state, run.trigger, run.schedule_id, run.params) == (
        RunState.QUEUED,
        "schedule",
        sched.id,
        {"region": "us"},
    )
    assert scheduler.next_fire_at() == T0 + timedelta(hours=2)
    assert registered.store.get_schedule(sched.id).last_fire_at == T0 + timedelta(hours=1)


def test_a_late_fire_within_the_grace_still_runs(registered):
    registered.add_schedule("daily", {"cron": "0 6 * * *", "misfire_grace": "10m"}, now=T0)
    assert len(_scheduler(registered).fire_due(T0 + timedelta(hours=1, minutes=5))) == 1
    assert _dates(registered) == [datetime(2026, 11, 2, 6, 0, tzinfo=UTC)]


def test_a_fire_later_than_the_grace_is_skipped(registered, caplog):
    sched = registered.add_schedule("daily", {"cron": "0 6 * * *", "misfire_grace": "10m"}, now=T0)
    scheduler = _scheduler(registered)
    assert scheduler.fire_due(T0 + timedelta(hours=1, minutes=30)) == []
    assert "skipped 1 missed fire" in caplog.text
    assert registered.store.get_schedule(sched.id).next_fire_at == datetime(2026, 11, 3, 6, 0, tzinfo=UTC)


def test_a_schedule_far_behind_skips_its_missed_fires_in_one_line(registered, caplog):
    """A daemon back after a day, `every: 1s` without catchup: one run, for the latest fire,
    and one line for the 86,399 skipped (it logged a line per 500 fires, each pass)."""
    sched = registered.add_schedule("daily", {"every": "1s"}, now=T0)
    scheduler = _scheduler(registered)
    now = T0 + timedelta(days=1)
    assert len(scheduler.fire_due(now)) == 1
    assert _dates(registered) == [now]
    lines = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    expected = (
        f"schedule {sched.id} (daily): skipped 86,399 missed fire(s) from 2026-11-02T05:00:01+00:00 up to "
        "2026-11-03T04:59:59+00:00 (1.0s late, misfire grace 600s); the latest, 2026-11-03T05:00:00+00:00, runs"
    )
    assert lines == [expected], lines
    assert registered.store.get_schedule(sched.id).next_fire_at == now + timedelta(seconds=1)
    assert scheduler.fire_due(now) == []


def test_a_cron_schedule_far_behind_counts_what_it_skipped(registered, caplog):
    registered.add_schedule("daily", {"cron": "*/5 * * * *", "misfire_grace": "1m"}, now=T0)
    now = T0 + timedelta(days=30, seconds=30)
    assert len(_scheduler(registered).fire_due(now)) == 1
    assert _dates(registered) == [T0 + timedelta(days=30)]
    (line,) = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert "skipped 8,639 missed fire(s) from 2026-11-02T05:05:00+00:00 up to 2026-12-02T04:55:00+00:00" in line, line
    every_second = registered.add_schedule("daily", {"cron": "* * * * * *"}, now=now)
    caplog.clear()
    created = _scheduler(registered).fire_due(now + timedelta(days=400, microseconds=5))
    assert len(created) == 2  # each schedule's latest fire, and no other
    (line,) = [
        m
        for r in caplog.records
        if (m := r.getMessage()).startswith(f"schedule {every_second.id} (") and "skipped" in m
    ]
    assert "skipped more than 10,000 missed fire(s) from 2026-12-02T05:00:31+00:00 up to 2028-01-06T05:00:29" in line


def test_an_interval_under_a_second_is_refused(registered):
    with pytest.raises(
        ScheduleError, match=r"schedule.every: '1ms': at least 1s \(a schedule fires at most once a second\)"
    ):
        registered.add_schedule("daily", {"every": "1ms"}, now=T0)
    assert registered.add_schedule("daily", {"every": "1s"}, now=T0).description == "every 1s"


def test_catchup_creates_every_missed_run_oldest_first(registered):
    registered.add_schedule("daily", {"cron": "0 6 * * *", "catchup": True}, now=T0)
    created = _scheduler(registered).fire_due(datetime(2026, 11, 5, 7, 0, tzinfo=UTC))
    assert len(created) == 4
    assert _dates(registered) == [datetime(2026, 11, d, 6, 0, tzinfo=UTC) for d in (2, 3, 4, 5)]
    assert [registered.get_run(r).trigger for r in created] == ["catchup"] * 4


def test_without_catchup_only_the_latest_missed_fire_runs(registered):
    registered.add_schedule("daily", {"cron": "0 6 * * *", "misfire_grace": "2h"}, now=T0)
    assert len(_scheduler(registered).fire_due(datetime(2026, 11, 5, 7, 0, tzinfo=UTC))) == 1
    assert _dates(registered) == [datetime(2026, 11, 5, 6, 0, tzinfo=UTC)]


def test_runs_carry_max_active_runs_and_only_that_many_start(registered):
    registered.add_schedule("daily", {"every": "1m", "catchup": True, "max_active_runs": 1}, now=T0)
    created = _scheduler(registered).fire_due(T0 + timedelta(minutes=3))
    assert len(created) == 3
    assert [registered.store.start_run(r) for r in created] == [True, False, False]


def test_pause_stops_firing_and_resume_goes_on_from_now(registered):
    sched = registered.add_schedule("daily", {"every": "1h"}, now=T0)
    scheduler = _scheduler(registered)
    registered.pause(sched.id)
    assert scheduler.fire_due(T0 + timedelta(hours=5)) == []
    resumed = registered.resume(sched.id, now=T0 + timedelta(hours=5, minutes=30))
    assert resumed.next_fire_at == T0 + timedelta(hours=6)
    assert scheduler.fire_due(T0 + timedelta(hours=5, minutes=59)) == []
    assert len(scheduler.fire_due(T0 + timedelta(hours=6))) == 1


def test_a_schedule_added_by_another_process_while_the_loop_sleeps_is_seen(registered, project):
    registered.add_schedule("daily", {"cron": "0 6 * * *"}, now=T0)
    scheduler = _scheduler(registered)
    scheduler.fire_due(T0)
    assert scheduler.next_fire_at() == datetime(2026, 11, 2, 6, 0, tzinfo=UTC)
    other = Service(
        Config.resolve(project=project, db_url=registered.config.db_url)
    )  # its own connection, as another process
    try:
        other.add_schedule("daily", {"every": "10m"}, now=T0)
    finally:
        other.close()
    scheduler.refresh()
    assert scheduler.next_fire_at() == T0 + timedelta(minutes=10)


def test_an_edited_schedule_is_followed(registered):
    sched = registered.add_schedule("daily", {"cron": "0 6 * * *"}, now=T0)
    scheduler = _scheduler(registered)
    scheduler.fire_due(T0)
    registered.store.update_schedule(sched.id, next_fire_at=T0 + timedelta(minutes=1))
    assert len(scheduler.fire_due(T0 + timedelta(minutes=1))) == 1


def test_two_schedulers_on_one_database_create_each_run_once(registered, project):
    registered.add_schedule("daily", {"every": "1m", "catchup": True}, now=T0)
    other = Service(Config.resolve(project=project, db_url=registered.config.db_url))
    try:
        first, second = _scheduler(registered), _scheduler(other)
        made = []
        for minute in range(1, 11):
            now = T0 + timedelta(minutes=minute)
            made += second.fire_due(now) + first.fire_due(now)
    finally:
        other.close()
    assert len(made) == 10
    assert _dates(registered) == [T0 + timedelta(minutes=m) for m in range(1, 11)]


def test_spec_schedules_are_created_by_register_and_kept_when_unchanged(project, service):
    write_notebook(project / "nb.ipynb", "x = 1")
    spec = write_yaml(
        project / "pipeline.yaml",
        """
name: specced
tasks:
  only: {notebook: nb.ipynb}
schedules:
  - {cron: "0 6 * * 1-5", timezone: Europe/Paris, catchup: false}
""",
    )
    _, version, (first_id,) = service.register(spec, now=T0)
    sched = service.store.get_schedule(first_id)
    assert sched.origin == "spec"
    # 06:00 in Paris (CET, UTC+1); T0 is Monday 06:00 Paris itself, so the next is Tuesday's
    assert sched.next_fire_at == datetime(2026, 11, 3, 5, 0, tzinfo=UTC)
    _, same_version, (same_id,) = service.register(spec, now=T0)
    assert (same_version, same_id) == (version, first_id)
    spec.write_text(spec.read_text().replace("0 6", "30 7"))
    _, new_version, (new_id,) = service.register(spec, now=T0)
    assert new_version == version + 1 and new_id != first_id
    assert [s.id for s in service.list_schedules("specced")] == [new_id]
