"""The magics through a real IPython InteractiveShell, as a notebook's kernel runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import nbsched, write_notebook, write_yaml
from IPython.core.interactiveshell import InteractiveShell


@pytest.fixture
def shell(project):
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "nbsched")
    yield ip
    magics = ip.magics_manager.registry["NbschedMagics"]
    if magics._service is not None:
        magics._service.close()
        magics._service = None  # the next test has another project folder: discover it again


def _one_line(capsys) -> str:
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1, out
    return out[0]


@pytest.mark.kernel
def test_run_shows_a_table_as_html_and_text(shell, project):
    write_notebook(
        project / "nb.ipynb", "import nbsched\nnbsched.record('region', region)", params="region = 'eu'\nupstream = {}"
    )
    write_yaml(project / "pipeline.yaml", "name: magic\ntasks:\n  only: {notebook: nb.ipynb}\n")
    table = shell.run_line_magic("nbsched", "run pipeline.yaml -p region=us")
    assert "magic" in repr(table) and "success" in repr(table)
    html = table._repr_html_()
    assert "<table" in html and "only" in html and "#2e7d32" in html  # success in green
    run_id = repr(table).split()[1]
    assert shell.run_line_magic("nbsched", f"show {run_id}").rows[0][1] == "success"
    runs = shell.run_line_magic("nbsched", "runs")
    assert runs.rows[0][0] == run_id and runs.rows[0][2] == "success"


def test_cell_magic_registers_a_pipeline_relative_to_the_notebook_folder(shell, project, capsys):
    write_notebook(project / "a.ipynb", "x = 1")
    write_notebook(project / "b.ipynb", "y = 2")
    shell.run_cell(
        "%%nbsched_pipeline nightly\n"
        "tasks:\n  a: {notebook: a.ipynb}\n  b: {notebook: b.ipynb, upstream: [a]}\n"
        "schedules:\n  - {cron: '0 3 * * *', timezone: Europe/Paris}\n"
    )
    assert _one_line(capsys) == "registered nightly v1: 2 task(s) (a → b), schedule(s) 1"
    run_id = shell.run_line_magic("nbsched", "trigger nightly")
    capsys.readouterr()
    assert run_id and shell.run_line_magic("nbsched", f"show {run_id}").title.endswith("queued")
    schedules = shell.run_line_magic("nbsched", "schedules")
    assert schedules.rows[0][1] == "nightly" and "0 3 * * *" in schedules.rows[0][2]
    shell.run_line_magic("nbsched", "pause 1")
    assert _one_line(capsys) == "schedule 1: paused"
    shell.run_line_magic("nbsched", "resume 1")
    assert _one_line(capsys) == "schedule 1: active"


def test_trigger_magic_types_p_as_papermill(shell, project, capsys):
    write_notebook(project / "a.ipynb", "x = 1")
    shell.run_cell("%%nbsched_pipeline typed\ntasks:\n  a: {notebook: a.ipynb}\n")
    run_id = shell.run_line_magic("nbsched", "trigger typed -p a=true -p b=True -p c=null -p d=None -p e=5")
    shown = nbsched("show", run_id, "--json", cwd=project, check=True)
    assert json.loads(shown.stdout)["params"] == {"a": "true", "b": True, "c": "null", "d": None, "e": 5}


def test_schedule_magic_adds_a_schedule(shell, project, capsys):
    write_notebook(project / "a.ipynb", "x = 1")
    shell.run_cell("%%nbsched_pipeline daily\ntasks:\n  a: {notebook: a.ipynb}\n")
    capsys.readouterr()
    shell.run_line_magic("nbsched", "schedule daily --cron '0 6 * * 1-5' --tz Europe/Paris")
    assert _one_line(capsys) == "schedule 1: daily cron 0 6 * * 1-5 (Europe/Paris)"


@pytest.mark.parametrize(
    "line, message",
    [
        ("run nope.yaml", "nbsched: nope.yaml: file not found"),
        ("show nope", "nbsched: run 'nope' not found"),
        ("frobnicate", "nbsched: cannot read '%nbsched frobnicate' (try %nbsched help)"),
        ("trigger ghost", "nbsched: pipeline 'ghost' not found"),
        ("run pipeline.yaml -p novalue", "nbsched: -p 'novalue': expected key=value with a Python identifier as key"),
    ],
    ids=["missing-file", "unknown-run", "unknown-command", "unknown-pipeline", "bad-param"],
)
def test_mistakes_print_one_line_and_no_traceback(shell, project, capsys, line, message):
    write_notebook(project / "nb.ipynb", "x = 1")
    write_yaml(project / "pipeline.yaml", "name: m\ntasks:\n  only: {notebook: nb.ipynb}\n")
    assert shell.run_line_magic("nbsched", line) is None
    assert _one_line(capsys) == message


def test_a_bad_cell_is_one_line(shell, project, capsys):
    shell.run_cell("%%nbsched_pipeline broken\ntasks:\n  a: {notebook: missing.ipynb}\n")
    assert _one_line(capsys) == "nbsched: broken: tasks.a.notebook: notebook not found: missing.ipynb"
    shell.run_cell("%%nbsched_pipeline broken\ntasks: [unclosed\n")
    assert _one_line(capsys).startswith("nbsched: %%nbsched_pipeline broken:2:1: invalid YAML: ")


def test_magics_find_the_servers_nbsched_folder_above_the_notebook(shell, project):
    (project / ".nbsched").mkdir()
    sub = project / "notebooks" / "team"
    write_notebook(sub / "a.ipynb", "x = 1")
    from nbsched.service import Config

    found = Config.discover(sub)
    assert found.home == project / ".nbsched" and found.runs_dir == project / "nbsched-runs"
    assert found.db_url == f"sqlite:///{project / '.nbsched' / 'nbsched.db'}"


def test_a_servers_kernels_use_the_database_and_outputs_it_exports(project, monkeypatch):
    from nbsched.service import Config

    (project / ".nbsched").mkdir()
    monkeypatch.setenv("NBSCHED_DB_URL", "sqlite:////srv/team/nbsched.db")
    monkeypatch.setenv("NBSCHED_RUNS_DIR", "/srv/team/outputs")
    found = Config.discover(project)
    assert (found.db_url, found.runs_dir) == ("sqlite:////srv/team/nbsched.db", Path("/srv/team/outputs"))


def test_panel_magic_shows_the_run_history_panel(shell, project, capsys):
    from nbsched.widgets import RunPanel

    write_notebook(project / "a.ipynb", "x = 1")
    shell.run_cell("%%nbsched_pipeline nightly\ntasks:\n  a: {notebook: a.ipynb}\n")
    panel = shell.run_line_magic("nbsched", "panel nightly")
    try:
        assert isinstance(panel, RunPanel) and panel.pipeline.value == "nightly"
        assert "No runs yet" in panel.runs_table.value
    finally:
        panel.close()
    capsys.readouterr()
    assert shell.run_line_magic("nbsched", "panel nighty") is None
    assert _one_line(capsys) == "nbsched: pipeline 'nighty' not found"


SCRIPT = "<script>alert(1)</script>"


@pytest.mark.kernel
def test_a_script_in_a_name_an_error_or_a_parameter_is_text_in_a_table(shell, project):
    from nbsched.magics import Table

    write_notebook(project / "nb.ipynb", "raise ValueError(who)", params="who = ''\nupstream = {}")
    write_yaml(project / "pipeline.yaml", "name: hostile\ntasks:\n  only: {notebook: nb.ipynb}\n")
    ran = shell.run_line_magic("nbsched", f"run pipeline.yaml -p 'who={SCRIPT}'")
    assert ran.rows[0][3].startswith(f"ValueError: {SCRIPT}")  # the error, as the kernel raised it
    hostile = Table(SCRIPT, [SCRIPT, "state"], [[SCRIPT, SCRIPT], [None, "failed"]], state_column=1)
    for html in (ran._repr_html_(), hostile._repr_html_()):
        assert "<script" not in html.lower() and "&lt;script&gt;alert(1)&lt;/script&gt;" in html, html
    assert "<caption>&lt;script&gt;" in hostile._repr_html_() and "<td>None</td>" in hostile._repr_html_()


@pytest.mark.kernel
def test_a_projects_template_restyles_the_tables(shell, project):
    templates = project / ".nbsched" / "templates"
    templates.mkdir(parents=True)
    (templates / "magics_table.html.j2").write_text(
        '<table class="ours">{% for row in rows %}<tr><td>{{ row | join(" / ") }}</td></tr>{% endfor %}</table>\n'
    )
    write_notebook(project / "nb.ipynb", "x = 1")
    write_yaml(project / "pipeline.yaml", "name: ours\ntasks:\n  only: {notebook: nb.ipynb}\n")
    table = shell.run_line_magic("nbsched", "run pipeline.yaml")
    assert table._repr_html_().startswith('<table class="ours"><tr><td>only / success / 1/1 / ')
