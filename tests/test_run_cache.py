"""The runner's copy of its runs' task rows (store/cache.py), on SQLite and PostgreSQL: whatever
another runner writes between two looks, a look sees the run exactly as a whole read does, and
a look after a try ends reads that try's row again, not the run."""

from __future__ import annotations

import random
from datetime import datetime, timezone

import pytest

from nbsched.states import RunTrigger, TaskState
from nbsched.store import SqlStore
from nbsched.store.cache import RunCache


@pytest.fixture
def store(db_url):
    s = SqlStore(db_url)
    yield s
    s.close()


def _run(store: SqlStore, n: int) -> str:
    run_id = store.create_run(
        pipeline="p",
        version=1,
        params={},
        trigger=RunTrigger.MANUAL,
        logical_date=datetime(2026, 12, 7, tzinfo=timezone.utc),
        tasks={f"t{i}": 2 for i in range(n)},
    )
    assert run_id is not None and store.start_run(run_id)
    return run_id


def _header(store: SqlStore, run_id: str):
    return store.list_runs(ids=[run_id], limit=None, tasks=False)[0]


def test_a_look_after_one_try_ends_reads_that_row_again_not_the_run(store):
    run_id = _run(store, 40)
    cache = RunCache(store)
    (first,) = cache.fresh([_header(store, run_id)])
    assert first.changed is None and len(first.run.tasks) == 40  # a first look reads the run whole

    store.set_task_state(run_id, "t3", TaskState.QUEUED, expect=[TaskState.PENDING], try_number=1)
    (look,) = cache.fresh([_header(store, run_id)])
    assert look.changed == {"t3"} and look.run.tasks["t3"].state is TaskState.QUEUED
    (claim,) = store.claim_tasks("other-runner", 1)
    store.finish_task(run_id, "t3", owner="other-runner", try_number=claim.try_number, state=TaskState.SUCCESS)
    (look,) = cache.fresh([_header(store, run_id)])
    assert look.changed == {"t3"}
    assert look.run.tasks == store.get_run(run_id).tasks

    # a waiting task another runner decided (it never passed through the states a look reads)
    store.set_task_state(run_id, "t9", TaskState.SKIPPED, expect=[TaskState.PENDING])
    (look,) = cache.fresh([_header(store, run_id)])
    assert look.run.tasks["t9"].state is TaskState.SKIPPED  # seen by the count of rows in each state
    assert look.run.tasks == store.get_run(run_id).tasks

    # this runner's own write: read again by name, no whole read
    cache.touch(run_id, "t10")
    store.set_task_state(run_id, "t10", TaskState.UPSTREAM_FAILED, expect=[TaskState.PENDING])
    (look,) = cache.fresh([_header(store, run_id)])
    assert look.changed == {"t10"} and look.run.tasks == store.get_run(run_id).tasks


def test_whatever_happens_between_looks_a_look_equals_a_whole_read(store):
    """Random writes of other runners (claims, ends, retries, skips, fan-out, releases) between
    looks of one runner: every look is exactly what a whole read returns."""
    rnd = random.Random(16)
    run_id = _run(store, 30)
    cache = RunCache(store)
    incremental = 0
    for _ in range(120):
        for _ in range(rnd.randint(0, 3)):
            tasks = store.get_run(run_id).tasks
            name, t = rnd.choice(list(tasks.items()))
            if t.state is TaskState.PENDING:
                choice = rnd.choice(["queue", "skip", "expand"] if t.mapped_from is None else ["queue", "skip"])
                if choice == "queue":
                    store.set_task_state(run_id, name, TaskState.QUEUED, expect=[t.state], try_number=t.try_number + 1)
                elif choice == "skip":
                    store.set_task_state(run_id, name, TaskState.SKIPPED, expect=[t.state])
                else:
                    store.expand_task(
                        run_id, name, [{"i": i} for i in range(rnd.randint(1, 3))], max_tries=2, pool=None
                    )
            elif t.state in (TaskState.QUEUED, TaskState.UP_FOR_RETRY):
                if t.state is TaskState.UP_FOR_RETRY:
                    store.set_task_state(run_id, name, TaskState.QUEUED, expect=[t.state], try_number=t.try_number + 1)
                store.claim_tasks("other-runner", 5, run_ids=[run_id])
            elif t.state is TaskState.RUNNING:
                if rnd.random() < 0.2:
                    store.release_claim(run_id, name, owner="other-runner", try_number=t.try_number)
                else:
                    end = rnd.choice([TaskState.SUCCESS, TaskState.FAILED, TaskState.UP_FOR_RETRY])
                    store.finish_task(
                        run_id, name, owner="other-runner", try_number=t.try_number, state=end, outputs={"n": 1}
                    )
        (look,) = cache.fresh([_header(store, run_id)])
        assert look.run.tasks == store.get_run(run_id).tasks
        incremental += look.changed is not None
    assert incremental > 60  # most looks read only what moved
