"""Mapped tasks: a grid runs once per combination, a for_each once per item of a list an upstream
task recorded; downstream tasks get every instance's values. The runner runs with a
``FakeExecutor`` (no kernels) on a real store; one test runs real kernels through the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import nbsched, write_notebook, write_yaml
from fakes import HANG, Fail, FakeExecutor, Succeed
from test_server import api, daemon, finished_run, jp_server_config  # noqa: F401 - fixtures, helpers

from nbsched.errors import ConfigError, SpecError
from nbsched.report import comparisons
from nbsched.runner import Runner
from nbsched.service import Config, Service
from nbsched.states import RunState, TaskState

OPEN = [RunState.QUEUED, RunState.RUNNING]


@pytest.fixture
def service(project: Path, db_url: str):
    svc = Service(Config.resolve(project=project, db_url=db_url))
    yield svc
    svc.close()


def _register(service: Service, project: Path, spec: str) -> None:
    for name in ("ls", "train", "compare", "process", "audit", "summary"):
        write_notebook(project / f"{name}.ipynb", "x = 1")
    write_yaml(project / "pipeline.yaml", spec)
    service.register(project / "pipeline.yaml")


class Drive:
    """A daemon's runner over the store, with a FakeExecutor; turn until the runs rest."""

    def __init__(self, service: Service, executor: FakeExecutor) -> None:
        self.service, self.executor = service, executor
        self.runner = Runner(service.store, executor, service.config.runs_dir, spec_loader=service.spec_of, poll=0)
        self.runner.__enter__()

    def turn(self, times: int = 5) -> None:
        for _ in range(times):
            self.runner.step(self.service.store.list_runs(states=OPEN, limit=None))
            self.runner.wait(0)

    def close(self) -> None:
        self.runner.__exit__(None, None, None)


def _params(executor: FakeExecutor, task: str) -> list[dict]:
    return [r.parameters for r in executor.requests if r.task.split("[")[0] == task]


GRID = """name: models
tasks:
  train: {notebook: train.ipynb, grid: {region: [eu, us, apac], model: [linear, tree]}, params: {epochs: 3}}
  compare: {notebook: compare.ipynb, upstream: [train]}
"""


def test_a_grid_runs_once_per_combination_and_downstream_gets_every_instance(service, project):
    _register(service, project, GRID)
    run_id = service.trigger("models")
    run = service.get_run(run_id)
    assert list(run.tasks) == [f"train[{i}]" for i in range(6)] + ["compare"]
    assert run.tasks["train[1]"].label == "train[region=eu, model=tree]"
    script = {f"train[{i}]": [Succeed({"score": i / 10})] for i in range(6)}
    drive = Drive(service, FakeExecutor(script, workers=3))
    drive.turn()
    drive.close()
    run = service.get_run(run_id)
    assert run.state is RunState.SUCCESS
    trained = _params(drive.executor, "train")
    assert [(p["region"], p["model"], p["epochs"]) for p in trained] == [
        (r, m, 3) for r in ("eu", "us", "apac") for m in ("linear", "tree")
    ]
    assert [p["nbsched_task"] for p in trained] == [f"train[{i}]" for i in range(6)]
    (compare,) = _params(drive.executor, "compare")
    assert compare["upstream"]["train"] == [
        {"params": {"region": r, "model": m}, "outputs": {"score": i / 10}, "state": "success"}
        for i, (r, m) in enumerate((r, m) for r in ("eu", "us", "apac") for m in ("linear", "tree"))
    ]
    assert run.tasks["train[5]"].output_path.endswith("train[5].ipynb")

    # the report and the panel compare the instances: a row each, a column per value and score
    (table,) = comparisons(run.to_json()["tasks"])
    assert table.params == ["region", "model"] and table.outputs == ["score"] and len(table.rows) == 6
    page = service.run_report_page(run_id, lambda task: {})
    assert page.count('<tr data-task="train[') == 6 + 6  # the comparison's rows, then the tasks'
    from nbsched.widgets import RunPanel

    panel = RunPanel(service, "models", refresh_every=0)
    panel.run_choice.value = run_id
    rows = re.findall(r'<tr data-task="(train\[\d\])"', panel.comparison.value)
    assert rows == [f"train[{i}]" for i in range(6)]
    panel.compare_sort.value = "score:d"
    rows = re.findall(r'<tr data-task="(train\[\d\])"', panel.comparison.value)
    assert rows == [f"train[{i}]" for i in reversed(range(6))]
    panel.close()


FOR_EACH = """name: files
tasks:
  ls: ls.ipynb
  process: {notebook: process.ipynb, upstream: [ls], for_each: "{{ upstream.ls.files }}", as: path, max_parallel: 2}
  audit: {notebook: audit.ipynb, upstream: [process]}
  summary: {notebook: summary.ipynb, upstream: [process], trigger_rule: all_done}
"""


def test_for_each_runs_one_instance_per_recorded_item_at_most_max_parallel_at_once(service, project):
    _register(service, project, FOR_EACH)
    run_id = service.trigger("files")
    files = [f"in/{i}.csv" for i in range(5)]
    script = {"ls": [Succeed({"files": files})], **{f"process[{i}]": [HANG] for i in range(5)}}
    executor = FakeExecutor(script, workers=8)
    drive = Drive(service, executor)
    drive.turn()
    run = service.get_run(run_id)
    assert [n for n in run.tasks if n.startswith("process")] == [f"process[{i}]" for i in range(5)]
    running = [n for n, t in run.tasks.items() if t.state is TaskState.RUNNING]
    assert running == ["process[0]", "process[1]"]  # max_parallel: 2, though 8 workers are free
    for i in range(5):
        executor.release(f"process[{i}]", Fail() if i == 3 else Succeed({"rows": i}))
        drive.turn()
        busy = [n for n, t in service.get_run(run_id).tasks.items() if t.state is TaskState.RUNNING]
        assert len(busy) <= 2
    drive.close()
    run = service.get_run(run_id)
    assert [p["path"] for p in _params(executor, "process")] == files
    # and by the times the store recorded: never three instances between a start and an end
    spans = [(t.started_at, t.ended_at) for n, t in run.tasks.items() if n.startswith("process[")]
    assert all(a and b for a, b in spans)
    assert max(sum(a <= at < b for a, b in spans) for at, _ in spans) == 2
    assert run.tasks["process[3]"].state is TaskState.FAILED
    assert run.tasks["audit"].state is TaskState.UPSTREAM_FAILED  # all_success: one failed instance is enough
    assert run.tasks["summary"].state is TaskState.SUCCESS  # all_done runs
    (summary,) = _params(executor, "summary")
    assert [i["state"] for i in summary["upstream"]["process"]] == ["success"] * 3 + ["failed", "success"]
    assert summary["upstream"]["process"][3]["outputs"] == {} and run.state is RunState.FAILED


@pytest.mark.parametrize(
    ("recorded", "state", "error"),
    [
        ([], TaskState.SKIPPED, None),
        ("not a list", TaskState.FAILED, "tasks.process.for_each: upstream.ls.files is a str, not a list"),
        (list(range(1001)), TaskState.FAILED, "has 1,001 items (at most max_instances, 1,000)"),
    ],
)
def test_a_for_each_list_that_is_empty_or_bad(service, project, recorded, state, error):
    _register(service, project, FOR_EACH)
    run_id = service.trigger("files")
    drive = Drive(service, FakeExecutor({"ls": [Succeed({"files": recorded})]}))
    drive.turn()
    drive.close()
    task = service.get_run(run_id).tasks["process"]
    assert task.state is state
    if error:
        assert error in task.error
    assert service.get_run(run_id).tasks["audit"].state in (TaskState.SKIPPED, TaskState.UPSTREAM_FAILED)


def test_repair_one_instance_or_all_of_them(service, project):
    _register(service, project, GRID)
    run_id = service.trigger("models")
    drive = Drive(service, FakeExecutor({"train[3]": [Fail()]}))
    drive.turn()
    assert service.get_run(run_id).state is RunState.FAILED
    assert service.retry(run_id, ["train[3]"], downstream=True) == ["train[3]", "compare"]
    drive.executor.script["train[3]"] = [Succeed({"score": 1})]
    drive.turn()
    assert service.get_run(run_id).state is RunState.SUCCESS
    assert service.retry(run_id, ["train"]) == [f"train[{i}]" for i in range(6)]
    drive.close()


@pytest.mark.parametrize(
    ("task", "problem"),
    [
        ("{notebook: t.ipynb, grid: [1, 2]}", "tasks.t.grid: expected a mapping of parameter names to lists"),
        ("{notebook: t.ipynb, grid: {region: []}}", "tasks.t.grid.region: expected a non-empty list of values"),
        (
            "{notebook: t.ipynb, grid: {a: [1]}, for_each: [1]}",
            "tasks.t.for_each: a task has grid or for_each, not both",
        ),
        (
            "{notebook: t.ipynb, for_each: '{{ upstream.ls.files }}'}",
            "tasks.t.for_each: names upstream 'ls', which is not one",
        ),
        ("{notebook: t.ipynb, for_each: 'files'}", "tasks.t.for_each: expected a list, or one '{{ expression }}'"),
        ("{notebook: t.ipynb, max_parallel: 2}", "tasks.t.max_parallel: goes with grid or for_each"),
        (
            "{notebook: t.ipynb, grid: {a: [1, 2, 3]}, max_instances: 2}",
            "tasks.t.grid: 3 combinations (at most max_instances, 2)",
        ),
        (
            "{notebook: t.ipynb, grid: {logical_date: [1]}}",
            "tasks.t.grid.logical_date: 'logical_date' is set by nbsched",
        ),
    ],
)
def test_bad_fan_outs_are_one_line_naming_file_task_and_field(project, task, problem):
    write_notebook(project / "t.ipynb", "x = 1")
    write_yaml(project / "pipeline.yaml", f"name: p\ntasks:\n  t: {task}\n")
    proc = nbsched("validate", "pipeline.yaml", cwd=project)
    assert proc.returncode == 2, proc.stdout
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("Error: pipeline.yaml: ") and problem in line, line


def test_a_run_cannot_override_a_grid_value(service, project):
    _register(service, project, GRID)
    with pytest.raises(SpecError, match="-p region: 'region' is a value of each instance of task train"):
        service.trigger("models", {"region": "mars"})


GRID_CLI = [(r, k) for r in ("eu", "apac") for k in (1, 2)]


@pytest.mark.kernel
def test_a_grid_from_the_cli_rolls_up_into_the_downstream_notebook(project):
    write_notebook(
        project / "train.ipynb", "import nbsched\nnbsched.record('score', len(region) * k)", params="region = ''\nk = 1"
    )
    write_notebook(
        project / "compare.ipynb",
        "import nbsched\nnbsched.record('best', max(upstream['train'], key=lambda i: i['outputs']['score'])['params'])",
    )
    write_yaml(
        project / "pipeline.yaml",
        "name: g\ntasks:\n  train: {notebook: train.ipynb, grid: {region: [eu, apac], k: [1, 2]}}\n"
        "  compare: {notebook: compare.ipynb, upstream: [train]}\n",
    )
    proc = nbsched("run", "pipeline.yaml", "--json", cwd=project)
    assert proc.returncode == 0, proc.stderr
    run = json.loads(proc.stdout)
    train = run["tasks"]["train"]  # the mapped task as one, its instances in a list
    assert list(run["tasks"]) == ["train", "compare"] and train["state"] == "success"
    assert train["instance_states"] == {"success": 4} and train["instances"][3]["name"] == "train[3]"
    assert [i["instance_params"] for i in train["instances"]] == [
        {"region": r, "k": k} for r in ("eu", "apac") for k in (1, 2)
    ]
    assert [i["outputs"]["score"] for i in train["instances"]] == [2, 4, 4, 8]
    assert run["tasks"]["compare"]["outputs"]["best"] == {"region": "apac", "k": 2}
    assert run["tasks"]["compare"]["instances"] == []
    assert (project / "nbsched-runs" / "g" / run["run_id"] / "train[3].ipynb").exists()
    shown = nbsched("show", run["run_id"], cwd=project, check=True).stdout
    assert "train[region=apac, k=2]" in shown
    # and side by side: a row per instance, a column per value and per recorded score
    compared = shown.split("compared: train\n")[1].splitlines()
    assert compared[0].split() == ["INSTANCE", "STATE", "region", "k", "score"]
    assert [line.split() for line in compared[1:5]] == [
        [f"train[{i}]", "success", r, str(k), str(len(r) * k)] for i, (r, k) in enumerate(GRID_CLI)
    ]
    page = Path(project / nbsched("report", run["run_id"], cwd=project, check=True).stdout.strip()).read_text()
    # the DAG draws the mapped task once, with its instances by state
    assert '<g class="task" data-task="train" data-state="success">' in page and ">4: 4 success</text>" in page


@pytest.mark.kernel
async def test_an_instances_notebook_and_outputs_over_rest(api, daemon, jp_root_dir):  # noqa: F811 - fixtures
    write_notebook(jp_root_dir / "train.ipynb", "import nbsched\nnbsched.record('r', region)", params="region = ''")
    write_notebook(
        jp_root_dir / "compare.ipynb",
        "import nbsched\nnbsched.record('n', len(upstream['train']))",
        params="upstream = {}",
    )
    spec = {
        "name": "g",
        "tasks": {
            "train": {"notebook": "train.ipynb", "grid": {"region": ["eu", "us"]}},
            "compare": {"notebook": "compare.ipynb", "upstream": ["train"]},
        },
    }
    assert (await api("POST", "pipelines", body={"spec": spec})).code == 201
    run_id = (await api("POST", "pipelines", "g", "runs", body={})).data["run_id"]
    run = await finished_run(api, run_id)
    assert run["state"] == "success" and run["tasks"]["train"]["state"] == "success"
    assert [i["label"] for i in run["tasks"]["train"]["instances"]] == ["train[region=eu]", "train[region=us]"]
    outputs = await api("GET", "runs", run_id, "tasks", "train[1]", "outputs")
    assert outputs.code == 200 and outputs.data["outputs"] == {"r": "us"}
    notebook = await api("GET", "runs", run_id, "tasks", "train[0]", "notebook")
    assert notebook.code == 200 and 'filename="train[0].ipynb"' in notebook.headers["Content-Disposition"]
    (await api("GET", "runs", run_id, "tasks", "train[7]", "outputs")).error(404, "not_found")

    # a partial run over REST: compare alone, from that run's instances
    partial_id = (await api("POST", "pipelines", "g", "runs", body={"only": ["compare"]})).data["run_id"]
    partial = await finished_run(api, partial_id)
    assert partial["selection"] == {"tasks": ["compare"], "borrowed": {"train": run_id}, "only": ["compare"]}
    assert partial["tasks"]["compare"]["outputs"] == {"n": 2} and partial["tasks"]["train"]["state"] == "skipped"
    message = (await api("POST", "pipelines", "g", "runs", body={"from": "trian"})).error(422)
    assert message == "--from 'trian': pipeline g has no such task (did you mean 'train'?)"
    (await api("POST", "pipelines", "g", "runs", body={"only": "compare"})).error(400)
    spec["tasks"]["compare"]["grid"] = {"k": []}
    message = (await api("POST", "pipelines", body={"spec": spec})).error(422, "invalid_spec")
    assert "tasks.compare.grid.k: " in message and "\n" not in message


@pytest.mark.kernel
def test_a_partial_run_borrows_every_instance_of_a_mapped_upstream(project):
    write_notebook(
        project / "train.ipynb",
        "import nbsched\nif region == bad:\n    raise ValueError(region)\nnbsched.record('score', len(region))",
        params="region = ''\nbad = ''",
    )
    write_notebook(project / "ls.ipynb", "import nbsched\nnbsched.record('files', ['a.csv', 'b.csv'])")
    write_notebook(project / "process.ipynb", "import nbsched\nnbsched.record('up', path.upper())", params="path = ''")
    got = "import nbsched\nnbsched.record('got', [(i['state'], i['params'], i['outputs']) for i in upstream[{up!r}]])"
    write_notebook(project / "compare.ipynb", got.format(up="train"), params="upstream = {}")
    write_notebook(project / "audit.ipynb", got.format(up="process"), params="upstream = {}")
    write_yaml(
        project / "pipeline.yaml",
        "name: g\ntasks:\n  train: {notebook: train.ipynb, grid: {region: [eu, apac]}}\n"
        "  compare: {notebook: compare.ipynb, upstream: [train]}\n  ls: ls.ipynb\n"
        "  process: {notebook: process.ipynb, upstream: [ls], for_each: '{{ upstream.ls.files }}', as: path}\n"
        "  audit: {notebook: audit.ipynb, upstream: [process]}\n",
    )
    # never succeeded yet: one line, nothing runs
    proc = nbsched("run", "pipeline.yaml", "--only", "compare", cwd=project)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == (
        "Error: --only: task 'compare' needs the values of 'train', which never succeeded in a run of g "
        "(run it first, or select it too)"
    )
    good = json.loads(nbsched("run", "pipeline.yaml", "--json", cwd=project, check=True).stdout)
    # a later run in which one instance failed is not one to borrow from
    bad = json.loads(nbsched("run", "pipeline.yaml", "-p", "bad=apac", "--json", cwd=project).stdout)
    assert bad["tasks"]["train"]["instance_states"] == {"failed": 1, "success": 1}

    proc = nbsched("run", "pipeline.yaml", "--only", "compare,audit", "--json", cwd=project)
    assert proc.returncode == 0, proc.stderr
    partial = json.loads(proc.stdout)
    # each from the latest run in which all of its instances succeeded: process did in the bad run
    assert partial["selection"]["borrowed"] == {"train": good["run_id"], "process": bad["run_id"]}
    assert partial["tasks"]["compare"]["outputs"]["got"] == [
        ["success", {"region": "eu"}, {"score": 2}],
        ["success", {"region": "apac"}, {"score": 4}],
    ]
    assert partial["tasks"]["audit"]["outputs"]["got"] == [
        ["success", {"path": "a.csv"}, {"up": "A.CSV"}],
        ["success", {"path": "b.csv"}, {"up": "B.CSV"}],
    ]
    # the borrowed instances are there, not run ("not selected"), with what they recorded then
    process = partial["tasks"]["process"]
    assert [(i["name"], i["state"], i["error"], i["try_number"]) for i in process["instances"]] == [
        ("process[0]", "skipped", "not selected", 0),
        ("process[1]", "skipped", "not selected", 0),
    ]
    shown = nbsched("show", partial["run_id"], cwd=project, check=True).stdout
    assert f"values of train from run {good['run_id']}, process from run {bad['run_id']}" in shown
    assert "  not selected: train, ls, process\n" in shown


def test_an_instance_the_run_does_not_have_is_named_as_such(service, project):
    _register(service, project, GRID)
    run_id = service.trigger("models")
    drive = Drive(service, FakeExecutor())
    drive.turn()
    drive.close()
    with pytest.raises(ConfigError) as missing:
        service.retry(run_id, ["train[9]"])
    assert str(missing.value) == "--task 'train[9]': train has 6 instance(s) in this run (train[0]..train[5])"
    with pytest.raises(ConfigError) as plain:
        service.retry(run_id, ["compare[0]"])
    assert str(plain.value) == "--task 'compare[0]': compare is a task without instances (name it: --task compare)"
    assert service.retry(run_id, ["train[5]"]) == ["train[5]"]


def test_grid_values_are_shown_as_written_not_escaped(project):
    write_notebook(project / "train.ipynb", "x = 1")
    write_yaml(
        project / "pipeline.yaml",
        'name: accents\ntasks:\n  train: {notebook: train.ipynb, grid: {city: ["Montréal", ["Zürich"], {k: "Köln"}]}}\n',
    )
    nbsched("register", "pipeline.yaml", cwd=project, check=True)
    run_id = nbsched("trigger", "accents", cwd=project, check=True).stdout.strip()
    shown = nbsched("show", run_id, cwd=project, check=True).stdout
    assert "\\u00" not in shown
    for label in ("train[city=Montréal]", 'train[city=["Zürich"]]', 'train[city={"k": "Köln"}]'):
        assert label in shown
    assert '  train[1]  queued   ["Zürich"]' in shown or '  train[1]  pending  ["Zürich"]' in shown


def test_a_partial_run_of_a_for_each_counts_the_instances_it_expands_to(service, project):
    _register(service, project, FOR_EACH)
    first = service.trigger("files")
    drive = Drive(service, FakeExecutor({"ls": [Succeed({"files": ["a", "b"]})]}))
    drive.turn()
    assert service.get_run(first).state is RunState.SUCCESS
    # ls lends its list; process's instances are this run's own, and one fails
    run_id = service.trigger("files", only=["process", "audit"])
    drive.executor.script["process[1]"] = [Fail()]
    drive.turn()
    drive.close()
    run = service.get_run(run_id)
    assert [run.tasks[f"process[{i}]"].state for i in range(2)] == [TaskState.SUCCESS, TaskState.FAILED]
    assert run.tasks["audit"].state is TaskState.UPSTREAM_FAILED  # not run as if process[1] were lent
    assert run.state is RunState.FAILED
    shown = nbsched("--db", service.config.db_url, "show", run_id, cwd=project, check=True).stdout
    assert "  not selected: ls, summary\n" in shown and "  process[1]: ValueError: bad input" in shown
    _register(service, project, GRID)
    grid = service.trigger("models", only=["train"])  # a grid's six rows: its name once
    assert "\npartial run: train\n" in nbsched("--db", service.config.db_url, "show", grid, cwd=project).stdout
