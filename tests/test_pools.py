"""Pools and task concurrency: a claim takes a pool's slot (and room under the pipeline's
``max_active_tasks``) in its own transaction, on SQLite and PostgreSQL, however many runners
claim at once; the CLI manages pools; two daemons on PostgreSQL share one for real."""

from __future__ import annotations

import itertools
import json
from datetime import datetime, timezone

import pytest
from conftest import nbsched, serve, stop, wait_for, write_notebook, write_yaml
from test_server import api, jp_server_config  # noqa: F401 - fixtures
from test_store import _at_once

from nbsched.errors import Conflict
from nbsched.service import Config, Service
from nbsched.states import RunState, RunTrigger, TaskState
from nbsched.store import SqlStore


@pytest.fixture
def store(db_url):
    s = SqlStore(db_url)
    yield s
    s.close()


def _queued(store: SqlStore, pipeline: str, tasks: int, *, pool: str | None = None, cap: int | None = None) -> str:
    """A running run whose ``tasks`` are all queued, each taking a slot of ``pool``."""
    names = {f"t{i}": 1 for i in range(tasks)}
    run_id = store.create_run(
        pipeline=pipeline,
        version=1,
        params={},
        logical_date=datetime.now(timezone.utc),
        trigger=RunTrigger.MANUAL,
        tasks=names,
        pools=dict.fromkeys(names, pool) if pool else None,
        max_active_tasks=cap,
    )
    assert run_id is not None and store.start_run(run_id)
    for name in names:
        assert store.set_task_state(run_id, name, TaskState.QUEUED, try_number=1)
    return run_id


@pytest.mark.parametrize("slots", [1, 3])
def test_runners_claiming_at_once_never_take_more_slots_than_the_pool_has(store, db_url, slots):
    store.set_pool("gpu", slots)
    for pipeline in ("train", "score"):  # two pipelines share the pool
        _queued(store, pipeline, 6, pool="gpu")

    claimed = _at_once(db_url, 4, lambda s, i: s.claim_tasks(f"runner-{i}", 5))

    taken = [c for batch in claimed for c in batch]
    assert len(taken) == slots
    (pool,) = store.list_pools()
    assert (pool.running, pool.queued) == (slots, 12 - slots)
    # a try that ends frees its slot, for one more
    first = taken[0]
    owner = next(f"runner-{i}" for i, batch in enumerate(claimed) if first in batch)
    store.finish_task(first.run_id, first.task, owner=owner, try_number=first.try_number, state=TaskState.SUCCESS)
    assert len(store.claim_tasks("late", 5)) == 1
    assert store.claim_tasks("later", 5) == []


def test_a_full_pool_does_not_hide_tasks_that_need_no_slot(store):
    store.set_pool("gpu", 1)
    _queued(store, "train", 5, pool="gpu")
    free = _queued(store, "report", 2)
    taken = store.claim_tasks("r", 3)
    assert len(taken) == 3 and sum(c.run_id == free for c in taken) == 2


def test_max_active_tasks_caps_a_pipeline_over_all_its_runs(store, db_url):
    for _ in range(3):
        _queued(store, "nightly", 4, cap=2)
    other = _queued(store, "other", 2)
    claimed = _at_once(db_url, 3, lambda s, i: s.claim_tasks(f"runner-{i}", 4))
    taken = [c for batch in claimed for c in batch]
    assert sum(c.run_id != other for c in taken) == 2 and sum(c.run_id == other for c in taken) == 2


def test_a_try_whose_pool_is_gone_is_claimed_to_be_failed_never_left_waiting(store):
    """A pool removed (``pool rm --force``) while tries of it wait: each is claimed at once,
    named with its gone pool, so the runner fails it instead of waiting for a slot forever."""
    _queued(store, "train", 2, pool="gone")
    store.set_pool("gpu", 1)
    _queued(store, "score", 2, pool="gpu")
    claimed = store.claim_tasks("r", 5)
    assert sorted((c.task, c.pool_gone) for c in claimed if c.pool_gone) == [("t0", "gone"), ("t1", "gone")]
    assert [c.pool_gone for c in claimed if not c.pool_gone] == [None]  # gpu's one slot, as usual


def test_pool_rm_names_what_uses_the_pool_and_force_fails_the_waiting_tries(store):
    store.set_pool("gpu", 1)
    waiting = _queued(store, "train", 2, pool="gpu")
    with pytest.raises(Conflict) as refused:
        store.delete_pool("gpu")
    assert str(refused.value) == (
        f"pool 'gpu': 2 unfinished task(s) (run {waiting}) use it; remove it with --force to fail them"
    )
    assert store.delete_pool("gpu", force=True) == 2
    assert store.list_pools() == []
    assert all(c.pool_gone == "gpu" for c in store.claim_tasks("r", 5))


def test_pool_commands(project):
    assert nbsched("pool", "list", cwd=project).stdout.startswith("no pools")
    assert (
        nbsched("pool", "set", "gpu", "2", cwd=project, check=True).stdout.strip()
        == "pool gpu: 2 slot(s) (new), 0 in use"
    )
    assert nbsched("pool", "set", "gpu", "1", cwd=project, check=True).stdout.strip() == "pool gpu: 1 slot(s), 0 in use"
    assert json.loads(nbsched("pool", "list", "--json", cwd=project).stdout) == [
        {"name": "gpu", "slots": 1, "running": 0, "queued": 0}
    ]
    for args, message in [
        (("set", "gpu", "0"), "Error: pool gpu: slots 0: expected a whole number from 1 to 10,000"),
        (("set", "GPU!", "1"), "Error: pool 'GPU!': use lower-case letters, digits, '_' and '-'"),
        (("rm", "tpu"), "Error: pool 'tpu' not found"),
    ]:
        proc = nbsched("pool", *args, cwd=project)
        assert proc.returncode == 2 and proc.stderr.strip().startswith(message), proc.stderr
    write_notebook(project / "nb.ipynb", "x = 1")
    write_yaml(
        project / "pipeline.yaml",
        "name: p\ndefaults: {pool: gpu}\ntasks:\n  a: nb.ipynb\n  b: {notebook: nb.ipynb, pool: tpu}\n",
    )
    proc = nbsched("validate", "pipeline.yaml", cwd=project)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "Error: pipeline.yaml: tasks.b.pool: unknown pool 'tpu' (create it with: nbsched pool set tpu SLOTS)"
    )
    assert nbsched("pool", "set", "tpu", "1", cwd=project, check=True)
    assert nbsched("register", "pipeline.yaml", cwd=project).returncode == 0
    run_id = nbsched("trigger", "p", cwd=project, check=True).stdout.strip()
    proc = nbsched("pool", "rm", "gpu", cwd=project)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"Error: pool 'gpu': used by pipeline p (task a) and 1 unfinished task(s) (run {run_id}); "
        "change what uses it, or remove it with --force (their waiting tries then fail)"
    )
    nbsched("cancel", run_id, cwd=project, check=True)
    proc = nbsched("pool", "rm", "gpu", cwd=project)
    assert proc.returncode == 2 and "used by pipeline p (task a);" in proc.stderr, proc.stderr
    write_yaml(project / "pipeline.yaml", "name: p\ntasks:\n  a: nb.ipynb\n  b: {notebook: nb.ipynb, pool: tpu}\n")
    assert nbsched("register", "pipeline.yaml", cwd=project).returncode == 0  # p no longer uses gpu
    assert nbsched("pool", "rm", "gpu", cwd=project, check=True).stdout.strip() == "pool gpu: removed"


@pytest.mark.kernel
def test_a_run_never_waits_for_a_removed_pool(project):
    """register a spec with ``pool: gpu``, ``pool rm gpu --force``, trigger: the trigger says
    the pool is unknown; a run queued before the removal fails its task at once, in one line,
    and ends failed under a daemon, which then stops cleanly."""
    write_notebook(project / "nb.ipynb", "x = 1")
    write_yaml(
        project / "pipeline.yaml",
        "name: p\ntasks:\n  a: {notebook: nb.ipynb, pool: gpu}\n  b: {notebook: nb.ipynb, upstream: [a]}\n",
    )
    nbsched("pool", "set", "gpu", "1", cwd=project, check=True)
    nbsched("register", "pipeline.yaml", cwd=project, check=True)
    queued = nbsched("trigger", "p", cwd=project, check=True).stdout.strip()
    removed = nbsched("pool", "rm", "gpu", "--force", cwd=project, check=True).stdout.strip()
    assert removed == (
        f"pool gpu: removed; pipeline p still names it (its tries fail until it exists again); "
        f"1 waiting task(s) fail (run {queued})"
    )
    proc = nbsched("trigger", "p", cwd=project)
    assert proc.returncode == 2
    assert (
        proc.stderr.strip()
        == "Error: pipeline p: tasks.a.pool: unknown pool 'gpu' (create it with: nbsched pool set gpu SLOTS)"
    )
    daemon = serve(project, "serve", "--workers", "1")
    service = Service(Config.resolve(project=project))
    try:
        run = wait_for(lambda: (r := service.get_run(queued)).state.finished and r, 60, "the run to end")
    finally:
        code = stop(daemon)
    assert code == 0, (project / "serve.log").read_text()
    assert run.state is RunState.FAILED
    assert run.tasks["a"].state is TaskState.FAILED and run.tasks["b"].state is TaskState.UPSTREAM_FAILED
    assert (
        run.tasks["a"].error
        == "pool 'gpu' does not exist (it was removed; create it again with: nbsched pool set gpu SLOTS)"
    )
    assert [t.state for t in run.tasks["a"].tries] == [TaskState.FAILED]
    shown = nbsched("show", queued, cwd=project, check=True).stdout
    assert "pool 'gpu' does not exist" in shown and "waiting for pool" not in shown
    service.close()


def test_a_pool_name_too_long_is_told_by_its_length(project):
    proc = nbsched("pool", "set", "g" * 200, "1", cwd=project)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "Error: pool 'gggggggggggggggggggg'...: 200 characters (a name has at most 100)"
    assert nbsched("pool", "set", "g" * 100, "1", cwd=project).returncode == 0


def test_show_says_a_queued_task_waits_for_its_full_pool(project):
    service = Service(Config.resolve(project=project))
    service.set_pool("gpu", 1)
    write_notebook(project / "nb.ipynb", "x = 1")
    write_yaml(project / "pipeline.yaml", "name: p\ntasks:\n  a: {notebook: nb.ipynb, pool: gpu}\n")
    service.register(project / "pipeline.yaml")
    busy, waiting = service.trigger("p"), service.trigger("p")
    store = service.store
    for run_id in (busy, waiting):
        store.start_run(run_id)
        store.set_task_state(run_id, "a", TaskState.QUEUED, try_number=1)
    assert len(store.claim_tasks("r", 5)) == 1
    running_run = next(r for r in (busy, waiting) if service.get_run(r).tasks["a"].state is TaskState.RUNNING)
    queued_run = busy if running_run == waiting else waiting
    assert service.get_run(queued_run).tasks["a"].waiting == "waiting for pool gpu: 1/1 used"
    assert service.get_run(running_run).tasks["a"].waiting is None
    assert "  a: waiting for pool gpu: 1/1 used" in nbsched("show", queued_run, cwd=project, check=True).stdout
    # a run's JSON is the same in a list as alone
    shown = json.loads(nbsched("show", queued_run, "--json", cwd=project, check=True).stdout)
    listed = json.loads(nbsched("runs", "--json", cwd=project, check=True).stdout)
    assert next(r for r in listed if r["run_id"] == queued_run) == shown
    assert shown["tasks"]["a"]["waiting"] == "waiting for pool gpu: 1/1 used"
    service.close()


@pytest.mark.kernel
@pytest.mark.slow
def test_a_pool_of_one_shared_by_two_pipelines_runs_one_try_at_a_time_under_two_daemons(project, pg_url):
    write_notebook(project / "slow.ipynb", "import time\ntime.sleep(1)")
    for name in ("train", "score"):
        write_yaml(
            project / f"{name}.yaml",
            f"name: {name}\ntasks:\n  a: {{notebook: slow.ipynb, pool: gpu}}\n  b: {{notebook: slow.ipynb, pool: gpu}}\n",
        )
    nbsched("--db", pg_url, "pool", "set", "gpu", "1", cwd=project, check=True)
    for name in ("train", "score"):
        nbsched("--db", pg_url, "register", f"{name}.yaml", cwd=project, check=True)
    service = Service(Config.resolve(project=project, db_url=pg_url))
    daemons = [serve(project, f"serve{i}", "--workers", "2", "--no-scheduler", db=pg_url) for i in range(2)]
    try:
        runs = [
            nbsched("--db", pg_url, "trigger", name, cwd=project, check=True).stdout.strip()
            for name in ("train", "score", "train")
        ]
        wait_for(lambda: all(service.get_run(r).state.finished for r in runs), 120, "the three runs")
    finally:
        codes = [stop(d) for d in daemons]
    assert codes == [0, 0]
    tries = sorted(
        (t.started_at, t.ended_at, t.runner)
        for r in runs
        for task in service.get_run(r).tasks.values()
        for t in task.tries
    )
    assert len(tries) == 6 and all(service.get_run(r).state is RunState.SUCCESS for r in runs)
    for (_, end, _), (start, _, _) in itertools.pairwise(tries):
        assert end <= start, tries  # never two at once, though each daemon has two workers
    service.close()


async def test_pools_over_rest(api, jp_root_dir):  # noqa: F811 - the fixture imported above
    assert (await api("GET", "pools")).data == {"pools": []}
    made = await api("PUT", "pools", "gpu", body={"slots": 2})
    assert made.code == 201 and made.data == {"name": "gpu", "slots": 2, "running": 0, "queued": 0}
    changed = await api("PUT", "pools", "gpu", body={"slots": 1})
    assert changed.code == 200 and changed.data["slots"] == 1
    assert (await api("GET", "pools", "gpu")).data["slots"] == 1
    assert "body.slots: at least 1" in (await api("PUT", "pools", "gpu", body={"slots": 0})).error(400, "bad_request")
    assert "body.slots" in (await api("PUT", "pools", "gpu", body={"slots": "1"})).error(400, "bad_request")
    assert "lower-case" in (await api("PUT", "pools", "GPU", body={"slots": 1})).error(422, "invalid")
    (await api("GET", "pools", "tpu")).error(404, "not_found")
    write_notebook(jp_root_dir / "nb.ipynb", "x = 1")
    spec = {"name": "p", "tasks": {"a": {"notebook": "nb.ipynb", "pool": "tpu"}}}
    message = (await api("POST", "pipelines", body={"spec": spec})).error(422, "invalid_spec")
    assert "tasks.a.pool: unknown pool 'tpu'" in message
    spec = {"name": "q", "tasks": {"a": {"notebook": "nb.ipynb", "pool": "gpu"}}}
    assert (await api("POST", "pipelines", body={"spec": spec})).code == 201
    refused = (await api("DELETE", "pools", "gpu")).error(409, "conflict")
    assert refused.startswith("pool 'gpu': used by pipeline q (task a); change what uses it, or remove it with --force")
    assert "force" in (await api("DELETE", "pools", "gpu", params={"forced": "1"})).error(400, "bad_request")
    assert (await api("DELETE", "pools", "gpu", params={"force": "1"})).code == 204
    (await api("DELETE", "pools", "gpu")).error(404, "not_found")
    trigger = (await api("POST", "pipelines", "q", "runs", body={})).error(422)
    assert trigger == "pipeline q: tasks.a.pool: unknown pool 'gpu' (create it with: nbsched pool set gpu SLOTS)"
