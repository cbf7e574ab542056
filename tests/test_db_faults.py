"""Real database faults: a PostgreSQL of the test's own stopped and started under running daemons
and a foreground run, a SQLite file contended by a hundred commands and three daemons, a database
file that is corrupted, read-only or on a full disk."""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from conftest import NBSCHED, nbsched, serve, stop, wait_for, write_notebook, write_yaml

UNREACHABLE = "unreachable"
BACK = "reachable again"
NEVER = "never reached from this account: is the URL right?"
CLOSED = "postgresql+psycopg://postgres@127.0.0.1:1/nbsched"  # nothing listens on port 1


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("NBSCHED_")}


def _runs(project: Path, db: str) -> list[dict]:
    return json.loads(nbsched("--db", db, "runs", "--json", "-n", "1000", cwd=project, check=True).stdout)


def _ticker(project: Path, every: str, max_active_runs: int) -> None:
    # every execution of the notebook that gets past its sleep leaves one line: run, try
    write_notebook(
        project / "tick.ipynb",
        "import time\ntime.sleep(1)",
        "with open('executions.txt', 'a') as f:\n    f.write(f'{nbsched_run_id} {nbsched_try}\\n')",
        params="nbsched_run_id = ''\nnbsched_try = 0\nupstream = {}",
    )
    write_yaml(
        project / "pipeline.yaml",
        f"""
name: ticker
defaults: {{retries: 2, retry_delay: 0s}}
tasks:
  tick: {{notebook: tick.ipynb}}
schedules:
  - {{every: {every}, catchup: true, max_active_runs: {max_active_runs}}}
""",
    )


@pytest.mark.kernel
@pytest.mark.slow
def test_two_daemons_ride_out_a_30s_postgresql_outage(project, private_postgres):
    db = private_postgres.url
    _ticker(project, "2s", 2)
    nbsched("--db", db, "register", "pipeline.yaml", cwd=project, check=True)
    # a lease of 20 s, shorter than the outage (which must reap nobody), but longer than the
    # stalls a loaded machine gives a database that is up (both daemons were seen silent for 13 s
    # before the outage began, and a lease of 10 s then reaped a live runner's try)
    daemons = [
        serve(project, f"serve{i}", "--workers", "1", "--lease", "20s", "--grace", "10s", db=db) for i in range(2)
    ]
    try:
        # the outage starts while a notebook sleeps (its kernel goes on) and runs are queued
        wait_for(
            lambda: (project / "executions.txt").exists() and _sleeping_tasks(db),
            60,
            "a notebook to sleep after the first run",
            every=0.05,
        )
        private_postgres.stop()
        time.sleep(30)
        assert [d.poll() for d in daemons] == [None, None], "a daemon exited during the outage"
        private_postgres.start()
        # back: the fires missed meanwhile are made (catchup) and every run ends
        wait_for(lambda: len(_runs(project, db)) >= 20, 120, "the missed fires to be made", every=0.5)
        nbsched("--db", db, "schedule", "pause", "1", cwd=project, check=True)
        wait_for(
            lambda: all(r["state"] in ("success", "failed", "cancelled") for r in _runs(project, db)),
            180,
            "every run to finish",
            every=0.5,
        )
        assert [d.poll() for d in daemons] == [None, None]
    finally:
        codes = [stop(d) for d in daemons]
    logs = [(project / f"serve{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], (codes, logs)
    for log in logs:  # one line each way, no traceback
        assert "Traceback" not in log, log
        assert sum(UNREACHABLE in line for line in log.splitlines()) == 1, log
        assert sum(BACK in line for line in log.splitlines()) == 1, log

    runs = _runs(project, db)
    assert all(r["state"] == "success" for r in runs), [(r["run_id"], r["state"], r["error"]) for r in runs]
    dates = sorted(datetime.fromisoformat(r["logical_date"]) for r in runs)
    assert len(set(dates)) == len(dates)  # each logical date once ...
    assert all(b - a == timedelta(seconds=2) for a, b in itertools.pairwise(dates))  # ... and none missed
    executions = (project / "executions.txt").read_text().split("\n")[:-1]
    assert len(executions) == len(set(executions)) == len(runs)  # every run's notebook ran once
    assert all(r["tasks"]["tick"]["try_number"] == 1 for r in runs)  # no try was presumed dead


def _sleeping_tasks(url: str) -> int:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.connect() as conn:
        n = conn.execute(
            text("SELECT count(*) FROM task_runs WHERE state = 'running' AND CAST(cell AS TEXT) LIKE '%time.sleep%'")
        ).scalar()
    engine.dispose()
    return n


@pytest.mark.kernel
@pytest.mark.slow
def test_a_foreground_run_rides_out_a_postgresql_restart(project, private_postgres):
    write_notebook(project / "slow.ipynb", "import pathlib, time\npathlib.Path('started').touch()\ntime.sleep(8)")
    write_notebook(project / "after.ipynb", "x = 1")
    write_yaml(
        project / "pipeline.yaml",
        """
name: patient
tasks:
  slow: {notebook: slow.ipynb}
  after: {notebook: after.ipynb, upstream: [slow]}
""",
    )
    proc = subprocess.Popen(
        [*NBSCHED, "--db", private_postgres.url, "run", "pipeline.yaml", "--json"],
        cwd=project,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: (project / "started").exists() or proc.poll() is not None, 60, "the first notebook")
        private_postgres.stop()
        time.sleep(4)
        private_postgres.start()
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    run = json.loads(out)
    assert run["state"] == "success" and all(t["try_number"] == 1 for t in run["tasks"].values())
    assert "Traceback" not in err
    assert sum(UNREACHABLE in line for line in err.splitlines()) == 1, err
    assert sum(BACK in line for line in err.splitlines()) == 1, err


@pytest.mark.slow
@pytest.mark.serial  # a hundred processes starting at once starve whatever runs beside them
def test_a_hundred_triggers_at_once_on_sqlite_beside_three_daemons(project):
    write_notebook(project / "ok.ipynb", "x = 1")
    write_yaml(project / "pipeline.yaml", "name: busy\ntasks:\n  ok: {notebook: ok.ipynb}\n")
    db_file = project / ".nbsched" / "nbsched.db"
    db = f"sqlite:///{db_file}"
    nbsched("register", "pipeline.yaml", cwd=project, check=True)
    daemons = [serve(project, f"serve{i}", "--workers", "1", "--no-scheduler", db=db) for i in range(3)]
    # a writer that holds the file's lock for 40 s (as one SIGSTOPped mid-transaction would), from
    # before the triggers start: they wait for it, and for each other, and the daemons do too
    holder = sqlite3.connect(db_file, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    release = threading.Timer(40, holder.commit)
    release.start()
    try:

        def trigger(_: int) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*NBSCHED, "trigger", "busy"], cwd=project, env=_env(), capture_output=True, text=True, timeout=300
            )

        with ThreadPoolExecutor(100) as pool:
            results = list(pool.map(trigger, range(100)))
    finally:
        release.join()
        holder.close()
        codes = [stop(d) for d in daemons]
    for r in results:  # queued, or one line and exit 2; never a traceback
        assert r.returncode in (0, 2) and "Traceback" not in r.stderr, r.stderr
        if r.returncode == 2:
            assert len(r.stderr.strip().splitlines()) == 1 and "busy" in r.stderr, r.stderr
    queued = {r.stdout.strip() for r in results if r.returncode == 0}
    assert queued == {r["run_id"] for r in _runs(project, db)}
    assert len(queued) == 100, [r.stderr for r in results if r.returncode]  # a busy file waits, it does not fail
    assert codes == [0, 0, 0] or all(c in (0, 3) for c in codes)


def test_a_corrupted_database_file_is_one_line(project):
    (project / ".nbsched").mkdir()
    (project / ".nbsched" / "nbsched.db").write_bytes(b"this is not a database" * 100)
    for args in (["runs"], ["trigger", "x"], ["schedule", "list"]):
        proc = nbsched(*args, cwd=project)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip().splitlines() == [
            f"Error: database sqlite:///{project / '.nbsched' / 'nbsched.db'}: file is not a database"
        ], proc.stderr


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of its own: filled, or remounted read-only, as a real disk would be."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.slow
def test_a_database_on_a_read_only_disk_is_one_line(project, small_disk):
    write_notebook(project / "ok.ipynb", "x = 1")
    write_yaml(project / "pipeline.yaml", "name: frozen\ntasks:\n  ok: {notebook: ok.ipynb}\n")
    home = ("--home", str(small_disk))
    nbsched(*home, "register", "pipeline.yaml", cwd=project, check=True)
    run_id = nbsched(*home, "trigger", "frozen", cwd=project, check=True).stdout.strip()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)

    for args in (["runs"], ["trigger", "frozen"], ["cancel", run_id], ["register", "pipeline.yaml"]):
        proc = nbsched(*home, *args, cwd=project)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        (line,) = proc.stderr.strip().splitlines()
        assert line.startswith(f"Error: database sqlite:///{small_disk}/nbsched.db: ") and "read-only" in line, line


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_loses_nothing(project, small_disk):
    write_notebook(project / "ok.ipynb", "x = 1")
    write_yaml(project / "pipeline.yaml", "name: full\ntasks:\n  ok: {notebook: ok.ipynb}\n")
    home = ("--home", str(small_disk))
    nbsched(*home, "register", "pipeline.yaml", cwd=project, check=True)
    first = nbsched(*home, "trigger", "full", cwd=project, check=True).stdout.strip()
    filler = small_disk / "filler"
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True)  # until the disk is full
    proc = nbsched(*home, "trigger", "full", cwd=project, timeout=120)
    filler.unlink()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "full" in proc.stderr, proc.stderr
    runs = json.loads(nbsched(*home, "runs", "--json", cwd=project, check=True).stdout)
    assert [r["run_id"] for r in runs] == [first]  # what was queued before is there, nothing half-written


@pytest.mark.slow
def test_a_command_waits_for_a_busy_file_only_as_long_as_its_patience(tmp_path):
    from nbsched.errors import DatabaseUnavailable
    from nbsched.store import SqlStore

    url = f"sqlite:///{tmp_path / 'nbsched.db'}"
    SqlStore(url).close()
    holder = sqlite3.connect(tmp_path / "nbsched.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process's write lock, never released in time
    store = SqlStore(url, patience=1)
    try:
        assert store.list_runs() == []  # readers are not held up by a writer (WAL)
        with pytest.raises(
            DatabaseUnavailable,
            match=r"^database sqlite:///.*: busy for 1s \(database is locked\); "
            r"other processes hold its write lock$",
        ):
            store.register_runner("r", "run", 1)
        holder.commit()
        store.register_runner("r", "run", 1)  # free again: it goes through
        assert store.heartbeat("r")
    finally:
        holder.close()
        store.close()


def test_a_database_that_refuses_us_is_one_line_at_once(project):
    started = time.monotonic()
    proc = nbsched("--db", "postgresql+psycopg://postgres@127.0.0.1:5432/nbsched_no_such_db", "runs", cwd=project)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert 'database "nbsched_no_such_db" does not exist' in line, line
    assert time.monotonic() - started < 30  # waiting cannot mend it, so nothing waits


def _cli(project: Path, cache: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The CLI with a cache of its own: the database servers it reached are remembered there."""
    env = {**_env(), "XDG_CACHE_HOME": str(cache)}
    return subprocess.run([*NBSCHED, *args], cwd=project, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_a_wrong_database_url_is_one_line_within_seconds(project, tmp_path):
    # a server never reached is a wrong URL, not an outage to ride out: `runs` waited 60 s for it
    for args in (["runs"], ["trigger", "sales"], ["pool", "list"]):
        started = time.monotonic()
        proc = _cli(project, tmp_path / "cache", "--db", CLOSED, *args)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        (line,) = proc.stderr.strip().splitlines()
        assert line.startswith(f"Error: database {CLOSED}: unreachable for 3s") and NEVER in line, line
        assert "Connection refused" in line
        assert time.monotonic() - started < 30, args  # generous: the patience of a known one is 60 s


@pytest.mark.slow
def test_a_database_server_that_never_answers_is_one_line_within_seconds(project, tmp_path):
    # a port that takes connections and never speaks (a URL naming some other service): each
    # connection waited its 10 s timeout, again and again for 60 s
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        url = f"postgresql+psycopg://postgres@127.0.0.1:{silent.getsockname()[1]}/nbsched"
        started = time.monotonic()
        proc = _cli(project, tmp_path / "cache", "--db", url, "runs")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert NEVER in line and "timeout" in line, line
    assert time.monotonic() - started < 30


@pytest.mark.slow
def test_a_command_waits_out_an_outage_of_a_database_it_reached_before(project, private_postgres, tmp_path):
    db, cache = private_postgres.url, tmp_path / "cache"
    assert _cli(project, cache, "--db", db, "runs").returncode == 0  # reached: remembered in the cache
    private_postgres.stop()
    # from an account that never reached it, the stopped server is a wrong URL
    never = _cli(project, tmp_path / "other-cache", "--db", db, "runs")
    assert never.returncode == 2 and NEVER in never.stderr, never.stderr
    # from this one, it is an outage: the command waits its patience (60 s), and goes on when it is back
    waiting = subprocess.Popen(
        [*NBSCHED, "--db", db, "runs", "--json"],
        cwd=project,
        env={**_env(), "XDG_CACHE_HOME": str(cache)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(6)  # twice what a database never reached gets
        assert waiting.poll() is None, waiting.communicate()
        private_postgres.start()
        out, err = waiting.communicate(timeout=120)
    finally:
        waiting.kill()
    assert waiting.returncode == 0 and json.loads(out) == [], err


@pytest.mark.kernel
@pytest.mark.slow
def test_a_task_times_out_on_time_while_the_database_is_away(project, private_postgres):
    write_notebook(
        project / "stuck.ipynb",
        "import os, pathlib, time\npathlib.Path('kernel.pid').write_text(str(os.getpid()))",
        "time.sleep(120)",
    )
    write_yaml(project / "pipeline.yaml", "name: stuck\ntasks:\n  stuck: {notebook: stuck.ipynb, timeout: 3s}\n")
    proc = subprocess.Popen(
        [*NBSCHED, "--db", private_postgres.url, "run", "pipeline.yaml", "--json"],
        cwd=project,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        pid = int(
            wait_for(
                lambda: (project / "kernel.pid").exists() and (project / "kernel.pid").read_text(), 60, "the kernel"
            )
        )
        private_postgres.stop()
        # the kernel is stopped at its timeout although the runner cannot record it yet
        wait_for(
            lambda: not Path(f"/proc/{pid}").exists() or "zombie" in _status(pid),
            30,
            "the kernel to be stopped at its timeout",
        )
        private_postgres.start()
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    run = json.loads(out)
    assert proc.returncode == 1 and run["state"] == "failed", err
    assert run["tasks"]["stuck"]["error"].startswith("timed out after 3s"), run["tasks"]["stuck"]


def _status(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return "zombie"


class _NoExecutor:
    """An executor that must not be used: the runner below only does its housekeeping."""

    workers = 1

    def submit(self, *args: object) -> None:
        raise AssertionError("nothing should be executed")

    def prepare(self, kernel_names: object) -> None:
        pass


def test_a_claim_whose_commit_was_lost_with_the_connection_is_put_back(tmp_path):
    from nbsched.clock import utcnow
    from nbsched.runner import Runner
    from nbsched.states import RunTrigger, TaskState
    from nbsched.store import SqlStore

    store = SqlStore(f"sqlite:///{tmp_path / 'nbsched.db'}")
    runner = Runner(store, _NoExecutor(), tmp_path, spec_loader=lambda run: None, poll=0)  # type: ignore[arg-type]
    runner.claiming = False
    try:
        run_id = store.create_run(
            pipeline="p", version=1, params={}, logical_date=utcnow(), trigger=RunTrigger.MANUAL, tasks={"t": 1}
        )
        store.start_run(run_id)
        store.set_task_state(run_id, "t", TaskState.QUEUED, try_number=1)
        with runner:
            store.claim_tasks(runner.id, 1)  # committed, but the answer never reached the runner
            runner.step([])
            assert store.get_run(run_id).tasks["t"].state is TaskState.RUNNING  # no outage: nothing to mend
            store.patience.back_at = time.monotonic()  # the database came back after an outage
            runner.step([])
        task = store.get_run(run_id, with_tries=True).tasks["t"]
        assert task.state is TaskState.QUEUED and task.owner is None and task.try_number == 1
        assert task.tries == ()  # the try never started
        assert [c.try_number for c in store.claim_tasks("another", 1)] == [1]
    finally:
        store.close()


@pytest.mark.kernel
@pytest.mark.slow
def test_a_daemon_stopped_while_the_database_is_away_exits_and_its_task_is_retried(project, private_postgres):
    db = private_postgres.url
    write_notebook(project / "nap.ipynb", "import pathlib, time\npathlib.Path('napping').touch()\ntime.sleep(30)")
    write_yaml(project / "pipeline.yaml", "name: nap\ntasks:\n  nap: {notebook: nap.ipynb, retries: 1}\n")
    nbsched("--db", db, "register", "pipeline.yaml", cwd=project, check=True)
    run_id = nbsched("--db", db, "trigger", "nap", cwd=project, check=True).stdout.strip()
    first = serve(project, "first", "--lease", "3s", "--grace", "2s", "--no-scheduler", db=db)
    try:
        wait_for(lambda: (project / "napping").exists(), 60, "the notebook to start")
        private_postgres.stop()
        time.sleep(2)
        first.send_signal(signal.SIGTERM)  # it waits the grace for the database, then stops without it
        code = first.wait(timeout=60)
    finally:
        first.kill()
    log = (project / "first.log").read_text()
    assert code == 3, log
    assert "Traceback" not in log and "unreachable while stopping; 1 running task(s) stopped" in log, log
    private_postgres.start()
    second = serve(project, "second", "--lease", "3s", "--grace", "0s", "--no-scheduler", db=db)
    try:
        wait_for(
            lambda: (
                json.loads(nbsched("--db", db, "show", run_id, "--json", cwd=project, check=True).stdout)["tasks"][
                    "nap"
                ]["try_number"]
                == 2
            ),
            60,
            "the task to be retried",
        )
    finally:
        stop(second)
    run = json.loads(nbsched("--db", db, "show", run_id, "--json", cwd=project, check=True).stdout)
    assert "stopped heartbeating" in run["tasks"]["nap"]["tries"][0]["error"]


@pytest.mark.kernel
@pytest.mark.slow
def test_ctrl_c_of_a_foreground_run_while_the_database_is_away_stops_it(project, private_postgres):
    write_notebook(
        project / "nap.ipynb",
        "import os, pathlib, time\npathlib.Path('kernel.pid').write_text(str(os.getpid()))\ntime.sleep(60)",
    )
    write_yaml(project / "pipeline.yaml", "name: nap\ntasks:\n  nap: {notebook: nap.ipynb}\n")
    proc = subprocess.Popen(
        [*NBSCHED, "--db", private_postgres.url, "run", "pipeline.yaml"],
        cwd=project,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        pid = int(
            wait_for(
                lambda: (project / "kernel.pid").exists() and (project / "kernel.pid").read_text(), 60, "the kernel"
            )
        )
        private_postgres.stop()
        time.sleep(2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 2 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("Error: database ") and "unreachable while stopping" in err
    assert not Path(f"/proc/{pid}").exists() or "zombie" in _status(pid)  # its kernel was stopped


def test_the_servers_reached_are_remembered_without_credentials(tmp_path):
    from sqlalchemy.engine import make_url

    from nbsched.store.reached import KEEP, ReachedServers, server_of

    assert server_of(make_url("postgresql+psycopg://ana:secret@db.example:5433/sales")) == "postgresql db.example:5433"
    assert server_of(make_url(f"sqlite:///{tmp_path}/x.db")) is None  # a file is never away
    reached = ReachedServers(tmp_path / "cache" / "reached-databases")
    assert "postgresql db.example:5433" not in reached
    for i in range(KEEP + 5):
        reached.add(f"postgresql host{i}:5432")
        reached.add(f"postgresql host{i}:5432")  # once each
    lines = (tmp_path / "cache" / "reached-databases").read_text().splitlines()
    assert len(lines) <= KEEP and len(set(lines)) == len(lines)
    assert f"postgresql host{KEEP + 4}:5432" in reached and "postgresql host0:5432" not in reached
    ReachedServers(tmp_path / "cache" / "reached-databases" / "not-a-folder").add("x")  # unwritable: no error
