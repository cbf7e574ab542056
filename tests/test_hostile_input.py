"""Hostile input through the CLI (a real process) and the magics: templates that try to run
code or to make gigabytes, specs built to exhaust memory, time or the stack. Each is refused
with one line naming the file and the field (exit 2), and nothing it asked for happens."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import nbsched, write_notebook, write_yaml


def shell_template(marker: Path) -> str:
    """A template that, rendered by a plain Jinja environment, runs a shell command creating ``marker``."""
    return "{{ cycler.__init__.__globals__.os.popen('touch " + str(marker) + "').read() }}"


def assert_one_line_error(proc, *parts: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for part in parts:
        assert part in lines[0], lines[0]
    return lines[0]


# -- templates ----------------------------------------------------------------------------------------


def test_validate_does_not_run_a_template_s_shell_command(project: Path) -> None:
    marker = project / "PWNED"
    write_notebook(project / "nb.ipynb", "x = 1", params="x = None\nupstream = {}")
    write_yaml(
        project / "pipeline.yaml", f'name: evil\nparams: {{x: "{shell_template(marker)}"}}\ntasks: {{t: nb.ipynb}}\n'
    )
    line = assert_one_line_error(
        nbsched("validate", "pipeline.yaml", cwd=project), "pipeline.yaml: params.x: template error in", "unsafe"
    )
    assert not marker.exists(), line


def test_run_does_not_run_a_shell_command_given_with_p(project: Path) -> None:
    marker = project / "PWNED"
    write_notebook(project / "nb.ipynb", "x = 1", params="x = None\nupstream = {}")
    write_yaml(project / "pipeline.yaml", "name: demo\ntasks: {t: nb.ipynb}\n")
    proc = nbsched("run", "pipeline.yaml", "-p", f"x={shell_template(marker)}", cwd=project)
    assert_one_line_error(proc, "-p x: template error in", "unsafe")
    assert not marker.exists()
    assert not (project / "nbsched-runs").exists()  # refused before a run was made


@pytest.mark.timeout(120)  # it took 27 s, and a gigabyte, before the bound
def test_validate_refuses_a_template_that_makes_a_gigabyte_before_making_it(project: Path) -> None:
    write_notebook(project / "nb.ipynb", "x = 1", params="x = None\nupstream = {}")
    write_yaml(project / "pipeline.yaml", "name: big\nparams: {x: \"{{ 'x' * 10**9 }}\"}\ntasks: {t: nb.ipynb}\n")
    assert_one_line_error(
        nbsched("validate", "pipeline.yaml", cwd=project),
        "params.x: template error",
        "'*' would make 1,000,000,000 characters (at most 1,000,000)",
    )


# -- specs built to exhaust memory, time or the stack ----------------------------------------------

BILLION_LAUGHS = """\
name: bomb
params:
  a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
  b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
  c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
  d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
  e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
  f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
  g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
  h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
  i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
tasks: {t: nb.ipynb}
"""


@pytest.fixture
def notebook(project: Path) -> Path:
    return write_notebook(project / "nb.ipynb", "x = 1", params="x = None\nupstream = {}")


@pytest.mark.timeout(120)  # validate and run never finished; the server grew to 390 MB
@pytest.mark.parametrize("command", ["validate", "run", "register"])
def test_a_yaml_alias_bomb_is_refused_by_every_command(project: Path, notebook: Path, command: str) -> None:
    write_yaml(project / "pipeline.yaml", BILLION_LAUGHS)
    assert_one_line_error(
        nbsched(command, "pipeline.yaml", cwd=project),
        "pipeline.yaml:7:30: invalid YAML: more than 50,000 values once aliases are expanded",
    )


def test_a_yaml_alias_that_contains_itself_is_refused(project: Path, notebook: Path) -> None:
    write_yaml(project / "pipeline.yaml", "name: loop\nparams: {x: &x [1, *x]}\ntasks: {t: nb.ipynb}\n")
    assert_one_line_error(
        nbsched("validate", "pipeline.yaml", cwd=project),
        "pipeline.yaml:2:20: invalid YAML: an alias inside the value it names",
    )


@pytest.mark.timeout(120)
def test_yaml_nested_20000_deep_is_one_line_not_a_recursion_error(project: Path, notebook: Path) -> None:
    write_yaml(
        project / "pipeline.yaml", "name: deep\nparams: {x: " + "[" * 20000 + "]" * 20000 + "}\ntasks: {t: nb.ipynb}\n"
    )
    assert_one_line_error(
        nbsched("validate", "pipeline.yaml", cwd=project),
        "pipeline.yaml:2:",
        "invalid YAML: nested deeper than 100 levels",
    )


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_notebook_nested_100000_deep_is_one_line_not_a_recursion_error(project: Path) -> None:
    (project / "deep.ipynb").write_text('{"cells": [], "metadata": {"x": ' + "[" * 100000 + "]" * 100000 + "}}")
    write_yaml(project / "pipeline.yaml", "name: deep\ntasks: {t: deep.ipynb}\n")
    for args in (["validate", "pipeline.yaml"], ["validate", "deep.ipynb"], ["run", "pipeline.yaml"]):
        assert_one_line_error(
            nbsched(*args, cwd=project),
            "tasks.",
            "notebook: deep.ipynb is not a valid notebook (nested deeper than 100 levels)",
        )


@pytest.mark.slow
@pytest.mark.timeout(120)  # 55 s before the bound
def test_a_50_mb_spec_is_refused_unread(project: Path, notebook: Path) -> None:
    with (project / "pipeline.yaml").open("w") as f:
        f.write("name: huge\ntasks: {t: nb.ipynb}\n")
        f.write(("# " + "x" * 1021 + "\n") * (50 * 1024))  # 50 MB of comments
    size = (project / "pipeline.yaml").stat().st_size
    for command in ("validate", "run", "register"):
        assert_one_line_error(
            nbsched(command, "pipeline.yaml", cwd=project),
            f"pipeline.yaml: {size:,} bytes: a spec may have at most 1,000,000 bytes (1 MB)",
        )


def test_a_cell_magic_with_an_alias_bomb_is_one_line(project: Path, notebook: Path, capsys) -> None:
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    if "nbsched" not in shell.extension_manager.loaded:  # the process's one shell may have it from another test
        shell.run_line_magic("load_ext", "nbsched")
    try:
        body = BILLION_LAUGHS.replace("name: bomb\n", "")
        shell.run_cell("%%nbsched_pipeline bomb\n" + body)
        shell.run_cell(
            "%%nbsched_pipeline deep\nparams: {x: " + "[" * 20000 + "]" * 20000 + "}\ntasks: {t: nb.ipynb}\n"
        )
        shell.run_cell("%%nbsched_pipeline big\n" + "# " + "x" * 1_000_000 + "\ntasks: {t: nb.ipynb}\n")
        lines = capsys.readouterr().out.strip().splitlines()
    finally:
        magics = shell.magics_manager.registry["NbschedMagics"]
        if magics._service is not None:
            magics._service.close()
            magics._service = None
    assert len(lines) == 3, lines
    assert lines[0].startswith("nbsched: %%nbsched_pipeline bomb:6:30:") and "more than 50,000 values" in lines[0]
    assert lines[1].startswith("nbsched: %%nbsched_pipeline deep:1:") and "nested deeper than 100 levels" in lines[1]
    assert lines[2] == (
        "nbsched: %%nbsched_pipeline big: 1,000,024 bytes: a spec may have at most 1,000,000 bytes (1 MB)"
    )


# -- smaller mistakes: one line each, exit 2 ----------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        pytest.param(
            "name: demo\ntasks: {t: {notebook: nb.ipynb, retries: 1000000000000000000000000000000}}\n",
            "pipeline.yaml: tasks.t.retries: expected a whole number from 0 to 100, got "
            "1000000000000000000000000000000",
            id="retries",
        ),
        pytest.param(
            "name: demo\ntasks: {t: nb.ipynb}\nschedules: [{every: 1h, max_active_runs: 100000000000000}]\n",
            "pipeline.yaml: schedules[0].max_active_runs: expected a whole number from 1 to 1,000, got 100000000000000",
            id="max-active-runs",
        ),
        pytest.param(
            "name: demo\ntasks: {t: {notebook: nb.ipynb, timeout: 100000000000000000d}}\n",
            "pipeline.yaml: tasks.t.timeout: bad duration '100000000000000000d': longer than 3650 days",
            id="duration",
        ),
        pytest.param(
            "name: demo\ntasks: {t: {notebook: nb.ipynb, resources: {GPU: .inf}}}\n",
            "pipeline.yaml: tasks.t.resources.GPU: expected a number > 0, got inf",
            id="infinite-resource",
        ),
        pytest.param(
            'name: "demo\\n"\ntasks: {t: nb.ipynb}\n',
            "pipeline.yaml: name: bad pipeline name 'demo\\n'",
            id="pipeline-name-newline",
        ),
        pytest.param('name: demo\ntasks: {"t\\n": nb.ipynb}\n', "pipeline.yaml: tasks.t\n", id="task-name-newline"),
        pytest.param(
            "name: demo\ntasks: {t: nb.ipynb}\nname: other\n",
            "pipeline.yaml:3:1: invalid YAML: duplicate key 'name' (first on line 1)",
            id="duplicate-key",
        ),
        pytest.param(
            "name: demo\ntasks:\n  t: nb.ipynb\n  t: other.ipynb\n",
            "pipeline.yaml:4:3: invalid YAML: duplicate key 't' (first on line 3)",
            id="duplicate-task",
        ),
        pytest.param(
            "name: demo\nparams: {x: " + "1" * 5000 + "}\ntasks: {t: nb.ipynb}\n",
            "pipeline.yaml: invalid YAML: Exceeds the limit (4300 digits) for integer string conversion",
            id="huge-integer",
        ),
    ],
)
def test_small_mistakes_are_one_line_and_exit_2(project: Path, notebook: Path, spec: str, message: str) -> None:
    write_yaml(project / "pipeline.yaml", spec)
    proc = nbsched("validate", "pipeline.yaml", cwd=project)
    if "\n" in message:  # a name with a newline is shown escaped, on the same line
        message = message.replace("\n", "\\n")
    assert_one_line_error(proc, message)


def test_retries_too_large_never_reach_the_run(project: Path, notebook: Path) -> None:
    write_yaml(project / "pipeline.yaml", "name: demo\ntasks: {t: {notebook: nb.ipynb, retries: 10000000000000}}\n")
    assert_one_line_error(nbsched("run", "pipeline.yaml", cwd=project), "tasks.t.retries: expected a whole number")
    assert not (project / "nbsched-runs").exists()


def test_a_p_value_that_starts_like_json_must_be_json(project: Path, notebook: Path) -> None:
    write_yaml(project / "pipeline.yaml", "name: demo\ntasks: {t: nb.ipynb}\n")
    assert_one_line_error(
        nbsched("run", "pipeline.yaml", "-p", "x=[1,2", cwd=project),
        "-p x: not JSON:",
        "(a value that starts with '[' or '{' must be valid JSON)",
    )
    assert not (project / "nbsched-runs").exists()
