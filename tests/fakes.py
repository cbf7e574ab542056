"""Test doubles for the runner: a clock moved by hand, and an executor that finishes tries with
scripted outcomes at once, so the runner's logic is tested without kernels, threads or sleeps."""

from __future__ import annotations

import queue
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import nbformat
from nbformat.v4 import new_notebook

from nbsched.clock import Clock
from nbsched.executors.base import Executor, Message, TaskAttempt
from nbsched.failures import TaskFailure
from nbsched.kernels import KernelHandle
from nbsched.notebook import TaskOutcome, TaskRequest
from nbsched.states import StopReason


class FakeClock(Clock):
    """Both clocks, moved together only by ``advance``."""

    def __init__(self, start: datetime = datetime(2026, 3, 2, 6, 0, tzinfo=timezone.utc)) -> None:
        self._now = start
        self._monotonic = 1000.0

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._monotonic

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)
        self._monotonic += seconds


@dataclass(frozen=True)
class Succeed:
    outputs: dict[str, Any] = field(default_factory=dict)
    branch: list[str] | None = None

    def outcome(self, request: TaskRequest) -> TaskOutcome:
        return TaskOutcome(outputs=dict(self.outputs), branch=self.branch, output_path=request.output_path)


@dataclass(frozen=True)
class Fail:
    """A cell of the notebook raises."""

    ename: str = "ValueError"
    evalue: str = "bad input"
    cell: int = 4
    source: str = "raise ValueError('bad input')"

    def outcome(self, request: TaskRequest) -> TaskOutcome:
        failure = TaskFailure(ename=self.ename, evalue=self.evalue, cell=self.cell, source=self.source)
        return TaskOutcome.failed(failure, output_path=request.output_path)


class Hang:
    """The notebook runs until the runner stops the try, or the test ``release``s it."""


Step = Succeed | Fail | Hang
HANG = Hang()


class _HeldHandle(KernelHandle):
    """A hung try's handle: stopping it reports the try back, as a killed kernel's would."""

    def __init__(self, report: Callable[[], None]) -> None:
        super().__init__()
        self._report = report

    def stop(self, reason: StopReason, message: str | None = None) -> None:
        first = self.stop_reason is None
        super().stop(reason, message)
        if first:
            self._report()


class FakeExecutor(Executor):
    """Finishes each try with the next step of its task's ``script`` (the last step repeats;
    a task without one succeeds), at once, in the runner's thread."""

    def __init__(self, script: Mapping[str, Sequence[Step]] | None = None, *, workers: int = 4) -> None:
        self.workers = workers
        self.script = {task: list(steps) for task, steps in (script or {}).items()}
        self.requests: list[TaskRequest] = []  # every try submitted, in order
        self._steps: dict[tuple[str, str, int], Step] = {}
        self._held: dict[tuple[str, str, int], Callable[[], None]] = {}  # hung tries, each with its ending

    def tries(self, task: str) -> list[int]:
        return [r.try_number for r in self.requests if r.task == task]

    def release(self, task: str, step: Succeed | Fail) -> None:
        """The last hung try of ``task`` ends now, as ``step`` says."""
        key = next(k for k in reversed(self._held) if k[1] == task)
        self._steps[key] = step
        self._held[key]()

    def _spawn(
        self,
        fn: Callable[[TaskAttempt, queue.Queue[Message]], None],
        attempt: TaskAttempt,
        events: queue.Queue[Message],
    ) -> None:
        request = attempt.request
        key = (request.run_id, request.task, request.try_number)
        self.requests.append(request)
        steps = self.script.get(request.task) or [Succeed()]
        step = steps[min(len(self.tries(request.task)), len(steps)) - 1]
        if not isinstance(step, Hang):
            self._steps[key] = step
            fn(attempt, events)
            return

        def end() -> None:  # once: by the test's release, or by the runner stopping it
            if self._held.pop(key, None) is not None:
                fn(attempt, events)

        self._held[key] = end
        attempt.handle = _HeldHandle(end)

    def execute(self, request: TaskRequest, handle: KernelHandle) -> TaskOutcome:
        step = self._steps.pop((request.run_id, request.task, request.try_number))
        assert not isinstance(step, Hang)
        # as papermill does, whatever the outcome: the try's notebook, with the parameters it got
        request.output_path.parent.mkdir(parents=True, exist_ok=True)
        notebook = new_notebook(metadata={"papermill": {"parameters": request.parameters}})
        nbformat.write(notebook, str(request.output_path))
        return step.outcome(request)
