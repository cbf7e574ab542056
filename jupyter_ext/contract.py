"""The REST API's contract, ``openapi.yaml``: served as the OpenAPI document, and the schemas
request bodies are validated against, so what the document says and what the server takes
cannot drift apart.

The schemas decide whether a body is well-formed (a 400 otherwise): each field of the right JSON
type and not null, the required ones given, no empty string, exactly one of alternatives. What a
well-formed value means (a pipeline spec, a schedule's fields, a path under the server root) is
for nbsched's core and the file system to judge: their errors name the problem precisely (a
spec's task and field, "did you mean ...") where a schema could only say which rule failed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft4Validator, ValidationError

DOCUMENT = Path(__file__).with_name("openapi.yaml")
_BODY_METHODS = ("post", "put", "patch")
_KINDS = {
    "object": "an object",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "array": "a list",
}


class MalformedBody(ValueError):
    """A request body that does not have the shape its operation takes; one line naming the field."""


class Contract:
    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self._validators: dict[str, Draft4Validator] = {}
        for path in document["paths"].values():
            for method, operation in path.items():
                body = operation.get("requestBody") if method in _BODY_METHODS else None
                if body is not None:
                    schema = body["content"]["application/json"]["schema"]
                    # OpenAPI 3.0's schemas are JSON Schema draft 4's (exclusiveMinimum: true ...);
                    # references resolve within the document's components
                    self._validators[operation["operationId"]] = Draft4Validator(
                        {"allOf": [schema], "components": document["components"]}
                    )

    @classmethod
    def load(cls, version: str) -> Contract:
        """The document, telling ``version`` as the API's."""
        document = yaml.safe_load(DOCUMENT.read_text(encoding="utf-8"))
        document["info"]["version"] = version
        return cls(document)

    def check_body(self, operation_id: str, body: dict[str, Any]) -> None:
        """Raise :class:`MalformedBody` for a body the operation's schema finds malformed."""
        malformed = [e for e in self._validators[operation_id].iter_errors(body) if _malformed(e)]
        if malformed:
            # a field's own fault first: it names what to fix
            raise MalformedBody(_message(max(malformed, key=lambda e: len(e.path))))


def _malformed(error: ValidationError) -> bool:
    """Whether ``error`` is about the body's shape (a 400); anything else a schema finds inside a
    value is left to the core (see above)."""
    if not error.path:  # the body: a required field missing, or not exactly one of alternatives
        return error.validator in ("required", "oneOf")
    if len(error.path) == 1:  # a field of the body: null, of another JSON type, or empty
        return error.instance is None or error.validator == "minLength" or bool(_kinds(error))
    return False


def _message(error: ValidationError) -> str:
    field = f"body.{str(error.path[0])[:100]}" if error.path else "body"
    if error.instance is None:
        return f"{field}: null is not a value (leave the field out)"
    kinds = _kinds(error)
    if kinds:
        shown = json.dumps(error.instance)
        shown = shown if len(shown) <= 100 else shown[:100] + "..."
        return f"{field}: expected {' or '.join(_KINDS.get(k, k) for k in kinds)}, got {shown}"
    if error.validator == "required":
        required: list[str] = error.validator_value  # type: ignore[assignment]
        missing = next(name for name in required if name not in error.instance)  # type: ignore[operator]
        return f"body.{missing}: missing ({_description(_schema(error), missing)})"
    if error.validator == "minLength":
        return f"{field}: must not be empty"
    return f"{field}: {_schema(error).get('description') or error.message}"


def _schema(error: ValidationError) -> dict[str, Any]:
    """The schema ``error`` failed (jsonschema types it as possibly unset: never, for a raised one)."""
    return error.schema if isinstance(error.schema, dict) else {}


def _kinds(error: ValidationError) -> list[str]:
    """The JSON types a field takes, when that is what it failed (``type``, or a ``oneOf`` of types)."""
    if error.validator == "type":
        value: Any = error.validator_value
        return value if isinstance(value, list) else [value]
    alternatives: Any = error.validator_value if error.validator == "oneOf" else []
    plain = all(isinstance(a, dict) and set(a) == {"type"} for a in alternatives)
    return [a["type"] for a in alternatives] if alternatives and plain else []


def _description(schema: dict[str, Any], name: str) -> str:
    return str(schema.get("properties", {}).get(name, {}).get("description", "required"))
