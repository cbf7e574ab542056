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
    shown = shell.run_line_magic("nbsched", "run pipeline.yaml -p region=us")
    assert "magic" in repr(shown) and "success" in repr(shown)
    html = shown._repr_html_()
    assert "<table" in html and "only" in html and "#2e7d32" in html  # success in green
    run_id = repr(shown).split()[1]
    (tasks,) = shell.run_line_magic("nbsched", f"show {run_id}").tables
    assert tasks.headers[:2] == ["TASK", "STATE"] and tasks.rows[0][:2] == ["only", "success"]
    (runs,) = shell.run_line_magic("nbsched", "runs").tables
    assert runs.rows[0][0] == run_id and runs.rows[0][2] == "success" and runs.state_column == 2


def test_cell_magic_registers_a_pipeline_relative_to_the_notebook_folder(shell, project, capsys):
    write_notebook(project / "a.ipynb", "x = 1")
    write_notebook(project / "b.ipynb", "y = 2")
    shell.run_cell(
        "%%nbsched_pipeline nightly\n"
        "tasks:\n  a: {notebook: a.ipynb}\n  b: {notebook: b.ipynb, upstream: [a]}\n"
        "schedules:\n  - {cron: '0 3 * * *', timezone: Europe/Paris}\n"
    )
    assert capsys.readouterr().out.splitlines() == [
        "registered nightly v1: 2 task(s) in 2 layer(s), schedule(s) 1",
        "  layer 1: a",
        "  layer 2: b (after a)",
    ]
    run_id = shell.run_line_magic("nbsched", "trigger nightly")
    assert _one_line(capsys) == run_id  # printed as the command line prints it, and returned
    assert "  queued  " in repr(shell.run_line_magic("nbsched", f"show {run_id}")).splitlines()[0]
    (schedules,) = shell.run_line_magic("nbsched", "schedules").tables
    assert schedules.rows[0][1] == "nightly" and "0 3 * * *" in schedules.rows[0][2]
    shell.run_line_magic("nbsched", "pause 1")
    assert _one_line(capsys) == "schedule 1: paused"
    shell.run_line_magic("nbsched", "resume 1")
    assert _one_line(capsys).startswith("schedule 1: active, next: ")


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
    assert _one_line(capsys).startswith("schedule 1: daily cron 0 6 * * 1-5 (Europe/Paris)  next: ")


@pytest.mark.parametrize(
    "line, message",
    [
        ("run nope.yaml", "nbsched: nope.yaml: file not found"),
        ("show nope", "nbsched: run 'nope' not found"),
        ("frobnicate", "nbsched: No such command 'frobnicate'. (try %nbsched help)"),
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
    assert f"  only: ValueError: {SCRIPT}" in repr(ran)  # the error, as the kernel raised it
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
    shown = shell.run_line_magic("nbsched", "run pipeline.yaml")
    assert '<table class="ours"><tr><td>only / success / 1/1 / ' in shown._repr_html_()


def test_every_option_of_the_command_line_works_in_a_cell_and_an_unknown_one_is_an_error(shell, project, capsys):
    write_notebook(project / "a.ipynb", "x = 1")
    shell.run_cell("%%nbsched_pipeline daily\ntasks:\n  a: {notebook: a.ipynb}\n")
    capsys.readouterr()
    # the option the magics used to drop: an error naming it, and no schedule made
    assert shell.run_line_magic("nbsched", "schedule daily --cron '0 6 * * *' --timezone Europe/Paris") is None
    assert _one_line(capsys) == "nbsched: schedule add: No such option '--timezone'."
    assert shell.run_line_magic("nbsched", "runs --frobnicate") is None
    assert _one_line(capsys) == "nbsched: runs: No such option '--frobnicate'."
    assert shell.run_line_magic("nbsched", "schedule add daily --files 'in/*.csv' --state failed") is None
    assert (
        _one_line(capsys) == "nbsched: schedule.state: only an after schedule has state (this one is a files schedule)"
    )
    shell.run_line_magic("nbsched", "schedules")
    assert _one_line(capsys).startswith("no schedules")  # nothing made meanwhile

    # options only the command line had before: each takes effect
    shell.run_line_magic("nbsched", "schedule add daily --every 1h --start 2030-01-01T00:30 --tz Europe/Paris")
    assert _one_line(capsys).startswith("schedule 1: daily every 1h")
    shell.run_line_magic("nbsched", "schedule daily --after other --state failed --max-active-runs 2")
    capsys.readouterr()
    shown = shell.run_line_magic("nbsched", "schedule list --json")
    every, after = json.loads(capsys.readouterr().out)
    assert shown is None and every["trigger"]["timezone"] == "Europe/Paris"
    assert every["trigger"]["start"].startswith("2029-12-31T23:30")  # 00:30 in Paris
    assert after["trigger"] == {"after": "other", "state": "failed"} and after["max_active_runs"] == 2
    run_id = shell.run_line_magic("nbsched", "trigger daily --only a -p x=2")
    assert _one_line(capsys) == run_id
    shell.run_line_magic("nbsched", "runs --pipeline daily --state queued -n 1 --json")
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["run_id"] == run_id and listed["params"] == {"x": 2} and listed["selection"]["only"] == ["a"]


def test_help_and_a_commands_help_list_the_command_lines_options(shell, capsys):
    assert shell.run_line_magic("nbsched", "help") is None
    text = capsys.readouterr().out
    assert text.startswith("%nbsched COMMAND [OPTIONS]") and "Usage: %nbsched [OPTIONS] COMMAND" in text
    assert all(f"  {command} " in text for command in ("run", "runs", "show", "schedule", "pool", "retry"))
    shell.run_line_magic("nbsched", "schedule add --help")
    text = capsys.readouterr().out
    assert "Usage: %nbsched schedule add [OPTIONS] PIPELINE" in text and "--misfire-grace" in text


@pytest.mark.kernel
def test_a_command_in_a_cell_leaves_the_kernel_as_it_found_it(shell, project, capsys):
    import signal

    write_notebook(project / "nb.ipynb", "x = 1")
    write_yaml(project / "pipeline.yaml", "name: kept\ntasks:\n  only: {notebook: nb.ipynb}\n")
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    magics = shell.magics_manager.registry["NbschedMagics"]
    before = magics.service.config
    shown = shell.run_line_magic("nbsched", "run pipeline.yaml --no-kernel-pool -w 1")
    assert "success" in repr(shown)
    assert magics.service.config == before  # --no-kernel-pool was for that run only
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers
