"""Event schedules: a run of a pipeline after each run of another (``after:``), or for each
file that arrives in a folder (``files:``). Pure: the scheduler reads the folder
(``scheduler.scan_files``) and the store keeps what fired (one row per schedule and key,
UNIQUE: a key fires once, whichever daemon sees it first, before or after a restart).

- :class:`AfterTrigger`: every run of ``pipeline`` that ends in one of the wanted states
  (``success``, ``failed``, or ``finished`` for either) after the schedule exists. Its key is
  the upstream run's id; the new run takes its logical date and gets ``trigger_run``.
- :class:`FilesTrigger`: every file matching a glob relative to the spec's folder, new or
  changed (its path, size and modification time are its key) and unchanged for ``settle``
  seconds (its modification time at least that old: no memory to lose across daemons or
  restarts). Files there when the schedule is created are recorded as seen, unless
  ``existing``. A file whose real path leaves the folder (a symlink out) never fires.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from nbsched.errors import ScheduleError
from nbsched.states import RunState
from nbsched.timefmt import MAX_DURATION, duration, parse_duration

EVENT_KINDS = ("after", "files")
SCHEDULE_KINDS = ("cron", "every", "at", *EVENT_KINDS)
EVENT_KEYS = ("after", "state", "files", "poll", "settle", "existing")  # the fields of both kinds
AFTER_STATES: dict[str, tuple[RunState, ...]] = {
    "success": (RunState.SUCCESS,),
    "failed": (RunState.FAILED,),
    "finished": (RunState.SUCCESS, RunState.FAILED),  # ended by itself: a cancelled run fires nothing
}
AFTER_LOOK = 1.0  # seconds between looks for upstream runs that ended
MIN_POLL = 1.0
DEFAULT_POLL = 30.0
DEFAULT_SETTLE = 5.0
MAX_SETTLE = 86400.0
MAX_FILES = 10_000  # files one look considers; more are left for later looks, with a warning
MAX_PATTERN = 1024


@dataclass(frozen=True, kw_only=True)
class Fire:
    """One event to make a run of: its key (unique per schedule), its logical date and what
    fired it (kept on the run, and given to its notebooks as ``trigger_run``/``trigger_file``)."""

    key: str
    logical_date: datetime
    fired_by: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class AfterTrigger:
    pipeline: str
    state: str = "success"

    @property
    def states(self) -> tuple[RunState, ...]:
        return AFTER_STATES[self.state]

    def describe(self) -> str:
        return f"after {self.pipeline} ({self.state})"

    def waiting_for(self) -> str:
        ended = {"success": "a successful run", "failed": "a failed run", "finished": "a run to end"}[self.state]
        return f"{ended} of {self.pipeline}"

    def to_fields(self) -> dict[str, Any]:
        return {"after": self.pipeline, "state": self.state}


@dataclass(frozen=True, kw_only=True)
class FileSeen:
    path: str  # relative to the folder, with forward slashes
    size: int
    mtime_ns: int

    @property
    def key(self) -> str:
        return hashlib.sha256(f"{self.path}\n{self.size}\n{self.mtime_ns}".encode()).hexdigest()

    @property
    def modified(self) -> datetime:
        return datetime.fromtimestamp(self.mtime_ns / 1e9, timezone.utc)

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "mtime": self.modified.isoformat()}


@dataclass(frozen=True, kw_only=True)
class FilesTrigger:
    pattern: str
    folder: str  # absolute: the spec's folder
    root: str | None = None  # the server's root, for a spec registered through Jupyter: the folder stays inside
    poll: float = DEFAULT_POLL
    settle: float = DEFAULT_SETTLE
    existing: bool = False

    def describe(self) -> str:
        return f"files {self.pattern} (every {duration(self.poll)}, settle {duration(self.settle)})"

    def waiting_for(self) -> str:
        return f"a new file {self.pattern} (looks every {duration(self.poll)})"

    def to_fields(self) -> dict[str, Any]:
        return {
            "files": self.pattern,
            "folder": self.folder,
            **({"root": self.root} if self.root is not None else {}),
            "poll": self.poll,
            "settle": self.settle,
            "existing": self.existing,
        }

    def settled(self, seen: FileSeen) -> datetime:
        """When ``seen`` counts as written: ``settle`` after its last change."""
        return seen.modified + timedelta(seconds=self.settle)


EventTrigger = AfterTrigger | FilesTrigger


def is_event(fields: Mapping[str, Any]) -> bool:
    return any(k in fields for k in EVENT_KINDS)


def event_from_fields(
    fields: Mapping[str, Any], *, where: str = "schedule", pipeline: str | None = None
) -> EventTrigger:
    """The trigger of an ``after`` or ``files`` schedule's fields, checked: one line naming the
    field for each mistake. ``pipeline``, when known, may not be its own ``after``. A files
    schedule needs ``folder`` (the spec's, added when it is registered)."""
    if "after" in fields:
        name = fields["after"]
        if not isinstance(name, str) or not name.strip():
            raise ScheduleError(f"{where}.after: expected a pipeline's name, got {name!r}")
        if name == pipeline:
            raise ScheduleError(f"{where}.after: '{name}' is the pipeline itself")
        state = fields.get("state", "success")
        if state not in AFTER_STATES:
            raise ScheduleError(f"{where}.state: {state!r}: expected one of {', '.join(AFTER_STATES)}")
        return AfterTrigger(pipeline=name, state=state)
    pattern = fields["files"]
    if not isinstance(pattern, str) or not pattern.strip():
        raise ScheduleError(f"{where}.files: expected a glob pattern like 'incoming/*.csv', got {pattern!r}")
    if len(pattern) > MAX_PATTERN:
        raise ScheduleError(f"{where}.files: {len(pattern):,} characters (at most {MAX_PATTERN})")
    posix, windows = PurePosixPath(pattern), PureWindowsPath(pattern)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or ".." in posix.parts or pattern.startswith("~"):
        raise ScheduleError(
            f"{where}.files: {pattern!r} leaves the spec's folder (use a path inside it, like 'incoming/*.csv')"
        )
    last = pattern.split("/")[-1]
    if last in ("", ".", "**"):  # pathlib's glob would fail on some ('.': IndexError), match folders on others
        hint = "use '**/*' for every file below" if last == "**" else "use a pattern like 'incoming/*.csv'"
        raise ScheduleError(f"{where}.files: {pattern!r} matches folders, not files ({hint})")
    try:
        next(Path("/nonexistent-nbsched-folder").glob(pattern), None)
    except (ValueError, NotImplementedError) as exc:
        raise ScheduleError(f"{where}.files: {pattern!r} is not a glob pattern ({exc})") from None
    poll = _seconds(fields, "poll", DEFAULT_POLL, where, low=MIN_POLL)
    settle = _seconds(fields, "settle", DEFAULT_SETTLE, where, low=0.0, high=MAX_SETTLE)
    existing = fields.get("existing", False)
    if not isinstance(existing, bool):
        raise ScheduleError(f"{where}.existing: expected true or false, got {existing!r}")
    root = fields.get("root")
    return FilesTrigger(
        pattern=pattern,
        folder=str(fields.get("folder", "")),
        root=str(root) if root is not None else None,
        poll=poll,
        settle=settle,
        existing=existing,
    )


def _seconds(
    fields: Mapping[str, Any], key: str, default: float, where: str, *, low: float, high: float = MAX_DURATION
) -> float:
    value = fields.get(key, default)
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise ScheduleError(f"{where}.{key}: {exc}") from None
    if not math.isfinite(seconds) or seconds < low:
        raise ScheduleError(f"{where}.{key}: {value!r}: at least {duration(low)}")
    if seconds > high:
        raise ScheduleError(f"{where}.{key}: {value!r}: at most {duration(high)}")
    return seconds


def after_cycle(pipeline: str, waits_for: Mapping[str, Iterable[str]]) -> list[str] | None:
    """A chain of ``after`` schedules from ``pipeline`` back to itself (``[c, a, b, c]``: c runs
    after a, a after b, b after c), or None. ``waits_for``: pipeline -> the pipelines it runs after."""
    path, on_path, done = [pipeline], {pipeline}, set()

    def walk(name: str) -> list[str] | None:
        for upstream in sorted(set(waits_for.get(name, ()))):
            if upstream == pipeline:
                return [*path, pipeline]
            if upstream in on_path or upstream in done:
                continue
            path.append(upstream)
            on_path.add(upstream)
            found = walk(upstream)
            if found:
                return found
            on_path.discard(path.pop())
            done.add(upstream)
        return None

    return walk(pipeline)
