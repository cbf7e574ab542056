"""The run-history panel against a real store with real runs; buttons clicked from Python."""

from __future__ import annotations

import time

import pytest
from conftest import write_notebook, write_yaml

from nbsched.widgets import RunPanel


@pytest.fixture
def history(project, service):
    write_notebook(project / "ok.ipynb", "x = 1", params="region = 'eu'\nupstream = {}")
    write_notebook(project / "boom.ipynb", "1/0")
    write_yaml(
        project / "good.yaml",
        "name: good\ntasks:\n  a: {notebook: ok.ipynb}\n  b: {notebook: ok.ipynb, upstream: [a]}\n",
    )
    write_yaml(
        project / "bad.yaml",
        "name: bad\ntasks:\n  a: {notebook: boom.ipynb}\n  b: {notebook: ok.ipynb, upstream: [a]}\n",
    )
    service.register(project / "good.yaml")
    good = service.run_pipeline(project / "good.yaml")
    bad = service.run_pipeline(project / "bad.yaml")
    return service, good, bad


@pytest.mark.kernel
def test_runs_table_shows_runs_with_state_colours(history):
    service, good, bad = history
    panel = RunPanel(service, refresh_every=0)
    table = panel.runs_table.value
    assert f'data-run="{good.id}"' in table and f'data-run="{bad.id}"' in table
    assert 'data-state="success" style="color:white;background:#2e7d32' in table
    assert 'data-state="failed" style="color:white;background:#c62828' in table
    assert panel.pipeline.options == ("(all pipelines)", "bad", "good")
    panel.pipeline.value = "good"
    assert bad.id not in panel.runs_table.value and panel.run_choice.options == (good.id,)


@pytest.mark.kernel
def test_run_detail_draws_the_dag_and_links_the_notebooks(history):
    service, good, bad = history
    panel = RunPanel(service, refresh_every=0)
    panel.run_choice.value = bad.id
    detail = panel.detail.value
    assert 'data-task="a" data-state="failed"' in detail  # the DAG picture
    assert 'data-task="b" data-state="upstream_failed"' in detail
    assert "ZeroDivisionError" in detail and "a.ipynb</a>" in detail
    assert (panel.progress.value, panel.progress.max) == (2, 2)
    assert not panel.retry_run.disabled and panel.cancel_run.disabled
    panel.task_choice.value = "a"
    panel.show_report.click()
    assert panel.report.value.startswith('<iframe class="nbsched-report" sandbox="allow-scripts"')
    assert "ZeroDivisionError" in panel.report.value
    panel.run_choice.value = good.id  # another run: the report shown is not its own
    assert panel.report.value == "" and panel.task_choice.options == ("a", "b")


@pytest.mark.kernel
def test_run_now_queues_a_run_with_the_params(history):
    service, good, _ = history
    panel = RunPanel(service, "good", refresh_every=0)
    panel.params.value = "region=us, limit=5, full=true, since=None"  # typed as papermill's -p
    panel.run_now.click()
    queued = service.get_run(panel.run_choice.value)
    assert queued.id != good.id and queued.state.value == "queued"
    assert queued.params == {"region": "us", "limit": 5, "full": "true", "since": None}
    assert 'data-state="queued"' in panel.runs_table.value
    panel.cancel_run.click()
    assert service.get_run(queued.id).state.value == "cancelled"


@pytest.mark.kernel
def test_retry_requeues_the_failed_run(history):
    service, _, bad = history
    panel = RunPanel(service, refresh_every=0)
    panel.run_choice.value = bad.id
    panel.retry_run.click()
    assert service.get_run(bad.id).state.value == "queued"
    assert panel.status.value == ""


@pytest.mark.kernel
def test_a_tasks_rerun_buttons_repair_the_run_with_the_params_box(history):
    service, good, _ = history
    panel = RunPanel(service, refresh_every=0)
    panel.run_choice.value = good.id
    panel.task_choice.value = "a"
    panel.params.value = "region=us"
    panel.rerun_downstream.click()
    assert panel.status.value == ""
    run = service.get_run(good.id)
    assert run.state.value == "queued" and [t.state.value for t in run.tasks.values()] == ["pending", "pending"]
    assert run.repairs[0]["tasks"] == ["a"] and run.repairs[0]["params"] == {"region": "us"}
    assert panel.rerun_task.disabled  # the run is not finished now
    panel.task_choice.value = "b"
    panel.rerun_task.click()  # a disabled button's click still reaches the handler: the service refuses
    assert "wait for it to end" in panel.status.value


@pytest.mark.kernel
def test_pause_and_resume_the_pipelines_schedules(history):
    service, _, _ = history
    sched = service.add_schedule("good", {"cron": "0 6 * * *"})
    panel = RunPanel(service, "good", refresh_every=0)
    assert panel.toggle_schedule.description == "Pause schedules"
    assert f"schedule {sched.id}: cron 0 6 * * * (UTC) · active · next " in panel.schedules.value
    panel.toggle_schedule.click()
    assert not service.get_schedule(sched.id).enabled
    assert panel.toggle_schedule.description == "Resume schedules"
    assert f"schedule {sched.id}: cron 0 6 * * * (UTC) · paused" in panel.schedules.value
    panel.toggle_schedule.click()
    assert service.get_schedule(sched.id).enabled


@pytest.mark.kernel
def test_a_mistake_is_printed_in_the_panel_not_raised(history):
    service, good, _ = history
    panel = RunPanel(service, "good", refresh_every=0)
    panel.params.value = "novalue"
    panel.run_now.click()
    assert "expected key=value" in panel.status.value
    assert panel.run_choice.value == good.id  # nothing was queued


@pytest.mark.kernel
def test_the_panel_refreshes_itself_and_stops_when_closed(history):
    service, _good, _ = history
    panel = RunPanel(service, "good", refresh_every=0.1)
    run_id = service.trigger("good")
    deadline = time.monotonic() + 10
    while run_id not in panel.runs_table.value and time.monotonic() < deadline:
        time.sleep(0.05)
    assert run_id in panel.runs_table.value
    panel.close()
    panel._thread.join(timeout=5)
    assert not panel._thread.is_alive()


@pytest.mark.kernel
def test_progress_shows_the_cell_a_running_notebook_is_on(project, service):
    import threading

    write_notebook(project / "slow.ipynb", "import time", "time.sleep(4)")
    write_notebook(project / "quick.ipynb", "x = 1")
    write_yaml(
        project / "slow.yaml",
        "name: slow\ntasks:\n  first: {notebook: slow.ipynb}\n  second: {notebook: quick.ipynb, upstream: [first]}\n",
    )
    runner = threading.Thread(target=service.run_pipeline, args=(project / "slow.yaml",))
    runner.start()
    panel = RunPanel(service, refresh_every=0)
    try:
        deadline = time.monotonic() + 60
        while "time.sleep(4)" not in panel.progress_label.value and time.monotonic() < deadline:
            time.sleep(0.1)
            panel.refresh()
        label = panel.progress_label.value
        assert label.startswith("0/2 done · running: first (cell ") and label.endswith(": time.sleep(4))"), label
        assert '<span class="nbsched-cell">cell ' in panel.detail.value
        assert (panel.progress.value, panel.progress.max) == (0, 2)
        runner.join(timeout=60)
        panel.refresh()
        assert panel.progress_label.value == "2/2 done" and "nbsched-cell" not in panel.detail.value
    finally:
        runner.join(timeout=60)
        panel.close()


SCRIPT = "<script>alert(1)</script>"


@pytest.mark.kernel
def test_a_script_in_a_name_an_error_or_a_message_is_text_in_the_panel(project, service):
    write_notebook(project / "hostile.ipynb", f"raise ValueError({SCRIPT!r})", params="who = ''\nupstream = {}")
    write_yaml(project / "hostile.yaml", "name: hostile\ntasks:\n  a: {notebook: hostile.ipynb}\n")
    run = service.run_pipeline(project / "hostile.yaml", params={"who": SCRIPT})
    panel = RunPanel(service, refresh_every=0)
    panel.params.value = SCRIPT  # not key=value: the status line says so, quoting it
    panel.run_now.click()
    shown = {"runs": panel.runs_table.value, "detail": panel.detail.value, "status": panel.status.value}
    assert "ValueError: &lt;script&gt;alert(1)&lt;/script&gt;" in shown["detail"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in shown["status"]

    # every value the panel shows, hostile, straight through its template
    from nbsched.render import render_macro

    task = {
        "state": "running",
        "try_number": 1,
        "max_tries": 1,
        "error": SCRIPT,
        "cell": None,
        "output_path": None,
        "started_at": None,
        "ended_at": None,
    }
    view = {
        "run_id": SCRIPT,
        "pipeline": SCRIPT,
        "state": "running",
        "trigger": SCRIPT,
        "created_at": None,
        "started_at": None,
        "first_started_at": None,
        "ended_at": None,
        "tasks": {SCRIPT: task},
    }
    shown["pieces"] = "".join(
        [
            render_macro(
                "panel.html.j2",
                "runs_table",
                runs=[view],
                chosen=SCRIPT,
                now=None,
                labels={SCRIPT: SCRIPT},
                took={SCRIPT: SCRIPT},
            ),
            render_macro(
                "panel.html.j2",
                "run_detail",
                run=view,
                tasks=view["tasks"],
                picture="",
                now=None,
                notebooks={SCRIPT: (SCRIPT, SCRIPT)},
                cells={SCRIPT: SCRIPT},
            ),
            render_macro("panel.html.j2", "report_frame", page=f'"><{SCRIPT}'),
        ]
    )
    for where, html in shown.items():
        assert "<script" not in html.lower(), (where, html)
    assert f'data-run="{run.id}"' in shown["runs"]


def test_a_projects_template_restyles_the_panel(project, service):
    from importlib.resources import files

    own = service.config.home / "templates"
    own.mkdir(parents=True)
    packaged = (files("nbsched") / "html" / "panel.html.j2").read_text(encoding="utf-8")
    (own / "panel.html.j2").write_text(packaged.replace("No runs yet.", "Nothing has run here yet."))
    panel = RunPanel(service, refresh_every=0)
    assert panel.runs_table.value.strip() == "<p>Nothing has run here yet.</p>"


def test_runs_table_tells_a_partial_run(project, service):
    write_notebook(project / "ok.ipynb", "x = 1")
    write_yaml(project / "good.yaml", "name: good\ntasks:\n  a: ok.ipynb\n  b: {notebook: ok.ipynb, upstream: [a]}\n")
    service.register(project / "good.yaml")
    partial = service.trigger("good", only=["a"])
    panel = RunPanel(service, refresh_every=0)
    try:
        row = next(r for r in panel.runs_table.value.split("<tr") if f'data-run="{partial}"' in r)
        assert "<td>manual --only a</td>" in row and "<td>-</td></tr>" in row  # not started: no time
    finally:
        panel.close()
