"""Notifications from the Jupyter server's daemon, listed over REST, linking its report page."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import write_notebook
from pytest_httpserver import HTTPServer
from test_server import api, daemon, finished_run, wait_until  # noqa: F401 - fixtures and helpers


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_ext": True}},
        "NbschedApp": {
            "poll": 0.2,
            "workers": 1,
            "lease": 30,
            "public_url": "http://lab.example:8888/",
            # the test's webhook listens on this machine: listed itself, as a loopback host must be
            "notify_allow": ["json://127.0.0.1", "slack"],
        },
    }


@pytest.mark.kernel
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


@pytest.mark.parametrize(
    ("target", "problem"),
    [
        (
            "json://169.254.169.254/latest/meta-data/",
            (
                "/meta-data/?method=POST&overflow=upstream&retry=0&wait=0.5&optional=no: json://169.254.169.254 is not "
                "in NbschedApp.notify_allow (it lists json://127.0.0.1, slack)"
            ),
        ),
        ("json://localhost:9/hook", "json://localhost is not in NbschedApp.notify_allow"),
        ("mailto://example.com?smtp=10.0.0.1&from=a@example.com&to=b@example.com", "mailto://10.0.0.1 is not in"),
    ],
)
async def test_a_spec_over_rest_may_notify_only_what_the_operator_allows(
    api,  # noqa: F811 - the fixture imported above
    jp_root_dir,
    target,
    problem,
):
    write_notebook(jp_root_dir / "nb.ipynb", "x = 1")
    spec = {"name": "p", "tasks": {"t": "nb.ipynb"}, "notify": [{"on": ["failure"], "to": [target]}]}
    reply = await api("POST", "pipelines", body={"spec": spec})
    message = reply.error(422, "invalid_spec")
    assert problem in message, message
    assert (await api("GET", "pipelines", "p")).error(404)  # nothing registered


async def test_a_spec_over_rest_may_notify_the_tags_and_what_is_listed(
    api,  # noqa: F811 - the fixture imported above
    jp_root_dir,
):
    write_notebook(jp_root_dir / "nb.ipynb", "x = 1")
    spec = {
        "name": "p",
        "tasks": {"t": "nb.ipynb"},
        "notify": [{"on": ["failure"], "to": ["team", "slack://T1/B2/C3", "json://127.0.0.1:9/hook"]}],
    }
    assert (await api("POST", "pipelines", body={"spec": spec})).code == 201
