"""Where a task gets its kernel: the one seam for how kernels are started and stopped.

Every task runs in a kernel of its own. ``FreshKernels`` starts one when a task starts;
``KernelPool`` (``kernel_pool.py``) has them started and connected ahead of need. Both give
``kernel(name, cwd)``: a context manager yielding a ``Kernel``.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

log = logging.getLogger("nbsched.kernels")


class KernelHandle:
    """Lets another thread stop the kernel of a running task (timeout, cancel)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pgid: int | None = None
        self.stop_reason: str | None = None
        self.cell_index: int | None = None  # of the code cell executing now, in the output notebook
        self.cell_source: str = ""
        self.cell_count: int = 0

    def attach(self, km: Any) -> None:
        provisioner = getattr(km, "provisioner", None)
        with self._lock:
            self._pgid = getattr(provisioner, "pgid", None) or getattr(provisioner, "pid", None)
            if self.stop_reason is not None:
                self._kill()

    def stop(self, reason: str) -> None:
        """Kill the kernel (and anything it spawned) now; the first reason given wins."""
        with self._lock:
            if self.stop_reason is None:
                self.stop_reason = reason
            self._kill()

    def cell_started(self, cell: Any, cell_index: int, **_: Any) -> None:
        if cell.get("cell_type") != "code" or not cell.get("source", "").strip():
            return  # nbclient announces markdown and empty cells too; they take no time
        self.cell_index = cell_index
        self.cell_source = cell.get("source", "")

    def _kill(self) -> None:
        if self._pgid is None:
            return
        try:
            os.killpg(self._pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


@dataclass
class Kernel:
    """A kernel for one task: its manager, and a client already connected and ready (a pooled
    kernel) or None (the engine connects one)."""

    km: Any
    kc: Any = None


def start_kernel(kernel_name: str, cwd: Path, server: Any = None) -> Any:
    """A started kernel manager (AsyncKernelManager, driven with ``run_sync`` from any thread);
    its process forked by ``server`` (a ``ForkServer``) when it is this Python's ipykernel."""
    import uuid

    from jupyter_client.manager import AsyncKernelManager
    from jupyter_core.utils import run_sync

    import zmq

    # CurveZMQ keys when the kernel declares support: encrypted channels, and no
    # "running over TCP without encryption" warning from ipykernel on every task.
    km = AsyncKernelManager(kernel_name=kernel_name, kernel_id=str(uuid.uuid4()),
                            transport_encryption="auto" if zmq.has("curve") else "disabled")
    if server is not None:
        from nbsched.fork_server import ForkProvisioner

        km.provisioner = ForkProvisioner(kernel_id=km.kernel_id, kernel_spec=km.kernel_spec, parent=km)
        km.provisioner.server = server
    run_sync(km.start_kernel)(cwd=str(cwd))
    return km


class Launcher:
    """Starts kernels the usual way, or (``fork=True``) forked from a fork server that has
    ipykernel and ``preload`` imported (``fork_server.py``): about 0.04 s of CPU a kernel
    instead of 0.3 s. The server starts on first use; if it cannot, kernels start the usual way
    and the reason is logged once."""

    def __init__(self, fork: bool = False, preload: Iterable[str] = ()) -> None:
        self.fork = fork
        self.preload = tuple(preload)
        self._lock = threading.Lock()
        self._server: Any = None
        self._failed = False

    def start(self, kernel_name: str, cwd: Path) -> Any:
        return start_kernel(kernel_name, cwd, self._fork_server())

    def close(self) -> None:
        with self._lock:
            server, self._server = self._server, None
            self._failed = True  # no new server once closed
        if server is not None:
            server.close()

    def _fork_server(self) -> Any:
        if not self.fork:
            return None
        with self._lock:
            if self._server is None and not self._failed:
                from nbsched.fork_server import ForkServer, ForkServerError

                try:
                    self._server = ForkServer(self.preload)
                except (ForkServerError, OSError) as exc:
                    self._failed = True
                    log.warning("kernels start the usual way: the fork server cannot start: %s", exc)
            return self._server


def stop_kernel(km: Any) -> None:
    """Shut a kernel down gracefully; its clients' channels must be stopped first (with them
    open, a graceful shutdown can wait seconds for a reply that never comes)."""
    from jupyter_core.utils import run_sync

    if run_sync(km.is_alive)():
        run_sync(km.shutdown_kernel)(now=False)
    else:
        run_sync(km.cleanup_resources)()


class FreshKernels:
    """A new kernel for each task, started when the task starts, shut down once it is done."""

    def __init__(self, startup_timeout: float = 60, launcher: Launcher | None = None) -> None:
        self.startup_timeout = startup_timeout
        self.launcher = launcher or Launcher()

    @contextmanager
    def kernel(self, kernel_name: str, cwd: Path) -> Iterator[Kernel]:
        km = self.launcher.start(kernel_name, cwd)
        try:
            yield Kernel(km)
        finally:
            stop_kernel(km)

    def prepare(self, kernel_names: Iterable[str]) -> None:
        """Nothing to do ahead of need."""

    def close(self) -> None:
        self.launcher.close()
