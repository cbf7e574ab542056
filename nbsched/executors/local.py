"""``LocalExecutor``: N worker threads on this machine, each task in a kernel of its own.

Threads suffice: the work happens in the kernel processes, and a thread can stop its
kernel from outside, which a timeout or a cancel needs. Kernels are started when the task
starts, or, with ``pool=True``, come from a ``KernelPool`` (started ahead of need, still one
per task).
"""

from __future__ import annotations

import os
import queue
import resource
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor

from nbsched.executors.base import Executor, Message, TaskAttempt
from nbsched.kernel_pool import KernelPool
from nbsched.kernels import FreshKernels, KernelHandle, KernelKey, KernelSource, Launcher, in_own_loop
from nbsched.notebook import TaskOutcome, TaskRequest, execute_task, import_engine
from nbsched.workers import FILES_BESIDES, FILES_PER_WORKER, max_workers


def _allow_open_files(workers: int) -> None:
    """Raise the soft limit on open files (often 1024) as far as ``workers`` need."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = FILES_BESIDES + workers * FILES_PER_WORKER
    if soft != resource.RLIM_INFINITY and soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need if hard == resource.RLIM_INFINITY else min(need, hard), hard))


class LocalExecutor(Executor):
    def __init__(
        self,
        workers: int | None = None,
        kernels: KernelSource | None = None,
        *,
        pool: bool = False,
        fork: bool = False,
        preload: tuple[str, ...] = (),
    ) -> None:
        # the count is checked where it is set (Config); the default, the cores, within bounds too
        self.workers = workers or min(os.cpu_count() or 1, max_workers()[0])
        _allow_open_files(self.workers)
        import_engine()  # before any of the threads below imports it
        launcher = Launcher(fork, preload)
        # a kernel waiting for each worker, and one for the task after
        self.kernels: KernelSource = kernels or (
            KernelPool(self.workers + 1, launcher=launcher) if pool else FreshKernels(launcher=launcher)
        )
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="nbsched-task")

    def _spawn(
        self,
        fn: Callable[[TaskAttempt, queue.Queue[Message]], None],
        attempt: TaskAttempt,
        events: queue.Queue[Message],
    ) -> None:
        self._pool.submit(in_own_loop, fn, attempt, events)

    def execute(self, request: TaskRequest, handle: KernelHandle) -> TaskOutcome:
        return execute_task(request, handle, self.kernels)

    def prepare(self, kernels: Mapping[KernelKey, int]) -> None:
        self.kernels.prepare(kernels)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)
        self.kernels.close()
