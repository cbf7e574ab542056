"""How many workers, and how many kernels for them: bounded, and only what can be used."""

from __future__ import annotations

import json
import os
import resource
import subprocess

import pytest
from conftest import NBSCHED, nbsched, write_notebook, write_yaml

from nbsched.errors import ConfigError
from nbsched.service import Config, Service
from nbsched.states import RunState, TaskState

# what a task sees of the kernels around it: the fork server's children (with --kernel-fork,
# every kernel is one). Each waits until all its siblings run (however slowly a loaded machine
# starts them), then records the most it sees while the pool has a second to start what it would.
SIBLINGS = """
import os, time, nbsched
server, expected = os.getppid(), {tasks}
def kernels():
    return len(open(f'/proc/{{server}}/task/{{server}}/children').read().split())
deadline = time.monotonic() + 120
while kernels() < expected and time.monotonic() < deadline:
    time.sleep(0.05)
most, until = 0, time.monotonic() + 1
while time.monotonic() < until:
    most = max(most, kernels())
    time.sleep(0.02)
nbsched.record('kernels', most)
"""


@pytest.mark.kernel
@pytest.mark.parametrize("tasks", [1, 3])
def test_a_run_starts_no_more_kernels_than_it_has_tasks_whatever_the_workers(project, tasks):
    write_notebook(project / "siblings.ipynb", SIBLINGS.format(tasks=tasks))
    spec = write_yaml(
        project / "pipeline.yaml",
        "name: few\ntasks:\n" + "".join(f"  t{i}: {{notebook: siblings.ipynb}}\n" for i in range(tasks)),
    )
    service = Service(Config.resolve(project=project, workers=12))
    try:
        run = service.run_pipeline(spec)
    finally:
        service.close()

    assert run.state is RunState.SUCCESS, {n: t.error for n, t in run.tasks.items()}
    # each task sees its own kernel and its neighbours' (they run at once), never a 13th waiting
    assert [t.outputs["kernels"] for t in run.tasks.values()] == [tasks] * tasks


def test_the_worker_count_is_bounded_in_one_place_the_config():
    with pytest.raises(ConfigError, match=r"^workers 100000: at most 256 with local kernels \("):
        Config.resolve(workers=100000)
    with pytest.raises(ConfigError, match=r"^workers -1: expected a whole number >= 1$"):
        Config.resolve(workers=-1)
    with pytest.raises(ConfigError, match=r"^workers 300: at most 256 Dask worker processes started here"):
        Config.resolve(workers=300, executor="dask")
    assert Config.resolve(workers=256).workers == 256
    assert Config.resolve(workers=1000, executor="dask://127.0.0.1:8786").workers == 1000  # its own bound


@pytest.mark.parametrize("command", [["run", "one.ipynb"], ["serve"]])
def test_too_many_workers_is_one_line_and_exit_2_and_no_run(project, command):
    write_notebook(project / "one.ipynb", "x = 1")
    proc = nbsched(*command, "--workers", "100000", cwd=project)

    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        (
            "Error: workers 100000: at most 256 with local kernels (each runs a kernel and has one waiting; "
            "for more, use a Dask cluster)"
        )
    ]
    assert json.loads(nbsched("runs", "--json", cwd=project).stdout) == []


def _open_files(limit: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))


@pytest.mark.kernel
def test_workers_beyond_what_the_open_files_allow_are_refused_not_aborted(project):
    """With 256 open files, 40 workers made libzmq abort the process (SIGABRT, "Too many open
    files (src/epoll.cpp:38)") as their kernels started, and the run stayed "running"."""
    write_notebook(project / "one.ipynb", "x = 1")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NBSCHED_")}

    def run(workers: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*NBSCHED, "run", "one.ipynb", "-w", str(workers)],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            preexec_fn=lambda: _open_files(256),
        )

    refused = run(40)
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.strip().splitlines() == [
        "Error: workers 40: at most 4 with local kernels (this process may open 256 files (ulimit -Hn), 32 a worker)"
    ]
    assert run(4).returncode == 0
    assert [r["state"] for r in json.loads(nbsched("runs", "--json", cwd=project).stdout)] == ["success"]


@pytest.mark.kernel
def test_a_foreground_run_whose_runner_fails_ends_cancelled_not_running(project, service):
    write_notebook(project / "slow.ipynb", "import time\ntime.sleep(30)")
    spec = write_yaml(project / "pipeline.yaml", "name: broken\ntasks:\n  slow: {notebook: slow.ipynb}\n")

    def listener(run_id: str, task: str, state: TaskState, detail: str | None) -> None:
        if state is TaskState.RUNNING:
            raise RuntimeError("the progress display broke")

    with pytest.raises(RuntimeError, match="the progress display broke"):
        service.run_pipeline(spec, listener=listener)

    (run,) = service.list_runs()
    assert run.state is RunState.CANCELLED
    assert run.error == "cancelled: the runner failed: RuntimeError: the progress display broke"
    assert run.tasks["slow"].state is TaskState.CANCELLED


@pytest.mark.slow
def test_nbsched_app_workers_out_of_bounds_is_named_and_the_server_still_stops(tmp_path):
    """jupyter-server logs an extension that fails to load and goes on without it; stopping the
    server then failed too ('NbschedApp' object has no attribute '_task'): SIGTERM left it running."""
    import signal
    import socket
    import sys
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("NBSCHED_")}
    env["JUPYTER_RUNTIME_DIR"] = str(tmp_path / "runtime")
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyter_server",
                "--no-browser",
                "--ServerApp.ip=127.0.0.1",
                f"--port={port}",
                f"--ServerApp.root_dir={tmp_path}",
                "--NbschedApp.workers=100000",
                *(["--allow-root"] if os.geteuid() == 0 else []),
            ],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while "is running at" not in log_path.read_text() and time.monotonic() < deadline:
                assert proc.poll() is None, log_path.read_text()
                time.sleep(0.2)
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = log_path.read_text()
    assert "NbschedApp.workers 100000: at most 256 with local kernels" in text
    assert "AttributeError" not in text, text
