"""Where a task gets its kernel: the one seam for how kernels are started and stopped.

Every task runs in a kernel of its own. ``FreshKernels`` starts one when a task starts;
``KernelPool`` (``kernel_pool.py``) has them started and connected ahead of need. Both give
``kernel(name, cwd)``: a context manager yielding a ``Kernel``.
"""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator


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


def start_kernel(kernel_name: str, cwd: Path) -> Any:
    """A started kernel manager (AsyncKernelManager, driven with ``run_sync`` from any thread)."""
    from jupyter_client.manager import AsyncKernelManager
    from jupyter_core.utils import run_sync

    import zmq

    # CurveZMQ keys when the kernel declares support: encrypted channels, and no
    # "running over TCP without encryption" warning from ipykernel on every task.
    km = AsyncKernelManager(kernel_name=kernel_name,
                            transport_encryption="auto" if zmq.has("curve") else "disabled")
    run_sync(km.start_kernel)(cwd=str(cwd))
    return km


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

    def __init__(self, startup_timeout: float = 60) -> None:
        self.startup_timeout = startup_timeout

    @contextmanager
    def kernel(self, kernel_name: str, cwd: Path) -> Iterator[Kernel]:
        km = start_kernel(kernel_name, cwd)
        try:
            yield Kernel(km)
        finally:
            stop_kernel(km)

    def prepare(self, kernel_names: Iterable[str]) -> None:
        """Nothing to do ahead of need."""

    def close(self) -> None:
        """Nothing left running."""
