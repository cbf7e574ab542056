"""The parameters a task notebook receives (nbsched.params): typing of -p, precedence, templating."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from nbsched.errors import ConfigError, SpecError
from nbsched.params import BUILTINS, EVENT_BUILTINS, parse_override, task_parameters
from nbsched.spec import PipelineSpec, parse_pipeline

LOGICAL_DATE = datetime(2026, 3, 14, 6, 30, tzinfo=timezone.utc)


# -- -p key=value -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("n=5", ("n", 5), id="int"),
        pytest.param("n=-3", ("n", -3), id="negative-int"),
        pytest.param("f=1.5", ("f", 1.5), id="float"),
        pytest.param("b=True", ("b", True), id="True"),
        pytest.param("b=False", ("b", False), id="False"),
        pytest.param("x=None", ("x", None), id="None"),
        pytest.param("b=true", ("b", "true"), id="true-is-a-string"),
        pytest.param("b=TRUE", ("b", "TRUE"), id="TRUE-is-a-string"),
        pytest.param("x=null", ("x", "null"), id="null-is-a-string"),
        pytest.param("x=none", ("x", "none"), id="none-is-a-string"),
        pytest.param("s=hello", ("s", "hello"), id="string"),
        pytest.param("s=", ("s", ""), id="empty-string"),
        pytest.param("l=[1,2]", ("l", [1, 2]), id="json-list"),
        pytest.param('m={"a": 1}', ("m", {"a": 1}), id="json-object"),
        pytest.param("d=2026-01-01", ("d", "2026-01-01"), id="date-stays-string"),
        pytest.param("q=a=b", ("q", "a=b"), id="value-with-equals"),
        pytest.param("d={{ logical_date | ds }}", ("d", "{{ logical_date | ds }}"), id="template"),
        pytest.param("d={% if true %}1{% endif %}", ("d", "{% if true %}1{% endif %}"), id="template-statement"),
        pytest.param(" k =v", ("k", "v"), id="key-spaces-trimmed"),
    ],
)
def test_parse_override_types_the_value(text: str, expected: tuple[str, Any]) -> None:
    key, value = parse_override(text)
    assert (key, value) == expected
    assert type(value) is type(expected[1])  # 5 is an int, not "5"; True is a bool, not 1


# what papermill's own tests type (test_cli.py), and more: case, spaces, digits of other scripts
PAPERMILL_TYPED = [
    *("True", "False", "None", "12.51", "10", "hello world", "\U0001f60d", "-8.2", "-23.2", "13"),
    *("true", "TRUE", "false", "null", "none", "NONE", " True", "True ", "yes", "1e3", "1_000", " 5 "),
    *("0x10", "1.", ".5", "+7", "\u0663", "", " ", "01", "2019-01-01", "1/2", "12:30"),
]


@pytest.mark.parametrize("text", PAPERMILL_TYPED)
def test_a_value_no_parameters_cell_declares_is_typed_as_papermill_types_it(text: str) -> None:
    from papermill.cli import _resolve_type

    value = parse_override(f"x={text}")[1]
    assert value == _resolve_type(text) and type(value) is type(_resolve_type(text))


@pytest.mark.parametrize("text", ["inf", "-inf", "nan", "Infinity", "1" * 5000])
def test_a_number_json_cannot_hold_is_refused_in_one_line(text: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_override(f"x={text}")
    assert str(exc.value).startswith("-p x: ") and "JSON" in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        pytest.param("x=[1,2", "-p x: not JSON: Expecting ',' delimiter: line 1 column 5 (char 4)", id="unclosed-list"),
        pytest.param(
            "x={a: 1}", "-p x: not JSON: Expecting property name enclosed in double quotes", id="not-json-object"
        ),
        pytest.param("x=" + "[" * 5000 + "]" * 5000, "-p x: nested deeper than 100 levels", id="too-deep"),
    ],
)
def test_parse_override_refuses_a_value_that_looks_like_json_and_is_not(text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_override(text)
    assert str(exc.value).startswith(problem), str(exc.value)
    assert str(exc.value).endswith("(a value that starts with '[' or '{' must be valid JSON)")


@pytest.mark.parametrize("text", ["novalue", "=1", "1x=2", "a-b=1", "my key=1", "class=1"])
def test_parse_override_refuses_bad_keys(text: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_override(text)
    assert repr(text) in str(exc.value)
    assert "key=value" in str(exc.value)


# -- task_parameters ----------------------------------------------------------------------------
def make_spec(data: dict[str, Any], tmp_path: Path) -> PipelineSpec:
    return parse_pipeline(data, base_dir=tmp_path, source="pipeline.yaml")


def params_of(
    spec: PipelineSpec,
    task: str,
    *,
    overrides: dict[str, Any] | None = None,
    upstream: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return task_parameters(
        spec,
        spec.tasks[task],
        overrides=overrides or {},
        run_id="r-42",
        logical_date=LOGICAL_DATE,
        run_dir="/runs/demo/r-42",
        upstream=upstream or {},
    )


def test_precedence_pipeline_then_task_then_overrides(tmp_path: Path) -> None:
    spec = make_spec(
        {
            "name": "demo",
            "params": {"region": "eu", "limit": 10, "mode": "full"},
            "tasks": {
                "extract": {"notebook": "e.ipynb", "params": {"limit": 1000, "mode": "fast"}},
                "clean": {"notebook": "c.ipynb"},
            },
        },
        tmp_path,
    )
    extract = params_of(spec, "extract", overrides={"mode": "slow"})
    assert (extract["region"], extract["limit"], extract["mode"]) == ("eu", 1000, "slow")
    clean = params_of(spec, "clean")
    assert (clean["region"], clean["limit"], clean["mode"]) == ("eu", 10, "full")


def test_values_that_are_not_templates_keep_their_type(tmp_path: Path) -> None:
    spec = make_spec(
        {
            "name": "demo",
            "tasks": {
                "t": {
                    "notebook": "t.ipynb",
                    "params": {"n": 3, "ratio": 0.5, "on": True, "none": None, "items": [1, "a"], "cfg": {"k": 2}},
                }
            },
        },
        tmp_path,
    )
    p = params_of(spec, "t")
    assert {k: p[k] for k in ("n", "ratio", "on", "none", "items", "cfg")} == {
        "n": 3,
        "ratio": 0.5,
        "on": True,
        "none": None,
        "items": [1, "a"],
        "cfg": {"k": 2},
    }


def test_templates_see_the_run(tmp_path: Path) -> None:
    spec = make_spec(
        {
            "name": "demo",
            "params": {"region": "eu", "day": "{{ logical_date | ds }}"},
            "tasks": {
                "t": {
                    "notebook": "t.ipynb",
                    "params": {
                        "stamp": "{{ logical_date | ds_nodash }}",
                        "rid": "run {{ run_id }}",
                        "table": "sales_{{ params.region }}",
                        "out": "{{ run_dir }}/out.csv",
                        "who": "{{ pipeline }}/{{ task }}",
                        "paths": ["{{ params.region }}/a", {"deep": "{{ logical_date | ts }}"}],
                    },
                }
            },
        },
        tmp_path,
    )
    p = params_of(spec, "t")
    assert p["day"] == "2026-03-14"
    assert p["stamp"] == "20260314"
    assert p["rid"] == "run r-42"
    assert p["table"] == "sales_eu"
    assert p["out"] == "/runs/demo/r-42/out.csv"
    assert p["who"] == "demo/t"
    assert p["paths"] == ["eu/a", {"deep": "2026-03-14T06:30:00+00:00"}]


def test_templates_see_the_overridden_value(tmp_path: Path) -> None:
    spec = make_spec(
        {"name": "demo", "params": {"region": "eu", "table": "sales_{{ params.region }}"}, "tasks": {"t": "t.ipynb"}},
        tmp_path,
    )
    assert params_of(spec, "t", overrides={"region": "us"})["table"] == "sales_us"


def test_overrides_are_templated_too(tmp_path: Path) -> None:
    spec = make_spec({"name": "demo", "tasks": {"t": "t.ipynb"}}, tmp_path)
    assert params_of(spec, "t", overrides={"day": "{{ logical_date | ds }}"})["day"] == "2026-03-14"


def test_builtins_are_added(tmp_path: Path) -> None:
    spec = make_spec(
        {"name": "demo", "tasks": {"extract": "e.ipynb", "clean": {"notebook": "c.ipynb", "upstream": "extract"}}},
        tmp_path,
    )
    outputs = {"extract": {"rows": 3, "path": "x.csv"}}
    p = params_of(spec, "clean", upstream=outputs)
    assert p["nbsched_run_id"] == "r-42"
    assert p["nbsched_task"] == "clean"
    assert p["nbsched_try"] == 1
    assert p["logical_date"] == "2026-03-14T06:30:00+00:00"
    assert datetime.fromisoformat(p["logical_date"]) == LOGICAL_DATE
    assert p["upstream"] == {"extract": {"rows": 3, "path": "x.csv"}}
    p["upstream"]["extract"]["rows"] = 0  # the notebook gets its own copy
    assert outputs["extract"]["rows"] == 3
    assert set(p) == set(BUILTINS) - set(EVENT_BUILTINS)


def test_upstream_is_an_empty_dict_for_a_first_task(tmp_path: Path) -> None:
    spec = make_spec({"name": "demo", "tasks": {"t": "t.ipynb"}}, tmp_path)
    assert params_of(spec, "t")["upstream"] == {}


def test_undefined_template_variable_names_task_and_param(tmp_path: Path) -> None:
    spec = make_spec(
        {"name": "demo", "tasks": {"report": {"notebook": "r.ipynb", "params": {"day": "{{ logical_dat | ds }}"}}}},
        tmp_path,
    )
    with pytest.raises(SpecError) as exc:
        params_of(spec, "report")
    message = str(exc.value)
    assert message.startswith("tasks.report.params.day: ")
    assert "logical_dat" in message and "undefined" in message
    assert "\n" not in message


def test_undefined_variable_in_a_nested_value_names_the_position(tmp_path: Path) -> None:
    spec = make_spec(
        {"name": "demo", "tasks": {"report": {"notebook": "r.ipynb", "params": {"paths": ["ok", "{{ nope }}"]}}}},
        tmp_path,
    )
    with pytest.raises(SpecError, match=r"^tasks\.report\.params\.paths\[1\]: .*'nope' is undefined"):
        params_of(spec, "report")


def test_a_template_syntax_error_is_a_spec_error(tmp_path: Path) -> None:
    spec = make_spec({"name": "demo", "tasks": {"t": {"notebook": "t.ipynb", "params": {"x": "{{ run_id "}}}}, tmp_path)
    with pytest.raises(SpecError, match=r"^tasks\.t\.params\.x: template error"):
        params_of(spec, "t")


@pytest.mark.parametrize("name", BUILTINS)
@pytest.mark.parametrize("where", ["pipeline", "task", "override"])
def test_a_parameter_named_like_a_builtin_is_refused(tmp_path: Path, name: str, where: str) -> None:
    data: dict[str, Any] = {"name": "demo", "tasks": {"t": {"notebook": "t.ipynb"}}}
    overrides = {}
    if where == "pipeline":
        data["params"] = {name: 1}
    elif where == "task":
        data["tasks"]["t"]["params"] = {name: 1}
    else:
        overrides = {name: 1}
    spec = make_spec(data, tmp_path)
    with pytest.raises(SpecError) as exc:
        params_of(spec, "t", overrides=overrides)
    field = {"pipeline": f"params.{name}", "task": f"tasks.t.params.{name}", "override": f"-p {name}"}[where]
    assert str(exc.value) == f"{field}: '{name}' is set by nbsched and cannot be a parameter"


# -- hostile templates: the sandbox, and bounds on what a template may make ------------------------
ESCAPES = [
    pytest.param("{{ cycler.__init__.__globals__.os.popen('id').read() }}", id="cycler-globals"),
    pytest.param("{{ run_id.__class__.__mro__[1].__subclasses__() }}", id="str-subclasses"),
    pytest.param("{{ logical_date.__class__ }}", id="datetime-class"),
    pytest.param("{{ params.items.__self__ }}", id="method-self"),
    pytest.param("{{ lipsum.__globals__['os'] }}", id="lipsum-globals"),
]


@pytest.mark.parametrize("template", ESCAPES)
def test_a_template_cannot_reach_python_internals(tmp_path: Path, template: str) -> None:
    spec = make_spec({"name": "demo", "tasks": {"t": {"notebook": "t.ipynb", "params": {"x": template}}}}, tmp_path)
    with pytest.raises(SpecError) as exc:
        params_of(spec, "t")
    message = str(exc.value)
    assert message.startswith("tasks.t.params.x: template error in "), message
    assert "unsafe" in message or "undefined" in message, message
    assert "\n" not in message


@pytest.mark.timeout(60)  # before the bound, each of these built a gigabyte or ran for hours
@pytest.mark.parametrize(
    ("template", "problem"),
    [
        pytest.param("{{ 'x' * 10**9 }}", "'*' would make 1,000,000,000 characters (at most 1,000,000)", id="repeat"),
        pytest.param("{{ ['x'] * 10**9 }}", "'*' would make", id="repeat-list"),
        pytest.param("{{ 7 ** (10 ** 12) }}", "digits (at most 4,300)", id="power"),
        pytest.param("{{ 'x'.ljust(10**9) }}", "str.ljust would make", id="str-method"),
        pytest.param("{{ '{:>1000000000}'.format(1) }}", "str.format would make", id="format-width"),
        pytest.param("{{ '%1000000000d' % 1 }}", "'%' would make", id="printf-width"),
        pytest.param("{{ 'x' | center(10**9) }}", "the 'center' filter would make", id="filter"),
        pytest.param("{% set s = 'x' * 999999 %}{{ s ~ s }}", "'~' would make 1,999,998 characters", id="concat"),
        pytest.param("{% set s = 'x' * 999999 %}{{ [s, s] | join }}", "the 'join' filter would make", id="join"),
        pytest.param(
            "{% set s = 'x' * 999999 %}{% for i in range(2) %}{{ s }}{% endfor %}",
            "the rendered value is over 1,000,000 characters",
            id="output",
        ),
        pytest.param(
            "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
            "too much work",
            id="nested-loops",
        ),
        pytest.param("{% macro f(n) %}{{ f(n) }}{{ f(n) }}{% endmacro %}{{ f(1) }}", "template error", id="recursion"),
        pytest.param(
            "{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}{% endmacro %}{{ f(60) }}",
            "too much work",
            id="exponential-macro",
        ),
    ],
)
def test_a_template_may_not_make_too_much(tmp_path: Path, template: str, problem: str) -> None:
    spec = make_spec({"name": "demo", "tasks": {"t": {"notebook": "t.ipynb", "params": {"x": template}}}}, tmp_path)
    with pytest.raises(SpecError) as exc:
        params_of(spec, "t")
    message = str(exc.value)
    assert message.startswith("tasks.t.params.x: template error in "), message
    assert problem in message, message
    assert "\n" not in message and len(message) < 500


def test_templates_share_one_budget_so_many_params_cannot_add_up(tmp_path: Path) -> None:
    # each value alone is fine (under 1 MB); a thousand of them are not
    big = {f"p{i}": "{{ 'x' * 999999 }}" for i in range(100)}
    spec = make_spec({"name": "demo", "params": big, "tasks": {"t": "t.ipynb"}}, tmp_path)
    with pytest.raises(SpecError, match="too much work"):
        params_of(spec, "t")


def test_ordinary_templates_still_render(tmp_path: Path) -> None:
    spec = make_spec(
        {
            "name": "demo",
            "params": {
                "when": "{{ logical_date.strftime('%Y/%m') }}",
                "tag": "{{ pipeline ~ '-' ~ task }}",
                "list": "{% for i in range(3) %}{{ loop.index }}{% if not loop.last %},{% endif %}{% endfor %}",
                "padded": "{{ '%05d' % 42 }}|{{ '{:>4}'.format('ab') }}",
                "upper": "{{ 'a,b' | replace(',', '-') | upper }}",
                "line": "{{ '=' * 20 }}",
            },
            "tasks": {"t": "t.ipynb"},
        },
        tmp_path,
    )
    got = params_of(spec, "t")
    assert (got["when"], got["tag"], got["list"]) == ("2026/03", "demo-t", "1,2,3")
    assert (got["padded"], got["upper"], got["line"]) == ("00042|  ab", "A-B", "=" * 20)


@pytest.mark.parametrize("template", ["{{ run_id | ds }}", "{{ 5 | ds_nodash }}", "{{ task | ts }}"])
def test_date_filters_on_something_else_are_a_spec_error(tmp_path: Path, template: str) -> None:
    spec = make_spec({"name": "demo", "tasks": {"t": {"notebook": "t.ipynb", "params": {"x": template}}}}, tmp_path)
    with pytest.raises(SpecError, match=r"^tasks\.t\.params\.x: template error in .*expects a date"):
        params_of(spec, "t")


def test_a_failing_expression_is_a_spec_error_not_a_traceback(tmp_path: Path) -> None:
    spec = make_spec(
        {"name": "demo", "tasks": {"t": {"notebook": "t.ipynb", "params": {"x": "{{ 1 / 0 }}"}}}}, tmp_path
    )
    with pytest.raises(
        SpecError,
        match=r"^tasks\.t\.params\.x: template error in '\{\{ 1 / 0 \}\}': "
        r"ZeroDivisionError: division by zero$",
    ):
        params_of(spec, "t")


def test_a_run_an_event_made_gets_what_fired_it_in_its_notebooks_and_templates(tmp_path):
    spec = parse_pipeline(
        {"name": "p", "tasks": {"t": {"notebook": "t.ipynb", "params": {"src": "{{ trigger_file or 'sample.csv' }}"}}}},
        base_dir=tmp_path,
    )
    common = {"overrides": {}, "run_id": "r", "logical_date": LOGICAL_DATE, "run_dir": "runs", "upstream": {}}
    by_file = task_parameters(
        spec, spec.tasks["t"], **common, fired_by={"schedule_id": 1, "file": {"path": "in/a.csv"}}
    )
    assert by_file["trigger_file"] == by_file["src"] == "in/a.csv" and "trigger_run" not in by_file
    upstream = {"run_id": "u", "pipeline": "ingest", "state": "success", "outputs": {}}
    by_run = task_parameters(spec, spec.tasks["t"], **common, fired_by={"schedule_id": 2, "run": upstream})
    assert by_run["trigger_run"] == upstream and by_run["src"] == "sample.csv"
    assert task_parameters(spec, spec.tasks["t"], **common)["src"] == "sample.csv"
