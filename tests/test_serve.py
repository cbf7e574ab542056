"""`nbsched serve` as real processes on one database (SQLite, and the real PostgreSQL): no fire
twice, no try executed twice, no run lost."""

from __future__ import annotations

import itertools
import json
import signal
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from conftest import nbsched, serve, stop, wait_for, write_notebook, write_yaml

pytestmark = [pytest.mark.slow, pytest.mark.kernel]


def _runs(project: Path, *db: str) -> list[dict]:
    return json.loads(nbsched(*db, "runs", "--json", "-n", "1000", cwd=project, check=True).stdout)


def test_two_daemons_create_each_logical_date_once(project):
    write_notebook(project / "tick.ipynb", "x = 1")
    write_yaml(
        project / "pipeline.yaml",
        """
name: ticker
tasks:
  tick: {notebook: tick.ipynb}
schedules:
  - {every: 1s, catchup: true, max_active_runs: 1}
""",
    )
    nbsched("register", "pipeline.yaml", cwd=project, check=True)
    daemons = [serve(project, f"serve{i}", "--workers", "1", "--grace", "0s") for i in range(2)]
    try:
        wait_for(lambda: len(_runs(project)) >= 15, 120, "15 runs, made by two daemons at once", every=1)
    finally:
        codes = [stop(d) for d in daemons]
    logs = [(project / f"serve{i}.log").read_text() for i in range(2)]
    assert all(c in (0, 3) for c in codes), (codes, logs)
    assert all("Traceback" not in log for log in logs), logs

    dates = sorted(datetime.fromisoformat(r["logical_date"]) for r in _runs(project))
    assert len(dates) >= 15, logs
    assert len(set(dates)) == len(dates)  # none twice
    assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(dates))  # none missed
    fired_by = [sum("fired: pipeline ticker" in line for line in log.splitlines()) for log in logs]
    assert sum(fired_by) == len(dates)


def test_a_killed_daemons_task_is_retried_by_the_next_one(project):
    write_notebook(project / "slow.ipynb", "import time\ntime.sleep(4)")
    write_notebook(project / "after.ipynb", "x = 1")
    write_yaml(
        project / "pipeline.yaml",
        """
name: survivor
tasks:
  slow: {notebook: slow.ipynb, retries: 1}
  after: {notebook: after.ipynb, upstream: [slow]}
""",
    )
    nbsched("register", "pipeline.yaml", cwd=project, check=True)
    run_id = nbsched("trigger", "survivor", cwd=project, check=True).stdout.strip()
    first = serve(project, "first", "--lease", "2s", "--no-scheduler")
    try:
        wait_for(
            lambda: _show(project, run_id)["tasks"]["slow"]["state"] == "running", 60, "the task to run", every=0.3
        )
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        second = serve(project, "second", "--lease", "2s", "--no-scheduler")
        try:
            run = wait_for(
                lambda: (r := _show(project, run_id))["state"] in ("success", "failed") and r,
                90,
                "the run to finish",
                every=0.3,
            )
        finally:
            stop(second)
    finally:
        first.kill()
    log = (project / "second.log").read_text()
    assert run["state"] == "success", (run, log)
    assert run["tasks"]["slow"]["try_number"] == 2
    assert run["tasks"]["after"]["state"] == "success"
    assert "stopped heartbeating" in log
    assert len(_runs(project)) == 1
    # the first try, whose runner died with it, is kept with who ran it and why it ended
    first_try, second_try = run["tasks"]["slow"]["tries"]
    assert first_try["runner"].split(":")[1] == str(first.pid) and "stopped heartbeating" in first_try["error"]
    assert first_try["state"] == "up_for_retry" and second_try["state"] == "success"


def test_sigterm_lets_a_running_task_finish_within_the_grace(project):
    write_notebook(project / "short.ipynb", "import time\ntime.sleep(2)")
    write_yaml(project / "pipeline.yaml", "name: graceful\ntasks:\n  short: {notebook: short.ipynb}\n")
    nbsched("register", "pipeline.yaml", cwd=project, check=True)
    run_id = nbsched("trigger", "graceful", cwd=project, check=True).stdout.strip()
    daemon = serve(project, "serve", "--grace", "60s", "--no-scheduler")
    try:
        wait_for(
            lambda: _show(project, run_id)["tasks"]["short"]["state"] == "running", 60, "the task to run", every=0.3
        )
    finally:
        code = stop(daemon)
    assert code == 0, (project / "serve.log").read_text()
    assert _show(project, run_id)["state"] == "success"


def _catches(pid: int, signum: int) -> bool:
    """The process has a handler of its own for ``signum`` (its SigCgt mask, /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return False


def test_sigterm_while_the_daemon_starts_stops_it_cleanly(project):
    """A service manager's SIGTERM just after the start, while the daemon is still being built
    (seconds on a loaded machine: a two-daemon test saw a restarted daemon killed, exit -15):
    kept, and honoured once it can stop (exit 0), before it serves anything."""
    nbsched("pool", "list", cwd=project, check=True)  # the database exists
    daemon = serve(project, "serve")
    try:
        wait_for(lambda: _catches(daemon.pid, signal.SIGTERM), 60, "a SIGTERM handler", every=0.001)
        daemon.send_signal(signal.SIGSTOP)  # held where it was when it first caught SIGTERM
        maps = Path(f"/proc/{daemon.pid}/maps").read_text()
        assert "zmq" not in maps, "SIGTERM is caught only once the daemon's kernel machinery is loaded"
        daemon.send_signal(signal.SIGTERM)
        daemon.send_signal(signal.SIGCONT)
        code = daemon.wait(60)
    finally:
        if daemon.poll() is None:
            daemon.kill()
    log = (project / "serve.log").read_text()
    assert code == 0, log
    assert "received SIGTERM: stopping" in log


def test_sigterm_cancels_what_outlives_the_grace(project):
    write_notebook(project / "long.ipynb", "import time\ntime.sleep(120)")
    write_yaml(project / "pipeline.yaml", "name: impatient\ntasks:\n  long: {notebook: long.ipynb}\n")
    nbsched("register", "pipeline.yaml", cwd=project, check=True)
    run_id = nbsched("trigger", "impatient", cwd=project, check=True).stdout.strip()
    daemon = serve(project, "serve", "--grace", "1s", "--no-scheduler")
    try:
        wait_for(
            lambda: _show(project, run_id)["tasks"]["long"]["state"] == "running", 60, "the task to run", every=0.3
        )
    finally:
        code = stop(daemon)
    assert code == 3
    run = _show(project, run_id)
    assert run["state"] == "cancelled" and run["tasks"]["long"]["state"] == "cancelled"


def _show(project: Path, run_id: str) -> dict:
    return json.loads(nbsched("show", run_id, "--json", cwd=project, check=True).stdout)


def test_three_daemons_on_postgresql_share_the_work_and_a_killed_one_loses_nothing(project, pg_url):
    # every execution of the notebook that gets past its second leaves one line: run, try
    write_notebook(
        project / "tick.ipynb",
        "import time\ntime.sleep(1)",
        "with open('executions.txt', 'a') as f:\n    f.write(f'{nbsched_run_id} {nbsched_try}\\n')",
        params="nbsched_run_id = ''\nnbsched_try = 0\nupstream = {}",
    )
    write_yaml(
        project / "pipeline.yaml",
        """
name: ticker
defaults: {retries: 2, retry_delay: 0s}
tasks:
  tick: {notebook: tick.ipynb}
schedules:
  - {every: 1s, catchup: true, max_active_runs: 3}
""",
    )
    db = ("--db", pg_url)
    nbsched(*db, "register", "pipeline.yaml", cwd=project, check=True)
    daemons = [
        serve(project, f"serve{i}", "--workers", "1", "--lease", "3s", "--grace", "10s", db=pg_url) for i in range(3)
    ]
    try:
        wait_for(lambda: len(_runs(project, *db)) >= 10, 120, "10 runs, made by three daemons", every=1)
        # kill -9 one daemon while one of its notebooks sleeps (the runner notes the cell): the
        # try cannot end between the look and the kill
        wait_for(lambda: _running_tasks_of(pg_url, daemons[0].pid), 30, "the first daemon to run a task", every=0.05)
        daemons[0].send_signal(signal.SIGKILL)
        daemons[0].wait(10)
        # the survivors go on making runs, and retry the try the dead one held once its lease is over
        wait_for(
            lambda: len(runs := _runs(project, *db)) >= 25 and any(r["tasks"]["tick"]["try_number"] >= 2 for r in runs),
            120,
            "25 runs, and the dead daemon's try retried",
            every=1,
        )
        nbsched(*db, "schedule", "pause", "1", cwd=project, check=True)
        # the survivors take over what the dead one held (after its lease) and finish every run
        wait_for(
            lambda: all(r["state"] in ("success", "failed", "cancelled") for r in _runs(project, *db)),
            120,
            "every run to finish",
            every=0.3,
        )
    finally:
        codes = [stop(d) for d in daemons[1:]]
        daemons[0].kill()
    logs = [(project / f"serve{i}.log").read_text() for i in range(3)]
    assert all(c == 0 for c in codes), (codes, logs[1:])
    assert all("Traceback" not in log for log in logs), logs

    runs = _runs(project, *db)
    dates = sorted(datetime.fromisoformat(r["logical_date"]) for r in runs)
    assert len(dates) >= 25, logs
    assert len(set(dates)) == len(dates)  # each logical date once ...
    assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(dates))  # ... and none missed
    assert all(r["state"] == "success" for r in runs), [(r["run_id"], r["state"], r["error"]) for r in runs]
    executions = (project / "executions.txt").read_text().split("\n")[:-1]
    assert len(executions) == len(set(executions))  # no try executed twice
    final_tries = {f"{r['run_id']} {r['tasks']['tick']['try_number']}" for r in runs}
    assert final_tries <= set(executions)  # every run's last try ran
    fired_by = [sum("fired: pipeline ticker" in line for line in log.splitlines()) for log in logs]
    assert sum(fired_by) == len(dates) and sum(n > 0 for n in fired_by) >= 2, fired_by
    # the task the dead daemon held was retried by a survivor
    assert any(r["tasks"]["tick"]["try_number"] >= 2 for r in runs)
    assert any("stopped heartbeating" in log for log in logs[1:])


def _running_tasks_of(url: str, pid: int) -> int:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.connect() as conn:  # runner ids are host:pid:token
        n = conn.execute(
            text(
                "SELECT count(*) FROM task_runs WHERE state = 'running' AND owner LIKE :o "
                "AND CAST(cell AS TEXT) LIKE '%time.sleep%'"
            ),
            {"o": f"%:{pid}:%"},
        ).scalar()
    engine.dispose()
    return n
