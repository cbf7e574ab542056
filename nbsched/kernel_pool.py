"""``KernelPool``: kernels started and connected ahead of need, each used for one task only.

Starting a kernel, not the notebooks' work, dominates small pipelines. The pool keeps up to
``size`` kernels waiting, for the kernel names asked for, each started and seen answering, and
never more than the tasks that will still ask for them (``prepare`` says how many): no kernel is
started that no task will use (a one-task run gets one, whatever the workers). A
task takes one and connects its client in its own thread, the kernel's first answer being to a
silent ``os.chdir`` to the task's folder; it runs that one notebook and is shut down in the
background while a replacement starts: no state passes from task to task, as with a fresh
kernel per task. When nobody has asked for a kernel in ``idle`` seconds, the waiting kernels no
task will ask for are shut down.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from pathlib import Path

from nbsched.kernels import (
    Kernel,
    KernelKey,
    Launcher,
    connect,
    in_own_loop,
    is_alive,
    start_connected,
    stop_kernel,
)

log = logging.getLogger("nbsched.kernels")


class KernelPool:
    def __init__(
        self, size: int, *, idle: float = 30.0, startup_timeout: float = 60.0, launcher: Launcher | None = None
    ) -> None:
        self.size = max(1, size)
        self.launcher = launcher or Launcher()
        self.idle = idle
        self.startup_timeout = startup_timeout
        self._home = Path.cwd()  # where waiting kernels start; each moves to its task's folder
        self._cond = threading.Condition()
        # by kernel name and what the notebooks of its run import (KernelKey)
        self._ready: dict[KernelKey, list[Kernel]] = {}
        self._starting: dict[KernelKey, int] = {}
        self._wanted: dict[KernelKey, int] = {}  # tasks that will still ask
        self._failed: set[KernelKey] = set()  # whose start failed: started on demand only, where it fails loudly
        self._used_at = time.monotonic()
        self._closed = threading.Event()
        # starting and stopping kernels off the tasks' path, in threads of their own so a refill
        # never waits behind shutdowns; as many starts at once as there are workers (size - 1);
        # a graceful shutdown is mostly waiting (jupyter_client polls every 0.1 s), and with one
        # stopper they queued up faster than they ended (seen: 1 s left to wait at close)
        self._starter = ThreadPoolExecutor(max_workers=max(1, self.size - 1), thread_name_prefix="nbsched-kernel-start")
        self._stopper = ThreadPoolExecutor(max_workers=self.size, thread_name_prefix="nbsched-kernel-stop")
        self._drainer = threading.Thread(target=self._drain_when_idle, name="nbsched-kernel-idle", daemon=True)
        self._drainer.start()

    # -- the seam -------------------------------------------------------------------------------
    def prepare(self, kernels: Mapping[KernelKey, int]) -> None:
        """Tasks will ask for these kernels (name: how many tasks, all that will still ask; what
        was said before is replaced): start them now, ahead of need."""
        with self._cond:
            self._wanted = {name: count for name, count in kernels.items() if count > 0}
        for name in kernels:
            self._refill(name)

    @contextmanager
    def kernel(self, kernel_name: str, cwd: Path, imports: tuple[str, ...] = ()) -> Iterator[Kernel]:
        key = (kernel_name, imports)
        waiting = self._take_alive(key)
        self._refill(key)
        if waiting is None:  # none waiting: start one here, as FreshKernels would
            kernel = start_connected(self.launcher, kernel_name, cwd, self.startup_timeout, imports)
        else:  # its first answer is to a silent chdir to the task's folder, as if it had started there
            kernel = connect(waiting.km, self.startup_timeout, cwd=cwd)
        try:
            yield kernel
        finally:
            self._retire(kernel)

    def close(self) -> None:
        """Shut down the waiting kernels and wait for every shutdown begun."""
        self._closed.set()
        with self._cond:
            waiting = [k for kernels in self._ready.values() for k in kernels]
            self._ready.clear()
            self._cond.notify_all()
        for kernel in waiting:
            self._retire(kernel, used=False)
        self._starter.shutdown(wait=True)
        self._stopper.shutdown(wait=True)
        self.launcher.close()

    @property
    def waiting(self) -> dict[str, int]:
        """Kernels ready and waiting, by kernel name."""
        with self._cond:
            out: dict[str, int] = {}
            for (name, _), kernels in self._ready.items():
                if kernels:
                    out[name] = out.get(name, 0) + len(kernels)
            return out

    # -- inside ---------------------------------------------------------------------------------
    def _take_alive(self, name: KernelKey) -> Kernel | None:
        """A waiting kernel that is still there: one that died waiting (killed by the OOM killer,
        or by a task's notebook) is dropped rather than handed to a task, which would wait for
        its answer until the start-up timeout and fail without running a cell."""
        while (kernel := self._take(name)) is not None:
            if is_alive(kernel.km):
                return kernel
            log.warning(
                "kernel pool: a waiting %s kernel (pid %s) had exited; dropped",
                name[0],
                getattr(kernel.km.provisioner, "pid", "?"),
            )
            self._retire(kernel, used=False)
        return None

    def _take(self, name: KernelKey) -> Kernel | None:
        """A waiting kernel; if one is being started, wait for it rather than start another."""
        deadline = time.monotonic() + self.startup_timeout
        with self._cond:
            self._used_at = time.monotonic()
            self._wanted[name] = max(0, self._wanted.get(name, 0) - 1)  # a task asks: one fewer to come
            while not self._ready.get(name) and self._starting.get(name) and time.monotonic() < deadline:
                self._cond.wait(timeout=deadline - time.monotonic())
            ready = self._ready.get(name)
            return ready.pop(0) if ready else None

    def _refill(self, name: KernelKey) -> None:
        with self._cond:
            if self._closed.is_set() or name in self._failed:
                return
            total = sum(map(len, self._ready.values())) + sum(self._starting.values())
            mine = len(self._ready.get(name, ())) + self._starting.get(name, 0)
            wanted = min(self.size, self._wanted.get(name, 0))
            for _ in range(max(0, min(wanted - mine, self.size - total))):
                self._starting[name] = self._starting.get(name, 0) + 1
                self._starter.submit(in_own_loop, self._start_waiting, name)

    def _start_waiting(self, name: KernelKey) -> None:
        kernel = None
        try:
            if not self._closed.is_set():
                kernel = start_connected(self.launcher, name[0], self._home, self.startup_timeout, name[1])
                kernel.disconnect()  # the task connects its own, in its own thread
        except Exception as exc:  # noqa: BLE001 - a task asking for it will start it and report why
            log.warning("kernel pool: cannot start a %s kernel ahead of need: %s", name[0], exc)
            with self._cond:
                self._failed.add(name)
        with self._cond:
            self._starting[name] -= 1
            if kernel is not None and not self._closed.is_set():
                self._ready.setdefault(name, []).append(kernel)
                kernel = None
            self._cond.notify_all()
        if kernel is not None:
            self._retire(kernel, used=False)

    def _retire(self, kernel: Kernel, *, used: bool = True) -> None:
        """Shut it down off the tasks' path: gracefully if a task used it (its atexit handlers
        run), at once if it only waited."""
        kernel.disconnect()
        try:
            self._stopper.submit(in_own_loop, partial(stop_kernel, kernel.km, now=not used))
        except RuntimeError:  # the pool is closed: stop it here
            stop_kernel(kernel.km, now=not used)

    def _drain_when_idle(self) -> None:
        while not self._closed.wait(min(self.idle / 2, 5.0)):
            with self._cond:
                if time.monotonic() - self._used_at < self.idle:
                    continue
                idle = []  # the kernels no task will ask for (those of tasks still to come wait on)
                for name, kernels in self._ready.items():
                    keep = self._wanted.get(name, 0)
                    idle += kernels[keep:]
                    del kernels[keep:]
            if not idle:
                continue
            log.info("kernel pool: %d idle kernel(s) shut down", len(idle))
            for kernel in idle:
                self._retire(kernel, used=False)
