"""Event schedules through the Jupyter server: added over REST, confined to the server's root,
fired by the server's own daemon."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from conftest import write_notebook
from test_server import api, daemon, finished_run, jp_server_config, wait_until  # noqa: F401 - fixtures, helpers


def _loader(**schedule: Any) -> dict[str, Any]:
    return {"name": "loader", "tasks": {"load": "load.ipynb"}, "schedules": [{"files": "incoming/*.csv", **schedule}]}


async def test_bad_event_schedules_are_422_naming_the_field(api, jp_root_dir):  # noqa: F811 - the fixture
    write_notebook(jp_root_dir / "team" / "load.ipynb", "x = 1")
    out = {"spec": _loader(files="../*.csv"), "dir": "team"}
    message = (await api("POST", "pipelines", body=out)).error(422, "invalid_spec")
    assert "schedules[0].files: '../*.csv' leaves the spec's folder" in message
    assert (await api("POST", "pipelines", body={"spec": _loader(), "dir": "team"})).code == 201
    itself = await api("POST", "schedules", body={"pipeline": "loader", "after": "loader"})
    assert "after: 'loader' is the pipeline itself" in itself.error(422)
    bad_state = await api("POST", "schedules", body={"pipeline": "loader", "after": "x", "state": "done"})
    assert (
        bad_state.error(400, "bad_request") == 'body.state: "done": use success, failed or finished'
    )  # the document's


@pytest.mark.kernel
async def test_a_file_dropped_in_the_root_runs_its_pipeline_over_the_servers_daemon(
    api,  # noqa: F811 - the fixture imported above
    daemon,  # noqa: F811
    jp_root_dir,
):
    write_notebook(
        jp_root_dir / "team" / "load.ipynb",
        "import nbsched\nnbsched.record('path', trigger_file)",
        params="trigger_file = None\nupstream = {}",
    )
    reply = await api("POST", "pipelines", body={"spec": _loader(poll="1s", settle="0s"), "dir": "team"})
    assert reply.code == 201, reply.body
    (schedule,) = reply.data["schedule_list"]
    assert schedule["kind"] == "files" and schedule["waiting_for"] == "a new file incoming/*.csv (looks every 1s)"
    (jp_root_dir / "team" / "incoming").mkdir()
    (jp_root_dir / "team" / "incoming" / "a.csv").write_text("a\n")

    async def runs() -> list[dict[str, Any]]:
        return (await api("GET", "runs", params={"pipeline": "loader"})).data["runs"]

    (run,) = await wait_until(runs, bool, what="the file's run")
    run = await finished_run(api, run["run_id"])
    assert run["state"] == "success" and run["trigger"] == "file"
    assert run["fired_by"]["file"]["path"] == "incoming/a.csv"
    assert run["tasks"]["load"]["outputs"] == {"path": "incoming/a.csv"}
    listed = (await api("GET", "schedules", str(schedule["id"]))).data
    assert listed["last_run_id"] == run["run_id"] and listed["last_fire_at"] is not None


async def test_a_field_of_another_kind_of_schedule_is_refused_and_a_change_keeps_the_kind(api, jp_root_dir):  # noqa: F811
    write_notebook(jp_root_dir / "team" / "load.ipynb", "x = 1")
    assert (await api("POST", "pipelines", body={"spec": _loader(), "dir": "team"})).code == 201
    dropped = await api("POST", "schedules", body={"pipeline": "loader", "files": "a/*.csv", "state": "failed"})
    assert dropped.error(400, "bad_request").startswith("body.state: goes with after")  # the document says so
    late = await api("POST", "schedules", body={"pipeline": "loader", "after": "x", "misfire_grace": "5m"})
    assert late.error(400, "bad_request").startswith("body.misfire_grace: goes with")

    files = (await api("GET", "schedules")).data["schedules"][0]
    # a change of one field keeps the kind and the rest of the trigger
    polled = await api("PATCH", "schedules", str(files["id"]), body={"poll": "5s"})
    assert polled.code == 200, polled.body
    assert polled.data["trigger"]["poll"] == 5 and polled.data["trigger"]["files"] == "incoming/*.csv"
    wrong = await api("PATCH", "schedules", str(files["id"]), body={"state": "failed"})
    assert wrong.error(422) == (
        "schedule.state: goes with after, and this is a files schedule (give after too, to change its kind)"
    )
    cron = (await api("POST", "schedules", body={"pipeline": "loader", "cron": "0 6 * * *"})).data
    zoned = await api("PATCH", "schedules", str(cron["id"]), body={"timezone": "Europe/Paris"})
    assert zoned.code == 200, zoned.body
    assert zoned.data["trigger"] == {"cron": "0 6 * * *", "timezone": "Europe/Paris"}
    assert datetime.fromisoformat(zoned.data["next_fire_local"]).hour == 6
    after = (await api("POST", "schedules", body={"pipeline": "loader", "after": "x"})).data
    failed = await api("PATCH", "schedules", str(after["id"]), body={"state": "failed"})
    assert failed.code == 200 and failed.data["trigger"] == {"after": "x", "state": "failed"}, failed.body
