"""How nbsched's history reads and its daemons' throughput hold up as the database grows.

- History: a database holding 1,000 and 100,000 finished runs (three tasks each, one run in
  twenty failed, two pipelines, a year of history, written in bulk): the latency of
  ``nbsched runs``, ``nbsched runs --pipeline P --state failed`` (both in-process through the
  CLI, the database opened by the command included), ``GET /runs?limit=50`` on a real Jupyter
  server (also with a cursor 90% deep into the history) and opening the widget panel.
- Drain: 1,000 queued one-task runs and two ``nbsched serve`` daemons: runs per second, and
  each daemon's resident memory after the first hundred runs, after 300 (once its caches are
  warm), half-way and at the end.

    python benchmarks/bench_history.py [--sizes 1000 100000] [--repeat 5] [--drain 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

from bench_pipeline import build, machine  # this folder is on sys.path when run as a script
from click.testing import CliRunner

from jupyter_ext.handlers import _encode_cursor as encode_cursor

WORK = Path(__file__).resolve().parent / ".work-history"
TOKEN = "bench"
START = datetime(2025, 12, 1, tzinfo=timezone.utc)


def fill(home: Path, spec: Path, n: int) -> None:
    """Register the pipeline, then write ``n`` finished runs of it (and of a second pipeline)
    in bulk, as a year of hourly runs would leave them."""
    from sqlalchemy import insert

    from nbsched.service import Config, Service
    from nbsched.states import RunState, RunTrigger, TaskState
    from nbsched.store.models import RunRow, TaskRunRow

    service = Service(Config.resolve(home=home))
    try:
        service.register(spec)
        runs, tasks = [], []
        for i in range(n):
            at, run_id = run_at(i)
            failed = i % 20 == 7
            runs.append(
                {
                    "id": run_id,
                    "pipeline": "bench" if i % 2 else "other",
                    "pipeline_version": 1,
                    "params": {"size": i},
                    "logical_date": at,
                    "trigger": RunTrigger.SCHEDULE,
                    "state": RunState.FAILED if failed else RunState.SUCCESS,
                    "created_at": at,
                    "started_at": at,
                    "ended_at": at + timedelta(seconds=30),
                    "host": "bench",
                }
            )
            for position, name in enumerate(["l0_0", "l1_0", "l2_0"]):
                bad = failed and position == 2
                tasks.append(
                    {
                        "run_id": run_id,
                        "task": name,
                        "position": position,
                        "state": TaskState.FAILED if bad else TaskState.SUCCESS,
                        "try_number": 1,
                        "max_tries": 1,
                        "outputs": {"rows": i},
                        "error": "ValueError: bad rows (cell 3)" if bad else None,
                        "output_path": str(home / "runs" / run_id / f"{name}.ipynb"),
                        "started_at": at + timedelta(seconds=10 * position),
                        "ended_at": at + timedelta(seconds=10 * position + 9),
                        "updated_at": at + timedelta(seconds=10 * position + 9),
                    }
                )
        engine = service.store.engine
        with engine.begin() as conn:
            for chunk in range(0, len(runs), 20_000):
                conn.execute(insert(RunRow), runs[chunk : chunk + 20_000])
            for chunk in range(0, len(tasks), 60_000):
                conn.execute(insert(TaskRunRow), tasks[chunk : chunk + 60_000])
    finally:
        service.close()


def run_at(i: int) -> tuple[datetime, str]:
    """The creation time and id ``fill`` gives its ``i``-th run."""
    at = START + timedelta(minutes=5 * i)
    return at, f"{at:%Y%m%dT%H%M%S}-{i:06x}"


def timed(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm: imports, the first connection
    walls = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        walls.append(time.perf_counter() - start)
    return statistics.median(walls) * 1000


def cli(home: Path, *args: str) -> Callable[[], object]:
    from nbsched.cli import cli as command

    def call() -> object:
        result = CliRunner().invoke(command, ["--home", str(home), *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    return call


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(root: Path, home: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter",
            "server",
            "--no-browser",
            "--allow-root",
            f"--port={port}",
            f"--ServerApp.token={TOKEN}",
            f"--ServerApp.root_dir={root}",
            f"--NbschedApp.db_url=sqlite:///{home / 'nbsched.db'}",
            "--NbschedApp.runner_enabled=False",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/nbsched/api/v1"
    deadline = time.monotonic() + 60
    while True:
        try:
            get(base + "/health")
            return proc, base
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise SystemExit("the Jupyter server did not start") from None
            time.sleep(0.2)


def get(url: str) -> dict[str, object]:
    request = urllib.request.Request(url, headers={"Authorization": f"token {TOKEN}"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return dict(json.loads(answer.read()))


def history_table(sizes: list[int], repeat: int) -> None:
    from nbsched.service import Config, Service
    from nbsched.widgets.panel import RunPanel

    rows = []
    for n in sizes:
        root = WORK / f"history{n}"
        spec, _ = build([1, 1, 1], root / "notebooks")
        home = root / ".nbsched"
        started = time.perf_counter()
        fill(home, spec, n)
        print(f"  {n:,} runs written in {time.perf_counter() - started:.1f}s", file=sys.stderr)
        proc, base = start_server(root, home)
        try:
            # a cursor 90% into the history (newest first), as a client paging that far holds it
            deep = encode_cursor(*run_at(n - 1 - n * 9 // 10))
            service = Service(Config.resolve(home=home))
            try:
                measures = {
                    "`nbsched runs`": timed(cli(home, "runs"), repeat),
                    "`nbsched runs --pipeline bench --state failed`": timed(
                        cli(home, "runs", "--pipeline", "bench", "--state", "failed"), repeat
                    ),
                    "`nbsched runs --pipeline bench --state cancelled` (none)": timed(
                        cli(home, "runs", "--pipeline", "bench", "--state", "cancelled"), repeat
                    ),
                    "`GET /runs?limit=50`": timed(lambda: get(f"{base}/runs?limit=50"), repeat),
                    "`GET /runs?limit=50&cursor=` (90% deep)": timed(
                        lambda: get(f"{base}/runs?limit=50&cursor={deep}"), repeat
                    ),
                    "open the panel (`RunPanel`)": timed(lambda: RunPanel(service, refresh_every=0).close(), repeat),
                    "open the panel on a pipeline": timed(
                        lambda: RunPanel(service, "bench", refresh_every=0).close(), repeat
                    ),
                }
            finally:
                service.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        rows.append((n, measures))
    print(f"\nHistory: latency (ms, median of {repeat}) against the number of finished runs in the database\n")
    names = list(rows[0][1])
    print("| query | " + " | ".join(f"{n:,} runs" for n, _ in rows) + " |")
    print("|---|" + "---:|" * len(rows))
    for name in names:
        print(f"| {name} | " + " | ".join(f"{m[name]:.1f}" for _, m in rows) + " |")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def drain_table(count: int, workers: int) -> None:
    """``count`` one-task runs queued at once, drained by two daemons sharing one SQLite file."""
    from nbsched.service import Config, Service
    from nbsched.states import RunState

    root = WORK / "drain"
    spec, _ = build([1], root / "notebooks")
    home = root / ".nbsched"
    service = Service(Config.resolve(home=home))
    try:
        service.register(spec)
        for _ in range(count):
            service.trigger("bench", {})
    finally:
        service.close()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    daemons = [
        subprocess.Popen(
            [sys.executable, "-m", "nbsched", "--home", str(home), "serve", "-w", str(workers)],
            stdout=subprocess.DEVNULL,
            stderr=(root / f"daemon{i}.log").open("w"),
            env=env,
        )
        for i in range(2)
    ]
    service = Service(Config.resolve(home=home))
    memory: dict[int, dict[int, float]] = {d.pid: {} for d in daemons}
    started = time.perf_counter()
    try:
        while True:
            done = count - len(service.store.list_runs(states=[RunState.QUEUED, RunState.RUNNING], limit=None))
            for mark in range(100, count + 1, 100):
                if done >= mark and mark not in memory[daemons[0].pid]:
                    for d in daemons:
                        memory[d.pid][mark] = rss_mib(d.pid)
                    print(
                        f"  {mark} runs done: RSS {[round(memory[d.pid][mark]) for d in daemons]} MiB", file=sys.stderr
                    )
            if done >= count:
                break
            if any(d.poll() is not None for d in daemons):
                raise SystemExit(f"a daemon exited; see {root}/daemon*.log")
            time.sleep(0.5)
        wall = time.perf_counter() - started
        states = [r.state for r in service.store.list_runs(limit=None)]
    finally:
        service.close()
        for d in daemons:
            d.send_signal(signal.SIGTERM)
        for d in daemons:
            d.wait(60)
    ok = sum(s is RunState.SUCCESS for s in states)
    print(f"\nDrain: {count:,} queued one-task runs, two `nbsched serve -w {workers}` daemons on one SQLite file\n")
    marks = sorted(memory[daemons[0].pid])
    shown = sorted({marks[0], marks[min(2, len(marks) - 1)], marks[len(marks) // 2], marks[-1]})
    print(
        "| runs | succeeded | wall s | runs/s | daemon | "
        + " | ".join(f"RSS MiB after {m:,} runs" for m in shown)
        + " |\n|---:|---:|---:|---:|---|"
        + "---:|" * len(shown)
    )
    for i, d in enumerate(daemons):
        lead = f"| {count:,} | {ok:,} | {wall:.1f} | {count / wall:.1f} |" if i == 0 else "| | | | |"
        print(f"{lead} {i + 1} | " + " | ".join(f"{memory[d.pid].get(m, 0.0):.0f}" for m in shown) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="*", type=int, default=[1000, 100_000])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--drain", type=int, default=1000, help="queued runs the two daemons drain (0: none)")
    parser.add_argument("--workers", type=int, default=1, help="workers of each drain daemon")
    args = parser.parse_args()
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    print(f"Machine: {machine(args.repeat)}")
    if args.sizes:
        history_table(args.sizes, args.repeat)
    if args.drain:
        drain_table(args.drain, args.workers)
    shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
