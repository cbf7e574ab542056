"""The store on SQLite and on the real PostgreSQL: guarded transitions, claims, fencing, versions,
aware times; SQLite readers beside a writer."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import update

from nbsched.errors import ConfigError, NotFound
from nbsched.states import IllegalTransition, RunState, RunTrigger, TaskState
from nbsched.store import SqlStore
from nbsched.store.models import RunnerRow, TaskRunRow


@pytest.fixture
def store(db_url):
    s = SqlStore(db_url)
    yield s
    s.close()


def _run(store, **kw):
    return store.create_run(
        **{
            "pipeline": "p",
            "version": 1,
            "params": {"a": 1},
            "trigger": RunTrigger.MANUAL,
            "logical_date": datetime(2026, 3, 29, 1, 30, tzinfo=timezone(timedelta(hours=1))),
            "tasks": {"extract": 2, "load": 1},
            **kw,
        }
    )


def test_new_run_is_queued_with_pending_tasks_in_order(store):
    run = store.get_run(_run(store))
    assert run.state is RunState.QUEUED
    assert list(run.tasks) == ["extract", "load"]
    assert [t.state for t in run.tasks.values()] == [TaskState.PENDING, TaskState.PENDING]
    assert run.tasks["extract"].max_tries == 2 and run.tasks["extract"].try_number == 0
    # times come back aware and equal to what went in
    assert run.logical_date == datetime(2026, 3, 29, 0, 30, tzinfo=timezone.utc)


def test_a_transition_from_the_wrong_state_changes_nothing(store):
    run_id = _run(store)
    assert store.set_task_state(run_id, "extract", TaskState.QUEUED, expect=[TaskState.PENDING], try_number=1)
    # a second claimer of the same task loses
    assert not store.set_task_state(run_id, "extract", TaskState.QUEUED, expect=[TaskState.PENDING], try_number=1)
    assert store.set_task_state(run_id, "extract", TaskState.RUNNING, expect=[TaskState.QUEUED])
    task = store.get_run(run_id).tasks["extract"]
    assert task.state is TaskState.RUNNING and task.started_at is not None and task.host


def test_cancel_run_ends_unfinished_tasks_and_leaves_finished_ones(store):
    run_id = _queued(store)
    store.claim_tasks("r", 1)
    store.finish_task(run_id, "extract", owner="r", try_number=1, state=TaskState.SUCCESS)
    assert store.cancel_run(run_id, "cancelled by alice")
    run = store.get_run(run_id)
    assert run.state is RunState.CANCELLED and run.error == "cancelled by alice"
    assert run.tasks["extract"].state is TaskState.SUCCESS
    assert run.tasks["load"].state is TaskState.CANCELLED and run.tasks["load"].error == "cancelled by alice"
    assert not store.cancel_run(run_id, "again")  # a finished run cannot be cancelled


def test_a_transition_the_table_does_not_hold_is_refused(store):
    run_id = _run(store)
    assert not store.set_task_state(run_id, "extract", TaskState.SUCCESS)  # no try ran
    assert not store.set_run_state(run_id, RunState.SUCCESS)  # never started
    with pytest.raises(IllegalTransition, match="pending -> success"):
        store.set_task_state(run_id, "extract", TaskState.SUCCESS, expect=[TaskState.PENDING])
    with pytest.raises(IllegalTransition, match="running -> pending"):
        store.finish_task(run_id, "extract", owner="r", try_number=1, state=TaskState.PENDING)
    run = store.get_run(run_id)
    assert run.state is RunState.QUEUED and run.tasks["extract"].state is TaskState.PENDING


def _queued(store, owner=None):
    run_id = _run(store, owner=owner)
    assert store.start_run(run_id)
    store.set_task_state(run_id, "extract", TaskState.QUEUED, try_number=1)
    return run_id


def test_a_queued_task_is_claimed_once(store):
    run_id = _queued(store)
    first = store.claim_tasks("runner-a", 5)
    assert [(c.run_id, c.task, c.try_number) for c in first] == [(run_id, "extract", 1)]
    assert store.claim_tasks("runner-b", 5) == []
    task = store.get_run(run_id).tasks["extract"]
    assert task.state is TaskState.RUNNING and task.owner == "runner-a"


def test_a_foreground_run_is_claimed_only_by_its_owner(store):
    run_id = _queued(store, owner="fg")
    assert store.claim_tasks("daemon", 5) == []
    assert [c.task for c in store.claim_tasks("fg", 5, run_ids=[run_id])] == ["extract"]


def test_results_are_fenced_by_owner_and_try(store):
    run_id = _queued(store)
    store.claim_tasks("runner-a", 1)
    assert not store.finish_task(run_id, "extract", owner="runner-b", try_number=1, state=TaskState.SUCCESS)
    assert not store.finish_task(run_id, "extract", owner="runner-a", try_number=2, state=TaskState.SUCCESS)
    assert store.finish_task(run_id, "extract", owner="runner-a", try_number=1, state=TaskState.SUCCESS)
    assert not store.finish_task(run_id, "extract", owner="runner-a", try_number=1, state=TaskState.FAILED)
    assert store.get_run(run_id).tasks["extract"].state is TaskState.SUCCESS


def test_tasks_of_a_runner_that_stopped_heartbeating_are_reaped(store):
    run_id = _queued(store)
    store.register_runner("dead", "serve", 1)
    store.claim_tasks("dead", 1)
    assert store.reap_dead_runners(lease=3600) == []  # still within its lease
    with store._write() as s, s.begin():  # its last heartbeat was long ago
        s.execute(update(RunnerRow).values(heartbeat_at=datetime(2020, 1, 1, tzinfo=timezone.utc)))
        s.execute(update(TaskRunRow).values(updated_at=datetime(2020, 1, 1, tzinfo=timezone.utc)))
    reaped = store.reap_dead_runners(lease=60)
    assert [(h.run_id, h.task, h.owner, h.try_number) for h in reaped] == [(run_id, "extract", "dead", 1)]
    assert reaped[0].runner is not None and reaped[0].runner.pid == 1  # who it was: is its process alive?
    assert not store.heartbeat("dead")


def test_a_runner_is_judged_by_its_own_lease_not_the_reapers(store):
    """A daemon with ``--lease 2s`` took the tries of a foreground run (lease 60 s, heartbeating
    every 15 s) two seconds after its last beat."""
    run_id = _queued(store)
    store.register_runner("patient", "run", 1, lease=60)
    store.claim_tasks("patient", 1)
    ago = store.clock.now() - timedelta(seconds=10)  # its last beat, well within its own lease
    with store._write() as s, s.begin():
        s.execute(update(RunnerRow).values(heartbeat_at=ago))
        s.execute(update(TaskRunRow).values(updated_at=ago))
    assert store.reap_dead_runners(lease=2) == []
    assert store.heartbeat("patient") and store.get_run(run_id).tasks["extract"].owner == "patient"
    with store._write() as s, s.begin():  # past its own lease: dead, by whoever looks
        s.execute(update(RunnerRow).values(heartbeat_at=store.clock.now() - timedelta(seconds=61)))
    assert [h.task for h in store.reap_dead_runners(lease=3600)] == ["extract"]


def test_a_runner_never_reaps_itself(store):
    _queued(store)
    store.register_runner("me", "serve", 1, lease=1)
    store.claim_tasks("me", 1)
    with store._write() as s, s.begin():
        s.execute(update(RunnerRow).values(heartbeat_at=datetime(2020, 1, 1, tzinfo=timezone.utc)))
        s.execute(update(TaskRunRow).values(updated_at=datetime(2020, 1, 1, tzinfo=timezone.utc)))
    assert store.reap_dead_runners(lease=1, me="me") == []  # the one looking is alive
    assert store.heartbeat("me")


def test_a_try_taken_from_a_live_runner_spends_no_retry_up_to_a_bound(store):
    from nbsched.store.liveness import FREE_RETAKES

    run_id = _queued(store)  # extract: 2 tries
    retry_at = store.clock.now() + timedelta(hours=1)
    for n in range(1, FREE_RETAKES + 2):
        store.register_runner(f"r{n}", "serve", 1)
        store.claim_tasks(f"r{n}", 1)
        with store._write() as s, s.begin():
            s.execute(update(RunnerRow).values(heartbeat_at=datetime(2020, 1, 1, tzinfo=timezone.utc)))
            s.execute(update(TaskRunRow).values(updated_at=datetime(2020, 1, 1, tzinfo=timezone.utc)))
        (held,) = store.reap_dead_runners(lease=60)
        assert store.take_back(held, error=f"taken {n}", retry_at=retry_at, runner_alive=True) is TaskState.UP_FOR_RETRY
        task = store.get_run(run_id).tasks["extract"]
        if n <= FREE_RETAKES:  # queued again at once, with one more try allowed
            assert task.max_tries == 2 + n and task.next_try_at < retry_at
        else:  # a runner stopped every time: the tries count again
            assert task.max_tries == 2 + FREE_RETAKES and task.next_try_at == retry_at
        store.set_task_state(run_id, "extract", TaskState.QUEUED, try_number=n + 1, owner=None)
    tries = store.get_run(run_id, with_tries=True).tasks["extract"].tries
    assert [t.error for t in tries] == [f"taken {n}" for n in range(1, FREE_RETAKES + 2)]


def test_a_runner_back_from_a_pause_uncounts_the_try_taken_from_it(store):
    run_id = _queued(store)  # extract: 2 tries
    store.register_runner("paused", "serve", 1)
    store.claim_tasks("paused", 1)
    with store._write() as s, s.begin():
        s.execute(update(RunnerRow).values(heartbeat_at=datetime(2020, 1, 1, tzinfo=timezone.utc)))
        s.execute(update(TaskRunRow).values(updated_at=datetime(2020, 1, 1, tzinfo=timezone.utc)))
    (held,) = store.reap_dead_runners(lease=60)  # another machine's: nobody could tell it lived
    later = store.clock.now() + timedelta(seconds=30)
    assert (
        store.take_back(held, error="its runner paused stopped heartbeating", retry_at=later) is TaskState.UP_FOR_RETRY
    )
    assert store.get_run(run_id).tasks["extract"].max_tries == 2

    assert store.uncount_try(run_id, "extract", runner="paused", try_number=1)  # it came back: it was alive
    assert not store.uncount_try(run_id, "extract", runner="paused", try_number=1)  # once
    assert not store.uncount_try(run_id, "extract", runner="other", try_number=1)  # only its own
    task = store.get_run(run_id, with_tries=True).tasks["extract"]
    assert task.max_tries == 3 and task.tries[0].error.endswith("its runner was alive: this try does not count")


def test_every_try_keeps_its_row_with_runner_host_times_and_error(store):
    run_id = _queued(store)
    store.register_runner("a", "serve", 1)
    store.claim_tasks("a", 1)
    running = store.get_run(run_id, with_tries=True).tasks["extract"].tries
    assert [(t.try_number, t.state, t.runner, t.ended_at) for t in running] == [(1, TaskState.RUNNING, "a", None)]
    assert running[0].host and running[0].started_at is not None
    store.finish_task(run_id, "extract", owner="a", try_number=1, state=TaskState.UP_FOR_RETRY, error="boom 1")
    store.set_task_state(run_id, "extract", TaskState.QUEUED, try_number=2, owner=None)
    store.claim_tasks("b", 1)  # the second try dies with its runner, before it reported anything
    with store._write() as s, s.begin():
        s.execute(update(TaskRunRow).values(updated_at=datetime(2020, 1, 1, tzinfo=timezone.utc)))
    (_orphan,) = store.reap_dead_runners(lease=60)
    store.finish_task(
        run_id,
        "extract",
        owner="b",
        try_number=2,
        state=TaskState.UP_FOR_RETRY,
        error="its runner b stopped heartbeating",
    )
    store.set_task_state(run_id, "extract", TaskState.QUEUED, try_number=3, owner=None)
    store.claim_tasks("c", 1)
    store.cancel_run(run_id, "cancelled by user")

    tries = store.get_run(run_id, with_tries=True).tasks["extract"].tries
    assert [(t.try_number, t.state, t.runner, t.error) for t in tries] == [
        (1, TaskState.UP_FOR_RETRY, "a", "boom 1"),
        (2, TaskState.UP_FOR_RETRY, "b", "its runner b stopped heartbeating"),
        (3, TaskState.CANCELLED, "c", "cancelled by user"),
    ]
    assert all(t.ended_at is not None and t.ended_at >= t.started_at for t in tries)
    assert store.get_run(run_id).tasks["extract"].tries == ()  # the runner's reads skip them
    assert [len(r.tasks["extract"].tries) for r in store.list_runs(with_tries=True)] == [3]


def test_a_stale_result_changes_no_try(store):
    run_id = _queued(store)
    store.claim_tasks("a", 1)
    assert not store.finish_task(run_id, "extract", owner="intruder", try_number=1, state=TaskState.SUCCESS)
    (only,) = store.get_run(run_id, with_tries=True).tasks["extract"].tries
    assert only.state is TaskState.RUNNING and only.runner == "a"


def test_max_active_runs_holds_further_runs_queued(store):
    first, second = (_run(store, max_active_runs=1) for _ in range(2))
    assert store.start_run(first)
    assert not store.start_run(second)
    store.set_run_state(first, RunState.SUCCESS)
    assert store.start_run(second)


def test_one_run_per_schedule_and_logical_date(store):
    assert _run(store, schedule_id=7) is not None
    assert _run(store, schedule_id=7) is None


def test_retry_run_requeues_failed_upstream_failed_and_cancelled_tasks(store):
    run_id = _queued(store)
    store.claim_tasks("r", 1)
    store.finish_task(run_id, "extract", owner="r", try_number=1, state=TaskState.FAILED, error="boom")
    store.set_task_state(run_id, "load", TaskState.UPSTREAM_FAILED)
    store.set_run_state(run_id, RunState.FAILED)
    assert sorted(store.retry_run(run_id, {"extract": 2, "load": 1})) == ["extract", "load"]
    run = store.get_run(run_id)
    assert run.state is RunState.QUEUED and run.ended_at is None
    assert run.tasks["extract"].state is TaskState.PENDING and run.tasks["extract"].error is None
    assert run.tasks["extract"].max_tries == 3  # one try used, two more allowed


def test_a_mapped_task_is_borrowed_from_the_latest_run_where_every_instance_succeeded(store):
    def mapped_run(outcomes: list[TaskState]) -> str:
        rows = {f"t[{i}]": ("t", i, {"k": i}) for i in range(len(outcomes))}
        run_id = _run(store, tasks={**dict.fromkeys(rows, 1), "after": 1}, instances=rows)
        store.start_run(run_id)
        for row, state in zip(rows, outcomes, strict=True):
            store.set_task_state(run_id, row, TaskState.QUEUED, try_number=1)
            store.claim_tasks("r", 10)
            store.finish_task(run_id, row, owner="r", try_number=1, state=state, outputs={"score": row})
        return run_id

    assert store.latest_instances("p", "t") is None
    good = mapped_run([TaskState.SUCCESS, TaskState.SUCCESS])
    mapped_run([TaskState.SUCCESS, TaskState.FAILED])  # later, but not every instance succeeded
    assert store.latest_instances("p", "t") == (
        good,
        [(0, {"k": 0}, {"score": "t[0]"}), (1, {"k": 1}, {"score": "t[1]"})],
    )
    newer = mapped_run([TaskState.SUCCESS])  # the latest where each did: even with another list
    assert store.latest_instances("p", "t") == (newer, [(0, {"k": 0}, {"score": "t[0]"})])
    assert store.latest_instances("other", "t") is None


def test_pipeline_versions_only_change_with_the_spec(store):
    assert store.save_pipeline("p", {"raw": {"x": 1}}, "/a/pipeline.yaml") == 1
    assert store.save_pipeline("p", {"raw": {"x": 1}}, "/a/pipeline.yaml") == 1
    assert store.save_pipeline("p", {"raw": {"x": 2}}, "/a/pipeline.yaml") == 2
    assert store.get_pipeline("p").version == 2
    assert store.get_pipeline("p", 1).spec == {"raw": {"x": 1}}
    with pytest.raises(NotFound, match="pipeline 'q' not found"):
        store.get_pipeline("q")


def test_list_runs_filters_and_orders_newest_first(store):
    ids = [_run(store) for _ in range(3)]
    store.start_run(ids[0])
    store.set_run_state(ids[0], RunState.SUCCESS)
    assert [r.id for r in store.list_runs()] == ids[::-1]
    assert [r.id for r in store.list_runs(state=RunState.SUCCESS)] == [ids[0]]
    assert store.list_runs(pipeline="other") == []
    assert len(store.list_runs(limit=2)) == 2


def test_the_newest_runs_are_read_by_index_not_by_sorting_every_run(tmp_path):
    store = SqlStore(f"sqlite:///{tmp_path / 'nbsched.db'}")
    try:
        with store.engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE")
            plans = {}
            for name, where in (("all", ""), ("by pipeline", "WHERE pipeline = 'p' ")):
                plans[name] = " ".join(
                    row[-1]
                    for row in conn.exec_driver_sql(
                        f"EXPLAIN QUERY PLAN SELECT * FROM runs {where}ORDER BY created_at DESC, id DESC LIMIT 20"
                    )
                )
    finally:
        store.close()
    assert all("TEMP B-TREE" not in plan for plan in plans.values()), plans


def test_unknown_run_is_not_found(store):
    with pytest.raises(NotFound, match="run 'missing' not found"):
        store.get_run("missing")


def test_database_is_in_wal_mode_and_readable_while_a_writer_holds_the_lock(tmp_path):
    store = SqlStore(f"sqlite:///{tmp_path / 'state' / 'nbsched.db'}")
    run_id = _run(store)
    path = tmp_path / "state" / "nbsched.db"
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("UPDATE runs SET state='running' WHERE id=?", (run_id,))
    # another process reads the last committed state without waiting for the writer
    code = f"from nbsched.store import SqlStore; print(SqlStore('sqlite:///{path}').get_run('{run_id}').state.value)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20)
    writer.execute("COMMIT")
    assert out.stdout.strip() == "queued", out.stderr


def test_bad_database_url_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="database URL"):
        SqlStore("nosuchdb://x")


def _at_once(db_url, n, work):
    """``work(store, i)`` in ``n`` threads, each with a store (a connection pool) of its own, started together."""
    import threading

    stores = [SqlStore(db_url) for _ in range(n)]
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def go(i):
        barrier.wait()
        results[i] = work(stores[i], i)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for s in stores:
        s.close()
    return results


def test_runners_claiming_at_once_take_each_task_once(store, db_url):
    run_ids = []
    for _ in range(10):
        run_id = store.create_run(
            pipeline="p",
            version=1,
            params={},
            trigger=RunTrigger.MANUAL,
            logical_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
            tasks={f"t{i}": 1 for i in range(4)},
        )
        store.start_run(run_id)
        for i in range(4):
            store.set_task_state(run_id, f"t{i}", TaskState.QUEUED, try_number=1)
        run_ids.append(run_id)

    def claim_all(s, i):
        mine = []
        while batch := s.claim_tasks(f"runner-{i}", 3):
            mine.extend((c.run_id, c.task) for c in batch)
        return mine

    claimed = [c for mine in _at_once(db_url, 4, claim_all) for c in mine]
    assert sorted(claimed) == sorted((r, f"t{i}") for r in run_ids for i in range(4))  # all, each once


def test_max_active_runs_holds_when_runners_start_runs_at_once(store, db_url):
    ids = [_run(store, max_active_runs=1) for _ in range(4)]
    started = _at_once(db_url, 4, lambda s, i: s.start_run(ids[i]))
    assert started.count(True) == 1
    assert [r.state for r in store.list_runs(limit=None)].count(RunState.RUNNING) == 1


def test_versions_saved_at_once_are_all_kept(store, db_url):
    versions = _at_once(db_url, 4, lambda s, i: s.save_pipeline("p", {"raw": {"x": i}}, None))
    assert sorted(versions) == [1, 2, 3, 4]
    assert store.get_pipeline("p").spec == {"raw": {"x": versions.index(4)}}


def test_senders_claiming_at_once_take_each_notification_once(store, db_url):
    from nbsched.notices import Notice
    from nbsched.states import NotifyEvent

    run_id = _run(store)
    store.add_notices(run_id, [Notice(event=NotifyEvent.FAILURE, target=f"json://h/{i}") for i in range(60)])

    def send_all(s, i):
        taken = []
        while batch := s.claim_notices(f"sender-{i}", 4, lease=60):
            taken += [n.id for n in batch]
            for n in batch:
                assert s.notice_sent(n.id, f"sender-{i}", "ok")
        return taken

    taken = _at_once(db_url, 4, send_all)
    every = [n for ids in taken for n in ids]
    assert len(every) == len(set(every)) == 60
    assert {n.state.value for n in store.list_notices(run_id=run_id, limit=100)} == {"sent"}
    # and a claim another sender holds (its lease not passed) is not taken again
    store.add_notices(run_id, [Notice(event=NotifyEvent.FAILURE, target="json://h/late")])
    assert len(store.claim_notices("a", 10, lease=60)) == 1
    assert store.claim_notices("b", 10, lease=60) == []
