"""The scheduler at scale, on SQLite:

1. 10,000 cron schedules: time to validate them and compute their first fire, to store them,
   and for a scheduler to load them into its heap;
2. CPU used by an idle `nbsched serve` holding those 10,000 schedules, over 10 s (none of them
   fires this month or the next);
3. fire latency (due time -> run row committed), p50/p99, for 20 interval schedules firing
   every second for 10 s, with the scheduler loop the daemon uses.

    python benchmarks/bench_scheduler.py [--schedules 10000] [--idle 10] [--fire 10]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

from nbsched.clock import utcnow
from nbsched.scheduler import Scheduler
from nbsched.service import Config, Service
from nbsched.spec import schedule_fields

WORK = Path(__file__).resolve().parent / ".work-scheduler"


def project(folder: Path) -> Service:
    folder.mkdir(parents=True)
    nb = new_notebook(cells=[new_code_cell("upstream = {}", metadata={"tags": ["parameters"]})])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(folder / "nb.ipynb"))
    (folder / "pipeline.yaml").write_text("name: bench\ntasks:\n  only: {notebook: nb.ipynb}\n")
    service = Service(Config.resolve(home=folder / ".nbsched"))
    service.register(folder / "pipeline.yaml")
    return service


def random_cron(rng: random.Random, quiet_months: set[int]) -> str:
    """A cron that never fires in ``quiet_months``: 10,000 daily crons fire about 7 times a
    minute, and one that fired inside the idle measurement ran a notebook there (seen: 5% CPU)."""
    month = rng.choice([m for m in range(1, 13) if m not in quiet_months])
    return (
        f"{rng.randrange(60)} {rng.randrange(24)} {rng.choice(['*', rng.randrange(1, 29)])} "
        f"{month} {rng.choice(['*', '1-5', rng.randrange(7)])}"
    )


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--schedules", type=int, default=10_000)
    parser.add_argument("--idle", type=float, default=10.0)
    parser.add_argument("--fire", type=float, default=10.0)
    args = parser.parse_args()
    shutil.rmtree(WORK, ignore_errors=True)
    rows: list[tuple[str, str]] = []

    # 1. many cron schedules
    service = project(WORK / "many")
    rng = random.Random(1)
    zones = ["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata"]
    now = utcnow()
    start = time.perf_counter()
    quiet = {now.month, now.month % 12 + 1}  # this month and the next: the measurements' time
    wanted = [
        schedule_fields({"cron": random_cron(rng, quiet), "timezone": rng.choice(zones)}, now=now)
        for _ in range(args.schedules)
    ]
    rows.append((f"validate + first fire of {args.schedules:,} cron schedules", f"{time.perf_counter() - start:.2f} s"))
    start = time.perf_counter()
    service.store.sync_spec_schedules("bench", wanted)
    rows.append(("store them (one transaction)", f"{time.perf_counter() - start:.2f} s"))
    start = time.perf_counter()
    scheduler = Scheduler(service.store, service._run_for_schedule)
    scheduler.refresh()
    rows.append(("scheduler loads them into its heap", f"{(time.perf_counter() - start) * 1000:.0f} ms"))
    start = time.perf_counter()
    fired = scheduler.fire_due(now)
    rows.append(("one scheduler pass with nothing due", f"{(time.perf_counter() - start) * 1000:.2f} ms"))
    assert fired == []
    service.close()

    # 2. an idle daemon holding them
    env = {k: v for k, v in os.environ.items() if not k.startswith("NBSCHED_")}
    daemon = subprocess.Popen(
        [sys.executable, "-m", "nbsched", "serve", "--workers", "2"],
        cwd=WORK / "many",
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(3)  # start-up and first load
        before, wall = cpu_seconds(daemon.pid), time.perf_counter()
        time.sleep(args.idle)
        used, wall = cpu_seconds(daemon.pid) - before, time.perf_counter() - wall
    finally:
        daemon.terminate()
        daemon.wait(30)
    rows.append(
        (f"idle `nbsched serve` CPU over {args.idle:g} s", f"{used:.2f} s ({100 * used / wall:.2f}% of a core)")
    )

    # 3. fire latency of interval schedules
    service = project(WORK / "latency")
    for _ in range(20):
        service.add_schedule("bench", {"every": "1s", "max_active_runs": 1000})
    scheduler = Scheduler(service.store, service._run_for_schedule)
    end = time.monotonic() + args.fire
    while time.monotonic() < end:  # the daemon's loop, without the runner
        scheduler.fire_due(utcnow())
        at = scheduler.next_fire_at()
        if at is not None:
            time.sleep(max(0.0, min((at - utcnow()).total_seconds(), 1.0)))
    runs = service.store.list_runs(limit=None)
    late = sorted((r.created_at - r.logical_date) / timedelta(milliseconds=1) for r in runs)
    service.close()
    p99 = late[min(len(late) - 1, int(len(late) * 0.99))]
    rows.append(
        (
            f"fire latency, {len(late)} fires of 20 every-1s schedules",
            f"p50 {statistics.median(late):.1f} ms, p99 {p99:.1f} ms",
        )
    )

    print(f"\nscheduler benchmark; {os.cpu_count()} cores, SQLite")
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
