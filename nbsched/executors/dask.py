"""``DaskExecutor``: task notebooks run on a Dask distributed cluster, an existing one
(``dask://HOST:PORT``) or a ``LocalCluster`` started for the runner (``dask``).

The notebook and its parameters travel to the worker with the task; the worker executes it
with papermill in a fresh kernel, in a temporary folder, and sends back the executed notebook,
the recorded values and its address, so workers need no shared disk. Beside the future, two
Dask events per try, named after its key: ``-stop`` (the runner asks the worker to stop the
kernel, a timeout or a cancel, after setting the variable ``-why``) and ``-started`` (set by
the first execution: when Dask runs a try again after its worker died, the second execution
refuses, so nbsched's retry policy applies and no try runs twice). Workers report the cell a
notebook is on as events of the ``nbsched-cell`` topic, which the runner's client receives as
they come.
(Events and topics, not Variables: reading an unset Variable logs an error on the scheduler.)
"""

from __future__ import annotations

import logging
import os
import queue
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from nbsched.errors import ConfigError
from nbsched.executors.base import Executor, Message, TaskAttempt
from nbsched.kernels import FreshKernels, KernelHandle, Launcher
from nbsched.notebook import TaskOutcome, TaskRequest, show_cell
from nbsched.states import StopReason

WORKER_LOST = "its Dask worker was lost during this try"
CELL_TOPIC = "nbsched-cell"
_STOP_GRACE = 10.0  # seconds a stopped try has to send back its notebook before its future is cancelled
_POLL = 0.5


class DaskExecutor(Executor):
    def __init__(self, address: str | None = None, workers: int | None = None, *, fork: bool = False) -> None:
        self.fork = fork  # the workers fork their kernels from a fork server of their own
        try:
            import dask
            from distributed import Client, LocalCluster
        except ImportError:
            raise ConfigError("the dask executor needs distributed: pip install 'nbsched[dask]'") from None
        self._cluster = None
        if address is None:
            # A try whose worker dies must fail (and be retried by nbsched), not be re-run by Dask.
            with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
                self._cluster = LocalCluster(
                    n_workers=workers or os.cpu_count() or 1,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=":0",
                    silence_logs=logging.ERROR,
                )
            self.client = Client(self._cluster)
        else:
            try:
                _probe(address)  # nothing listening: say so now, rather than after the client's timeout
                self.client = Client(address, timeout="10s")
            except (OSError, TimeoutError) as exc:
                raise ConfigError(f"dask scheduler at {address}: cannot connect ({exc})") from None
        assert self.client.scheduler is not None, "a connected client"
        self.address = self.client.scheduler.address
        self.workers = workers or max(1, sum(self.client.nthreads().values()))
        self._threads = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="nbsched-dask")
        self._handles: dict[str, KernelHandle] = {}  # by try key, while it runs
        self.client.subscribe_topic(CELL_TOPIC, self._on_cell)

    def _on_cell(self, event: tuple[float, dict[str, Any]]) -> None:
        """A worker reports the cell a notebook is on: into the handle the runner reads progress from."""
        _, message = event
        handle, cell = self._handles.get(message["key"]), message["cell"]
        if handle is not None and cell:
            show_cell(handle, cell)

    def _spawn(
        self,
        fn: Callable[[TaskAttempt, queue.Queue[Message]], None],
        attempt: TaskAttempt,
        events: queue.Queue[Message],
    ) -> None:
        # a thread per try in flight, waiting on its Dask future: the work happens on the cluster
        self._threads.submit(fn, attempt, events)

    def execute(self, request: TaskRequest, handle: KernelHandle) -> TaskOutcome:
        from distributed import Event, Variable

        key = f"nbsched-{request.run_id}-{request.task}-try{request.try_number}"
        stop = Event(f"{key}-stop", client=self.client)
        self._handles[key] = handle
        future = self.client.submit(
            run_on_worker,
            key,
            request.notebook.read_bytes(),
            request.notebook.name,
            request.parameters,
            request.kernel,
            self.fork,
            key=key,
            resources=request.resources or None,
            retries=0,
        )
        asked_to_stop_at: float | None = None
        try:
            while True:
                try:
                    result = future.result(timeout=_POLL)
                    break
                except TimeoutError:
                    pass
                except Exception as exc:  # noqa: BLE001 - the worker died (KilledWorker), or the task raised
                    return TaskOutcome(error=_lost(exc), output_path=request.output_path)
                if handle.stop_reason is not None:
                    if asked_to_stop_at is None:
                        Variable(f"{key}-why", client=self.client).set([handle.stop_reason.value, handle.stop_message])
                        stop.set()
                        asked_to_stop_at = time.monotonic()
                    elif time.monotonic() - asked_to_stop_at > _STOP_GRACE:
                        future.cancel()
                        return TaskOutcome.stopped_by(handle)
        finally:
            self._handles.pop(key, None)
            for name in ("stop", "started"):
                Event(f"{key}-{name}", client=self.client).clear()  # a cleared event is forgotten
            if asked_to_stop_at is not None:
                Variable(f"{key}-why", client=self.client).delete()
        fields, notebook = result
        if notebook is not None:
            request.output_path.parent.mkdir(parents=True, exist_ok=True)
            request.output_path.write_bytes(notebook)
        return TaskOutcome.from_json(fields, output_path=request.output_path)

    def shutdown(self) -> None:
        self._threads.shutdown(wait=True)
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()


_worker_kernels: dict[bool, FreshKernels] = {}
_worker_kernels_lock = threading.Lock()


def worker_kernels(fork: bool) -> FreshKernels:
    """The kernel source of this worker process, kept across its tasks (a fork server lives as
    long as the worker; it dies with it, and so do its kernels)."""
    with _worker_kernels_lock:
        if fork not in _worker_kernels:
            _worker_kernels[fork] = FreshKernels(launcher=Launcher(fork))
        return _worker_kernels[fork]


def run_on_worker(
    key: str, notebook: bytes, name: str, parameters: dict[str, Any], kernel: str | None, fork: bool = False
) -> tuple[dict[str, Any], bytes | None]:
    """On a Dask worker: execute one try of a task; returns the outcome's fields and the executed notebook."""
    from distributed import Event, Variable, get_client, get_worker

    from nbsched.notebook import cell_progress, execute_task

    client, worker = get_client(), get_worker()  # bound here: the watcher thread has no task context
    started, stop = Event(f"{key}-started", client=client), Event(f"{key}-stop", client=client)
    if started.is_set():  # Dask runs it again: the worker of the first execution died
        return TaskOutcome(error=WORKER_LOST).to_json(), None
    started.set()
    handle, done = KernelHandle(), threading.Event()

    def stop_as_asked() -> None:
        # the reason is set before the stop event, so there is one to read
        reason, message = Variable(f"{key}-why", client=client).get(timeout=10)
        handle.stop(StopReason(reason), message)

    if stop.is_set():  # stopped while it waited for a worker
        stop_as_asked()
        return TaskOutcome.stopped_by(handle, host=worker.address).to_json(), None

    def watch() -> None:
        last = None
        while not done.wait(_POLL):
            if handle.stop_reason is None and stop.is_set():
                stop_as_asked()
            if (cell := cell_progress(handle)) != last:
                worker.log_event(CELL_TOPIC, {"key": key, "cell": cell})
                last = cell

    watcher = threading.Thread(target=watch, name=f"{key}-watch", daemon=True)
    with tempfile.TemporaryDirectory(prefix="nbsched-") as folder:
        source = Path(folder) / name
        source.write_bytes(notebook)
        output = Path(folder) / "out" / name
        request = TaskRequest(
            run_id=key,
            task=name,
            try_number=0,
            notebook=source,
            output_path=output,
            parameters=parameters,
            kernel=kernel,
        )
        watcher.start()
        try:
            outcome = execute_task(request, handle, worker_kernels(fork))
        finally:
            done.set()
            watcher.join()
        executed = output.read_bytes() if output.exists() else None
    outcome.host = worker.address
    return outcome.to_json(), executed


def _probe(address: str) -> None:
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(address)
    if parts.hostname and parts.port:
        socket.create_connection((parts.hostname, parts.port), timeout=10).close()


def _lost(exc: BaseException) -> str:
    from distributed import KilledWorker

    if isinstance(exc, KilledWorker):
        return WORKER_LOST
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else 'the Dask task failed'}"
