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
    write_yaml(project / "pipeline.yaml", f'name: evil\nparams: {{x: "{shell_template(marker)}"}}\ntasks: {{t: nb.ipynb}}\n')
    line = assert_one_line_error(nbsched("validate", "pipeline.yaml", cwd=project),
                                 "pipeline.yaml: params.x: template error in", "unsafe")
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
    assert_one_line_error(nbsched("validate", "pipeline.yaml", cwd=project),
                          "params.x: template error", "'*' would make 1,000,000,000 characters (at most 1,000,000)")
