"""The runner drives one run: decide which tasks may start, hand them to an executor,
record every transition, retry, time out, cancel.

It sleeps on one queue of executor events, waking early only for the next retry or
timeout deadline; it never polls.
"""

from __future__ import annotations

import queue
import shutil
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

from nbsched.dag import Decision, RunState, TaskState, decide, downstream_of
from nbsched.errors import NbschedError
from nbsched.executors.base import Executor, Finished, Started, TaskAttempt
from nbsched.notebook import TaskOutcome, TaskRequest
from nbsched.params import task_parameters
from nbsched.spec import PipelineSpec
from nbsched.store import SqlStore, utcnow

CANCELLED = "cancelled"

# (task, new state, detail) after each persisted transition, for progress displays
Listener = Callable[[str, TaskState, str | None], None]


class _Cancel:
    """Queue message asking the loop to cancel the run."""


@dataclass
class _RunProgress:
    states: dict[str, TaskState]
    tries: dict[str, int]
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    branch_skipped: set[str] = field(default_factory=set)
    attempts: dict[str, TaskAttempt] = field(default_factory=dict)
    deadlines: dict[str, float] = field(default_factory=dict)
    retry_at: dict[str, float] = field(default_factory=dict)


def format_seconds(seconds: float) -> str:
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:g}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "") + (f"{secs}s" if secs else "")


class Runner:
    def __init__(self, store: SqlStore, executor: Executor, runs_dir: Path,
                 listener: Listener | None = None) -> None:
        self.store = store
        self.executor = executor
        self.runs_dir = Path(runs_dir)
        self.listener = listener
        self._events: queue.Queue[Any] = queue.Queue()

    def cancel(self) -> None:
        """Ask the running ``execute`` to cancel; safe from any thread and from a signal handler."""
        self._events.put(_Cancel())

    def execute(self, run_id: str, spec: PipelineSpec) -> RunState:
        run = self.store.get_run(run_id)
        progress = _RunProgress(states={n: t.state for n, t in run.tasks.items()},
                                tries={n: t.try_number for n, t in run.tasks.items()},
                                outputs={n: t.outputs for n, t in run.tasks.items()
                                         if t.state is TaskState.SUCCESS})
        run_dir = self.runs_dir / spec.name / run_id
        try:
            self.store.set_run_state(run_id, RunState.RUNNING, expect=[RunState.QUEUED, RunState.RUNNING])
            cancelled = self._loop(run, spec, run_dir, progress)
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM turned into it by the CLI
            cancelled = True
        except BaseException as exc:
            self._stop_all(progress, CANCELLED)
            self._drain(run_id, spec, progress)
            self.store.cancel_unfinished_tasks(run_id, f"runner error: {exc}")
            self.store.set_run_state(run_id, RunState.FAILED, error=f"runner error: {type(exc).__name__}: {exc}")
            raise
        if cancelled:
            self._stop_all(progress, CANCELLED)
            self._drain(run_id, spec, progress)
            for name in self.store.cancel_unfinished_tasks(run_id, "run cancelled"):
                self._notify(name, TaskState.CANCELLED, None)
            self.store.set_run_state(run_id, RunState.CANCELLED, error="cancelled")
            return RunState.CANCELLED
        failed = any(s in (TaskState.FAILED, TaskState.UPSTREAM_FAILED) for s in progress.states.values())
        final = RunState.FAILED if failed else RunState.SUCCESS
        self.store.set_run_state(run_id, final)
        return final

    # -- the loop -----------------------------------------------------------------------
    def _loop(self, run: Any, spec: PipelineSpec, run_dir: Path, p: _RunProgress) -> bool:
        """Returns True when the run was cancelled."""
        while True:
            self._start_ready(run, spec, run_dir, p)
            if not p.attempts and all(s.finished for s in p.states.values()):
                return False
            wake = min([*p.deadlines.values(), *p.retry_at.values()], default=None)
            try:
                event = self._events.get(timeout=None if wake is None else max(0.0, wake - time.monotonic()))
            except queue.Empty:
                event = None
            if isinstance(event, _Cancel):
                return True
            if isinstance(event, Started):
                self._on_started(run.id, spec, event, p)
            elif isinstance(event, Finished):
                self._on_finished(run.id, spec, event, p)
            now = time.monotonic()
            for name, deadline in list(p.deadlines.items()):
                if now >= deadline:
                    del p.deadlines[name]
                    p.attempts[name].stop(f"timed out after {format_seconds(spec.tasks[name].timeout or 0)}")

    def _start_ready(self, run: Any, spec: PipelineSpec, run_dir: Path, p: _RunProgress) -> None:
        # One pass in topological order settles chains of skips in one go.
        for name in spec.order:
            if p.states[name] is not TaskState.PENDING:
                continue
            task = spec.tasks[name]
            decision = Decision.SKIP if name in p.branch_skipped else \
                decide(task.trigger_rule, [p.states[u] for u in task.upstream])
            if decision is Decision.SKIP:
                why = "not chosen by branch" if name in p.branch_skipped else "upstream skipped"
                self._transition(run.id, name, TaskState.SKIPPED, p, error=None, detail=why)
            elif decision is Decision.UPSTREAM_FAILED:
                self._transition(run.id, name, TaskState.UPSTREAM_FAILED, p, error="an upstream task failed")
            elif decision is Decision.RUN:
                self._submit(run, spec, run_dir, name, p)
        now = time.monotonic()
        for name, due in list(p.retry_at.items()):
            if now >= due:
                del p.retry_at[name]
                self._submit(run, spec, run_dir, name, p)

    def _submit(self, run: Any, spec: PipelineSpec, run_dir: Path, name: str, p: _RunProgress) -> None:
        task = spec.tasks[name]
        try_number = p.tries[name] + 1
        output_path = run_dir / f"{name}.ipynb"
        if output_path.exists():  # keep the notebook of the try before, next to the new one
            shutil.move(output_path, run_dir / f"{name}.try{try_number - 1}.ipynb")
        try:
            parameters = task_parameters(
                spec, task, overrides=run.params, run_id=run.id,
                logical_date=run.logical_date, run_dir=str(run_dir),
                upstream={u: p.outputs.get(u, {}) for u in task.upstream if p.states[u] is TaskState.SUCCESS})
        except NbschedError as exc:
            p.tries[name] = try_number
            self._transition(run.id, name, TaskState.FAILED, p, error=str(exc), try_number=try_number)
            return
        p.tries[name] = try_number
        self._transition(run.id, name, TaskState.QUEUED, p, try_number=try_number,
                         output_path=str(output_path), error=None)
        request = TaskRequest(run_id=run.id, task=name, try_number=try_number, notebook=task.notebook,
                              output_path=output_path, parameters=parameters, kernel=task.kernel)
        p.attempts[name] = self.executor.submit(request, self._events)

    def _on_started(self, run_id: str, spec: PipelineSpec, event: Started, p: _RunProgress) -> None:
        timeout = spec.tasks[event.task].timeout
        if timeout:
            p.deadlines[event.task] = time.monotonic() + timeout
        self._transition(run_id, event.task, TaskState.RUNNING, p)

    def _on_finished(self, run_id: str, spec: PipelineSpec, event: Finished, p: _RunProgress) -> None:
        name, outcome = event.task, event.outcome
        p.attempts.pop(name, None)
        p.deadlines.pop(name, None)
        task = spec.tasks[name]
        fields = {"outputs": outcome.outputs}
        if outcome.stopped == CANCELLED:
            self._transition(run_id, name, TaskState.CANCELLED, p, error="run cancelled", **fields)
            return
        error = outcome.error or self._check_branch(spec, name, outcome)
        if error is None:
            p.outputs[name] = outcome.outputs
            if outcome.branch is not None:
                p.branch_skipped.update(d for d in downstream_of(_upstreams(spec))[name]
                                        if d not in outcome.branch)
            self._transition(run_id, name, TaskState.SUCCESS, p, error=None, **fields)
        elif event.try_number < task.max_tries:
            wait = task.retry_wait(event.try_number)
            p.retry_at[name] = time.monotonic() + wait
            self._transition(run_id, name, TaskState.UP_FOR_RETRY, p, error=error,
                             next_try_at=utcnow() + timedelta(seconds=wait), **fields)
        else:
            self._transition(run_id, name, TaskState.FAILED, p, error=error, **fields)

    @staticmethod
    def _check_branch(spec: PipelineSpec, name: str, outcome: TaskOutcome) -> str | None:
        if outcome.branch is None:
            return None
        downstream = downstream_of(_upstreams(spec))[name]
        unknown = [b for b in outcome.branch if b not in downstream]
        if unknown:
            return (f"nbsched.branch: '{unknown[0]}' is not a direct downstream task of '{name}' "
                    f"(downstream: {', '.join(downstream) or 'none'})")
        return None

    # -- bookkeeping --------------------------------------------------------------------
    def _transition(self, run_id: str, name: str, state: TaskState, p: _RunProgress,
                    detail: str | None = None, **fields: Any) -> None:
        self.store.set_task_state(run_id, name, state, **fields)
        p.states[name] = state
        self._notify(name, state, detail or fields.get("error"))

    def _notify(self, name: str, state: TaskState, detail: str | None) -> None:
        if self.listener is not None:
            self.listener(name, state, detail)

    def _stop_all(self, p: _RunProgress, reason: str) -> None:
        for attempt in p.attempts.values():
            attempt.stop(reason)

    def _drain(self, run_id: str, spec: PipelineSpec, p: _RunProgress) -> None:
        """Wait for every submitted try to report back, recording how each ended."""
        p.retry_at.clear()
        while p.attempts:
            try:
                event = self._events.get()
            except KeyboardInterrupt:  # a second Ctrl-C: the kernels are already being stopped
                continue
            if isinstance(event, Finished):
                self._on_finished(run_id, spec, event, p)
                p.retry_at.clear()


def _upstreams(spec: PipelineSpec) -> dict[str, tuple[str, ...]]:
    return {t.name: t.upstream for t in spec.tasks.values()}
