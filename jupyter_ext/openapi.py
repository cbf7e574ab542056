"""The OpenAPI 3 document of the REST API, served at ``/nbsched/api/v1/openapi.json``.

Response schemas say what the API answers, without over-constraining it (objects allow more
properties; values that can be null say so). Request schemas say what the service accepts: a
schedule's fields and a pipeline spec reject unknown keys (422), so theirs are closed.
"""

from __future__ import annotations

from typing import Any

from nbsched.bounds import MAX_SPEC_BYTES
from nbsched.dag import TriggerRule
from nbsched.spec import MAX_ACTIVE_RUNS, MAX_PATH, MAX_RETRIES, MAX_TASKS
from nbsched.states import RunState, TaskState

Schema = dict[str, Any]

_ERRORS = {
    400: "Malformed request: the body is not a JSON object, a field has the wrong type, or a query parameter is bad",
    403: "No valid token, or the user may not use nbsched",
    404: "No such pipeline, schedule, run, task, output or path (or a request from an Origin the server does not "
         "allow, which Jupyter answers 404)",
    409: "Conflicts with the current state",
    413: f"The request body is over {MAX_SPEC_BYTES:,} bytes",
    422: "Invalid pipeline spec, schedule or parameters (or a path outside the server root, or a cursor "
         "this API did not give out)",
    503: "The database is unreachable or busy (or refuses, e.g. a read-only file); retry after Retry-After seconds",
}
# a path the file system takes: not empty (that was the server's root), no NUL, and no name of
# over 255 bytes (63 characters are under 255 bytes in any UTF-8)
_PATH = {"minLength": 1, "maxLength": MAX_PATH, "pattern": r"^(?:[^/\u0000]{1,63}/*)+$"}
_DURATION = "seconds, or a duration like '30s', '10m', '1h30m'"


# -- schema builders ------------------------------------------------------------------------------
def _t(kind: str, description: str | None = None, **extra: Any) -> Schema:
    schema: Schema = {"type": kind, **extra}
    if description:
        schema["description"] = description
    return schema


def _str(description: str | None = None, **extra: Any) -> Schema:
    return _t("string", description, **extra)


def _int(description: str | None = None, **extra: Any) -> Schema:
    return _t("integer", description, **extra)


def _bool(description: str | None = None) -> Schema:
    return _t("boolean", description)


def _nullable(schema: Schema) -> Schema:
    return {**schema, "nullable": True}


def _time(description: str | None = None, *, nullable: bool = False) -> Schema:
    schema = _str(description, format="date-time")
    return _nullable(schema) if nullable else schema


def _enum(values: list[str], description: str | None = None) -> Schema:
    return _str(description, enum=values)


def _array(items: Schema, description: str | None = None) -> Schema:
    return _t("array", description, items=items)


def _strings(description: str | None = None) -> Schema:
    return _array(_str(), description)


def _map(description: str | None = None, values: Schema | None = None) -> Schema:
    """A JSON object with free keys (``values`` constrains their values)."""
    return _t("object", description, additionalProperties=values if values is not None else True)


def _str_or_number(description: str | None = None) -> Schema:
    schema: Schema = {"oneOf": [_str(), _t("number")]}
    if description:
        schema["description"] = description
    return schema


def _obj(required: list[str] | None = None, *, closed: bool = False, doc: str | None = None,
         **props: Schema) -> Schema:
    """An object schema of ``props``; ``closed`` refuses other properties, ``doc`` describes it."""
    schema: Schema = {"type": "object", "properties": props, "additionalProperties": not closed}
    if required:
        schema["required"] = required
    if doc:
        schema["description"] = doc
    return schema


def _all(**props: Schema) -> Schema:
    """A response object that always has every one of ``props``."""
    return _obj(list(props), **props)


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


# -- operation builders ---------------------------------------------------------------------------
def _content(media: str, schema: Schema, description: str = "OK") -> Schema:
    return {"description": description, "content": {media: {"schema": schema}}}


def _json(schema: Schema, description: str = "OK") -> Schema:
    return _content("application/json", schema, description)


def _html(description: str = "OK") -> Schema:
    return _content("text/html", _str(), description)


def _op(op_id: str, summary: str, ok: Schema, *errors: int, ok_status: int = 200, tag: str,
        body: Schema | None = None, body_required: bool = True,
        params: list[Schema] | None = None) -> Schema:
    """One operation: its success response, 403 and the listed error statuses (all ``Error``)."""
    responses: Schema = {str(ok_status): ok}
    # every route but the server's own (health, version, this document) reads the database; and
    # Jupyter answers 404 to any request from a foreign Origin (its check_origin)
    for status in sorted({403, 404, *errors, *(() if tag == "server" else (503,))}):
        responses[str(status)] = _json(_ref("Error"), _ERRORS[status])
    op: Schema = {"operationId": op_id, "summary": summary, "tags": [tag], "responses": responses}
    if body is not None:
        op["requestBody"] = {"required": body_required, "content": {"application/json": {"schema": body}}}
    if params:
        op["parameters"] = params
    return op


def _path_param(name: str, schema: Schema) -> Schema:
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _query(name: str, schema: Schema, description: str) -> Schema:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


# -- components -----------------------------------------------------------------------------------
def _schedule_fields() -> dict[str, Schema]:
    """A schedule's fields, as in a spec's ``schedules:`` entry (``nbsched.spec.SCHEDULE_KEYS``)."""
    return {
        "cron": _str("cron expression (5 or 6 fields, or an alias like @daily); one of cron, every, at"),
        "every": _str_or_number(f"interval between fires: {_DURATION}; one of cron, every, at"),
        "at": _str("one-off fire time, ISO 8601 (naive times are in `timezone`); one of cron, every, at"),
        "start": _str("first fire of an `every` schedule, ISO 8601 (default: now)"),
        "timezone": _str("IANA time zone name (default UTC)"),
        "params": _map("run parameters (override the pipeline's)"),
        "catchup": _bool("create every missed run (true) or only the latest (false, the default)"),
        "misfire_grace": _str_or_number(f"how late a fire may still run: {_DURATION}"),
        "max_active_runs": _int("runs of this schedule active at once", minimum=1, maximum=MAX_ACTIVE_RUNS),
        "enabled": _bool("fires (true, the default) or is paused"),
    }


def _pipeline_spec_schemas() -> dict[str, Schema]:
    policy = {
        "retries": _int(minimum=0, maximum=MAX_RETRIES), "retry_delay": _str_or_number(_DURATION),
        "retry_exponential_backoff": _bool(), "max_retry_delay": _str_or_number(_DURATION),
        "timeout": _str_or_number(_DURATION), "kernel": _str("kernel name"),
    }
    task = _obj(["notebook"], closed=True, doc="A task: one notebook run",
                notebook=_str("notebook path, relative to the spec's folder", maxLength=MAX_PATH), description=_str(),
                params=_map("task parameters"), upstream=_strings("tasks this one waits for"),
                trigger_rule=_enum([r.value for r in TriggerRule]), **policy)
    spec = _obj(["name", "tasks"], closed=True, doc="A pipeline spec, as in pipeline.yaml",
                name=_str("unique key", pattern="^[a-z0-9][a-z0-9_-]{0,99}$"), description=_str(),
                params=_map("pipeline parameters (Jinja-templated)"),
                defaults=_obj(closed=True, doc="defaults of every task", **policy),
                tasks={**_map("tasks by name: a task, or just its notebook path",
                              {"anyOf": [_str(), _ref("TaskSpec")]}), "minProperties": 1, "maxProperties": MAX_TASKS},
                schedules=_array(_ref("ScheduleFields")))
    return {"PipelineSpec": spec, "TaskSpec": task}


def _schemas() -> dict[str, Schema]:
    """``Run``/``TaskRun`` mirror ``nbsched.service.run_view``, ``Schedule`` ``schedule_view``,
    ``Pipeline``/``PipelineDetail`` ``pipeline_view``/``pipeline_detail``."""
    task_run = _all(state=_enum([s.value for s in TaskState]), try_number=_int(), max_tries=_int(),
                    error=_nullable(_str()), output_path=_nullable(_str("the executed notebook (server path)")),
                    outputs=_map("what the notebook recorded with nbsched.record"),
                    cell=_nullable(_obj(["index", "count", "source"], doc="while running: the cell executing now "
                                        "(1-based, of all the output notebook's cells), and its code in one line",
                                        index=_int(), count=_int(), source=_str())),
                    host=_nullable(_str()), started_at=_time(nullable=True), ended_at=_time(nullable=True),
                    tries=_array(_ref("TaskTry"), "every try of the task, oldest first"))
    task_try = _all(try_number=_int(), state=_enum([s.value for s in TaskState], "running, or how the try ended"),
                    runner=_str("the runner that claimed it (host:pid:token)"),
                    host=_nullable(_str("where it ran")), error=_nullable(_str()), started_at=_time(),
                    ended_at=_time(nullable=True))
    run = _all(run_id=_str(), pipeline=_str(), pipeline_version=_int(), state=_enum([s.value for s in RunState]),
               params=_map("the run's parameter overrides"), logical_date=_time("the fire time the run stands for"),
               trigger=_str("what created it: manual, schedule, backfill ..."),
               schedule_id=_nullable(_int()), error=_nullable(_str()), created_at=_time(),
               started_at=_time(nullable=True), ended_at=_time(nullable=True),
               tasks=_map("task runs by task name", _ref("TaskRun")))
    schedule = _all(id=_int(), pipeline=_str(), description=_str("e.g. cron 0 6 * * 1-5 (Europe/Paris)"),
                    next_fire_local=_time("next fire time in the schedule's zone", nullable=True),
                    trigger=_map("the trigger's fields (cron/every/at, timezone, start)"), params=_map(),
                    enabled=_bool(), catchup=_bool(), misfire_grace=_t("number", "seconds"),
                    max_active_runs=_int(), origin=_str("where it came from: spec or cli"),
                    next_fire_at=_time(nullable=True), last_fire_at=_time(nullable=True))
    pipeline = _all(name=_str(), version=_int(), source_path=_nullable(_str()), created_at=_time(),
                    schedules=_int("how many schedules it has"), tasks=_strings("task names in run order"))
    dag_task = _all(name=_str(), notebook=_str(), upstream=_strings(), trigger_rule=_str())
    detail = {"allOf": [_ref("Pipeline"), _all(
        versions=_array(_all(version=_int(), created_at=_time())),
        spec=_map("the newest version's spec, as registered"),
        dag=_all(order=_strings(), tasks=_array(dag_task)),
        schedule_list=_array(_ref("Schedule")))]}
    fields = _schedule_fields()
    return {
        "Error": _all(error=_str("short code, e.g. not_found"), message=_str("one line for a person")),
        "TaskRun": task_run,
        "TaskTry": task_try,
        "Run": run,
        "Schedule": schedule,
        "Pipeline": pipeline,
        "PipelineDetail": detail,
        "ScheduleFields": _obj(closed=True, doc="A schedule's fields (one of cron, every, at)", **fields),
        "ScheduleCreate": _obj(["pipeline"], closed=True, pipeline=_str("a registered pipeline"), **fields),
        **_pipeline_spec_schemas(),
    }


# -- the document ---------------------------------------------------------------------------------
def _paths() -> dict[str, Schema]:
    run_id, task = _path_param("run_id", _str()), _path_param("task", _str())
    name, schedule_id = _path_param("name", _str()), _path_param("id", _int())
    ok_schedule, ok_run = _json(_ref("Schedule")), _json(_ref("Run"))
    no_body = {"description": "Done, no content"}
    hide_code = _query("hide_code", _str(), "1, true or yes: leave out the code cells")
    register = {**_obj(
        doc='Exactly one of "path" or "spec"',
        path=_str("a pipeline.yaml or .ipynb (or a folder with a pipeline.yaml), relative to the server root",
                  **_PATH),
        spec=_ref("PipelineSpec"),
        dir=_str('with "spec": the folder, relative to the server root, its notebook paths are relative to',
                 **_PATH)),
        "oneOf": [{"required": ["path"]}, {"required": ["spec"]}]}
    run_filters = [
        _query("pipeline", _str(), "only this pipeline's runs"),
        _query("state", _enum([s.value for s in RunState]), "only runs in this state"),
        _query("since", _time(), "created at or after (with a time zone)"),
        _query("until", _time(), "created before (with a time zone)"),
        _query("limit", _int(minimum=1, maximum=500, default=50), "page size"),
        _query("cursor", _str(), "next_cursor of the page before"),
    ]
    return {
        "/health": {"get": _op("health", "Liveness, and whether the scheduler and runner run here", _json(_all(
            status=_enum(["ok"]), version=_str(), scheduler=_bool(), runner=_nullable(_str("the runner's id")))),
            tag="server")},
        "/version": {"get": _op("version", "nbsched's version", _json(_all(version=_str())), tag="server")},
        "/openapi.json": {"get": _op("openapi", "This document", _json(_map()), tag="server")},
        "/pipelines": {
            "get": _op("listPipelines", "Registered pipelines (newest versions)",
                       _json(_all(pipelines=_array(_ref("Pipeline")))), tag="pipelines"),
            "post": _op("registerPipeline", "Register a pipeline from a file under the root, or from a spec",
                        _json(_ref("PipelineDetail"), "Registered"), 400, 404, 413, 422, ok_status=201,
                        body=register, tag="pipelines"),
        },
        "/pipelines/{name}": {
            "parameters": [name],
            "get": _op("getPipeline", "One pipeline with its DAG, versions and schedules",
                       _json(_ref("PipelineDetail")), 404, tag="pipelines"),
            "delete": _op("deletePipeline", "Forget a pipeline and its schedules (its runs stay)", no_body,
                          404, 409, ok_status=204, tag="pipelines"),
        },
        "/pipelines/{name}/runs": {
            "parameters": [name],
            "post": _op("triggerRun", "Queue a run now", _json(_all(run_id=_str()), "Queued"), 400, 404, 413, 422,
                        ok_status=201, body=_obj(params=_map("parameter overrides")), body_required=False,
                        tag="pipelines"),
        },
        "/schedules": {
            "get": _op("listSchedules", "Schedules", _json(_all(schedules=_array(_ref("Schedule")))), 400,
                       params=[_query("pipeline", _str(), "only this pipeline's schedules")], tag="schedules"),
            "post": _op("createSchedule", "Add a schedule to a pipeline", _json(_ref("Schedule"), "Created"),
                        400, 404, 413, 422, ok_status=201, body=_ref("ScheduleCreate"), tag="schedules"),
        },
        "/schedules/{id}": {
            "parameters": [schedule_id],
            "get": _op("getSchedule", "One schedule", ok_schedule, 404, tag="schedules"),
            "patch": _op("updateSchedule", "Change some of a schedule's fields", ok_schedule, 400, 404, 413, 422,
                         body=_ref("ScheduleFields"), body_required=False, tag="schedules"),
            "delete": _op("deleteSchedule", "Remove a schedule", no_body, 404, ok_status=204, tag="schedules"),
        },
        # pausing or resuming re-validates the schedule against its pipeline: 422 if that fails
        "/schedules/{id}/pause": {"parameters": [schedule_id], "post": _op(
            "pauseSchedule", "Stop firing", ok_schedule, 404, 422, tag="schedules")},
        "/schedules/{id}/resume": {"parameters": [schedule_id], "post": _op(
            "resumeSchedule", "Fire again", ok_schedule, 404, 422, tag="schedules")},
        "/runs": {"get": _op("listRuns", "Runs, newest first, a page at a time", _json(_all(
            runs=_array(_ref("Run")), next_cursor=_nullable(_str("cursor of the next page; null on the last")))),
            400, 422, params=run_filters, tag="runs")},
        "/runs/{run_id}": {"parameters": [run_id], "get": _op(
            "getRun", "One run with its tasks", ok_run, 404, tag="runs")},
        "/runs/{run_id}/cancel": {"parameters": [run_id], "post": _op(
            "cancelRun", "Cancel a queued or running run", ok_run, 404, 409, tag="runs")},
        "/runs/{run_id}/retry": {"parameters": [run_id], "post": _op(
            "retryRun", "Re-queue the failed, upstream_failed and cancelled tasks of a failed or cancelled run",
            _json(_all(run_id=_str(), tasks=_strings("the re-queued tasks"))), 404, 409, tag="runs")},
        "/runs/{run_id}/report": {"parameters": [run_id], "get": _op(
            "getRunReport", "The run's HTML report: its DAG, timeline and tasks, linking each task's report",
            _html(), 400, 404, params=[hide_code], tag="runs")},
        "/runs/{run_id}/tasks/{task}/notebook": {"parameters": [run_id, task], "get": _op(
            "getTaskNotebook", "The executed notebook of the task's last try",
            _content("application/x-ipynb+json", _map()), 404, tag="runs")},
        "/runs/{run_id}/tasks/{task}/report": {"parameters": [run_id, task], "get": _op(
            "getTaskReport", "The task's HTML report (nbconvert)", _html(), 400, 404, params=[hide_code],
            tag="runs")},
        "/runs/{run_id}/tasks/{task}/outputs": {"parameters": [run_id, task], "get": _op(
            "getTaskOutputs", "What the task recorded with nbsched.record",
            _json(_all(run_id=_str(), task=_str(), outputs=_map())), 404, tag="runs")},
    }


def openapi_document(version: str) -> dict[str, Any]:
    """The OpenAPI 3.0.3 document of nbsched's REST API (``version``: nbsched's)."""
    return {
        "openapi": "3.0.3",
        "info": {"title": "nbsched", "version": version,
                 "description": "Pipelines of Jupyter notebooks: register, schedule, run, read outputs. "
                                "Served by the Jupyter server extension under the server's base URL; "
                                "every operation needs the server's auth."},
        "servers": [{"url": "/nbsched/api/v1"}],
        "security": [{"token": []}],
        "tags": [{"name": t} for t in ("server", "pipelines", "schedules", "runs")],
        "paths": _paths(),
        "components": {
            "securitySchemes": {"token": {"type": "apiKey", "in": "header", "name": "Authorization",
                                          "description": "token <TOKEN>"}},
            "schemas": _schemas(),
        },
    }
