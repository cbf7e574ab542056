"""A Jupyter server with the extension on a PostgreSQL of the test's own that stops and starts:
requests answer 503 while it is away, the server's background daemon waits it out, and a run
that was executing when it went ends success."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from conftest import write_notebook
from test_server import api, daemon, finished_run, wait_until  # noqa: F401 - fixtures and helpers

pytestmark = [pytest.mark.slow, pytest.mark.kernel]


@pytest.fixture
def jp_server_config(private_postgres: Any) -> dict[str, Any]:
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_ext": True}},
        "NbschedApp": {"poll": 0.2, "workers": 1, "lease": 10, "db_patience": 1.0, "db_url": private_postgres.url},
    }


async def test_requests_answer_503_while_the_database_is_away_and_the_daemon_waits(
    api,  # noqa: F811 - the fixture imported above
    jp_root_dir,
    daemon,  # noqa: F811
    private_postgres,
):
    write_notebook(jp_root_dir / "nap.ipynb", "import pathlib, time\npathlib.Path('napping').touch()\ntime.sleep(6)")
    spec = {"name": "nap", "tasks": {"nap": "nap.ipynb"}}
    assert (await api("POST", "pipelines", body={"spec": spec})).code == 201
    run_id = (await api("POST", "pipelines", "nap", "runs", body={})).data["run_id"]
    await wait_until(lambda: asyncio.sleep(0, (jp_root_dir / "napping").exists()), bool, what="the notebook")

    await asyncio.to_thread(private_postgres.stop)
    started = time.monotonic()
    away = await api("GET", "runs", run_id)
    message = away.error(503, "database_unavailable")
    assert "unreachable" in message and "\n" not in message
    assert away.headers["Retry-After"].isdigit()
    assert time.monotonic() - started < 30  # the request gave up; it did not hang with the database
    health = await api("GET", "health")
    assert health.code == 200  # the server itself is fine
    await asyncio.sleep(3)
    await asyncio.to_thread(private_postgres.start)

    run = await finished_run(api, run_id)
    assert run["state"] == "success", run
    assert run["tasks"]["nap"]["try_number"] == 1 and len(run["tasks"]["nap"]["tries"]) == 1
    assert daemon.running  # the background daemon is still there
    again = await api("POST", "pipelines", "nap", "runs", body={})
    assert (await finished_run(api, again.data["run_id"]))["state"] == "success"
