"""The scheduler turns schedules into runs.

It keeps the enabled schedules in a heap ordered by next fire time and, when asked at
``now``, fires the ones due: one run per fire time, keyed UNIQUE (schedule, logical
date) in the store so that schedulers racing on one database create it once. The clock
is a parameter: ``fire_due(now)``; the daemon supplies the real one.

Misfires (fire times that passed while nothing ran): with ``catchup`` every missed fire
gets a run, oldest first (Airflow's catchup); without it only the latest does, and only
if it is at most ``misfire_grace`` late (APScheduler's coalesce + misfire_grace_time).
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from nbsched.errors import NbschedError, NotFound
from nbsched.notices import Notice
from nbsched.states import RunTrigger
from nbsched.store import ScheduleRecord, SqlStore
from nbsched.timefmt import elapsed
from nbsched.triggers import Trigger, trigger_from_fields

log = logging.getLogger("nbsched.scheduler")

CATCHUP_BATCH = 500  # runs one schedule creates per pass; a long backlog is worked off in batches

# (schedule, logical_date, what fired it) -> run id, or None when that run already exists
CreateRun = Callable[[ScheduleRecord, datetime, RunTrigger], "str | None"]
# (schedule, what was missed) -> the notifications of its pipeline's schedule_missed rules
MissedNotices = Callable[[ScheduleRecord, dict[str, Any]], "list[Notice]"]


def schedule_trigger(schedule: ScheduleRecord) -> Trigger:
    return trigger_from_fields(schedule.trigger, now=schedule.created_at)


class Scheduler:
    def __init__(self, store: SqlStore, create_run: CreateRun, missed: MissedNotices | None = None) -> None:
        self.store = store
        self.create_run = create_run
        self.missed = missed
        self._heap: list[tuple[datetime, int]] = []
        self._seen_counter: int | None = None

    def invalidate(self) -> None:
        """A schedule changed in this process: reload before the next decision."""
        self._seen_counter = None

    def refresh(self) -> None:
        """Reload the heap when any schedule changed (in this process or another)."""
        counter = self.store.counter()
        if counter == self._seen_counter:
            return
        self._seen_counter = counter
        self._heap = [
            (s.next_fire_at, s.id) for s in self.store.list_schedules(enabled_only=True) if s.next_fire_at is not None
        ]
        heapq.heapify(self._heap)

    def next_fire_at(self) -> datetime | None:
        return self._heap[0][0] if self._heap else None

    def fire_due(self, now: datetime) -> list[str]:
        """Create the runs of every fire time up to ``now``; returns their ids."""
        self.refresh()
        created: list[str] = []
        while self._heap and self._heap[0][0] <= now:
            at, schedule_id = heapq.heappop(self._heap)
            try:
                schedule = self.store.get_schedule(schedule_id)
            except NotFound:
                continue
            if not schedule.enabled or schedule.next_fire_at is None:
                continue
            if schedule.next_fire_at != at:  # another scheduler moved it: follow
                heapq.heappush(self._heap, (schedule.next_fire_at, schedule.id))
                continue
            created.extend(self._fire(schedule, now))
        return created

    def _fire(self, schedule: ScheduleRecord, now: datetime) -> list[str]:
        notices: list[Notice] = []
        trigger = schedule_trigger(schedule)
        at = schedule.next_fire_at
        assert at is not None
        due = [at]
        following = trigger.next_after(at)
        while following is not None and following <= now and len(due) < CATCHUP_BATCH:
            due.append(following)
            following = trigger.next_after(following)
        if schedule.catchup:
            fire = due
            kind = RunTrigger.CATCHUP if len(due) > 1 or now - at > _grace(schedule) else RunTrigger.SCHEDULE
        else:
            late = now - due[-1]
            fire = [due[-1]] if late <= _grace(schedule) else []
            kind = RunTrigger.SCHEDULE
            missed = len(due) - len(fire)
            if missed and self.missed is not None:
                skipped = {
                    "schedule_id": schedule.id,
                    "missed": missed,
                    "up_to": due[-1].isoformat(),
                    "late": elapsed(late.total_seconds()),
                    "misfire_grace": schedule.misfire_grace,
                }
                notices = self.missed(schedule, skipped)
            if missed:
                log.warning(
                    "schedule %d (%s): skipped %d missed fire(s) up to %s (%s late, misfire grace %gs)",
                    schedule.id,
                    schedule.pipeline,
                    missed,
                    due[-1].isoformat(),
                    elapsed(late.total_seconds()),
                    schedule.misfire_grace,
                )
        created = []
        for logical_date in fire:
            try:
                run_id = self.create_run(schedule, logical_date, kind)
            except NbschedError as exc:
                log.error(
                    "schedule %d (%s): cannot create the run for %s: %s",
                    schedule.id,
                    schedule.pipeline,
                    logical_date.isoformat(),
                    exc,
                )
                continue
            if run_id is not None:
                created.append(run_id)
                log.info(
                    "schedule %d fired: pipeline %s, logical date %s, run %s",
                    schedule.id,
                    schedule.pipeline,
                    logical_date.isoformat(),
                    run_id,
                )
        # Runs first, then the schedule: a crash in between re-fires the same logical dates,
        # which the store's UNIQUE key turns into no-ops instead of lost fires.
        moved = self.store.update_schedule(
            schedule.id,
            user_change=False,
            expect_next_fire_at=at,
            notices=notices,
            next_fire_at=following,
            last_fire_at=due[-1],
        )
        if moved and following is not None:
            heapq.heappush(self._heap, (following, schedule.id))
        elif not moved:
            self.invalidate()
        return created


def _grace(schedule: ScheduleRecord) -> timedelta:
    return timedelta(seconds=schedule.misfire_grace)
