"""The runner with real kernels executing real notebooks."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import nbformat
import pytest
from conftest import run_json, write_notebook, write_yaml
from fakes import FakeExecutor

from nbsched.states import RunState, TaskState

SLEEP = "import time\ntime.sleep({})"


@pytest.mark.kernel
def test_diamond_runs_in_dependency_order_with_two_tasks_in_parallel(project, service):
    write_notebook(project / "quick.ipynb", "x = 1")
    write_notebook(project / "slow.ipynb", SLEEP.format(1.5))
    spec = write_yaml(
        project / "pipeline.yaml",
        """
name: diamond
tasks:
  a: {notebook: quick.ipynb}
  b: {notebook: slow.ipynb, upstream: [a]}
  c: {notebook: slow.ipynb, upstream: [a]}
  d: {notebook: quick.ipynb, upstream: [b, c]}
""",
    )
    run = service.run_pipeline(spec, workers=2)

    assert run.state is RunState.SUCCESS
    t = run.tasks
    assert all(x.state is TaskState.SUCCESS for x in t.values())
    assert t["a"].ended_at <= t["b"].started_at and t["a"].ended_at <= t["c"].started_at
    assert max(t["b"].ended_at, t["c"].ended_at) <= t["d"].started_at
    # b and c ran at the same time
    assert t["b"].started_at < t["c"].ended_at and t["c"].started_at < t["b"].ended_at
    for name in "abcd":
        out = Path(t[name].output_path)
        assert out == project / "nbsched-runs" / "diamond" / run.id / f"{name}.ipynb"
        assert nbformat.read(str(out), as_version=4).cells[-1].outputs == [] or out.exists()


@pytest.mark.kernel
def test_failure_marks_all_success_children_upstream_failed_and_all_done_child_runs(project, service):
    write_notebook(project / "ok.ipynb", "x = 1")
    write_notebook(project / "boom.ipynb", "y = 2", "raise ValueError('bad input data')", "z = 3")
    spec = write_yaml(
        project / "pipeline.yaml",
        """
name: failing
tasks:
  extract: {notebook: boom.ipynb}
  clean:   {notebook: ok.ipynb, upstream: [extract]}
  publish: {notebook: ok.ipynb, upstream: [clean]}
  report:  {notebook: ok.ipynb, upstream: [extract], trigger_rule: all_done}
""",
    )
    run = service.run_pipeline(spec)

    assert run.state is RunState.FAILED
    t = run.tasks
    assert t["extract"].state is TaskState.FAILED
    assert "ValueError: bad input data" in t["extract"].error
    assert "raise ValueError('bad input data')" in t["extract"].error  # names the failing cell
    assert t["clean"].state is TaskState.UPSTREAM_FAILED
    assert t["publish"].state is TaskState.UPSTREAM_FAILED
    assert t["report"].state is TaskState.SUCCESS
    # the failed task's notebook is kept, with output up to the failing cell and its traceback
    nb = nbformat.read(t["extract"].output_path, as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert errors and errors[0].ename == "ValueError"
    assert nb.cells[-1].source == "z = 3" and nb.cells[-1].execution_count is None


@pytest.mark.kernel
def test_retries_two_ends_with_try_three_and_keeps_each_try(project, service):
    write_notebook(project / "flaky.ipynb", "raise RuntimeError('still broken')")
    spec = write_yaml(
        project / "pipeline.yaml",
        """
name: retrying
tasks:
  flaky: {notebook: flaky.ipynb, retries: 2, retry_delay: 0.2s}
""",
    )
    run = service.run_pipeline(spec)

    flaky = run.tasks["flaky"]
    assert run.state is RunState.FAILED
    assert flaky.state is TaskState.FAILED
    assert flaky.try_number == 3 and flaky.max_tries == 3
    folder = Path(flaky.output_path).parent
    assert sorted(p.name for p in folder.glob("flaky*.ipynb")) == [
        "flaky.ipynb",
        "flaky.try1.ipynb",
        "flaky.try2.ipynb",
        "flaky.try3.ipynb",
    ]
    assert (folder / "flaky.ipynb").samefile(folder / "flaky.try3.ipynb")  # the task's: its last try's


@pytest.mark.kernel
def test_retry_that_succeeds_ends_success(project, service):
    # fails on the first try only: each try knows its number
    write_notebook(
        project / "once.ipynb",
        "import nbsched\nnbsched.record('try', nbsched_try)\n"
        "if nbsched_try == 1:\n    raise RuntimeError('first try fails')",
        params="nbsched_try = 0\nupstream = {}",
    )
    spec = write_yaml(
        project / "pipeline.yaml",
        """
name: recovers
defaults: {retries: 1, retry_delay: 0s}
tasks:
  once: {notebook: once.ipynb}
""",
    )
    run = service.run_pipeline(spec)
    assert run.state is RunState.SUCCESS
    assert run.tasks["once"].try_number == 2 and run.tasks["once"].outputs == {"try": 2}


@pytest.mark.kernel
def test_timeout_stops_a_sleeping_notebook(project, service):
    write_notebook(project / "sleepy.ipynb", "x = 1", SLEEP.format(60))
    spec = write_yaml(
        project / "pipeline.yaml",
        """
name: sleepy
tasks:
  nap: {notebook: sleepy.ipynb, timeout: 8s}
  after: {notebook: sleepy.ipynb, upstream: [nap]}
""",
    )
    run = service.run_pipeline(spec)

    # (the timeout counts from the claim, the kernel's start included: 2 s were spent before the
    # sleeping cell was reached on a loaded machine)
    nap = run.tasks["nap"]
    assert nap.state is TaskState.FAILED
    assert "timed out after 8s" in nap.error and "time.sleep(60)" in nap.error
    assert (nap.ended_at - nap.started_at).total_seconds() < 30
    assert run.tasks["after"].state is TaskState.UPSTREAM_FAILED
    nb = nbformat.read(nap.output_path, as_version=4)
    assert any(o.get("ename") == "TaskStopped" for c in nb.cells if c.cell_type == "code" for o in c.outputs)


@pytest.mark.kernel
def test_record_passes_values_two_hops_down(project, service):
    write_notebook(
        project / "a.ipynb", "import nbsched\nnbsched.record('rows', 41)\nnbsched.record('meta', {'src': 'a'})"
    )
    write_notebook(
        project / "b.ipynb",
        "import nbsched\nnbsched.record('rows', upstream['a']['rows'] + 1)\n"
        "nbsched.record('src', upstream['a']['meta']['src'])",
    )
    write_notebook(
        project / "c.ipynb",
        "import nbsched\nassert upstream['b']['rows'] == 42, upstream\n"
        "nbsched.record('seen', [upstream['b']['rows'], upstream['b']['src']])",
    )
    spec = write_yaml(
        project / "pipeline.yaml",
        """
name: hops
tasks:
  a: {notebook: a.ipynb}
  b: {notebook: b.ipynb, upstream: [a]}
  c: {notebook: c.ipynb, upstream: [b]}
""",
    )
    run = service.run_pipeline(spec)

    assert run.state is RunState.SUCCESS, {n: t.error for n, t in run.tasks.items()}
    assert run.tasks["a"].outputs == {"rows": 41, "meta": {"src": "a"}}
    assert run.tasks["c"].outputs == {"seen": [42, "a"]}


@pytest.mark.kernel
def test_branch_skips_the_unchosen_path_and_its_descendants(project, service):
    write_notebook(project / "choose.ipynb", "import nbsched\nnbsched.branch(['small'])")
    write_notebook(project / "ok.ipynb", "x = 1")
    spec = write_yaml(
        project / "pipeline.yaml",
        """
name: branching
tasks:
  choose: {notebook: choose.ipynb}
  small:  {notebook: ok.ipynb, upstream: [choose]}
  big:    {notebook: ok.ipynb, upstream: [choose]}
  big_report: {notebook: ok.ipynb, upstream: [big]}
  join:   {notebook: ok.ipynb, upstream: [small, big], trigger_rule: none_failed_min_one_success}
""",
    )
    run = service.run_pipeline(spec)

    states = {n: t.state for n, t in run.tasks.items()}
    assert states == {
        "choose": TaskState.SUCCESS,
        "small": TaskState.SUCCESS,
        "big": TaskState.SKIPPED,
        "big_report": TaskState.SKIPPED,
        "join": TaskState.SUCCESS,
    }
    assert run.state is RunState.SUCCESS


@pytest.mark.kernel
def test_branch_to_a_task_that_is_not_downstream_fails_the_task(project, service):
    write_notebook(project / "choose.ipynb", "import nbsched\nnbsched.branch(['nope'])")
    write_notebook(project / "ok.ipynb", "x = 1")
    spec = write_yaml(
        project / "pipeline.yaml",
        """
name: badbranch
tasks:
  choose: {notebook: choose.ipynb}
  next:   {notebook: ok.ipynb, upstream: [choose]}
""",
    )
    run = service.run_pipeline(spec)
    assert run.tasks["choose"].state is TaskState.FAILED
    assert "'nope' is not a direct downstream task of 'choose'" in run.tasks["choose"].error


@pytest.mark.kernel
def test_overrides_and_templates_reach_the_notebook(project):
    write_notebook(
        project / "show.ipynb",
        "import nbsched\nfor k in ['region', 'day', 'rid', 'label', 'limit', 'task', 'ld']:\n"
        "    nbsched.record(k, globals()[k])",
        params="region = 'eu'\nday = ''\nrid = ''\nlabel = ''\nlimit = 0\nupstream = {}",
    )
    write_yaml(
        project / "pipeline.yaml",
        """
name: templated
params: {region: eu, day: "{{ logical_date | ds }}", rid: "{{ run_id }}", label: "{{ params.region }}-x"}
tasks:
  show: {notebook: show.ipynb, params: {limit: 10, task: "{{ task }}", ld: "{{ logical_date }}"}}
""",
    )
    code, run = run_json("pipeline.yaml", "-p", "region=us", "-p", "limit=25", cwd=project)

    assert code == 0, run
    out = run["tasks"]["show"]["outputs"]
    assert out["region"] == "us" and out["limit"] == 25
    assert out["label"] == "us-x"
    assert out["rid"] == run["run_id"]
    assert out["day"] == datetime.now(timezone.utc).strftime("%Y-%m-%d")
    assert out["task"] == "show"
    assert run["params"] == {"region": "us", "limit": 25}


@pytest.mark.kernel
def test_builtin_parameters_are_injected(project, service):
    write_notebook(
        project / "b.ipynb",
        "import nbsched\nnbsched.record('b', [nbsched_run_id, nbsched_task, logical_date, upstream])",
        params="nbsched_run_id = nbsched_task = logical_date = None\nupstream = {}",
    )
    spec = write_yaml(project / "pipeline.yaml", "name: builtins\ntasks:\n  only: {notebook: b.ipynb}\n")
    run = service.run_pipeline(spec)
    run_id, task, logical_date, upstream = run.tasks["only"].outputs["b"]
    assert (run_id, task, upstream) == (run.id, "only", {})
    assert datetime.fromisoformat(logical_date) == run.logical_date


@pytest.mark.kernel
def test_notebook_runs_in_its_own_folder(project, service):
    write_notebook(project / "sub" / "where.ipynb", "import os, nbsched\nnbsched.record('cwd', os.getcwd())")
    spec = write_yaml(project / "pipeline.yaml", "name: cwd\ntasks:\n  w: {notebook: sub/where.ipynb}\n")
    run = service.run_pipeline(spec)
    assert Path(run.tasks["w"].outputs["cwd"]).resolve() == (project / "sub").resolve()


@pytest.mark.kernel
def test_single_notebook_is_a_one_task_pipeline(project):
    write_notebook(project / "Daily Report.ipynb", "import nbsched\nnbsched.record('ok', True)")
    code, run = run_json("Daily Report.ipynb", cwd=project)
    assert code == 0
    assert run["pipeline"] == "daily-report"
    assert run["tasks"]["daily-report"]["outputs"] == {"ok": True}


@pytest.mark.kernel
def test_failed_run_exits_1_and_json_has_every_field(project):
    write_notebook(project / "boom.ipynb", "1/0")
    write_yaml(project / "pipeline.yaml", "name: boom\ntasks:\n  boom: {notebook: boom.ipynb}\n")
    code, run = run_json("pipeline.yaml", cwd=project)
    assert code == 1
    assert run["state"] == "failed"
    task = run["tasks"]["boom"]
    assert set(task) >= {"state", "try_number", "error", "output_path", "outputs", "started_at", "ended_at"}
    assert task["state"] == "failed" and "ZeroDivisionError" in task["error"]
    assert json.loads(json.dumps(run)) == run


@pytest.mark.kernel
def test_a_running_task_shows_the_cell_its_notebook_is_on(project, service):
    import threading
    import time

    write_notebook(
        project / "slow.ipynb", "import time", "# a markdown-like comment only\nx = 1", "time.sleep(4)", "y = 2"
    )
    finished: list = []
    runner = threading.Thread(target=lambda: finished.append(service.run_pipeline(project / "slow.ipynb")))
    runner.start()
    seen = None
    deadline = time.monotonic() + 60
    while runner.is_alive() and time.monotonic() < deadline and seen is None:
        runs = service.list_runs(limit=1)
        task = runs[0].tasks["slow"] if runs else None
        if task is not None and task.cell and task.cell["source"] == "time.sleep(4)":
            seen = (task.state, task.cell)
        time.sleep(0.1)
    runner.join(timeout=60)
    run = finished[0]
    # numbered as the user's notebook: markdown, parameters, import, x = 1, sleep (5 of 6); the
    # parameters cell papermill injected is not counted
    cell = {"index": 5, "count": 6, "source": "time.sleep(4)", "injected": False}
    assert seen == (TaskState.RUNNING, cell)
    assert run.state is RunState.SUCCESS and run.tasks["slow"].cell is None


def run_with(service, executor, run_id):
    """Run ``run_id`` with ``executor``, which records what it is handed: whatever executor is
    configured, the runner decides which notebook a try may read."""
    from nbsched.runner import Runner

    runner = Runner(service.store, executor, service.config.runs_dir, spec_loader=service.spec_of, poll=0.05)
    with runner:
        service.store.set_run_owner(run_id, runner.id)
        runner.run([run_id])
    return service.get_run(run_id)


def test_a_notebook_swapped_for_a_symlink_out_of_the_root_is_not_handed_to_any_executor(project, service):
    root = project / "root"
    write_notebook(root / "swap.ipynb", "x = 1")
    outside = write_notebook(project / "elsewhere" / "secret.ipynb", "open('PWNED', 'w')")
    service.register_spec({"name": "swap", "tasks": {"t": "swap.ipynb"}}, root, confine_to=root)
    assert service.store.get_pipeline("swap").spec["root"] == str(root)

    (root / "swap.ipynb").unlink()
    (root / "swap.ipynb").symlink_to(outside)  # after registering
    executor = FakeExecutor()
    run = run_with(service, executor, service.trigger("swap"))

    assert executor.requests == []
    assert run.state is RunState.FAILED
    assert run.tasks["t"].state is TaskState.FAILED
    assert run.tasks["t"].error == "tasks.t.notebook: outside the server root"


def test_a_try_gets_the_checked_notebook_resolved(project, service):
    root = project / "root"
    real = write_notebook(root / "sub" / "real.ipynb", "x = 1")
    (root / "link.ipynb").symlink_to(real)  # a symlink that stays inside the root is fine
    service.register_spec({"name": "inside", "tasks": {"t": "link.ipynb"}}, root, confine_to=root)
    executor = FakeExecutor()
    run = run_with(service, executor, service.trigger("inside"))
    assert run.state is RunState.SUCCESS
    [request] = executor.requests
    assert request.notebook == real.resolve()  # what was checked is what the executor reads


def test_a_pipeline_of_the_users_own_files_has_no_root(project, service):
    # registered from the CLI (the user's own files, run with the user's rights): a symlink anywhere is followed
    write_notebook(project / "elsewhere" / "shared.ipynb", "x = 1")
    (project / "mine.ipynb").symlink_to(project / "elsewhere" / "shared.ipynb")
    write_yaml(project / "pipeline.yaml", "name: mine\ntasks: {t: mine.ipynb}\n")
    service.register(project / "pipeline.yaml")
    assert service.store.get_pipeline("mine").spec["root"] is None
    executor = FakeExecutor()
    assert run_with(service, executor, service.trigger("mine")).state is RunState.SUCCESS
