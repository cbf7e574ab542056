"""The executor contract: run a task try somewhere and report exactly one ``Finished``."""

from __future__ import annotations

import queue
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from nbsched.kernels import KernelHandle, KernelKey
from nbsched.notebook import TaskOutcome, TaskRequest, cell_progress
from nbsched.states import StopReason


@dataclass(frozen=True)
class Finished:
    run_id: str
    task: str
    try_number: int
    outcome: TaskOutcome


class Wake:
    """Queue message that only wakes the runner's loop (cancel requests, schedule changes)."""


Message = Finished | Wake  # what a runner's queue carries


class TaskAttempt:
    """One submitted try; ``stop`` ends it early (timeout, cancel) wherever it is."""

    def __init__(self, request: TaskRequest) -> None:
        self.request = request
        self.handle = KernelHandle()

    def stop(self, reason: StopReason, message: str | None = None) -> None:
        self.handle.stop(reason, message)

    def cell(self) -> dict[str, Any] | None:
        """The cell the notebook is executing now, if it has started one."""
        return cell_progress(self.handle)


class Executor(ABC):
    """Owns the bookkeeping of a try; subclasses say where it runs and how."""

    workers: int  # tries it runs at once

    def submit(self, request: TaskRequest, events: queue.Queue[Message]) -> TaskAttempt:
        attempt = TaskAttempt(request)
        self._spawn(self._run, attempt, events)
        return attempt

    def _run(self, attempt: TaskAttempt, events: queue.Queue[Message]) -> None:
        request = attempt.request
        outcome = TaskOutcome(error="executor failed before the task ran")
        try:
            if attempt.handle.stop_reason is not None:  # stopped while waiting for a worker
                outcome = TaskOutcome.stopped_by(attempt.handle)
                return
            outcome = self.execute(request, attempt.handle)
        except BaseException as exc:  # noqa: BLE001 - the task failed, not the runner: report it as the task's error
            outcome = TaskOutcome(error=f"{type(exc).__name__}: {exc}", output_path=request.output_path)
        finally:
            events.put(Finished(request.run_id, request.task, request.try_number, outcome))

    @abstractmethod
    def _spawn(
        self,
        fn: Callable[[TaskAttempt, queue.Queue[Message]], None],
        attempt: TaskAttempt,
        events: queue.Queue[Message],
    ) -> None:
        """Start ``fn(attempt, events)`` on a worker."""

    @abstractmethod
    def execute(self, request: TaskRequest, handle: KernelHandle) -> TaskOutcome:
        """Run one try of a task, on the worker."""

    def prepare(self, kernels: Mapping[KernelKey, int]) -> None:  # noqa: B027 - a hook: doing nothing is right
        """The tasks waiting to run will ask for these kernels (name and what the notebooks of
        their run import: how many tasks, the runner's whole count each time): have them ready,
        if this executor can."""

    def shutdown(self) -> None:  # noqa: B027 - a hook: doing nothing is right
        """Release workers; called once the runner is done."""
