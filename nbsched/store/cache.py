"""A runner's copy of the task rows of the runs it moves forward.

A runner looks at its runs after every try that ends; reading a run of n tasks whole at each
look would cost n rows n times. A look here reads the versions of the rows in the states that
move by themselves (queued, running, up for retry: the tries), re-reads in full only the rows
that changed or left those states, and checks the copy against the database's count of rows
in each state; a count that differs (a row moved where no look saw it, e.g. a waiting task
skipped by another runner) reads the run whole again. So a look costs what changed, plus one
small aggregate query, not the size of the run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from nbsched.states import RunState, TaskState
from nbsched.store.records import RunRecord, TaskRunRecord
from nbsched.store.sql import SqlStore

# the states a task row leaves without the runner looking at it (a try claimed, ended, retried)
MOVING = (TaskState.QUEUED, TaskState.RUNNING, TaskState.UP_FOR_RETRY)


class Look(NamedTuple):
    run: RunRecord  # with every task as it is now
    changed: set[str] | None  # the rows read anew by this look; None: the whole run, or the run itself moved


@dataclass
class _Copy:
    """One run's rows, with their count in each state and the names of those moving, kept up to
    date row by row (a look compares them with the database's without going over every row)."""

    rows: dict[str, TaskRunRecord]
    run_state: RunState  # the run's, at the last look: a run that moved (started, repaired) is new to look at
    touched: set[str] = field(default_factory=set)  # written by this runner since: read them again
    counts: Counter[TaskState] = field(init=False)
    moving: set[str] = field(init=False)

    def __post_init__(self) -> None:
        self.counts = Counter(t.state for t in self.rows.values())
        self.moving = {name for name, t in self.rows.items() if t.state in MOVING}

    def put(self, name: str, record: TaskRunRecord) -> None:
        if (old := self.rows.get(name)) is not None:
            self.counts[old.state] -= 1
        self.rows[name] = record
        self.counts[record.state] += 1
        if record.state in MOVING:
            self.moving.add(name)
        else:
            self.moving.discard(name)

    def drop(self, name: str) -> None:
        if (old := self.rows.pop(name, None)) is not None:
            self.counts[old.state] -= 1
            self.moving.discard(name)


class RunCache:
    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self._copies: dict[str, _Copy] = {}

    def fresh(self, runs: Sequence[RunRecord]) -> list[Look]:
        """``runs`` (their tasks, if any, are ignored) with every task as it is now. Forgets the
        runs not among them, so the copy holds only the runs in play."""
        ids = [r.id for r in runs]
        moving = self.store.task_versions(ids, MOVING) if self._copies else {}
        copies: dict[str, _Copy | None] = {}
        changes: dict[str, set[str] | None] = {}
        for run in runs:
            copy = copies[run.id] = self._copies.get(run.id)
            if copy is None:
                continue
            now = moving[run.id]
            changed = {name for name, v in now.items() if name not in copy.rows or copy.rows[name].version != v}
            changed |= (copy.moving - now.keys()) | copy.touched
            if changed:
                self._read_again(run.id, copy, changed)
            changes[run.id] = changed
        counts = self.store.task_counts([run_id for run_id, copy in copies.items() if copy is not None])
        looks = []
        for run in runs:
            copy = copies[run.id]
            if (
                copy is None or copy.counts != counts[run.id]
            ):  # a first look, or a row moved unseen (a count at 0 equals none)
                copy = copies[run.id] = _Copy(dict(self.store.get_run(run.id).tasks), run.state)
                changes[run.id] = None
            elif copy.run_state is not run.state:
                changes[run.id] = None
            copy.run_state = run.state
            looks.append(Look(replace(run, tasks=dict(copy.rows)), changes[run.id]))
        self._copies = {run_id: copy for run_id, copy in copies.items() if copy is not None}
        return looks

    def touch(self, run_id: str, name: str) -> None:
        """This runner wrote ``name``'s row: the next look reads it again."""
        if (copy := self._copies.get(run_id)) is not None:
            copy.touched.add(name)

    def _read_again(self, run_id: str, copy: _Copy, names: Collection[str]) -> None:
        read = self.store.get_run(run_id, tasks=names).tasks  # a mapped task's name reads its instances
        for name in names:
            if name not in read:
                copy.drop(name)  # gone: a for_each task replaced by its instances
        for name, record in read.items():
            copy.put(name, record)
        copy.touched.clear()
