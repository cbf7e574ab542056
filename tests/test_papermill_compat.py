"""What papermill's users pass and see, through nbsched's real CLI: -p typing, -f/-y parameter
files, unquoted YAML dates, papermill's warnings, and the cell a failure is named by."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import papermill
import pytest
from conftest import nbsched, run_json, write_notebook, write_yaml

PAPERMILL_TESTS = Path(papermill.__file__).parent / "tests"
RECORD_TYPES = "import nbsched\nfor k in 'abcdefgh':\n    nbsched.record(k, repr(globals().get(k, 'missing')))"


# -- item 20: -p is typed as papermill's -p -----------------------------------------------
@pytest.mark.kernel
def test_p_values_are_typed_as_papermill_types_them(project: Path) -> None:
    write_notebook(project / "types.ipynb", RECORD_TYPES, params="a = b = c = d = e = f = g = h = 0")
    given = ["a=true", "b=TRUE", "c=null", "d=none", "e=True", "f=None", "g=5", "h=[1, 2]"]
    code, run = run_json("types.ipynb", *(w for p in given for w in ("-p", p)), cwd=project)
    assert code == 0, run
    assert run["tasks"]["types"]["outputs"] == {
        "a": "'true'",
        "b": "'TRUE'",
        "c": "'null'",
        "d": "'none'",
        "e": "True",
        "f": "None",
        "g": "5",
        "h": "[1, 2]",  # nbsched's addition: JSON for a value that starts with [ or {
    }


# -- item 19: an unquoted YAML date -----------------------------------------------------------
@pytest.mark.kernel
def test_an_unquoted_yaml_date_or_datetime_reaches_the_notebook_as_written(project: Path) -> None:
    write_notebook(project / "types.ipynb", RECORD_TYPES, params="a = b = c = None")
    write_yaml(
        project / "pipeline.yaml",
        "name: dates\nparams: {a: 2019-01-01, b: 2019-01-01 12:30:00}\n"
        "tasks:\n  types: {notebook: types.ipynb, params: {c: [2019-01-02]}}\n",
    )
    assert nbsched("validate", "pipeline.yaml", cwd=project).returncode == 0
    code, run = run_json("pipeline.yaml", cwd=project)
    assert code == 0, run
    outputs = run["tasks"]["types"]["outputs"]
    assert (outputs["a"], outputs["b"], outputs["c"]) == ("'2019-01-01'", "'2019-01-01 12:30:00'", "['2019-01-02']")


# -- item 23: -f and -y, as papermill's ---------------------------------------------------------
# papermill's own test_cli.py test_many_args: -f example.yaml, -y, then -p (its -b and -r aside)
MANY_ARGS = ["-f", "example.yaml", "-y", '{"yaml_foo": {"yaml_bar": "yaml_baz"}}', "-p", "baz=replace"]
MANY_ARGS_PARAMS = {
    "foo": 12345,
    "bar": "value",
    "baz": "replace",
    "yaml_foo": {"yaml_bar": "yaml_baz"},
    "a_date": "2019-01-01",
}


@pytest.fixture
def registered(project: Path) -> Path:
    for name in ("example.yaml", "example.json"):
        shutil.copy(PAPERMILL_TESTS / "parameters" / name, project / name)
    write_notebook(project / "nb.ipynb", "x = 1")
    write_yaml(project / "pipeline.yaml", "name: pm\ntasks:\n  nb: nb.ipynb\n")
    nbsched("register", "pipeline.yaml", cwd=project, check=True)
    return project


def test_trigger_merges_f_then_y_then_p_as_papermill(registered: Path) -> None:
    # the order written does not matter: files, then YAML texts, then -p, each later one winning
    proc = nbsched("trigger", "pm", "-p", "baz=replace", *MANY_ARGS[:4], "--json", cwd=registered, check=True)
    shown = nbsched("show", json.loads(proc.stdout)["run_id"], "--json", cwd=registered, check=True)
    assert json.loads(shown.stdout)["params"] == MANY_ARGS_PARAMS


def test_later_files_win_as_in_papermill(registered: Path) -> None:
    proc = nbsched("trigger", "pm", "-f", "example.yaml", "-f", "example.json", "--json", cwd=registered, check=True)
    shown = json.loads(nbsched("show", json.loads(proc.stdout)["run_id"], "--json", cwd=registered).stdout)
    # papermill's test_parameters_file
    assert shown["params"] == {"foo": 54321, "bar": "value", "baz": {"k1": "v1", "k2": "v2"}, "a_date": "2019-01-01"}


def test_schedule_add_and_backfill_take_parameter_files(registered: Path) -> None:
    added = nbsched("schedule", "add", "pm", "--cron", "0 6 * * *", *MANY_ARGS, cwd=registered, check=True)
    assert added.stdout.startswith("schedule 1:")
    listed = json.loads(nbsched("schedule", "list", "--json", cwd=registered, check=True).stdout)
    assert listed[0]["params"] == MANY_ARGS_PARAMS
    filled = nbsched(
        "backfill", "pm", "--start", "2026-01-01", "--end", "2026-01-01", "-y", "bar: other", cwd=registered
    )
    assert filled.returncode == 0, filled.stderr
    run_id = filled.stdout.split()[-1]
    shown = json.loads(nbsched("show", run_id, "--json", cwd=registered, check=True).stdout)
    assert shown["params"] == {**MANY_ARGS_PARAMS, "bar": "other"}  # the schedule's, then backfill's


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["-f", "nope.yaml"], "Error: -f nope.yaml: file not found", id="missing-file"),
        pytest.param(["-f", "nb.ipynb"], "Error: -f nb.ipynb: expected a .yaml, .yml, .json file", id="not-yaml"),
        pytest.param(
            ["-y", "[1"], "Error: -y:1:3: invalid YAML: expected ',' or ']', but got '<stream end>'", id="bad"
        ),
        pytest.param(["-y", "- 1"], "Error: -y: expected a mapping of parameter names to values, got list", id="list"),
        pytest.param(
            ["-y", "my-key: 1"], "Error: -y: 'my-key': a parameter name must be a Python identifier", id="key"
        ),
        pytest.param(["-y", "x: {a: [.nan]}"], "Error: -y: x.a[0]: nan is not a number JSON can hold", id="nan"),
    ],
)
def test_a_bad_parameter_file_or_text_is_one_line(registered: Path, args: list[str], message: str) -> None:
    proc = nbsched("trigger", "pm", *args, cwd=registered)
    assert proc.returncode == 2 and proc.stderr.startswith(message), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert json.loads(nbsched("runs", "--json", cwd=registered).stdout) == []


@pytest.mark.kernel
def test_run_and_retry_take_parameter_files(project: Path) -> None:
    shutil.copy(PAPERMILL_TESTS / "parameters" / "example.yaml", project / "example.yaml")
    write_notebook(
        project / "nb.ipynb",
        "import nbsched\nnbsched.record('got', [foo, bar, a_date])",
        params="foo = bar = a_date = None",
    )
    code, run = run_json("nb.ipynb", "-f", "example.yaml", "-p", "bar=other", cwd=project)
    assert code == 0, run
    assert run["tasks"]["nb"]["outputs"]["got"] == [12345, "other", "2019-01-01"]
    retried = nbsched("retry", run["run_id"], "--task", "nb", "-y", "foo: 7", "--run", cwd=project)
    assert retried.returncode == 0, retried.stderr
    shown = json.loads(nbsched("show", run["run_id"], "--json", cwd=project, check=True).stdout)
    assert shown["tasks"]["nb"]["outputs"]["got"] == [7, "other", "2019-01-01"]


# -- item 22: cells numbered as the user's notebook numbers them ------------------------------------
@pytest.mark.kernel
def test_a_failure_names_the_cell_as_the_users_notebook_numbers_it(project: Path) -> None:
    shutil.copy(PAPERMILL_TESTS / "notebooks" / "sysexit1.ipynb", project / "sysexit1.ipynb")  # no parameters cell
    code, run = run_json("sysexit1.ipynb", cwd=project)
    task = run["tasks"]["sysexit1"]
    assert code == 1 and task["error"] == "SystemExit: 1 (cell 2: sys.exit(1))", task  # papermill: In [2]
    assert task["failure"]["cell"] == 2 and task["failure"]["injected"] is False
    shown = nbsched("show", run["run_id"], cwd=project)
    assert "  sysexit1: SystemExit: 1 (cell 2: sys.exit(1))" in shown.stdout.splitlines(), shown.stdout
    # with a parameters cell, the injected one after it is not counted either
    write_notebook(project / "after.ipynb", "x = 1", "raise ValueError('third')", params="n = 0")
    code, run = run_json("after.ipynb", "-p", "n=1", cwd=project)  # markdown, parameters, injected, x, raise
    assert run["tasks"]["after"]["error"] == "ValueError: third (cell 4: raise ValueError('third'))"


# a parameters cell that makes the cell injected after it fail (an IPython input transformer)
FAILING_INJECTION = (
    "n = 0\nget_ipython().input_transformers_cleanup.append(\n"
    "    lambda lines: ['raise RuntimeError(\"injected\")\\n'] if lines[:1] == ['# Parameters\\n'] else lines)"
)


@pytest.mark.kernel
def test_a_failure_in_the_injected_cell_is_named_so(project: Path) -> None:
    write_notebook(project / "nb.ipynb", "x = 1", params=FAILING_INJECTION)
    code, run = run_json("nb.ipynb", "-p", "n=1", cwd=project)
    task = run["tasks"]["nb"]
    assert code == 1 and task["error"] == "RuntimeError: injected (injected parameters cell)", task
    assert task["failure"]["cell"] is None and task["failure"]["injected"] is True


# -- item 21: papermill's warnings, once per task, kept with the task -----------------------------
NO_PARAMETERS_WARNINGS = [
    "Passed unknown parameter: msg",
    "Input notebook does not contain a cell with tag 'parameters'",
]


@pytest.mark.kernel
def test_run_and_show_tell_papermills_warnings_once_per_task_before_the_table(project: Path) -> None:
    shutil.copy(PAPERMILL_TESTS / "notebooks" / "no_parameters.ipynb", project / "no_parameters.ipynb")
    proc = nbsched("run", "no_parameters.ipynb", "-p", "msg=Hello", cwd=project)
    assert proc.returncode == 0, proc.stderr
    warned = [f"warning: no_parameters: {w}" for w in NO_PARAMETERS_WARNINGS]
    assert [line for line in proc.stderr.splitlines() if line.startswith("warning:")] == warned, proc.stderr
    code, run = run_json("no_parameters.ipynb", "-p", "msg=Hello", cwd=project)
    assert run["tasks"]["no_parameters"]["warnings"] == NO_PARAMETERS_WARNINGS
    shown = nbsched("show", run["run_id"], cwd=project, check=True)
    assert shown.stderr.splitlines() == warned and "TASK" in shown.stdout
    # nbsched's own built-ins (nbsched_run_id, upstream ...) are no unknown parameters: no -p, no warning
    code, run = run_json("no_parameters.ipynb", cwd=project)
    assert code == 0 and run["tasks"]["no_parameters"]["warnings"] == []


@pytest.mark.kernel
def test_the_instances_of_a_mapped_task_warn_once_for_the_task(project: Path) -> None:
    write_notebook(project / "nb.ipynb", "x = 1", params="region = ''")
    write_yaml(
        project / "pipeline.yaml", "name: g\ntasks:\n  nb: {notebook: nb.ipynb, grid: {region: [a, b], n: [1]}}\n"
    )
    proc = nbsched("run", "pipeline.yaml", cwd=project)
    assert proc.returncode == 0, proc.stderr
    assert [line for line in proc.stderr.splitlines() if line.startswith("warning:")] == [
        "warning: nb: Passed unknown parameter: n"
    ]


def test_warnings_and_the_injected_cell_cross_from_a_dask_worker_as_they_are() -> None:
    from nbsched.kernels import KernelHandle
    from nbsched.notebook import TaskOutcome, cell_progress, show_cell

    outcome = TaskOutcome(warnings=["Passed unknown parameter: msg"])
    assert TaskOutcome.from_json(outcome.to_json()).warnings == ["Passed unknown parameter: msg"]
    worker, runner = KernelHandle(), KernelHandle()
    worker.cell_numbers, worker.cell_count = [1, 2, None, 3], 3  # markdown, parameters, injected, code
    for index, expected in [(2, None), (3, 3)]:
        worker.cell_index, worker.cell_source = index, "x = 1"
        cell = cell_progress(worker)
        assert cell == {"index": expected, "count": 3, "source": "x = 1", "injected": expected is None}
        show_cell(runner, cell)
        assert cell_progress(runner) == cell
