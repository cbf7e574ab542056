"""The REST API's contract, ``openapi.yaml``: served as the OpenAPI document, and the schemas
every request's query parameters and body are checked against, so what the document says and
what the server takes cannot drift apart: a request the document calls invalid is a 400 naming
the parameter or field, and one it calls valid passes (what it then means is for the service).

Everything a request schema says is enforced here (types, nulls, required fields, unknown
fields, patterns, bounds, exactly-one-of), with one exception: a value whose schema is marked
``x-checked-by: core`` (a pipeline spec) is checked here for its JSON type only; nbsched's core
judges the rest, since its errors name the spec's task and field ("did you mean ...") where a
schema could only say which rule failed (422).
"""

from __future__ import annotations

import base64
import copy
import difflib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft4Validator, ValidationError, validators

DOCUMENT = Path(__file__).with_name("openapi.yaml")
_METHODS = ("get", "put", "post", "delete", "patch")
_KINDS = {
    "object": "an object",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "array": "a list",
}
_JUPYTER_QUERY = ("token", "_xsrf")  # Jupyter's own, on any route
_SHOWN = 100  # characters of a value a message shows


class MalformedRequest(ValueError):
    """A request whose query or body the document calls invalid; one line naming what is wrong."""


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    # ECMA-262's "$" (the document's dialect) ends the string; Python's also matches before a
    # final newline, which would let "name\n" through a name's pattern
    return re.compile(pattern[:-1] + r"\Z" if pattern.endswith("$") and not pattern.endswith(r"\$") else pattern)


def _pattern(validator: Any, pattern: str, instance: Any, schema: dict[str, Any]) -> Iterable[ValidationError]:
    if isinstance(instance, str) and not _compiled(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


# OpenAPI 3.0's schemas are JSON Schema draft 4's (exclusiveMinimum: true ...)
_Validator = validators.extend(Draft4Validator, {"pattern": _pattern})  # type: ignore[no-untyped-call]


@dataclass(frozen=True)
class Operation:
    id: str
    query: dict[str, dict[str, Any]]  # name -> schema
    body: Any | None  # a validator of its request body; None: it takes none
    shown_query: str = field(default="")


class Contract:
    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        components = _judged(copy.deepcopy(document["components"]))
        self._by_id: dict[str, Operation] = {}
        self._routes: list[tuple[re.Pattern[str], str, Operation]] = []
        for path, item in document["paths"].items():
            route = re.compile("^" + re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(path)) + "$")
            for method in _METHODS:
                if method not in item:
                    continue
                op = item[method]
                params = [self._resolve(p) for p in [*item.get("parameters", []), *op.get("parameters", [])]]
                query = {p["name"]: self._resolve(p["schema"]) for p in params if p["in"] == "query"}
                body = op.get("requestBody")
                validator = None
                if body is not None:
                    schema = _judged(copy.deepcopy(body["content"]["application/json"]["schema"]))
                    validator = _Validator({"allOf": [schema], "components": components})
                operation = Operation(op["operationId"], query, validator, ", ".join(query) or "none")
                self._by_id[operation.id] = operation
                self._routes.append((route, method, operation))

    @classmethod
    def load(cls, version: str) -> Contract:
        """The document, telling ``version`` as the API's."""
        document = yaml.safe_load(DOCUMENT.read_text(encoding="utf-8"))
        document["info"]["version"] = version
        return cls(document)

    def _resolve(self, ref: dict[str, Any]) -> dict[str, Any]:
        if "$ref" not in ref:
            return ref
        found: Any = self.document
        for part in ref["$ref"].lstrip("#/").split("/"):
            found = found[part]
        return dict(found)

    def operation(self, method: str, path: str) -> Operation | None:
        """The operation of ``method`` on ``path`` (under the API's root, as requested), if any."""
        method = method.lower()
        for route, verb, operation in self._routes:
            if verb == method and route.match(path):
                return operation
        return None

    def check_body(self, operation: str | Operation, body: dict[str, Any]) -> None:
        """Raise :class:`MalformedRequest` for a body the operation's schema calls invalid (or any
        body, to an operation that takes none)."""
        op = self._by_id[operation] if isinstance(operation, str) else operation
        if op.body is None:
            if body:
                raise MalformedRequest(f"body.{_cut(next(iter(body)))}: unknown field (this operation takes no body)")
            return
        errors = list(op.body.iter_errors(body))
        if errors:
            raise MalformedRequest(_message(_best(errors)))

    def check_query(self, operation: Operation, arguments: Mapping[str, list[bytes]]) -> dict[str, Any]:
        """The query parameters as their schemas type them (defaults filled in); a
        :class:`MalformedRequest` for an unknown one, one given twice, or a value its schema refuses."""
        values: dict[str, Any] = {}
        for name, given in arguments.items():
            if name in _JUPYTER_QUERY:
                continue
            if name not in operation.query:
                raise MalformedRequest(f"unknown query parameter {_cut(name)!r} (known: {operation.shown_query})")
            if len(given) > 1:
                raise MalformedRequest(f"query parameter {name!r}: given {len(given)} times (give it once)")
            values[name] = _query_value(name, given[0].decode("utf-8", "replace").strip(), operation.query[name])
        for name, schema in operation.query.items():
            if name not in values and "default" in schema:
                values[name] = schema["default"]
        return values


def _judged(schema: Any) -> Any:
    """``schema`` with each value marked ``x-checked-by: core`` reduced to its JSON type."""
    if isinstance(schema, list):
        return [_judged(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    if schema.get("x-checked-by") == "core":
        return {"type": schema["type"]}
    return {k: _judged(v) for k, v in schema.items()}


# -- query parameters ------------------------------------------------------------------------


def _query_value(name: str, text: str, schema: dict[str, Any]) -> Any:
    shown = f"{name} {_cut(text)!r}"
    kind = schema.get("type")
    if kind == "integer":
        low, high = schema.get("minimum"), schema.get("maximum")
        if (
            not re.fullmatch(r"-?[0-9]{1,30}", text)
            or (low is not None and int(text) < low)
            or (high is not None and int(text) > high)
        ):
            bounds = f" from {low} to {high}" if low is not None and high is not None else ""
            raise MalformedRequest(f"{shown}: expected a whole number{bounds}")
        return int(text)
    if schema.get("format") == "date-time":
        return _moment(shown, text)
    if "enum" in schema and text not in schema["enum"]:
        raise MalformedRequest(f"{shown}: use {_either(schema['enum'])}")
    unlike = "pattern" in schema and not _compiled(schema["pattern"]).search(text)
    if unlike or len(text) > schema.get("maxLength", len(text)):
        raise MalformedRequest(f"{shown}: {schema.get('description') or 'not of the form the document says'}")
    return text


def _moment(shown: str, text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise MalformedRequest(f"{shown}: expected an ISO date-time") from None
    if value.tzinfo is None:
        raise MalformedRequest(f"{shown}: give a time zone (e.g. 2026-11-28T06:00:00Z)")
    try:
        return value.astimezone(timezone.utc)  # the store compares in UTC: year 1 at +14:00 has none
    except OverflowError:
        raise MalformedRequest(f"{shown}: out of range (years 1 to 9999 in UTC)") from None


# -- cursors: where the next page of runs starts ----------------------------------------------


def encode_cursor(created_at: datetime, run_id: str) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{run_id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str] | None:
    """``(created_at, run_id)`` of a cursor the API gave out; None for any other (the document's
    pattern says a cursor's form; whether this one was given out is the server's to tell)."""
    try:
        at, run_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|", 1)
        when = datetime.fromisoformat(at)
        if when.tzinfo is None:  # the API's cursors carry a zone; the store refuses naive times
            return None
        when = when.astimezone(timezone.utc)
    except (ValueError, OverflowError):  # ValueError: binascii's, the UTF-8 codec's, fromisoformat's
        return None
    return (when, run_id) if run_id.isprintable() else None


# -- one line for a body the schema refuses ------------------------------------------------------

# which of several errors at one place says best what to fix
_RANK = {"additionalProperties": 6, "type": 5, "required": 4, "not": 1, "oneOf": 0, "anyOf": 0}


def _best(errors: Iterable[ValidationError]) -> ValidationError:
    """The error to tell: the deepest (a field's own fault names what to fix); in a failed
    ``oneOf``/``anyOf``, the one alternative the value was meant for, when it tells."""
    error = max(errors, key=lambda e: (len(e.absolute_path), _RANK.get(str(e.validator), 3)))
    if error.validator in ("oneOf", "anyOf") and error.context:
        by_alternative: dict[Any, list[ValidationError]] = {}
        for sub in error.context:
            by_alternative.setdefault(sub.relative_schema_path[0], []).append(sub)
        meant = [
            subs
            for subs in by_alternative.values()
            if not any(s.validator in ("type", "required") and not s.relative_path for s in subs)
        ]
        if len(meant) == 1:
            return _best(meant[0])
    return error


def _message(error: ValidationError) -> str:
    where = _place(error)
    schema = error.schema if isinstance(error.schema, dict) else {}
    value: Any = error.validator_value
    instance: Any = error.instance
    told = schema.get("description")
    if instance is None:
        return f"{where}: null is not a value (leave the field out)"
    kinds = _kinds(error)
    if kinds:
        return f"{where}: expected {_either(_KINDS.get(k, k) for k in kinds)}, got {_shown(error.instance)}"
    if error.validator == "required":
        missing = next(name for name in value if name not in instance)
        described = schema.get("properties", {}).get(missing, {}).get("description", "required")
        return f"{where}.{missing}: missing ({described})"
    if error.validator == "additionalProperties":
        known = list(schema.get("properties", {}))
        extra = next(k for k in instance if k not in known)
        close = difflib.get_close_matches(extra, known, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"known: {', '.join(known)}"
        return f"{where}.{_cut(extra)}: unknown field ({hint})"
    if error.validator == "dependencies":
        key, needs = next((k, v) for k, v in value.items() if k in instance and not set(v) <= set(instance))
        return f"{where}.{key}: goes with {_either(needs, 'and')} (give it too, or leave {key} out)"
    if error.validator == "enum":
        return f"{where}: {_shown(error.instance)}: use {_either(value)}"
    if error.validator == "minLength" and value == 1:
        return f"{where}: must not be empty"
    bounds = {
        "minLength": f"at least {value} characters",
        "maxLength": f"at most {value} characters",
        "minItems": f"at least {value} items",
        "maxItems": f"at most {value} items",
        "minProperties": f"at least {value} entries",
        "maxProperties": f"at most {value} entries",
        "minimum": f"at least {value}" if not schema.get("exclusiveMinimum") else f"more than {value}",
        "maximum": f"at most {value}" if not schema.get("exclusiveMaximum") else f"less than {value}",
    }
    if error.validator in bounds:
        return f"{where}: {bounds[str(error.validator)]}, got {_shown(error.instance, sized=True)}"
    if error.validator == "pattern":
        return f"{where}: {told or 'must match ' + value}, got {_shown(error.instance)}"
    return f"{where}: {told or error.message[:200]}"


def _place(error: ValidationError) -> str:
    place = "body"
    for part in error.absolute_path:
        place += f"[{part}]" if isinstance(part, int) else f".{_cut(str(part))}"
    return place


def _kinds(error: ValidationError) -> list[str]:
    """The JSON types a value takes, when that is what it failed (``type``, or alternatives of types)."""
    if error.validator == "type":
        value: Any = error.validator_value
        return value if isinstance(value, list) else [value]
    if error.validator not in ("oneOf", "anyOf"):
        return []
    alternatives: Any = error.validator_value
    failed: dict[Any, Any] = {
        s.relative_schema_path[0]: s.validator_value
        for s in error.context or ()
        if s.validator == "type" and not s.relative_path
    }
    return list(failed.values()) if len(failed) == len(alternatives) else []


def _shown(value: Any, *, sized: bool = False) -> str:
    if sized and isinstance(value, (str, list, dict)):
        return f"{len(value):,}"
    text = json.dumps(value, ensure_ascii=True)
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "..."


def _cut(text: str) -> str:
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "..."


def _either(values: Iterable[Any], last: str = "or") -> str:
    shown = [str(v) for v in values]
    return shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} {last} {shown[-1]}"
