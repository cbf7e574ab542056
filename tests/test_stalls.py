"""Runners that stall and come back, as real ``nbsched serve`` processes on one database (SQLite,
and the real PostgreSQL): a process paused past its lease (SIGSTOP, as a suspended VM or laptop
is), and a loop that stops turning while its process lives (a log pipe nobody reads). What the
try that took over wrote is never overwritten by the late one, and a live runner's tries are not
taken from it for its loop's stall."""

from __future__ import annotations

import fcntl
import json
import os
import select
import signal
import sqlite3
import subprocess
import threading
import time
from datetime import datetime
from pathlib import Path

import nbformat
import pytest
from conftest import NBSCHED, nbsched, serve, stop, wait_for, write_notebook, write_yaml

pytestmark = [pytest.mark.slow, pytest.mark.kernel]


def _show(project: Path, db: str, run_id: str) -> dict:
    return json.loads(nbsched("--db", db, "show", run_id, "--json", cwd=project, check=True).stdout)


def _task_owned_by(project: Path, db: str, run_id: str, task: str, proc: subprocess.Popen[bytes]) -> bool:
    t = _show(project, db, run_id)["tasks"][task]
    return t["state"] == "running" and f":{proc.pid}:" in (t["tries"][-1]["runner"] if t["tries"] else "")


def _database_free(db: str) -> bool:
    """No transaction left open (by a paused process): another writer gets in at once."""
    if db.startswith("sqlite"):
        conn = sqlite3.connect(db.split("///", 1)[1], timeout=0.5, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
            return True
        except sqlite3.OperationalError:
            return False
        finally:
            conn.close()
    from sqlalchemy import create_engine, text

    engine = create_engine(db)
    try:
        with engine.connect() as conn:
            # a writer's locks on this test's tables (its schema: other tests share the database)
            held = conn.execute(
                text(
                    "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema() "
                    "AND l.mode IN ('RowShareLock', 'RowExclusiveLock') AND l.pid <> pg_backend_pid()"
                )
            ).scalar()
            return held == 0
    finally:
        engine.dispose()


def pause(proc: subprocess.Popen[bytes], db: str) -> None:
    """SIGSTOP ``proc`` between two of its transactions: stopped inside one, it would hold the
    database (SQLite's write lock, PostgreSQL's row locks) and stop every other runner with it."""
    for _ in range(50):
        proc.send_signal(signal.SIGSTOP)
        time.sleep(0.3)
        if _database_free(db):
            return
        proc.send_signal(signal.SIGCONT)
        time.sleep(0.05)
    raise AssertionError("could not pause the daemon outside a transaction")


def _recorded_try(notebook: Path) -> tuple[int | None, list[str]]:
    """The try a notebook was executed as (its injected ``nbsched_try``) and its error outputs."""
    nb = nbformat.read(str(notebook), as_version=4)
    errors = [
        o.ename for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"
    ]
    return nb.metadata.get("papermill", {}).get("parameters", {}).get("nbsched_try"), errors


def test_a_paused_daemons_late_try_never_overwrites_the_winning_notebook(project, db_url):
    """The fault suite's defect: try 1's daemon is SIGSTOPped past its lease, try 2 succeeds on
    the other daemon, then the resumed try 1 ends too. Before the fix it rewrote the one output
    notebook, so the report said "TaskStopped: runner lost" while the database said success."""
    write_notebook(
        project / "nap.ipynb",
        "import time\ntime.sleep(5)",
        "import nbsched\nnbsched.record('try', nbsched_try)",
        params="nbsched_try = 0\nupstream = {}",
    )
    write_yaml(
        project / "pipeline.yaml", "name: nap\ntasks:\n  nap: {notebook: nap.ipynb, retries: 1, retry_delay: 0s}\n"
    )
    nbsched("--db", db_url, "register", "pipeline.yaml", cwd=project, check=True)
    run_id = nbsched("--db", db_url, "trigger", "nap", cwd=project, check=True).stdout.strip()
    args = ("--workers", "1", "--lease", "3s", "--grace", "5s", "--no-scheduler")
    first = serve(project, "first", *args, db=db_url)
    second = None
    try:
        wait_for(lambda: _task_owned_by(project, db_url, run_id, "nap", first), 60, "try 1 to run on the first")
        second = serve(project, "second", *args, db=db_url)
        pause(first, db_url)
        run = wait_for(
            lambda: (r := _show(project, db_url, run_id))["state"] in ("success", "failed") and r,
            90,
            "try 2 to end on the second daemon",
            every=0.3,
        )
        first.send_signal(signal.SIGCONT)  # try 1's kernel ended meanwhile: its daemon now hears of it
        wait_for(
            lambda: "try 1 was taken from this runner" in (project / "first.log").read_text(),
            60,
            "the first daemon to drop its late try",
        )
    finally:
        first.send_signal(signal.SIGCONT)
        codes = [stop(first), *([stop(second)] if second else [])]
    logs = {name: (project / f"{name}.log").read_text() for name in ("first", "second")}
    assert run["state"] == "success", (run, logs)
    nap = _show(project, db_url, run_id)["tasks"]["nap"]
    assert nap["try_number"] == 2 and nap["outputs"] == {"try": 2}, (nap, logs)
    folder = project / "nbsched-runs" / "nap" / run_id
    assert nap["output_path"] == str(folder / "nap.ipynb")
    # the task's notebook is the winning try's, as the database says; the late one kept its own
    assert _recorded_try(folder / "nap.ipynb") == (2, []), logs
    assert _recorded_try(folder / "nap.try1.ipynb")[0] == 1
    assert all(c in (0, 3) for c in codes), (codes, logs)


class _LogPipe:
    """A daemon's log through a pipe the test reads, and can stop reading: a log reader that
    stops (``tee`` suspended, a terminal frozen by Ctrl-S, a stalled journal) blocks the daemon's
    next log line in ``write(2)`` once the pipe is full, with its process alive."""

    def __init__(self) -> None:
        self.read_end, self.write_end = os.pipe()
        fcntl.fcntl(self.write_end, fcntl.F_SETPIPE_SZ, 4096)  # the smallest: full after one page
        self.size = fcntl.fcntl(self.write_end, fcntl.F_GETPIPE_SZ)
        self.text = b""
        self.reading = threading.Event()
        self.reading.set()
        self._done = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._done:
            if not self.reading.wait(0.1):
                continue
            if select.select([self.read_end], [], [], 0.1)[0]:
                chunk = os.read(self.read_end, 65536)
                if not chunk:
                    return
                self.text += chunk

    def stall(self) -> None:
        """Stop reading, and fill the pipe: the daemon's next line blocks."""
        self.reading.clear()
        time.sleep(0.3)  # the reader is idle
        threading.Thread(target=os.write, args=(self.write_end, b"#" * self.size), daemon=True).start()

    def release(self) -> None:
        self.reading.set()

    def close(self) -> str:
        self._done = True
        self._reader.join(5)
        os.close(self.read_end)
        return self.text.decode(errors="replace").replace("#", "")


def _heartbeat_of(db: str, proc: subprocess.Popen[bytes]) -> datetime | None:
    from sqlalchemy import create_engine, text

    engine = create_engine(db)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT id, heartbeat_at FROM runners")).all()
    finally:
        engine.dispose()
    beats = [at for runner, at in rows if f":{proc.pid}:" in runner]
    return datetime.fromisoformat(str(beats[0])) if beats else None


def _runs_of(project: Path, db: str, pipeline: str) -> list[dict]:
    return json.loads(nbsched("--db", db, "runs", "--pipeline", pipeline, "--json", cwd=project, check=True).stdout)


def test_a_daemon_whose_loop_stalls_past_its_lease_keeps_its_tries(project, db_url):
    """The fault suite saw a daemon's loop stall 20 s at a load of 70; its heartbeat ran inside
    that loop, so its leases expired and every try of a task was taken from a live runner. A
    real stall of the loop alone (not of its process: SIGSTOP stops every thread, a heartbeat's
    too): the daemon's log goes to a pipe the test stops reading, so its scheduler's next line
    ("schedule fired") blocks the loop in ``write(2)``, for four leases, while the daemon's try
    runs on in its kernel. CPU starvation would stall it too, but not for a known time and
    not without loading the whole machine."""
    write_notebook(project / "nap.ipynb", "import time\ntime.sleep(8)")
    write_yaml(
        project / "pipeline.yaml", "name: nap\ntasks:\n  nap: {notebook: nap.ipynb, retries: 3, retry_delay: 0s}\n"
    )
    write_notebook(project / "tick.ipynb", "x = 1")
    write_yaml(project / "tick.yaml", "name: tick\ntasks:\n  tick: {notebook: tick.ipynb}\n")
    for spec in ("pipeline.yaml", "tick.yaml"):
        nbsched("--db", db_url, "register", spec, cwd=project, check=True)
    run_id = nbsched("--db", db_url, "trigger", "nap", cwd=project, check=True).stdout.strip()
    log = _LogPipe()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NBSCHED_")}
    first = subprocess.Popen(
        [*NBSCHED, "--db", db_url, "serve", "--poll", "0.2s", "--workers", "1", "--lease", "2s", "--grace", "5s"],
        cwd=project,
        env=env,
        stdout=log.write_end,
        stderr=log.write_end,
    )
    second = None
    try:
        wait_for(lambda: _task_owned_by(project, db_url, run_id, "nap", first), 60, "the try to run on the first")
        second = serve(project, "second", "--workers", "1", "--lease", "2s", "--no-scheduler", db=db_url)
        log.stall()
        nbsched("--db", db_url, "schedule", "add", "tick", "--every", "1s", cwd=project, check=True)
        # the scheduler made its run, then blocked on the line that says so
        wait_for(lambda: _runs_of(project, db_url, "tick"), 60, "the fire")
        stalled_at = _heartbeat_of(db_url, first)
        time.sleep(8)  # four leases of a loop that does not turn (the fault, not an assertion)
        beat = _heartbeat_of(db_url, first)
        log.release()
        run = wait_for(
            lambda: (r := _show(project, db_url, run_id))["state"] in ("success", "failed") and r, 90, "the run to end"
        )
    finally:
        log.release()
        codes = [stop(first), *([stop(second)] if second else [])]
        first_log = log.close()
    second_log = (project / "second.log").read_text()
    nap = run["tasks"]["nap"]
    assert run["state"] == "success" and nap["try_number"] == 1 and len(nap["tries"]) == 1, (nap, first_log, second_log)
    assert "stopped heartbeating" not in second_log
    assert beat is not None and stalled_at is not None and beat > stalled_at, first_log  # it beat on, stalled
    assert all(c in (0, 3) for c in codes), (codes, first_log, second_log)


def test_a_try_taken_from_a_paused_daemon_spends_no_retry(project, db_url):
    """A task without retries, its daemon SIGSTOPped past its lease: the other daemon takes the
    try back, as it must (a paused process may never come back), but the process is there, so it
    was no failure of the task's: it runs again at once and succeeds. Before, it ended failed,
    "stopped heartbeating", for a machine that was only busy."""
    write_notebook(project / "nap.ipynb", "import time\ntime.sleep(5)")
    write_yaml(project / "pipeline.yaml", "name: nap\ntasks:\n  nap: {notebook: nap.ipynb}\n")
    nbsched("--db", db_url, "register", "pipeline.yaml", cwd=project, check=True)
    run_id = nbsched("--db", db_url, "trigger", "nap", cwd=project, check=True).stdout.strip()
    args = ("--workers", "1", "--lease", "2s", "--grace", "5s", "--no-scheduler")
    first = serve(project, "first", *args, db=db_url)
    second = None
    try:
        wait_for(lambda: _task_owned_by(project, db_url, run_id, "nap", first), 60, "try 1 to run on the first")
        second = serve(project, "second", *args, db=db_url)
        pause(first, db_url)
        run = wait_for(
            lambda: (r := _show(project, db_url, run_id))["state"] in ("success", "failed") and r,
            90,
            "the run to end on the second daemon",
            every=0.3,
        )
    finally:
        first.send_signal(signal.SIGCONT)
        codes = [stop(first), *([stop(second)] if second else [])]
    logs = {name: (project / f"{name}.log").read_text() for name in ("first", "second")}
    nap = run["tasks"]["nap"]
    assert run["state"] == "success" and nap["try_number"] == 2, (nap, logs)
    taken, ran = nap["tries"]
    assert f":{first.pid}:" in taken["runner"] and taken["state"] == "up_for_retry"
    assert "while its process lived (paused or starved): this try does not count" in taken["error"]
    assert ran["state"] == "success" and f":{second.pid}:" in ran["runner"]
    assert all(c in (0, 3) for c in codes), (codes, logs)


def test_a_foreground_run_keeps_its_tries_beside_a_daemon_with_a_shorter_lease(project):
    """Each runner is judged by its own lease: a foreground ``nbsched run`` heartbeats every
    15 s (its lease is 60 s), and a daemon started with ``--lease 2s`` on the same database took
    its try after 2 s of silence, ran it again and left the foreground run's user a task run twice."""
    write_notebook(project / "nap.ipynb", "import time\ntime.sleep(6)")
    write_yaml(project / "pipeline.yaml", "name: nap\ntasks:\n  nap: {notebook: nap.ipynb, retries: 1}\n")
    daemon = serve(project, "daemon", "--workers", "1", "--lease", "2s", "--no-scheduler")
    try:
        proc = nbsched("run", "pipeline.yaml", "--json", cwd=project)
    finally:
        stop(daemon)
    log = (project / "daemon.log").read_text()
    assert proc.returncode == 0, (proc.stderr, log)
    nap = json.loads(proc.stdout)["tasks"]["nap"]
    assert nap["try_number"] == 1 and len(nap["tries"]) == 1, (nap, log)
    assert "stopped heartbeating" not in log
