"""The Dask executor on a real Dask cluster (``LocalCluster`` worker processes, and ``dask scheduler``
/ ``dask worker`` processes as the README starts them): notebooks travel to the workers and back."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import distributed  # the dask extra, installed by make test
import nbformat
import pytest
from conftest import nbsched, wait_for, write_notebook, write_yaml

from nbsched.failures import TaskFailure
from nbsched.service import Config, Service
from nbsched.states import RunState, TaskState

pytestmark = pytest.mark.kernel

# records where it ran: the folder, and whether a file beside the original notebook is there
WHERE = (
    "import os, nbsched\nnbsched.record('cwd', os.getcwd())\nnbsched.record('sees_sibling', os.path.exists('data.csv'))\n"
    "nbsched.record('parent', open(f'/proc/{os.getppid()}/cmdline').read().replace(chr(0), ' '))"
)


def _cluster(**kwargs: Any) -> Any:
    return distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=logging.ERROR, **kwargs
    )


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    with _cluster() as c:
        yield c


def _service(project: Path, address: str) -> Service:
    return Service(Config.resolve(project=project, executor=address))


def test_a_diamond_runs_on_the_workers_with_no_shared_folder(project: Path, cluster: Any) -> None:
    write_notebook(project / "source.ipynb", WHERE, "nbsched.record('n', 20)")
    write_notebook(project / "double.ipynb", WHERE, "nbsched.record('n', upstream['source']['n'] * 2)")
    write_notebook(project / "half.ipynb", WHERE, "nbsched.record('n', upstream['source']['n'] // 2)")
    write_notebook(project / "sum.ipynb", WHERE, "nbsched.record('n', sum(v['n'] for v in upstream.values()))")
    (project / "data.csv").write_text("x\n1\n")
    write_yaml(
        project / "pipeline.yaml",
        """
name: diamond
tasks:
  source: {notebook: source.ipynb}
  double: {notebook: double.ipynb, upstream: [source]}
  half:   {notebook: half.ipynb, upstream: [source]}
  sum:    {notebook: sum.ipynb, upstream: [double, half]}
""",
    )
    proc = nbsched("run", "pipeline.yaml", "--executor", cluster.scheduler_address, "--json", cwd=project)
    assert proc.returncode == 0, proc.stderr
    run = json.loads(proc.stdout)
    tasks = run["tasks"]
    assert tasks["sum"]["outputs"]["n"] == 50  # 40 + 10: values travelled between workers
    with distributed.Client(cluster) as client:
        workers = set(client.scheduler_info()["workers"])
    for name, task in tasks.items():
        assert task["state"] == "success" and task["host"] in workers, (name, task)
        # executed in a folder of the worker's own, without the files beside the notebook
        assert Path(task["outputs"]["cwd"]) != project and not task["outputs"]["sees_sibling"]
        # the kernel was forked by the worker's fork server, not started as a new Python
        assert "nbsched.fork_server" in task["outputs"]["parent"], task["outputs"]["parent"]
        # the executed notebook came back to the runner's output folder
        nb = nbformat.read(task["output_path"], as_version=4)
        assert Path(task["output_path"]).parent == project / "nbsched-runs" / "diamond" / run["run_id"]
        assert any("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells)


def test_a_worker_killed_during_a_task_leads_to_a_successful_retry(project: Path) -> None:
    # the first try sleeps long enough to be killed under; the retry is quick
    write_notebook(
        project / "fragile.ipynb",
        "import time\nif nbsched_try == 1:\n    time.sleep(60)",
        params="nbsched_try = 0\nupstream = {}",
    )
    write_yaml(
        project / "pipeline.yaml",
        "name: fragile\ntasks:\n  only: {notebook: fragile.ipynb, retries: 1, retry_delay: 0s}\n",
    )
    with _cluster() as cluster, distributed.Client(cluster) as client:
        service = _service(project, cluster.scheduler_address)
        finished: list[Any] = []
        runner = threading.Thread(target=lambda: finished.append(service.run_pipeline(project / "pipeline.yaml")))
        runner.start()
        busy = wait_for(lambda: [w for w, keys in client.processing().items() if keys], 60, "a worker to take it")
        wait_for(
            lambda: (
                (runs := service.list_runs(limit=1))
                and (cell := runs[0].tasks["only"].cell)
                and cell["index"] == cell["count"]
            ),
            60,
            "the first try to sleep in its last cell",
        )
        pid = client.run(os.getpid, workers=busy)[busy[0]]
        os.kill(pid, signal.SIGKILL)
        runner.join(timeout=120)
        service.close()
    run = finished[0]
    task = run.tasks["only"]
    assert run.state is RunState.SUCCESS and task.try_number == 2, (run.state, task)
    assert task.host != busy[0]  # the retry ran on another worker


def test_cancel_stops_the_kernel_on_the_worker_and_its_future(project: Path, cluster: Any) -> None:
    write_notebook(project / "long.ipynb", "import os\nprint(os.getpid())", "import time\ntime.sleep(120)")
    write_yaml(project / "pipeline.yaml", "name: long\ntasks:\n  nap: {notebook: long.ipynb}\n")
    service = _service(project, cluster.scheduler_address)
    finished: list[Any] = []
    runner = threading.Thread(target=lambda: finished.append(service.run_pipeline(project / "pipeline.yaml")))
    runner.start()
    # the worker reports the cell its notebook is on: the first cell may be seen on the way
    task = wait_for(
        lambda: (
            (runs := service.list_runs(limit=1))
            and (cell := runs[0].tasks["nap"].cell)
            and cell["source"] != "import os; print(os.getpid())"
            and runs[0].tasks["nap"]
        ),
        60,
        "the cell after the first to be reported",
    )
    assert task.cell["source"] == "import time; time.sleep(120)" and task.state is TaskState.RUNNING
    run_id = service.list_runs(limit=1)[0].id
    service.cancel(run_id)
    runner.join(timeout=60)
    assert not runner.is_alive()
    run = finished[0]
    assert run.state is RunState.CANCELLED and run.tasks["nap"].state is TaskState.CANCELLED
    with distributed.Client(cluster.scheduler_address) as client:
        wait_for(lambda: not any(client.processing().values()), 20, "the future to leave the workers")
    nb = nbformat.read(run.tasks["nap"].output_path, as_version=4)
    kernel_pid = int(next(o["text"] for c in nb.cells for o in c.get("outputs", []) if o.get("name") == "stdout"))
    with pytest.raises(ProcessLookupError):
        for _ in range(50):  # killed on the worker, then reaped
            os.kill(kernel_pid, 0)
            time.sleep(0.1)
    assert any(o.get("ename") == "TaskStopped" for c in nb.cells for o in c.get("outputs", []))
    service.close()


def test_a_timeout_on_the_cluster_names_the_cell(project: Path, cluster: Any) -> None:
    write_notebook(project / "slow.ipynb", "import time\ntime.sleep(60)")
    write_yaml(project / "pipeline.yaml", "name: slow\ntasks:\n  only: {notebook: slow.ipynb, timeout: 8s}\n")
    service = _service(project, cluster.scheduler_address)
    run = service.run_pipeline(project / "pipeline.yaml")
    service.close()
    assert run.state is RunState.FAILED
    assert run.tasks["only"].error == "timed out after 8s (cell 3: import time; time.sleep(60))"


def test_a_failing_cell_on_the_cluster_is_named_and_kept_as_data(project: Path, cluster: Any) -> None:
    write_notebook(project / "bad.ipynb", "x = 1", "raise ValueError('bad input')")
    write_yaml(project / "pipeline.yaml", "name: bad\ntasks:\n  only: {notebook: bad.ipynb}\n")
    service = _service(project, cluster.scheduler_address)
    run = service.run_pipeline(project / "pipeline.yaml")
    service.close()
    task = run.tasks["only"]
    assert task.error == "ValueError: bad input (cell 4: raise ValueError('bad input'))"
    assert task.failure == TaskFailure(
        ename="ValueError", evalue="bad input", cell=4, source="raise ValueError('bad input')"
    )
    assert [(t.state, t.failure) for t in task.tries] == [(TaskState.FAILED, task.failure)]


def test_the_readme_cluster_commands_serve_on_dask_and_postgresql(
    project: Path, pg_url: str, tmp_path_factory: Any
) -> None:
    """As "Running on a cluster" in the README: `dask scheduler` and `dask worker` processes, state
    in PostgreSQL, `nbsched serve --executor dask://...`; a task with `resources: {gpu: 1}` goes to
    the one worker that has a GPU."""
    bin_dir = Path(sys.executable).parent
    logs = tmp_path_factory.mktemp("dask")
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"

    def start(name: str, *argv: Any) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("NBSCHED_")}
        return subprocess.Popen(
            [*map(str, argv)], cwd=project, env=env, stdout=(logs / f"{name}.log").open("wb"), stderr=subprocess.STDOUT
        )

    procs = [start("scheduler", bin_dir / "dask", "scheduler", "--host", "127.0.0.1", "--port", port, "--no-dashboard")]
    try:
        procs.append(
            start("workers", bin_dir / "dask", "worker", address, "--nworkers", 2, "--nthreads", 1, "--no-dashboard")
        )
        procs.append(
            start(
                "gpu",
                bin_dir / "dask",
                "worker",
                address,
                "--nthreads",
                1,
                "--resources",
                "gpu=1",
                "--name",
                "gpu-box",
                "--no-dashboard",
            )
        )
        with distributed.Client(address, timeout="30s") as client:
            client.wait_for_workers(3, timeout=60)
            gpu_worker = next(a for a, w in client.scheduler_info()["workers"].items() if w["name"] == "gpu-box")
        write_notebook(project / "plain.ipynb", "x = 1")
        write_notebook(project / "train.ipynb", "y = 2")
        write_yaml(
            project / "pipeline.yaml",
            """
name: gpu
tasks:
  prepare: {notebook: plain.ipynb}
  train:   {notebook: train.ipynb, upstream: [prepare], resources: {gpu: 1}}
""",
        )
        db = ("--db", pg_url)
        nbsched(*db, "register", "pipeline.yaml", cwd=project, check=True)
        procs.append(
            start(
                "serve", bin_dir / "nbsched", *db, "serve", "--executor", f"dask://127.0.0.1:{port}", "--poll", "0.2s"
            )
        )
        run_id = nbsched(*db, "trigger", "gpu", cwd=project, check=True).stdout.strip()
        run = wait_for(
            lambda: (
                (r := json.loads(nbsched(*db, "show", run_id, "--json", cwd=project).stdout))["state"]
                in ("success", "failed")
                and r
            ),
            90,
            "the run to finish",
        )
        assert run["state"] == "success", run
        assert run["tasks"]["train"]["host"] == gpu_worker
        procs[-1].send_signal(signal.SIGTERM)
        assert procs[-1].wait(timeout=30) == 0, (logs / "serve.log").read_text()
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def test_an_unreachable_cluster_is_one_line_and_exit_2(project: Path) -> None:
    write_notebook(project / "nb.ipynb", "x = 1")
    proc = nbsched("run", "nb.ipynb", "--executor", f"dask://127.0.0.1:{_free_port()}", cwd=project, timeout=60)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "dask scheduler at tcp://127.0.0.1:" in proc.stderr and "cannot connect" in proc.stderr
    proc = nbsched("run", "nb.ipynb", "--executor", "spark", cwd=project)
    assert proc.returncode == 2 and "executor 'spark': unknown" in proc.stderr


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def jp_server_config(cluster: Any) -> dict[str, Any]:
    """A Jupyter server whose nbsched extension executes on the cluster."""
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_ext": True}},
        "NbschedApp": {"poll": 0.2, "executor": cluster.scheduler_address},
    }


async def test_the_server_extension_runs_notebooks_on_the_cluster(
    jp_fetch: Any, jp_serverapp: Any, jp_root_dir: Path, cluster: Any
) -> None:
    import asyncio

    (app,) = jp_serverapp.extension_manager.extension_apps["jupyter_ext"]
    await app._start_jupyter_server_extension(jp_serverapp)  # as the server starts it (pytest-jupyter does not)
    try:
        write_notebook(jp_root_dir / "where.ipynb", WHERE)
        spec = {"name": "on-dask", "tasks": {"where": {"notebook": "where.ipynb"}}}
        await jp_fetch("nbsched", "api", "v1", "pipelines", method="POST", body=json.dumps({"spec": spec}))
        reply = await jp_fetch("nbsched", "api", "v1", "pipelines", "on-dask", "runs", method="POST", body="{}")
        run_id = json.loads(reply.body)["run_id"]
        for _ in range(300):
            run = json.loads((await jp_fetch("nbsched", "api", "v1", "runs", run_id)).body)
            if run["state"] in ("success", "failed", "cancelled"):
                break
            await asyncio.sleep(0.1)
    finally:
        await app.stop_extension()
    with distributed.Client(cluster) as client:
        workers = set(client.scheduler_info()["workers"])
    task = run["tasks"]["where"]
    assert run["state"] == "success" and task["host"] in workers, run
    assert Path(task["outputs"]["cwd"]) != jp_root_dir.resolve()  # noqa: ASYNC240
