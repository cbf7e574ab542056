"""The instances of mapped tasks (``task_runs`` rows named ``train[3]``): a for_each task's,
made when its list is known and made again when a repair or a retry runs the task with a list
that may have changed; and a mapped task's instances that a partial run borrows."""

from __future__ import annotations

from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session, sessionmaker

from nbsched.clock import Clock
from nbsched.fanout import instance_name
from nbsched.states import TaskState
from nbsched.store.locks import serialize
from nbsched.store.models import RunRow, TaskRunRow
from nbsched.store.retry import retried


def removed_error(count: int) -> str:
    return f"no longer in its for_each list ({count:,} item{'' if count == 1 else 's'} now)"


class MappingStore:
    """Mixin of ``SqlStore``: needs ``_session``, ``_write`` and ``clock``."""

    _session: sessionmaker[Session]
    _write: sessionmaker[Session]
    clock: Clock

    @retried
    def expand_task(
        self, run_id: str, task: str, items: list[dict[str, Any]], *, max_tries: int, pool: str | None
    ) -> bool:
        """Make the instances of a waiting for_each task from its list (``items``: each one's
        values), in one transaction, as Airflow expands a mapped task: the first time, its one row
        is replaced by ``task[0]`` ...; again (a repair or retry put each of its instances back to
        pending), instance i takes item i's values (a removed one comes back, its tries counting
        on), those missing are made and those past the list's end are removed, their tries kept.
        The instances keep the overrides the repair gave the task. False when the task no longer
        waits (another runner expanded it, and started its instances)."""
        now = self.clock.now()
        with self._write() as s, s.begin():
            # one expansion of a task at a time: a second, waiting on the first's row locks, would
            # not see the rows the first made (PostgreSQL reads them as of its statement's start)
            serialize(s, f"expand:{run_id}:{task}")
            q = select(TaskRunRow).where(TaskRunRow.run_id == run_id).with_for_update()
            rows = [*s.scalars(q.where(TaskRunRow.task == task)), *s.scalars(q.where(TaskRunRow.mapped_from == task))]
            waiting = [r for r in rows if r.state is not TaskState.REMOVED]
            if not waiting or any(r.state is not TaskState.PENDING for r in waiting):
                return False
            position, params = rows[0].position, waiting[0].params
            existing = {r.map_index: r for r in rows if r.mapped_from is not None}
            if not existing:  # its first expansion: its own row makes way for its instances
                s.delete(rows[0])
                s.flush()
            for i, values in enumerate(items):
                row = existing.get(i)
                if row is None:
                    s.add(
                        TaskRunRow(
                            run_id=run_id,
                            task=instance_name(task, i),
                            mapped_from=task,
                            map_index=i,
                            instance_params=dict(values),
                            position=position,
                            state=TaskState.PENDING,
                            try_number=0,
                            max_tries=max_tries,
                            outputs={},
                            params=params,
                            pool=pool,
                            updated_at=now,
                        )
                    )
                    continue
                if row.state is TaskState.REMOVED:
                    row.state, row.error, row.params = TaskState.PENDING, None, params
                    row.max_tries, row.updated_at = row.try_number + max_tries, now
                if row.instance_params != values:
                    row.instance_params, row.updated_at = dict(values), now
            for i, row in existing.items():
                if i is not None and i >= len(items) and row.state is TaskState.PENDING:
                    row.state, row.error, row.updated_at = TaskState.REMOVED, removed_error(len(items)), now
                    row.max_tries, row.ended_at = row.try_number, row.ended_at or now  # no try to come
            return True

    @retried
    def latest_instances(
        self, pipeline: str, task: str
    ) -> tuple[str, list[tuple[int, dict[str, Any], dict[str, Any]]]] | None:
        """The run of ``pipeline`` in which every instance of the mapped ``task`` last succeeded,
        and each instance's ``(map_index, instance_params, outputs)`` there, in order (those a
        repair removed from its list are not of it)."""
        failed = func.sum(case((TaskRunRow.state == TaskState.SUCCESS, 0), else_=1))
        of_task = (TaskRunRow.mapped_from == task, TaskRunRow.state != TaskState.REMOVED)
        q = (
            select(TaskRunRow.run_id)
            .join(RunRow, RunRow.id == TaskRunRow.run_id)
            .where(RunRow.pipeline == pipeline, *of_task)
            .group_by(TaskRunRow.run_id)
            .having(failed == 0)
            .order_by(func.max(TaskRunRow.ended_at).desc(), TaskRunRow.run_id.desc())
            .limit(1)
        )
        with self._session() as s:
            run_id = s.scalar(q)
            if run_id is None:
                return None
            rows = s.execute(
                select(TaskRunRow.map_index, TaskRunRow.instance_params, TaskRunRow.outputs)
                .where(TaskRunRow.run_id == run_id, *of_task)
                .order_by(TaskRunRow.map_index)
            ).all()
            return run_id, [(int(i or 0), dict(p or {}), dict(o or {})) for i, p, o in rows]
