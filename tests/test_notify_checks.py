"""What the commands say about notifications before any is sent: templates that cannot render,
an Apprise configuration file that does not parse, an sla no rule reports, URLs the operator
does not allow; and what ``notify test`` and ``notifications`` show."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import nbsched, write_notebook, write_yaml
from pytest_httpserver import HTTPServer


def _spec(project: Path, notify: str, *, extra: str = "", task: str = "nb.ipynb") -> None:
    write_notebook(project / "nb.ipynb", "x = 1")
    write_yaml(project / "pipeline.yaml", f"name: p\ntasks:\n  t: {task}\n{extra}{notify}\n")


# -- templates ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("{{ nosuch }}", "notify[0].title: 'nosuch' is undefined"),
        ("{{ run.__class__ }}", "notify[0].title: "),
        ('{{ "x" * 10**9 }}', "notify[0].title: '*' would make 1,000,000,000 characters"),
        ("{{ oops", "notify[0].title: "),
    ],
)
@pytest.mark.parametrize("command", ["validate", "register"])
def test_a_title_that_cannot_render_is_one_line_at_validate_and_register(project, command, template, problem):
    _spec(project, f"notify: [{{on: [failure], to: [team], title: '{template}'}}]")
    proc = nbsched(command, "pipeline.yaml", cwd=project)
    assert proc.returncode == 2, proc.stdout
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"Error: pipeline.yaml: {problem}"), line
    assert "Traceback" not in proc.stderr


def test_a_body_is_rendered_for_each_event_of_its_rule_and_a_tasks_rule_with_its_task(project):
    """``failed[0]`` exists for a failure, not for a success: the rule of both is refused for the
    event it cannot render, and a task's rule renders with its task."""
    _spec(
        project,
        "notify: [{on: [failure, success], to: [team], body: '{{ failed[0].task }} broke'}]",
    )
    proc = nbsched("validate", "pipeline.yaml", cwd=project)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("Error: pipeline.yaml: notify[0].body (event success): "), proc.stderr

    write_yaml(
        project / "pipeline.yaml",
        "name: p\ntasks:\n  t:\n    notebook: nb.ipynb\n"
        "    notify: [{on: [failure], to: [team], title: '{{ task }}: {{ failed[0].error }}'}]\n",
    )
    assert nbsched("validate", "pipeline.yaml", cwd=project).returncode == 0


def test_a_schedule_missed_title_renders_with_what_the_schedule_missed(project):
    _spec(project, "notify: [{on: [schedule_missed], to: [team], title: '{{ missed }} missed of {{ schedule_id }}'}]")
    assert nbsched("validate", "pipeline.yaml", cwd=project).returncode == 0
    _spec(project, "notify: [{on: [schedule_missed], to: [team], title: '{{ state }}'}]")
    proc = nbsched("validate", "pipeline.yaml", cwd=project)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "Error: pipeline.yaml: notify[0].title: 'state' is undefined"


def test_notify_test_renders_the_templates_of_a_pipeline_registered_before_they_were_checked(project):
    from nbsched.service import Config, Service

    _spec(project, "notify: [{on: [failure], to: [team], body: '{{ nosuch }}'}]")
    service = Service(Config.resolve(project=project))
    try:  # as an nbsched that did not render templates at register stored it
        raw = {
            "name": "p",
            "tasks": {"t": "nb.ipynb"},
            "notify": [{"on": ["failure"], "to": ["team"], "body": "{{ nosuch }}"}],
        }
        service.store.save_pipeline("p", {"raw": raw, "base_dir": str(project), "root": None}, None)
    finally:
        service.close()
    proc = nbsched("notify", "test", "p", cwd=project)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "Error: pipeline 'p': notify[0].body: 'nosuch' is undefined"


# -- the Apprise configuration file ---------------------------------------------------------------
BROKEN = [
    (b"urls:\n  - json://127.0.0.1/x: [\n", "line 3"),  # an unclosed flow sequence: found at the end
    (b"urls:\n\t- json://127.0.0.1/x:\n", "line 2"),  # a tab
    (b"urls:\n  - json://127.0.0.1/\xff:\n    - tag: team\n", "line 2: not UTF-8"),
    (b"urls:\n  - json://127.0.0.1/x\x00:\n    - tag: team\n", "line 2: a NUL byte"),
]


def _broken(project: Path, content: bytes) -> None:
    (project / ".nbsched").mkdir(exist_ok=True)
    (project / ".nbsched" / "notify.yaml").write_bytes(content)


@pytest.mark.parametrize(("content", "where"), BROKEN, ids=["syntax", "tab", "utf8", "nul"])
@pytest.mark.parametrize("command", ["validate", "register", "run"])
def test_a_notify_yaml_that_does_not_parse_is_one_line_naming_file_and_line(project, command, content, where):
    _spec(project, "notify: [{on: [failure], to: [team]}]")
    _broken(project, content)
    proc = nbsched(command, "pipeline.yaml", cwd=project)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"Error: {project / '.nbsched' / 'notify.yaml'}: {where}"), line
    assert "no service" not in line


@pytest.mark.parametrize(("content", "where"), BROKEN, ids=["syntax", "tab", "utf8", "nul"])
def test_notify_test_names_the_parse_error_of_notify_yaml(project, content, where):
    _spec(project, "notify: [{on: [failure], to: [team]}]")
    nbsched("register", "pipeline.yaml", cwd=project, check=True)
    _broken(project, content)
    proc = nbsched("notify", "test", "p", cwd=project)
    assert proc.returncode == 2, proc.stdout
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"Error: {project / '.nbsched' / 'notify.yaml'}: {where}"), line


def test_an_url_apprise_cannot_use_in_notify_yaml_is_named_with_its_line(project):
    _spec(project, "notify: [{on: [failure], to: [team]}]")
    _broken(project, b"urls:\n  - json://127.0.0.1/x:\n    - tag: team\n  - nosuch://y\n")
    proc = nbsched("validate", "pipeline.yaml", cwd=project)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"Error: {project / '.nbsched' / 'notify.yaml'}: line 4: Apprise cannot use the URL nosuch://y"
    )


# -- slas nothing reports ------------------------------------------------------------------------
def test_an_sla_no_rule_reports_is_a_warning(project):
    _spec(project, "", task="{notebook: nb.ipynb, sla: 2s}", extra="sla: 1m\n")
    proc = nbsched("validate", "pipeline.yaml", cwd=project)
    assert proc.returncode == 0, proc.stderr
    nothing = "is for sla_missed: nothing reports it"
    assert proc.stderr.splitlines() == [
        f"warning: pipeline.yaml: sla: no notify rule of the pipeline {nothing}",
        f"warning: pipeline.yaml: tasks.t.sla: no notify rule of the task or the pipeline {nothing}",
    ]


def test_a_pipeline_rule_reports_a_tasks_sla(project):
    _spec(project, 'notify: [{on: [sla_missed], to: ["json://127.0.0.1:9/x"]}]', task="{notebook: nb.ipynb, sla: 2s}")
    proc = nbsched("validate", "pipeline.yaml", cwd=project)
    assert proc.returncode == 0 and "warning" not in proc.stderr, proc.stderr


# -- notify test ----------------------------------------------------------------------------------
def test_notify_test_lists_and_takes_every_event(project):
    proc = nbsched("notify", "test", "--help", cwd=project)
    for event in ("start", "success", "failure", "retry", "sla_missed", "schedule_missed"):
        assert event in proc.stdout
    proc = nbsched("notify", "test", "p", "--event", "nosuch", cwd=project)
    assert proc.returncode == 2
    assert "'nosuch' is not one of 'start', 'success', 'failure', 'retry', 'sla_missed', 'schedule_missed'" in (
        proc.stderr
    )


@pytest.mark.parametrize(
    ("event", "title", "state"),
    [
        ("failure", "[test] p: run failed", "failed"),
        ("success", "[test] p: run succeeded", "success"),
        ("start", "[test] p: run started", "running"),
        ("sla_missed", "[test] p: run missed its sla", "running"),
        ("retry", "[test] p: task t is up for retry", "running"),
    ],
)
def test_a_test_message_is_labelled_as_one_and_made_of_a_run_of_its_event(
    project, httpserver: HTTPServer, event, title, state
):
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    hook = f"json://127.0.0.1:{httpserver.port}/hook"
    rules = f'notify: [{{on: [start, success, failure, sla_missed], to: ["{hook}"]}}]'
    write_notebook(project / "nb.ipynb", "x = 1")
    write_yaml(
        project / "pipeline.yaml",
        f'name: p\ntasks:\n  t: {{notebook: nb.ipynb, notify: [{{on: [retry], to: ["{hook}"]}}]}}\n{rules}\n',
    )
    nbsched("register", "pipeline.yaml", cwd=project, check=True)

    proc = nbsched("notify", "test", "p", "--event", event, cwd=project)

    assert proc.returncode == 0, proc.stdout + proc.stderr
    ((request, _),) = httpserver.log
    payload = request.get_json()
    assert payload["title"] == title
    assert payload["message"].startswith("This is a test of nbsched notify test, not a real run: "), payload
    assert f"({state})" in payload["message"]
    assert payload["run"]["run_id"] == "sample" and payload["run"]["state"] == state


def test_notify_test_of_schedule_missed_sends_a_sample_of_missed_fires(project, httpserver: HTTPServer):
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    _spec(project, f'notify: [{{on: [schedule_missed], to: ["json://127.0.0.1:{httpserver.port}/hook"]}}]')
    nbsched("register", "pipeline.yaml", cwd=project, check=True)
    proc = nbsched("notify", "test", "p", "--event", "schedule_missed", cwd=project)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ((request, _),) = httpserver.log
    assert request.get_json()["title"].startswith("[test] p: schedule ")
    assert "not a real run" in request.get_json()["message"]


# -- notifications --------------------------------------------------------------------------------
def _outbox(project: Path, notices: int) -> Any:
    """A run of ``p`` with ``notices`` notifications in the outbox, written as a runner writes them."""
    from nbsched.notices import Notice
    from nbsched.service import Config, Service
    from nbsched.states import NotifyEvent, RunState

    _spec(project, 'notify: [{on: [failure], to: ["json://127.0.0.1:9/x"]}]')
    service = Service(Config.resolve(project=project))
    service.register(project / "pipeline.yaml")
    run_id = service.trigger("p", {})
    notices = [Notice(event=NotifyEvent.FAILURE, target=f"json://127.0.0.1:9/{i}") for i in range(notices)]
    service.store.start_run(run_id, [])
    assert service.store.set_run_state(run_id, RunState.FAILED, expect=[RunState.RUNNING], notices=notices)
    return service, run_id


def test_notifications_json_names_the_pipeline_of_a_runs_notifications_and_takes_n(project):
    service, run_id = _outbox(project, 3)
    service.close()
    listed = json.loads(nbsched("notifications", "--json", "-n", "2", cwd=project, check=True).stdout)
    assert len(listed) == 2
    assert {(n["run_id"], n["pipeline"]) for n in listed} == {(run_id, "p")}


def test_a_notification_held_by_a_claim_that_expired_says_so(project):
    service, run_id = _outbox(project, 1)
    try:
        assert service.store.claim_notices("sender-gone", 1, 0.001, [run_id])  # then its process dies
    finally:
        service.close()
    listed = json.loads(nbsched("notifications", "--json", cwd=project, check=True).stdout)
    (notice,) = listed
    assert notice["state"] == "pending"
    assert notice["claim"]["by"] == "sender-gone" and notice["claim"]["expired"] is True
    table = nbsched("notifications", cwd=project, check=True).stdout
    assert "pending (claim of sender-gone expired " in table


# -- what a spec's URLs may reach -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("allow", "url", "problem"),
    [
        (
            "slack",
            "json://hooks.example.com/x",
            "json://hooks.example.com is not in NBSCHED_NOTIFY_ALLOW (it lists slack)",
        ),
        ("none", "slack://T1/B2/C3", "slack is not in NBSCHED_NOTIFY_ALLOW (it is empty: only the tags of the"),
        ("json", "json://127.0.0.1:9/x", "127.0.0.1 is a loopback address: refused unless NBSCHED_NOTIFY_ALLOW lists"),
        ("json", "json://169.254.169.254/latest", "169.254.169.254 is a link-local address"),
        ("json", "json://0.0.0.0:9/x", "0.0.0.0 is an unspecified address (this machine)"),
        ("json", "json://localhost:9/x", "localhost is a loopback address"),
        ("json", "json://2130706433/x", "2130706433 is a loopback address"),  # 127.0.0.1 as one number
        ("json", "json://[::1]:9/x", "::1 is a loopback address"),
        (
            "*://*.example.com",
            "mailto://mail.example.com?smtp=169.254.169.254&from=a@example.com&to=b@example.com",
            "mailto://169.254.169.254 is not in",
        ),
    ],
)
def test_a_url_the_operator_does_not_allow_is_one_line_at_register(project, allow, url, problem):
    _spec(project, f'notify: [{{on: [failure], to: ["{url}"]}}]')
    proc = nbsched("register", "pipeline.yaml", cwd=project, env={"NBSCHED_NOTIFY_ALLOW": allow})
    assert proc.returncode == 2, proc.stdout
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("Error: pipeline.yaml: notify[0].to: ") and problem in line, line


@pytest.mark.parametrize(
    ("allow", "url"),
    [
        ("json, json://127.0.0.1", "json://127.0.0.1:9/x"),  # a loopback host listed itself
        ("json://*.example.com", "json://hooks.example.com/x"),
        ("*://hooks.example.com", "jsons://hooks.example.com/x"),
        ("slack", "slack://T1/B2/C3"),
        ("*", "json://169.254.169.254/x"),
    ],
)
def test_a_url_the_operator_allows_registers(project, allow, url):
    _spec(project, f'notify: [{{on: [failure], to: ["{url}"]}}]')
    proc = nbsched("register", "pipeline.yaml", cwd=project, env={"NBSCHED_NOTIFY_ALLOW": allow})
    assert proc.returncode == 0, proc.stderr


def test_a_bad_allow_list_entry_is_one_line(project):
    _spec(project, 'notify: [{on: [failure], to: ["json://127.0.0.1:9/x"]}]')
    proc = nbsched("register", "pipeline.yaml", cwd=project, env={"NBSCHED_NOTIFY_ALLOW": "json:/x"})
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "Error: NBSCHED_NOTIFY_ALLOW: 'json:/x': expected *, a scheme (slack) or a scheme and host "
        "(json://hooks.example.com)"
    )


@pytest.mark.parametrize("value", ["0", "-1s", "soon", "11m"])
def test_a_bad_notify_timeout_is_one_line(project, value):
    _spec(project, 'notify: [{on: [failure], to: ["json://127.0.0.1:9/x"]}]')
    nbsched("register", "pipeline.yaml", cwd=project, check=True)
    proc = nbsched("notify", "test", "p", cwd=project, env={"NBSCHED_NOTIFY_TIMEOUT": value})
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("Error: NBSCHED_NOTIFY_TIMEOUT"), line


def test_an_allow_list_entry_with_a_port_says_to_leave_it_out(project):
    _spec(project, 'notify: [{on: [failure], to: ["json://127.0.0.1:9/x"]}]')
    proc = nbsched("register", "pipeline.yaml", cwd=project, env={"NBSCHED_NOTIFY_ALLOW": "json://127.0.0.1:9"})
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "Error: NBSCHED_NOTIFY_ALLOW: 'json://127.0.0.1:9': a host without its port (json://hooks.example.com)"
    )
