"""REST handlers under ``/nbsched/api/v1``. Thin: parse, call the service off the event
loop, answer JSON. Every verb is ``@web.authenticated`` and ``@authorized`` (resource
``nbsched``): jupyter-server lets an undecorated method through."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from functools import cached_property, wraps
from http.client import responses
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import quote

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web

from jupyter_ext.bodies import ChangeSchedule, CreateSchedule, RegisterPipeline, RetryRun, SetPool, TriggerRun
from jupyter_ext.contract import MalformedRequest, decode_cursor, encode_cursor
from nbsched import __version__
from nbsched.bounds import MAX_SPEC_BYTES, loads_json
from nbsched.errors import (
    ConfigError,
    Conflict,
    DatabaseError,
    DatabaseUnavailable,
    NbschedError,
    NotFound,
    ScheduleError,
    SpecError,
)

if TYPE_CHECKING:
    from jupyter_ext.app import NbschedApp
    from nbsched.service import Service

API = r"/nbsched/api/v1"
_STATUS = (
    (NotFound, 404, "not_found"),
    (Conflict, 409, "conflict"),
    (SpecError, 422, "invalid_spec"),
    (ScheduleError, 422, "invalid_schedule"),
    (ConfigError, 422, "invalid"),
    (DatabaseUnavailable, 503, "database_unavailable"),
    (DatabaseError, 503, "database_error"),
)
MAX_ID = 2**31 - 1  # the ids of schedules, as openapi.yaml says
RETRY_AFTER = "10"  # seconds, told to a client the database made wait (503)
Body = TypeVar("Body", RegisterPipeline, TriggerRun, CreateSchedule, ChangeSchedule, RetryRun, SetPool)
_R = TypeVar("_R")
_H = TypeVar("_H", bound="BaseHandler")


class ApiError(web.HTTPError):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(status, reason=responses.get(status))
        self.code, self.message = code, message


class BaseHandler(ExtensionHandlerMixin, APIHandler):
    auth_resource = "nbsched"
    args: dict[str, Any]  # the request's query parameters, typed (set by @checked)

    @property
    def app(self) -> NbschedApp:
        return cast("NbschedApp", self.extensionapp)

    @property
    def service(self) -> Service:
        service = self.app.service
        assert service is not None  # an app without one has no routes
        return service

    @property
    def root(self) -> Path:
        return self.app.root

    async def call(self, fn: Callable[..., _R], *args: Any, **kwargs: Any) -> _R:
        """Run a service call off the event loop; its errors become 4xx answers."""
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except NbschedError as exc:
            for cls, status, code in _STATUS:
                if isinstance(exc, cls):
                    raise ApiError(status, code, str(exc)) from None
            raise ApiError(422, "invalid", str(exc)) from None

    @cached_property
    def body(self) -> dict[str, Any]:
        raw = self.request.body
        if not raw:
            return {}
        if len(raw) > MAX_SPEC_BYTES:  # an inline spec is bounded as a spec file is
            raise ApiError(413, "too_large", f"request body of {len(raw):,} bytes: at most {MAX_SPEC_BYTES:,} (1 MB)")
        try:
            data = loads_json(raw, "request body")  # nesting bounded before parsing (no RecursionError)
        except SpecError as exc:
            raise ApiError(400, "bad_json", str(exc)) from None
        if not isinstance(data, dict):
            raise ApiError(400, "bad_json", f"request body must be a JSON object, got {type(data).__name__}")
        return data

    def parse(self, model: type[Body]) -> Body:
        """The body as ``model`` (``@checked`` found it well-formed)."""
        return model.from_json(self.body)

    def check_request(self) -> dict[str, Any]:
        """The query parameters, typed, once the query and the body are what the request's
        operation in openapi.yaml takes (a 400 naming the parameter or field otherwise)."""
        api = self.request.path.split(API, 1)[1]
        operation = self.app.contract.operation(self.request.method or "", api)
        if operation is None:  # not a route of the document (NotFoundHandler's)
            return {}
        try:
            args = self.app.contract.check_query(operation, self.request.query_arguments)
            self.app.contract.check_body(operation, self.body)
        except MalformedRequest as exc:
            raise ApiError(400, "bad_request", str(exc)) from None
        return args

    def reply(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(data))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ApiError):
            code, message = exc.code, exc.message
        elif isinstance(exc, web.HTTPError):
            reason = exc.reason or responses.get(status_code, "error")
            code = reason.lower().replace(" ", "_")
            message = (exc.log_message % exc.args if exc.log_message and exc.args else exc.log_message) or reason
        else:
            code, message = "internal_error", "internal server error (details are in the server log)"
        if status_code == 503:
            self.set_header("Retry-After", RETRY_AFTER)
        if status_code == 405:  # RFC 9110: a 405 says which methods the resource has
            self.set_header("Allow", ", ".join(allowed_methods(type(self))))
        self.finish(json.dumps({"error": code, "message": message}))


def checked(method: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """A handler method that runs once its request is checked against the document (``args``:
    its query parameters, typed); below ``@authorized``, so a request without the token is a 403
    whatever else is wrong with it."""

    @wraps(method)
    async def check(self: _H, *args: Any, **kwargs: Any) -> None:
        self.args = self.check_request()
        await method(self, *args, **kwargs)

    return check


def allowed_methods(cls: type) -> list[str]:
    """The HTTP methods a handler class answers: those it defines over tornado's 405 stubs, and
    OPTIONS (jupyter-server's CORS preflight)."""
    return [
        m.upper()
        for m in ("get", "head", "post", "put", "patch", "delete", "options")
        if getattr(cls, m) is not getattr(web.RequestHandler, m)
    ]


def _int_id(text: str, what: str) -> int:
    value = int(text) if text.isascii() and text.isdigit() else -1  # int() takes " 5" and "5_0" too
    if not 0 < value <= MAX_ID:  # no such id (PostgreSQL's INTEGER column holds no more: it was a 500)
        raise ApiError(404, "not_found", f"{what} {text} not found")
    return value


class HealthHandler(BaseHandler):
    @web.authenticated
    @authorized
    @checked
    async def get(self) -> None:
        app = self.app
        self.reply(
            {
                "status": "ok",
                "version": __version__,
                "scheduler": bool(app.running and app.scheduler_enabled),
                "runner": app.daemon.runner.id if app.running and app.daemon else None,
            }
        )


class VersionHandler(BaseHandler):
    @web.authenticated
    @authorized
    @checked
    async def get(self) -> None:
        self.reply({"version": __version__})


class OpenAPIHandler(BaseHandler):
    @web.authenticated
    @authorized
    @checked
    async def get(self) -> None:
        self.reply(self.app.contract.document)


class PipelinesHandler(BaseHandler):
    @web.authenticated
    @authorized
    @checked
    async def get(self) -> None:
        pipelines = await self.call(self.service.list_pipelines)
        self.reply({"pipelines": [p.to_json() for p in pipelines]})

    @web.authenticated
    @authorized
    @checked
    async def post(self) -> None:
        request = self.parse(RegisterPipeline)
        if request.path is not None:
            target = await self.call(confined, self.root, request.path)
            if not await self.call(target.exists):
                raise ApiError(404, "not_found", f"path {request.path!r} not found under the server root")
            # errors name the file as the client wrote it, never by the server's absolute path
            result = await self.call(self.service.register, target, confine_to=self.root, shown=request.path)
        else:
            folder = await self.call(confined, self.root, request.dir)
            result = await self.call(self.service.register_spec, request.spec, folder, confine_to=self.root)
        detail = await self.call(self.service.pipeline_detail, result[0].name)
        self.reply(detail.to_json(), 201)


class PipelineHandler(BaseHandler):
    @web.authenticated
    @authorized
    @checked
    async def get(self, name: str) -> None:
        self.reply((await self.call(self.service.pipeline_detail, name)).to_json())

    @web.authenticated
    @authorized
    @checked
    async def delete(self, name: str) -> None:
        await self.call(self.service.delete_pipeline, name)
        self.set_status(204)
        self.finish()


class PipelineRunsHandler(BaseHandler):
    @web.authenticated
    @authorized
    @checked
    async def post(self, name: str) -> None:
        request = self.parse(TriggerRun)
        run_id = await self.call(self.service.trigger, name, request.params, only=request.only, start=request.start)
        self.reply({"run_id": run_id}, 201)


class SchedulesHandler(BaseHandler):
    @web.authenticated
    @authorized
    @checked
    async def get(self) -> None:
        schedules = await self.call(self.service.list_schedules, self.args.get("pipeline"))
        self.reply({"schedules": [s.to_json() for s in schedules]})

    @web.authenticated
    @authorized
    @checked
    async def post(self) -> None:
        request = self.parse(CreateSchedule)
        self.reply((await self.call(self.service.add_schedule, request.pipeline, request.fields)).to_json(), 201)


class ScheduleHandler(BaseHandler):
    @web.authenticated
    @authorized
    @checked
    async def get(self, schedule_id: str) -> None:
        self.reply((await self.call(self.service.get_schedule, _int_id(schedule_id, "schedule"))).to_json())

    @web.authenticated
    @authorized
    @checked
    async def patch(self, schedule_id: str) -> None:
        schedule, request = _int_id(schedule_id, "schedule"), self.parse(ChangeSchedule)
        self.reply((await self.call(self.service.update_schedule, schedule, request.changes)).to_json())

    @web.authenticated
    @authorized
    @checked
    async def delete(self, schedule_id: str) -> None:
        await self.call(self.service.remove_schedule, _int_id(schedule_id, "schedule"))
        self.set_status(204)
        self.finish()


class ScheduleActionHandler(BaseHandler):
    @web.authenticated
    @authorized
    @checked
    async def post(self, schedule_id: str, action: str) -> None:
        fn = self.service.pause if action == "pause" else self.service.resume
        self.reply((await self.call(fn, _int_id(schedule_id, "schedule"))).to_json())


class PoolsHandler(BaseHandler):
    @web.authenticated
    @authorized
    @checked
    async def get(self) -> None:
        self.reply({"pools": [p.to_json() for p in await self.call(self.service.list_pools)]})


class PoolHandler(BaseHandler):
    @web.authenticated
    @authorized
    @checked
    async def get(self, name: str) -> None:
        self.reply((await self.call(self.service.get_pool, name)).to_json())

    @web.authenticated
    @authorized
    @checked
    async def put(self, name: str) -> None:
        request = self.parse(SetPool)
        pool, new = await self.call(self.service.set_pool, name, request.slots)
        self.reply(pool.to_json(), 201 if new else 200)

    @web.authenticated
    @authorized
    @checked
    async def delete(self, name: str) -> None:
        force = self.args.get("force", "0") in ("1", "true", "yes")
        await self.call(self.service.remove_pool, name, force=force)
        self.set_status(204)
        self.finish()


class NotificationsHandler(BaseHandler):
    @web.authenticated
    @authorized
    @checked
    async def get(self) -> None:
        found = await self.call(self.service.list_notifications, self.args.get("run_id"), self.args["limit"])
        self.reply({"notifications": [n.to_json() for n in found]})


class RunsHandler(BaseHandler):
    @web.authenticated
    @authorized
    @checked
    async def get(self) -> None:
        limit, cursor = self.args["limit"], self.args.get("cursor")
        before = decode_cursor(cursor) if cursor else None
        if cursor and before is None:
            # 422, not 400: it has a cursor's form (the document's pattern); it just is not one
            # this API gave out
            raise ApiError(422, "invalid_cursor", f"cursor {cursor[:100]!r} is not one this API gave out")
        runs = await self.call(
            self.service.list_runs,
            pipeline=self.args.get("pipeline"),
            state=self.args.get("state"),
            limit=limit + 1,
            since=self.args.get("since"),
            until=self.args.get("until"),
            before=before,
        )
        page, more = runs[:limit], len(runs) > limit
        self.reply(
            {
                "runs": [r.to_json() for r in page],
                "next_cursor": encode_cursor(page[-1].created_at, page[-1].id) if more else None,
            }
        )


class RunHandler(BaseHandler):
    @web.authenticated
    @authorized
    @checked
    async def get(self, run_id: str) -> None:
        self.reply((await self.call(self.service.get_run, run_id)).to_json())


class RunActionHandler(BaseHandler):
    @web.authenticated
    @authorized
    @checked
    async def post(self, run_id: str, action: str) -> None:
        if action == "cancel":
            self.reply((await self.call(self.service.cancel, run_id)).to_json())
        else:
            request = self.parse(RetryRun)
            tasks = await self.call(
                self.service.retry, run_id, request.tasks, downstream=request.downstream, params=request.params
            )
            self.reply({"run_id": run_id, "tasks": tasks})


def _sandboxed(handler: JupyterHandler) -> str:
    # nbconvert HTML keeps its scripts, confined to an opaque origin (as Jupyter serves such files)
    return JupyterHandler.content_security_policy.fget(handler) + "; sandbox allow-scripts"  # type: ignore


def _hide_code(handler: BaseHandler) -> bool:
    return handler.args.get("hide_code", "0") in ("1", "true", "yes")


class RunReportHandler(BaseHandler):
    """The run's report page (DAG, timeline, tasks), made per request from the store."""

    @property
    def content_security_policy(self) -> str:
        return _sandboxed(self)

    @web.authenticated
    @authorized
    @checked
    async def get(self, run_id: str) -> None:
        query = "?hide_code=1" if _hide_code(self) else ""

        def links(task: str) -> dict[str, str]:
            # relative to .../runs/<run_id>/report, so they resolve to the task routes beside it
            name = quote(task, safe="")
            return {"report": f"tasks/{name}/report{query}", "notebook": f"tasks/{name}/notebook"}

        page = await self.call(self.service.run_report_page, run_id, links)
        self.finish(page.encode("utf-8"), set_content_type="text/html; charset=UTF-8")


class TaskOutputHandler(BaseHandler):
    @property
    def content_security_policy(self) -> str:
        if self.request.path.endswith("/report"):
            return _sandboxed(self)
        return super().content_security_policy

    @web.authenticated
    @authorized
    @checked
    async def get(self, run_id: str, task: str, what: str) -> None:
        if what == "outputs":
            output = await self.call(self.service.task_output, run_id, task)
            self.reply({"run_id": run_id, "task": task, "outputs": output.outputs})
        elif what == "notebook":
            path = await self.call(self.service.task_notebook, run_id, task)
            content = await self.call(path.read_bytes)
            self.set_header("Content-Disposition", f'inline; filename="{task}.ipynb"')
            self.finish(content, set_content_type="application/x-ipynb+json")
        else:
            path = await self.call(self.service.task_report, run_id, task, hide_code=_hide_code(self))
            self.finish(await self.call(path.read_bytes), set_content_type="text/html; charset=UTF-8")


def confined(root: Path, relative: str) -> Path:
    """``relative`` resolved under ``root`` (symlinks followed); refuses what leaves it.
    Compares resolved paths with ``is_relative_to``: a prefix test would let ``root2/`` pass."""
    shown = repr(relative if len(relative) <= 100 else relative[:100] + "...")
    if Path(relative).is_absolute() or relative.startswith("~"):
        raise ApiError(422, "path_outside_root", f"path {shown}: give a path relative to the server root")
    try:
        resolved = (root / relative).resolve()
        resolved.exists()  # a name the file system refuses (NUL byte, too long, bad encoding) fails here
    except (ValueError, OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python 3.11)
        # the reason only: an OSError's text holds the server's absolute path
        reason = (
            exc.strerror
            if isinstance(exc, OSError) and exc.strerror
            else "a symlink loop"
            if isinstance(exc, RuntimeError)
            else str(exc).split(":")[0]
        )
        raise ApiError(400, "bad_path", f"path {shown}: {reason}") from None
    if not resolved.is_relative_to(root):
        raise ApiError(422, "path_outside_root", f"path {shown} leaves the server root")
    return resolved


class NotFoundHandler(BaseHandler):
    """Anything else under the API: a JSON 404, not the server's HTML page."""

    @web.authenticated
    @authorized
    async def get(self, path: str) -> None:
        raise ApiError(404, "not_found", f"no such API route: /{path}")

    post = put = patch = delete = get


_ID = r"(?P<{}>[^/]+)"
default_handlers = [
    (API + r"/health", HealthHandler),
    (API + r"/version", VersionHandler),
    (API + r"/openapi\.json", OpenAPIHandler),
    (API + r"/pipelines", PipelinesHandler),
    (API + r"/pipelines/" + _ID.format("name"), PipelineHandler),
    (API + r"/pipelines/" + _ID.format("name") + r"/runs", PipelineRunsHandler),
    (API + r"/schedules", SchedulesHandler),
    (API + r"/schedules/(?P<schedule_id>[^/]+)", ScheduleHandler),
    (API + r"/schedules/(?P<schedule_id>[^/]+)/(?P<action>pause|resume)", ScheduleActionHandler),
    (API + r"/pools", PoolsHandler),
    (API + r"/pools/" + _ID.format("name"), PoolHandler),
    (API + r"/notifications", NotificationsHandler),
    (API + r"/runs", RunsHandler),
    (API + r"/runs/" + _ID.format("run_id"), RunHandler),
    (API + r"/runs/" + _ID.format("run_id") + r"/(?P<action>cancel|retry)", RunActionHandler),
    (API + r"/runs/" + _ID.format("run_id") + r"/report", RunReportHandler),
    (
        API
        + r"/runs/"
        + _ID.format("run_id")
        + r"/tasks/"
        + _ID.format("task")
        + r"/(?P<what>notebook|report|outputs)",
        TaskOutputHandler,
    ),
    (API + r"/(?P<path>.*)", NotFoundHandler),
]
