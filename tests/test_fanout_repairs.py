"""Where repairs meet mapped tasks: a repaired (or retried) for_each is expanded again from its
upstream's new list, instances no longer in it are removed (their tries kept), and each repair's
parameters are its own. The runner runs with a ``FakeExecutor`` on a real store (SQLite and
PostgreSQL); the CLI tests run real kernels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import nbsched, write_notebook, write_yaml
from fakes import HANG, Fail, FakeExecutor, Succeed
from test_server import api, daemon, finished_run, jp_server_config  # noqa: F401 - fixtures, helpers

from nbsched.errors import ConfigError
from nbsched.runner import Runner
from nbsched.service import Config, Service
from nbsched.states import RunState, TaskState

OPEN = [RunState.QUEUED, RunState.RUNNING]

FILES = """name: files
tasks:
  list_files: list_files.ipynb
  process: {notebook: process.ipynb, upstream: [list_files], for_each: "{{ upstream.list_files.files }}", as: path}
  summary: {notebook: summary.ipynb, upstream: [process], trigger_rule: all_done}
"""


@pytest.fixture
def service(project: Path, db_url: str):
    for name in ("list_files", "process", "summary", "train", "compare"):
        write_notebook(project / f"{name}.ipynb", "x = 1")
    svc = Service(Config.resolve(project=project, db_url=db_url))
    yield svc
    svc.close()


def _register(service: Service, project: Path, spec: str) -> None:
    write_yaml(project / "pipeline.yaml", spec)
    service.register(project / "pipeline.yaml")


class Lister(FakeExecutor):
    """list_files records ``n`` names, ``n`` its parameter; the other tasks as scripted."""

    def _spawn(self, fn, attempt, events):  # type: ignore[no-untyped-def]
        request = attempt.request
        if request.task == "list_files":
            n = request.parameters.get("n", 2)
            self.script["list_files"] = [Succeed({"files": [f"f{i}.csv" for i in range(n)]})]
        super()._spawn(fn, attempt, events)


def _finish(service: Service, executor: FakeExecutor, run_id: str) -> None:
    with Runner(service.store, executor, service.config.runs_dir, spec_loader=service.spec_of, poll=0) as runner:
        for _ in range(50):
            runner.step(service.store.list_runs(states=OPEN, limit=None))
            runner.wait(0)
            if service.store.get_run(run_id).state.finished:
                return
    raise AssertionError(f"run {run_id} did not end")


def _summary_got(executor: FakeExecutor) -> list[str]:
    """The paths the last try of summary received, one per instance of process."""
    last = [r for r in executor.requests if r.task == "summary"][-1]
    return [i["params"]["path"] for i in last.parameters["upstream"]["process"]]


def _instances(service: Service, run_id: str) -> list[tuple[str, str, str | None]]:
    process = service.get_run(run_id).to_json()["tasks"]["process"]
    return [(i["name"], i["state"], (i["instance_params"] or {}).get("path")) for i in process["instances"]]


def test_repairing_a_for_each_upstream_expands_the_mapped_task_again(service, project):
    _register(service, project, FILES)
    run_id = service.trigger("files", {"n": 2})
    executor = Lister()
    _finish(service, executor, run_id)
    assert _summary_got(executor) == ["f0.csv", "f1.csv"]

    # longer: two new instances, and summary sees all four
    service.retry(run_id, ["list_files"], downstream=True, params={"n": 4})
    _finish(service, executor, run_id)
    run = service.get_run(run_id)
    assert run.state is RunState.SUCCESS
    assert _instances(service, run_id) == [(f"process[{i}]", "success", f"f{i}.csv") for i in range(4)]
    assert _summary_got(executor) == [f"f{i}.csv" for i in range(4)]
    processed = [r.parameters["path"] for r in executor.requests if r.task.startswith("process[")]
    assert processed == ["f0.csv", "f1.csv", "f0.csv", "f1.csv", "f2.csv", "f3.csv"]

    # shorter: the last two are removed from the run, their tries kept
    service.retry(run_id, ["list_files"], downstream=True, params={"n": 2})
    _finish(service, executor, run_id)
    run = service.get_run(run_id)
    assert run.state is RunState.SUCCESS
    assert _instances(service, run_id) == [
        ("process[0]", "success", "f0.csv"),
        ("process[1]", "success", "f1.csv"),
        ("process[2]", "removed", "f2.csv"),
        ("process[3]", "removed", "f3.csv"),
    ]
    assert _summary_got(executor) == ["f0.csv", "f1.csv"]
    removed = run.tasks["process[3]"]
    assert [t.state for t in removed.tries] == [TaskState.SUCCESS] and (removed.try_number, removed.max_tries) == (1, 1)
    assert "no longer in its for_each list (2 items now)" in (removed.error or "")
    assert run.to_json()["tasks"]["process"]["instance_states"] == {"success": 2, "removed": 2}
    assert run.to_json()["tasks"]["process"]["state"] == "success"

    # and longer again: the removed ones come back, with the new list's values, their tries counting on
    service.retry(run_id, ["list_files"], downstream=True, params={"n": 3})
    _finish(service, executor, run_id)
    assert _instances(service, run_id) == [
        ("process[0]", "success", "f0.csv"),
        ("process[1]", "success", "f1.csv"),
        ("process[2]", "success", "f2.csv"),
        ("process[3]", "removed", "f3.csv"),
    ]
    assert [t.try_number for t in service.get_run(run_id).tasks["process[2]"].tries] == [1, 2]
    assert _summary_got(executor) == ["f0.csv", "f1.csv", "f2.csv"]


def test_a_for_each_emptied_by_a_repair_removes_every_instance_and_counts_as_skipped(service, project):
    _register(
        service, project, FILES.replace("summary:", "audit: {notebook: summary.ipynb, upstream: [process]}\n  summary:")
    )
    run_id = service.trigger("files", {"n": 2})
    executor = Lister()
    _finish(service, executor, run_id)
    service.retry(run_id, ["list_files"], downstream=True, params={"n": 0})
    _finish(service, executor, run_id)
    run = service.get_run(run_id)
    assert [s for _, s, _ in _instances(service, run_id)] == ["removed", "removed"]
    assert run.to_json()["tasks"]["process"]["state"] == "removed"
    assert run.tasks["audit"].state is TaskState.SKIPPED  # all_success after an empty list, as on a first run
    assert _summary_got(executor) == [] and run.state is RunState.SUCCESS
    # and a list again: the same rows come back
    service.retry(run_id, ["list_files"], downstream=True, params={"n": 1})
    _finish(service, executor, run_id)
    assert _instances(service, run_id) == [("process[0]", "success", "f0.csv"), ("process[1]", "removed", "f1.csv")]
    assert service.get_run(run_id).tasks["audit"].state is TaskState.SUCCESS


def test_a_removed_instance_cannot_be_repaired_alone(service, project):
    _register(service, project, FILES)
    run_id = service.trigger("files", {"n": 3})
    executor = Lister()
    _finish(service, executor, run_id)
    service.retry(run_id, ["list_files"], downstream=True, params={"n": 1})
    _finish(service, executor, run_id)
    with pytest.raises(
        ConfigError,
        match=r"^--task 'process\[2\]': removed from run \S+ \(no longer in its for_each list \(1 item now\)\); "
        r"re-run process to expand it again$",
    ):
        service.retry(run_id, ["process[2]"])
    # a plain retry leaves removed instances alone, and a repair of the task expands it again
    assert service.retry(run_id, ["process"]) == ["process[0]", "process[1]", "process[2]"]
    _finish(service, executor, run_id)
    assert [s for _, s, _ in _instances(service, run_id)] == ["success", "removed", "removed"]


GRID = """name: models
tasks:
  train: {notebook: train.ipynb, grid: {region: [eu, us], model: [linear, tree]}}
  compare: {notebook: compare.ipynb, upstream: [train]}
"""


def _fixes(executor: FakeExecutor, since: int) -> dict[str, object]:
    return {r.task: r.parameters.get("fix") for r in executor.requests[since:]}


def test_each_repair_has_its_own_parameters(service, project):
    _register(service, project, GRID)
    run_id = service.trigger("models")
    executor = FakeExecutor()
    _finish(service, executor, run_id)
    before = len(executor.requests)
    service.retry(run_id, ["train[3]"], params={"fix": 1})
    _finish(service, executor, run_id)
    assert _fixes(executor, before) == {"train[3]": 1}

    before = len(executor.requests)
    service.retry(run_id, ["train"], downstream=True)  # no -p: no fix, for train[3] too
    _finish(service, executor, run_id)
    assert _fixes(executor, before) == {**{f"train[{i}]": None for i in range(4)}, "compare": None}
    run = service.get_run(run_id)
    assert [t.params for t in run.tasks.values()] == [None] * 5
    assert [(r["tasks"], r["params"]) for r in run.repairs] == [(["train[3]"], {"fix": 1}), (["train"], {})]

    before = len(executor.requests)
    service.retry(run_id, ["compare"], params={"fix": 2})
    _finish(service, executor, run_id)
    assert _fixes(executor, before) == {"compare": 2}
    assert service.get_run(run_id).tasks["compare"].params == {"fix": 2}


def test_a_plain_retry_keeps_the_values_of_the_repair_it_retries(service, project):
    _register(service, project, GRID)
    run_id = service.trigger("models")
    executor = FakeExecutor({"train[1]": [Succeed(), Fail()]})
    _finish(service, executor, run_id)
    service.retry(run_id, ["train[1]"], params={"fix": 1})
    _finish(service, executor, run_id)
    assert service.get_run(run_id).state is RunState.FAILED
    executor.script["train[1]"] = [Succeed()]
    before = len(executor.requests)
    assert service.retry(run_id) == ["train[1]"]  # the failed: one more try of that repair's
    _finish(service, executor, run_id)
    assert _fixes(executor, before) == {"train[1]": 1}


def _files_notebooks(project: Path) -> None:
    write_notebook(
        project / "list_files.ipynb",
        "import nbsched\nnbsched.record('files', [f'f{i}.csv' for i in range(n)])",
        params="n = 2",
    )
    write_notebook(project / "process.ipynb", "import nbsched\nnbsched.record('up', path.upper())", params="path = ''")
    write_notebook(
        project / "summary.ipynb",
        "import nbsched\nnbsched.record('got', [(i['params']['path'], i['state']) for i in upstream['process']])",
    )
    write_yaml(project / "pipeline.yaml", FILES)


def _show(project: Path, run_id: str) -> dict:
    return json.loads(nbsched("show", run_id, "--json", cwd=project, check=True).stdout)


@pytest.mark.kernel
@pytest.mark.slow
def test_a_for_each_upstream_repaired_from_the_cli_to_a_longer_then_a_shorter_list(project):
    _files_notebooks(project)
    run_id = json.loads(nbsched("run", "pipeline.yaml", "-p", "n=2", "--json", cwd=project, check=True).stdout)[
        "run_id"
    ]

    proc = nbsched("retry", run_id, "--task", "list_files", "--downstream", "-p", "n=4", "--run", cwd=project)
    assert proc.returncode == 0, proc.stderr
    run = _show(project, run_id)
    assert run["state"] == "success"
    assert run["tasks"]["process"]["instance_states"] == {"success": 4}
    assert [i["outputs"]["up"] for i in run["tasks"]["process"]["instances"]] == [f"F{i}.CSV" for i in range(4)]
    assert run["tasks"]["summary"]["outputs"]["got"] == [[f"f{i}.csv", "success"] for i in range(4)]

    proc = nbsched("retry", run_id, "--task", "list_files", "--downstream", "-p", "n=2", "--run", cwd=project)
    assert proc.returncode == 0, proc.stderr
    run = _show(project, run_id)
    assert run["state"] == "success"
    process = run["tasks"]["process"]
    assert process["state"] == "success" and process["instance_states"] == {"success": 2, "removed": 2}
    assert [(i["name"], i["state"], len(i["tries"])) for i in process["instances"]] == [
        ("process[0]", "success", 3),
        ("process[1]", "success", 3),
        ("process[2]", "removed", 1),
        ("process[3]", "removed", 1),
    ]
    assert run["tasks"]["summary"]["outputs"]["got"] == [["f0.csv", "success"], ["f1.csv", "success"]]
    shown = nbsched("show", run_id, cwd=project, check=True).stdout
    assert "process[path=f3.csv]  removed" in shown
    assert "  process[3]: no longer in its for_each list (2 items now)" in shown
    assert shown.count("(+downstream) with n=") == 2  # each repair with its own value
    assert "list_files (+downstream) with n=4" in shown and "list_files (+downstream) with n=2" in shown
    (listed,) = nbsched("runs", cwd=project, check=True).stdout.splitlines()[1:]
    assert listed.split()[-1] == "4/4"  # list_files, two instances, summary: the removed ones are not of the run
    # the removed instance's notebook of its one try is kept
    assert (project / "nbsched-runs" / "files" / run_id / "process[3].ipynb").exists()


KEYS = """name: keys
tasks:
  list_files: list_files.ipynb
  process: {notebook: process.ipynb, upstream: [list_files], for_each: "{{ upstream.list_files.%s }}"}
"""


@pytest.mark.parametrize(
    ("key", "recorded", "items", "error"),
    [
        ("items", {"items": ["a", "b"]}, [{"item": "a"}, {"item": "b"}], None),  # the key, not dict.items
        ("values", {"values": [1]}, [{"item": 1}], None),
        ("keys", {"files": ["a"]}, None, "tasks.process.for_each: upstream.list_files.keys is not a recorded value ("),
    ],
)
def test_a_for_each_names_a_recorded_key_before_a_dict_method(service, project, key, recorded, items, error):
    _register(service, project, KEYS % key)
    run_id = service.trigger("keys")
    _finish(service, FakeExecutor({"list_files": [Succeed(recorded)]}), run_id)
    run = service.get_run(run_id)
    if error is None:
        assert [t.instance_params for n, t in run.tasks.items() if n.startswith("process[")] == items
    else:
        assert run.tasks["process"].state is TaskState.FAILED and run.tasks["process"].error.startswith(error)
        assert "name one by its key, like upstream.TASK.KEY" in run.tasks["process"].error


@pytest.mark.kernel
def test_a_recorded_key_named_like_a_dict_method_from_the_cli(project):
    write_notebook(project / "list_files.ipynb", "import nbsched\nnbsched.record('items', ['a', 'b'])")
    write_notebook(project / "process.ipynb", "import nbsched\nnbsched.record('got', item)", params="item = ''")
    write_yaml(project / "pipeline.yaml", KEYS % "items")
    proc = nbsched("run", "pipeline.yaml", "--json", cwd=project)
    assert proc.returncode == 0, proc.stderr
    process = json.loads(proc.stdout)["tasks"]["process"]
    assert [i["outputs"]["got"] for i in process["instances"]] == ["a", "b"]


@pytest.mark.kernel
def test_repairs_from_the_cli_each_with_its_own_values(project):
    write_notebook(project / "train.ipynb", "import nbsched\nnbsched.record('fix', fix)", params="fix = 0\nregion = ''")
    write_notebook(
        project / "compare.ipynb", "import nbsched\nnbsched.record('fix', fix)", params="fix = 0\nupstream = {}"
    )
    write_yaml(project / "pipeline.yaml", GRID)
    run_id = json.loads(nbsched("run", "pipeline.yaml", "--json", cwd=project, check=True).stdout)["run_id"]
    nbsched("retry", run_id, "--task", "train[3]", "-p", "fix=1", "--run", cwd=project, check=True)
    nbsched("retry", run_id, "--task", "train", "--run", cwd=project, check=True)
    run = _show(project, run_id)
    assert [i["outputs"]["fix"] for i in run["tasks"]["train"]["instances"]] == [0, 0, 0, 0]
    assert [i["params"] for i in run["tasks"]["train"]["instances"]] == [None] * 4
    assert [(r["tasks"], r["params"]) for r in run["repairs"]] == [(["train[3]"], {"fix": 1}), (["train"], {})]
    lines = [
        line
        for line in nbsched("show", run_id, cwd=project, check=True).stdout.splitlines()
        if line.lstrip().startswith("repaired ")
    ]
    assert [line.split(": ", 1)[1] for line in lines] == ["train[3] with fix=1", "train"]


@pytest.mark.kernel
@pytest.mark.slow
async def test_repairs_of_a_for_each_upstream_over_rest(api, daemon, jp_root_dir):  # noqa: F811 - fixtures
    _files_notebooks(jp_root_dir)
    spec = {
        "name": "files",
        "tasks": {
            "list_files": {"notebook": "list_files.ipynb"},
            "process": {
                "notebook": "process.ipynb",
                "upstream": ["list_files"],
                "for_each": "{{ upstream.list_files.files }}",
                "as": "path",
            },
            "summary": {"notebook": "summary.ipynb", "upstream": ["process"], "trigger_rule": "all_done"},
        },
    }
    assert (await api("POST", "pipelines", body={"spec": spec})).code == 201
    run_id = (await api("POST", "pipelines", "files", "runs", body={"params": {"n": 3}})).data["run_id"]
    await finished_run(api, run_id)

    body = {"tasks": ["list_files"], "downstream": True, "params": {"n": 1}}
    assert (await api("POST", "runs", run_id, "retry", body=body)).code == 200
    run = await finished_run(api, run_id)
    process = run["tasks"]["process"]
    assert run["state"] == "success" and process["instance_states"] == {"success": 1, "removed": 2}
    assert run["tasks"]["summary"]["outputs"]["got"] == [["f0.csv", "success"]]
    message = (await api("POST", "runs", run_id, "retry", body={"tasks": ["process[2]"]})).error(422)
    assert message.startswith("--task 'process[2]': removed from run")

    assert (await api("POST", "runs", run_id, "retry", body={"tasks": ["summary"]})).code == 200
    run = await finished_run(api, run_id)
    assert [(r["tasks"], r["params"]) for r in run["repairs"]] == [(["list_files"], {"n": 1}), (["summary"], {})]
    assert run["tasks"]["list_files"]["params"] == {"n": 1} and run["tasks"]["summary"]["params"] is None


def test_a_repair_in_a_partial_run_runs_what_it_names_with_the_values_it_has(service, project):
    _register(service, project, FILES)
    full = service.trigger("files", {"n": 3})
    executor = Lister()
    _finish(service, executor, full)
    # --only summary: process's instances lent by the full run
    partial = service.trigger("files", only=["summary"])
    _finish(service, executor, partial)
    assert _summary_got(executor) == ["f0.csv", "f1.csv", "f2.csv"]
    service.retry(partial, ["summary"])  # again, from the same lent values
    _finish(service, executor, partial)
    assert _summary_got(executor) == ["f0.csv", "f1.csv", "f2.csv"]
    with pytest.raises(ConfigError, match=r"^--task 'process\[1\]': partial run \S+ borrowed process from run "):
        service.retry(partial, ["process[1]"])  # the other instances would no longer be lent
    # process needs list_files, which this run neither ran nor borrowed: one line, nothing re-queued
    with pytest.raises(
        ConfigError,
        match=r"^--task 'process': partial run \S+ neither ran nor borrowed 'list_files', whose values it needs "
        r"\(re-run list_files too\)$",
    ):
        service.retry(partial, ["process"], downstream=True)
    # with list_files: the three are selected now, and process is expanded from the new list
    before = len(executor.requests)
    service.retry(partial, ["list_files"], downstream=True, params={"n": 2})
    _finish(service, executor, partial)
    run = service.get_run(partial)
    assert run.state is RunState.SUCCESS and [r.task for r in executor.requests[before:]] == [
        "list_files",
        "process[0]",
        "process[1]",
        "summary",
    ]
    assert _summary_got(executor) == ["f0.csv", "f1.csv"]
    assert (
        run.selection["tasks"]
        == [
            "list_files",
            "process[0]",
            "process[1]",
            "process[2]",
            "summary",
        ]
        and run.selection["borrowed"] == {}
    )  # process's values are this run's own now
    assert [s for _, s, _ in _instances(service, partial)] == ["success", "success", "removed"]


def test_a_repair_in_a_partial_run_from_a_mapped_task_expands_it_from_the_borrowed_list(service, project):
    _register(service, project, FILES)
    full = service.trigger("files", {"n": 3})
    executor = Lister()
    _finish(service, executor, full)
    partial = service.trigger("files", start="process")  # list_files lent: its list of 3
    _finish(service, executor, partial)
    assert _summary_got(executor) == ["f0.csv", "f1.csv", "f2.csv"]
    service.retry(partial, ["process"], downstream=True)
    _finish(service, executor, partial)
    assert service.get_run(partial).state is RunState.SUCCESS
    assert _summary_got(executor) == ["f0.csv", "f1.csv", "f2.csv"]
    assert [s for _, s, _ in _instances(service, partial)] == ["success"] * 3


def test_a_partial_run_from_a_for_each_upstream_waits_for_every_instance(service, project):
    _register(service, project, FILES)
    partial = service.trigger("files", {"n": 3}, start="list_files")
    executor = Lister({"process[0]": [HANG]})
    with Runner(service.store, executor, service.config.runs_dir, spec_loader=service.spec_of, poll=0) as runner:
        for _ in range(5):
            runner.step(service.store.list_runs(states=OPEN, limit=None))
            runner.wait(0)
        # the instances made as it runs are of the selection: none lends a value it does not have
        assert service.get_run(partial).tasks["summary"].state is TaskState.PENDING
        executor.release("process[0]", Succeed())
        for _ in range(5):
            runner.step(service.store.list_runs(states=OPEN, limit=None))
            runner.wait(0)
    run = service.get_run(partial)
    assert run.state is RunState.SUCCESS and _summary_got(executor) == ["f0.csv", "f1.csv", "f2.csv"]


def _turn(runner: Runner, service: Service, times: int = 5) -> None:
    for _ in range(times):
        runner.step(service.store.list_runs(states=OPEN, limit=None))
        runner.wait(0)


def test_new_instances_of_a_repair_keep_max_parallel_and_the_pool(service, project):
    spec = FILES.replace("as: path}", "as: path, max_parallel: 2, pool: gpu}")
    service.set_pool("gpu", 3)
    _register(service, project, spec)
    run_id = service.trigger("files", {"n": 1})
    executor = Lister(workers=8)
    _finish(service, executor, run_id)
    service.retry(run_id, ["list_files"], downstream=True, params={"n": 5})
    executor.script.update({f"process[{i}]": [HANG] for i in range(5)})
    with Runner(service.store, executor, service.config.runs_dir, spec_loader=service.spec_of, poll=0) as runner:
        _turn(runner, service)
        for i in range(5):
            run = service.get_run(run_id)
            assert {t.pool for n, t in run.tasks.items() if n.startswith("process[")} == {"gpu"}
            running = [n for n, t in run.tasks.items() if t.state is TaskState.RUNNING]
            assert running == [f"process[{i}]", f"process[{i + 1}]"][: 5 - i]  # max_parallel: 2 of 8 workers
            executor.release(f"process[{i}]", Succeed())
            _turn(runner, service)
    assert service.get_run(run_id).state is RunState.SUCCESS and _summary_got(executor) == [
        f"f{i}.csv" for i in range(5)
    ]


def test_two_runners_repairing_a_for_each_at_once_make_each_instance_once(service, project):
    _register(service, project, FILES)
    run_id = service.trigger("files", {"n": 2})
    _finish(service, Lister(), run_id)
    executors = [Lister(), Lister()]
    runners = [
        Runner(service.store, e, service.config.runs_dir, spec_loader=service.spec_of, poll=0) for e in executors
    ]
    for runner in runners:
        runner.__enter__()
    try:
        for n in (5, 3, 4):
            service.retry(run_id, ["list_files"], downstream=True, params={"n": n})
            for _ in range(30):  # the two turn by turns: each sees what the other wrote
                for runner in runners:
                    runner.step(service.store.list_runs(states=OPEN, limit=None))
                    runner.wait(0)
                if service.get_run(run_id).state.finished:
                    break
            run = service.get_run(run_id)
            assert run.state is RunState.SUCCESS
            kept = [name for name, state, _ in _instances(service, run_id) if state == "success"]
            assert kept == [f"process[{i}]" for i in range(n)]
            last = max((r for e in executors for r in e.requests if r.task == "summary"), key=lambda r: r.try_number)
            assert [i["params"]["path"] for i in last.parameters["upstream"]["process"]] == [
                f"f{i}.csv" for i in range(n)
            ]
        assert all(e.requests for e in executors)  # both took a share
        # each try ran once, on one of the two
        tries = [(r.task, r.try_number) for e in executors for r in e.requests]
        assert len(tries) == len(set(tries))
    finally:
        for runner in runners:
            runner.__exit__(None, None, None)


def test_a_plain_retry_of_a_for_each_that_failed_its_expansion_expands_it_again(service, project):
    _register(service, project, FILES)
    run_id = service.trigger("files")
    executor = FakeExecutor({"list_files": [Succeed({"files": "a.csv"})]})
    _finish(service, executor, run_id)
    run = service.get_run(run_id)
    assert run.state is RunState.FAILED and run.tasks["process"].state is TaskState.FAILED
    assert service.retry(run_id) == ["process"]
    _finish(service, executor, run_id)
    run = service.get_run(run_id)
    error = "tasks.process.for_each: upstream.list_files.files is a str, not a list"
    assert run.tasks["process"].state is TaskState.FAILED and run.tasks["process"].error == error
    assert run.tasks["process"].try_number == 2  # a try of its own each time
    # the list repaired: expanded, and the instances get the repair's values too
    executor.script["list_files"] = [Succeed({"files": ["a.csv", "b.csv"]})]
    service.retry(run_id, ["list_files"], downstream=True, params={"k": 7})
    _finish(service, executor, run_id)
    run = service.get_run(run_id)
    assert run.state is RunState.SUCCESS and [r.parameters.get("k") for r in executor.requests[-3:]] == [7, 7, 7]
    assert [t.params for n, t in run.tasks.items() if n.startswith("process[")] == [{"k": 7}, {"k": 7}]


def test_a_failed_expansion_again_fails_each_instance_in_one_line(service, project):
    _register(service, project, FILES)
    run_id = service.trigger("files")
    executor = FakeExecutor({"list_files": [Succeed({"files": ["a.csv", "b.csv"]}), Succeed({"files": "a.csv"})]})
    _finish(service, executor, run_id)
    service.retry(run_id, ["list_files"], downstream=True)
    _finish(service, executor, run_id)
    run = service.get_run(run_id)
    assert run.state is RunState.FAILED
    assert [(t.state, t.error, t.try_number) for n, t in run.tasks.items() if n.startswith("process[")] == [
        (TaskState.FAILED, "tasks.process.for_each: upstream.list_files.files is a str, not a list", 2)
    ] * 2
    assert [
        i["state"] for i in [r for r in executor.requests if r.task == "summary"][-1].parameters["upstream"]["process"]
    ] == ["failed", "failed"]


def test_a_repair_with_new_values_for_the_templates_of_a_grid_and_a_for_each(service, project):
    _register(
        service,
        project,
        """name: tpl
params: {day: mon, files: [a.csv]}
tasks:
  list_files: list_files.ipynb
  train: {notebook: train.ipynb, grid: {when: ["{{ params.day }}", sun]}}
  process: {notebook: process.ipynb, upstream: [list_files], for_each: "{{ params.files }}", as: path}
  summary: {notebook: summary.ipynb, upstream: [train, process]}
""",
    )
    run_id = service.trigger("tpl")
    executor = FakeExecutor()
    _finish(service, executor, run_id)
    assert [r.parameters.get("when") or r.parameters.get("path") for r in executor.requests[1:4]] == [
        "mon",
        "sun",
        "a.csv",
    ]
    # a grid's values are rendered per try: its instances are the same, with the repair's values
    before = len(executor.requests)
    service.retry(run_id, ["train", "process"], params={"day": "tue", "files": ["b.csv", "c.csv"]})
    _finish(service, executor, run_id)
    tried = {r.task: r.parameters.get("when") or r.parameters.get("path") for r in executor.requests[before:]}
    assert tried == {"train[0]": "tue", "train[1]": "sun", "process[0]": "b.csv", "process[1]": "c.csv"}
    # and without -p, the spec's values again
    before = len(executor.requests)
    service.retry(run_id, ["process"], downstream=True)
    _finish(service, executor, run_id)
    assert [r.task for r in executor.requests[before:]] == ["process[0]", "summary"]
    assert [s for _, s, _ in _instances(service, run_id)] == ["success", "removed"]


def test_a_repair_that_changes_a_branch_skips_a_for_each_then_expands_it_again(service, project):
    _register(
        service,
        project,
        FILES.replace("  summary:", "  other: {notebook: summary.ipynb, upstream: [list_files]}\n  summary:").replace(
            "upstream: [process], trigger_rule", "upstream: [process, other], trigger_rule"
        ),
    )
    run_id = service.trigger("files")
    executor = FakeExecutor({"list_files": [Succeed({"files": ["a", "b"]}, branch=["process"])]})
    _finish(service, executor, run_id)
    assert [s for _, s, _ in _instances(service, run_id)] == ["success", "success"]
    executor.script["list_files"] = [Succeed({"files": ["a", "b", "c"]}, branch=["other"])]
    service.retry(run_id, ["list_files"], downstream=True)
    _finish(service, executor, run_id)
    run = service.get_run(run_id)
    assert [s for _, s, _ in _instances(service, run_id)] == ["skipped", "skipped"]  # not chosen: not expanded
    assert run.tasks["other"].state is TaskState.SUCCESS and run.state is RunState.SUCCESS
    executor.script["list_files"] = [Succeed({"files": ["a", "b", "c"]}, branch=["process"])]
    service.retry(run_id, ["list_files"], downstream=True)
    _finish(service, executor, run_id)
    assert _instances(service, run_id) == [(f"process[{i}]", "success", p) for i, p in enumerate("abc")]
    assert service.get_run(run_id).tasks["other"].state is TaskState.SKIPPED


def test_two_runners_expanding_a_repaired_for_each_at_the_same_moment(service, project):
    """Both find every instance waiting and expand it to a longer list at once: one makes the new
    instances, the other finds them made (on PostgreSQL it did not see them, and failed on the
    unique name)."""
    import threading

    _register(service, project, FILES)
    run_id = service.trigger("files", {"n": 2})
    _finish(service, Lister(), run_id)
    for n in range(3, 9):
        service.retry(run_id, ["process"])
        items = [{"path": f"x{i}.csv"} for i in range(n)]
        barrier, results = threading.Barrier(2), []

        def expand(items: list = items, barrier: threading.Barrier = barrier, results: list = results) -> None:
            barrier.wait()
            try:
                results.append(service.store.expand_task(run_id, "process", items, max_tries=1, pool=None))
            except Exception as exc:
                results.append(exc)

        threads = [threading.Thread(target=expand) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert results == [True, True]  # the second found the list it would make
        assert [(name, state) for name, state, _ in _instances(service, run_id)] == [
            (f"process[{i}]", "pending") for i in range(n)
        ]
        _finish(service, Lister(), run_id)  # the run ends, to be repaired again
