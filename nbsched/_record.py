"""What a task notebook calls: record values for downstream tasks, choose a branch.

Both publish a display output with a private MIME type, so the values live in the
executed notebook itself; the runner reads them back from there. That works the same
whether the notebook ran here or on a remote worker.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

RECORD_MIME = "application/vnd.nbsched.record+json"
BRANCH_MIME = "application/vnd.nbsched.branch+json"


def record(key: str, value: Any) -> None:
    """Store a JSON-serialisable ``value`` under ``key`` for downstream tasks."""
    if not isinstance(key, str) or not key:
        raise TypeError(f"nbsched.record: key must be a non-empty string, got {key!r}")
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"nbsched.record({key!r}): value is not JSON-serialisable: {exc}") from None
    text = json.dumps(value)
    if len(text) > 200:
        text = text[:197] + "..."
    _publish(RECORD_MIME, {"key": key, "value": value}, f"nbsched.record {key} = {text}")


def branch(tasks: str | Iterable[str]) -> None:
    """Run only ``tasks`` among this task's direct downstream tasks; skip the others."""
    names = [tasks] if isinstance(tasks, str) else list(tasks)
    if not all(isinstance(n, str) for n in names):
        raise TypeError(f"nbsched.branch: task names must be strings, got {names!r}")
    _publish(BRANCH_MIME, {"tasks": names}, f"nbsched.branch -> {', '.join(names) or '(none)'}")


def _publish(mime: str, data: dict[str, Any], text: str) -> None:
    try:
        from IPython.display import display
    except ImportError:  # plain Python, outside any kernel: nothing to record into
        print(text)
        return
    display({mime: data, "text/plain": text}, raw=True)
