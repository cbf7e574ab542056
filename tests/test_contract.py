"""The REST API's contract (``jupyter_ext/openapi.yaml``) as the server enforces it: every rule of
a request schema is a 400 naming the field or parameter, what a spec means is left to the core,
the document's bounds and patterns are nbsched's own, and no pattern can keep the server busy."""

from __future__ import annotations

import base64
import re
from datetime import datetime, timezone
from typing import Any

import pytest

from jupyter_ext.contract import Contract, MalformedRequest, decode_cursor, encode_cursor
from nbsched.events import MAX_PATTERN, MAX_SETTLE, MIN_POLL, SCHEDULE_KINDS
from nbsched.service import MAX_POOL_SLOTS
from nbsched.spec import KIND_KEYS, NAME_RE
from nbsched.timefmt import MAX_DURATION

CONTRACT = Contract.load("0.1.0")
DOCUMENT = CONTRACT.document
SCHEMAS = DOCUMENT["components"]["schemas"]


def refused(operation: str, body: dict[str, Any]) -> str:
    with pytest.raises(MalformedRequest) as error:
        CONTRACT.check_body(operation, body)
    return str(error.value)


def operations() -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, op)
        for path, item in DOCUMENT["paths"].items()
        for method, op in item.items()
        if method in ("get", "put", "post", "delete", "patch")
    ]


@pytest.mark.parametrize(
    ("operation", "body", "message"),
    [
        # list items of the wrong type were a TypeError in selection.py: a 500
        ("triggerRun", {"only": [1]}, "body.only[0]: expected a string, got 1"),
        ("triggerRun", {"only": [{}]}, "body.only[0]: expected a string, got {}"),
        ("triggerRun", {"only": ["clean", None]}, "body.only[1]: null is not a value"),
        ("retryRun", {"tasks": [1]}, "body.tasks[0]: expected a string, got 1"),
        ("triggerRun", {"only": ["Clean"]}, "body.only[0]: a name: lower-case letters, digits, '_' and '-'"),
        ("triggerRun", {"only": []}, "body.only: at least 1 items, got 0"),
        ("retryRun", {"tasks": ["train[x]"]}, "body.tasks[0]: a task's name, or an instance of a mapped task"),
        # what the server enforced without the document saying so
        ("triggerRun", {"only": ["a"], "from": "b"}, 'body: a partial run takes "only" or "from", not both'),
        ("retryRun", {"downstream": True}, "body.downstream: goes with tasks (give it too, or leave downstream out)"),
        ("retryRun", {"params": {"x": 1}}, "body.params: goes with tasks"),
        ("registerPipeline", {"path": "a.yaml", "dir": "b"}, "body.dir: goes with spec"),
        ("createSchedule", {"pipeline": "p"}, "body: give one of cron, every, at, after or files"),
        ("createSchedule", {"pipeline": "p", "cron": "@daily", "every": 5}, "body: give one of cron, every, at"),
        ("createSchedule", {"pipeline": "p", "cron": "@daily", "poll": 5}, "body.poll: goes with files"),
        ("createSchedule", {"pipeline": "p", "after": "q", "timezone": "UTC"}, "body.timezone: goes with cron, every"),
        ("createSchedule", {"pipeline": "p", "files": "*.csv", "state": "failed"}, "body.state: goes with after"),
        ("createSchedule", {"pipeline": "p", "cron": "@daily", "start": "2026-01-01"}, "body.start: goes with every"),
        ("createSchedule", {"pipeline": "P", "every": 5}, "body.pipeline: a name: lower-case letters"),
        ("createSchedule", {"pipeline": "p\n", "every": 5}, "body.pipeline: a name"),  # Python's "$" let it in
        ("createSchedule", {"pipeline": "p", "every": "10x"}, "body.every: a duration like '30s'"),
        ("createSchedule", {"pipeline": "p", "every": 0}, "body.every: more than 0, got 0"),
        ("createSchedule", {"pipeline": "p", "every": "1h", "max_active_runs": 0}, "body.max_active_runs: at least 1"),
        ("createSchedule", {"pipeline": "p", "files": "*.csv", "poll": 0.5}, "body.poll: at least 1, got 0.5"),
        ("updateSchedule", {"pipeline": "other"}, "body.pipeline: cannot be changed (add a new schedule instead)"),
        ("updateSchedule", {"poll": 5, "timezone": "UTC"}, "body: fields of one kind of schedule"),
        ("setPool", {"slots": 0}, "body.slots: at least 1, got 0"),
        # unknown fields: the closest known one, or the known ones
        ("createSchedule", {"pipeline": "p", "cronn": "0 6 * * *"}, "body.cronn: unknown field (did you mean 'cron'?)"),
        ("setPool", {"slots": 2, "comment": "x"}, "body.comment: unknown field (known: slots)"),
        ("retryRun", {"task": ["a"]}, "body.task: unknown field (did you mean 'tasks'?)"),
        ("cancelRun", {"force": True}, "body.force: unknown field (this operation takes no body)"),
        # the shapes the document said before
        ("registerPipeline", {}, 'body: give exactly one of "path" (a file under the server root) or "spec"'),
        ("registerPipeline", {"path": "a.yaml", "spec": {}}, 'body: give exactly one of "path"'),
        ("registerPipeline", {"path": 3}, "body.path: expected a string, got 3"),
        ("registerPipeline", {"path": ""}, "body.path: must not be empty"),
        ("registerPipeline", {"path": "x" * 300 + ".yaml"}, "body.path: a path: names of 1 to 63 characters"),
        ("registerPipeline", {"spec": "name: x"}, 'body.spec: expected an object, got "name: x"'),
        ("registerPipeline", {"spec": None, "path": "a.yaml"}, "body.spec: null is not a value (leave the field out)"),
        ("registerPipeline", {"spec": {}, "dir": ""}, "body.dir: must not be empty"),
        ("triggerRun", {"params": None}, "body.params: null is not a value (leave the field out)"),
        ("triggerRun", {"params": [1]}, "body.params: expected an object, got [1]"),
        ("createSchedule", {"cron": "0 6 * * *"}, "body.pipeline: missing (the name of a registered pipeline)"),
        ("createSchedule", {"pipeline": 5, "cron": "@daily"}, "body.pipeline: expected a string, got 5"),
        ("createSchedule", {"pipeline": "p", "every": True}, "body.every: expected a number or a string, got true"),
        ("updateSchedule", {"enabled": None}, "body.enabled: null is not a value (leave the field out)"),
        ("updateSchedule", {"max_active_runs": "2"}, 'body.max_active_runs: expected an integer, got "2"'),
    ],
)
def test_a_request_body_the_document_refuses_is_named_by_its_field(
    operation: str, body: dict[str, Any], message: str
) -> None:
    told = refused(operation, body)
    assert told.startswith(message), told
    assert "\n" not in told and len(told) < 300


@pytest.mark.parametrize(("path", "method", "operation"), operations(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_operation_refuses_a_body_with_an_unknown_field(path: str, method: str, operation: dict[str, Any]):
    assert refused(operation["operationId"], {"no_such_field": 1}).startswith("body.no_such_field: unknown field")


@pytest.mark.parametrize(
    ("operation", "body"),
    [
        ("registerPipeline", {"path": "sales/pipeline.yaml"}),
        ("registerPipeline", {"path": "/etc/passwd"}),  # the server's to refuse, as it refuses ../ (422)
        ("registerPipeline", {"spec": {"name": "x", "tasks": {"t": {"notebook": "t.ipynb", "retries": -1}}}}),
        ("registerPipeline", {"spec": {"name": 3, "tasks": [], "typo": True}}),  # the core names task and field
        ("triggerRun", {}),
        ("triggerRun", {"only": ["clean", "report"], "params": {"n": 1}}),
        ("retryRun", {"tasks": ["train[3]", "report"], "downstream": True, "params": {"fix": 1}}),
        ("createSchedule", {"pipeline": "p", "every": "1h30m", "start": "2026-01-01T00:00:00", "timezone": "UTC"}),
        ("createSchedule", {"pipeline": "p", "files": "in/*.csv", "poll": "5s", "settle": 0, "existing": True}),
        ("createSchedule", {"pipeline": "p", "after": "q", "state": "finished", "params": {"a": 1}}),
        ("updateSchedule", {"timezone": "Asia/Tokyo"}),
        ("updateSchedule", {"every": 60, "start": "2026-01-01T00:00:00Z"}),
        ("updateSchedule", {}),
        ("setPool", {"slots": MAX_POOL_SLOTS}),
    ],
)
def test_a_request_the_document_calls_valid_passes(operation: str, body: dict[str, Any]):
    CONTRACT.check_body(operation, body)


def query(path: str, **given: str | list[str]) -> dict[str, Any]:
    operation = CONTRACT.operation("GET", path)
    assert operation is not None, path
    arguments = {k: [x.encode() for x in (v if isinstance(v, list) else [v])] for k, v in given.items()}
    return CONTRACT.check_query(operation, arguments)


def test_query_parameters_are_typed_and_checked_against_the_document():
    assert query("/runs") == {"limit": 50}
    since = query("/runs", since="2026-11-28T07:00:00+01:00", limit="2", state="queued", token="t")
    assert since == {"since": datetime(2026, 11, 28, 6, tzinfo=timezone.utc), "limit": 2, "state": "queued"}
    assert query("/runs/r1/report", hide_code="yes") == {"hide_code": "yes"}
    for given, message in [
        ({"limit": "0"}, "limit '0': expected a whole number from 1 to 500"),
        ({"limit": "5_0"}, "limit '5_0': expected a whole number from 1 to 500"),  # int() takes it
        ({"limit": "9" * 40}, "limit '9999"),
        ({"state": "done"}, "state 'done': use queued, running, success, failed or cancelled"),
        ({"state": ["queued", "failed"]}, "query parameter 'state': given 2 times (give it once)"),
        ({"pipline": "x"}, "unknown query parameter 'pipline' (known: pipeline, state, since, until, limit, cursor)"),
        ({"pipeline": "Sales"}, "pipeline 'Sales': a name: lower-case letters"),
        ({"cursor": "not base64!"}, "cursor 'not base64!': the next_cursor of a page before"),
        ({"since": "yesterday"}, "since 'yesterday': expected an ISO date-time"),
        ({"until": "2026-01-01T00:00:00"}, "until '2026-01-01T00:00:00': give a time zone"),
        # the store compares times in UTC, where these have no year: a 500 on both databases
        ({"since": "0001-01-01T00:00:00+14:00"}, "since '0001-01-01T00:00:00+14:00': out of range"),
        ({"until": "9999-12-31T23:59:59-14:00"}, "until '9999-12-31T23:59:59-14:00': out of range"),
    ]:
        with pytest.raises(MalformedRequest) as error:
            query("/runs", **given)
        assert str(error.value).startswith(message), (given, str(error.value))
    with pytest.raises(MalformedRequest, match="unknown query parameter 'x' \\(known: none\\)"):
        query("/pipelines", x="1")
    with pytest.raises(MalformedRequest, match="hide_code 'maybe': use 1, true, yes, 0, false or no"):
        query("/runs/r1/report", hide_code="maybe")


def test_a_cursor_is_read_back_and_a_forged_one_is_none():
    at = datetime(2026, 11, 28, 6, 0, 1, 5, tzinfo=timezone.utc)
    cursor = encode_cursor(at, "20261128T060001-abc123")
    (parameter,) = [p for p in DOCUMENT["paths"]["/runs"]["get"]["parameters"] if p["name"] == "cursor"]
    assert re.search(parameter["schema"]["pattern"], cursor)  # what the API gives out has the form it says
    assert decode_cursor(cursor) == (at, "20261128T060001-abc123")

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).decode()

    for forged in ("abc", b64(b"yesterday|x"), b64(b"2026-01-01T00:00:00|x"), b64(b"\xff\xfe|x")):
        assert decode_cursor(forged) is None, forged
    assert decode_cursor(b64(b"0001-01-01T00:00:00+14:00|x")) is None  # no year in UTC
    assert decode_cursor(b64(b"2026-01-01T00:00:00+00:00|a\x00b")) is None  # PostgreSQL stores no NUL


def _patterns(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["pattern"]] if isinstance(node.get("pattern"), str) else []
        return own + [p for v in node.values() for p in _patterns(v)]
    return [p for v in node for p in _patterns(v)] if isinstance(node, list) else []


@pytest.mark.timeout(60)  # the path pattern of before took hours on the first string below
def test_no_pattern_of_the_document_backtracks_for_long():
    patterns = set(_patterns(DOCUMENT))
    assert len(patterns) >= 5
    hostile = [c * 5000 + tail for c in ("x", "a/", "1", "1s", "1 s ", "A") for tail in ("\x00", "!", "\n")]
    for pattern in patterns:
        for text in hostile:
            re.search(pattern, text)  # what a client's engine does; the server's is the same (contract.py)


def test_the_documents_request_rules_are_nbscheds_own():
    assert SCHEMAS["Name"]["pattern"] == f"^{NAME_RE.pattern}$"
    assert SCHEMAS["TaskName"]["pattern"].startswith(f"^{NAME_RE.pattern}(")
    assert SCHEMAS["SetPool"]["properties"]["slots"]["maximum"] == MAX_POOL_SLOTS
    assert SCHEMAS["Duration"]["oneOf"][0]["maximum"] == MAX_DURATION == SCHEMAS["Interval"]["oneOf"][0]["maximum"]
    fields = SCHEMAS["ScheduleCreate"]["properties"]
    assert fields["poll"]["oneOf"][0]["minimum"] == MIN_POLL and fields["settle"]["oneOf"][0]["maximum"] == MAX_SETTLE
    assert fields["files"]["maxLength"] == MAX_PATTERN
    every_key = set(SCHEDULE_KINDS) | {k for keys in KIND_KEYS.values() for k in keys}
    for kind, own in KIND_KEYS.items():  # each kind's schema forbids exactly the other kinds' fields
        forbidden = set(SCHEMAS[f"{kind.title()}Fields"]["properties"])
        assert forbidden == every_key - set(own) - {kind}, kind
