"""A fork server for IPython kernels: ipykernel imported once, a fresh kernel forked per task.

Starting a kernel costs about 0.55 s of CPU, half of it importing ipykernel, IPython, ZeroMQ and
tornado again in every new interpreter. The server is a process of the same Python that has done
those imports (and any ``preload`` modules) once, with no thread, ZeroMQ context or event loop
yet. For each kernel it forks: the child starts a new session, drops every inherited file
descriptor but 0-2, takes the environment, folder and arguments the kernel manager asked for
and runs ``ipykernel_launcher``'s own entry point. Each kernel is a new process with the
server's pristine memory (copy-on-write), so nothing one task does reaches another.

``ForkProvisioner`` plugs it into jupyter_client's provisioner seam: the kernel manager writes
the connection file and builds the command and environment as usual; only the process comes
from a fork instead of ``Popen``. Kernelspecs that are not this interpreter's ipykernel start
the usual way.

The server watches its children with pidfds (it reaps them and reports their exit status) and
its socket to the parent: when the parent goes away, it kills its kernels' process
groups and exits, silently. Each kernel also watches the parent itself, not the server: a kernel
is the server's child, so a notebook can kill the server (``os.kill(os.getppid(), 9)``); the
kernels it forked then carry on, watched by the parent, and die with the parent all the same.
"""

from __future__ import annotations

import gc
import json
import os
import select
import selectors
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from jupyter_client.provisioning.local_provisioner import LocalProvisioner

# what a started ipykernel has imported (checked against a ready kernel's sys.modules), none of
# which starts a thread at import
_KERNEL_MODULES = (
    "ipykernel.kernelapp",
    "ipykernel.ipkernel",
    "ipykernel.zmqshell",
    "ipykernel.comm",
    "ipykernel.eventloops",
    "ipykernel.debugger",
    "IPython.core.completer",
    "IPython.core.completerlib",
    "IPython.core.debugger",
    "IPython.core.oinspect",
    "IPython.core.logger",
    "IPython.extensions.storemagic",
    "sqlite3",
    "psutil",
    "tornado.queues",
    "tornado.platform.asyncio",
    "pydoc",
    "http.server",
    "xmlrpc.client",
)


# BLAS and OpenMP libraries (numpy's OpenBLAS, MKL, numexpr) start their thread pools as they
# load, and a process with threads must not fork: the server imports with these at 1, so none
# starts; each kernel gets the user's own values back, and its pools the sizes a kernel started
# the usual way has (measured once by a probe: see _usual_pools)
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")

# a new Python, with the user's environment, loads the thread pools' libraries the server's
# imports loaded (each reads its thread count from the environment as it loads) and says how
# many threads each has: {library's file: threads}
_PROBE = """import ctypes, json, sys
for path in sys.argv[1:]:
    ctypes.CDLL(path)
from threadpoolctl import threadpool_info
print(json.dumps({p["filepath"]: p["num_threads"] for p in threadpool_info()}))
"""


# -- the server process -------------------------------------------------------------------------
def serve(fd: int, preload: list[str]) -> None:
    """Run the server on socket ``fd`` (the parent's end of a socket pair)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent's Ctrl-C is the parent's to handle
    if sys.path and sys.path[0] in ("", os.getcwd()):
        del sys.path[0]  # as ipykernel_launcher does; the kernel puts '' back in its own folder
    sock = socket.socket(fileno=fd)
    parent = os.getppid()  # nbsched's process, which every kernel watches
    user_env = dict(os.environ)
    os.environ.update(dict.fromkeys(THREAD_VARS, "1"))
    before = dict(os.environ)
    try:
        import importlib

        for name in _KERNEL_MODULES:
            importlib.import_module(name)
        _threads_started_by("ipykernel")
        for name in preload:  # "?name": one a notebook imports (--kernel-preload auto), skipped if it fails here
            try:
                importlib.import_module(name.lstrip("?"))
            except Exception:
                if not name.startswith("?"):
                    raise
            _threads_started_by(name.lstrip("?"))
        pools = _usual_pools(user_env) if preload else {}
    except Exception as exc:  # noqa: BLE001 - told to the parent, which starts kernels the usual way
        _send(sock, {"error": f"{type(exc).__name__}: {exc}"})
        return
    # what the imports put in the environment (debugpy: PYDEVD_USE_FRAME_EVAL), as they would
    # have in a kernel's own environment
    set_by_imports = {k: v for k, v in os.environ.items() if before.get(k) != v}
    # what is loaded now moves to the collector's permanent generation, which no collection in a
    # kernel walks: a walk would write to (and so copy) every page of the server's memory the
    # kernel shares, a cost that grows with what was preloaded (as gc.freeze's documentation
    # advises for a process that forks workers)
    gc.collect()
    gc.freeze()
    _send(sock, {"ready": os.getpid()})

    children: dict[int, int] = {}  # pidfd -> pid
    try:
        _serve_forks(sock, parent, set_by_imports, children, pools)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the parent went away while it was being told something (kill -9): as below
    # the parent is gone: so are its kernels (they would notice, this is at once)
    for pid in children.values():
        _killpg(pid)


def _threads_started_by(name: str) -> None:
    """Refuse to serve once importing ``name`` left a thread running (one beside the main)."""
    threads = len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else 1
    if threads > 1:
        raise RuntimeError(
            f"importing {name} started {threads - 1} thread(s); forking a process with threads is not safe"
        )


def _usual_pools(user_env: dict[str, str]) -> dict[str, Any]:
    """The thread pools the server's imports loaded (BLAS, OpenMP), each with the threads a kernel
    started the usual way gets: ``{library's file: (threadpoolctl's controller of it here,
    threads)}``, the threads measured by a probe with the user's environment."""
    from threadpoolctl import ThreadpoolController  # found here once, not in every kernel

    controllers = ThreadpoolController().lib_controllers
    if not controllers:
        return {}
    paths = sorted({c.filepath for c in controllers})
    probe = subprocess.run(
        [sys.executable, "-c", _PROBE, *paths], env=user_env, capture_output=True, text=True, timeout=60
    )
    if probe.returncode != 0:
        lines = probe.stderr.strip().splitlines()
        raise RuntimeError(f"the thread pools could not be measured: {lines[-1] if lines else probe.returncode}")
    usual: dict[str, int] = json.loads(probe.stdout)
    return {c.filepath: (c, usual[c.filepath]) for c in controllers if c.filepath in usual}


def _serve_forks(
    sock: socket.socket,
    parent: int,
    set_by_imports: dict[str, str],
    children: dict[int, int],
    pools: dict[str, Any],
) -> None:
    """Fork a kernel for each request, report each one's exit; return when the parent is gone."""
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ)
    buf = b""
    while True:
        for key, _ in sel.select():
            if key.fileobj is sock:
                data = sock.recv(1 << 16)
                if not data:
                    return
                buf += data
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    request = json.loads(line)
                    try:
                        pid = os.fork()
                    except OSError as exc:  # out of memory or processes: this kernel fails, not the others
                        _send(sock, {"id": request["id"], "error": f"cannot fork a kernel: {exc}"})
                        continue
                    if pid == 0:
                        _run_kernel(request, set_by_imports, parent, pools)  # never returns
                    pidfd = os.pidfd_open(pid)
                    children[pidfd] = pid
                    sel.register(pidfd, selectors.EVENT_READ)
                    _send(sock, {"id": request["id"], "pid": pid})
            else:
                pidfd = key.fd
                pid = children.pop(pidfd)
                sel.unregister(pidfd)
                os.close(pidfd)
                _, status = os.waitpid(pid, 0)
                _send(sock, {"exit": pid, "code": os.waitstatus_to_exitcode(status)})


def _run_kernel(request: dict[str, Any], set_by_imports: dict[str, str], parent: int, pools: dict[str, Any]) -> None:
    """In the forked child: become the kernel the manager asked for, then exit."""
    code: Any = 1
    try:
        os.setsid()  # its own process group, as a kernel started by jupyter_client has
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for fd in map(int, os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else ():
            if fd > 2:
                try:
                    os.close(fd)  # the server's socket, selector and other children's pidfds
                except OSError:
                    pass
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update({**set_by_imports, **request["env"]})  # the user's THREAD_VARS, not the server's
        for controller, threads in pools.values():
            if controller.num_threads != threads:
                controller.set_num_threads(threads)
        _reseed()
        _inline_figures()
        _die_with(parent)
        import ipykernel_launcher
        from ipykernel import kernelapp

        # ipykernel's own watch of its parent (the server; the class read JPY_PARENT_PID when the
        # server imported it) is off, as for a parent that never exits (1, init: 0 would also print
        # the connection details): the kernel watches nbsched's process instead (_die_with)
        sys.argv = [ipykernel_launcher.__file__, *request["argv"], "--IPKernelApp.parent_handle=1"]
        kernelapp.launch_new_instance()
        # ipykernel's exit (an atexit function) closes IOPub before it stops the control thread,
        # which may still be sending the shutdown request's last "idle" status: it printed a
        # traceback ("Socket operation on non-socket") into the log nbsched's process keeps.
        # The control loop stops once that request is done: wait for it first.
        control = kernelapp.IPKernelApp.instance().control_thread
        if control is not None:
            control.join(timeout=2)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - the kernel's own crash, shown as a kernel's would be
        import traceback

        traceback.print_exc()
        sys.stderr.flush()
        # and no exit functions: ipykernel's would wait forever in zmq's Context.term() for the
        # sockets a kernel that failed to start left open (seen: a port taken as it bound one)
        os._exit(1)
    finally:
        try:
            import atexit

            atexit._run_exitfuncs()  # IPython's history and the kernel's own clean-up
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _die_with(parent: int) -> None:
    """In a kernel: kill its process group (it, and what it started) when nbsched's process
    exits, whether or not the fork server is still there to do it."""
    try:
        pidfd = os.pidfd_open(parent)  # close-on-exec: not passed to what the kernel starts
    except ProcessLookupError:
        _killpg(os.getpid())
        raise

    def watch() -> None:
        select.select([pidfd], [], [])
        _killpg(os.getpid())

    threading.Thread(target=watch, name="nbsched-parent-watch", daemon=True).start()


def _reseed() -> None:
    """Random state copied from the server would repeat in every kernel. ``random`` reseeds
    itself after a fork; numpy's legacy global generator, if preloaded, does not."""
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()


def _inline_figures() -> None:
    """Matplotlib, if preloaded, chose its backend when the server imported it, before ipykernel
    sets ``MPLBACKEND`` to the inline one (and before the user's own was back): chosen again, as
    a kernel started the usual way does, so that figures still appear in the notebook."""
    matplotlib = sys.modules.get("matplotlib")
    if matplotlib is not None:
        matplotlib.rcParams["backend"] = os.environ.get("MPLBACKEND") or "module://matplotlib_inline.backend_inline"


def _killpg(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _send(sock: socket.socket, message: dict[str, Any]) -> None:
    sock.sendall(json.dumps(message).encode() + b"\n")


# -- the parent's side --------------------------------------------------------------------------
class ForkServerError(RuntimeError):
    pass


class ForkedProcess:
    """A forked kernel as jupyter_client sees a ``Popen``: pid, poll, wait, signals. One that
    outlived its server exits with an unknown status (only a parent learns it): 1 here."""

    stdin = stdout = stderr = None

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._exited = threading.Event()

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._exited.wait(timeout):
            raise subprocess.TimeoutExpired(f"kernel {self.pid}", timeout or 0)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def _exit(self, code: int) -> None:
        self.returncode = code
        self._exited.set()


class ForkServer:
    """Starts the server process and asks it for kernels, from any thread."""

    def __init__(self, preload: list[str] | tuple[str, ...] = ()) -> None:
        if not hasattr(os, "pidfd_open") or not os.path.isdir("/proc/self/fd"):
            raise ForkServerError("it needs Linux (pidfd_open, /proc)")
        self.preload = list(preload)
        self._lock = threading.Lock()
        self._cond = threading.Condition()
        self._replies: dict[int, dict[str, Any]] = {}
        self._live: dict[int, ForkedProcess] = {}
        self._early: dict[int, dict[str, Any]] = {}  # exits reported before their pid's reply was read
        self._next = 0
        self._closed = False
        mine, theirs = socket.socketpair()
        code = "import sys; from nbsched.fork_server import serve; serve(int(sys.argv[1]), sys.argv[2:])"
        self.process = subprocess.Popen(
            [sys.executable, "-c", code, str(theirs.fileno()), *self.preload],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            # debugpy's import warns about frozen modules unless told not to check
            env={**os.environ, "PYDEVD_DISABLE_FILE_VALIDATION": "1"},
        )
        theirs.close()
        self._sock = mine
        self._file = mine.makefile("rb")
        first = self._file.readline()
        hello = json.loads(first) if first else {"error": "the fork server exited at start"}
        if "error" in hello:
            self._file.close()
            self.close()
            raise ForkServerError(hello["error"])
        self._reader = threading.Thread(target=self._read, name="nbsched-fork-server", daemon=True)
        self._reader.start()

    def spawn(self, argv: list[str], cwd: str, env: dict[str, str]) -> ForkedProcess:
        with self._cond:
            if self._closed:
                raise ForkServerError("the fork server is closed")
            self._next += 1
            ident = self._next
        try:
            with self._lock:
                _send(self._sock, {"id": ident, "argv": argv, "cwd": cwd, "env": env})
        except OSError:  # killed, and this process has not read its end yet
            raise ForkServerError("the fork server went away") from None
        with self._cond:
            while ident not in self._replies and not self._closed:
                self._cond.wait()
            if ident not in self._replies:
                raise ForkServerError("the fork server went away")
            reply = self._replies.pop(ident)
            if "error" in reply:
                raise ForkServerError(reply["error"])
            pid = reply["pid"]
            if self._closed:  # set by the reader thread while this one waited
                # forked, but the server went away before it could be watched here
                _killpg(pid)  # type: ignore[unreachable] # (mypy: self._closed narrowed above) its group, if it has one yet
                ForkedProcess(pid).kill()
                raise ForkServerError("the fork server went away")
            process = self._live[pid] = ForkedProcess(pid)
            early = self._early.pop(pid, None)
        if early is not None:
            self._exited(early)
        return process

    @property
    def alive(self) -> bool:
        with self._cond:
            return not self._closed

    def close(self) -> None:
        """Stop the server; it kills the kernels still running."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def _read(self) -> None:
        try:
            for line in self._file:
                message = json.loads(line)
                if "exit" in message:
                    self._exited(message)
                else:
                    with self._cond:
                        self._replies[message["id"]] = message
                        self._cond.notify_all()
        except (OSError, ValueError):
            pass
        self._file.close()  # the socket's last reference: its descriptor is released now, not by the GC
        # the server is gone: closed (it killed its kernels) or killed (they carry on; a task's
        # notebook may have done it, and the others must not fail for it); watched here now
        with self._cond:
            self._closed = True  # from now on, spawn() registers no kernel (see there)
            orphans = list(self._live.values())
            self._cond.notify_all()
        self._watch_orphans(orphans)

    def _watch_orphans(self, orphans: list[ForkedProcess]) -> None:
        with selectors.DefaultSelector() as sel:
            for process in orphans:
                try:
                    sel.register(os.pidfd_open(process.pid), selectors.EVENT_READ, process)
                except ProcessLookupError:
                    self._exited({"exit": process.pid, "code": 1})
            while sel.get_map():
                for key, _ in sel.select():
                    sel.unregister(key.fd)
                    os.close(key.fd)
                    self._exited({"exit": key.data.pid, "code": 1})

    def _exited(self, message: dict[str, Any]) -> None:
        with self._cond:
            process = self._live.pop(message["exit"], None)
            if process is None:
                self._early[message["exit"]] = message
                return
        process._exit(message["code"])


def forks(cmd: list[str]) -> bool:
    """Whether a fork of this interpreter can be the kernel this command would start: a
    manager's formatted ``python -m ipykernel_launcher ...`` with this very Python."""
    if len(cmd) < 3 or cmd[1] != "-m" or cmd[2] not in ("ipykernel_launcher", "ipykernel"):
        return False
    try:
        return Path(cmd[0]).resolve() == Path(sys.executable).resolve()
    except OSError:
        return False


class ForkProvisioner(LocalProvisioner):
    """jupyter_client's local provisioner, with the kernel process forked by a ``ForkServer``."""

    server: ForkServer | None = None  # set by whoever makes the provisioner

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> Any:
        assert self.server is not None
        if not forks(cmd):
            return await super().launch_kernel(cmd, **kwargs)
        env = dict(kwargs.get("env") or os.environ)
        cwd = str(kwargs.get("cwd") or Path.cwd())
        process = self.server.spawn(cmd[3:], cwd, env)
        self.process = process  # type: ignore[assignment] # a ForkedProcess stands in for the Popen
        self.pid = self.pgid = process.pid
        self.cwd = cwd
        return self.connection_info
