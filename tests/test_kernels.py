"""Where a task's kernel comes from: fresh, pooled, forked. Every way, each task gets a kernel
that no other task has touched, and that looks like a kernel jupyter_client started itself."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import wait_for, write_notebook, write_yaml

import nbsched.kernels
from nbsched.notebook import read_recorded
from nbsched.service import Config, Service
from nbsched.states import RunState

pytestmark = pytest.mark.kernel

MODES = {
    "fresh": {"kernel_pool": False, "kernel_fork": False},
    "pool": {"kernel_pool": True, "kernel_fork": False},
    "fork": {"kernel_pool": False, "kernel_fork": True},
    "pool+fork": {"kernel_pool": True, "kernel_fork": True},  # the default
}

# each task looks for what the one before left, then leaves the same behind: a variable, an
# import of a module of its own, a changed attribute of a module every kernel has loaded (the
# fork server has it in memory), a changed folder, and a random number
PROBE = """\
import os, sys, random, string, nbsched
nbsched.record('seen', {
    'variable': 'leftover' in globals(),
    'import': 'json' in globals() or 'probe_helper' in sys.modules,
    'module_state': hasattr(string, 'nbsched_leftover'),
    'cwd': os.getcwd(),
})
nbsched.record('random', random.random())
nbsched.record('pid', os.getpid())
leftover = 1
import json, probe_helper
string.nbsched_leftover = 1
os.chdir('/')
"""


def run_probe(project: Path, **kernels: bool):
    for folder in ("a", "b"):
        write_notebook(project / folder / "probe.ipynb", PROBE)
        (project / folder / "probe_helper.py").write_text("VALUE = 1\n")
    spec = write_yaml(
        project / "pipeline.yaml",
        """
name: fresh
tasks:
  first:  {notebook: a/probe.ipynb}
  second: {notebook: b/probe.ipynb, upstream: [first]}
  third:  {notebook: a/probe.ipynb, upstream: [second]}
  fourth: {notebook: b/probe.ipynb, upstream: [first]}
""",
    )
    service = Service(Config.resolve(project=project, workers=1, **kernels))
    try:
        return service.run_pipeline(spec)
    finally:
        service.close()


@pytest.mark.parametrize("mode", MODES)
def test_every_task_gets_a_kernel_no_task_has_touched(project, mode):
    run = run_probe(project, **MODES[mode])

    assert run.state is RunState.SUCCESS, {n: t.error for n, t in run.tasks.items()}
    for name, folder in (("first", "a"), ("second", "b"), ("third", "a"), ("fourth", "b")):
        seen = run.tasks[name].outputs["seen"]
        assert seen == {"variable": False, "import": False, "module_state": False, "cwd": str(project / folder)}, (
            name,
            seen,
        )
    # a process of its own each, and no random sequence repeated from a common parent
    assert len({t.outputs["pid"] for t in run.tasks.values()}) == 4
    assert len({t.outputs["random"] for t in run.tasks.values()}) == 4


KERNEL_FACTS = """\
import os, sys, json
def _target(fd):
    try:
        return os.readlink('/proc/self/fd/' + fd)
    except OSError:  # listdir's own descriptor, closed by now
        return None
print(json.dumps({
    'executable': sys.executable, 'path': sys.path, 'cwd': os.getcwd(),
    'argv0': os.path.basename(sys.argv[0]), 'mplbackend': os.environ.get('MPLBACKEND'),
    'env': {k: v for k, v in os.environ.items() if k not in ('JPY_PARENT_PID', 'MPLBACKEND')},
    'pgid_is_pid': os.getpgid(0) == os.getpid(), 'stdin_is_tty': os.isatty(0),
    'fds': sorted(t for fd in os.listdir('/proc/self/fd') if int(fd) > 2 and (t := _target(fd))),
    'interrupt_handler': str(__import__('signal').getsignal(__import__('signal').SIGINT)),
}))
"""


def kernel_facts(tmp_path: Path, server) -> dict:
    import json

    from jupyter_core.utils import run_sync

    from nbsched.kernels import start_kernel, stop_kernel

    km = start_kernel("python3", tmp_path, server)
    kc = km.client()
    kc.start_channels()
    try:
        run_sync(kc.wait_for_ready)(timeout=30)
        out: list[str] = []
        run_sync(kc.execute_interactive)(
            KERNEL_FACTS,
            timeout=30,
            output_hook=lambda m: out.append(m["content"].get("text", "")) if m["msg_type"] == "stream" else None,
        )
    finally:
        kc.stop_channels()
        stop_kernel(km)
    return json.loads("".join(out))


def test_a_forked_kernel_looks_like_one_jupyter_client_started(tmp_path):
    from nbsched.fork_server import ForkServer

    usual = kernel_facts(tmp_path, None)
    server = ForkServer()
    try:
        servers = {
            os.readlink(f"/proc/{server.process.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{server.process.pid}/fd")
        }
        forked = kernel_facts(tmp_path, server)
    finally:
        server.close()
    fds = forked.pop("fds"), usual.pop("fds")
    assert forked == usual
    # the kernel's own sockets and files only: not the server's socket, nor its siblings' pidfds (its
    # one pidfd watches nbsched); how many sockets varies under load (a client's heartbeat channel
    # makes a new one for each beat it misses)
    assert not set(fds[0]) & {t for t in servers if t.startswith("socket:")}, (fds[0], servers)
    assert sum(t == "anon_inode:[pidfd]" for t in fds[0]) <= 1, fds[0]
    files = [[t for t in f if not t.startswith("socket:")] for f in fds]
    assert len(files[0]) <= len(files[1]) + 1, files


def test_a_forked_kernel_is_timed_out_and_cancelled_like_any_other(project):
    """The runner stops a kernel by killing its process group: a forked kernel has its own."""
    write_notebook(
        project / "slow.ipynb",
        "import subprocess\nchild = subprocess.Popen(['sleep', '300'])",
        "import nbsched\nnbsched.record('child', child.pid)",
        "import time\ntime.sleep(60)",
    )
    spec = write_yaml(project / "pipeline.yaml", "name: slow\ntasks:\n  slow: {notebook: slow.ipynb, timeout: 8}\n")
    service = Service(Config.resolve(project=project, workers=1, kernel_fork=True))
    try:
        run = service.run_pipeline(spec)
    finally:
        service.close()
    task = run.tasks["slow"]
    assert run.state is RunState.FAILED and "timed out after 8s (cell 5: import time; time.sleep(60))" in task.error
    child = read_recorded(Path(task.output_path))[0]["child"]
    wait_for(
        lambda: not Path(f"/proc/{child}").exists() or "Z" in _state(child),
        10,
        "the kernel's own child process to be killed with it",
    )


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_kernels_die_with_the_process_that_forked_them(tmp_path):
    """No orphans: kill -9 the nbsched process and its fork server kills the kernels."""
    script = (
        "import sys, time; from pathlib import Path\n"
        "from nbsched.fork_server import ForkServer\nfrom nbsched.kernels import start_kernel\n"
        "server = ForkServer()\nkm = start_kernel('python3', Path(sys.argv[1]), server)\n"
        "print(server.process.pid, km.provisioner.pid, flush=True)\ntime.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        server_pid, kernel_pid = map(int, proc.stdout.readline().split())
        assert _state(kernel_pid) != "gone"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    wait_for(
        lambda: _state(kernel_pid) in ("gone", "Z") and _state(server_pid) in ("gone", "Z"),
        15,
        "the fork server and its kernel to exit",
    )


def test_preloaded_modules_are_in_every_kernel_and_thread_starting_ones_are_refused(project, caplog, monkeypatch):
    write_notebook(
        project / "check.ipynb", "import sys, nbsched\nnbsched.record('preloaded', 'sqlalchemy' in sys.modules)"
    )
    spec = write_yaml(project / "pipeline.yaml", "name: pre\ntasks:\n  check: {notebook: check.ipynb}\n")

    def run(*preload: str):
        service = Service(Config.resolve(project=project, workers=1, kernel_preload=preload))
        try:
            return service.run_pipeline(spec)
        finally:
            service.close()

    assert run().tasks["check"].outputs == {"preloaded": False}
    assert run("sqlalchemy").tasks["check"].outputs == {"preloaded": True}
    # a module that starts a thread when imported makes forking unsafe: kernels start the usual way
    (project / "lib").mkdir()
    (project / "lib" / "threaded.py").write_text(
        "import threading, time\nthreading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(project / "lib"))
    with caplog.at_level(logging.WARNING, logger="nbsched.kernels"):
        refused = run("threaded")
    assert refused.state is RunState.SUCCESS and refused.tasks["check"].outputs == {"preloaded": False}
    assert "the fork server cannot start: RuntimeError: importing threaded started 1 thread(s)" in caplog.text


def test_the_pool_has_kernels_waiting_and_drains_them_when_idle(tmp_path):
    from nbsched.kernel_pool import KernelPool
    from nbsched.kernels import Launcher

    pool = KernelPool(2, idle=6.0, launcher=Launcher(fork=True))
    try:
        pool.prepare({("python3", ()): 5})
        wait_for(lambda: pool.waiting == {"python3": 2}, 60, "two kernels waiting")
        with pool.kernel("python3", tmp_path) as kernel:
            assert kernel.kc is not None and kernel.km.has_kernel
            pid = kernel.km.provisioner.pid
        wait_for(lambda: _state(pid) == "gone", 15, "the used kernel to be shut down")
        wait_for(lambda: pool.waiting == {"python3": 2}, 60, "a replacement, for the tasks still to come")
        pool.prepare({})  # they will not come (their run failed)
        wait_for(lambda: not pool.waiting, 30, "the idle kernels to be shut down")
    finally:
        pool.close()


def test_a_fork_server_that_dies_is_replaced(tmp_path, caplog):
    from nbsched.kernels import Launcher, stop_kernel

    launcher = Launcher(fork=True)
    try:
        first = launcher.start("python3", tmp_path)
        stop_kernel(first)
        (server,) = launcher._servers.values()
        os.kill(server.process.pid, signal.SIGKILL)  # as the OOM killer would
        wait_for(lambda: not server.alive, 10, "the parent to see the fork server gone")
        with caplog.at_level(logging.WARNING, logger="nbsched.kernels"):
            second = launcher.start("python3", tmp_path)
        try:
            (new,) = launcher._servers.values()
            assert new is not server and new.alive
            assert second.provisioner.process.pid != first.provisioner.pid
            assert f"the kernels' fork server (pid {server.process.pid}) has exited" in caplog.text
        finally:
            stop_kernel(second)
    finally:
        launcher.close()


def test_a_notebook_that_kills_the_fork_server_fails_no_other_task(project):
    """A forked kernel's parent is the fork server: ``os.kill(os.getppid(), 9)`` kills it. The
    kernels it forked (running a task, or waiting in the pool) carry on, the next ones come from
    a new server, and every task ends as its own notebook decides."""
    write_notebook(
        project / "killer.ipynb",
        "import os, signal\nserver = os.getppid()\nos.kill(server, signal.SIGKILL)",
        "import time, nbsched\ntime.sleep(0.5)\nnbsched.record('killed', server)",
    )
    write_notebook(
        project / "innocent.ipynb", "import os, time, nbsched\ntime.sleep(2)\nnbsched.record('pid', os.getpid())"
    )
    spec = write_yaml(
        project / "pipeline.yaml",
        "name: killer\ndefaults: {retries: 0}\ntasks:\n"
        "  killer: {notebook: killer.ipynb}\n"
        + "".join(f"  innocent{i}: {{notebook: innocent.ipynb}}\n" for i in range(4)),
    )
    service = Service(Config.resolve(project=project, workers=2))
    try:
        run = service.run_pipeline(spec)
    finally:
        service.close()

    assert {n: (t.state.value, t.error) for n, t in run.tasks.items()} == dict.fromkeys(
        ["killer", *(f"innocent{i}" for i in range(4))], ("success", None)
    )
    assert _state(run.tasks["killer"].outputs["killed"]) in ("gone", "Z")  # it did kill the server
    # one of them ran beside the killer, in a kernel of the server it killed
    first = run.tasks["innocent0"]
    assert first.started_at < run.tasks["killer"].ended_at


@pytest.mark.parametrize("fork", [False, True], ids=["usual", "forked"])
def test_a_waiting_kernel_that_died_is_not_handed_to_a_task(tmp_path, fork):
    from jupyter_core.utils import run_sync

    from nbsched.kernel_pool import KernelPool
    from nbsched.kernels import Launcher

    pool = KernelPool(2, launcher=Launcher(fork=fork))
    try:
        pool.prepare({("python3", ()): 2})
        wait_for(lambda: pool.waiting == {"python3": 2}, 60, "two kernels waiting")
        for kernels in pool._ready.values():
            for waiting in kernels:  # as the OOM killer would
                os.kill(waiting.km.provisioner.pid, signal.SIGKILL)
                wait_for(lambda waiting=waiting: not run_sync(waiting.km.is_alive)(), 10, "the kernel to be seen dead")
        with pool.kernel("python3", tmp_path) as kernel:
            reply = run_sync(kernel.kc.execute_interactive)("import os; os.getcwd()", timeout=30)
            assert reply["content"]["status"] == "ok"
    finally:
        pool.close()


HOLDER = (
    "import sys, time; from pathlib import Path\n"
    "from nbsched.fork_server import ForkServer\nfrom nbsched.kernels import start_kernel\n"
    "server = ForkServer()\nkms = [start_kernel('python3', Path(sys.argv[1]), server) for _ in range(2)]\n"
    "print(server.process.pid, *(km.provisioner.pid for km in kms), flush=True)\ntime.sleep(600)\n"
)


def test_a_fork_server_whose_parent_is_killed_exits_silently_with_its_kernels(tmp_path):
    """kill -9 of nbsched while the server had something to tell it (a kernel's exit, unread):
    the server's next read is refused ('Connection reset by peer'), which printed a traceback
    into nbsched's log and left the other kernels to notice on their own."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        server_pid, gone_pid, kernel_pid = map(int, proc.stdout.readline().split())
        proc.send_signal(signal.SIGSTOP)  # it reads nothing more
        os.kill(gone_pid, signal.SIGKILL)  # its exit is written to nbsched's socket, unread
        wait_for(lambda: _state(gone_pid) == "gone", 10, "the server to reap the kernel")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    _, stderr = proc.communicate(timeout=30)  # the server and kernels write there too: until all exit
    assert "Traceback" not in stderr and "Error" not in stderr, stderr
    wait_for(
        lambda: _state(kernel_pid) in ("gone", "Z") and _state(server_pid) in ("gone", "Z"),
        15,
        "the server and its other kernel to exit",
    )  # stderr closes before the exit ends


def test_kernels_of_a_killed_fork_server_still_die_with_nbsched(tmp_path, monkeypatch):
    # a runtime folder of its own (short: a socket's path has at most 107 bytes), seen by the holder too
    runtime = Path(tempfile.mkdtemp(prefix="nbrt"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(runtime))
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        server_pid, *kernels = map(int, proc.stdout.readline().split())
        os.kill(server_pid, signal.SIGKILL)
        time.sleep(1.5)  # ipykernel checks its parent every second: had it watched the server, it would have gone
        assert [_state(pid) for pid in kernels] == ["S", "S"]  # the server's kernels carry on without it
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    wait_for(lambda: all(_state(pid) in ("gone", "Z") for pid in kernels), 15, "the kernels to exit with nbsched")
    # their channels' sockets stay behind; the next launcher's first kernel removes them, no live one's
    from jupyter_core.paths import jupyter_runtime_dir

    from nbsched.kernels import Launcher, start_connected, stop_kernel

    def sockets() -> set[str]:
        return {p.name for p in runtime.glob("nbsched-*")}

    assert Path(jupyter_runtime_dir()) == runtime and len(sockets()) == 10  # the two killed kernels' five each

    def listened(path: Path) -> bool:
        import socket

        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(str(path))
            except ConnectionRefusedError:
                return False
            return True

    # a killed process's main thread shows "Z" while its other threads are still being torn down,
    # its sockets still listening: wait until nobody listens on them
    wait_for(lambda: not any(map(listened, runtime.glob("nbsched-*-1"))), 15, "the killed kernels' sockets to close")
    launcher = Launcher()
    kernel = start_connected(launcher, "python3", tmp_path, 60)
    try:
        assert sockets() == {f"nbsched-{kernel.km.kernel_id}-{i}" for i in range(1, 6)}
    finally:
        kernel.disconnect()
        stop_kernel(kernel.km, now=True)
        launcher.close()
    assert sockets() == set()  # a kernel shut down takes its own along
    runtime.rmdir()


def test_kernel_clients_stopped_before_their_threads_ran_leave_no_sockets(tmp_path, monkeypatch):
    """The pool stops a waiting kernel's client as soon as the kernel has answered. In a busy
    process (seen: a daemon encoding tens of MB of output as JSON), a client thread can first
    run after that: jupyter_client's heartbeat thread, stopped before it had set itself running,
    then made ZeroMQ sockets as fast as it could until there were none left: 'ZMQError: Too many
    open files' for every client (seen in a daemon after large outputs). Here every client
    thread starts 0.3 s late, as a busy process makes them."""
    import threading

    from jupyter_client import channels

    from nbsched.kernel_pool import KernelPool
    from nbsched.kernels import Launcher
    from nbsched.workers import FILES_BESIDES, FILES_PER_WORKER

    for thread_class in (channels.HBChannel, channels.ZMQSocketChannel):
        if hasattr(thread_class, "run"):
            late = thread_class.run

            def run(self, _late=late):
                time.sleep(0.3)
                _late(self)

            monkeypatch.setattr(thread_class, "run", run)
    done, peak = threading.Event(), [0]

    def count_files() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], len(os.listdir("/proc/self/fd")))
            time.sleep(0.01)

    counter = threading.Thread(target=count_files, daemon=True)
    pool = KernelPool(3, launcher=Launcher(fork=True))
    counter.start()
    try:
        for _ in range(5):
            pool.prepare({("python3", ()): 10})
            with pool.kernel("python3", tmp_path):
                pass
        time.sleep(1.0)  # what the late threads do once they run
    finally:
        done.set()
        counter.join()
        pool.close()
    assert peak[0] <= FILES_BESIDES + 3 * FILES_PER_WORKER  # what nbsched budgets for 2 workers


def test_a_forked_kernel_whose_port_was_taken_exits_at_once_and_another_is_started(project, monkeypatch, caplog):
    """Between jupyter_client choosing a port for a kernel's connection file and the kernel binding
    it, another process may take it (seen with three daemons starting kernels at once): the
    forked kernel exits at once (it used to hang in zmq's Context.term() for ever, and its task
    waited out the 60 s start-up timeout), and the task gets a kernel started again."""
    import socket

    from jupyter_client.connect import LocalPortCache

    monkeypatch.setattr(
        nbsched.kernels, "_ipc_prefix", lambda kernel_id: None
    )  # TCP, as where a socket path is too long
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    ports = iter([taken.getsockname()[1]])  # the first port asked for: its shell channel
    usual = LocalPortCache.find_available_port
    monkeypatch.setattr(LocalPortCache, "find_available_port", lambda self, ip: next(ports, None) or usual(self, ip))
    write_notebook(project / "ok.ipynb", "import nbsched\nnbsched.record('ok', True)")
    service = Service(Config.resolve(project=project, workers=1, kernel_pool=False, kernel_fork=True))
    try:
        with caplog.at_level(logging.INFO, logger="nbsched.kernels"):
            run = service.run_pipeline(project / "ok.ipynb")
    finally:
        service.close()
        taken.close()
    assert run.state is RunState.SUCCESS, run.tasks["ok"].error
    assert run.tasks["ok"].outputs == {"ok": True}
    assert "a python3 kernel exited as it started; starting another" in caplog.text


def test_a_kernel_that_cannot_start_fails_its_task_in_one_line(project, tmp_path, monkeypatch):
    """A kernelspec whose kernel exits as it starts: the task fails saying so (seen when it
    exits, not after the start-up timeout)."""
    spec_dir = tmp_path / "jupyter" / "kernels" / "broken"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(
        '{"argv": ["/bin/sh", "-c", "exit 3", "{connection_file}"], "display_name": "broken", "language": "python"}'
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    write_notebook(project / "nb.ipynb", "x = 1")
    write_yaml(project / "pipeline.yaml", "name: broken\ntasks:\n  t: {notebook: nb.ipynb, kernel: broken}\n")
    service = Service(Config.resolve(project=project, workers=1, kernel_pool=False))
    try:
        run = service.run_pipeline(project / "pipeline.yaml")
    finally:
        service.close()
    assert run.state is RunState.FAILED
    assert run.tasks["t"].error.splitlines() == ["KernelExited: the kernel exited as it started"], run.tasks["t"].error


def test_a_kernel_whose_start_fails_after_launch_is_stopped_and_started_again(project, monkeypatch, caplog):
    """jupyter_client reads the connection file back after the kernel is launched; read while the
    kernel rewrote it, it is empty and the start raises (seen under load), the process running:
    it used to be left running (the soak test found its fork server with a child for ever)."""
    from jupyter_client.connect import ConnectionFileMixin

    launched: list[int] = []
    real = ConnectionFileMixin._reconcile_connection_info

    def once_empty(self, info):  # the first start's read back finds an empty file
        if not launched:
            launched.append(self.provisioner.pid)
            raise json.JSONDecodeError("Expecting value", "", 0)
        return real(self, info)

    monkeypatch.setattr(ConnectionFileMixin, "_reconcile_connection_info", once_empty)
    write_notebook(project / "ok.ipynb", "import nbsched\nnbsched.record('ok', True)")
    service = Service(Config.resolve(project=project, workers=1, kernel_pool=False, kernel_fork=True))
    try:
        with caplog.at_level(logging.INFO, logger="nbsched.kernels"):
            run = service.run_pipeline(project / "ok.ipynb")
    finally:
        service.close()
    assert run.state is RunState.SUCCESS, run.tasks["ok"].error
    assert "starting another (Expecting value" in caplog.text
    (pid,) = launched
    wait_for(lambda: _state(pid) in ("gone", "Z"), 10, "the first kernel gone")
