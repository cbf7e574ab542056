"""nbsched's HTML and SVG, rendered from Jinja2 templates that escape every value they are given.

The templates ship in ``nbsched/html/``. A file of the same name in the project's
``<home>/templates/`` (``home`` is ``Config.home``, ``.nbsched`` by default) is used instead, so a
team can restyle its reports, the panel and the magics' tables; it may extend the packaged one,
which is also named ``nbsched/<name>``. A running server notices a file added there. Markup that
a template made is passed to another as :class:`markupsafe.Markup` (:func:`markup`); anything
else is escaped, so nothing can be left unescaped by omission.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbsched import timefmt

if TYPE_CHECKING:  # jinja2 is imported for the first page: the CLI starts without it
    from jinja2 import Environment, Template
    from markupsafe import Markup

STATE_COLOURS: dict[str, str] = {
    "success": "#2e7d32",
    "failed": "#c62828",
    "upstream_failed": "#c62828",
    "running": "#1565c0",
    "queued": "#00838f",
    "up_for_retry": "#ef6c00",
    "skipped": "#757575",
    "removed": "#9e9e9e",
    "cancelled": "#6a1b9a",
    "pending": "#bdbdbd",
}
LIGHT_STATES = frozenset({"pending"})  # fills that need dark text
_UNKNOWN = "#9e9e9e"


def state_colour(state: str) -> str:
    return STATE_COLOURS.get(state, _UNKNOWN)


def render(name: str, home: Path | None = None, /, **context: Any) -> str:
    """The template ``name`` (the project's own, under ``<home>/templates/``, if it has one)."""
    return _template(name, home).render(**context)


def render_macro(name: str, macro: str, home: Path | None = None, /, **arguments: Any) -> str:
    """The macro ``macro`` of the template ``name``: one piece of a surface whose pieces share a
    file (the panel's)."""
    return str(getattr(_template(name, home).module, macro)(**arguments))


def _template(name: str, home: Path | None) -> Template:
    folder = Path(home) / "templates" if home else None
    return _environment(folder, _names_in(folder)).get_template(name)


def markup(text: str) -> Markup:
    """``text`` marked as markup already, which a template inserts as it is: only for what
    :func:`render` made."""
    from markupsafe import Markup

    return Markup(text)


def _names_in(folder: Path | None) -> frozenset[str]:
    try:
        return frozenset(os.listdir(folder)) if folder else frozenset()
    except OSError:
        return frozenset()


# Keyed by the names of the project's templates too: a template compiled from the package stays
# cached while its file is unchanged, and would hide one the project adds later.
@functools.lru_cache(maxsize=8)
def _environment(folder: Path | None, names: frozenset[str]) -> Environment:
    from jinja2 import ChoiceLoader, FileSystemLoader, PackageLoader, PrefixLoader, StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    packaged = PackageLoader("nbsched", "html")
    # "nbsched/<name>" is always the packaged one, which a project's template of that name extends
    loaders = [PrefixLoader({"nbsched": packaged}), packaged]
    # sandboxed: a project's template is a file anyone with the project can change, so it gets
    # no more than the values it is given
    env = ImmutableSandboxedEnvironment(
        loader=ChoiceLoader([FileSystemLoader(folder), *loaders] if folder and names else loaders),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(_FILTERS)
    env.globals.update(state_colour=state_colour, light_states=LIGHT_STATES, elapsed=_elapsed)
    return env


def _moment(value: str | datetime | None) -> datetime | None:
    """Views carry ISO strings; a ``datetime`` is taken as it is."""
    return timefmt.when(value, timefmt.UTC) if value else None


def _zoned_time(value: str | datetime | None) -> str | None:
    moment = _moment(value)
    return timefmt.zoned_time(moment) if moment else None


def _local_time(value: str | datetime | None) -> str:
    return timefmt.local_time(_moment(value))


def _elapsed(start: str | datetime | None, end: str | datetime | None) -> str | None:
    return timefmt.elapsed_between(_moment(start), _moment(end))


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _coordinate(value: float) -> str:
    """At most one decimal, no trailing zeros."""
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _points(points: Iterable[tuple[float, float]]) -> str:
    return " ".join(f"{_coordinate(x)},{_coordinate(y)}" for x, y in points)


_FILTERS: dict[str, Callable[..., Any]] = {
    "zoned_time": _zoned_time,
    "local_time": _local_time,
    "json": _json,
    "coordinate": _coordinate,
    "points": _points,
    "axis_label": timefmt.axis_label,
}
