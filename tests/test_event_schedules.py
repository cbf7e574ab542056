"""Event schedules: ``after:`` another pipeline's runs and ``files:`` arriving in a folder. The
scheduler is driven with the time passed in (runs are created, not executed), on SQLite and on
the real PostgreSQL; files are real files whose modification times are set."""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from conftest import nbsched, serve, stop, wait_for, write_notebook, write_yaml

from nbsched.errors import ScheduleError, SpecError
from nbsched.params import task_parameters
from nbsched.scheduler import Scheduler
from nbsched.service import Config, Service
from nbsched.states import RunState, RunTrigger, TaskState

UTC = timezone.utc


@pytest.fixture
def service(project, db_url):
    svc = Service(Config.resolve(project=project, db_url=db_url))
    yield svc
    svc.close()


def _pipelines(project: Path, downstream_schedule: str) -> None:
    write_notebook(project / "ingest.ipynb", "x = 1")
    write_notebook(project / "report.ipynb", "y = 1", params="trigger_run = None\ntrigger_file = None\nupstream = {}")
    write_yaml(project / "ingest.yaml", "name: ingest\ntasks:\n  load: ingest.ipynb\n")
    write_yaml(
        project / "report.yaml",
        f"name: report\ntasks:\n  build: report.ipynb\nschedules:\n  - {downstream_schedule}\n",
    )


def _finish(service: Service, run_id: str, state: RunState, outputs: dict | None = None) -> None:
    """Play the runner: the run's task and then the run end in ``state``."""
    store = service.store
    store.start_run(run_id)
    store.set_task_state(run_id, "load", TaskState.QUEUED)
    (claimed,) = store.claim_tasks("test-runner", 1)
    store.finish_task(
        run_id,
        "load",
        owner="test-runner",
        try_number=claimed.try_number,
        state=TaskState.SUCCESS,
        outputs=outputs or {},
    )
    store.set_run_state(run_id, state)


def _parameters(service: Service, run) -> dict:
    """What the run's notebook receives (the runner's call, without a kernel)."""
    spec = service.pipeline_spec_for_run(run.id)
    return task_parameters(
        spec,
        spec.tasks["build"],
        overrides=run.params,
        run_id=run.id,
        logical_date=run.logical_date,
        run_dir="runs",
        upstream={},
        fired_by=run.fired_by,
    )


def _runs(service: Service, pipeline: str) -> list:
    return [r for r in service.store.list_runs(limit=None, oldest_first=True) if r.pipeline == pipeline]


def test_after_makes_one_run_per_successful_upstream_run_with_its_outputs(project, service):
    _pipelines(project, "{after: ingest}")
    service.register(project / "ingest.yaml")
    service.register(project / "report.yaml")
    upstream = [service.trigger("ingest", logical_date=datetime(2026, 12, i + 1, tzinfo=UTC)) for i in range(4)]
    for i, run_id in enumerate(upstream):
        _finish(service, run_id, RunState.FAILED if i == 3 else RunState.SUCCESS, {"rows": i})
    first, second = (Scheduler(service.store, service._run_for_schedule) for _ in range(2))
    now = datetime.now(UTC)
    made = first.fire_due(now) + second.fire_due(now) + first.fire_due(now + timedelta(seconds=5))
    runs = _runs(service, "report")
    assert len(made) == len(runs) == 3  # the failed one fires nothing; two schedulers fire each once
    by_upstream = {r.fired_by["run"]["run_id"]: r for r in runs}
    assert sorted(by_upstream) == sorted(upstream[:3])
    for i, run_id in enumerate(upstream[:3]):
        run = by_upstream[run_id]
        assert run.trigger is RunTrigger.AFTER
        assert run.logical_date == datetime(2026, 12, i + 1, tzinfo=UTC)
        assert run.fired_by["run"] == {
            "run_id": run_id,
            "pipeline": "ingest",
            "state": "success",
            "outputs": {"load": {"rows": i}},
        }
    params = _parameters(service, runs[0])
    assert params["trigger_run"]["pipeline"] == "ingest"
    assert "trigger_file" not in params


def test_after_with_state_failed_or_finished(project, service):
    _pipelines(project, "{after: ingest, state: failed}")
    write_yaml(
        project / "audit.yaml",
        "name: audit\ntasks:\n  build: report.ipynb\nschedules:\n  - {after: ingest, state: finished}\n",
    )
    for spec in ("ingest", "report", "audit"):
        service.register(project / f"{spec}.yaml")
    ok, bad, cancelled = (service.trigger("ingest") for _ in range(3))
    _finish(service, ok, RunState.SUCCESS)
    _finish(service, bad, RunState.FAILED)
    _finish(service, cancelled, RunState.CANCELLED)
    Scheduler(service.store, service._run_for_schedule).fire_due(datetime.now(UTC))
    assert [r.fired_by["run"]["run_id"] for r in _runs(service, "report")] == [bad]
    assert sorted(r.fired_by["run"]["run_id"] for r in _runs(service, "audit")) == sorted([ok, bad])


def test_after_fires_only_for_runs_ending_once_the_schedule_exists(project, service):
    _pipelines(project, "{after: ingest}")
    service.register(project / "ingest.yaml")
    before = service.trigger("ingest")
    _finish(service, before, RunState.SUCCESS)
    service.register(project / "report.yaml")
    scheduler = Scheduler(service.store, service._run_for_schedule)
    assert scheduler.fire_due(datetime.now(UTC)) == []
    after = service.trigger("ingest")
    _finish(service, after, RunState.SUCCESS)
    assert len(scheduler.fire_due(datetime.now(UTC) + timedelta(seconds=5))) == 1


def _drop(folder: Path, name: str, text: str = "a,b\n1,2\n", *, age: float = 60) -> Path:
    """A file written ``age`` seconds ago."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    stamp = datetime.now(UTC).timestamp() - age
    os.utime(path, (stamp, stamp))
    return path


def test_files_fire_once_per_new_file_with_its_path(project, service):
    _pipelines(project, '{files: "incoming/*.csv", poll: 1s, settle: 5s}')
    _drop(project / "incoming", "old.csv")  # there before the schedule: fires nothing
    service.register(project / "report.yaml")
    first, second = (Scheduler(service.store, service._run_for_schedule) for _ in range(2))
    made, start = [], datetime.now(UTC)
    for i, name in enumerate(("a.csv", "b.csv", "sub/c.csv", "d.txt")):
        _drop(project / "incoming", name)
        now = start + timedelta(seconds=2 * i)  # each scheduler looks every second
        made += first.fire_due(now) + second.fire_due(now + timedelta(seconds=1))
    runs = _runs(service, "report")
    assert len(made) == len(runs) == 2  # incoming/*.csv: not sub/c.csv, not d.txt, not old.csv
    assert [r.fired_by["file"]["path"] for r in runs] == ["incoming/a.csv", "incoming/b.csv"]
    assert all(r.trigger is RunTrigger.FILE for r in runs)
    params = _parameters(service, runs[0])
    assert params["trigger_file"] == "incoming/a.csv"
    assert "trigger_run" not in params
    # a restarted daemon (a new scheduler) fires nothing again
    assert Scheduler(service.store, service._run_for_schedule).fire_due(datetime.now(UTC) + timedelta(seconds=9)) == []


def test_a_file_still_being_written_fires_once_after_it_settles(project, service):
    _pipelines(project, '{files: "incoming/*.csv", poll: 1s, settle: 5s}')
    service.register(project / "report.yaml")
    scheduler = Scheduler(service.store, service._run_for_schedule)
    growing = _drop(project / "incoming", "big.csv", age=0)
    now = datetime.now(UTC)
    assert scheduler.fire_due(now + timedelta(seconds=1)) == []
    assert scheduler.next_fire_at() <= now + timedelta(seconds=5)  # it looks again when the file may have settled
    with growing.open("a") as f:
        f.write("3,4\n")
    assert scheduler.fire_due(now + timedelta(seconds=2)) == []
    (run_id,) = scheduler.fire_due(datetime.now(UTC) + timedelta(seconds=6))
    assert service.get_run(run_id).fired_by["file"]["size"] == growing.stat().st_size
    assert scheduler.fire_due(datetime.now(UTC) + timedelta(seconds=20)) == []
    with growing.open("a") as f:  # changed again: a new version of the file, one more run
        f.write("5,6\n")
    assert len(scheduler.fire_due(datetime.now(UTC) + timedelta(seconds=30))) == 1


def test_existing_true_fires_the_files_already_there(project, service):
    _pipelines(project, '{files: "incoming/*.csv", existing: true}')
    _drop(project / "incoming", "old.csv")
    service.register(project / "report.yaml")
    assert len(Scheduler(service.store, service._run_for_schedule).fire_due(datetime.now(UTC))) == 1


def test_a_symlink_out_of_the_folder_never_fires(project, service, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    _drop(outside, "secret.csv")
    _pipelines(project, '{files: "incoming/*.csv"}')
    service.register(project / "report.yaml")
    (project / "incoming").mkdir(exist_ok=True)
    (project / "incoming" / "link.csv").symlink_to(outside / "secret.csv")
    assert Scheduler(service.store, service._run_for_schedule).fire_due(datetime.now(UTC) + timedelta(minutes=1)) == []


def test_a_symlink_out_is_logged_once_until_it_changes(project, service, tmp_path_factory, caplog):
    """A daemon polling every second said so at every poll (96 lines in 95 s), and again at
    each pause and resume: once per file, until the link changes."""
    outside = tmp_path_factory.mktemp("outside")
    _drop(outside, "secret.csv")
    _drop(outside, "other.csv")
    _pipelines(project, '{files: "incoming/*.csv", poll: 1s}')
    (project / "incoming").mkdir()
    link = project / "incoming" / "link.csv"
    link.symlink_to(outside / "secret.csv")
    caplog.set_level("INFO", logger="nbsched.scheduler")
    (schedule,) = service.register(project / "report.yaml")[2]  # says it once, to who registers
    caplog.clear()
    scheduler = Scheduler(service.store, service._run_for_schedule)
    now = datetime.now(UTC)
    for poll in range(5):
        assert scheduler.fire_due(now + timedelta(seconds=2 * poll)) == []
    service.pause(schedule)
    service.resume(schedule)
    assert scheduler.fire_due(now + timedelta(seconds=12)) == []
    out = [r.getMessage() for r in caplog.records if "leads out" in r.getMessage()]
    assert len(out) == 1 and "link.csv" in out[0], out
    link.unlink()
    link.symlink_to(outside / "other.csv")  # another file out: said once more
    for poll in range(3):
        scheduler.fire_due(now + timedelta(seconds=14 + 2 * poll))
    out = [r.getMessage() for r in caplog.records if "leads out" in r.getMessage()]
    assert len(out) == 2 and "link.csv" in out[-1], out


def test_event_schedules_show_what_they_wait_for_and_what_they_fired(project, service):
    _pipelines(project, '{files: "incoming/*.csv", poll: 10s}')
    write_yaml(project / "audit.yaml", "name: audit\ntasks:\n  build: report.ipynb\nschedules:\n  - {after: report}\n")
    service.register(project / "report.yaml")
    service.register(project / "audit.yaml")
    files, after = service.list_schedules("report")[0], service.list_schedules("audit")[0]
    assert files.kind == "files" and after.kind == "after"
    assert files.description == "files incoming/*.csv (every 10s, settle 5s)"
    assert after.description == "after report (success)"
    _drop(project / "incoming", "a.csv")
    Scheduler(service.store, service._run_for_schedule).fire_due(datetime.now(UTC))
    fired = service.get_schedule(files.id)
    assert fired.last_fire_at is not None and fired.last_run_id == _runs(service, "report")[0].id
    assert fired.to_json()["kind"] == "files"
    from nbsched.widgets import RunPanel

    panel = RunPanel(service, "report", refresh_every=0)
    shown = panel.schedules.value
    assert f"schedule {files.id}: files incoming/*.csv (every 10s, settle 5s) · active" in shown
    assert f"waits for a new file incoming/*.csv (looks every 10s) · last run {fired.last_run_id}" in shown
    panel.close()


@pytest.mark.parametrize(
    ("schedule", "problem"),
    [
        ('{files: "../*.csv"}', "schedules[0].files: '../*.csv' leaves the spec's folder"),
        ('{files: "/etc/*"}', "schedules[0].files: '/etc/*' leaves the spec's folder"),
        ('{files: ""}', "schedules[0].files: expected a glob pattern"),
        ('{files: "a/**b"}', "schedules[0].files: 'a/**b' is not a glob pattern"),
        ('{files: "."}', "schedules[0].files: '.' matches folders, not files (use a pattern like 'incoming/*.csv')"),
        ('{files: "./"}', "schedules[0].files: './' matches folders, not files"),
        ('{files: "incoming/"}', "schedules[0].files: 'incoming/' matches folders, not files"),
        ('{files: "incoming/."}', "schedules[0].files: 'incoming/.' matches folders, not files"),
        ('{files: "**"}', "schedules[0].files: '**' matches folders, not files (use '**/*' for every file below)"),
        ('{files: "*.csv", poll: 0.5s}', "schedules[0].poll: '0.5s': at least 1s"),
        ('{files: "*.csv", settle: -1}', "schedules[0].settle"),
        ("{after: report}", "schedules[0].after: 'report' is the pipeline itself"),
        ("{after: ingest, state: done}", "schedules[0].state: 'done'"),
        ('{after: ingest, cron: "0 6 * * *"}', "one of cron, every, at, after or files"),
        ("{after: ingest, catchup: true}", "schedules[0].catchup: only a time schedule"),
        ('{files: "*.csv", state: failed}', "schedules[0].state: only an after schedule has state"),
        ("{after: ingest, poll: 5s}", "schedules[0].poll: only a files schedule has poll"),
    ],
)
def test_bad_event_schedules_are_one_line_naming_file_and_field(project, schedule, problem):
    _pipelines(project, schedule)
    proc = nbsched("register", "report.yaml", cwd=project)
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("Error: report.yaml: ") and problem in line, line


def test_a_cycle_of_after_schedules_is_refused(project, service):
    write_notebook(project / "nb.ipynb", "x = 1")
    write_yaml(project / "a.yaml", "name: a\ntasks:\n  t: nb.ipynb\nschedules:\n  - {after: b}\n")
    write_yaml(project / "b.yaml", "name: b\ntasks:\n  t: nb.ipynb\nschedules:\n  - {after: c}\n")
    write_yaml(project / "c.yaml", "name: c\ntasks:\n  t: nb.ipynb\nschedules:\n  - {after: a}\n")
    service.register(project / "a.yaml")
    service.register(project / "b.yaml")
    with pytest.raises((ScheduleError, SpecError), match=r"after: c -> a -> b -> c is a cycle"):
        service.register(project / "c.yaml")
    assert service.list_schedules("c") == []


def test_after_a_pipeline_not_registered_yet_is_a_warning(project, service):
    _pipelines(project, "{after: ingst}")
    spec, _, _ = service.register(project / "report.yaml")
    assert any("schedules[0].after: no pipeline 'ingst' is registered" in w for w in spec.warnings)


def _done(service: Service, pipeline: str, count: int) -> list:
    runs = _runs(service, pipeline)
    return runs if len(runs) >= count and all(r.state.finished for r in runs) else []


@pytest.mark.kernel
@pytest.mark.slow
def test_two_daemons_on_postgresql_run_after_and_files_schedules_once_each(project, pg_url):
    write_notebook(
        project / "ingest.ipynb", "import nbsched\nnbsched.record('rows', n * 10)", params="n = 0\nupstream = {}"
    )
    write_notebook(
        project / "report.ipynb",
        "import nbsched\nnbsched.record('got', trigger_run['outputs']['load']['rows'])",
        params="trigger_run = None\nupstream = {}",
    )
    write_notebook(
        project / "load.ipynb",
        "import nbsched\nnbsched.record('path', trigger_file)\nnbsched.record('text', open(trigger_file).read())",
        params="trigger_file = None\nupstream = {}",
    )
    write_yaml(project / "ingest.yaml", "name: ingest\ntasks:\n  load: ingest.ipynb\n")
    write_yaml(
        project / "report.yaml", "name: report\ntasks:\n  build: report.ipynb\nschedules:\n  - {after: ingest}\n"
    )
    write_yaml(
        project / "loader.yaml",
        'name: loader\ntasks:\n  load: load.ipynb\nschedules:\n  - {files: "incoming/*.csv", poll: 1s, settle: 2s}\n',
    )
    (project / "incoming").mkdir()
    for spec in ("ingest", "report", "loader"):
        nbsched("--db", pg_url, "register", f"{spec}.yaml", cwd=project, check=True)
    service = Service(Config.resolve(project=project, db_url=pg_url))
    daemons = [serve(project, f"serve{i}", "--workers", "1", db=pg_url) for i in range(2)]
    try:
        for n in (1, 2, 3):
            nbsched("--db", pg_url, "trigger", "ingest", "-p", f"n={n}", cwd=project, check=True)
        for name in ("a", "b"):
            (project / "incoming" / f"{name}.csv").write_text(f"{name}\n")
            time.sleep(1.5)
        growing = project / "incoming" / "c.csv"  # written over 3 s, longer than its settle
        for part in range(6):
            with growing.open("a") as f:
                f.write(f"c{part}\n")
            time.sleep(0.5)
        reports = wait_for(lambda: _done(service, "report", 3), 120, "three runs of report")
        loads = wait_for(lambda: _done(service, "loader", 3), 120, "three runs of loader")
        stop(daemons[0])
        daemons[0] = serve(project, "serve-again", "--workers", "1", db=pg_url)  # a restart fires nothing again
        time.sleep(4)
    finally:
        codes = [stop(d) for d in daemons]
    assert codes == [0, 0]
    assert len(_runs(service, "report")) == 3 and len(_runs(service, "loader")) == 3
    assert all(r.state is RunState.SUCCESS for r in reports + loads), [r.error for r in reports + loads]
    assert sorted(r.tasks["build"].outputs["got"] for r in reports) == [10, 20, 30]
    got = sorted((r.tasks["load"].outputs["path"], r.tasks["load"].outputs["text"]) for r in loads)
    assert got == [
        ("incoming/a.csv", "a\n"),
        ("incoming/b.csv", "b\n"),
        ("incoming/c.csv", "".join(f"c{i}\n" for i in range(6))),
    ]
    service.close()


@pytest.mark.parametrize(
    ("option", "problem"),
    [
        (
            ["--files", "."],
            "Error: schedule.files: '.' matches folders, not files (use a pattern like 'incoming/*.csv')",
        ),
        (["--files", "./"], "Error: schedule.files: './' matches folders, not files"),
        (["--every", "1ms"], "Error: schedule.every: '1ms': at least 1s (a schedule fires at most once a second)"),
    ],
)
def test_schedule_add_refuses_folders_and_sub_second_intervals_in_one_line(project, option, problem):
    _pipelines(project, "{after: ingest}")
    nbsched("register", "report.yaml", cwd=project, check=True)
    proc = nbsched("schedule", "add", "report", *option, cwd=project)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(problem), line
