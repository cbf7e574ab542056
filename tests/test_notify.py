"""Notifications through Apprise, to a real SMTP server (aiosmtpd) and a real webhook
(pytest-httpserver): what a message says, that it goes once, and that a target that is down
gets it later without delaying the run."""

from __future__ import annotations

import email
import json
import re
import socket
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from conftest import nbsched, serve, stop, wait_for, write_notebook, write_yaml
from pytest_httpserver import HTTPServer


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Mailbox:
    """An SMTP server's handler that keeps every message it is given."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


@pytest.fixture
def smtp() -> Any:
    port = _free_port()
    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    box.port = port  # type: ignore[attr-defined]
    yield box
    controller.stop()


def _text(message: Message) -> str:
    parts = [p for p in message.walk() if p.get_content_type() == "text/plain"]
    return "\n".join(str(p.get_payload(decode=True).decode()) for p in parts)  # type: ignore[union-attr]


def _project(project: Path, smtp_port: int, notify: str, *, clean: str = "raise ValueError('bad row')") -> None:
    """A two-task pipeline, and an Apprise configuration file whose tag ``team`` is an email
    address at the test's SMTP server."""
    write_notebook(project / "extract.ipynb", "import nbsched\nnbsched.record('rows', 3)")
    write_notebook(project / "clean.ipynb", "rows = 3", clean)
    write_yaml(
        project / "pipeline.yaml",
        "name: sales\ntasks:\n  extract: extract.ipynb\n  clean: {notebook: clean.ipynb, upstream: [extract]}\n"
        + notify,
    )
    (project / ".nbsched").mkdir(exist_ok=True)
    write_yaml(
        project / ".nbsched" / "notify.yaml",
        f"urls:\n  - mailto://127.0.0.1:{smtp_port}?from=nbsched@example.com&to=team@example.com:\n    - tag: team\n",
    )


@pytest.mark.kernel
def test_a_failing_pipeline_sends_one_email_and_one_post_naming_the_failed_task_and_cell(
    project, smtp, httpserver: HTTPServer
):
    httpserver.expect_request("/hooks/sales", method="POST").respond_with_data("ok")
    hook = f"json://127.0.0.1:{httpserver.port}/hooks/sales"
    _project(project, smtp.port, f'notify:\n  - on: [failure]\n    to: [team, "{hook}"]\n')

    proc = nbsched("run", "pipeline.yaml", cwd=project)

    assert proc.returncode == 1, proc.stderr
    assert len(smtp.messages) == 1
    mail = smtp.messages[0]
    assert mail["Subject"] == "sales: run failed"
    body = _text(mail)
    assert "Run: " in body and "(failed)" in body
    # the cell as the output notebook numbers it: title, parameters, injected parameters, rows, raise
    assert "clean: ValueError: bad row (cell 4: raise ValueError('bad row'))" in body, body
    assert re.search(r"^Duration: \d+\.\ds\r?$", body, re.MULTILINE), body  # as nbsched runs writes it
    assert "extract" not in body.split("Failed:")[1]  # the task that succeeded is not listed as failed
    posts = [request for request, _ in httpserver.log]
    assert len(posts) == 1
    payload = posts[0].get_json()
    assert payload["title"] == "sales: run failed"
    assert "clean: ValueError: bad row" in payload["message"]
    assert payload["run"]["state"] == "failed"
    assert payload["run"]["tasks"]["clean"]["failure"]["ename"] == "ValueError"
    listed = json.loads(nbsched("notifications", "--json", cwd=project, check=True).stdout)
    assert sorted((n["target"], n["state"], n["event"]) for n in listed) == [
        (
            f"json://127.0.0.1:{httpserver.port}/hooks/sales?method=POST&overflow=upstream&retry=0&wait=0.5&optional=no",
            "sent",
            "failure",
        ),
        ("tag 'team'", "sent", "failure"),
    ]


@pytest.mark.kernel
def test_a_successful_run_with_attach_report_mails_the_report(project, smtp):
    _project(project, smtp.port, "notify:\n  - on: [success]\n    to: [team]\n    attach: report\n", clean="x = 1")

    proc = nbsched("run", "pipeline.yaml", cwd=project)

    assert proc.returncode == 0, proc.stderr
    assert [m["Subject"] for m in smtp.messages] == ["sales: run succeeded"]
    attached = [p for p in smtp.messages[0].walk() if p.get_filename()]
    assert [p.get_filename() for p in attached] == ["index.html"]
    page = attached[0].get_payload(decode=True).decode()
    assert "<svg" in page and "clean" in page  # the run's page: its DAG, its tasks


@pytest.mark.kernel
@pytest.mark.slow
def test_two_daemons_send_each_notification_once(project, httpserver: HTTPServer):
    httpserver.expect_request("/hooks/done", method="POST").respond_with_data("ok")
    write_notebook(project / "ok.ipynb", "x = 1")
    write_yaml(
        project / "pipeline.yaml",
        "name: quick\ntasks:\n  ok: ok.ipynb\n"
        f'notify:\n  - on: [success]\n    to: ["json://127.0.0.1:{httpserver.port}/hooks/done"]\n',
    )
    nbsched("register", "pipeline.yaml", cwd=project, check=True)
    daemons = [serve(project, f"serve{i}", "--workers", "1", "--no-scheduler") for i in range(2)]
    try:
        runs = {nbsched("trigger", "quick", cwd=project, check=True).stdout.strip() for _ in range(3)}
        wait_for(lambda: len(httpserver.log) >= 3, 120, "three notifications")
        wait_for(lambda: _states(project) == ["sent"] * 3, 30, "the notifications marked sent")
    finally:
        codes = [stop(d) for d in daemons]
    assert codes == [0, 0]
    assert sorted(r.get_json()["run"]["run_id"] for r, _ in httpserver.log) == sorted(runs)


def _states(project: Path) -> list[str]:
    return [n["state"] for n in json.loads(nbsched("notifications", "--json", cwd=project, check=True).stdout)]


@pytest.mark.kernel
@pytest.mark.slow
def test_a_target_that_is_down_gets_its_message_once_it_is_back_and_the_run_is_not_delayed(project):
    port = _free_port()  # nothing listens there yet
    write_notebook(project / "ok.ipynb", "x = 1")
    write_yaml(
        project / "pipeline.yaml",
        f'name: quick\ntasks:\n  ok: ok.ipynb\nnotify:\n  - on: [success]\n    to: ["json://127.0.0.1:{port}/hook"]\n',
    )
    proc = nbsched("run", "pipeline.yaml", cwd=project)
    assert proc.returncode == 0, proc.stderr
    (pending,) = json.loads(nbsched("notifications", "--json", cwd=project, check=True).stdout)
    assert pending["state"] == "pending" and pending["attempts"] >= 1, pending
    assert "failure" in pending["answer"].lower(), pending  # what the target answered: nothing

    server = HTTPServer(host="127.0.0.1", port=port)
    server.expect_request("/hook", method="POST").respond_with_data("ok")
    server.start()
    daemon = serve(project, "serve", "--no-scheduler")
    try:
        wait_for(lambda: len(server.log) == 1, 60, "the notification, once the target is back")
        wait_for(lambda: _states(project) == ["sent"], 30, "the notification marked sent")
    finally:
        stop(daemon)
        server.clear()
        server.stop()
    listed = nbsched("notifications", cwd=project, check=True).stdout
    assert "sent" in listed and "success" in listed


@pytest.mark.parametrize(
    ("notify", "problem"),
    [
        (
            "notify: [{on: [fail], to: [team]}]",
            "notify[0].on: unknown event 'fail' (use failure, retry, schedule_missed, sla_missed, start, success)",
        ),
        ("notify: [{on: [failure], to: []}]", "notify[0].to: empty (name at least one of the targets)"),
        (
            'notify: [{on: [failure], to: ["nosuchservice://x"]}]',
            "notify[0].to: Apprise cannot use the URL of scheme 'nosuchservice'",
        ),
        ("notify: [{on: [failure], to: [team], attach: pdf}]", "notify[0].attach: expected report, got 'pdf'"),
        ("notify: [{on: [failure], to: [team], when: now}]", "notify[0].when: unknown key"),
    ],
)
def test_notify_mistakes_are_one_line_naming_file_and_field(project, notify, problem):
    write_notebook(project / "nb.ipynb", "x = 1")
    write_yaml(project / "pipeline.yaml", f"name: p\ntasks:\n  t: nb.ipynb\n{notify}\n")
    proc = nbsched("validate", "pipeline.yaml", cwd=project)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"Error: pipeline.yaml: {problem}"), line


def test_a_tag_no_service_has_is_a_warning_at_register(project, smtp):
    write_notebook(project / "nb.ipynb", "x = 1")
    _project(project, smtp.port, "notify: [{on: [failure], to: [team, ops]}]\n")
    proc = nbsched("register", "pipeline.yaml", cwd=project)
    assert proc.returncode == 0, proc.stderr
    assert (
        f"warning: pipeline.yaml: notify: no service of the Apprise configuration file "
        f"{project / '.nbsched' / 'notify.yaml'} has the tag 'ops'"
    ) in proc.stderr
    assert "'team'" not in proc.stderr


def test_a_tag_without_an_apprise_configuration_file_says_the_file_is_missing(project):
    write_notebook(project / "nb.ipynb", "x = 1")
    write_yaml(project / "pipeline.yaml", "name: p\ntasks:\n  t: nb.ipynb\nnotify: [{on: [failure], to: [team]}]\n")
    proc = nbsched("register", "pipeline.yaml", cwd=project)
    assert proc.returncode == 0, proc.stderr
    assert (
        f"warning: pipeline.yaml: notify: tag 'team': no Apprise configuration file at "
        f"{project / '.nbsched' / 'notify.yaml'} (create it, or set NBSCHED_NOTIFY_CONFIG)"
    ) in proc.stderr


def test_notify_test_sends_a_sample_and_prints_what_each_target_answered(project, smtp, httpserver: HTTPServer):
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    hook = f"json://127.0.0.1:{httpserver.port}/hook"
    _project(project, smtp.port, f'notify: [{{on: [failure], to: [team, ops, "{hook}"]}}]\n')
    nbsched("register", "pipeline.yaml", cwd=project, check=True)

    proc = nbsched("notify", "test", "sales", "--event", "failure", cwd=project)

    assert proc.returncode == 1  # the tag 'ops' has no service
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == "tag 'team': sent (E-Mail: success)"
    assert lines[1].startswith("tag 'ops': NOT SENT (no service of ") and lines[1].endswith("has the tag 'ops')")
    assert lines[2].startswith(f"json://127.0.0.1:{httpserver.port}/hook") and lines[2].endswith(
        ": sent (JSON: success)"
    )
    assert [m["Subject"] for m in smtp.messages] == ["[test] sales: run failed"]
    assert "a sample failure of nbsched notify test" in _text(smtp.messages[0])
    ((request, _),) = httpserver.log
    assert request.get_json()["run"]["run_id"] == "sample"


@pytest.mark.kernel
def test_a_tasks_retry_and_success_notify_with_the_specs_own_title(project, httpserver: HTTPServer):
    """A task's own rules: one message for its retry, one for its success, with a title of the
    spec's; the run's start goes out while the run runs."""
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    hook = f"json://127.0.0.1:{httpserver.port}/hook"
    write_notebook(
        project / "flaky.ipynb",
        "import pathlib\nif not pathlib.Path('tried').exists():\n    pathlib.Path('tried').touch()\n"
        "    raise RuntimeError('not yet')",
    )
    write_yaml(
        project / "pipeline.yaml",
        "name: flaky\ntasks:\n  f:\n    notebook: flaky.ipynb\n    retries: 1\n"
        f'    notify: [{{on: [retry, success], to: ["{hook}"], title: "{{{{ task }}}} {{{{ event }}}} in {{{{ pipeline }}}}"}}]\n'
        f'notify: [{{on: [start], to: ["{hook}"]}}]\n',
    )
    proc = nbsched("run", "pipeline.yaml", cwd=project)
    assert proc.returncode == 0, proc.stderr
    titles = [request.get_json()["title"] for request, _ in httpserver.log]
    assert titles == ["flaky: run started", "f retry in flaky", "f success in flaky"]
    retry = httpserver.log[1][0].get_json()["message"]
    assert "f: RuntimeError: not yet" in retry


def test_start_is_an_event_of_the_run_not_of_a_task(project):
    write_notebook(project / "nb.ipynb", "x = 1")
    write_yaml(
        project / "pipeline.yaml", "name: p\ntasks:\n  t: {notebook: nb.ipynb, notify: [{on: [start], to: [team]}]}\n"
    )
    proc = nbsched("validate", "pipeline.yaml", cwd=project)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "Error: pipeline.yaml: tasks.t.notify[0].on: 'start' is an event of the run "
        "(a task's are success, failure, retry, sla_missed)"
    )


@pytest.mark.kernel
def test_a_task_past_its_sla_sends_one_sla_missed_and_still_succeeds(project, httpserver: HTTPServer):
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    hook = f"json://127.0.0.1:{httpserver.port}/hook"
    write_notebook(project / "slow.ipynb", "import time\ntime.sleep(5)")
    write_yaml(
        project / "pipeline.yaml",
        "name: slow\ntasks:\n  s:\n    notebook: slow.ipynb\n    sla: 2s\n"
        f'    notify: [{{on: [sla_missed], to: ["{hook}"]}}]\n'
        f'sla: 3s\nnotify: [{{on: [sla_missed, success], to: ["{hook}"]}}]\n',
    )
    proc = nbsched("run", "pipeline.yaml", cwd=project)
    assert proc.returncode == 0, proc.stderr
    titles = [request.get_json()["title"] for request, _ in httpserver.log]
    assert titles == ["slow: task s missed its sla", "slow: run missed its sla", "slow: run succeeded"]
    listed = json.loads(nbsched("notifications", "--json", cwd=project, check=True).stdout)
    assert sorted((n["event"], n["task"] or "") for n in listed) == [
        ("sla_missed", ""),
        ("sla_missed", "s"),
        ("success", ""),
    ]


def test_fires_a_schedule_skips_are_one_schedule_missed(project, httpserver: HTTPServer):
    """A daemon that was down past a fire's misfire grace makes no run for it (no catchup):
    one schedule_missed says so, with the schedule and how late it was."""
    from datetime import timedelta

    from nbsched.scheduler import Scheduler
    from nbsched.sender import Sender
    from nbsched.service import Config, Service

    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    write_notebook(project / "nb.ipynb", "x = 1")
    write_yaml(
        project / "pipeline.yaml",
        'name: daily\ntasks:\n  t: nb.ipynb\nschedules:\n  - {cron: "0 6 * * *", misfire_grace: 10m}\n'
        f'notify: [{{on: [schedule_missed], to: ["json://127.0.0.1:{httpserver.port}/hook"]}}]\n',
    )
    service = Service(Config.resolve(project=project))
    try:
        service.register(project / "pipeline.yaml")
        (schedule,) = service.list_schedules("daily")
        assert schedule.next_fire_at is not None
        scheduler = Scheduler(service.store, service._run_for_schedule, service._missed_notices)
        now = schedule.next_fire_at + timedelta(days=2, hours=3)  # three fires missed, the last 3h late
        assert scheduler.fire_due(now) == []
        assert scheduler.fire_due(now) == []  # once: the schedule moved on with the notice
        Sender(service.store, service.delivery).send_due()
        (notice,) = service.list_notifications()
        assert service.list_runs(pipeline="daily") == []  # no run for a fire too late to make
    finally:
        service.close()
    assert notice.event == "schedule_missed" and notice.run_id is None and notice.pipeline == "daily"
    assert notice.state == "sent"
    ((request, _),) = httpserver.log
    payload = request.get_json()
    assert payload["title"] == f"daily: schedule {schedule.id} missed 3 fire(s)"
    assert "3h00m late (misfire grace 10m)" in payload["message"]
    assert payload["run"]["missed"] == 3


def test_a_fire_whose_run_cannot_be_made_is_a_schedule_missed_saying_why(project, httpserver: HTTPServer):
    """The fire time passes with only a log line otherwise: the schedule moves on, no run."""
    from nbsched.errors import SpecError
    from nbsched.scheduler import Scheduler
    from nbsched.sender import Sender
    from nbsched.service import Config, Service

    def cannot(*args: Any) -> str:  # what making the run raised (a spec of the day that no longer renders)
        raise SpecError("daily v1: tasks.t.params.day: 'nosuch' is undefined")

    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    write_notebook(project / "nb.ipynb", "x = 1")
    write_yaml(
        project / "pipeline.yaml",
        'name: daily\ntasks:\n  t: nb.ipynb\nschedules:\n  - {cron: "0 6 * * *"}\n'
        f'notify: [{{on: [schedule_missed], to: ["json://127.0.0.1:{httpserver.port}/hook"]}}]\n',
    )
    service = Service(Config.resolve(project=project))
    try:
        service.register(project / "pipeline.yaml")
        (schedule,) = service.list_schedules("daily")
        assert schedule.next_fire_at is not None
        scheduler = Scheduler(service.store, cannot, service._missed_notices)
        assert scheduler.fire_due(schedule.next_fire_at) == []
        Sender(service.store, service.delivery).send_due()
        (notice,) = service.list_notifications()
    finally:
        service.close()
    assert notice.event == "schedule_missed" and notice.state == "sent"
    ((request, _),) = httpserver.log
    payload = request.get_json()
    assert payload["title"] == f"daily: schedule {schedule.id} missed 1 fire(s)"
    assert (
        f"the last at {schedule.next_fire_at.isoformat()}: its run could not be made: "
        "daily v1: tasks.t.params.day: 'nosuch' is undefined"
    ) in payload["message"]


def test_a_message_template_is_bounded_like_a_parameter():
    """A spec's title or body renders in the parameters' sandbox: a gigabyte is refused before
    it is made, and the sandbox's own refusals hold."""
    from jinja2.exceptions import SecurityError, UndefinedError

    from nbsched.messages import render_template

    with pytest.raises(SecurityError, match="would make 1,000,000,000 characters"):
        render_template("{{ 'x' * 10**9 }}", {"pipeline": "p"})
    with pytest.raises((SecurityError, UndefinedError)):
        render_template("{{ cycler.__init__.__globals__.os.popen('id').read() }}", {})
