"""The SQLite store: guarded transitions, versions, aware times, readers beside a writer."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

from nbsched.dag import RunState, TaskState
from nbsched.errors import ConfigError, NotFound
from nbsched.store import SqlStore


@pytest.fixture
def store(tmp_path):
    s = SqlStore(f"sqlite:///{tmp_path / 'state' / 'nbsched.db'}")
    yield s
    s.close()


def _run(store, **kw):
    return store.create_run(pipeline="p", version=1, params={"a": 1}, trigger="manual",
                            logical_date=datetime(2026, 3, 29, 1, 30, tzinfo=timezone(timedelta(hours=1))),
                            tasks={"extract": 2, "load": 1}, **kw)


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


def test_cancel_unfinished_leaves_finished_tasks_alone(store):
    run_id = _run(store)
    store.set_task_state(run_id, "extract", TaskState.SUCCESS)
    assert store.cancel_unfinished_tasks(run_id, "run cancelled") == ["load"]
    tasks = store.get_run(run_id).tasks
    assert tasks["extract"].state is TaskState.SUCCESS
    assert tasks["load"].state is TaskState.CANCELLED and tasks["load"].error == "run cancelled"


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
    store.set_run_state(ids[0], RunState.SUCCESS)
    assert [r.id for r in store.list_runs()] == ids[::-1]
    assert [r.id for r in store.list_runs(state=RunState.SUCCESS)] == [ids[0]]
    assert store.list_runs(pipeline="other") == []
    assert len(store.list_runs(limit=2)) == 2


def test_unknown_run_is_not_found(store):
    with pytest.raises(NotFound, match="run 'missing' not found"):
        store.get_run("missing")


def test_database_is_in_wal_mode_and_readable_while_a_writer_holds_the_lock(store, tmp_path):
    run_id = _run(store)
    path = tmp_path / "state" / "nbsched.db"
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("UPDATE runs SET state='running' WHERE id=?", (run_id,))
    # another process reads the last committed state without waiting for the writer
    code = (f"from nbsched.store import SqlStore; "
            f"print(SqlStore('sqlite:///{path}').get_run('{run_id}').state.value)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20)
    writer.execute("COMMIT")
    assert out.stdout.strip() == "queued", out.stderr


def test_bad_database_url_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="database URL"):
        SqlStore("nosuchdb://x")
