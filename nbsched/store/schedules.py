"""Schedules in the store. A ``schedules`` counter bumps on every change a user makes, so
schedulers in other processes notice without re-reading every schedule."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from nbsched.clock import Clock
from nbsched.errors import NotFound
from nbsched.notices import Notice
from nbsched.states import ScheduleOrigin
from nbsched.store.locks import changed, serialize
from nbsched.store.models import CounterRow, FireRow, ScheduleRow
from nbsched.store.records import ScheduleRecord
from nbsched.store.retry import retried

SCHEDULES = "schedules"
_SAME = ("trigger", "params", "catchup", "misfire_grace", "max_active_runs")  # what makes two spec schedules one


class ScheduleStore:
    """Mixin of ``SqlStore``: needs ``_session``, ``_write`` and ``clock``."""

    _session: sessionmaker[Session]
    _write: sessionmaker[Session]
    clock: Clock
    _add_notices: Callable[..., None]  # OutboxStore's

    @retried
    def add_schedule(
        self,
        *,
        pipeline: str,
        trigger: Mapping[str, Any],
        params: Mapping[str, Any],
        catchup: bool,
        misfire_grace: float,
        max_active_runs: int,
        origin: ScheduleOrigin,
        next_fire_at: datetime | None,
        enabled: bool = True,
        seen: Iterable[str] = (),
    ) -> int:
        """A new schedule; ``seen``: the events it is not to fire (a files schedule's files already
        there), written in the same transaction, so no daemon ever sees it without them."""
        now = self.clock.now()
        with self._write() as s, s.begin():
            row = ScheduleRow(
                pipeline=pipeline,
                trigger=dict(trigger),
                params=dict(params),
                enabled=enabled,
                catchup=catchup,
                misfire_grace=misfire_grace,
                max_active_runs=max_active_runs,
                origin=origin,
                next_fire_at=next_fire_at,
                created_at=now,
                updated_at=now,
            )
            s.add(row)
            _bump(s)
            s.flush()
            _add_seen(s, row.id, seen, now)
            return row.id

    @retried
    def get_schedule(self, schedule_id: int) -> ScheduleRecord:
        with self._session() as s:
            row = s.get(ScheduleRow, schedule_id)
            if row is None:
                raise NotFound(f"schedule {schedule_id} not found")
            return _record(row, _last_runs(s, [schedule_id]).get(schedule_id))

    @retried
    def list_schedules(self, *, pipeline: str | None = None, enabled_only: bool = False) -> list[ScheduleRecord]:
        with self._session() as s:
            q = select(ScheduleRow).order_by(ScheduleRow.id)
            if pipeline:
                q = q.where(ScheduleRow.pipeline == pipeline)
            if enabled_only:
                q = q.where(ScheduleRow.enabled.is_(True))
            rows = list(s.scalars(q))
            last = _last_runs(s, None if not pipeline else [r.id for r in rows])
            return [_record(r, last.get(r.id)) for r in rows]

    @retried
    def update_schedule(
        self,
        schedule_id: int,
        *,
        user_change: bool = True,
        expect_next_fire_at: Any = ...,
        notices: Iterable[Notice] = (),
        seen: Iterable[str] | None = None,
        **fields: Any,
    ) -> bool:
        """Change a schedule. A scheduler moving ``next_fire_at`` passes the value it read, so two
        schedulers cannot both advance it; only changes a user makes wake other schedulers.
        ``notices`` (the fires it skipped) are written with the change; ``seen`` (a new files
        trigger's files already there) replaces what the schedule fired and saw."""
        q = update(ScheduleRow).where(ScheduleRow.id == schedule_id)
        if expect_next_fire_at is not ...:
            q = q.where(
                ScheduleRow.next_fire_at == expect_next_fire_at
                if expect_next_fire_at is not None
                else ScheduleRow.next_fire_at.is_(None)
            )
        with self._write() as s, s.begin():
            updated = changed(s, q.values(updated_at=self.clock.now(), **fields)) == 1
            if updated and user_change:
                _bump(s)
            if updated and seen is not None:
                s.execute(delete(FireRow).where(FireRow.schedule_id == schedule_id))
                _add_seen(s, schedule_id, seen, self.clock.now())
            if updated and notices:
                pipeline = s.scalar(select(ScheduleRow.pipeline).where(ScheduleRow.id == schedule_id))
                self._add_notices(s, None, notices, pipeline)
            return updated

    @retried
    def delete_schedule(self, schedule_id: int) -> bool:
        with self._write() as s, s.begin():
            gone = changed(s, delete(ScheduleRow).where(ScheduleRow.id == schedule_id)) == 1
            if gone:
                _bump(s)
            return gone

    @retried
    def sync_spec_schedules(self, pipeline: str, wanted: Iterable[Mapping[str, Any]]) -> list[int]:
        """Make the pipeline's spec-owned schedules equal ``wanted`` (rows as dicts, with ``seen``
        as in ``add_schedule``). Unchanged ones keep their id, fire times and what they fired;
        schedules added from the CLI are left alone."""
        now = self.clock.now()
        with self._write() as s, s.begin():
            existing = list(
                s.scalars(
                    select(ScheduleRow).where(
                        ScheduleRow.pipeline == pipeline, ScheduleRow.origin == ScheduleOrigin.SPEC
                    )
                )
            )
            ids = []
            for wanted_fields in wanted:
                fields = {k: v for k, v in wanted_fields.items() if k != "seen"}
                match = next((r for r in existing if all(getattr(r, k) == fields[k] for k in _SAME)), None)
                if match is not None:
                    existing.remove(match)
                    ids.append(match.id)
                    continue
                row = ScheduleRow(
                    pipeline=pipeline, origin=ScheduleOrigin.SPEC, created_at=now, updated_at=now, **fields
                )
                s.add(row)
                s.flush()
                _add_seen(s, row.id, wanted_fields.get("seen", ()), now)
                ids.append(row.id)
            for stale in existing:
                s.delete(stale)
            _bump(s)
            return ids

    @retried
    def counter(self, name: str = SCHEDULES) -> int:
        with self._session() as s:
            return s.scalar(select(CounterRow.value).where(CounterRow.name == name)) or 0


def _add_seen(s: Session, schedule_id: int, keys: Iterable[str], now: datetime) -> None:
    s.add_all(FireRow(schedule_id=schedule_id, key=key, run_id=None, created_at=now) for key in set(keys))


def _bump(s: Session, name: str = SCHEDULES) -> None:
    serialize(s, f"counter:{name}")  # two first bumps must not both insert
    if not changed(s, update(CounterRow).where(CounterRow.name == name).values(value=CounterRow.value + 1)):
        s.add(CounterRow(name=name, value=1))


def _last_runs(s: Session, ids: list[int] | None) -> dict[int, str]:
    """The newest run each event schedule of ``ids`` (None: of all) fired."""
    newest = select(func.max(FireRow.id)).where(FireRow.run_id.is_not(None)).group_by(FireRow.schedule_id)
    if ids is not None:
        newest = newest.where(FireRow.schedule_id.in_(ids))
    q = select(FireRow.schedule_id, FireRow.run_id).where(FireRow.id.in_(newest))
    return {schedule_id: run_id for schedule_id, run_id in s.execute(q) if run_id is not None}


def _record(r: ScheduleRow, last_run_id: str | None = None) -> ScheduleRecord:
    return ScheduleRecord(
        id=r.id,
        pipeline=r.pipeline,
        trigger=r.trigger or {},
        params=r.params or {},
        enabled=r.enabled,
        catchup=r.catchup,
        misfire_grace=r.misfire_grace,
        max_active_runs=r.max_active_runs,
        origin=r.origin,
        next_fire_at=r.next_fire_at,
        last_fire_at=r.last_fire_at,
        created_at=r.created_at,
        updated_at=r.updated_at,
        last_run_id=last_run_id,
    )
