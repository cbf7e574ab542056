"""Pools of slots (``pools``): set, listed with their use, removed. The claim that takes a slot
is ``SqlStore.claim_tasks``."""

from __future__ import annotations

from sqlalchemy import Select, delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from nbsched.clock import Clock
from nbsched.errors import Conflict, NotFound
from nbsched.pool_use import unfinished
from nbsched.states import TaskState
from nbsched.store.locks import changed
from nbsched.store.models import PoolRow, TaskRunRow
from nbsched.store.records import PoolRecord
from nbsched.store.retry import retried

_WAITING = (TaskState.PENDING, TaskState.QUEUED, TaskState.UP_FOR_RETRY)  # tries still to come


class PoolStore:
    """Mixin of ``SqlStore``: needs ``_session``, ``_write`` and ``clock``."""

    _session: sessionmaker[Session]
    _write: sessionmaker[Session]
    clock: Clock

    @retried
    def set_pool(self, name: str, slots: int) -> bool:
        """Create the pool, or change its slots; True when it is new. Fewer slots than running
        tries take effect as those tries end (none is stopped)."""
        now = self.clock.now()
        with self._write() as s, s.begin():
            row = s.get(PoolRow, name, with_for_update=True)
            if row is None:
                s.add(PoolRow(name=name, slots=slots, created_at=now, updated_at=now))
                return True
            row.slots, row.updated_at = slots, now
            return False

    @retried
    def list_pools(self, names: list[str] | None = None) -> list[PoolRecord]:
        with self._session() as s:
            q = select(PoolRow).order_by(PoolRow.name)
            if names is not None:
                q = q.where(PoolRow.name.in_(names))
            pools = list(s.scalars(q))
            counts = select(TaskRunRow.pool, TaskRunRow.state, func.count()).where(
                TaskRunRow.pool.in_([p.name for p in pools]),
                TaskRunRow.state.in_([TaskState.RUNNING, TaskState.QUEUED]),
            )
            used: dict[tuple[str | None, TaskState], int] = {
                (pool, state): n for pool, state, n in s.execute(counts.group_by(TaskRunRow.pool, TaskRunRow.state))
            }
            return [
                PoolRecord(
                    name=p.name,
                    slots=p.slots,
                    running=used.get((p.name, TaskState.RUNNING), 0),
                    queued=used.get((p.name, TaskState.QUEUED), 0),
                )
                for p in pools
            ]

    @retried
    def pool_use(self, name: str) -> dict[str, int]:
        """The unfinished task rows (waiting or running) that name the pool, counted by run."""
        with self._session() as s:
            return _by_run(s, name)

    @retried
    def delete_pool(self, name: str, *, force: bool = False) -> int:
        """Remove the pool; refused while unfinished tasks name it, unless ``force``. Returns how
        many waiting tasks named it: each fails at its next claim (``ClaimedTask.pool_gone``),
        through the runner, with its notifications, rather than wait for a slot forever."""
        with self._write() as s, s.begin():
            if s.get(PoolRow, name, with_for_update=True) is None:
                raise NotFound(f"pool '{name}' not found")
            using = _by_run(s, name)
            if using and not force:
                raise Conflict(f"pool '{name}': {unfinished(using)} use it; remove it with --force to fail them")
            changed(s, delete(PoolRow).where(PoolRow.name == name))
            return sum(using.values())


def _by_run(s: Session, name: str) -> dict[str, int]:
    return {str(run_id): int(n) for run_id, n in s.execute(_users(name))}


def _users(name: str) -> Select[str, int]:
    return (
        select(TaskRunRow.run_id, func.count())
        .where(TaskRunRow.pool == name, TaskRunRow.state.in_([*_WAITING, TaskState.RUNNING]))
        .group_by(TaskRunRow.run_id)
        .order_by(TaskRunRow.run_id)
    )
