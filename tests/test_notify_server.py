"""Notifications from the Jupyter server's daemon, listed over REST, linking its report page."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import write_notebook
from pytest_httpserver import HTTPServer
from test_server import api, daemon, finished_run, wait_until  # noqa: F401 - fixtures and helpers

pytestmark = pytest.mark.kernel


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_ext": True}},
        "NbschedApp": {"poll": 0.2, "workers": 1, "lease": 30, "public_url": "http://lab.example:8888/"},
    }


async def test_a_run_of_the_server_notifies_and_lists_it_with_a_link_to_its_report(
    api,  # noqa: F811 - the fixture imported above
    daemon,  # noqa: F811
    jp_root_dir,
    httpserver: HTTPServer,
):
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    write_notebook(jp_root_dir / "boom.ipynb", "1/0")
    spec = {
        "name": "boom",
        "tasks": {"boom": "boom.ipynb"},
        "notify": [{"on": ["failure"], "to": [f"json://127.0.0.1:{httpserver.port}/hook"]}],
    }
    assert (await api("POST", "pipelines", body={"spec": spec})).code == 201
    run_id = (await api("POST", "pipelines", "boom", "runs", body={})).data["run_id"]
    assert (await finished_run(api, run_id))["state"] == "failed"

    async def listed() -> list[dict[str, Any]]:
        return (await api("GET", "notifications", params={"run_id": run_id})).data["notifications"]

    (notice,) = await wait_until(listed, lambda n: n and n[0]["state"] == "sent", what="the notification sent")
    assert notice["event"] == "failure" and notice["task"] is None and notice["attempts"] == 1
    ((request, _),) = httpserver.log
    message = request.get_json()["message"]
    assert f"Report: http://lab.example:8888/nbsched/api/v1/runs/{run_id}/report" in message
    assert "boom: ZeroDivisionError: division by zero" in message
    assert (await api("GET", "notifications", params={"run_id": "nope"})).error(404)
    assert (await api("GET", "notifications", params={"limit": "0"})).error(400)
