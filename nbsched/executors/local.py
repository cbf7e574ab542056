"""``LocalExecutor``: N worker threads on this machine, each task in a kernel of its own.

Threads suffice: the work happens in the kernel processes, and a thread can stop its
kernel from outside, which a timeout or a cancel needs. Kernels are started when the task
starts, or, with ``pool=True``, come from a ``KernelPool`` (started ahead of need, still one
per task).
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

from nbsched.executors.base import Executor
from nbsched.kernel_pool import KernelPool
from nbsched.kernels import FreshKernels, KernelHandle, Launcher, in_own_loop
from nbsched.notebook import TaskOutcome, TaskRequest, execute_task, import_engine


class LocalExecutor(Executor):
    def __init__(self, workers: int | None = None, kernels: Any = None, *, pool: bool = False,
                 fork: bool = False, preload: tuple[str, ...] = ()) -> None:
        self.workers = workers or os.cpu_count() or 1
        import_engine()  # before any of the threads below imports it
        launcher = Launcher(fork, preload)
        # a kernel waiting for each worker, and one for the task after
        self.kernels = kernels or (KernelPool(self.workers + 1, launcher=launcher) if pool
                                   else FreshKernels(launcher=launcher))
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="nbsched-task")

    def _spawn(self, fn: Callable[..., None], *args: Any) -> Future[Any]:
        return self._pool.submit(in_own_loop, fn, *args)

    def execute(self, request: TaskRequest, handle: KernelHandle) -> TaskOutcome:
        return execute_task(request, handle, self.kernels)

    def prepare(self, kernel_names: set[str]) -> None:
        self.kernels.prepare(kernel_names)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)
        self.kernels.close()
