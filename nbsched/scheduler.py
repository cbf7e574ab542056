"""The scheduler turns schedules into runs.

It keeps the enabled schedules in a heap ordered by next fire time and, when asked at
``now``, fires the ones due: one run per fire time, keyed UNIQUE (schedule, logical
date) in the store so that schedulers racing on one database create it once. The clock
is a parameter: ``fire_due(now)``; the daemon supplies the real one.

Misfires (fire times that passed while nothing ran): with ``catchup`` every missed fire
gets a run, oldest first (Airflow's catchup); without it only the latest does, and only
if it is at most ``misfire_grace`` late (APScheduler's coalesce + misfire_grace_time).

Event schedules (``after:``, ``files:``, see ``events.py``) have no fire times in the store:
each scheduler looks for their events on its own timer (every second for ``after``, every
``poll`` for ``files``, sooner when a file will have settled), and the store's UNIQUE
(schedule, event key) makes one run of each event, however many schedulers look.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from nbsched.errors import NbschedError, NotFound
from nbsched.events import (
    AFTER_LOOK,
    MAX_FILES,
    AfterTrigger,
    EventTrigger,
    FileSeen,
    FilesTrigger,
    Fire,
    event_from_fields,
    is_event,
)
from nbsched.notices import Notice
from nbsched.states import RunTrigger
from nbsched.store import ScheduleRecord, SqlStore
from nbsched.timefmt import elapsed
from nbsched.triggers import Trigger, count_fires, latest_fire, trigger_from_fields

log = logging.getLogger("nbsched.scheduler")

CATCHUP_BATCH = 500  # runs one schedule creates per pass; a long backlog is worked off in batches
AFTER_LOOKBACK = timedelta(minutes=10)  # how far back each look for ended runs reaches (commits come late)
FAILED_LOOK = timedelta(minutes=1)  # an event schedule whose run could not be made looks again after this
_FIRST = datetime.min.replace(tzinfo=timezone.utc)
_TICK = timedelta(microseconds=1)

# (schedule, logical_date, what fired it[, the event]) -> run id, or None when that run already exists
CreateRun = Callable[..., "str | None"]
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
        self._events: dict[int, tuple[ScheduleRecord, EventTrigger]] = {}  # enabled event schedules
        self._look: dict[int, datetime] = {}  # when this scheduler looks for each one's events next
        self._after_since: dict[int, datetime] = {}  # from which end time an after schedule looks
        self._said: dict[int, set[str]] = {}  # what each files schedule's looks logged: said once

    def invalidate(self) -> None:
        """A schedule changed in this process: reload before the next decision."""
        self._seen_counter = None

    def refresh(self) -> None:
        """Reload the heap when any schedule changed (in this process or another)."""
        counter = self.store.counter()
        if counter == self._seen_counter:
            return
        self._seen_counter = counter
        schedules = self.store.list_schedules(enabled_only=True)
        self._heap = [(s.next_fire_at, s.id) for s in schedules if s.next_fire_at is not None]
        heapq.heapify(self._heap)
        self._events = {}
        for s in schedules:
            if is_event(s.trigger):
                try:
                    self._events[s.id] = (s, event_from_fields(s.trigger))
                except NbschedError as exc:  # written by another version of nbsched
                    log.error("schedule %d (%s): %s", s.id, s.pipeline, exc)
        self._look = {sid: self._look.get(sid, _FIRST) for sid in self._events}

    def next_fire_at(self) -> datetime | None:
        """The next time this scheduler has something to do: a fire time, or a look for events."""
        times = ([self._heap[0][0]] if self._heap else []) + list(self._look.values())
        return min(times) if times else None

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
        for schedule_id in [sid for sid, at in self._look.items() if at <= now]:
            created.extend(self._look_for_events(schedule_id, now))
        return created

    def _look_for_events(self, schedule_id: int, now: datetime) -> list[str]:
        schedule, trigger = self._events[schedule_id]
        if isinstance(trigger, AfterTrigger):
            fires, more = self._ended_runs(schedule, trigger, now)
            look = now + timedelta(seconds=AFTER_LOOK)
        else:
            fires, more, look = self._new_files(schedule, trigger, now)
        created, failed = [], False
        for fire in fires:
            kind = RunTrigger.AFTER if isinstance(trigger, AfterTrigger) else RunTrigger.FILE
            try:
                run_id = self.create_run(schedule, fire.logical_date, kind, fire)
            except NbschedError as exc:
                log.error(
                    "schedule %d (%s): cannot create the run for %s: %s",
                    schedule.id,
                    schedule.pipeline,
                    _event(fire),
                    exc,
                )
                failed = True
                break
            if run_id is not None:
                created.append(run_id)
                log.info(
                    "schedule %d fired: pipeline %s, for %s, run %s",
                    schedule.id,
                    schedule.pipeline,
                    _event(fire),
                    run_id,
                )
        if created:
            self.store.update_schedule(schedule.id, user_change=False, last_fire_at=now)
        if failed:
            look = now + FAILED_LOOK
        elif more:
            look = now  # a backlog: the next pass goes on with it
        elif isinstance(trigger, AfterTrigger):
            self._after_since[schedule.id] = max(schedule.created_at, now - AFTER_LOOKBACK)
        self._look[schedule_id] = look
        return created

    def _ended_runs(self, schedule: ScheduleRecord, trigger: AfterTrigger, now: datetime) -> tuple[list[Fire], bool]:
        """The upstream runs that ended and have no run of this schedule yet; whether there are more."""
        since = self._after_since.get(schedule.id, schedule.created_at)
        ids = self.store.ended_runs_unfired(
            schedule.id, trigger.pipeline, trigger.states, since=since, limit=CATCHUP_BATCH
        )
        runs = {r.id: r for r in self.store.list_runs(ids=ids, limit=None)} if ids else {}
        fires = [
            Fire(
                key=run.id,
                logical_date=run.logical_date,
                fired_by={
                    "run": {
                        "run_id": run.id,
                        "pipeline": run.pipeline,
                        "state": run.state.value,
                        "outputs": {name: dict(task.outputs) for name, task in run.tasks.items() if task.outputs},
                    }
                },
            )
            for run in (runs[i] for i in ids if i in runs)
        ]
        return fires, len(ids) == CATCHUP_BATCH

    def _new_files(
        self, schedule: ScheduleRecord, trigger: FilesTrigger, now: datetime
    ) -> tuple[list[Fire], bool, datetime]:
        """The files new or changed and settled; whether there are more; when to look next
        (after ``poll``, or sooner when a file still being written will have settled)."""
        look = now + timedelta(seconds=trigger.poll)
        seen = scan_files(trigger, self._said.setdefault(schedule.id, set()))
        fresh = self.store.unfired(schedule.id, [f.key for f in seen]) if seen else set()
        fires: list[Fire] = []
        for found in seen:
            if found.key not in fresh:
                continue
            settled = trigger.settled(found)
            if settled > now:
                look = min(look, settled)
                continue
            if len(fires) == CATCHUP_BATCH:
                return fires, True, look
            fires.append(Fire(key=found.key, logical_date=now, fired_by={"file": found.to_json()}))
        return fires, False, look

    def _fire(self, schedule: ScheduleRecord, now: datetime) -> list[str]:
        notices: list[Notice] = []
        trigger = schedule_trigger(schedule)
        at = schedule.next_fire_at
        assert at is not None
        if schedule.catchup:
            due = [at]
            following = trigger.next_after(at)
            while following is not None and following <= now and len(due) < CATCHUP_BATCH:
                due.append(following)
                following = trigger.next_after(following)
            fire = due
            kind = RunTrigger.CATCHUP if len(due) > 1 or now - at > _grace(schedule) else RunTrigger.SCHEDULE
            last = due[-1]
        else:  # straight to the latest fire, however many lie between: one decision, one line
            last = latest_fire(trigger, at, now)
            following = trigger.next_after(last)
            fire = [last] if now - last <= _grace(schedule) else []
            kind = RunTrigger.SCHEDULE
            if last > at or not fire:
                notices = self._skipped(schedule, trigger, at, last, ran=bool(fire), now=now)
        created, unmade = [], []
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
                unmade.append((logical_date, str(exc)))
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
        if unmade and self.missed is not None:  # a fire without its run is missed too: say so, and why
            notices += self.missed(
                schedule,
                {
                    "schedule_id": schedule.id,
                    "missed": len(unmade),
                    "up_to": unmade[-1][0].isoformat(),
                    "error": unmade[-1][1],
                },
            )
        # Runs first, then the schedule: a crash in between re-fires the same logical dates,
        # which the store's UNIQUE key turns into no-ops instead of lost fires.
        moved = self.store.update_schedule(
            schedule.id,
            user_change=False,
            expect_next_fire_at=at,
            notices=notices,
            next_fire_at=following,
            last_fire_at=last,
        )
        if moved and following is not None:
            heapq.heappush(self._heap, (following, schedule.id))
        elif not moved:
            self.invalidate()
        return created

    def _skipped(
        self, schedule: ScheduleRecord, trigger: Trigger, first: datetime, last: datetime, *, ran: bool, now: datetime
    ) -> list[Notice]:
        """One line, and the schedule_missed notifications, for the fires from ``first`` to
        ``last`` that get no run (``last`` itself runs when ``ran``)."""
        up_to = latest_fire(trigger, first, last - _TICK) if ran else last
        counted = count_fires(trigger, first, up_to)
        missed = f"{counted:,}" if counted is not None else "more than 10,000"
        late = elapsed((now - up_to).total_seconds())
        since = f"from {first.isoformat()} " if up_to > first else ""
        log.warning(
            "schedule %d (%s): skipped %s missed fire(s) %sup to %s (%s late, misfire grace %gs)%s",
            schedule.id,
            schedule.pipeline,
            missed,
            since,
            up_to.isoformat(),
            late,
            schedule.misfire_grace,
            f"; the latest, {last.isoformat()}, runs" if ran else "",
        )
        if self.missed is None:
            return []
        detail = {
            "schedule_id": schedule.id,
            "missed": counted if counted is not None else missed,
            "up_to": up_to.isoformat(),
            "late": late,
            "misfire_grace": schedule.misfire_grace,
        }
        return self.missed(schedule, detail)


def scan_files(trigger: FilesTrigger, said: set[str] | None = None) -> list[FileSeen]:
    """The regular files matching now, oldest change first; each one's real path checked
    inside the folder now (where it is used), not when the schedule was made. ``said``: what
    this scheduler's earlier looks logged, so each problem is logged once until it changes
    (a symlink out polled every second logged a line a second)."""
    said = set() if said is None else said
    now_said: set[str] = set()

    def warn(key: str, message: str, *args: Any) -> None:
        now_said.add(key)
        if key not in said:
            log.warning(message, *args)

    try:
        return _scan(trigger, warn)
    finally:
        said.clear()
        said.update(now_said)


def _scan(trigger: FilesTrigger, warn: Callable[..., None]) -> list[FileSeen]:
    folder = Path(trigger.folder)
    try:
        root = folder.resolve(strict=True)
        if trigger.root is not None and not root.is_relative_to(Path(trigger.root).resolve()):
            warn(
                f"root:{root}",
                "files %s: the folder %s leads out of %s; nothing fires",
                trigger.pattern,
                folder,
                trigger.root,
            )
            return []
        matches = list(itertools.islice(folder.glob(trigger.pattern), MAX_FILES + 1))
    except (OSError, ValueError) as exc:  # the folder went away, or cannot be read
        warn(f"look:{exc}", "files %s in %s: cannot look: %s", trigger.pattern, trigger.folder, exc)
        return []
    if len(matches) > MAX_FILES:
        warn(
            "many",
            "files %s in %s: more than %d files match; looking at %d",
            trigger.pattern,
            folder,
            MAX_FILES,
            MAX_FILES,
        )
        matches = matches[:MAX_FILES]
    seen = []
    for path in matches:
        try:
            real = path.resolve(strict=True)
            if not real.is_relative_to(root):
                link = path.lstat()
                warn(
                    f"out:{path}:{link.st_mtime_ns}:{real}",
                    "files %s: %s leads out of %s; it does not fire",
                    trigger.pattern,
                    path,
                    root,
                )
                continue
            stat = path.stat()
        except OSError:  # gone meanwhile, or a broken link
            continue
        if path.is_file():
            seen.append(
                FileSeen(path=path.relative_to(folder).as_posix(), size=stat.st_size, mtime_ns=stat.st_mtime_ns)
            )
    return sorted(seen, key=lambda f: (f.mtime_ns, f.path))


def _event(fire: Fire) -> str:
    if "run" in fire.fired_by:
        return f"run {fire.fired_by['run']['run_id']} of {fire.fired_by['run']['pipeline']}"
    return f"file {fire.fired_by['file']['path']}"


def _grace(schedule: ScheduleRecord) -> timedelta:
    return timedelta(seconds=schedule.misfire_grace)
