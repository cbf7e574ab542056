"""The typed boundary: views answer in the shapes ``jupyter_ext/openapi.yaml`` describes, the
document's enums and bounds are nbsched's own (requests are checked against it: test_contract.py)."""

from __future__ import annotations

import copy
import dataclasses
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from jsonschema import Draft4Validator

from jupyter_ext.contract import Contract
from nbsched.bounds import MAX_SPEC_BYTES
from nbsched.dag import TriggerRule
from nbsched.failures import TaskFailure
from nbsched.notices import RULE_KEYS
from nbsched.spec import (
    MAX_ACTIVE_RUNS,
    MAX_ACTIVE_TASKS,
    MAX_PATH,
    MAX_RETRIES,
    MAX_SCHEDULES,
    MAX_TASKS,
    PIPELINE_KEYS,
    POLICY_KEYS,
    SCHEDULE_KEYS,
    TASK_KEYS,
    parse_pipeline,
)
from nbsched.states import NoticeState, NotifyEvent, RunState, RunTrigger, ScheduleOrigin, TaskState
from nbsched.store import PipelineRecord, RunRecord, ScheduleRecord, TaskRunRecord, TaskTryRecord
from nbsched.views import PipelineDetail, PipelineView, RunView, ScheduleView, task_rows

T0 = datetime(2026, 11, 28, 6, 0, tzinfo=timezone.utc)
CONTRACT = Contract.load("0.1.0")
SCHEMAS = CONTRACT.document["components"]["schemas"]


def _nullable_as_json_schema(schema: Any) -> Any:
    """OpenAPI 3.0's ``nullable: true`` as JSON Schema's ``type: [..., "null"]``."""
    if isinstance(schema, list):
        return [_nullable_as_json_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _nullable_as_json_schema(v) for k, v in schema.items() if k != "nullable"}
    if schema.get("nullable"):
        out["type"] = [schema["type"], "null"]
    return out


def conforms(data: Any, name: str) -> None:
    components = _nullable_as_json_schema(copy.deepcopy(CONTRACT.document["components"]))
    Draft4Validator({"$ref": f"#/components/schemas/{name}", "components": components}).validate(data)


def task_record(state: TaskState, **changes: Any) -> TaskRunRecord:
    fields: dict[str, Any] = {
        "task": "extract",
        "state": state,
        "try_number": 1,
        "max_tries": 2,
        "owner": None,
        "host": "box",
        "error": None,
        "failure": None,
        "output_path": "/runs/sales/r1/extract.ipynb",
        "outputs": {"rows": 3},
        "branch": None,
        "cell": None,
        "queued_at": T0,
        "started_at": T0,
        "ended_at": T0 + timedelta(seconds=5),
        "next_try_at": None,
        "tries": (
            TaskTryRecord(
                try_number=1,
                state=state,
                runner="box:1:a",
                host="box",
                error=None,
                failure=None,
                started_at=T0,
                ended_at=T0 + timedelta(seconds=5),
            ),
        ),
    }
    return TaskRunRecord(**{**fields, **changes})


def run_record() -> RunRecord:
    failure = TaskFailure(ename="ValueError", evalue="bad input", cell=4, source="raise ValueError('bad input')")
    failed = task_record(
        TaskState.FAILED,
        task="load",
        error=str(failure),
        failure=failure,
        tries=(
            TaskTryRecord(
                try_number=1,
                state=TaskState.FAILED,
                runner="box:1:a",
                host="box",
                error=str(failure),
                failure=failure,
                started_at=T0,
                ended_at=T0,
            ),
        ),
    )
    running = task_record(
        TaskState.RUNNING,
        task="report",
        ended_at=None,
        output_path=None,
        outputs={},
        cell={"index": 2, "count": 5, "source": "df = load()"},
        tries=(
            TaskTryRecord(
                try_number=1,
                state=TaskState.RUNNING,
                runner="box:1:a",
                host=None,
                error=None,
                failure=None,
                started_at=T0,
                ended_at=None,
            ),
        ),
    )
    return RunRecord(
        id="r1",
        pipeline="sales",
        pipeline_version=2,
        params={"region": "eu"},
        logical_date=T0,
        trigger=RunTrigger.SCHEDULE,
        schedule_id=7,
        max_active_runs=1,
        owner="box:1:a",
        state=RunState.RUNNING,
        host="box",
        error=None,
        created_at=T0,
        started_at=T0,
        ended_at=None,
        tasks={"extract": task_record(TaskState.SUCCESS), "report": running, "load": failed},
    )


def schedule_record(**changes: Any) -> ScheduleRecord:
    fields: dict[str, Any] = {
        "id": 7,
        "pipeline": "sales",
        "trigger": {"cron": "0 6 * * 1-5", "timezone": "Europe/Paris"},
        "params": {},
        "enabled": True,
        "catchup": True,
        "misfire_grace": 600.0,
        "max_active_runs": 1,
        "origin": ScheduleOrigin.SPEC,
        "next_fire_at": T0,
        "last_fire_at": None,
        "created_at": T0,
        "updated_at": T0,
    }
    return ScheduleRecord(**{**fields, **changes})


def test_a_run_view_has_the_json_shape_of_the_api():
    view = RunView.of(run_record())
    data = view.to_json()
    conforms(data, "Run")
    assert list(data) == [
        "run_id",
        "pipeline",
        "pipeline_version",
        "state",
        "params",
        "logical_date",
        "trigger",
        "schedule_id",
        "fired_by",
        "repairs",
        "selection",
        "error",
        "created_at",
        "started_at",
        "ended_at",
        "first_started_at",
        "spans",
        "duration",
        "tasks",
    ]
    assert data["run_id"] == "r1" and data["state"] == "running" and data["logical_date"] == T0.isoformat()
    task = data["tasks"]["extract"]
    assert list(task) == [
        "name",
        "state",
        "try_number",
        "max_tries",
        "error",
        "failure",
        "output_path",
        "outputs",
        "cell",
        "host",
        "started_at",
        "ended_at",
        "params",
        "pool",
        "waiting",
        "mapped_from",
        "map_index",
        "instance_params",
        "label",
        "warnings",
        "tries",
        "instances",
        "instance_states",
    ]
    assert task["tries"] == [
        {
            "try_number": 1,
            "state": "success",
            "runner": "box:1:a",
            "host": "box",
            "error": None,
            "failure": None,
            "started_at": T0.isoformat(),
            "ended_at": (T0 + timedelta(seconds=5)).isoformat(),
        }
    ]
    # a failure as data, beside its one line
    failed = data["tasks"]["load"]
    assert failed["error"] == "ValueError: bad input (cell 4: raise ValueError('bad input'))"
    assert (
        failed["failure"]
        == failed["tries"][0]["failure"]
        == {
            "ename": "ValueError",
            "evalue": "bad input",
            "cell": 4,
            "source": "raise ValueError('bad input')",
            "injected": False,
        }
    )
    # typed for Python: states are enums, times are datetimes
    assert view.state is RunState.RUNNING and view.tasks["report"].tries[0].ended_at is None
    assert view.tasks["report"].cell == {"index": 2, "count": 5, "source": "df = load()"}


def test_a_mapped_task_is_one_entry_with_its_instances_and_their_roll_up():
    def instance(i: int, state: TaskState, ended: bool = True) -> TaskRunRecord:
        return task_record(
            state,
            task=f"train[{i}]",
            mapped_from="train",
            map_index=i,
            instance_params={"region": ["eu", "us", "apac"][i]},
            started_at=T0 + timedelta(seconds=i),
            ended_at=T0 + timedelta(seconds=10 + i) if ended else None,
        )

    rows = {"train[0]": instance(0, TaskState.SUCCESS), "train[1]": instance(1, TaskState.FAILED)}
    done = dataclasses.replace(run_record(), tasks={**rows, "train[2]": instance(2, TaskState.SUCCESS)})
    data = RunView.of(done).to_json()
    conforms(data, "Run")
    train = data["tasks"]["train"]
    assert list(data["tasks"]) == ["train"] and [i["name"] for i in train["instances"]] == [
        "train[0]",
        "train[1]",
        "train[2]",
    ]
    assert train["state"] == "failed" and train["error"] == "1 of 3 instances failed"
    assert train["instance_states"] == {"failed": 1, "success": 2}
    assert train["started_at"] == T0.isoformat() and train["ended_at"] == (T0 + timedelta(seconds=12)).isoformat()
    assert train["instances"][2]["label"] == "train[region=apac]" and train["instances"][2]["instances"] == []
    # while one instance still runs, the task runs and has not ended
    moving = dataclasses.replace(run_record(), tasks={**rows, "train[2]": instance(2, TaskState.RUNNING, False)})
    train = RunView.of(moving).to_json()["tasks"]["train"]
    assert train["state"] == "running" and train["ended_at"] is None
    assert list(task_rows(RunView.of(moving).to_json()["tasks"])) == ["train[0]", "train[1]", "train[2]"]


def test_a_schedule_view_tells_its_next_fire_in_its_zone():
    view = ScheduleView.of(schedule_record())
    assert view.description == "cron 0 6 * * 1-5 (Europe/Paris) +catchup"
    assert view.next_fire_local is not None and view.next_fire_local.isoformat() == "2026-11-28T07:00:00+01:00"
    data = view.to_json()
    conforms(data, "Schedule")
    assert data["next_fire_local"] == "2026-11-28T07:00:00+01:00" and data["last_fire_at"] is None
    done = ScheduleView.of(schedule_record(next_fire_at=None, catchup=False))
    assert done.next_fire_local is None and done.description == "cron 0 6 * * 1-5 (Europe/Paris)"


def test_pipeline_views_have_the_json_shape_of_the_api(tmp_path: Path):
    spec = parse_pipeline(
        {
            "name": "sales",
            "tasks": {
                "extract": "e.ipynb",
                "report": {"notebook": "r.ipynb", "upstream": ["extract"], "trigger_rule": "all_done"},
            },
        },
        base_dir=tmp_path,
    )
    record = PipelineRecord(name="sales", version=2, spec={}, source_path=None, created_at=T0)
    short = PipelineView.of(record, spec, schedules=1)
    conforms(short.to_json(), "Pipeline")
    assert short.to_json()["tasks"] == ["extract", "report"]
    detail = PipelineDetail(
        pipeline=short, versions=((1, T0), (2, T0)), spec=spec, schedule_list=(ScheduleView.of(schedule_record()),)
    ).to_json()
    conforms(detail, "PipelineDetail")
    assert detail["dag"]["tasks"][1] == {
        "name": "report",
        "notebook": str(tmp_path / "r.ipynb"),
        "upstream": ["extract"],
        "trigger_rule": "all_done",
    }
    assert detail["versions"] == [
        {"version": 1, "created_at": T0.isoformat()},
        {"version": 2, "created_at": T0.isoformat()},
    ]


def test_the_documents_enums_and_bounds_are_nbscheds_own():
    assert SCHEMAS["RunState"]["enum"] == [s.value for s in RunState]
    assert SCHEMAS["TaskState"]["enum"] == [s.value for s in TaskState]
    assert SCHEMAS["RunTrigger"]["enum"] == [t.value for t in RunTrigger]
    assert SCHEMAS["ScheduleOrigin"]["enum"] == [o.value for o in ScheduleOrigin]
    events = [e.value for e in NotifyEvent]
    assert SCHEMAS["NotifyRules"]["items"]["properties"]["on"]["items"]["enum"] == events
    assert SCHEMAS["Notification"]["properties"]["event"]["enum"] == events
    assert SCHEMAS["Notification"]["properties"]["state"]["enum"] == [s.value for s in NoticeState]
    assert sorted(SCHEMAS["NotifyRules"]["items"]["properties"]) == sorted(RULE_KEYS)
    task = SCHEMAS["TaskSpec"]["properties"]
    assert task["trigger_rule"]["enum"] == [r.value for r in TriggerRule]
    assert sorted(task) == sorted(TASK_KEYS) and task["notebook"]["maxLength"] == MAX_PATH
    assert task["retries"]["maximum"] == MAX_RETRIES
    spec = SCHEMAS["PipelineSpec"]["properties"]
    assert sorted(spec) == sorted(PIPELINE_KEYS) and sorted(spec["defaults"]["properties"]) == sorted(POLICY_KEYS)
    assert spec["tasks"]["maxProperties"] == MAX_TASKS and spec["schedules"]["maxItems"] == MAX_SCHEDULES
    assert spec["max_active_tasks"]["maximum"] == MAX_ACTIVE_TASKS
    fields = SCHEMAS["ScheduleFields"]["properties"]
    assert (
        sorted(set(fields) - {"pipeline"}) == sorted(SCHEDULE_KEYS)
        and fields["max_active_runs"]["maximum"] == MAX_ACTIVE_RUNS
    )
    assert sorted(SCHEMAS["ScheduleCreate"]["properties"]) == sorted([*SCHEDULE_KEYS, "pipeline"])
    assert SCHEMAS["RelativePath"]["maxLength"] == MAX_PATH
    assert f"{MAX_SPEC_BYTES:,} bytes" in CONTRACT.document["components"]["responses"]["TooLarge"]["description"]
