"""Alerts that must never be lost or late: a template that fails for a run's values, a mail
server that accepts and never answers, an sla under a pipeline's rule, a configuration file that
breaks under a daemon; each against real sinks (aiosmtpd, pytest-httpserver) and the real CLI."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from conftest import nbsched, serve, stop, wait_for, write_notebook, write_yaml
from pytest_httpserver import HTTPServer
from test_notify import Mailbox, _free_port, smtp  # noqa: F401 - the fixture

pytestmark = pytest.mark.kernel


def _notices(project: Path) -> list[dict[str, Any]]:
    return list(json.loads(nbsched("notifications", "--json", cwd=project, check=True).stdout))


def test_a_title_that_fails_for_this_runs_values_is_sent_with_the_default_and_says_why(project, httpserver: HTTPServer):
    """It rendered at validate (n is 1 there); this run's n makes it two million characters."""
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    write_notebook(project / "nb.ipynb", "x = 1", params="n = 1")
    write_yaml(
        project / "pipeline.yaml",
        "name: big\nparams: {n: 1}\ntasks:\n  t: nb.ipynb\n"
        f'notify: [{{on: [success], to: ["json://127.0.0.1:{httpserver.port}/hook"], title: "{{{{ \'x\' * run.params.n }}}}"}}]\n',
    )
    assert nbsched("validate", "pipeline.yaml", cwd=project).returncode == 0

    proc = nbsched("run", "pipeline.yaml", "-p", "n=2000000", cwd=project)

    assert proc.returncode == 0, proc.stderr
    ((request, _),) = httpserver.log
    payload = request.get_json()
    assert payload["title"] == "big: run succeeded"
    assert (
        payload["message"]
        .rstrip()
        .endswith(
            "(The spec's title template could not render: '*' would make 2,000,000 characters (at most 1,000,000). "
            "This is the default title.)"
        )
    ), payload["message"]
    assert [n["state"] for n in _notices(project)] == ["sent"]


class HungServer:
    """Accepts connections and never answers (an SMTP server that hangs)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_server(("127.0.0.1", port))
        self.sock.settimeout(0.1)  # so that its thread sees the end: a socket closed under accept() still listens
        self.held: list[socket.socket] = []
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.held.append(conn)

    def close(self) -> None:
        if not self.closed.is_set():
            self.closed.set()
            self.thread.join()
            self.sock.close()
            for conn in self.held:
                conn.close()


@pytest.fixture
def hung() -> Iterator[HungServer]:
    server = HungServer(_free_port())
    yield server
    server.close()


@pytest.mark.slow
def test_a_hung_mail_server_neither_holds_the_run_nor_its_alert(project, hung):
    port = hung.sock.getsockname()[1]
    write_notebook(project / "ok.ipynb", "x = 1")
    write_yaml(
        project / "pipeline.yaml", "name: quick\ntasks:\n  ok: ok.ipynb\nnotify: [{on: [success], to: [team]}]\n"
    )
    (project / ".nbsched").mkdir()
    write_yaml(
        project / ".nbsched" / "notify.yaml",
        f"urls:\n  - mailto://127.0.0.1:{port}?from=nbsched@example.com&to=team@example.com:\n    - tag: team\n",
    )
    fast = {"NBSCHED_NOTIFY_TIMEOUT": "1s"}

    proc = nbsched("run", "pipeline.yaml", cwd=project, env=fast)

    assert proc.returncode == 0, proc.stderr
    (notice,) = _notices(project)
    # tried, timed out, and given back: no claim keeps it from the next sender
    assert notice["state"] == "pending" and notice["attempts"] == 1, notice
    # Apprise's own timeout of the call, or the socket's first (a "connection error"): either way, the time
    assert notice["answer"].startswith("E-Mail: ") and "no answer within 1s" in notice["answer"], notice
    assert notice["claim"] is None
    assert hung.held, "the run's sender never reached the server"

    # the mail server comes back on the same port; a daemon started next sends it at its retry
    hung.close()
    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    daemon = serve(project, "serve", "--no-scheduler", env=fast)
    try:
        wait_for(lambda: box.messages, 60, "the mail, once the server answers")  # its retry is due 10 s after
        wait_for(lambda: [n["state"] for n in _notices(project)] == ["sent"], 30, "the notification marked sent")
    finally:
        stop(daemon)
        controller.stop()
    assert [m["Subject"] for m in box.messages] == ["quick: run succeeded"]


def test_a_pipeline_rule_for_sla_missed_reports_a_tasks_sla_naming_the_task(project, httpserver: HTTPServer):
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    write_notebook(project / "slow.ipynb", "import time\ntime.sleep(4)")
    write_yaml(
        project / "pipeline.yaml",
        "name: slow\ntasks:\n  s: {notebook: slow.ipynb, sla: 1s}\n"
        f'notify: [{{on: [sla_missed], to: ["json://127.0.0.1:{httpserver.port}/hook"]}}]\n',
    )
    proc = nbsched("run", "pipeline.yaml", cwd=project)
    assert proc.returncode == 0, proc.stderr
    ((request, _),) = httpserver.log
    payload = request.get_json()
    assert payload["title"] == "slow: task s missed its sla"
    assert [(n["event"], n["task"]) for n in _notices(project)] == [("sla_missed", "s")]


def test_a_pipeline_rule_for_retry_hears_of_its_tasks_retries(project, httpserver: HTTPServer):
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    write_notebook(
        project / "flaky.ipynb",
        "import pathlib\nif not pathlib.Path('tried').exists():\n    pathlib.Path('tried').touch()\n"
        "    raise RuntimeError('not yet')",
    )
    write_yaml(
        project / "pipeline.yaml",
        "name: flaky\ntasks:\n  f: {notebook: flaky.ipynb, retries: 1}\n"
        f'notify: [{{on: [retry, success], to: ["json://127.0.0.1:{httpserver.port}/hook"]}}]\n',
    )
    proc = nbsched("run", "pipeline.yaml", cwd=project)
    assert proc.returncode == 0, proc.stderr
    titles = [request.get_json()["title"] for request, _ in httpserver.log]
    # the task's retry, and the run's success (not the task's: a pipeline's success is its run's)
    assert titles == ["flaky: task f is up for retry", "flaky: run succeeded"]


@pytest.mark.slow
def test_a_daemon_logs_a_broken_notify_yaml_once_and_goes_on_with_the_urls(
    project,
    smtp,  # noqa: F811 - the fixture imported above
    httpserver: HTTPServer,
):
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    write_notebook(project / "ok.ipynb", "x = 1")
    write_yaml(
        project / "pipeline.yaml",
        "name: quick\ntasks:\n  ok: ok.ipynb\n"
        f'notify: [{{on: [success], to: [team, "json://127.0.0.1:{httpserver.port}/hook"]}}]\n',
    )
    notify_yaml = project / ".nbsched" / "notify.yaml"
    notify_yaml.parent.mkdir()
    good = f"urls:\n  - mailto://127.0.0.1:{smtp.port}?from=nbsched@example.com&to=team@example.com:\n    - tag: team\n"
    write_yaml(notify_yaml, good)
    nbsched("register", "pipeline.yaml", cwd=project, check=True)
    write_yaml(notify_yaml, good.replace("    - tag", "\t- tag"))  # a tab, written after the register

    daemon = serve(project, "serve", "--no-scheduler")
    try:
        for _ in range(2):
            nbsched("trigger", "quick", cwd=project, check=True)
        wait_for(lambda: len(httpserver.log) == 2, 120, "the webhook's two notifications")
        wait_for(
            lambda: all(n["attempts"] >= 1 for n in _notices(project)), 30, "an attempt at each tag's notification"
        )
        tags = [n for n in _notices(project) if n["target"] == "tag 'team'"]
        assert [n["state"] for n in tags] == ["pending", "pending"]
        assert all(f"{notify_yaml}: line 3: " in n["answer"] for n in tags), tags

        write_yaml(notify_yaml, good)  # fixed: the tag's notifications go at their next attempt
        wait_for(lambda: len(smtp.messages) == 2, 60, "the two mails, once the file is fixed")
    finally:
        assert stop(daemon) == 0
    log = (project / "serve.log").read_text()
    assert log.count(f"{notify_yaml}: line 3: ") == 1, log
    assert "Traceback" not in log


@pytest.mark.slow
def test_a_url_the_allow_list_refuses_when_it_is_sent_fails_at_once_and_is_not_requested(
    project, httpserver: HTTPServer
):
    """Registered while everything was allowed; the daemon that sends it allows json, not this
    machine: refused at the send, for good (no retry will be allowed either)."""
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    write_notebook(project / "ok.ipynb", "x = 1")
    write_yaml(
        project / "pipeline.yaml",
        "name: quick\ntasks:\n  ok: ok.ipynb\n"
        f'notify: [{{on: [success], to: ["json://127.0.0.1:{httpserver.port}/hook"]}}]\n',
    )
    nbsched("register", "pipeline.yaml", cwd=project, check=True)
    daemon = serve(project, "serve", "--no-scheduler", env={"NBSCHED_NOTIFY_ALLOW": "json"})
    try:
        nbsched("trigger", "quick", cwd=project, check=True)
        (notice,) = wait_for(lambda: [n for n in _notices(project) if n["state"] != "pending"], 120, "the verdict")
    finally:
        stop(daemon)
    assert notice["state"] == "failed" and notice["attempts"] == 1
    assert notice["answer"] == (
        "refused: 127.0.0.1 is a loopback address: refused unless NBSCHED_NOTIFY_ALLOW lists json://127.0.0.1"
    )
    assert httpserver.log == []


@pytest.mark.slow
def test_a_retry_run_here_sends_its_notifications_and_its_sla_counts_again(project, httpserver: HTTPServer):
    """``retry RUN --run`` executes the run in the foreground as ``run`` does: no daemon may be
    there to send what it notifies; the repaired run is late again, and says so again."""
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    write_notebook(
        project / "flaky.ipynb",
        "import pathlib, time\ntime.sleep(3)\nif not pathlib.Path('tried').exists():\n"
        "    pathlib.Path('tried').touch()\n    raise RuntimeError('not yet')",
    )
    write_yaml(
        project / "pipeline.yaml",
        "name: flaky\ntasks:\n  f: flaky.ipynb\nsla: 1s\n"
        f'notify: [{{on: [sla_missed, success, failure], to: ["json://127.0.0.1:{httpserver.port}/hook"]}}]\n',
    )
    proc = nbsched("run", "pipeline.yaml", "--json", cwd=project)
    assert proc.returncode == 1
    run_id = json.loads(proc.stdout)["run_id"]

    proc = nbsched("retry", run_id, "--run", cwd=project)

    assert proc.returncode == 0, proc.stderr
    titles = [request.get_json()["title"] for request, _ in httpserver.log]
    assert titles == [
        "flaky: run missed its sla",
        "flaky: run failed",
        "flaky: run missed its sla",
        "flaky: run succeeded",
    ]
    assert {n["state"] for n in _notices(project)} == {"sent"}
