"""A daemon that runs for long: 1,500 tasks through one ``nbsched serve``, and what it holds open
does not grow (open files, ZeroMQ sockets, threads, kernel connection files, the fork server's
descriptors)."""

from __future__ import annotations

import collections
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import NBSCHED, wait_for, write_notebook, write_yaml

from nbsched.service import Config, Service
from nbsched.states import RunState
from nbsched.workers import FILES_BESIDES, FILES_PER_WORKER

pytestmark = pytest.mark.kernel

TASKS_PER_RUN = 10
RUNS_PER_BATCH = 10  # 100 tasks a batch
BATCHES = 15  # 1,500 tasks: a leak of one descriptor per 300 tasks still shows (the tolerance is 2)
WORKERS = 2


def held(pid: int) -> dict[str, int]:
    """What a process holds: its descriptors by kind (ZeroMQ's are its TCP sockets, and the
    eventfds of their mailboxes and its contexts), and its threads."""
    kinds: collections.Counter[str] = collections.Counter()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        kinds[
            "socket"
            if target.startswith("socket:")
            else target.split("]")[0] + "]"
            if target.startswith("anon_inode:")
            else "file"
        ] += 1
    names = collections.Counter(
        Path(f"/proc/{pid}/task/{t}/comm").read_text().strip() for t in os.listdir(f"/proc/{pid}/task")
    )
    return {"fds": sum(kinds.values()), **kinds, "threads": sum(names.values()), "names": dict(names)}


def _children(task: Path) -> list[str]:
    """A thread's child processes; none for a thread that ended while we looked."""
    try:
        return (task / "children").read_text().split()
    except FileNotFoundError:
        return []


def children(pid: int) -> list[int]:
    """A process's child processes (those each of its threads started)."""
    return [int(c) for t in Path(f"/proc/{pid}/task").iterdir() for c in _children(t)]


def settled(pid: int, server: int, runtime: Path) -> dict[str, int]:
    """``held`` once the batch's kernels are gone (they are shut down in the background): the fork
    server has no kernel left, no connection file remains, and four looks half a second apart see
    the same (ZeroMQ closes a socket's descriptors a moment after the socket, and a closed client
    socket lingers up to a second, trying to reach a kernel that is gone)."""
    wait_for(
        lambda: not children(server) and not list(runtime.glob("kernel-*.json")),
        60,
        "the batch's kernels to be shut down",
    )
    looks = [held(pid)]

    def unchanged() -> bool:
        looks.append(held(pid))
        return len(looks) >= 4 and looks[-1] == looks[-2] == looks[-3] == looks[-4]

    wait_for(unchanged, 30, "what the daemon holds to stop changing", every=0.5)
    return looks[-1]


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_daemon_running_1500_tasks_holds_no_more_open_than_after_300(project):
    write_notebook(project / "trivial.ipynb", "x = 1")
    write_yaml(
        project / "pipeline.yaml",
        "name: soak\ntasks:\n" + "".join(f"  t{i}: {{notebook: trivial.ipynb}}\n" for i in range(TASKS_PER_RUN)),
    )
    runtime = project / "runtime"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("NBSCHED_")}, "JUPYTER_RUNTIME_DIR": str(runtime)}
    service = Service(Config.resolve(project=project))
    service.register(project / "pipeline.yaml")
    log = (project / "serve.log").open("wb")
    daemon = subprocess.Popen(
        [*NBSCHED, "serve", "-w", str(WORKERS), "--no-scheduler", "--poll", "200ms"],
        cwd=project,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    peak: dict[int, int] = {}  # batch: most descriptors held while it ran
    batch = 0
    running = threading.Event()
    running.set()

    def watch() -> None:
        while running.is_set():
            try:
                peak[batch] = max(peak.get(batch, 0), len(os.listdir(f"/proc/{daemon.pid}/fd")))
            except OSError:
                pass
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    samples = []
    try:
        for batch in range(BATCHES):
            ids = [service.trigger("soak") for _ in range(RUNS_PER_BATCH)]
            wait_for(
                lambda ids=ids: all(r.state.finished for r in service.store.list_runs(ids=ids, limit=None)),
                300,
                f"batch {batch} to finish",
            )
            runs = service.store.list_runs(ids=ids, limit=None)
            assert all(r.state is RunState.SUCCESS for r in runs), [r.error for r in runs]
            # its children (the fork server; a thread of its own started it): kernels are the server's
            server = children(daemon.pid)
            assert len(server) == 1, server
            if batch in (2, BATCHES - 1):  # after 300 tasks, and at the end
                samples.append(
                    {
                        **settled(daemon.pid, server[0], runtime),
                        "server fds": len(os.listdir(f"/proc/{server[0]}/fd")),
                        "connection files": len(list(runtime.glob("kernel-*.json"))),
                    }
                )
    finally:
        running.clear()
        watcher.join()
        daemon.terminate()
        daemon.wait(60)
        log.close()
    after_300, at_end = samples
    report = f"after 300 tasks {after_300}, after {BATCHES * 100}: {at_end}, peaks {peak}"
    print(report)
    assert at_end["connection files"] == 0, report
    # slack: one event loop (an epoll descriptor, a socket pair, an eventfd) that a long-lived thread
    # may make once, after the first sample under load (seen once in a fresh clone: 12 -> 16, with the
    # same 13 threads); a leak grows with the tasks, past it
    slack = {"fds": 4, "socket": 2, "anon_inode:[eventfd]": 2, "threads": 0, "server fds": 2}
    for key, allowed in slack.items():
        assert at_end.get(key, 0) <= after_300.get(key, 0) + allowed, (key, report)
    assert max(peak.values()) <= FILES_BESIDES + (WORKERS + 1) * FILES_PER_WORKER, report  # within its budget
