"""The REST API of the Jupyter server extension (``/nbsched/api/v1``), through a real server.

pytest-jupyter starts a Jupyter server per test with the extension enabled; requests go over
HTTP with the server's token. The background daemon (scheduler + runner) is only started by the
tests that need a run to execute or a schedule to fire (``daemon`` fixture).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urljoin, urlsplit

import nbformat
import pytest
from conftest import write_notebook, write_yaml
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

import nbsched
from jupyter_ext.handlers import default_handlers

API = ("nbsched", "api", "v1")
FINISHED = ("success", "failed", "cancelled")

# the task notebook: records its parameter for downstream tasks and prints it
REPORT_CODE = (
    '# the regional sales report\nimport nbsched\nnbsched.record("region", region)\nprint(f"sales report for {region}")'
)


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_ext": True}},
        "NbschedApp": {"poll": 0.2, "workers": 2, "lease": 30},
    }


@pytest.fixture
def daemon(jp_serverapp: Any, jp_asyncio_loop: Any) -> Any:
    """The scheduler and runner, started as the server starts them (pytest-jupyter does not)."""
    (app,) = jp_serverapp.extension_manager.extension_apps["jupyter_ext"]
    jp_asyncio_loop.run_until_complete(app._start_jupyter_server_extension(jp_serverapp))
    assert app.running
    yield app
    jp_asyncio_loop.run_until_complete(app.stop_extension())


@dataclass
class Reply:
    code: int
    headers: Any
    body: bytes

    @property
    def data(self) -> Any:
        return json.loads(self.body)

    def error(self, code: int, error: str | None = None) -> str:
        """Assert an error answer ``{"error", "message"}``; returns the message."""
        assert self.code == code, (self.code, self.body)
        data = self.data
        assert set(data) == {"error", "message"}, data
        if error is not None:
            assert data["error"] == error, data
        assert data["message"]
        return data["message"]


@pytest.fixture
def api(jp_fetch: Any) -> Any:
    async def call(
        method: str, *path: str, body: Any = None, params: dict[str, Any] | None = None, **kwargs: Any
    ) -> Reply:
        if body is not None and not isinstance(body, (str, bytes)):
            body = json.dumps(body)
        if body is None and method in ("POST", "PATCH", "PUT"):
            body = ""
        resp = await jp_fetch(*API, *path, method=method, body=body, params=params, raise_error=False, **kwargs)
        return Reply(resp.code, resp.headers, resp.body)

    return call


async def wait_until(fetch: Any, done: Any, *, timeout: float = 60.0, what: str = "") -> Any:
    """Poll ``await fetch()`` until ``done(value)``; returns the value."""
    deadline = time.monotonic() + timeout
    while True:
        value = await fetch()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}: last {value!r}")
        await asyncio.sleep(0.25)


async def finished_run(api: Any, run_id: str) -> dict[str, Any]:
    async def get() -> dict[str, Any]:
        return (await api("GET", "runs", run_id)).data

    return await wait_until(get, lambda r: r["state"] in FINISHED, what=f"run {run_id} to finish")


# -- files in the server root -------------------------------------------------------------------------


def sales_pipeline(root: Path, folder: str = "sales") -> Path:
    """``<folder>/pipeline.yaml``: extract -> report, with a spec schedule."""
    write_notebook(root / folder / "extract.ipynb", "rows = 3")
    write_notebook(root / folder / "report.ipynb", REPORT_CODE, params='region = "north"\nupstream = {}')
    return write_yaml(
        root / folder / "pipeline.yaml",
        """
name: sales
params: {region: north}
tasks:
  extract: extract.ipynb
  report: {notebook: report.ipynb, upstream: [extract]}
schedules:
  - {cron: "0 6 * * 1-5", timezone: Europe/Paris}
""",
    )


def hello_spec(root: Path, name: str = "hello") -> dict[str, Any]:
    """A one-task pipeline given as data; its notebook is ``report.ipynb`` at the root."""
    write_notebook(root / "report.ipynb", REPORT_CODE, params='region = "north"\nupstream = {}')
    return {"name": name, "params": {"region": "north"}, "tasks": {"report": {"notebook": "report.ipynb"}}}


async def register_hello(api: Any, root: Path, name: str = "hello") -> dict[str, Any]:
    reply = await api("POST", "pipelines", body={"spec": hello_spec(root, name)})
    assert reply.code == 201, reply.body
    return reply.data


async def queue_run(api: Any, pipeline: str, **params: Any) -> str:
    reply = await api("POST", "pipelines", pipeline, "runs", body={"params": params})
    assert reply.code == 201, reply.body
    return reply.data["run_id"]


# -- authentication -----------------------------------------------------------------------------------


def sample_paths(pattern: str) -> list[str]:
    """URLs matching a route's regex: path parameters get sample values, alternatives all appear."""
    choices = []
    for part in re.split(r"(\(\?P<\w+>[^)]*\))", pattern):
        group = re.fullmatch(r"\(\?P<\w+>([^)]*)\)", part)
        if group is None:
            choices.append([part.replace("\\.", ".")])
        elif group.group(1) == "[^/]+":
            choices.append(["sample"])
        elif group.group(1) == r"\d+":
            choices.append(["1"])
        elif group.group(1) == ".*":
            choices.append(["no/such/route"])
        elif re.fullmatch(r"\w+(\|\w+)*", group.group(1)):
            choices.append(group.group(1).split("|"))
        else:
            raise AssertionError(f"no sample value for {part} in {pattern}")
    paths = ["".join(p) for p in itertools.product(*choices)]
    assert all(re.fullmatch(pattern, p) for p in paths), paths
    return paths


def handler_methods(cls: type) -> list[str]:
    """The HTTP methods a handler class of ours implements."""
    ours = [k for k in cls.__mro__ if k.__module__ == "jupyter_ext.handlers"]
    return [m.upper() for m in ("get", "head", "post", "put", "patch", "delete") if any(m in vars(k) for k in ours)]


async def test_every_route_and_method_refuses_a_request_without_the_token(
    jp_fetch, jp_http_port, jp_base_url, jp_serverapp
):
    client = AsyncHTTPClient()
    # a matching XSRF cookie and header: the 403 must come from authentication, not from the XSRF check
    xsrf = {"Cookie": "_xsrf=abc123", "X-XSRFToken": "abc123"}
    checked = []
    for pattern, cls in default_handlers:
        methods = handler_methods(cls)
        assert methods, cls
        for path, method in itertools.product(sample_paths(pattern), methods):
            body = "{}" if method in ("POST", "PUT", "PATCH") else None
            url = f"http://127.0.0.1:{jp_http_port}{jp_base_url}{path.lstrip('/')}"
            for headers in (xsrf, {**xsrf, "Authorization": "token not-the-token"}):
                resp = await client.fetch(
                    HTTPRequest(url, method=method, body=body, headers=headers, allow_nonstandard_methods=True),
                    raise_error=False,
                )
                assert resp.code == 403, (method, path, headers, resp.code, resp.body)
                assert json.loads(resp.body)["error"] == "forbidden", (method, path, resp.body)
            # with the token the same request reaches the handler (the route and method exist)
            with_token = await jp_fetch(
                path.lstrip("/"), method=method, body=body, raise_error=False, allow_nonstandard_methods=True
            )
            assert with_token.code not in (403, 404, 405) or json.loads(with_token.body)["error"] == "not_found", (
                method,
                path,
                with_token.code,
                with_token.body,
            )
            checked.append((method, path))
    # every route of the API was tried, each with at least one method
    assert {p for _, p in checked} >= {"/nbsched/api/v1/health", "/nbsched/api/v1/runs/sample/tasks/sample/report"}
    assert ("PATCH", "/nbsched/api/v1/schedules/sample") in checked and (
        "DELETE",
        "/nbsched/api/v1/pipelines/sample",
    ) in checked


# -- health, version ----------------------------------------------------------------------------------


async def test_health_and_version_without_the_daemon(api):
    health = await api("GET", "health")
    assert health.code == 200
    assert health.headers["Content-Type"].startswith("application/json")
    assert health.data == {"status": "ok", "version": nbsched.__version__, "scheduler": False, "runner": None}
    version = await api("GET", "version")
    assert version.code == 200 and version.data == {"version": nbsched.__version__}


# -- pipelines ----------------------------------------------------------------------------------------


async def test_register_a_pipeline_file_and_read_it_back(api, jp_root_dir):
    sales_pipeline(jp_root_dir)
    reply = await api("POST", "pipelines", body={"path": "sales/pipeline.yaml"})
    assert reply.code == 201, reply.body
    detail = reply.data
    assert detail["name"] == "sales" and detail["version"] == 1
    assert detail["tasks"] == ["extract", "report"]
    assert detail["dag"]["order"] == ["extract", "report"]
    tasks = {t["name"]: t for t in detail["dag"]["tasks"]}
    assert tasks["report"]["upstream"] == ["extract"] and tasks["extract"]["upstream"] == []
    assert tasks["report"]["trigger_rule"] == "all_success"
    assert Path(tasks["report"]["notebook"]) == jp_root_dir / "sales" / "report.ipynb"
    assert [v["version"] for v in detail["versions"]] == [1]
    assert detail["spec"]["params"] == {"region": "north"}
    [schedule] = detail["schedule_list"]
    assert schedule["trigger"]["cron"] == "0 6 * * 1-5" and schedule["trigger"]["timezone"] == "Europe/Paris"
    assert schedule["origin"] == "spec" and schedule["enabled"] is True
    assert detail["schedules"] == 1

    # an edited file is a new version; the old one stays listed
    path = jp_root_dir / "sales" / "pipeline.yaml"
    path.write_text(path.read_text().replace("region: north", "region: south"))
    again = await api("POST", "pipelines", body={"path": "sales/pipeline.yaml"})
    assert again.code == 201 and again.data["version"] == 2
    assert again.data["spec"]["params"] == {"region": "south"}
    assert sorted(v["version"] for v in again.data["versions"]) == [1, 2]

    one = await api("GET", "pipelines", "sales")
    assert one.code == 200 and one.data["version"] == 2 and one.data["dag"] == again.data["dag"]
    listed = await api("GET", "pipelines")
    assert listed.code == 200
    [view] = listed.data["pipelines"]
    assert view["name"] == "sales" and view["version"] == 2 and view["tasks"] == ["extract", "report"]
    assert view["schedules"] == 1

    message = (await api("GET", "pipelines", "nosuch")).error(404, "not_found")
    assert "nosuch" in message


async def test_register_a_spec_given_as_data(api, jp_root_dir):
    # notebook paths relative to the server root ...
    reply = await api("POST", "pipelines", body={"spec": hello_spec(jp_root_dir)})
    assert reply.code == 201, reply.body
    assert reply.data["name"] == "hello" and reply.data["schedule_list"] == []
    assert Path(reply.data["dag"]["tasks"][0]["notebook"]) == jp_root_dir / "report.ipynb"
    # ... or to "dir"
    write_notebook(jp_root_dir / "team" / "daily.ipynb", "x = 1")
    spec = {"name": "daily", "tasks": {"daily": "daily.ipynb"}, "schedules": [{"every": "1h"}]}
    reply = await api("POST", "pipelines", body={"spec": spec, "dir": "team"})
    assert reply.code == 201, reply.body
    assert Path(reply.data["dag"]["tasks"][0]["notebook"]) == jp_root_dir / "team" / "daily.ipynb"
    assert reply.data["schedule_list"][0]["trigger"]["every"] == 3600
    # the same spec without "dir" names a notebook that is not there
    message = (await api("POST", "pipelines", body={"spec": spec})).error(422, "invalid_spec")
    assert "tasks.daily.notebook" in message and "not found" in message
    names = [p["name"] for p in (await api("GET", "pipelines")).data["pipelines"]]
    assert sorted(names) == ["daily", "hello"]


async def test_register_refuses_malformed_requests_and_specs(api, jp_root_dir):
    sales_pipeline(jp_root_dir)
    assert "not JSON" in (await api("POST", "pipelines", body="{not json")).error(400, "bad_json")
    assert "JSON object" in (await api("POST", "pipelines", body="[1, 2]")).error(400, "bad_json")
    both = {"path": "sales/pipeline.yaml", "spec": hello_spec(jp_root_dir)}
    assert "exactly one" in (await api("POST", "pipelines", body=both)).error(400, "bad_request")
    assert "exactly one" in (await api("POST", "pipelines", body={})).error(400, "bad_request")
    assert "body.path" in (await api("POST", "pipelines", body={"path": 3})).error(400, "bad_request")
    assert "body.spec" in (await api("POST", "pipelines", body={"spec": "name: x"})).error(400, "bad_request")

    message = (await api("POST", "pipelines", body={"path": "nosuch/pipeline.yaml"})).error(404, "not_found")
    assert "nosuch/pipeline.yaml" in message

    bad = {"name": "bad", "tasks": {"a": {"notebook": "report.ipynb", "retries": -1}}}
    assert "tasks.a.retries" in (await api("POST", "pipelines", body={"spec": bad})).error(422, "invalid_spec")
    typo = {"name": "bad", "tasks": {"a": {"notebook": "report.ipynb", "upstrem": []}}}
    message = (await api("POST", "pipelines", body={"spec": typo})).error(422, "invalid_spec")
    assert "tasks.a.upstrem" in message and "did you mean 'upstream'" in message
    cycle = {"name": "bad", "tasks": {"a": {"notebook": "report.ipynb", "upstream": ["a"]}}}
    assert "tasks.a.upstream" in (await api("POST", "pipelines", body={"spec": cycle})).error(422)
    bad_tz = {**hello_spec(jp_root_dir, "bad"), "schedules": [{"cron": "0 6 * * *", "timezone": "Mars/Base"}]}
    message = (await api("POST", "pipelines", body={"spec": bad_tz})).error(422, "invalid_spec")
    assert "Mars/Base" in message
    # nothing was registered by any of these
    assert (await api("GET", "pipelines")).data == {"pipelines": []}


async def test_register_refuses_paths_outside_the_server_root(api, jp_root_dir):
    root = jp_root_dir.resolve()
    sales_pipeline(root)
    outside = sales_pipeline(root.parent, "elsewhere")  # a valid pipeline, but not under the root
    sibling = sales_pipeline(root.parent / f"{root.name}2", ".")  # <root>2/pipeline.yaml
    (root / "link").symlink_to(outside.parent, target_is_directory=True)
    (root / "link.yaml").symlink_to(outside)

    refused = {
        "../elsewhere/pipeline.yaml": "leaves the server root",
        str(root / "sales" / "pipeline.yaml"): "relative to the server root",  # absolute, even inside
        "~/pipeline.yaml": "relative to the server root",
        "link/pipeline.yaml": "leaves the server root",
        "link.yaml": "leaves the server root",
        f"../{root.name}2/pipeline.yaml": "leaves the server root",
        "sales/../../elsewhere/pipeline.yaml": "leaves the server root",
    }
    for path, why in refused.items():
        message = (await api("POST", "pipelines", body={"path": path})).error(422, "path_outside_root")
        assert why in message, (path, message)
    assert sibling.exists() and outside.exists()

    # a spec's "dir" is confined the same way
    spec = hello_spec(root)
    message = (await api("POST", "pipelines", body={"spec": spec, "dir": ".."})).error(422, "path_outside_root")
    assert "leaves the server root" in message

    # notebooks outside the root: in a spec given as data, in a file, through a symlink
    write_notebook(root.parent / "x.ipynb", "x = 1")
    escape = {"name": "escape", "tasks": {"x": {"notebook": "../x.ipynb"}}}
    message = (await api("POST", "pipelines", body={"spec": escape})).error(422, "invalid_spec")
    assert "tasks.x.notebook" in message and "outside the server root" in message
    write_yaml(root / "escape.yaml", "name: escape\ntasks:\n  x: ../x.ipynb\n")
    message = (await api("POST", "pipelines", body={"path": "escape.yaml"})).error(422, "invalid_spec")
    assert "tasks.x.notebook" in message and "outside the server root" in message
    (root / "x-link.ipynb").symlink_to(root.parent / "x.ipynb")
    linked = {"name": "escape", "tasks": {"x": {"notebook": "x-link.ipynb"}}}
    message = (await api("POST", "pipelines", body={"spec": linked})).error(422, "invalid_spec")
    assert "outside the server root" in message

    assert (await api("GET", "pipelines")).data == {"pipelines": []}
    # the inside one is fine
    assert (await api("POST", "pipelines", body={"path": "sales/pipeline.yaml"})).code == 201


async def test_delete_a_pipeline(api, jp_root_dir):
    sales_pipeline(jp_root_dir)
    detail = (await api("POST", "pipelines", body={"path": "sales/pipeline.yaml"})).data
    schedule_id = detail["schedule_list"][0]["id"]
    await register_hello(api, jp_root_dir)

    run_id = await queue_run(api, "hello")
    message = (await api("DELETE", "pipelines", "hello")).error(409, "conflict")
    assert run_id in message and "queued" in message
    assert (await api("GET", "pipelines", "hello")).code == 200  # still there

    gone = await api("DELETE", "pipelines", "sales")
    assert gone.code == 204 and gone.body == b""
    (await api("GET", "pipelines", "sales")).error(404, "not_found")
    (await api("DELETE", "pipelines", "sales")).error(404, "not_found")
    # its schedules went with it
    (await api("GET", "schedules", str(schedule_id))).error(404, "not_found")
    assert (await api("GET", "schedules")).data == {"schedules": []}

    # once the run is cancelled the pipeline can go; the run stays readable
    assert (await api("POST", "runs", run_id, "cancel")).code == 200
    assert (await api("DELETE", "pipelines", "hello")).code == 204
    assert (await api("GET", "pipelines")).data == {"pipelines": []}
    assert (await api("GET", "runs", run_id)).data["state"] == "cancelled"


# -- triggering runs ----------------------------------------------------------------------------------


async def test_trigger_refuses_unknown_pipelines_and_bad_params(api, jp_root_dir):
    await register_hello(api, jp_root_dir)
    message = (await api("POST", "pipelines", "nosuch", "runs", body={"params": {}})).error(404, "not_found")
    assert "nosuch" in message
    message = (await api("POST", "pipelines", "hello", "runs", body={"params": {"region": "{{ nosuch }}"}})).error(
        422, "invalid_spec"
    )
    assert "region" in message and "template error" in message
    message = (await api("POST", "pipelines", "hello", "runs", body={"params": {"upstream": 1}})).error(422)
    assert "'upstream' is set by nbsched" in message
    assert "body.params" in (await api("POST", "pipelines", "hello", "runs", body={"params": [1]})).error(400)
    (await api("POST", "pipelines", "hello", "runs", body="nope")).error(400, "bad_json")
    assert (await api("GET", "runs")).data["runs"] == []  # no run was created

    # no body at all: a run with the pipeline's own params
    reply = await api("POST", "pipelines", "hello", "runs")
    assert reply.code == 201
    run = (await api("GET", "runs", reply.data["run_id"])).data
    assert run["state"] == "queued" and run["trigger"] == "manual" and run["params"] == {}
    assert run["tasks"]["report"]["state"] == "pending"


async def test_rest_refuses_numbers_json_cannot_hold_before_storing_them(api, jp_root_dir):
    await register_hello(api, jp_root_dir)
    for value in ("NaN", "Infinity", "[1, -Infinity]"):  # Python's JSON reads them; PostgreSQL's refused them
        body = f'{{"params": {{"region": {value}}}}}'
        message = (await api("POST", "pipelines", "hello", "runs", body=body)).error(422, "invalid_spec")
        assert "is not a number JSON can hold" in message, message
        body = f'{{"pipeline": "hello", "every": "1h", "params": {{"region": {value}}}}}'
        assert "is not a number JSON can hold" in (await api("POST", "schedules", body=body)).error(422)
    spec = {**hello_spec(jp_root_dir, "odd"), "params": {"region": float("nan")}}
    message = (await api("POST", "pipelines", body={"spec": spec})).error(422, "invalid_spec")
    assert "params.region: nan is not a number JSON can hold" in message, message
    assert (await api("GET", "runs")).data["runs"] == [] and (await api("GET", "schedules")).data["schedules"] == []


def shell_template(marker: Path) -> str:
    """A template that, rendered by a plain Jinja environment, runs a shell command creating ``marker``."""
    return "{{ cycler.__init__.__globals__.os.popen('touch " + str(marker) + "').read() }}"


async def test_templates_in_rest_bodies_cannot_run_code_in_the_server(api, jp_root_dir, tmp_path):
    await register_hello(api, jp_root_dir)
    marker = tmp_path / "PWNED"
    evil = {"region": shell_template(marker)}
    message = (await api("POST", "pipelines", "hello", "runs", body={"params": evil})).error(422, "invalid_spec")
    assert message.startswith("-p region: template error in") and "unsafe" in message, message
    message = (await api("POST", "schedules", body={"pipeline": "hello", "every": "1h", "params": evil})).error(422)
    assert "region: template error in" in message and "unsafe" in message, message
    big = {"region": "{{ 'x' * 10**9 }}"}
    message = (await api("POST", "pipelines", "hello", "runs", body={"params": big})).error(422, "invalid_spec")
    assert "'*' would make 1,000,000,000 characters (at most 1,000,000)" in message, message
    assert not marker.exists()
    assert (await api("GET", "runs")).data["runs"] == [] and (await api("GET", "schedules")).data["schedules"] == []


def told_to_kernels(root: Path) -> dict[str, str]:
    root = root.resolve()
    return {
        "NBSCHED_DB_URL": f"sqlite:///{root / '.nbsched' / 'nbsched.db'}",
        "NBSCHED_RUNS_DIR": str(root / "nbsched-runs"),
    }


async def kernel_environment(serverapp: Any, kernel_id: str, names: list[str]) -> dict[str, str | None]:
    """The variables ``names`` as code in the server's kernel ``kernel_id`` sees them."""
    client = serverapp.kernel_manager.get_kernel(kernel_id).client()
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=60)
        seen: list[str] = []
        code = f"import json, os\nprint(json.dumps({{k: os.environ.get(k) for k in {sorted(names)!r}}}))"
        await client.execute_interactive(
            code,
            timeout=60,
            output_hook=lambda msg: (
                seen.append(msg["content"].get("text", "")) if msg["msg_type"] == "stream" else None
            ),
        )
    finally:
        client.stop_channels()
    return json.loads("".join(seen))


@pytest.mark.kernel
async def test_kernels_of_the_server_are_told_its_database_and_outputs(jp_fetch, jp_serverapp, jp_root_dir):
    """Through the kernel manager: the server's own environment stays as it was."""
    import os

    told = told_to_kernels(jp_root_dir)
    reply = await jp_fetch("api", "kernels", method="POST", body=json.dumps({"name": "python3"}))
    kernel_id = json.loads(reply.body)["id"]
    try:
        # what `%nbsched` and `nbsched.run` in a notebook discover
        assert await kernel_environment(jp_serverapp, kernel_id, list(told)) == told
    finally:
        await jp_fetch("api", "kernels", kernel_id, method="DELETE")
    assert all(os.environ.get(name) != value for name, value in told.items())


@pytest.mark.kernel
async def test_a_notebook_renamed_keeps_its_kernel_told_after_a_restart(
    jp_fetch, jp_serverapp, jp_root_dir, monkeypatch
):
    told = told_to_kernels(jp_root_dir)
    monkeypatch.setenv("NBSCHED_DB_URL", "sqlite:////elsewhere/nbsched.db")  # what the server's shell had
    body = {"path": "a.ipynb", "type": "notebook", "kernel": {"name": "python3"}}
    session = json.loads((await jp_fetch("api", "sessions", method="POST", body=json.dumps(body))).body)
    kernel_id = session["kernel"]["id"]
    try:
        await jp_fetch("api", "sessions", session["id"], method="PATCH", body=json.dumps({"path": "b.ipynb"}))
        await jp_fetch("api", "kernels", kernel_id, "restart", method="POST", body="")
        assert await kernel_environment(jp_serverapp, kernel_id, list(told)) == told
    finally:
        await jp_fetch("api", "sessions", session["id"], method="DELETE")


@pytest.mark.kernel
async def test_a_triggered_run_executes_in_the_server_with_its_params(api, jp_fetch, jp_root_dir, daemon):
    health = (await api("GET", "health")).data
    assert health["scheduler"] is True and isinstance(health["runner"], str) and health["runner"]
    await register_hello(api, jp_root_dir)

    reply = await api("POST", "pipelines", "hello", "runs", body={"params": {"region": "east"}})
    assert reply.code == 201
    run_id = reply.data["run_id"]
    run = await finished_run(api, run_id)
    assert run["state"] == "success", run
    assert run["params"] == {"region": "east"} and run["trigger"] == "manual"
    task = run["tasks"]["report"]
    assert task["state"] == "success" and task["outputs"] == {"region": "east"}
    (only_try,) = task["tries"]  # run by the server's own runner
    assert only_try["state"] == "success" and only_try["runner"] == health["runner"] and only_try["error"] is None
    # the output notebook is where JupyterLab can open it (not in a hidden folder)
    where = Path(task["output_path"]).relative_to(jp_root_dir.resolve())
    assert where.parts[:3] == ("nbsched-runs", "hello", run_id)
    opened = await jp_fetch("api", "contents", *where.parts)
    assert json.loads(opened.body)["type"] == "notebook"
    # no longer retryable or cancellable
    assert "success" in (await api("POST", "runs", run_id, "cancel")).error(409, "conflict")
    assert "success" in (await api("POST", "runs", run_id, "retry")).error(409, "conflict")

    outputs = await api("GET", "runs", run_id, "tasks", "report", "outputs")
    assert outputs.code == 200
    assert outputs.data == {"run_id": run_id, "task": "report", "outputs": {"region": "east"}}

    notebook = await api("GET", "runs", run_id, "tasks", "report", "notebook")
    assert notebook.code == 200
    assert notebook.headers["Content-Type"] == "application/x-ipynb+json"
    assert 'filename="report.ipynb"' in notebook.headers["Content-Disposition"]
    nb = nbformat.reads(notebook.body.decode(), as_version=4)
    nbformat.validate(nb)
    text = json.dumps(nb)
    assert "sales report for east" in text and 'region = \\"east\\"' in text

    report = await api("GET", "runs", run_id, "tasks", "report", "report")
    assert report.code == 200
    assert report.headers["Content-Type"].startswith("text/html")
    assert "sandbox" in report.headers["Content-Security-Policy"]
    html = report.body.decode()
    assert "sales report for east" in html and "the regional sales report" in html  # output and code
    no_code = await api("GET", "runs", run_id, "tasks", "report", "report", params={"hide_code": "1"})
    assert no_code.code == 200 and "sandbox" in no_code.headers["Content-Security-Policy"]
    assert "sales report for east" in no_code.body.decode()
    assert "the regional sales report" not in no_code.body.decode()

    for what in ("notebook", "report", "outputs"):
        message = (await api("GET", "runs", run_id, "tasks", "nosuch", what)).error(404, "not_found")
        assert "nosuch" in message
        (await api("GET", "runs", "nosuch-run", "tasks", "report", what)).error(404, "not_found")

    # a repair: the task again, with a value for it alone; mistakes are 400 (shape) or 422
    assert "body.tasks" in (await api("POST", "runs", run_id, "retry", body={"tasks": "report"})).error(400)
    unknown = await api("POST", "runs", run_id, "retry", body={"tasks": ["reprot"]})
    assert "did you mean 'report'" in unknown.error(422, "invalid")
    repair = await api("POST", "runs", run_id, "retry", body={"tasks": ["report"], "params": {"region": "west"}})
    assert repair.code == 200 and repair.data == {"run_id": run_id, "tasks": ["report"]}
    run = await finished_run(api, run_id)
    assert run["state"] == "success" and run["tasks"]["report"]["outputs"] == {"region": "west"}
    assert run["params"] == {"region": "east"} and run["tasks"]["report"]["params"] == {"region": "west"}
    assert [t["try_number"] for t in run["tasks"]["report"]["tries"]] == [1, 2]
    assert run["repairs"][0]["tasks"] == ["report"] and run["repairs"][0]["params"] == {"region": "west"}


@pytest.mark.kernel
@pytest.mark.kernel
async def test_the_run_view_keeps_papermills_warnings_with_each_task(api, jp_root_dir, daemon):
    write_notebook(jp_root_dir / "plain.ipynb", "x = 1", params=None)  # no parameters cell
    spec = {"name": "plain", "params": {"msg": "hi"}, "tasks": {"plain": "plain.ipynb"}}
    assert (await api("POST", "pipelines", body={"spec": spec})).code == 201
    run = await finished_run(api, (await api("POST", "pipelines", "plain", "runs")).data["run_id"])
    assert run["tasks"]["plain"]["warnings"] == [
        "Passed unknown parameter: msg",
        "Input notebook does not contain a cell with tag 'parameters'",
    ]


async def test_run_report_page_links_the_task_routes(api, jp_root_dir, daemon):
    await register_hello(api, jp_root_dir)
    run_id = await queue_run(api, "hello", region="<east>")
    assert (await finished_run(api, run_id))["state"] == "success"

    page = await api("GET", "runs", run_id, "report")
    assert page.code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert "sandbox" in page.headers["Content-Security-Policy"]
    html = page.body.decode()
    assert f"hello · run {run_id} · success" in html and "&#34;&lt;east&gt;&#34;" in html
    assert 'data-task="report" data-state="success"' in html and '<rect class="bar" data-task="report"' in html
    # the task links are relative to the page's URL, so they reach the task routes beside it
    page_url = "/" + "/".join((*API, "runs", run_id, "report"))
    for hide, kind in itertools.product(("0", "1"), ("report", "notebook")):
        text = (
            page.body.decode()
            if hide == "0"
            else (await api("GET", "runs", run_id, "report", params={"hide_code": hide})).body.decode()
        )
        [href] = re.findall(rf'<a href="([^"]+)">{kind}</a>', text)
        target = urlsplit(urljoin(page_url, unescape(href)))
        assert target.path == page_url.replace("/report", f"/tasks/report/{kind}"), href
        reply = await api("GET", *target.path.split("/")[4:], params=dict(parse_qsl(target.query)) or None)
        assert reply.code == 200, (href, reply.body)
        if kind == "report":
            assert "sales report for &lt;east&gt;" in reply.body.decode()
            assert ("the regional sales report" in reply.body.decode()) == (hide == "0")

    message = (await api("GET", "runs", "nosuch", "report")).error(404, "not_found")
    assert "nosuch" in message


# -- schedules ----------------------------------------------------------------------------------------


async def test_schedules_create_list_change_and_delete(api, jp_root_dir):
    await register_hello(api, jp_root_dir)
    await register_hello(api, jp_root_dir, "other")

    reply = await api(
        "POST",
        "schedules",
        body={"pipeline": "hello", "cron": "0 6 * * 1-5", "timezone": "Europe/Paris", "params": {"region": "west"}},
    )
    assert reply.code == 201, reply.body
    cron = reply.data
    assert cron["pipeline"] == "hello" and cron["enabled"] is True and cron["params"] == {"region": "west"}
    assert "0 6 * * 1-5" in cron["description"] and "Europe/Paris" in cron["description"]
    local = datetime.fromisoformat(cron["next_fire_local"])
    assert (local.hour, local.minute) == (6, 0) and local.weekday() < 5
    assert local.utcoffset() in (timedelta(hours=1), timedelta(hours=2))
    assert datetime.fromisoformat(cron["next_fire_at"]) > datetime.now(timezone.utc)

    every = await api("POST", "schedules", body={"pipeline": "other", "every": "10m"})
    assert every.code == 201 and every.data["trigger"]["every"] == 600
    first_fire = datetime.fromisoformat(every.data["next_fire_at"]) - datetime.now(timezone.utc)
    assert timedelta(minutes=9) < first_fire <= timedelta(minutes=10)

    ids = sorted(s["id"] for s in (await api("GET", "schedules")).data["schedules"])
    assert ids == sorted([cron["id"], every.data["id"]])
    only = (await api("GET", "schedules", params={"pipeline": "hello"})).data["schedules"]
    assert [s["id"] for s in only] == [cron["id"]]
    assert (await api("GET", "schedules", params={"pipeline": "nosuch"})).data == {"schedules": []}
    assert (await api("GET", "pipelines", "hello")).data["schedule_list"] == only

    one = await api("GET", "schedules", str(cron["id"]))
    assert one.code == 200 and one.data == cron

    # PATCH: disable, then a new cron keeps the zone, the params and the disabled state
    off = await api("PATCH", "schedules", str(cron["id"]), body={"enabled": False})
    assert off.code == 200 and off.data["enabled"] is False
    moved = await api("PATCH", "schedules", str(cron["id"]), body={"cron": "30 7 * * *"})
    assert moved.code == 200, moved.body
    assert moved.data["trigger"]["cron"] == "30 7 * * *" and moved.data["trigger"]["timezone"] == "Europe/Paris"
    assert moved.data["enabled"] is False and moved.data["params"] == {"region": "west"}
    local = datetime.fromisoformat(moved.data["next_fire_local"])
    assert (local.hour, local.minute) == (7, 30)
    assert (await api("GET", "schedules", str(cron["id"]))).data == moved.data

    # pause / resume
    paused = await api("POST", "schedules", str(every.data["id"]), "pause")
    assert paused.code == 200 and paused.data["enabled"] is False
    assert (await api("GET", "schedules", str(every.data["id"]))).data["enabled"] is False
    resumed = await api("POST", "schedules", str(every.data["id"]), "resume")
    assert resumed.code == 200 and resumed.data["enabled"] is True
    assert datetime.fromisoformat(resumed.data["next_fire_at"]) > datetime.now(timezone.utc)

    # delete
    gone = await api("DELETE", "schedules", str(cron["id"]))
    assert gone.code == 204 and gone.body == b""
    (await api("GET", "schedules", str(cron["id"]))).error(404, "not_found")
    (await api("DELETE", "schedules", str(cron["id"]))).error(404, "not_found")
    assert [s["id"] for s in (await api("GET", "schedules")).data["schedules"]] == [every.data["id"]]


async def test_schedule_errors(api, jp_root_dir):
    await register_hello(api, jp_root_dir)
    assert "body.pipeline" in (await api("POST", "schedules", body={"cron": "0 6 * * *"})).error(400, "bad_request")
    (await api("POST", "schedules", body={"pipeline": 5, "cron": "0 6 * * *"})).error(400, "bad_request")
    (await api("POST", "schedules", body="nope")).error(400, "bad_json")
    message = (await api("POST", "schedules", body={"pipeline": "nosuch", "cron": "0 6 * * *"})).error(404)
    assert "nosuch" in message

    message = (await api("POST", "schedules", body={"pipeline": "hello", "cron": "0 25 * * *"})).error(
        422, "invalid_schedule"
    )
    assert "0 25 * * *" in message
    message = (
        await api("POST", "schedules", body={"pipeline": "hello", "cron": "0 6 * * *", "timezone": "Europe/Pariss"})
    ).error(422, "invalid_schedule")
    assert "Europe/Pariss" in message and "did you mean 'Europe/Paris'?" in message
    message = (await api("POST", "schedules", body={"pipeline": "hello", "cronn": "0 6 * * *"})).error(400)
    assert message == "body.cronn: unknown field (did you mean 'cron'?)"
    message = (
        await api("POST", "schedules", body={"pipeline": "hello", "every": "1h", "params": {"region": "{{ nosuch }}"}})
    ).error(422)
    assert "region" in message
    assert (await api("GET", "schedules")).data == {"schedules": []}

    sid = str((await api("POST", "schedules", body={"pipeline": "hello", "every": "1h"})).data["id"])
    (await api("PATCH", "schedules", sid, body={"cron": "nope"})).error(422, "invalid_schedule")
    (await api("PATCH", "schedules", sid, body={"timezone": "Nowhere/City"})).error(422, "invalid_schedule")
    assert "cannot be changed" in (await api("PATCH", "schedules", sid, body={"pipeline": "x"})).error(400)
    (await api("PATCH", "schedules", sid, body="{")).error(400, "bad_json")
    assert (await api("GET", "schedules", sid)).data["trigger"]["every"] == 3600  # unchanged

    # 2**31: over PostgreSQL's INTEGER, a 500; "+1" was schedule 1 (int() reads it)
    for missing in ("999", str(2**31), str(2**63), f"+{sid}"):
        (await api("GET", "schedules", missing)).error(404, "not_found")
        (await api("PATCH", "schedules", missing, body={"enabled": False})).error(404, "not_found")
        (await api("DELETE", "schedules", missing)).error(404, "not_found")
        (await api("POST", "schedules", missing, "pause")).error(404, "not_found")
        (await api("POST", "schedules", missing, "resume")).error(404, "not_found")


async def test_a_schedule_changes_the_fields_of_its_own_kind(api, jp_root_dir):
    await register_hello(api, jp_root_dir)
    await register_hello(api, jp_root_dir, "other")
    (jp_root_dir / "incoming").mkdir()

    async def made(**fields: Any) -> str:
        reply = await api("POST", "schedules", body={"pipeline": "hello", **fields})
        assert reply.code == 201, reply.body
        return str(reply.data["id"])

    async def patch(sid: str, **changes: Any) -> Reply:
        return await api("PATCH", "schedules", sid, body=changes)

    # a field of the schedule's kind changes alone (a zone alone was "a schedule needs one of cron ...")
    cron = await made(cron="0 6 * * *", timezone="Europe/Paris")
    tokyo = await patch(cron, timezone="Asia/Tokyo")
    assert tokyo.code == 200, tokyo.body
    assert tokyo.data["trigger"] == {"cron": "0 6 * * *", "timezone": "Asia/Tokyo"}
    assert datetime.fromisoformat(tokyo.data["next_fire_local"]).hour == 6
    after = await made(after="other")
    assert (await patch(after, state="failed")).data["trigger"] == {"after": "other", "state": "failed"}
    files = await made(files="incoming/*.csv", poll="10s")
    changed = (await patch(files, poll="5s", existing=True)).data["trigger"]
    assert (changed["files"], changed["poll"], changed["existing"]) == ("incoming/*.csv", 5.0, True)

    # a field of another kind: one line naming it (a state on a files schedule was dropped silently)
    message = (await patch(files, state="failed")).error(422, "invalid_schedule")
    assert (
        message == "schedule.state: goes with after, and this is a files schedule (give after too, to change its kind)"
    )
    message = (await patch(cron, poll="5s")).error(422, "invalid_schedule")
    assert message.startswith("schedule.poll: goes with files, and this is a cron schedule")
    assert "start: goes with every" in (await patch(cron, start="2026-01-01T00:00:00")).error(422)
    assert (await api("GET", "schedules", cron)).data["trigger"]["timezone"] == "Asia/Tokyo"  # unchanged

    # a new kind keeps what goes with it: the zone of a cron made every, nothing of a cron made after
    every = (await patch(cron, every="1h")).data["trigger"]
    assert (every["every"], every["timezone"]) == (3600, "Asia/Tokyo")
    assert (await patch(cron, after="other")).data["trigger"] == {"after": "other", "state": "success"}
    back = await patch(after, cron="@daily", timezone="UTC")
    assert back.code == 200 and back.data["trigger"] == {"cron": "@daily", "timezone": "UTC"}


@pytest.mark.kernel
async def test_a_schedule_created_over_rest_fires_in_the_server(api, jp_root_dir, daemon):
    await register_hello(api, jp_root_dir)
    reply = await api("POST", "schedules", body={"pipeline": "hello", "every": "1s", "params": {"region": "south"}})
    assert reply.code == 201, reply.body
    sid = reply.data["id"]

    async def scheduled() -> list[dict[str, Any]]:
        return [
            r
            for r in (await api("GET", "runs", params={"pipeline": "hello"})).data["runs"]
            if r["trigger"] == "schedule"
        ]

    first = (await wait_until(scheduled, bool, timeout=30, what="a scheduled run"))[-1]
    assert (await api("POST", "schedules", str(sid), "pause")).code == 200  # one fire is enough
    run = await finished_run(api, first["run_id"])
    assert run["state"] == "success", run
    assert run["schedule_id"] == sid and run["trigger"] == "schedule"
    assert run["tasks"]["report"]["outputs"] == {"region": "south"}
    assert (await api("GET", "schedules", str(sid))).data["last_fire_at"] is not None
    # end what else fired before the pause, so the server stops at once
    for other in (await api("GET", "runs", params={"pipeline": "hello"})).data["runs"]:
        if other["state"] in ("queued", "running"):
            assert (await api("POST", "runs", other["run_id"], "cancel")).code in (200, 409)


# -- runs ---------------------------------------------------------------------------------------------


async def test_list_runs_with_filters_and_pages(api, jp_root_dir):
    await register_hello(api, jp_root_dir)
    await register_hello(api, jp_root_dir, "other")
    before = datetime.now(timezone.utc)
    created = []
    for i in range(5):
        created.append(await queue_run(api, "hello", region=f"r{i}"))
        await asyncio.sleep(0.01)
    other = await queue_run(api, "other")

    everything = (await api("GET", "runs")).data
    assert everything["next_cursor"] is None
    assert [r["run_id"] for r in everything["runs"]] == [other, *reversed(created)]  # newest first

    hello = (await api("GET", "runs", params={"pipeline": "hello"})).data["runs"]
    assert [r["run_id"] for r in hello] == list(reversed(created))
    assert [r["params"]["region"] for r in hello] == ["r4", "r3", "r2", "r1", "r0"]
    assert (await api("GET", "runs", params={"pipeline": "nosuch"})).data == {"runs": [], "next_cursor": None}

    # pages of two: every run once, in order, and no cursor after the last page
    seen, cursor, pages = [], None, 0
    while True:
        params = {"pipeline": "hello", "limit": "2", **({"cursor": cursor} if cursor else {})}
        page = (await api("GET", "runs", params=params)).data
        pages += 1
        assert len(page["runs"]) <= 2
        seen += [r["run_id"] for r in page["runs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert pages < 10
    assert seen == list(reversed(created)) and pages == 3

    # state
    assert (await api("POST", "runs", created[1], "cancel")).code == 200
    cancelled = (await api("GET", "runs", params={"state": "cancelled"})).data["runs"]
    assert [r["run_id"] for r in cancelled] == [created[1]]
    queued = (await api("GET", "runs", params={"state": "queued", "pipeline": "hello"})).data["runs"]
    assert {r["run_id"] for r in queued} == set(created) - {created[1]}
    assert (await api("GET", "runs", params={"state": "success"})).data["runs"] == []

    # since / until: ISO date-times with any zone
    middle = datetime.fromisoformat(hello[2]["created_at"])  # created[2]
    plus5 = middle.astimezone(timezone(timedelta(hours=5))).isoformat()
    zulu = middle.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    since = (await api("GET", "runs", params={"since": plus5, "pipeline": "hello"})).data["runs"]
    assert [r["run_id"] for r in since] == [created[4], created[3], created[2]]
    until = (await api("GET", "runs", params={"until": zulu, "pipeline": "hello"})).data["runs"]
    assert [r["run_id"] for r in until] == [created[1], created[0]]
    window = (
        await api(
            "GET", "runs", params={"since": before.isoformat(), "until": (before + timedelta(hours=1)).isoformat()}
        )
    ).data["runs"]
    assert len(window) == 6
    future = (before + timedelta(hours=1)).isoformat()
    assert (await api("GET", "runs", params={"since": future})).data["runs"] == []


async def test_list_runs_refuses_bad_queries(api, jp_root_dir):
    await register_hello(api, jp_root_dir)
    await queue_run(api, "hello")
    assert "state 'done'" in (await api("GET", "runs", params={"state": "done"})).error(400, "bad_request")
    for limit in ("0", "501", "-1", "ten", "2.5"):
        message = (await api("GET", "runs", params={"limit": limit})).error(400, "bad_request")
        assert "limit" in message, limit
    assert len((await api("GET", "runs", params={"limit": "500"})).data["runs"]) == 1
    naive_cursor = base64.urlsafe_b64encode(b"2026-01-01T00:00:00|x").decode()
    not_a_date = base64.urlsafe_b64encode(b"yesterday|x").decode()
    assert "cursor 'garbage!'" in (await api("GET", "runs", params={"cursor": "garbage!"})).error(400, "bad_request")
    # of a cursor's form, but not one the API gave out: forged, or from another API
    far_past = base64.urlsafe_b64encode(b"0001-01-01T00:00:00+14:00|x").decode()  # before year 1 in UTC
    nul = base64.urlsafe_b64encode(b"2026-01-01T00:00:00+00:00|a\x00b").decode()  # PostgreSQL stores no NUL
    for cursor in ("abc", not_a_date, naive_cursor, far_past, nul, base64.urlsafe_b64encode(b"\xff|x").decode()):
        message = (await api("GET", "runs", params={"cursor": cursor})).error(422, "invalid_cursor")
        assert "cursor" in message, cursor
    for name in ("since", "until"):
        assert "ISO" in (await api("GET", "runs", params={name: "yesterday"})).error(400, "bad_request")
        message = (await api("GET", "runs", params={name: "2026-01-01T00:00:00"})).error(400, "bad_request")
        assert "time zone" in message
        # a time the store cannot compare (before year 1 in UTC) was a 500
        for extreme in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"):
            message = (await api("GET", "runs", params={name: extreme})).error(400, "bad_request")
            assert "out of range" in message, extreme


async def test_cancel_and_retry_a_run(api, jp_root_dir):
    sales_pipeline(jp_root_dir)
    assert (await api("POST", "pipelines", body={"path": "sales/pipeline.yaml"})).code == 201
    run_id = await queue_run(api, "sales")
    other = await queue_run(api, "sales")

    one = await api("GET", "runs", run_id)
    assert one.code == 200 and one.data["run_id"] == run_id and one.data["pipeline"] == "sales"
    assert one.data["state"] == "queued" and list(one.data["tasks"]) == ["extract", "report"]
    assert "nosuch" in (await api("GET", "runs", "nosuch")).error(404, "not_found")

    message = (await api("POST", "runs", other, "retry")).error(409, "conflict")
    assert "queued" in message and "only failed or cancelled" in message

    cancelled = await api("POST", "runs", run_id, "cancel")
    assert cancelled.code == 200 and cancelled.data["state"] == "cancelled"
    assert {t["state"] for t in cancelled.data["tasks"].values()} == {"cancelled"}
    assert "cancelled" in (await api("POST", "runs", run_id, "cancel")).error(409, "conflict")
    assert (await api("GET", "runs", other)).data["state"] == "queued"  # the other run is untouched

    retried = await api("POST", "runs", run_id, "retry")
    assert retried.code == 200
    assert retried.data["run_id"] == run_id and sorted(retried.data["tasks"]) == ["extract", "report"]
    again = (await api("GET", "runs", run_id)).data
    assert again["state"] == "queued" and {t["state"] for t in again["tasks"].values()} == {"pending"}

    for action in ("cancel", "retry"):
        (await api("POST", "runs", "nosuch", action)).error(404, "not_found")

    # a queued task has nothing to show yet
    for what in ("notebook", "report"):
        message = (await api("GET", "runs", run_id, "tasks", "report", what)).error(404, "not_found")
        assert "no output notebook" in message
    outputs = await api("GET", "runs", run_id, "tasks", "report", "outputs")
    assert outputs.code == 200 and outputs.data["outputs"] == {}
    (await api("GET", "runs", run_id, "tasks", "nosuch", "outputs")).error(404, "not_found")


async def test_a_path_the_file_system_refuses_is_a_400_not_a_500(jp_fetch):
    # (a NUL after 40 characters kept the server's loop in the old path pattern for hours)
    for bad in ("a\x00b.yaml", "x" * 5000 + ".yaml", "x" * 300 + ".yaml", "x" * 40 + "\x00"):
        body = json.dumps({"path": bad})
        reply = await jp_fetch("nbsched", "api", "v1", "pipelines", method="POST", body=body, raise_error=False)
        assert reply.code == 400, (bad[:20], reply.code, reply.body)
        assert json.loads(reply.body)["message"].startswith("body.path: "), reply.body


# -- hostile input: paths, sizes, nulls, methods ------------------------------------------------------


@pytest.mark.kernel
async def test_a_notebook_swapped_for_a_symlink_after_registering_does_not_run(api, jp_root_dir, daemon, tmp_path):
    root = jp_root_dir.resolve()
    marker = tmp_path / "PWNED"
    write_notebook(root / "swap.ipynb", "x = 1")
    outside = write_notebook(tmp_path / "outside" / "evil.ipynb", f"open({str(marker)!r}, 'w').close()")
    reply = await api("POST", "pipelines", body={"spec": {"name": "swap", "tasks": {"t": "swap.ipynb"}}})
    assert reply.code == 201, reply.body
    (root / "swap.ipynb").unlink()
    (root / "swap.ipynb").symlink_to(outside)

    run = await finished_run(api, await queue_run(api, "swap"))
    assert run["state"] == "failed"
    assert run["tasks"]["t"]["state"] == "failed"
    assert run["tasks"]["t"]["error"] == "tasks.t.notebook: outside the server root"
    assert not marker.exists()


async def test_task_outputs_are_served_only_from_the_runs_folder(api, jp_root_dir, jp_serverapp, tmp_path):
    from sqlalchemy import text

    await register_hello(api, jp_root_dir)
    run_id = await queue_run(api, "hello")
    secret = write_notebook(tmp_path / "secret.ipynb", "password = 'hunter2'")
    (app,) = jp_serverapp.extension_manager.extension_apps["jupyter_ext"]
    service = app.service
    runs = service.config.runs_dir
    link = runs / "hello" / run_id / "report.ipynb"
    link.parent.mkdir(parents=True)
    link.symlink_to(secret)  # a file of the runs folder that became a symlink
    for output_path in (str(secret), str(link), str(runs / "hello" / run_id / ".." / ".." / ".." / "x.ipynb")):
        with service.store.engine.begin() as conn:  # what a tampered database row holds
            conn.execute(
                text("UPDATE task_runs SET output_path = :p WHERE run_id = :r"), {"p": output_path, "r": run_id}
            )
        for what in ("notebook", "report"):
            reply = await api("GET", "runs", run_id, "tasks", "report", what)
            assert reply.code == 404, (output_path, what, reply.code, reply.body[:200])
            assert b"hunter2" not in reply.body
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("secret")) == ["secret.ipynb"]  # no .html


OUTSIDE_NOTEBOOKS = [
    "../../etc/hosts",
    "/etc/hosts",
    "/nonexistent/nothing.ipynb",
    "../outside.json",
    "../outside.txt",
    "../outside.ipynb",
    "link-out.ipynb",
    "../../" * 40 + "etc/passwd",
]


async def test_every_path_outside_the_root_gets_one_identical_answer(api, jp_root_dir):
    root = jp_root_dir.resolve()
    (root.parent / "outside.json").write_text('{"a": 1}')
    (root.parent / "outside.txt").write_text("not json at all")
    write_notebook(root.parent / "outside.ipynb", "x = 1")
    (root / "link-out.ipynb").symlink_to(root.parent / "outside.ipynb")
    answers = set()
    for notebook in OUTSIDE_NOTEBOOKS:
        inline = await api("POST", "pipelines", body={"spec": {"name": "probe", "tasks": {"t": notebook}}})
        write_yaml(root / "probe.yaml", f"name: probe\ntasks:\n  t: {json.dumps(notebook)}\n")
        from_file = await api("POST", "pipelines", body={"path": "probe.yaml"})
        answers.add((inline.code, inline.body))
        answers.add((from_file.code, from_file.body))
    assert answers == {
        (422, b'{"error": "invalid_spec", "message": "spec: tasks.t.notebook: outside the server root"}'),
        (422, b'{"error": "invalid_spec", "message": "probe.yaml: tasks.t.notebook: outside the server root"}'),
    }
    assert (await api("GET", "pipelines")).data == {"pipelines": []}


async def test_register_errors_are_4xx_and_name_paths_relative_to_the_root(api, jp_root_dir):
    root = jp_root_dir.resolve()
    write_notebook(root / "bad" / "ok.ipynb", "x = 1")
    (root / "bad" / "text.ipynb").write_text("not a notebook")
    (root / "bad" / "deep.ipynb").write_text("[" * 100000 + "]" * 100000)
    bad_specs = {
        "name: x\ntasks: {t: {notebook: ok.ipynb\n": "invalid YAML",
        "name: x\ntasks: {t: missing.ipynb}\n": "notebook not found: missing.ipynb",
        "name: x\ntasks: {t: ../bad/../bad/missing.ipynb}\n": "notebook not found: missing.ipynb",
        "name: x\ntasks: {t: text.ipynb}\n": "text.ipynb is not a valid notebook",
        "name: x\ntasks: {t: deep.ipynb}\n": "deep.ipynb is not a valid notebook (nested deeper than 100 levels)",
        "name: x\nparams: {p: '{{ nope }}'}\ntasks: {t: ok.ipynb}\n": "template error",
        "name: x\ntasks: {t: {notebook: ok.ipynb, retries: 1000000000000000000000000000000}}\n": "retries",
        "name: x\ntasks: {t: ok.ipynb}\nschedules: [{cron: '0 99 * * *'}]\n": "bad hour field",
    }
    for text, part in bad_specs.items():
        write_yaml(root / "bad" / "pipeline.yaml", text)
        for path in ("bad/pipeline.yaml", "bad"):
            message = (await api("POST", "pipelines", body={"path": path})).error(422)
            assert message.startswith("bad/pipeline.yaml:") and part in message, (path, message)
            assert str(root) not in message and str(root.parent) not in message, message
    # notebook paths the file system refuses: 422, never a 500
    (root / "loop.ipynb").symlink_to(root / "loop.ipynb")
    for notebook, part in (
        ("a\x00b.ipynb", "contains a NUL character"),
        ("x" * 5000, "5,000 characters"),
        ("x" * 300 + ".ipynb", "File name too long"),
        ("loop.ipynb", "a symlink loop"),
    ):
        message = (await api("POST", "pipelines", body={"spec": {"name": "x", "tasks": {"t": notebook}}})).error(422)
        assert message.startswith("spec: tasks.t.notebook: ") and part in message, message
        assert str(root) not in message
    # as a "path": 400, and the reason without the server's folder
    message = (await api("POST", "pipelines", body={"path": "x" * 300 + ".yaml"})).error(400, "bad_request")
    assert "names of 1 to 63 characters" in message and str(root) not in message
    (root / "loop.yaml").symlink_to(root / "loop.yaml")
    message = (await api("POST", "pipelines", body={"path": "loop.yaml"})).error(400, "bad_path")
    assert str(root) not in message


@pytest.mark.timeout(120)  # an alias bomb kept a server thread busy (390 MB) and never answered
async def test_oversized_and_overdeep_input_is_a_4xx(api, jp_root_dir):
    root = jp_root_dir.resolve()
    await register_hello(api, jp_root_dir)
    laughs = "".join(f"  l{i}: &l{i} [" + ", ".join([f"*l{i - 1}" if i else '"lol"'] * 9) + "]\n" for i in range(9))
    write_yaml(root / "bomb.yaml", "name: bomb\nparams:\n" + laughs + "tasks: {t: report.ipynb}\n")
    message = (await api("POST", "pipelines", body={"path": "bomb.yaml"})).error(422, "invalid_spec")
    assert message.startswith("bomb.yaml:7:") and "more than 50,000 values once aliases are expanded" in message
    with (root / "huge.yaml").open("w") as f:
        f.write("name: huge\ntasks: {t: report.ipynb}\n" + ("#" * 1023 + "\n") * 50 * 1024)
    message = (await api("POST", "pipelines", body={"path": "huge.yaml"})).error(422, "invalid_spec")
    size = (root / "huge.yaml").stat().st_size  # 50 MB
    assert message == f"huge.yaml: {size:,} bytes: a spec may have at most 1,000,000 bytes (1 MB)"

    deep = "[" * 20000 + "]" * 20000
    message = (
        await api(
            "POST",
            "pipelines",
            body='{"spec": {"name": "d", "params": {"x": ' + deep + '}, "tasks": {"t": "report.ipynb"}}}',
        )
    ).error(400, "bad_json")
    assert message == "request body: nested deeper than 100 levels"
    message = (await api("POST", "pipelines", "hello", "runs", body='{"params": {"x": ' + deep + "}}")).error(400)
    assert message == "request body: nested deeper than 100 levels"
    nested: Any = 1
    for _ in range(150):  # under the body's bound of brackets? no: 150 levels, built as data
        nested = [nested]
    message = (await api("POST", "pipelines", body={"spec": {**hello_spec(root, "n"), "params": {"x": nested}}})).error(
        400
    )
    assert "nested deeper than 100 levels" in message
    big = {"spec": {**hello_spec(root, "big"), "params": {"x": "y" * 1_100_000}}}
    message = (await api("POST", "pipelines", body=big)).error(413, "too_large")
    assert message.startswith("request body of 1,100,") and message.endswith("at most 1,000,000 (1 MB)")
    message = (await api("POST", "pipelines", "hello", "runs", body={"params": {"x": "y" * 1_100_000}})).error(413)
    assert (await api("GET", "runs")).data["runs"] == []
    assert [p["name"] for p in (await api("GET", "pipelines")).data["pipelines"]] == ["hello"]


async def test_null_and_empty_fields_are_refused_not_taken_as_absent(api, jp_root_dir):
    root = jp_root_dir.resolve()
    write_notebook(root / "nb.ipynb", "x = 1")
    write_yaml(root / "pipeline.yaml", "name: at-root\ntasks: {t: nb.ipynb}\n")  # what path "" registered
    await register_hello(api, jp_root_dir)
    assert "body.path" in (await api("POST", "pipelines", body={"path": ""})).error(400, "bad_request")
    assert "body.spec" in (await api("POST", "pipelines", body={"spec": None})).error(400, "bad_request")
    assert "body.spec" in (await api("POST", "pipelines", body={"spec": None, "path": "pipeline.yaml"})).error(400)
    assert "body.params" in (await api("POST", "pipelines", "hello", "runs", body={"params": None})).error(400)
    schedule = {"pipeline": "hello", "every": "1h", "params": None}
    assert "body.params: null" in (await api("POST", "schedules", body=schedule)).error(400, "bad_request")
    sid = str((await api("POST", "schedules", body={"pipeline": "hello", "every": "1h"})).data["id"])
    assert "body.enabled: null" in (await api("PATCH", "schedules", sid, body={"enabled": None})).error(400)
    assert (await api("GET", "schedules", sid)).data["enabled"] is True
    assert [p["name"] for p in (await api("GET", "pipelines")).data["pipelines"]] == ["hello"]
    assert (await api("GET", "runs")).data["runs"] == []
    assert len((await api("GET", "schedules")).data["schedules"]) == 1


async def test_an_unsupported_method_is_a_405_that_says_what_is_allowed(jp_fetch):
    for method, path, allowed in (
        ("TRACE", "pipelines", "GET, POST, OPTIONS"),
        ("PUT", "pipelines", "GET, POST, OPTIONS"),
        ("TRACE", "runs/some-run", "GET, OPTIONS"),
        ("HEAD", "schedules/1", "GET, PATCH, DELETE, OPTIONS"),
    ):
        reply = await jp_fetch(*API, *path.split("/"), method=method, raise_error=False, allow_nonstandard_methods=True)
        assert reply.code == 405, (method, path, reply.code)
        assert reply.headers.get("Allow") == allowed, (method, path, reply.headers.get("Allow"))
        if method != "HEAD":
            assert json.loads(reply.body)["error"] == "method_not_allowed"


async def test_a_misspelt_query_parameter_is_refused_not_ignored(api, jp_root_dir):
    await register_hello(api, jp_root_dir)
    await queue_run(api, "hello")
    message = (await api("GET", "runs", params={"pipline": "nosuch"})).error(400, "bad_request")
    assert message.startswith("unknown query parameter 'pipline' (known: pipeline, state")
    (await api("GET", "schedules", params={"pipelin": "x"})).error(400, "bad_request")
    assert len((await api("GET", "runs", params={"pipeline": "hello"})).data["runs"]) == 1
    run_id = (await api("GET", "runs")).data["runs"][0]["run_id"]  # the reports take hide_code, and only it
    message = (await api("GET", "runs", run_id, "report", params={"hide_cod": "1"})).error(400, "bad_request")
    assert "'hide_cod' (known: hide_code" in message
    (await api("GET", "runs", run_id, "tasks", "report", "report", params={"hidecode": "1"})).error(400)
