"""Pipeline specs (nbsched.spec) and ``nbsched validate``: every mistake is one clear line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
import pytest
from click.testing import CliRunner, Result
from nbformat.v4 import new_code_cell, new_notebook

from nbsched.cli import cli
from nbsched.dag import TriggerRule
from nbsched.errors import CycleError, SpecError
from nbsched.spec import PipelineSpec, TaskSpec, load_pipeline, parse_pipeline
from nbsched.timefmt import parse_duration


def write_notebook(path: Path, *, parameters: bool = True) -> Path:
    """A minimal nbformat-4 notebook, with a cell tagged ``parameters`` unless told otherwise."""
    nb = new_notebook()
    if parameters:
        nb.cells.append(new_code_cell("region = 'eu'", metadata={"tags": ["parameters"]}))
    nb.cells.append(new_code_cell("print(region)"))
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp_path as the current folder, with the notebooks most specs below name."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NBSCHED_HOME", raising=False)
    monkeypatch.delenv("NBSCHED_DB_URL", raising=False)
    for name in ("extract", "clean", "report"):
        write_notebook(tmp_path / f"{name}.ipynb")
    return tmp_path


def validate(project: Path, path: str) -> Result:
    return CliRunner().invoke(cli, ["--home", str(project / "home"), "validate", path])


GOOD = """\
name: daily-sales
params: {region: eu, day: "{{ logical_date | ds }}"}
defaults: {retries: 1, retry_delay: 30s, timeout: 10m, kernel: python3}
tasks:
  extract: {notebook: extract.ipynb, params: {limit: 1000}}
  clean:   {notebook: clean.ipynb, upstream: [extract]}
  report:  {notebook: report.ipynb, upstream: [clean], trigger_rule: all_done, retries: 0}
schedules:
  - {cron: "0 6 * * 1-5", timezone: Europe/Paris, params: {region: us}, catchup: false}
"""

TASKS = """\
tasks:
  extract: {notebook: extract.ipynb}
  clean: {notebook: clean.ipynb, upstream: [extract]}
"""

# (spec text, the whole one-line message of the SpecError)
MISTAKES = [
    pytest.param(
        "name: demo\ntasks:\n  extract: {notebook: extract.ipynb, resources: {GPU: 0}}\n",
        "pipeline.yaml: tasks.extract.resources.GPU: expected a number > 0, got 0",
        id="resource-not-positive",
    ),
    pytest.param(
        "name: demo\ndefaults: {resources: [GPU]}\n" + TASKS,
        "pipeline.yaml: defaults.resources: expected a mapping, got list",
        id="resources-not-a-mapping",
    ),
    pytest.param(
        "name: demo\nschedule: []\n" + TASKS,
        "pipeline.yaml: schedule: unknown key (did you mean 'schedules'?)",
        id="unknown-top-level-key",
    ),
    pytest.param(
        "name: demo\ntasks:\n  extract: {notebook: extract.ipynb}\n"
        "  clean: {notebook: clean.ipynb, upstreams: [extract]}\n",
        "pipeline.yaml: tasks.clean.upstreams: unknown key (did you mean 'upstream'?)",
        id="unknown-task-key",
    ),
    pytest.param(
        "name: demo\ndefaults: {retry: 2}\n" + TASKS,
        "pipeline.yaml: defaults.retry: unknown key (did you mean 'retries'?)",
        id="unknown-defaults-key",
    ),
    pytest.param(
        "name: demo\ntasks:\n  extract: {notebook: extract.ipynb}\n"
        "  clean: {notebook: clean.ipynb, upstream: [extrct]}\n",
        "pipeline.yaml: tasks.clean.upstream: unknown task 'extrct' (did you mean 'extract'?)",
        id="unknown-upstream-task",
    ),
    pytest.param(
        "name: demo\ntasks:\n  extract: {notebook: extract.ipynb}\n"
        "  clean: {notebook: clean.ipynb, upstream: [extract, report]}\n"
        "  report: {notebook: report.ipynb, upstream: [clean]}\n",
        "pipeline.yaml: tasks: cycle in upstream links: clean -> report -> clean",
        id="cycle",
    ),
    pytest.param(
        "name: demo\ntasks:\n  clean: {notebook: clean.ipynb, upstream: clean}\n",
        "pipeline.yaml: tasks.clean.upstream: a task cannot be its own upstream",
        id="own-upstream",
    ),
    pytest.param(
        "name: demo\ntasks:\n  extract: {notebook: extract.ipynb}\n  load: {notebook: load.ipynb}\n",
        "pipeline.yaml: tasks.load.notebook: notebook not found: load.ipynb",
        id="missing-notebook-file",
    ),
    pytest.param(
        "name: demo\ntasks:\n  extract: {params: {a: 1}}\n",
        "pipeline.yaml: tasks.extract.notebook: missing (the path of the task's notebook)",
        id="missing-notebook-field",
    ),
    pytest.param(
        "name: demo\ntasks:\n  extract: {notebook: extract.ipynb, timeout: 10 minutes}\n",
        "pipeline.yaml: tasks.extract.timeout: bad duration '10 minutes' (use e.g. 30s, 10m, 1h30m)",
        id="bad-duration",
    ),
    pytest.param(
        "name: demo\ndefaults: {retry_delay: soon}\n" + TASKS,
        "pipeline.yaml: defaults.retry_delay: bad duration 'soon' (use e.g. 30s, 10m, 1h30m)",
        id="bad-default-duration",
    ),
    pytest.param(
        "name: demo\ntasks:\n  Bad Name: {notebook: extract.ipynb}\n",
        "pipeline.yaml: tasks.Bad Name: bad task name 'Bad Name': use lower-case letters, digits, "
        "'_' and '-', starting with a letter or digit, at most 100 characters",
        id="bad-task-name",
    ),
    pytest.param(
        "name: Daily Sales\n" + TASKS,
        "pipeline.yaml: name: bad pipeline name 'Daily Sales': use lower-case letters, digits, "
        "'_' and '-', starting with a letter or digit, at most 100 characters",
        id="bad-pipeline-name",
    ),
    pytest.param(
        "name: demo\ntasks:\n  extract: {notebook: extract.ipynb, trigger_rule: all_sucess}\n",
        "pipeline.yaml: tasks.extract.trigger_rule: unknown trigger rule 'all_sucess' (did you mean 'all_success'?)",
        id="unknown-trigger-rule",
    ),
    pytest.param(
        "name: demo\ntasks:\n  extract: {notebook: extract.ipynb, trigger_rule: [all_done]}\n",
        "pipeline.yaml: tasks.extract.trigger_rule: expected a trigger rule name, got ['all_done']",
        id="trigger-rule-not-a-string",
    ),
    pytest.param(
        "name: demo\ntasks:\n  extract: {notebook: extract.ipynb\n  clean: x\n",
        "pipeline.yaml:4:8: invalid YAML: expected ',' or '}', but got ':'",
        id="invalid-yaml",
    ),
    pytest.param(
        "name: demo\ntasks:\n  extract: {notebook: extract.ipynb, retries: -1}\n",
        "pipeline.yaml: tasks.extract.retries: expected a whole number from 0 to 100, got -1",
        id="negative-retries",
    ),
    pytest.param(
        "name: demo\ntasks:\n  extract: {notebook: extract.ipynb, retries: 1.5}\n",
        "pipeline.yaml: tasks.extract.retries: expected a whole number from 0 to 100, got 1.5",
        id="fractional-retries",
    ),
    pytest.param(TASKS, "pipeline.yaml: name: missing (every pipeline needs a name)", id="missing-name"),
    pytest.param(
        "name: demo\ntasks: {}\n",
        "pipeline.yaml: tasks: missing or empty (a pipeline needs at least one task)",
        id="no-tasks",
    ),
    pytest.param(
        "name: demo\n",
        "pipeline.yaml: tasks: missing or empty (a pipeline needs at least one task)",
        id="tasks-key-missing",
    ),
    pytest.param(
        "name: demo\ntasks: [extract, clean]\n",
        "pipeline.yaml: tasks: expected a mapping, got list",
        id="tasks-not-a-mapping",
    ),
    pytest.param("- name: demo\n", "pipeline.yaml: expected a mapping, got list", id="spec-not-a-mapping"),
]


@pytest.mark.parametrize(("text", "message"), MISTAKES)
def test_spec_mistake_is_one_line_naming_file_and_field(project: Path, text: str, message: str) -> None:
    (project / "pipeline.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(SpecError) as exc:
        load_pipeline("pipeline.yaml")
    assert str(exc.value) == message
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize(("text", "message"), MISTAKES)
def test_validate_prints_the_mistake_on_one_line_and_exits_2(project: Path, text: str, message: str) -> None:
    (project / "pipeline.yaml").write_text(text, encoding="utf-8")
    result = validate(project, "pipeline.yaml")
    assert result.exit_code == 2, result.output
    assert result.stderr == f"Error: {message}\n"
    assert result.stdout == ""


def test_a_cycle_is_a_cycle_error(project: Path) -> None:
    (project / "pipeline.yaml").write_text(
        "name: demo\ntasks:\n  a: {notebook: extract.ipynb, upstream: [c]}\n"
        "  b: {notebook: clean.ipynb, upstream: [a]}\n  c: {notebook: report.ipynb, upstream: [b]}\n"
    )
    with pytest.raises(CycleError, match=r"^pipeline\.yaml: tasks: cycle in upstream links: a -> b -> c -> a$"):
        load_pipeline("pipeline.yaml")


def test_file_not_found(project: Path) -> None:
    with pytest.raises(SpecError, match=r"^nope\.yaml: file not found$"):
        load_pipeline("nope.yaml")
    result = validate(project, "nope.yaml")
    assert result.exit_code == 2
    assert result.stderr == "Error: nope.yaml: file not found\n"


def test_a_folder_without_pipeline_yaml_names_the_missing_file(project: Path) -> None:
    (project / "empty").mkdir()
    with pytest.raises(SpecError, match=r"^empty/pipeline\.yaml: file not found$"):
        load_pipeline("empty")


def test_errors_name_the_file_as_the_user_wrote_it(project: Path) -> None:
    (project / "proj").mkdir()
    (project / "proj" / "pipeline.yaml").write_text("name: demo\ntasks:\n  x: {notebook: x.ipynb}\n")
    result = validate(project, "proj/pipeline.yaml")
    assert result.exit_code == 2
    assert result.stderr == "Error: proj/pipeline.yaml: tasks.x.notebook: notebook not found: x.ipynb\n"


def test_a_file_that_is_not_a_notebook_is_reported(project: Path) -> None:
    (project / "broken.ipynb").write_text("this is not json")
    (project / "pipeline.yaml").write_text("name: demo\ntasks:\n  broken: {notebook: broken.ipynb}\n")
    with pytest.raises(SpecError) as exc:
        load_pipeline("pipeline.yaml")
    assert str(exc.value).startswith("pipeline.yaml: tasks.broken.notebook: broken.ipynb is not a valid notebook")
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize(
    "content",
    ['{"cells": [1]}', '{"cells": null}', "[]", '{"nbformat": 4}'],
    ids=["cell-not-a-mapping", "cells-null", "not-a-mapping", "no-cells"],
)
def test_a_malformed_notebook_is_a_spec_error_not_a_crash(project: Path, content: str) -> None:
    (project / "odd.ipynb").write_text(content)
    (project / "pipeline.yaml").write_text("name: demo\nparams: {n: 1}\ntasks:\n  odd: odd.ipynb\n")
    result = validate(project, "pipeline.yaml")
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("Error: pipeline.yaml: tasks.odd.notebook: odd.ipynb is not a valid notebook")
    assert result.stderr.count("\n") == 1


# -- warnings and valid specs -------------------------------------------------------------
def test_params_without_a_parameters_cell_warn(project: Path) -> None:
    write_notebook(project / "plain.ipynb", parameters=False)
    (project / "pipeline.yaml").write_text("name: demo\ntasks:\n  plain: {notebook: plain.ipynb, params: {n: 1}}\n")
    spec = load_pipeline("pipeline.yaml")
    assert spec.warnings == (
        (
            "pipeline.yaml: tasks.plain.notebook: plain.ipynb has no cell tagged 'parameters'; "
            "parameters are injected at the top of the notebook"
        ),
    )
    result = validate(project, "pipeline.yaml")
    assert result.exit_code == 0, result.output
    assert result.stderr == f"warning: {spec.warnings[0]}\n"
    assert "pipeline.yaml: ok" in result.stdout


def test_pipeline_params_also_warn_for_a_notebook_without_parameters_cell(project: Path) -> None:
    write_notebook(project / "plain.ipynb", parameters=False)
    (project / "pipeline.yaml").write_text("name: demo\nparams: {n: 1}\ntasks:\n  plain: plain.ipynb\n")
    assert len(load_pipeline("pipeline.yaml").warnings) == 1


def test_no_warning_without_params_or_with_a_parameters_cell(project: Path) -> None:
    write_notebook(project / "plain.ipynb", parameters=False)
    (project / "pipeline.yaml").write_text(
        "name: demo\ntasks:\n  plain: {notebook: plain.ipynb}\n  extract: {notebook: extract.ipynb, params: {n: 1}}\n"
    )
    assert load_pipeline("pipeline.yaml").warnings == ()
    result = validate(project, "pipeline.yaml")
    assert result.exit_code == 0
    assert result.stderr == ""


def test_validate_a_valid_spec_prints_its_layers(project: Path) -> None:
    (project / "pipeline.yaml").write_text(GOOD)
    result = validate(project, "pipeline.yaml")
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "pipeline.yaml: ok — pipeline 'daily-sales', 3 task(s) in 3 layer(s)\n"
        "  layer 1: extract\n  layer 2: clean (after extract)\n  layer 3: report (after clean)\n"
    )
    assert result.stderr == ""
    assert not (project / ".nbsched").exists()


def test_the_order_follows_dependencies_not_the_order_written(project: Path) -> None:
    (project / "pipeline.yaml").write_text(
        "name: demo\ntasks:\n  report: {notebook: report.ipynb, upstream: clean}\n"
        "  clean: {notebook: clean.ipynb, upstream: extract}\n  extract: extract.ipynb\n"
    )
    result = validate(project, "pipeline.yaml")
    assert result.exit_code == 0, result.output
    assert result.stdout.endswith(
        "layer 1: extract\n  layer 2: clean (after extract)\n  layer 3: report (after clean)\n"
    )


def test_the_design_example_loads_with_every_field(project: Path) -> None:
    (project / "pipeline.yaml").write_text(GOOD)
    spec = load_pipeline("pipeline.yaml")
    assert spec.name == "daily-sales"
    assert spec.source == project / "pipeline.yaml"
    assert spec.base_dir == project
    assert spec.params == {"region": "eu", "day": "{{ logical_date | ds }}"}
    assert list(spec.tasks) == ["extract", "clean", "report"]
    assert spec.order == ["extract", "clean", "report"]
    report = spec.tasks["report"]
    assert report.trigger_rule is TriggerRule.ALL_DONE
    assert report.upstream == ("clean",)
    assert report.retries == 0 and report.max_tries == 1
    assert spec.tasks["extract"].params == {"limit": 1000}
    assert spec.tasks["extract"].trigger_rule is TriggerRule.ALL_SUCCESS
    assert [s.fields for s in spec.schedules] == [
        {"cron": "0 6 * * 1-5", "timezone": "Europe/Paris", "params": {"region": "us"}, "catchup": False}
    ]


def test_notebook_paths_are_relative_to_the_spec_file(project: Path) -> None:
    write_notebook(project / "proj" / "nb" / "extract.ipynb")
    (project / "proj" / "pipeline.yaml").write_text("name: demo\ntasks:\n  extract: nb/extract.ipynb\n")
    spec = load_pipeline("proj/pipeline.yaml")
    assert spec.tasks["extract"].notebook == project / "proj" / "nb" / "extract.ipynb"
    assert load_pipeline("proj").name == "demo"  # a folder means its pipeline.yaml


def test_a_single_notebook_is_a_one_task_pipeline(project: Path) -> None:
    write_notebook(project / "My Report.ipynb")
    spec = load_pipeline("My Report.ipynb")
    assert spec.name == "my-report"
    assert list(spec.tasks) == ["my-report"]
    assert spec.tasks["my-report"].notebook == project / "My Report.ipynb"
    assert spec.order == ["my-report"]
    result = validate(project, "My Report.ipynb")
    assert result.exit_code == 0, result.output
    assert (
        result.stdout == "My Report.ipynb: ok — pipeline 'my-report', 1 task(s) in 1 layer(s)\n  layer 1: my-report\n"
    )


# -- field parsing --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("30s", 30.0),
        ("10m", 600.0),
        ("1h30m", 5400.0),
        ("1h 30m", 5400.0),
        ("2d", 172800.0),
        ("500ms", 0.5),
        ("1.5h", 5400.0),
        ("1m30s", 90.0),
        (45, 45.0),
        (2.5, 2.5),
        (0, 0.0),
    ],
)
def test_parse_duration(value: Any, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value", ["10 minutes", "", "soon", "5x", "m", "-5s", "30s10", -1, True, None, [1], float("nan")]
)
def test_parse_duration_refuses(value: Any) -> None:
    with pytest.raises(ValueError, match="bad duration"):
        parse_duration(value)


def test_retry_wait_is_constant_without_backoff() -> None:
    task = TaskSpec(name="t", notebook=Path("t.ipynb"), retries=3, retry_delay=10)
    assert [task.retry_wait(n) for n in (1, 2, 3)] == [10, 10, 10]


def test_retry_wait_doubles_with_exponential_backoff_up_to_the_max() -> None:
    task = TaskSpec(
        name="t",
        notebook=Path("t.ipynb"),
        retries=5,
        retry_delay=10,
        retry_exponential_backoff=True,
        max_retry_delay=60,
    )
    assert [task.retry_wait(n) for n in (1, 2, 3, 4, 5)] == [10, 20, 40, 60, 60]


def test_max_retry_delay_caps_a_constant_delay_too() -> None:
    task = TaskSpec(name="t", notebook=Path("t.ipynb"), retry_delay=90, max_retry_delay=30)
    assert task.retry_wait(1) == 30


def _parse(text: str, tmp_path: Path) -> PipelineSpec:
    import yaml

    return parse_pipeline(yaml.safe_load(text), base_dir=tmp_path, source="pipeline.yaml")


def test_retry_fields_from_the_spec(tmp_path: Path) -> None:
    spec = _parse(
        "name: demo\ntasks:\n  t: {notebook: t.ipynb, retries: 4, retry_delay: 30s, "
        "retry_exponential_backoff: true, max_retry_delay: 2m}\n",
        tmp_path,
    )
    task = spec.tasks["t"]
    assert task.max_tries == 5
    assert [task.retry_wait(n) for n in (1, 2, 3, 4)] == [30, 60, 120, 120]


def test_defaults_apply_to_tasks_and_task_fields_override_them(tmp_path: Path) -> None:
    spec = _parse(
        "name: demo\n"
        "defaults: {retries: 2, retry_delay: 30s, timeout: 10m, kernel: python3, retry_exponential_backoff: true}\n"
        "tasks:\n"
        "  plain: plain.ipynb\n"
        "  custom: {notebook: custom.ipynb, retries: 0, timeout: 1h, kernel: ir, retry_exponential_backoff: false}\n"
        "  untimed: {notebook: untimed.ipynb, timeout: null}\n",
        tmp_path,
    )
    plain, custom, untimed = spec.tasks["plain"], spec.tasks["custom"], spec.tasks["untimed"]
    assert (plain.retries, plain.retry_delay, plain.timeout, plain.kernel, plain.retry_exponential_backoff) == (
        2,
        30.0,
        600.0,
        "python3",
        True,
    )
    assert (custom.retries, custom.retry_delay, custom.timeout, custom.kernel, custom.retry_exponential_backoff) == (
        0,
        30.0,
        3600.0,
        "ir",
        False,
    )
    assert untimed.timeout is None and untimed.retries == 2


def test_resources_come_from_the_defaults_or_the_task(tmp_path: Path) -> None:
    spec = _parse(
        "name: demo\ndefaults: {resources: {memory: 4000000000}}\n"
        "tasks:\n  plain: plain.ipynb\n  gpu: {notebook: gpu.ipynb, resources: {GPU: 1}}\n",
        tmp_path,
    )
    assert spec.tasks["plain"].resources == {"memory": 4_000_000_000} and spec.tasks["gpu"].resources == {"GPU": 1}


def test_without_defaults_tasks_get_no_retries_and_no_timeout(tmp_path: Path) -> None:
    task = _parse("name: demo\ntasks:\n  t: t.ipynb\n", tmp_path).tasks["t"]
    assert (task.retries, task.retry_delay, task.timeout, task.kernel) == (0, 0.0, None, None)
    assert task.notebook == tmp_path / "t.ipynb"


def test_upstream_string_shorthand(tmp_path: Path) -> None:
    spec = _parse("name: demo\ntasks:\n  extract: e.ipynb\n  clean: {notebook: c.ipynb, upstream: extract}\n", tmp_path)
    assert spec.tasks["clean"].upstream == ("extract",)
    assert spec.tasks["extract"].upstream == ()


def test_upstream_listing_a_task_twice_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"^pipeline\.yaml: tasks\.clean\.upstream: lists a task twice$"):
        _parse(
            "name: demo\ntasks:\n  extract: e.ipynb\n  clean: {notebook: c.ipynb, upstream: [extract, extract]}\n",
            tmp_path,
        )


def test_unknown_schedule_key_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(
        SpecError,
        match=r"^pipeline\.yaml: schedules\[0\]\.timezon: unknown key "
        r"\(did you mean 'timezone'\?\)$",
    ):
        _parse("name: demo\ntasks:\n  t: t.ipynb\nschedules:\n  - {cron: '@daily', timezon: UTC}\n", tmp_path)


def test_a_template_mistake_names_the_file_and_the_field(project: Path) -> None:
    write_notebook(project / "t.ipynb")
    (project / "pipeline.yaml").write_text(
        "name: demo\nparams: {day: '{{ logical_date | ds }}', table: '{{ params.regoin }}'}\n"
        "tasks:\n  t: {notebook: t.ipynb}\n"
    )
    result = validate(project, "pipeline.yaml")
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: pipeline.yaml: params.table: template error in '{{ params.regoin }}': ")
    assert "regoin" in result.stderr and len(result.stderr.strip().splitlines()) == 1


# -- values YAML holds and JSON does not (papermill's example.yaml has an unquoted date) ----------
def test_an_unquoted_date_or_datetime_stays_the_text_written_as_papermill_reads_it(project: Path) -> None:
    (project / "pipeline.yaml").write_text(
        "name: dates\n"
        "params: {day: 2019-01-01, at: 2019-01-01 12:30:00, stamp: 2001-12-14t21:59:43.10-05:00}\n"
        "tasks:\n"
        "  extract: {notebook: extract.ipynb, params: {days: [2019-01-02], cfg: {since: 2019-01-03}}}\n"
        "  clean: {notebook: clean.ipynb, grid: {day: [2019-02-01, 2019-02-02]}}\n"
        "schedules:\n"
        "  - {cron: '0 6 * * *', params: {day: 2019-03-01}}\n"
        "  - {at: 2026-12-24 18:00:00, timezone: Europe/Paris}\n"
    )
    spec = load_pipeline(project / "pipeline.yaml")
    assert spec.params == {"day": "2019-01-01", "at": "2019-01-01 12:30:00", "stamp": "2001-12-14t21:59:43.10-05:00"}
    assert spec.tasks["extract"].params == {"days": ["2019-01-02"], "cfg": {"since": "2019-01-03"}}
    assert spec.tasks["clean"].fanout is not None and spec.tasks["clean"].fanout.grid == {
        "day": ["2019-02-01", "2019-02-02"]
    }
    assert spec.schedules[0].fields["params"] == {"day": "2019-03-01"}
    assert validate(project, "pipeline.yaml").exit_code == 0  # the `at:` date-time still reads as one


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        pytest.param("!!timestamp 2019-01-01", "params.x: a date is not a parameter value", id="tagged-date"),
        pytest.param("!!binary aGVsbG8=", "params.x: binary data (bytes) is not a parameter value", id="binary"),
        pytest.param("!!set {a, b}", "params.x: a set is not a parameter value", id="set"),
        pytest.param("!!omap [a: 1]", "params.x[0]: a pair (tuple) is not a parameter value", id="omap"),
        pytest.param(".inf", "params.x: inf is not a number JSON can hold", id="inf"),
        pytest.param("{m: [.nan]}", "params.x.m[0]: nan is not a number JSON can hold", id="nested-nan"),
        pytest.param("{1: a}", "params.x: key 1 is not a string", id="int-key"),
        pytest.param("{null: a}", "params.x: key None is not a string", id="null-key"),
    ],
)
def test_a_value_json_cannot_hold_is_one_line_at_validate(project: Path, value: str, problem: str) -> None:
    (project / "pipeline.yaml").write_text(f"name: odd\nparams:\n  x: {value}\ntasks:\n  extract: extract.ipynb\n")
    result = validate(project, "pipeline.yaml")
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"Error: pipeline.yaml: {problem}"), result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("text", "field"),
    [
        pytest.param(
            "tasks:\n  extract: {notebook: extract.ipynb, params: {x: .inf}}\n", "tasks.extract.params.x", id="task"
        ),
        pytest.param(
            "tasks:\n  extract: {notebook: extract.ipynb, grid: {x: [1, .nan]}}\n", "tasks.extract.grid.x[1]", id="grid"
        ),
        pytest.param(
            "tasks:\n  extract: {notebook: extract.ipynb, for_each: [!!binary aGk=]}\n",
            "tasks.extract.for_each[0]",
            id="for_each",
        ),
        pytest.param(
            "tasks:\n  extract: extract.ipynb\nschedules:\n  - {cron: '@daily', params: {x: !!set {a}}}\n",
            "schedules[0].params.x",
            id="schedule",
        ),
        pytest.param("description: !!binary aGk=\ntasks:\n  extract: extract.ipynb\n", "description", id="description"),
    ],
)
def test_every_value_a_spec_stores_is_checked(project: Path, text: str, field: str) -> None:
    (project / "pipeline.yaml").write_text(f"name: odd\n{text}")
    result = validate(project, "pipeline.yaml")
    assert result.exit_code == 2 and result.output.startswith(f"Error: pipeline.yaml: {field}: "), result.output
