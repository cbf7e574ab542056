"""The OpenAPI 3 document of the REST API, served at ``/nbsched/api/v1/openapi.json``."""

from __future__ import annotations

from typing import Any

_NULL_STR = {"type": "string", "nullable": True}
_NULL_TIME = {"type": "string", "format": "date-time", "nullable": True}
_ERRORS = {400: "Malformed request (body or query parameter)", 403: "No valid token or not authorized",
           404: "Not found", 409: "Conflicts with the current state", 422: "Invalid spec, schedule or parameters"}


def _obj(required: list[str] | None = None, **props: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": True}
    if required:
        schema["required"] = required
    return schema


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _op(op_id: str, summary: str, ok: dict[str, Any], *errors: int, ok_status: int = 200,
        body: dict[str, Any] | None = None, params: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    responses: dict[str, Any] = {str(ok_status): ok}
    for status in sorted({403, *errors}):
        responses[str(status)] = _json(_ref("Error"), _ERRORS[status])
    op: dict[str, Any] = {"operationId": op_id, "summary": summary, "responses": responses}
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if params:
        op["parameters"] = params
    return op


def _path_param(name: str, kind: str = "string") -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": kind}}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _schemas() -> dict[str, Any]:
    task_run = _obj(["state", "try_number", "error", "output_path", "outputs", "started_at", "ended_at"],
                    state={"type": "string"}, try_number={"type": "integer"}, max_tries={"type": "integer"},
                    error=_NULL_STR, output_path=_NULL_STR, outputs={"type": "object"}, host=_NULL_STR,
                    started_at=_NULL_TIME, ended_at=_NULL_TIME)
    run = _obj(["run_id", "pipeline", "state", "params", "tasks"],
               run_id={"type": "string"}, pipeline={"type": "string"}, pipeline_version={"type": "integer"},
               state={"type": "string", "enum": ["queued", "running", "success", "failed", "cancelled"]},
               params={"type": "object"}, logical_date={"type": "string", "format": "date-time"},
               trigger={"type": "string"}, schedule_id={"type": "integer", "nullable": True}, error=_NULL_STR,
               created_at={"type": "string", "format": "date-time"}, started_at=_NULL_TIME, ended_at=_NULL_TIME,
               tasks={"type": "object", "additionalProperties": _ref("TaskRun")})
    schedule = _obj(["id", "pipeline", "trigger", "params", "enabled"],
                    id={"type": "integer"}, pipeline={"type": "string"}, description={"type": "string"},
                    trigger={"type": "object"}, params={"type": "object"}, enabled={"type": "boolean"},
                    catchup={"type": "boolean"}, misfire_grace={"type": "number"},
                    max_active_runs={"type": "integer"}, origin={"type": "string"},
                    next_fire_at=_NULL_TIME, last_fire_at=_NULL_TIME, next_fire_local=_NULL_TIME)
    pipeline = _obj(["name", "version", "tasks"], name={"type": "string"}, version={"type": "integer"},
                    source_path=_NULL_STR, created_at={"type": "string", "format": "date-time"},
                    schedules={"type": "integer"}, tasks={"type": "array", "items": {"type": "string"}})
    detail = {"allOf": [pipeline, _obj(
        ["versions", "spec", "dag", "schedule_list"],
        versions={"type": "array", "items": _obj(["version"], version={"type": "integer"},
                                                 created_at={"type": "string", "format": "date-time"})},
        spec={"type": "object"},
        dag=_obj(["order", "tasks"], order={"type": "array", "items": {"type": "string"}},
                 tasks={"type": "array", "items": _obj(
                     ["name", "upstream"], name={"type": "string"}, notebook={"type": "string"},
                     upstream={"type": "array", "items": {"type": "string"}}, trigger_rule={"type": "string"})}),
        schedule_list={"type": "array", "items": _ref("Schedule")})]}
    schedule_fields = dict(
        cron={"type": "string"}, every={"oneOf": [{"type": "string"}, {"type": "number"}]},
        at={"type": "string"}, start={"type": "string"}, timezone={"type": "string"},
        params={"type": "object"}, catchup={"type": "boolean"},
        misfire_grace={"oneOf": [{"type": "string"}, {"type": "number"}]},
        max_active_runs={"type": "integer"}, enabled={"type": "boolean"})
    return {
        "Error": _obj(["error", "message"], error={"type": "string"}, message={"type": "string"}),
        "TaskRun": task_run,
        "Run": run,
        "Schedule": schedule,
        "Pipeline": pipeline,
        "PipelineDetail": detail,
        "ScheduleCreate": _obj(["pipeline"], pipeline={"type": "string"}, **schedule_fields),
        "ScheduleUpdate": _obj(None, **schedule_fields),
    }


def openapi_document(version: str) -> dict[str, Any]:
    run_id, task = _path_param("run_id"), _path_param("task")
    name, schedule_id = _path_param("name"), _path_param("id", "integer")
    ok_schedule = _json(_ref("Schedule"))
    hide_code = _query("hide_code", {"type": "string", "enum": ["0", "1", "true", "false"]}, "leave out code")
    no_body = {"description": "Done, no content"}
    paths: dict[str, Any] = {
        "/health": {"get": _op("health", "Liveness and what runs here", _json(_obj(
            ["status", "version"], status={"type": "string"}, version={"type": "string"},
            scheduler={"type": "boolean"}, runner=_NULL_STR)))},
        "/version": {"get": _op("version", "nbsched's version", _json(_obj(["version"], version={"type": "string"})))},
        "/openapi.json": {"get": _op("openapi", "This document", _json({"type": "object"}))},
        "/pipelines": {
            "get": _op("listPipelines", "Registered pipelines (newest versions)", _json(_obj(
                ["pipelines"], pipelines={"type": "array", "items": _ref("Pipeline")}))),
            "post": _op("registerPipeline", "Register a pipeline from a file under the root or from a spec",
                        _json(_ref("PipelineDetail"), "Registered"), 400, 404, 422, ok_status=201,
                        body=_obj(None, path={"type": "string"}, spec={"type": "object"}, dir={"type": "string"})),
        },
        "/pipelines/{name}": {
            "parameters": [name],
            "get": _op("getPipeline", "One pipeline with its DAG, versions and schedules",
                       _json(_ref("PipelineDetail")), 404),
            "delete": _op("deletePipeline", "Forget a pipeline and its schedules (its runs stay)", no_body,
                          404, 409, ok_status=204),
        },
        "/pipelines/{name}/runs": {
            "parameters": [name],
            "post": _op("triggerRun", "Queue a run", _json(_obj(["run_id"], run_id={"type": "string"}), "Queued"),
                        400, 404, 422, ok_status=201, body=_obj(None, params={"type": "object"})),
        },
        "/schedules": {
            "get": _op("listSchedules", "Schedules", _json(_obj(["schedules"], schedules={
                "type": "array", "items": _ref("Schedule")})),
                params=[_query("pipeline", {"type": "string"}, "only this pipeline's")]),
            "post": _op("createSchedule", "Add a schedule", _json(_ref("Schedule"), "Created"), 400, 404, 422,
                        ok_status=201, body=_ref("ScheduleCreate")),
        },
        "/schedules/{id}": {
            "parameters": [schedule_id],
            "get": _op("getSchedule", "One schedule", ok_schedule, 404),
            "patch": _op("updateSchedule", "Change a schedule", ok_schedule, 400, 404, 422,
                         body=_ref("ScheduleUpdate")),
            "delete": _op("deleteSchedule", "Remove a schedule", no_body, 404, ok_status=204),
        },
        "/schedules/{id}/pause": {"parameters": [schedule_id],
                                  "post": _op("pauseSchedule", "Stop firing", ok_schedule, 404, 422)},
        "/schedules/{id}/resume": {"parameters": [schedule_id],
                                   "post": _op("resumeSchedule", "Fire again", ok_schedule, 404, 422)},
        "/runs": {"get": _op("listRuns", "Runs, newest first", _json(_obj(
            ["runs", "next_cursor"], runs={"type": "array", "items": _ref("Run")}, next_cursor=_NULL_STR)), 400,
            params=[_query("pipeline", {"type": "string"}, "only this pipeline's runs"),
                    _query("state", {"type": "string",
                                     "enum": ["queued", "running", "success", "failed", "cancelled"]}, "only in state"),
                    _query("since", {"type": "string", "format": "date-time"}, "created at or after"),
                    _query("until", {"type": "string", "format": "date-time"}, "created before"),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}, "page size"),
                    _query("cursor", {"type": "string"}, "next_cursor of the page before")])},
        "/runs/{run_id}": {"parameters": [run_id], "get": _op("getRun", "One run with its tasks",
                                                              _json(_ref("Run")), 404)},
        "/runs/{run_id}/cancel": {"parameters": [run_id],
                                  "post": _op("cancelRun", "Cancel a queued or running run", _json(_ref("Run")),
                                              404, 409)},
        "/runs/{run_id}/retry": {"parameters": [run_id], "post": _op(
            "retryRun", "Re-queue the failed, upstream_failed and cancelled tasks of an ended run",
            _json(_obj(["run_id", "tasks"], run_id={"type": "string"},
                       tasks={"type": "array", "items": {"type": "string"}})), 404, 409)},
        "/runs/{run_id}/report": {"parameters": [run_id], "get": _op(
            "getRunReport", "The run's HTML report: its DAG, timeline and tasks, linking each task's report",
            {"description": "OK", "content": {"text/html": {"schema": {"type": "string"}}}}, 404,
            params=[hide_code])},
        "/runs/{run_id}/tasks/{task}/notebook": {"parameters": [run_id, task], "get": _op(
            "getTaskNotebook", "The executed notebook of the task's last try",
            {"description": "OK", "content": {"application/x-ipynb+json": {"schema": {"type": "object"}}}}, 404)},
        "/runs/{run_id}/tasks/{task}/report": {"parameters": [run_id, task], "get": _op(
            "getTaskReport", "The task's HTML report (nbconvert)",
            {"description": "OK", "content": {"text/html": {"schema": {"type": "string"}}}}, 404,
            params=[hide_code])},
        "/runs/{run_id}/tasks/{task}/outputs": {"parameters": [run_id, task], "get": _op(
            "getTaskOutputs", "What the task recorded with nbsched.record",
            _json(_obj(["run_id", "task", "outputs"], run_id={"type": "string"}, task={"type": "string"},
                       outputs={"type": "object"})), 404)},
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "nbsched", "version": version,
                 "description": "Pipelines of Jupyter notebooks: register, schedule, run, read outputs."},
        "servers": [{"url": "/nbsched/api/v1"}],
        "security": [{"token": []}],
        "components": {
            "securitySchemes": {"token": {"type": "apiKey", "in": "header", "name": "Authorization",
                                          "description": "token <TOKEN> (the Jupyter server's token)"}},
            "schemas": _schemas(),
        },
        "paths": paths,
    }
