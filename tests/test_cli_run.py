"""The CLI in real processes: a run seen from a second process, Ctrl-C and SIGTERM, listings."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest
from conftest import NBSCHED, nbsched, run_json, write_notebook, write_yaml

from nbsched.timefmt import elapsed, local_time


def _start_sleeping_run(project: Path) -> subprocess.Popen[str]:
    write_notebook(
        project / "sleepy.ipynb",
        "import os, pathlib, time\npathlib.Path('kernel.pid').write_text(str(os.getpid()))",
        "time.sleep(60)",
    )
    write_notebook(project / "ok.ipynb", "x = 1")
    write_yaml(
        project / "pipeline.yaml",
        """
name: long
tasks:
  first: {notebook: sleepy.ipynb}
  second: {notebook: ok.ipynb, upstream: [first]}
""",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("NBSCHED_")}
    return subprocess.Popen(
        [*NBSCHED, "run", "pipeline.yaml"],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_until_running(project: Path, proc: subprocess.Popen[str]) -> dict:
    """Poll from a second process until the run shows its first task running."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        listing = nbsched("runs", "--json", cwd=project)
        runs = json.loads(listing.stdout) if listing.returncode == 0 else []
        if runs and runs[0]["tasks"]["first"]["state"] == "running" and (project / "kernel.pid").exists():
            return runs[0]
        time.sleep(0.3)
    raise AssertionError("the run never showed as running to another process")


@pytest.mark.kernel
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_signal_cancels_the_run_and_stops_its_kernel(project, sig):
    proc = _start_sleeping_run(project)
    try:
        seen = _wait_until_running(project, proc)
        assert seen["state"] == "running"
        assert seen["tasks"]["second"]["state"] == "pending"
        kernel_pid = int((project / "kernel.pid").read_text())
        # `show` from another terminal tells where the running notebook is
        deadline = time.monotonic() + 10
        while "first: at cell 4/4: time.sleep(60)" not in (
            shown := nbsched("show", seen["run_id"], cwd=project).stdout
        ):
            assert time.monotonic() < deadline, shown  # it may show the cell before first, for a poll
            time.sleep(0.2)

        proc.send_signal(sig)
        _out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 1, err
    assert "Traceback" not in err, err

    run = json.loads(nbsched("show", seen["run_id"], "--json", cwd=project, check=True).stdout)
    assert run["state"] == "cancelled"
    assert {n: t["state"] for n, t in run["tasks"].items()} == {"first": "cancelled", "second": "cancelled"}
    assert run["ended_at"] is not None
    with pytest.raises(ProcessLookupError):
        for _ in range(50):  # the kernel is killed, then reaped by whoever adopted it
            os.kill(kernel_pid, 0)
            time.sleep(0.1)
    # the output notebook up to the stop is kept, as the task's, and says why it stopped
    assert Path(run["tasks"]["first"]["output_path"]).name == "first.ipynb"
    nb = json.loads(Path(run["tasks"]["first"]["output_path"]).read_text())
    assert any(o.get("ename") == "TaskStopped" for c in nb["cells"] for o in c.get("outputs", []))


@pytest.mark.kernel
def test_runs_and_show_list_what_ran(project):
    write_notebook(project / "ok.ipynb", "x = 1")
    write_yaml(project / "pipeline.yaml", "name: listed\ntasks:\n  one: {notebook: ok.ipynb}\n")
    first = nbsched("run", "pipeline.yaml", cwd=project, check=True)
    assert "one" in first.stdout and "success" in first.stdout
    assert "outputs: nbsched-runs/listed/" in first.stdout

    listing = nbsched("runs", cwd=project, check=True).stdout
    assert "listed" in listing and "success" in listing and "1/1" in listing
    runs = json.loads(nbsched("runs", "--json", cwd=project, check=True).stdout)
    assert len(runs) == 1 and runs[0]["pipeline"] == "listed" and runs[0]["trigger"] == "manual"
    shown = nbsched("show", runs[0]["run_id"], cwd=project, check=True).stdout
    assert runs[0]["run_id"] in shown and "one" in shown


@pytest.mark.kernel
def test_show_lists_what_each_try_did(project):
    write_notebook(
        project / "once.ipynb",
        "if nbsched_try == 1:\n    raise RuntimeError('first try fails')",
        params="nbsched_try = 0\nupstream = {}",
    )
    write_yaml(project / "pipeline.yaml", "name: twice\ntasks:\n  once: {notebook: once.ipynb, retries: 1}\n")
    code, run = run_json("pipeline.yaml", cwd=project)
    assert code == 0
    tries = run["tasks"]["once"]["tries"]
    assert [(t["try_number"], t["state"]) for t in tries] == [(1, "up_for_retry"), (2, "success")]
    assert "RuntimeError: first try fails" in tries[0]["error"] and tries[1]["error"] is None
    assert all(t["host"] and t["runner"] and t["started_at"] and t["ended_at"] for t in tries)

    shown = nbsched("show", run["run_id"], cwd=project, check=True).stdout
    lines = [line.split() for line in shown.splitlines()]
    assert ["TASK", "TRY", "STATE", "DURATION", "HOST", "RUNNER", "ERROR"] in lines
    first = next(line for line in lines if line[:3] == ["once", "1", "up_for_retry"])
    assert first[4] == tries[0]["host"] and first[5] == tries[0]["runner"]
    assert "RuntimeError: first try fails" in " ".join(first)
    assert any(line[:3] == ["once", "2", "success"] for line in lines)


def test_show_unknown_run_is_one_line_and_exit_2(project):
    proc = nbsched("show", "nope", cwd=project)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["Error: run 'nope' not found"]


def test_bad_override_is_one_line_and_exit_2(project):
    write_notebook(project / "ok.ipynb", "x = 1")
    write_yaml(project / "pipeline.yaml", "name: o\ntasks:\n  one: {notebook: ok.ipynb}\n")
    proc = nbsched("run", "pipeline.yaml", "-p", "novalue", cwd=project)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "key=value" in proc.stderr
    assert not (project / "nbsched-runs").exists()


@pytest.mark.kernel
def test_db_option_and_env_choose_the_database(project, tmp_path_factory):
    write_notebook(project / "ok.ipynb", "x = 1")
    write_yaml(project / "pipeline.yaml", "name: elsewhere\ntasks:\n  one: {notebook: ok.ipynb}\n")
    db = tmp_path_factory.mktemp("db") / "other.db"
    nbsched("--db", f"sqlite:///{db}", "run", "pipeline.yaml", cwd=project, check=True)
    assert db.exists()
    assert json.loads(nbsched("runs", "--json", cwd=project, check=True).stdout) == []
    env_runs = subprocess.run(
        [*NBSCHED, "runs", "--json"],
        cwd=project,
        capture_output=True,
        text=True,
        env={**os.environ, "NBSCHED_DB_URL": f"sqlite:///{db}"},
        check=True,
    )
    assert [r["pipeline"] for r in json.loads(env_runs.stdout)] == ["elsewhere"]


@pytest.mark.kernel
@pytest.mark.slow
def test_runs_tells_partial_and_repaired_runs_with_their_first_start_and_total_time(project):
    write_notebook(project / "ok.ipynb", "import time\ntime.sleep(0.5)")
    write_yaml(
        project / "pipeline.yaml",
        "name: told\ntasks:\n  a: ok.ipynb\n  b: {notebook: ok.ipynb, upstream: [a]}\n  report: ok.ipynb\n",
    )
    code, whole = run_json("pipeline.yaml", cwd=project)
    assert code == 0
    for task in ("a", "b"):  # two repairs, each starting the run again
        nbsched("retry", whole["run_id"], "--task", task, "--run", cwd=project, check=True)
    nbsched("run", "pipeline.yaml", "--only", "report", cwd=project, check=True)

    partial, repaired = json.loads(nbsched("runs", "--json", cwd=project, check=True).stdout)
    spans = repaired["spans"]
    assert len(spans) == 3 and repaired["first_started_at"] == whole["started_at"] == spans[0]["started_at"]
    assert repaired["started_at"] == spans[2]["started_at"] > whole["ended_at"]
    total = sum(
        (datetime.fromisoformat(s["ended_at"]) - datetime.fromisoformat(s["started_at"])).total_seconds() for s in spans
    )
    assert repaired["duration"] == pytest.approx(total) and total > 3 * 0.5
    assert partial["selection"]["only"] == ["report"]

    rows = {line.split()[0]: line for line in nbsched("runs", cwd=project, check=True).stdout.splitlines()}
    assert "manual --only report" in rows[partial["run_id"]] and "1/1 (2 not selected)" in rows[partial["run_id"]]
    line = rows[repaired["run_id"]]
    assert "manual, repaired ×2" in line and "3/3" in line  # noqa: RUF001 - a multiplication sign
    assert local_time(datetime.fromisoformat(whole["started_at"])) in line  # its first start
    assert f"  {elapsed(total)}  " in line  # its three runs' time, not the last repair's
    shown = nbsched("show", repaired["run_id"], cwd=project, check=True).stdout.splitlines()
    assert shown[0].split()[6] == elapsed(total)
    assert shown[1].startswith("trigger: manual, repaired ×2  started: ") and "ran 3 times: " in shown[1]  # noqa: RUF001 - a multiplication sign
    assert json.loads(nbsched("show", repaired["run_id"], "--json", cwd=project, check=True).stdout) == repaired


def test_runs_that_match_nothing_say_so_and_name_the_filter(project):
    write_notebook(project / "ok.ipynb", "x = 1")
    write_yaml(project / "pipeline.yaml", "name: listed\ntasks:\n  one: ok.ipynb\n")
    assert nbsched("runs", cwd=project, check=True).stdout.startswith("no runs yet")
    nbsched("register", "pipeline.yaml", cwd=project, check=True)
    cases = {
        (
            "--pipeline",
            "listd",
        ): "no runs match --pipeline listd: no pipeline 'listd' is registered (did you mean 'listed'?)",
        ("--pipeline", "listed"): "no runs match --pipeline listed",
        ("--pipeline", "listed", "--state", "failed"): "no runs match --pipeline listed --state failed",
        ("--state", "running"): "no runs match --state running",
    }
    for args, said in cases.items():
        assert nbsched("runs", *args, cwd=project, check=True).stdout.strip() == said


def test_show_of_a_cancelled_run_says_why(project):
    write_notebook(project / "ok.ipynb", "x = 1")
    write_yaml(
        project / "pipeline.yaml",
        "name: stopped\ntasks:\n  one: ok.ipynb\n  two: {notebook: ok.ipynb, upstream: one}\n",
    )
    nbsched("register", "pipeline.yaml", cwd=project, check=True)
    run_id = nbsched("trigger", "stopped", cwd=project, check=True).stdout.strip()
    nbsched("cancel", run_id, cwd=project, check=True)
    lines = nbsched("show", run_id, cwd=project, check=True).stdout.splitlines()
    assert "  cancelled  " in lines[0] and lines[1] == "trigger: manual" and lines[2] == "cancelled: cancelled by user"
    assert json.loads(nbsched("show", run_id, "--json", cwd=project, check=True).stdout)["error"] == "cancelled by user"
