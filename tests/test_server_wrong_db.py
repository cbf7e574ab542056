"""A Jupyter server whose database URL is wrong (nothing listens there, and nbsched never reached
it): the start says so in one line within seconds and goes on, and requests answer 503 at once."""

from __future__ import annotations

import time
from typing import Any

import pytest
from test_server import api  # noqa: F401 - the fixture

CLOSED = "postgresql+psycopg://postgres@127.0.0.1:1/nbsched"  # nothing listens on port 1
pytestmark = pytest.mark.slow


@pytest.fixture
def jp_server_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> dict[str, Any]:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the servers reached: none
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_ext": True}},
        "NbschedApp": {"db_url": CLOSED, "runner_enabled": False},
    }


async def test_a_server_with_a_wrong_database_url_says_so_at_start_and_answers_503(
    capfd: pytest.CaptureFixture[str],  # first: it captures the server's start
    api,  # noqa: F811 - the fixture imported above
):
    # the start waited 10 s, then the extension failed to load with a traceback (its routes: 404)
    log = capfd.readouterr().err
    (line,) = [line for line in log.splitlines() if "nbsched: database" in line and line.startswith("[W")]
    assert f"nbsched: database {CLOSED}: unreachable for 3s" in line and "is the URL right?" in line, line
    assert line.endswith("requests answer 503 until it is reachable")
    assert "Traceback" not in log and "extension failed loading" not in log
    started = time.monotonic()
    reply = await api("GET", "runs")
    message = reply.error(503, "database_unavailable")
    assert "never reached from this account: is the URL right?" in message
    assert reply.headers["Retry-After"].isdigit()
    assert time.monotonic() - started < 30  # generous: a request waits db_patience (10 s) in an outage
    assert (await api("GET", "health")).code == 200
