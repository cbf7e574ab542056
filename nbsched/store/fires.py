"""What event schedules fired (``schedule_fires``): one row per schedule and event key, the
upstream run's id or a file's hash, written with the run it made (``SqlStore.create_run``)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import exists, select
from sqlalchemy.orm import Session, sessionmaker

from nbsched.clock import Clock
from nbsched.states import RunState
from nbsched.store.models import FireRow, RunRow
from nbsched.store.retry import retried

_CHUNK = 500  # keys per IN (...): well inside every database's limit on parameters


class FireStore:
    """Mixin of ``SqlStore``: needs ``_session``, ``_write`` and ``clock``."""

    _session: sessionmaker[Session]
    _write: sessionmaker[Session]
    clock: Clock

    @retried
    def unfired(self, schedule_id: int, keys: Iterable[str]) -> set[str]:
        """Those of ``keys`` the schedule has not fired (nor recorded as seen)."""
        wanted = list(dict.fromkeys(keys))
        known: set[str] = set()
        with self._session() as s:
            for i in range(0, len(wanted), _CHUNK):
                chunk = wanted[i : i + _CHUNK]
                known.update(
                    s.scalars(select(FireRow.key).where(FireRow.schedule_id == schedule_id, FireRow.key.in_(chunk)))
                )
        return set(wanted) - known

    @retried
    def fired_run(self, schedule_id: int, key: str) -> str | None:
        """The run the schedule made for the event ``key``, if any."""
        with self._session() as s:
            return s.scalar(select(FireRow.run_id).where(FireRow.schedule_id == schedule_id, FireRow.key == key))

    @retried
    def ended_runs_unfired(
        self, schedule_id: int, pipeline: str, states: Iterable[RunState], *, since: datetime, limit: int
    ) -> list[str]:
        """Ids of ``pipeline``'s runs that ended in ``states`` at ``since`` or later and that the
        schedule has not fired for yet, the first to end first."""
        fired = exists().where(FireRow.schedule_id == schedule_id, FireRow.key == RunRow.id)
        q = (
            select(RunRow.id)
            .where(RunRow.pipeline == pipeline, RunRow.state.in_(list(states)), RunRow.ended_at >= since, ~fired)
            .order_by(RunRow.ended_at, RunRow.id)
            .limit(limit)
        )
        with self._session() as s:
            return list(s.scalars(q))
