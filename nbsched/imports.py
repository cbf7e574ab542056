"""What a pipeline's notebooks import at their top level, for the fork server to import once
for all their kernels (``--kernel-preload auto``). Read with ``ast`` from the code cells, never
imported here: a module counts when this Python finds it (the kernel's, for a kernel the fork
server can start) and it is not one of the notebook's own folder."""

from __future__ import annotations

import ast
import functools
import importlib.machinery
import importlib.util
import json
from collections.abc import Iterable
from pathlib import Path

MAX_IMPORTS = 100  # modules one server preloads, at most
_SKIP = frozenset({"__future__", "__main__"})


def notebook_imports(path: Path) -> tuple[str, ...]:
    """The modules a notebook imports at the top level of its code cells, in order, each once,
    that this Python finds outside the notebook's folder (``[]`` for one it cannot read)."""
    try:
        stat = path.stat()
    except OSError:
        return ()
    return _imports(path.resolve(), stat.st_mtime_ns, stat.st_size)


def run_imports(paths: Iterable[Path]) -> tuple[str, ...]:
    """The union of ``notebook_imports`` of several notebooks, in first-seen order, bounded."""
    found = dict.fromkeys(name for path in paths for name in notebook_imports(path))
    return tuple(list(found)[:MAX_IMPORTS])


@functools.lru_cache(maxsize=1024)
def _imports(path: Path, _mtime: int, _size: int) -> tuple[str, ...]:
    try:
        cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
    except (OSError, ValueError, AttributeError):
        return ()
    names: dict[str, None] = {}
    for cell in cells if isinstance(cells, list) else []:
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else str(source)
        # IPython's magics and shell escapes are not Python
        code = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())
        try:
            body = ast.parse(code).body
        except (SyntaxError, ValueError):
            continue
        for node in body:
            if isinstance(node, ast.Import):
                names.update(dict.fromkeys(alias.name for alias in node.names))
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                for alias in node.names:  # `from matplotlib import pyplot`: the submodule, if it is one
                    names[_submodule(f"{node.module}.{alias.name}") or node.module] = None
    folder = path.parent
    return tuple(name for name in names if _found_outside(name, folder))


def _spec(name: str) -> importlib.machinery.ModuleSpec | None:
    """``name``'s spec, found without importing anything (``find_spec`` of a dotted name would
    import its parents): the top-level module by this Python's finders, each submodule within
    its package's folders."""
    parts = name.split(".")
    top = parts[0]
    if not all(p.isidentifier() for p in parts) or top in _SKIP:
        return None
    try:
        spec = importlib.util.find_spec(top)
        for i in range(1, len(parts)):
            if spec is None or not spec.submodule_search_locations:
                return None
            spec = importlib.machinery.PathFinder.find_spec(
                ".".join(parts[: i + 1]), list(spec.submodule_search_locations)
            )
    except (ImportError, ValueError):
        return None
    return spec


def _submodule(name: str) -> str | None:
    return name if _spec(name) is not None else None


def _found_outside(name: str, folder: Path) -> bool:
    spec = _spec(name)
    if spec is None:
        return False
    origin = spec.origin or next(iter(spec.submodule_search_locations or []), None)
    if origin in (None, "built-in", "frozen"):
        return True
    try:
        return not Path(origin).resolve().is_relative_to(folder)
    except OSError:
        return False
