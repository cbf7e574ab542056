"""Bounds on input before it is parsed or walked: size, nesting depth, YAML aliases, duplicate keys.

Specs, notebooks, ``-p`` values and REST bodies may be hostile. Each is refused, in one line,
when it is bigger than :data:`MAX_SPEC_BYTES` (before it is parsed), nested deeper than
:data:`MAX_DEPTH` (counted while parsing, never left to a ``RecursionError``), or, for YAML,
when its aliases expand to more than :data:`MAX_YAML_NODES` values (a "billion laughs"
document is a few hundred bytes). Pure: text in, data or a :class:`SpecError` out.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

from nbsched.errors import SpecError

MAX_SPEC_BYTES = 1_000_000  # a spec file, a %%nbsched_pipeline cell, a REST body (1 MB)
MAX_DEPTH = 100  # nested mappings and lists, in a spec, a notebook's JSON or a parameter
MAX_YAML_NODES = 50_000  # values of a YAML document once its aliases are expanded

_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_JSON_BRACKET = re.compile(r"[\[\]{}]")


def read_spec_text(path: Path, shown: str) -> str:
    """A spec file's text, refused unread when it is over the size bound."""
    try:
        check_size(path.stat().st_size, shown)
        with path.open("rb") as f:
            data = f.read(MAX_SPEC_BYTES + 1)  # never more, even if the file grew since
    except OSError as exc:
        raise SpecError(f"{shown}: cannot read: {exc.strerror or type(exc).__name__}") from None
    check_size(len(data), shown)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{shown}: cannot read: not UTF-8 text (byte {exc.start})") from None


def check_size(size: int, where: str, what: str = "a spec") -> None:
    if size > MAX_SPEC_BYTES:
        raise SpecError(f"{where}: {size:,} bytes: {what} may have at most {MAX_SPEC_BYTES:,} bytes (1 MB)")


def load_yaml(text: str, source: str) -> Any:
    """Parse YAML safely and within the bounds; a mistake is ``<source>:<line>:<col>: invalid YAML: ...``."""
    import yaml

    check_size(len(text) if len(text) > MAX_SPEC_BYTES else len(text.encode("utf-8")), source)
    loader = _loader_class()(text)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"{source}{at}: invalid YAML: {problem}") from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise SpecError(f"{source}: invalid YAML: {str(exc).split(';')[0]}") from None
    finally:
        loader.dispose()


@functools.cache
def _loader_class() -> type:
    """The loader, made on first use (the CLI imports PyYAML only when it reads a spec)."""
    import yaml
    from yaml.composer import ComposerError
    from yaml.constructor import ConstructorError

    class BoundedLoader(yaml.SafeLoader):
        """PyYAML's safe loader that counts, while composing, the values each node stands for
        once aliases are expanded, and how deep they nest; refuses duplicate keys. Like
        papermill's ``NoDatesSafeLoader`` (its ``-f`` and ``-y``), it reads no timestamps: an
        unquoted ``2019-01-01`` stays that text, which a notebook parameter and a JSON store
        can hold (a date crashed runs), and which a schedule's ``at``/``start`` read as a time."""

        yaml_implicit_resolvers = {
            first: [r for r in resolvers if r[0] != "tag:yaml.org,2002:timestamp"]
            for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
        }

        def __init__(self, stream: str) -> None:
            super().__init__(stream)
            self._depth = 0
            self._nodes = 0
            self._shape: dict[int, tuple[int, int]] = {}  # id(node) -> (values, height) when expanded

        def _count(self, values: int, height: int, mark: Any) -> None:
            self._nodes += values
            if self._nodes > MAX_YAML_NODES:
                raise ComposerError(
                    None,
                    None,
                    f"more than {MAX_YAML_NODES:,} values once aliases are expanded (are aliases repeating aliases?)",
                    mark,
                )
            if self._depth + height - 1 > MAX_DEPTH:
                raise ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels", mark)

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                node = super().compose_node(parent, index)
                shape = self._shape.get(id(node))
                if shape is None:  # the anchor is still being composed: `&a [*a]` is a loop
                    raise ComposerError(None, None, "an alias inside the value it names (a loop)", mark)
                self._depth += 1
                try:
                    self._count(*shape, mark)
                finally:
                    self._depth -= 1
                return node
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            self._depth += 1
            try:
                if self._depth > MAX_DEPTH:
                    raise ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels", mark)
                node = super().compose_node(parent, index)
            finally:
                self._depth -= 1
            children = (
                node.value
                if isinstance(node, yaml.SequenceNode)
                else [n for pair in node.value for n in pair]
                if isinstance(node, yaml.MappingNode)
                else []
            )
            shapes = [self._shape[id(c)] for c in children]
            self._shape[id(node)] = (1 + sum(s[0] for s in shapes), 1 + max((s[1] for s in shapes), default=0))
            self._nodes += 1  # the children counted themselves
            if self._nodes > MAX_YAML_NODES:
                self._count(0, 0, mark)
            return node

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            if isinstance(node, yaml.MappingNode):
                seen: dict[Any, Any] = {}
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        continue  # `<<: *defaults` then a key of its own is YAML's way to override
                    key = self.construct_object(key_node, deep=True)
                    try:
                        first = seen.setdefault(key, key_node)
                    except TypeError:
                        continue  # unhashable: the constructor's own error says so
                    if first is not key_node:
                        raise ConstructorError(
                            None,
                            None,
                            f"duplicate key {key!r} (first on line {first.start_mark.line + 1})",
                            key_node.start_mark,
                        )
            return super().construct_mapping(node, deep=deep)

    return BoundedLoader


def json_depth_ok(text: str) -> bool:
    """Whether JSON ``text`` nests at most :data:`MAX_DEPTH` deep (checked before parsing:
    Python's parser recurses, and ends in a RecursionError)."""
    depth = 0
    for m in _JSON_BRACKET.finditer(_JSON_STRING.sub("", text)):
        depth += 1 if m.group() in "[{" else -1
        if depth > MAX_DEPTH:
            return False
    return True


def loads_json(text: str | bytes, where: str) -> Any:
    """``json.loads`` within the depth bound; a mistake is one line naming ``where``."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SpecError(f"{where}: not UTF-8 text (byte {exc.start})") from None
    if not json_depth_ok(text):
        raise SpecError(f"{where}: nested deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(text)
    except ValueError as exc:
        raise SpecError(f"{where}: not JSON: {exc}") from None


def check_depth(data: Any, where: str) -> None:
    """Refuse data (e.g. a spec given as a mapping) nested deeper than :data:`MAX_DEPTH`, or with
    more than :data:`MAX_YAML_NODES` mappings and lists. Walks without recursing; a structure
    that contains itself grows deeper at each turn, so the depth bound ends it too."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    seen = 0
    while stack:
        value, depth = stack.pop()
        if not isinstance(value, (dict, list, tuple)):
            continue
        if depth > MAX_DEPTH:
            raise SpecError(f"{where}: nested deeper than {MAX_DEPTH} levels")
        seen += 1
        if seen > MAX_YAML_NODES:
            raise SpecError(f"{where}: more than {MAX_YAML_NODES:,} mappings and lists")
        stack.extend((c, depth + 1) for c in (value.values() if isinstance(value, dict) else value))
