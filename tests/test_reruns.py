"""Re-running parts of a pipeline: repairing a finished run (chosen tasks, and their downstream,
with new parameters, the other tasks keeping their results) and partial runs (``--only``,
``--from``) that take the values they need from earlier runs. The runner runs with a
``FakeExecutor`` (no kernels) on a real store; the CLI tests run real kernels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import nbsched, write_notebook, write_yaml
from fakes import Fail, FakeClock, FakeExecutor, Succeed

from nbsched.errors import ConfigError, Conflict, SpecError
from nbsched.report import trigger_label
from nbsched.runner import Runner
from nbsched.service import Config, Service
from nbsched.states import RunState, TaskState

SPEC = """name: nightly
params: {k: 1}
tasks:
  extract: extract.ipynb
  clean: {notebook: clean.ipynb, upstream: [extract]}
  report: {notebook: report.ipynb, upstream: [clean]}
  side: side.ipynb
"""


@pytest.fixture
def service(project: Path, db_url: str):
    for name in ("extract", "clean", "report", "side"):
        write_notebook(project / f"{name}.ipynb", "x = 1", params="k = 0\nupstream = {}")
    write_yaml(project / "pipeline.yaml", SPEC)
    svc = Service(Config.resolve(project=project, db_url=db_url))
    svc.register(project / "pipeline.yaml")
    yield svc
    svc.close()


def _finish(service: Service, executor: FakeExecutor, run_id: str) -> None:
    """Run the run to its end with ``executor``, as a daemon's runner would."""
    with Runner(service.store, executor, service.config.runs_dir, spec_loader=service.spec_of, poll=0) as runner:
        for _ in range(50):
            runner.step(service.store.list_runs(states=[RunState.QUEUED, RunState.RUNNING], limit=None))
            runner.wait(0)
            if service.store.get_run(run_id).state.finished:
                return
    raise AssertionError(f"run {run_id} did not end")


def _params(executor: FakeExecutor, task: str) -> list[int]:
    return [r.parameters["k"] for r in executor.requests if r.task == task]


def test_a_repair_reruns_a_task_and_its_downstream_with_new_values_and_keeps_the_rest(service):
    run_id = service.trigger("nightly")
    first = FakeExecutor({"extract": [Succeed({"rows": 3})], "side": [Succeed({"s": 1})]})
    _finish(service, first, run_id)
    before = service.get_run(run_id)
    assert before.state is RunState.SUCCESS

    requeued = service.retry(run_id, ["clean"], downstream=True, params={"k": 2})

    assert requeued == ["clean", "report"]
    run = service.get_run(run_id)
    assert run.state is RunState.QUEUED
    for kept in ("extract", "side"):  # untouched: same state, outputs and tries
        assert run.tasks[kept] == before.tasks[kept]
    assert run.tasks["clean"].state is TaskState.PENDING and run.tasks["clean"].params == {"k": 2}
    (repair,) = run.repairs
    assert repair["tasks"] == ["clean"] and repair["downstream"] is True and repair["params"] == {"k": 2}

    again = FakeExecutor({"clean": [Succeed({"c": 2})]})
    _finish(service, again, run_id)
    run = service.get_run(run_id)
    assert run.state is RunState.SUCCESS
    assert sorted({r.task for r in again.requests}) == ["clean", "report"]  # extract and side did not run
    assert _params(again, "clean") == [2] and _params(again, "report") == [2]
    assert run.tasks["clean"].try_number == 2 and [t.try_number for t in run.tasks["clean"].tries] == [1, 2]
    assert run.tasks["clean"].outputs == {"c": 2} and run.tasks["extract"].outputs == {"rows": 3}
    upstream = next(r for r in again.requests if r.task == "clean").parameters["upstream"]
    assert upstream == {"extract": {"rows": 3}}  # the kept task's recorded values


def test_a_repair_without_downstream_reruns_only_the_task_and_a_failed_one_can_be_repaired(service):
    run_id = service.trigger("nightly")
    _finish(service, FakeExecutor({"report": [Fail()]}), run_id)
    assert service.get_run(run_id).state is RunState.FAILED
    assert service.retry(run_id, ["extract"]) == ["extract"]
    executor = FakeExecutor()
    _finish(service, executor, run_id)
    assert [r.task for r in executor.requests] == ["extract"]
    assert service.get_run(run_id).state is RunState.FAILED  # report still failed: the usual rule
    assert service.retry(run_id) == ["report"]  # plain retry: the failed ones, as before


def test_repair_mistakes_are_one_line(service):
    run_id = service.trigger("nightly")
    with pytest.raises(Conflict, match="is queued: wait for it to end"):
        service.retry(run_id, ["clean"])
    _finish(service, FakeExecutor(), run_id)
    with pytest.raises(
        ConfigError, match=r"--task 'claen': pipeline nightly has no such task \(did you mean 'clean'\?\)"
    ):
        service.retry(run_id, ["claen"])
    with pytest.raises(ConfigError, match="-p and --downstream go with --task"):
        service.retry(run_id, params={"k": 3})
    with pytest.raises(Conflict, match="only failed or cancelled runs can be retried"):
        service.retry(run_id)
    with pytest.raises(SpecError, match="template error"):
        service.retry(run_id, ["clean"], params={"k": "{{ nope.x }}"})
    assert service.get_run(run_id).state is RunState.SUCCESS and service.get_run(run_id).repairs == ()


@pytest.mark.kernel
def test_retry_task_downstream_with_a_new_value_from_the_cli(project):
    _three_tasks(project)
    first = json.loads(nbsched("run", "pipeline.yaml", "--json", cwd=project, check=True).stdout)
    run_id = first["run_id"]
    proc = nbsched("retry", run_id, "--task", "clean", "--downstream", "-p", "k=3", "--run", cwd=project)
    assert proc.returncode == 0, proc.stderr
    assert f"run {run_id}: re-queued clean, report" in proc.stdout
    assert "repaired" in proc.stdout and "clean (+downstream) with k=3" in proc.stdout
    run = json.loads(nbsched("show", run_id, "--json", cwd=project, check=True).stdout)
    assert run["state"] == "success"
    assert [run["tasks"][t]["outputs"]["n"] for t in ("extract", "clean", "report")] == [10, 13, 14]  # 10 + 3
    assert run["tasks"]["extract"] == first["tasks"]["extract"]  # kept as it was
    assert [t["try_number"] for t in run["tasks"]["clean"]["tries"]] == [1, 2]
    assert (project / "nbsched-runs" / "p" / run_id / "clean.try1.ipynb").exists()  # the first try's notebook kept
    bad = nbsched("retry", run_id, "--task", "nope", cwd=project)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("Error: --task 'nope'")


def _three_tasks(project: Path) -> None:
    write_notebook(
        project / "extract.ipynb", "import nbsched\nnbsched.record('n', 10 * k)", params="k = 1\nupstream = {}"
    )
    write_notebook(
        project / "clean.ipynb",
        "import nbsched\nnbsched.record('n', upstream['extract']['n'] + k)",
        params="k = 1\nupstream = {}",
    )
    write_notebook(
        project / "report.ipynb",
        "import nbsched\nnbsched.record('n', upstream['clean']['n'] + 1)",
        params="upstream = {}",
    )
    write_yaml(
        project / "pipeline.yaml",
        "name: p\ntasks:\n  extract: extract.ipynb\n  clean: {notebook: clean.ipynb, upstream: [extract]}\n"
        "  report: {notebook: report.ipynb, upstream: [clean]}\n",
    )


def _run(project: Path, *args: str) -> dict:
    proc = nbsched("run", "pipeline.yaml", "--json", *args, cwd=project)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.kernel
def test_run_from_and_only_take_the_values_they_need_from_the_latest_successful_runs(project):
    _three_tasks(project)
    bad = nbsched("run", "pipeline.yaml", "--from", "clean", cwd=project)  # extract never ran: nothing to take
    assert bad.returncode == 2
    assert bad.stderr.strip() == (
        "Error: --from: task 'clean' needs the values of 'extract', which never succeeded in a run of p "
        "(run it first, or select it too)"
    )
    first = _run(project, "-p", "k=2")
    assert [first["tasks"][t]["outputs"]["n"] for t in ("extract", "clean", "report")] == [20, 22, 23]

    partial = _run(project, "--from", "clean", "-p", "k=5")
    assert partial["selection"] == {
        "tasks": ["clean", "report"],
        "borrowed": {"extract": first["run_id"]},
        "from": "clean",
    }
    assert partial["state"] == "success"
    assert partial["tasks"]["extract"]["state"] == "skipped" and partial["tasks"]["extract"]["error"] == "not selected"
    assert partial["tasks"]["extract"]["try_number"] == 0  # not run
    assert [partial["tasks"][t]["outputs"]["n"] for t in ("clean", "report")] == [25, 26]  # 20 from the first run

    only = _run(project, "--only", "report")
    assert only["selection"]["borrowed"] == {"clean": partial["run_id"]}  # the latest run where clean succeeded
    assert only["tasks"]["report"]["outputs"] == {"n": 26}
    assert [only["tasks"][t]["state"] for t in ("extract", "clean")] == ["skipped", "skipped"]
    shown = nbsched("show", only["run_id"], cwd=project, check=True).stdout
    assert f"partial run: report; values of clean from run {partial['run_id']}" in shown
    assert "  not selected: extract, clean" in shown


def test_partial_run_mistakes_are_one_line_and_make_no_run(project):
    write_notebook(project / "nb.ipynb", "x = 1")
    write_yaml(project / "pipeline.yaml", "name: p\ntasks:\n  a: nb.ipynb\n  b: {notebook: nb.ipynb, upstream: [a]}\n")
    for args, message in [
        (("--only", "c"), "Error: --only 'c': pipeline p has no such task (tasks: a, b)"),
        (("--from", "bb"), "Error: --from 'bb': pipeline p has no such task (did you mean 'b'?)"),
        (("--only", "a", "--from", "b"), "Error: --only and --from: give one of them"),
    ]:
        proc = nbsched("run", "pipeline.yaml", *args, cwd=project)
        assert proc.returncode == 2 and proc.stderr.strip() == message, proc.stderr
    assert nbsched("runs", cwd=project, check=True).stdout.startswith("no runs")


def test_a_run_started_again_keeps_its_first_start_and_adds_up_its_time(service):
    clock = FakeClock()
    service.store.clock = clock

    def finish(executor: FakeExecutor, run_id: str) -> None:
        with Runner(service.store, executor, service.config.runs_dir, spec_loader=service.spec_of, poll=0) as runner:
            while not service.store.get_run(run_id).state.finished:
                runner.step(service.store.list_runs(states=[RunState.QUEUED, RunState.RUNNING], limit=None))
                clock.advance(10)  # every look takes 10 s
                runner.wait(0)

    run_id = service.trigger("nightly")
    finish(FakeExecutor({"report": [Fail()]}), run_id)
    first = service.get_run(run_id)
    clock.advance(3600)
    service.retry(run_id)  # the failed task again
    queued = service.get_run(run_id)
    assert queued.started_at is None and queued.first_started_at == first.started_at
    assert queued.spans == ((first.started_at, first.ended_at),) and queued.to_json()["duration"] is None
    finish(FakeExecutor(), run_id)
    clock.advance(3600)
    service.retry(run_id, ["clean"], downstream=True)
    finish(FakeExecutor(), run_id)

    run = service.get_run(run_id)
    assert run.state is RunState.SUCCESS and len(run.spans) == 3
    assert run.first_started_at == first.started_at and run.started_at == run.spans[2][0]
    lengths = [(end - start).total_seconds() for start, end in run.spans]
    assert all(length > 0 for length in lengths) and run.to_json()["duration"] == sum(lengths)
    assert (run.spans[2][0] - run.first_started_at).total_seconds() > 7200  # the hours between are not counted
    assert trigger_label(run.to_json()) == "manual, repaired ×1, retried ×1"  # noqa: RUF001 - a multiplication sign
    listed = next(r for r in service.list_runs() if r.id == run_id)
    assert listed.to_json() == run.to_json()
