"""Where a task gets its kernel: the one seam for how kernels are started and stopped.

Every task runs in a kernel of its own. ``FreshKernels`` starts one when a task starts;
``KernelPool`` (``kernel_pool.py``) has them started ahead of need. Both give ``kernel(name,
cwd)``: a context manager yielding a ``Kernel`` with its client connected, and both start
kernels through a ``Launcher``: the usual way, or forked from a fork server (``fork_server.py``).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from nbsched.states import StopReason

if TYPE_CHECKING:  # jupyter_client costs a tenth of a second to import: only where kernels start
    from jupyter_client.asynchronous.client import AsyncKernelClient
    from jupyter_client.manager import AsyncKernelManager

    from nbsched.fork_server import ForkServer

log = logging.getLogger("nbsched.kernels")

T = TypeVar("T")


class KernelHandle:
    """Lets another thread stop the kernel of a running task (timeout, cancel)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pgid: int | None = None
        self.stop_reason: StopReason | None = None
        self.stop_message = ""  # the reason as shown: "timed out after 2m"
        self.cell_index: int | None = None  # of the code cell executing now, in the output notebook
        self.cell_source: str = ""
        self.cell_numbers: list[int | None] = []  # each output cell's number in the user's notebook
        self.cell_count: int = 0  # cells of the user's notebook
        self.cell_error: tuple[str, str] | None = None  # (ename, evalue) the kernel replied for a failed cell

    def attach(self, km: AsyncKernelManager) -> None:
        provisioner = getattr(km, "provisioner", None)
        with self._lock:
            self._pgid = getattr(provisioner, "pgid", None) or getattr(provisioner, "pid", None)
            if self.stop_reason is not None:
                self._kill()

    def stop(self, reason: StopReason, message: str | None = None) -> None:
        """Kill the kernel (and anything it spawned) now; the first reason given wins.
        ``message``: the reason as shown, when the reason's own word says too little."""
        with self._lock:
            if self.stop_reason is None:
                self.stop_reason, self.stop_message = reason, message or reason.value
            self._kill()

    def cell_started(self, cell: Any, cell_index: int, **_: Any) -> None:
        if cell.get("cell_type") != "code" or not cell.get("source", "").strip():
            return  # nbclient announces markdown and empty cells too; they take no time
        self.cell_index = cell_index
        self.cell_source = cell.get("source", "")

    def cell_failed(self, execute_reply: dict[str, Any], **_: Any) -> None:
        content = execute_reply.get("content") or {}
        self.cell_error = (str(content.get("ename") or ""), str(content.get("evalue") or ""))

    def _kill(self) -> None:
        if self._pgid is None:
            return
        try:
            os.killpg(self._pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


@dataclass
class Kernel:
    """A kernel for one task: its manager, and a client connected and seen answering, in the
    thread that will use it (None only while a pooled kernel waits)."""

    km: AsyncKernelManager
    kc: AsyncKernelClient | None = None

    def disconnect(self) -> None:
        """Close the client (its sockets belong to the thread that connected it); the kernel runs on."""
        if self.kc is not None:
            self.kc.stop_channels()
            self.kc = None


KernelKey = tuple[str, tuple[str, ...]]  # a kernel's name, and what the notebooks of its run import


class KernelSource(Protocol):
    """Where a task gets its kernel: ``FreshKernels``, or ``KernelPool`` (kernels started ahead of need)."""

    def kernel(self, kernel_name: str, cwd: Path, imports: tuple[str, ...] = ()) -> AbstractContextManager[Kernel]:
        """A kernel for one task, its client connected; shut down when the task is done.
        ``imports``: what the notebooks of its run import (see ``Launcher``)."""

    def prepare(self, kernels: Mapping[KernelKey, int]) -> None:
        """The tasks still to run will ask for these kernels (name and imports: how many)."""

    def close(self) -> None:
        """Shut down every kernel it started."""


def start_kernel(kernel_name: str, cwd: Path, server: ForkServer | None = None) -> AsyncKernelManager:
    """A started kernel manager (AsyncKernelManager, driven with ``run_sync`` from any thread);
    its process forked by ``server`` (a ``ForkServer``) when it is this Python's ipykernel."""
    import uuid

    import zmq
    from jupyter_client.manager import AsyncKernelManager
    from jupyter_core.utils import run_sync

    kernel_id = str(uuid.uuid4())
    ipc = _ipc_prefix(kernel_id)
    # Channels over Unix sockets named by the kernel (ipykernel's advice): no TCP port to choose,
    # so none another process can take between jupyter_client choosing it and the kernel binding
    # it (two daemons starting kernels at once met that: a kernel whose heartbeat could not bind);
    # the runtime folder is the user's own. Where a socket's path would be too long: TCP, with
    # CurveZMQ keys when the kernel declares support (encrypted, and no "running over TCP without
    # encryption" warning from ipykernel on every task).
    # The clients' one context (a manager's own default is a new one per kernel: two ZeroMQ threads
    # and a handful of descriptors while the kernel lives, which made a daemon's threads and
    # descriptors swing with how many kernels its pool held at that moment).
    km = AsyncKernelManager(
        kernel_name=kernel_name,
        kernel_id=kernel_id,
        **({"transport": "ipc", "ip": ipc} if ipc else {}),
        transport_encryption="auto" if zmq.has("curve") and not ipc else "disabled",
        context=_client_context(),
    )
    if server is not None:
        from nbsched.fork_server import ForkProvisioner

        km.provisioner = ForkProvisioner(kernel_id=km.kernel_id, kernel_spec=km.kernel_spec, parent=km)
        km.provisioner.server = server
    try:
        run_sync(km.start_kernel)(cwd=str(cwd))
    except BaseException:
        # it may fail after the process was launched (jupyter_client read back a connection file
        # the kernel was rewriting: empty, seen under load): that process must not be left running
        _discard(km)
        raise
    return km


# a Unix socket's path has at most 107 bytes on Linux (103 on macOS); the prefix gets "-1" .. "-5"
_MAX_SOCKET_PATH = 100


def _ipc_prefix(kernel_id: str) -> str | None:
    """Where a kernel's channels are Unix sockets (``PREFIX-1`` ... ``-5``, removed when it shuts
    down): Jupyter's runtime folder; None on Windows, or where that path would be too long."""
    if os.name != "posix":
        return None
    from jupyter_core.paths import jupyter_runtime_dir

    folder = jupyter_runtime_dir()
    prefix = os.path.join(folder, f"nbsched-{kernel_id}")
    if len(os.fsencode(prefix)) + 3 > _MAX_SOCKET_PATH:
        return None
    os.makedirs(folder, mode=0o700, exist_ok=True)
    return prefix


def sweep_sockets() -> int:
    """Remove the channel sockets of kernels that are gone without their manager's clean-up (a
    ``kill -9`` of nbsched): each kernel's shell socket is tried, and one nobody listens on any
    more is stale, with its four siblings. Returns how many kernels' sockets it removed."""
    import socket

    from jupyter_core.paths import jupyter_runtime_dir

    folder = Path(jupyter_runtime_dir())
    swept = 0
    for shell in sorted(folder.glob("nbsched-*-1"))[:_MAX_SWEEP]:
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(str(shell))
                continue  # a live kernel
            except ConnectionRefusedError:
                pass
            except OSError:
                continue  # not ours to judge (not a socket, no permission)
        prefix = str(shell)[:-2]
        for channel in range(1, 6):
            Path(f"{prefix}-{channel}").unlink(missing_ok=True)
        swept += 1
    if swept:
        log.info("removed the sockets of %d kernel(s) that ended without clean-up", swept)
    return swept


_MAX_SWEEP = 10_000  # kernels' sockets looked at in one sweep


def _discard(km: AsyncKernelManager) -> None:
    from jupyter_core.utils import run_sync

    try:
        if km.has_kernel:
            run_sync(km.shutdown_kernel)(now=True)
        else:
            run_sync(km.cleanup_resources)()
    except Exception as exc:  # noqa: BLE001 - the start's own error is the one to report
        log.warning("a kernel whose start failed could not be stopped: %s", exc)


# ``--kernel-preload`` words: ``auto`` (the default) preloads what the notebooks of a run import,
# ``none`` only the modules named
AUTO, NONE = "auto", "none"
MAX_SERVERS = 8  # fork servers of one launcher, one per preload set; past that, kernels of new sets share one


class Launcher:
    """Starts kernels the usual way, or (``fork=True``) forked from a fork server that has
    ipykernel imported (``fork_server.py``): about 0.04 s of CPU a kernel instead of 0.3 s.
    ``preload``: modules every server imports too, and ``auto`` (the default, unless ``none``
    is given) for the modules the notebooks of a kernel's run import (``start``'s ``imports``):
    a server per set of them, kept for the runs after. A server starts on first use; if it
    cannot, kernels of its set start the usual way and the reason is logged once."""

    def __init__(self, fork: bool = False, preload: Iterable[str] = ()) -> None:
        self.fork = fork
        words = tuple(preload)
        self.auto = NONE not in words
        self.preload = tuple(m for m in words if m not in (AUTO, NONE))
        self._lock = threading.Lock()
        self._servers: dict[tuple[str, ...], ForkServer] = {}
        self._failed: set[tuple[str, ...]] = set()  # sets whose server could not start: the usual way
        self._closed = False
        self._swept = False

    def _sweep(self) -> None:
        """Once, before its first kernel: what killed nbsched processes left (``sweep_sockets``)."""
        with self._lock:
            if self._swept:
                return
            self._swept = True
        if os.name == "posix":
            try:
                sweep_sockets()
            except OSError as exc:
                log.warning("the sockets of kernels gone without clean-up could not be removed: %s", exc)

    def start(self, kernel_name: str, cwd: Path, imports: Iterable[str] = ()) -> AsyncKernelManager:
        """A started kernel; ``imports``: what the notebooks of its run import (preloaded with ``auto``)."""
        self._sweep()
        key = self._key(imports)
        server = self._fork_server(key)
        if server is None:
            return start_kernel(kernel_name, cwd)
        from nbsched.fork_server import ForkServerError

        try:
            return start_kernel(kernel_name, cwd, server)
        except ForkServerError as exc:
            if not server.alive:  # it went away as it was asked: once more, with a new one
                return start_kernel(kernel_name, cwd, self._fork_server(key))
            log.warning("%s; starting this kernel the usual way", exc)
            return start_kernel(kernel_name, cwd)

    def close(self) -> None:
        with self._lock:
            servers, self._servers = list(self._servers.values()), {}
            self._closed = True  # no new server once closed
        for server in servers:
            server.close()

    def _key(self, imports: Iterable[str]) -> tuple[str, ...]:
        """A server's preload: the modules named, then (with ``auto``) those the notebooks import,
        sorted, marked "?" (a server skips one of those that fails to import)."""
        named = set(self.preload)
        found = sorted({f"?{m}" for m in imports if m not in named}) if self.auto else []
        return (*self.preload, *found)

    def _fork_server(self, key: tuple[str, ...]) -> ForkServer | None:
        if not self.fork:
            return None
        with self._lock:
            if len(self._servers) >= MAX_SERVERS and key not in self._servers:
                key = self.preload  # enough servers: the named modules only
            server = self._servers.get(key)
            if server is not None and not server.alive:  # killed (OOM?): a new one
                log.warning("the kernels' fork server (pid %d) has exited; starting another", server.process.pid)
                server.close()
                del self._servers[key]
                server = None
            if server is None and not self._closed and key not in self._failed:
                from nbsched.fork_server import ForkServer, ForkServerError

                try:
                    server = self._servers[key] = ForkServer(key)
                except (ForkServerError, OSError) as exc:
                    self._failed.add(key)
                    log.warning("kernels start the usual way: the fork server cannot start: %s", exc)
            return server


def is_alive(km: AsyncKernelManager) -> bool:
    from jupyter_core.utils import run_sync

    return bool(run_sync(km.is_alive)())


def stop_kernel(km: AsyncKernelManager, *, now: bool = False) -> None:
    """Shut a kernel down gracefully (``now``: kill it, for one that never ran a task's code);
    its clients' channels must be stopped first (with them open, a graceful shutdown can wait
    seconds for a reply that never comes)."""
    from jupyter_core.utils import run_sync

    if is_alive(km):
        run_sync(km.shutdown_kernel)(now=now)
    else:
        run_sync(km.cleanup_resources)()


class KernelExited(RuntimeError):
    """The kernel's process ended before it answered (it could not start)."""


# Starts of a kernel that fails to start: once more, as a start can fail for a reason of the
# moment (a port of its connection file taken by another process between jupyter_client choosing
# it and the kernel binding it, seen with three daemons starting kernels at once; the connection
# file read back while the kernel rewrote it, seen under load). One that does not answer in time
# is not started again: that took the whole start-up timeout already.
START_ATTEMPTS = 2


def start_connected(
    launcher: Launcher, kernel_name: str, cwd: Path, timeout: float, imports: Iterable[str] = ()
) -> Kernel:
    """A new kernel, started by ``launcher`` and connected (see :func:`connect`); one that
    fails as it starts (it exits, its start raises) is started again, with new ports."""
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            return connect(launcher.start(kernel_name, cwd, imports), timeout)
        except TimeoutError:
            raise
        except (KernelExited, OSError, ValueError, RuntimeError) as exc:
            if attempt == START_ATTEMPTS or isinstance(exc, FileNotFoundError):
                raise
            log.info("a %s kernel exited as it started; starting another (%s)", kernel_name, exc)
    raise AssertionError("unreachable")


def connect(km: AsyncKernelManager, timeout: float, *, cwd: Path | None = None) -> Kernel:
    """A client with its channels open and the kernel seen answering: ready once the kernel's
    reply and its idle status (so IOPub is subscribed) are in, without ``wait_for_ready``'s fixed
    0.2 s wait for stray IOPub messages. ``cwd``: the request answered is a silent move to that
    folder (no execution count, no history, no output), else ``kernel_info``. Call it in the
    thread that uses the client: a ZeroMQ asyncio socket is watched by the event loop of that
    thread (one connected in another thread missed wake-ups, up to 1 s a cell, seen)."""
    from jupyter_core.utils import run_sync

    kc = km.client(context=_client_context())
    # no heartbeat channel: the client asks its manager whether the kernel lives (nbclient's
    # check). And jupyter_client's heartbeat thread, stopped before it has set itself running
    # (a pooled kernel's client is stopped right after it connects; a busy process starts the
    # thread late), loops making a socket and dropping it, as fast as it can, until the ZeroMQ
    # context runs out of sockets: "Too many open files" for every client of the context.
    kc.start_channels(hb=False)
    try:
        run_sync(_answered)(km, kc, timeout, _chdir_code(cwd) if cwd else None)
    except BaseException:
        kc.stop_channels()
        stop_kernel(km)
        raise
    return Kernel(km, kc)


async def _answered(km: AsyncKernelManager, kc: AsyncKernelClient, timeout: float, code: str | None) -> None:
    deadline = time.monotonic() + timeout
    # the SUB socket may join after the kernel's first status: ask again until IOPub brings one
    while True:
        if code is None:
            msg_id = kc.kernel_info()
        else:
            msg_id = kc.execute(code, silent=True, store_history=False, allow_stdin=False)
        reply = await _reply(kc.shell_channel, msg_id, deadline, km=km)
        if reply["content"].get("status", "ok") != "ok":
            raise RuntimeError(f"the kernel cannot move to the task's folder: {reply['content'].get('evalue')}")
        try:
            await _reply(kc.iopub_channel, msg_id, min(deadline, time.monotonic() + 0.05), idle=True)
            return
        except TimeoutError:
            if time.monotonic() > deadline:
                raise


async def _reply(
    channel: Any, msg_id: str, deadline: float, *, idle: bool = False, km: AsyncKernelManager | None = None
) -> dict[str, Any]:
    """The message answering ``msg_id`` on ``channel``; with ``km``, a kernel whose process has
    ended is seen within half a second rather than at the deadline."""
    from queue import Empty

    while True:
        left = max(0.0, deadline - time.monotonic())
        try:
            msg: dict[str, Any] = await channel.get_msg(timeout=min(left, 0.5) if km is not None else left)
        except Empty:
            if time.monotonic() >= deadline:
                raise TimeoutError("the kernel did not answer") from None
            if km is not None and not await km.is_alive():
                raise KernelExited("the kernel exited as it started") from None
            continue
        if msg["parent_header"].get("msg_id") == msg_id and (
            not idle or msg["content"].get("execution_state") == "idle"
        ):
            return msg


def _chdir_code(cwd: Path) -> str:
    return f"import os as __nbsched_os\n__nbsched_os.chdir({os.fspath(cwd)!r})\ndel __nbsched_os"


def in_own_loop(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a worker thread, then close the event loop jupyter_core's ``run_sync``
    made for the thread. Left open, a finished thread's loop is closed by the garbage collector,
    which may have finalized its self-pipe socket first: "Exception ignored in BaseEventLoop.__del__
    ... Invalid file descriptor: -1" on stderr (seen as ``nbsched run`` exited after a SIGTERM)."""
    import asyncio

    try:
        return fn(*args)
    finally:
        try:
            loop = asyncio.get_event_loop_policy().get_event_loop()
        except RuntimeError:  # none was made here
            loop = None
        if loop is not None and not loop.is_running() and not loop.is_closed():
            loop.close()
        asyncio.set_event_loop(None)


_context: Any = None
_context_lock = threading.Lock()


def _client_context() -> Any:
    """One ZeroMQ context for nbsched's kernel clients (a client's own default is a new context,
    with its own I/O thread, per client), retrying a refused connection after 10 ms rather than
    ZeroMQ's 100 ms: a client connecting as its kernel starts is refused until the kernel has
    bound its ports, and IOPub then joined 0.2 s late, more than the kernel took to start."""
    global _context
    import zmq
    import zmq.asyncio

    with _context_lock:
        if _context is None:
            _context = zmq.asyncio.Context()
            _context.setsockopt(zmq.RECONNECT_IVL, 10)
        return _context


class FreshKernels:
    """A new kernel for each task, started when the task starts, shut down once it is done."""

    def __init__(self, startup_timeout: float = 60, launcher: Launcher | None = None) -> None:
        self.startup_timeout = startup_timeout
        self.launcher = launcher or Launcher()

    @contextmanager
    def kernel(self, kernel_name: str, cwd: Path, imports: tuple[str, ...] = ()) -> Iterator[Kernel]:
        kernel = start_connected(self.launcher, kernel_name, cwd, self.startup_timeout, imports)
        try:
            yield kernel
        finally:
            kernel.disconnect()
            stop_kernel(kernel.km)

    def prepare(self, kernels: Mapping[KernelKey, int]) -> None:
        """Nothing to do ahead of need."""

    def close(self) -> None:
        self.launcher.close()
