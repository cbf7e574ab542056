from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from nbsched.service import Config, Service

pytest_plugins = ["pytest_jupyter.jupyter_server"]

NBSCHED = [sys.executable, "-m", "nbsched"]
# the machine's PostgreSQL (trust auth; .ci/run starts it when it is down)
PG_URL = os.environ.get("NBSCHED_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def write_notebook(path: Path, *cells: str, params: str | None = "upstream = {}") -> Path:
    """A notebook whose first code cell (tagged ``parameters``) is ``params``."""
    nb = new_notebook(cells=[new_markdown_cell(f"# {path.stem}")])
    if params is not None:
        nb.cells.append(new_code_cell(params, metadata={"tags": ["parameters"]}))
    nb.cells.extend(new_code_cell(c) for c in cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


def write_yaml(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


POSTGRES_FIXTURES = {"pg_url", "private_postgres"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """``postgres``: every test that talks to a PostgreSQL server (the machine's, or one of its
    own), found by the fixtures it uses, so the marker cannot be forgotten on a new one."""
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if POSTGRES_FIXTURES & set(getattr(item, "fixturenames", ())) or params.get("db_url") == "postgresql":
            item.add_marker(pytest.mark.postgres)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project folder as the current directory; nbsched keeps its database in ./.nbsched
    and its outputs in ./nbsched-runs."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NBSCHED_HOME", raising=False)
    monkeypatch.delenv("NBSCHED_DB_URL", raising=False)
    monkeypatch.delenv("NBSCHED_RUNS_DIR", raising=False)
    return tmp_path


@pytest.fixture
def service(project: Path) -> Any:
    svc = Service(Config.resolve(project=project, workers=2))
    yield svc
    svc.close()


def nbsched(
    *args: str, cwd: Path, check: bool = False, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a new process, as a user would (``env``: NBSCHED_ variables it sees)."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("NBSCHED_")}, **(env or {})}
    proc = subprocess.run([*NBSCHED, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"nbsched {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return proc


def serve(
    project: Path, name: str, *args: str, db: str | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """``nbsched serve`` as a real process in ``project``, its output in ``<name>.log`` there."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("NBSCHED_")}, **(env or {})}
    log = open(project / f"{name}.log", "wb")  # noqa: SIM115 - the process writes it until it ends
    return subprocess.Popen(
        [*NBSCHED, *(["--db", db] if db else []), "serve", "--poll", "0.2s", *args],
        cwd=project,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def stop(proc: subprocess.Popen[bytes], timeout: float = 60) -> int:
    """SIGTERM, as a service manager stops a daemon; its exit code (killed if it does not exit)."""
    import signal

    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:  # a hung daemon is the test's failure (-9), not a reason to leak the others
        proc.kill()
        return proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()


def wait_for(predicate: Any, timeout: float, what: str, every: float = 0.1) -> Any:
    """Poll ``predicate`` until it returns something true (returned), or fail naming ``what``."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def run_json(*args: str, cwd: Path) -> tuple[int, dict[str, Any]]:
    proc = nbsched("run", *args, "--json", cwd=cwd)
    try:
        return proc.returncode, json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(f"no JSON from nbsched run (exit {proc.returncode}): {proc.stderr}") from None


@pytest.fixture
def pg_url() -> Any:
    """A schema of its own in the real PostgreSQL's ``test`` database (as the search path), dropped after."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    schema = f"nbsched_test_{secrets.token_hex(4)}"
    admin = create_engine(PG_URL)
    try:
        with admin.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema}"))
    except OperationalError as exc:
        pytest.fail(f"PostgreSQL at {PG_URL} is not reachable (.ci/run starts it): {exc.orig}")
    yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The store's database, once SQLite (a file) and once the real PostgreSQL."""
    if request.param == "sqlite":
        (tmp_path / "state").mkdir(exist_ok=True)
        return f"sqlite:///{tmp_path / 'state' / 'nbsched.db'}"
    return request.getfixturevalue("pg_url")


def _unlent_port() -> int:
    """A free port below the range the kernel lends to outgoing connections, so that while the
    cluster is down (the outage tests stop and start it) no connection can take it."""
    import random
    import socket

    lowest_lent = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(200):
        port = random.randrange(10_000, max(10_001, lowest_lent))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port below the ephemeral range")


class PrivatePostgres:
    """A PostgreSQL cluster of the test's own (initdb + pg_ctl on a free port, run as the postgres
    user, since the tests run as root), to stop and start as a real outage; never the machine's own."""

    def __init__(self) -> None:
        import glob
        import shutil
        import tempfile

        self.bin = Path(sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1])
        self.dir = Path(tempfile.mkdtemp(prefix="nbsched-pg-"))
        shutil.chown(self.dir, "postgres")
        self.port = _unlent_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self._as_postgres(self.bin / "initdb", "-U", "postgres", "--auth=trust", "-N", "-D", self.dir / "data")
        self.start()

    def _as_postgres(self, *cmd: Any) -> None:
        import shlex

        line = " ".join(shlex.quote(str(c)) for c in cmd)
        proc = subprocess.run(
            ["su", "postgres", "-s", "/bin/sh", "-c", line], capture_output=True, text=True, timeout=60
        )
        if proc.returncode != 0:
            raise AssertionError(f"{line}: {proc.stdout}{proc.stderr}")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        try:
            self._as_postgres(
                self.bin / "pg_ctl",
                "-D",
                self.dir / "data",
                "-l",
                self.dir / "server.log",
                "-o",
                options,
                "-w",
                "start",
            )
        except AssertionError as exc:  # say why: the server's own last lines
            log = (self.dir / "server.log").read_text(errors="replace").splitlines()[-5:]
            raise AssertionError(f"{exc}\nserver.log: {log}") from None

    def stop(self) -> None:
        """``pg_ctl stop -m fast``: every connection is cut, as in an outage."""
        self._as_postgres(self.bin / "pg_ctl", "-D", self.dir / "data", "-m", "fast", "-w", "stop")

    def destroy(self) -> None:
        import shutil

        try:
            self._as_postgres(self.bin / "pg_ctl", "-D", self.dir / "data", "-m", "immediate", "-w", "stop")
        except AssertionError:
            pass  # it was stopped already
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def private_postgres() -> Any:
    cluster = PrivatePostgres()
    yield cluster
    cluster.destroy()
