"""Schedules, triggers, backfill, cancel and retry from the command line (no daemon needed)."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner
from conftest import nbsched, write_notebook, write_yaml

from nbsched.cli import cli


def _project(project, notebook_code: str = "x = 1"):
    write_notebook(project / "nb.ipynb", notebook_code, params="region = 'eu'\nupstream = {}")
    write_yaml(project / "pipeline.yaml", "name: sales\ntasks:\n  only: {notebook: nb.ipynb}\n")
    nbsched("register", "pipeline.yaml", cwd=project, check=True)


@pytest.mark.slow
def test_schedule_add_and_list_shows_next_fire_in_its_zone(project):
    _project(project)
    added = nbsched(
        "schedule",
        "add",
        "sales",
        "--cron",
        "0 6 * * 1-5",
        "--tz",
        "Europe/Paris",
        "-p",
        "region=us",
        cwd=project,
        check=True,
    ).stdout
    assert added.startswith("schedule 1: sales cron 0 6 * * 1-5")
    listing = nbsched("schedule", "list", cwd=project, check=True).stdout
    assert re.search(r"06:00:00 CES?T \(in (\d+d \d+h|\d+h \d+m|\d+m \d+s)\)", listing), listing
    (entry,) = json.loads(nbsched("schedule", "list", "--json", cwd=project, check=True).stdout)
    assert entry["trigger"]["cron"] == "0 6 * * 1-5" and entry["trigger"]["timezone"] == "Europe/Paris"
    assert entry["params"] == {"region": "us"} and entry["enabled"] is True


@pytest.mark.slow
def test_schedule_mistakes_are_one_line_and_exit_2(project):
    _project(project)
    cases = [
        (["schedule", "add", "sales", "--cron", "0 25 * * *"], "0 25 * * *"),
        (["schedule", "add", "sales", "--every", "10 minutes"], "10 minutes"),
        (["schedule", "add", "sales", "--cron", "@daily", "--tz", "Europe/Pariss"], "did you mean 'Europe/Paris'"),
        (["schedule", "add", "nosuch", "--cron", "@daily"], "pipeline 'nosuch' not found"),
        (["schedule", "add", "sales"], "cron"),
        (["schedule", "pause", "99"], "schedule 99 not found"),
        (["schedule", "rm", "99"], "schedule 99 not found"),
        (["trigger", "nosuch"], "pipeline 'nosuch' not found"),
    ]
    for args, text in cases:
        proc = nbsched(*args, cwd=project)
        assert proc.returncode == 2, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and text in lines[0], (args, proc.stderr)


KINDS = {
    "cron": ["--cron", "0 6 * * *"],
    "every": ["--every", "1h"],
    "at": ["--at", "2030-01-01T06:00"],
    "after": ["--after", "sales"],
    "files": ["--files", "incoming/*.csv"],
}
OPTIONS = {  # each option of `schedule add` that only some kinds take, with the kinds that take it
    "--tz": (["Europe/Paris"], {"cron", "every", "at"}, "only a time schedule (cron, every or at) has timezone"),
    "--catchup": ([], {"cron", "every", "at"}, "only a time schedule (cron, every or at) has catchup"),
    "--misfire-grace": (["5m"], {"cron", "every", "at"}, "only a time schedule (cron, every or at) has misfire_grace"),
    "--start": (["2030-01-01T00:30"], {"every"}, "only an every schedule has start"),
    "--state": (["failed"], {"after"}, "only an after schedule has state"),
    "--poll": (["2s"], {"files"}, "only a files schedule has poll"),
    "--settle": (["1s"], {"files"}, "only a files schedule has settle"),
    "--existing": ([], {"files"}, "only a files schedule has existing"),
}


def test_an_option_of_another_kind_of_schedule_is_an_error_not_dropped(project):
    _project(project)
    proc = nbsched("schedule", "add", "sales", "--files", "incoming/*.csv", "--state", "failed", cwd=project)
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "Error: schedule.state: only an after schedule has state (this one is a files schedule)"
    )
    write_yaml(project / "other.yaml", "name: other\ntasks:\n  only: {notebook: nb.ipynb}\n")
    nbsched("register", "other.yaml", cwd=project, check=True)
    for option, (values, kinds, problem) in OPTIONS.items():  # the same commands, in this process: faster
        for kind, trigger in KINDS.items():
            result = CliRunner().invoke(cli, ["schedule", "add", "other", *trigger, option, *values])
            if kind in kinds:  # it takes it, and keeps it
                assert result.exit_code == 0, (kind, option, result.output)
                continue
            field = problem.rsplit(" ", 1)[1]
            a = "an" if kind in ("every", "at", "after") else "a"
            assert result.exit_code == 2, (kind, option, result.output)
            assert result.output.strip() == f"Error: schedule.{field}: {problem} (this one is {a} {kind} schedule)"
    kept = json.loads(nbsched("schedule", "list", "--json", cwd=project).stdout)
    assert len(kept) == sum(len(kinds) for _, kinds, _ in OPTIONS.values()) and {s["pipeline"] for s in kept} == {
        "other"
    }
    every = [s for s in kept if s["kind"] == "every"]
    assert any(s["trigger"]["start"].startswith("2030-01-01T00:30") for s in every)  # --start anchors it
    assert any(s["kind"] == "after" and s["trigger"]["state"] == "failed" for s in kept)
    assert any(s["kind"] == "files" and s["trigger"]["poll"] == 2 for s in kept)


@pytest.mark.slow
def test_pause_resume_and_remove(project):
    _project(project)
    nbsched("schedule", "add", "sales", "--every", "1h", cwd=project, check=True)
    assert "paused" in nbsched("schedule", "pause", "1", cwd=project, check=True).stdout
    assert json.loads(nbsched("schedule", "list", "--json", cwd=project).stdout)[0]["enabled"] is False
    assert "active, next:" in nbsched("schedule", "resume", "1", cwd=project, check=True).stdout
    nbsched("schedule", "rm", "1", cwd=project, check=True)
    assert json.loads(nbsched("schedule", "list", "--json", cwd=project).stdout) == []


@pytest.mark.slow
def test_trigger_queues_a_run_and_cancel_ends_it(project):
    _project(project)
    run_id = json.loads(nbsched("trigger", "sales", "-p", "region=us", "--json", cwd=project, check=True).stdout)[
        "run_id"
    ]
    (run,) = json.loads(nbsched("runs", "--json", cwd=project, check=True).stdout)
    assert (run["run_id"], run["state"], run["trigger"], run["schedule_id"]) == (run_id, "queued", "manual", None)
    assert run["params"] == {"region": "us"}
    assert "cancelled" in nbsched("cancel", run_id, cwd=project, check=True).stdout
    again = nbsched("cancel", run_id, cwd=project)
    assert again.returncode == 2 and "already ended (cancelled)" in again.stderr


@pytest.mark.kernel
def test_retry_requeues_the_failed_task_and_runs_it(project):
    _project(project, "import pathlib\nif not pathlib.Path('fixed').exists():\n    raise RuntimeError('not yet')")
    failed = nbsched("run", "pipeline.yaml", "--json", cwd=project)
    assert failed.returncode == 1
    run_id = json.loads(failed.stdout)["run_id"]
    (project / "fixed").write_text("yes")
    retried = nbsched("retry", run_id, "--run", cwd=project)
    assert retried.returncode == 0, retried.stderr
    assert "re-queued only" in retried.stdout
    run = json.loads(nbsched("show", run_id, "--json", cwd=project, check=True).stdout)
    assert run["state"] == "success" and run["tasks"]["only"]["try_number"] == 2
    not_again = nbsched("retry", run_id, cwd=project)
    assert not_again.returncode == 2 and "only failed or cancelled runs" in not_again.stderr


@pytest.mark.kernel
def test_backfill_creates_one_run_per_fire_and_never_twice(project):
    _project(project, "import nbsched\nnbsched.record('ld', logical_date)")
    nbsched("schedule", "add", "sales", "--cron", "0 6 * * *", "--tz", "Europe/Paris", cwd=project, check=True)
    done = nbsched("backfill", "sales", "--start", "2026-11-01", "--end", "2026-11-03", "--run", cwd=project)
    assert done.returncode == 0, done.stderr
    assert "3 run(s) queued" in done.stdout
    runs = json.loads(nbsched("runs", "--json", cwd=project, check=True).stdout)
    assert sorted(r["logical_date"] for r in runs) == [
        "2026-11-01T05:00:00+00:00",
        "2026-11-02T05:00:00+00:00",
        "2026-11-03T05:00:00+00:00",
    ]
    assert {r["trigger"] for r in runs} == {"backfill"} and {r["state"] for r in runs} == {"success"}
    assert sorted(r["tasks"]["only"]["outputs"]["ld"] for r in runs)[0] == "2026-11-01T05:00:00+00:00"
    again = nbsched("backfill", "sales", "--start", "2026-11-01", "--end", "2026-11-03", cwd=project, check=True)
    assert "0 run(s) queued, 3 date(s) already had a run" in again.stdout
    bad = nbsched("backfill", "sales", "--start", "2026-11-05", "--end", "2026-11-01", cwd=project)
    assert bad.returncode == 2 and "before --start" in bad.stderr
