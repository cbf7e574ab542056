"""Runners that stall and come back, as real ``nbsched serve`` processes on one database (SQLite,
and the real PostgreSQL): a process paused past its lease (SIGSTOP, as a suspended VM or laptop
is), and a loop that stops turning while its process lives (a log pipe nobody reads). What the
try that took over wrote is never overwritten by the late one, and a live runner's tries are not
taken from it for its loop's stall."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import nbformat
import pytest
from conftest import nbsched, serve, stop, wait_for, write_notebook, write_yaml

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
            open_elsewhere = conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()"
                )
            ).scalar()
            return open_elsewhere == 0
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
