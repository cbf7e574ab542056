"""What a parameter's value may be, and how text becomes one, as papermill makes it. Pure.

- ``-p key=value``: :func:`resolve_type` is papermill's ``-p`` rule (``papermill/cli.py``
  ``_resolve_type``) for a parameter no parameters cell declares: exactly ``True``, ``False``
  and ``None``, then what ``int()`` or ``float()`` reads, else the text itself.
- ``-f FILE`` and ``-y TEXT``: YAML (JSON is YAML) read as papermill reads them: PyYAML's safe
  loader without its timestamp rule (papermill's ``NoDatesSafeLoader``), so ``2019-01-01`` stays
  that text; every spec is read the same way (:func:`nbsched.bounds.load_yaml`).
- Every value nbsched stores (specs, runs, schedules, repairs) is JSON: :func:`check_json` refuses,
  in one line naming where, what JSON cannot hold (a ``!!binary``, a ``!!set``, ``.inf``, a key
  that is not a string ...), before it is stored.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

from nbsched.errors import ConfigError, SpecError

PARAM_FILE_SUFFIXES = (".yaml", ".yml", ".json")  # what papermill's -f reads


def resolve_type(text: str) -> Any:
    """A ``-p`` value's type as papermill's ``-p`` gives it (``_resolve_type``): ``True``,
    ``False``, ``None`` (spelt so), an int, a float, or the text. The one place ``-p`` text is
    typed: a type declared by the notebook's parameters cell will plug in here."""
    if text in ("True", "False", "None"):
        return {"True": True, "False": False, "None": None}[text]
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:  # also an int of more digits than Python converts: float() then reads it
            pass
    return text


def check_json(value: Any, where: str) -> None:
    """Refuse, as a :class:`SpecError` ``<where...>: <problem>``, a value JSON cannot hold."""
    problem = json_problem(value, where)
    if problem is not None:
        raise SpecError(f"{problem[0]}: {problem[1]}" if problem[0] else problem[1])


def json_problem(value: Any, where: str = "") -> tuple[str, str] | None:
    """The first place (``params.x.m[0]``, under ``where``) where ``value`` holds what JSON
    cannot, and what it is; None when it is all JSON. nbsched stores parameters, and whole
    specs, as JSON: such a value would fail, or change, when stored."""
    stack: list[tuple[Any, str]] = [(value, where)]
    while stack:
        item, at = stack.pop()
        if isinstance(item, dict):
            for key, sub in item.items():
                if not isinstance(key, str):
                    return at, f"key {key!r} is not a string (JSON, which nbsched stores values as, has only text keys)"
                stack.append((sub, f"{at}.{key}" if at else key))
        elif isinstance(item, list):
            stack.extend((sub, f"{at}[{i}]") for i, sub in reversed(list(enumerate(item))))
        elif isinstance(item, float) and not math.isfinite(item):
            return at, (
                f"{item} is not a number JSON can hold (nbsched stores values as JSON): "
                "pass it as text and convert it in the notebook"
            )
        elif not (item is None or isinstance(item, (str, bool, int, float))):
            return at, (
                f"{_kind(item)} is not a parameter value (values are JSON: text, numbers, "
                "true/false, null, lists and mappings)"
            )
    return None


def _kind(value: Any) -> str:
    if isinstance(value, datetime):
        return "a date-time"
    if isinstance(value, date):
        return "a date"
    if isinstance(value, time):
        return "a time"
    if isinstance(value, (bytes, bytearray)):
        return "binary data (bytes)"
    if isinstance(value, (set, frozenset)):
        return "a set"
    if isinstance(value, tuple):
        return "a pair (tuple)"
    return f"a {type(value).__name__}"


def params_from_yaml(text: str, where: str) -> dict[str, Any]:
    """The parameters a ``-y`` text (or a ``-f`` file's) holds: a mapping of names to values;
    empty text (or only a comment) is no parameters, as in papermill."""
    from nbsched.bounds import load_yaml

    try:
        data = load_yaml(text, where)
    except SpecError as exc:
        raise ConfigError(str(exc)) from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping of parameter names to values, got {type(data).__name__}")
    for key in data:
        if not isinstance(key, str) or not key.isidentifier():
            raise ConfigError(f"{where}: {key!r}: a parameter name must be a Python identifier")
    for key, value in data.items():
        problem = json_problem(value, key)
        if problem is not None:
            raise ConfigError(f"{where}: {problem[0]}: {problem[1]}")
    return dict(data)


def params_from_file(path: str) -> dict[str, Any]:
    """``-f FILE``: a YAML or JSON file of parameters, read as papermill's ``-f`` reads it."""
    from nbsched.bounds import read_spec_text

    where = f"-f {path}"
    if Path(path).suffix.lower() not in PARAM_FILE_SUFFIXES:
        raise ConfigError(f"{where}: expected a {', '.join(PARAM_FILE_SUFFIXES)} file")
    if not Path(path).is_file():
        raise ConfigError(f"{where}: file not found")
    try:
        text = read_spec_text(Path(path), where)
    except SpecError as exc:
        raise ConfigError(str(exc)) from None
    return params_from_yaml(text, where)


def merged_params(files: Iterable[str], yamls: Iterable[str], pairs: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """The overrides of ``-f`` files, then ``-y`` texts, then ``-p`` pairs, each later one
    winning per name: papermill's order, whatever order they were written in."""
    merged: dict[str, Any] = {}
    for path in files:
        merged.update(params_from_file(path))
    for text in yamls:
        merged.update(params_from_yaml(text, "-y"))
    merged.update(pairs)
    return merged
