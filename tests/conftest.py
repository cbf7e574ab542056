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


def nbsched(*args: str, cwd: Path, check: bool = False, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a new process, as a user would."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NBSCHED_")}
    proc = subprocess.run([*NBSCHED, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"nbsched {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return proc


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
