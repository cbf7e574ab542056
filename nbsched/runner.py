"""The runner: moves runs forward through the database and executes the tasks it claims.

Every decision is read from and written to the store, so any number of runners (a
foreground ``nbsched run``, one or more ``nbsched serve`` daemons, on one machine or
many) can share a database: a task try is claimed atomically by one of them, and every
later write of that try is fenced by its owner and try number.

A runner sleeps on one queue of executor events; it wakes early only for the next
retry or timeout, and every ``poll`` seconds to notice work and cancellations that
other processes wrote. It reads the time from the ``Clock`` it is given, so tests move it by hand.
"""

from __future__ import annotations

import heapq
import logging
import os
import queue
import secrets
from collections import Counter
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from typing_extensions import Self

from nbsched.clock import SYSTEM_CLOCK, Clock
from nbsched.dag import Decision, decide
from nbsched.errors import DatabaseUnavailable, NbschedError
from nbsched.executors.base import Executor, Finished, Message, TaskAttempt, Wake
from nbsched.fanout import for_each_list, item_params, parse_instance, task_of
from nbsched.heartbeat import Heartbeat, process_alive
from nbsched.imports import run_imports
from nbsched.notebook import TaskOutcome, TaskRequest, kernel_for
from nbsched.notices import notices_for
from nbsched.outputs import publish, try_notebook
from nbsched.params import task_parameters
from nbsched.selection import unselected
from nbsched.spec import PipelineSpec, TaskSpec, confined_notebook
from nbsched.states import NotifyEvent, RunState, StopReason, TaskState
from nbsched.store import RunRecord, SqlStore
from nbsched.store.cache import RunCache
from nbsched.store.liveness import HOST
from nbsched.timefmt import duration

if TYPE_CHECKING:
    from nbsched.kernels import KernelKey

log = logging.getLogger("nbsched.runner")

ABANDON_AFTER = 10.0  # seconds a cancelled foreground run waits for a lost database to record it

# (run_id, task, new state, detail) after each transition this runner makes, for progress displays
Listener = Callable[[str, str, TaskState, "str | None"], None]
SpecLoader = Callable[[RunRecord], PipelineSpec]

_WAITING = (TaskState.PENDING, TaskState.QUEUED, TaskState.UP_FOR_RETRY)  # tasks that will still ask for a kernel
_FAILED = (TaskState.FAILED, TaskState.UPSTREAM_FAILED)
# a for_each task whose rows are all in these (its one row, or each instance) is expanded when it may run
_EXPANDABLE = (TaskState.PENDING, TaskState.REMOVED)
# the events a run's end and a try's end notify (a cancelled run or try notifies none)
_RUN_EVENTS = {RunState.SUCCESS: NotifyEvent.SUCCESS, RunState.FAILED: NotifyEvent.FAILURE}
_TASK_EVENTS = {
    TaskState.SUCCESS: NotifyEvent.SUCCESS,
    TaskState.FAILED: NotifyEvent.FAILURE,
    TaskState.UP_FOR_RETRY: NotifyEvent.RETRY,
}


@dataclass
class _Running:
    attempt: TaskAttempt
    try_number: int
    deadline: float | None  # by the monotonic clock
    timeout: float | None
    cell: dict[str, Any] | None = None  # as last written to the store
    sla_at: float | None = None  # by the monotonic clock: past it, sla_missed is sent (once)
    task: TaskSpec | None = None


class Runner:
    def __init__(
        self,
        store: SqlStore,
        executor: Executor,
        runs_dir: Path,
        *,
        spec_loader: SpecLoader,
        kind: str = "run",
        lease: float = 60.0,
        poll: float = 1.0,
        listener: Listener | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.store = store
        self.executor = executor
        self.runs_dir = Path(runs_dir)
        self.spec_loader = spec_loader
        self.kind = kind
        self.lease = lease
        self.poll = poll
        self.listener = listener
        self.clock = clock
        self.id = f"{HOST}:{os.getpid()}:{secrets.token_hex(3)}"
        self.events: queue.Queue[Message] = queue.Queue()
        self.claiming = True
        self._running: dict[tuple[str, str], _Running] = {}
        self._specs: dict[tuple[str, int], PipelineSpec] = {}
        self._runs = RunCache(store)  # the task rows of the runs in play, re-read as they change
        self._kernel_names: dict[tuple[str, int], dict[str, KernelKey]] = {}
        # kernels the tasks waiting to run will ask for, this step: by name and the run's imports
        self._waiting: Counter[KernelKey] = Counter()
        self.heartbeat = Heartbeat(store, self.id, kind, lease, clock)  # in a thread: a stalled loop is no dead runner
        self._next_reap = 0.0
        self._next_check = 0.0
        self._seen_back_at = float("-inf")  # the store's last recovery from an outage this runner handled
        self.abandon_at: float | None = None  # monotonic: when stopping, how long to wait for a lost database
        self._abandoned = False

    # -- lifecycle ------------------------------------------------------------------------
    def __enter__(self) -> Self:
        self.heartbeat.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.heartbeat.stop()
        if not self._abandoned:  # else the database is away: the lease will tell the others
            self.store.unregister_runner(self.id)

    @property
    def busy(self) -> int:
        return len(self._running)

    @property
    def running_run_ids(self) -> list[str]:
        return sorted({run_id for run_id, _ in self._running})

    def wake(self) -> None:
        """Wake the loop now; safe from any thread."""
        self.events.put(Wake())

    # -- foreground: run given runs to their end ---------------------------------------------
    def run(self, run_ids: Iterable[str]) -> None:
        """Execute ``run_ids`` (created with ``owner=self.id``) until each has finished.
        Ctrl-C (KeyboardInterrupt) cancels them."""
        mine = list(run_ids)
        try:
            while True:
                wake = self.step(self.store.list_runs(ids=mine, limit=None, tasks=False), only=mine)
                if not self._running and all(
                    r.state.finished for r in self.store.list_runs(ids=mine, limit=None, tasks=False)
                ):
                    return
                self.wait(wake)
        except KeyboardInterrupt:
            self.stop_all(StopReason.CANCELLED)  # the kernels first: they stop even while the database is away
            self.abandon_at = self.clock.monotonic() + ABANDON_AFTER
            for run_id in mine:
                self.cancel_run(run_id)
            self.drain()
        except BaseException as exc:
            # nbsched's own failure (a listener's, the store's), not a task's: the runs end
            # cancelled with the reason, rather than stay "running" with nobody to end them
            self.listener = None  # it may be what failed; it would fail the clean-up too
            self.abandon_at = self.clock.monotonic() + ABANDON_AFTER  # the store may be what failed
            for run_id in mine:
                self.cancel_run(run_id, f"cancelled: the runner failed: {type(exc).__name__}: {exc}")
            self.stop_all(StopReason.CANCELLED)
            self.drain()
            raise

    def cancel_run(self, run_id: str, reason: str = "cancelled") -> bool:
        if not self.store.cancel_run(run_id, reason):
            return False
        for name, t in self.store.get_run(run_id).tasks.items():
            if t.state is TaskState.CANCELLED:
                self._notify(run_id, name, TaskState.CANCELLED, None)
        return True

    # -- one cycle ------------------------------------------------------------------------------
    def step(self, runs: list[RunRecord], only: list[str] | None = None) -> float | None:
        """Housekeeping, then move ``runs`` forward and start what may start. Returns the
        seconds until the next timed event (retry due, task timeout), if any. ``runs`` may come
        without their tasks (``list_runs(tasks=False)``): the runner reads them as they change."""
        now = self.clock.monotonic()
        self.heartbeat.turned()
        # after an outage, every runner's heartbeat is stale: give the others a lease to heartbeat
        # again before judging them, so an outage alone retries nobody's tries
        if now >= self._next_reap and now >= self.store.patience.back_at + self.lease:
            self._next_reap = now + self.lease / 2
            self._reap()
        if now >= self._next_check:
            self._next_check = now + self.poll
            self._stop_revoked()
            self._record_cells()
        self._enforce_deadlines(now)
        self._tries_past_sla(now)
        wake: list[float] = [r.deadline - now for r in self._running.values() if r.deadline is not None]
        wake += [r.sla_at - now for r in self._running.values() if r.sla_at is not None]
        full: set[str] = set()  # pipelines at their max_active_runs: their other queued runs wait
        self._waiting = Counter()
        for run, changed in self._runs.fresh(runs):
            if run.state is RunState.QUEUED:
                if run.pipeline in full:
                    continue
                started = self._start(run)
                if started is None:
                    if run.max_active_runs:
                        full.add(run.pipeline)
                    continue
                run, changed = started, None  # a run starting now: each of its tasks is to be decided
            if run.state is RunState.RUNNING and (due := self._advance(run, changed)) is not None:
                wake.append(due)
        # kernels ahead of need for the tasks that will run (none once claiming stops)
        self.executor.prepare(self._waiting if self.claiming else {})
        if self.claiming:
            self._claim(only)
        return min(wake, default=None)

    def wait(self, timeout: float | None) -> None:
        """Sleep until an executor event, a wake-up or ``timeout`` (capped at ``poll``);
        then handle every event already queued."""
        timeout = self.poll if timeout is None else max(0.0, min(timeout, self.poll))
        try:
            event = self.events.get(timeout=timeout)
        except queue.Empty:
            return
        while True:
            self._handle(event)
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                return

    def keep_time(self) -> None:
        """Called between tries while the database is away, when the loop cannot turn: stop the
        tries past their timeout; past ``abandon_at`` (set when asked to stop), stop every try and
        give up waiting, leaving them to be retried by whichever runner presumes this one dead."""
        now = self.clock.monotonic()
        self.heartbeat.turned()  # waiting for the database is a turn of the loop too: it is alive
        self._enforce_deadlines(now)
        if self.abandon_at is not None and now >= self.abandon_at:
            running, self.abandon_at, self._abandoned = self.busy, None, True
            self.stop_all(StopReason.RUNNER_LOST)
            raise DatabaseUnavailable(
                f"database {self.store.patience.shown_url}: unreachable while stopping; {running} running "
                f"task(s) stopped, left to be retried once a runner presumes this one dead"
            )

    def stop_all(self, reason: StopReason) -> None:
        for r in self._running.values():
            r.attempt.stop(reason)

    def drain(self) -> None:
        """Wait for every try this runner started to report back, recording how each ended."""
        while self._running:
            try:
                event = self.events.get()
            except KeyboardInterrupt:  # a second Ctrl-C: the kernels are already being stopped
                continue
            self._handle(event)

    # -- moving a run forward -------------------------------------------------------------------
    def _start(self, run: RunRecord) -> RunRecord | None:
        """A queued run, started: None when it may not start yet (its pipeline's
        ``max_active_runs`` are running) or another runner started it."""
        if not self.store.start_run(run.id, notices_for(self._spec(run).notify, NotifyEvent.START)):
            return None
        run = replace(self.store.get_run(run.id, tasks=()), tasks=run.tasks)  # starting changes no task
        log.info("run %s of %s started (%s)", run.id, run.pipeline, run.trigger)
        return run

    def _advance(self, run: RunRecord, changed: Collection[str] | None = None) -> float | None:
        """Move a running run's tasks on as far as they go now, and end the run once they all
        have; ``changed``: the rows that changed since the last look (None: look at them all).
        Returns the seconds until it needs a look again (its next retry), if it does."""
        spec = self._spec(run)
        states = {n: t.state for n, t in run.tasks.items()}
        wake = self._release_retries(run, spec, states, self.clock.now())
        sla = self._run_past_sla(run, spec)
        if sla is not None:
            wake = sla if wake is None else min(wake, sla)
        self._settle(run, spec, states, changed)
        kernel_of = self._kernels(run)
        self._waiting.update(kernel_of[task_of(n)] for n, s in states.items() if s in _WAITING)
        if all(s.finished for s in states.values()):
            self._end(run, states)
        return wake

    def _release_retries(
        self, run: RunRecord, spec: PipelineSpec, states: dict[str, TaskState], now: datetime
    ) -> float | None:
        """Queue the tasks whose retry is due; returns the seconds until the next one is."""
        wake: list[float] = []
        for name, state in states.items():
            if state is not TaskState.UP_FOR_RETRY:
                continue
            due = run.tasks[name].next_try_at
            if due is not None and due > now:
                wake.append((due - now).total_seconds())
            else:
                states[name] = self._queue(run, spec, name, TaskState.UP_FOR_RETRY)
        return min(wake, default=None)

    def _settle(
        self, run: RunRecord, spec: PipelineSpec, states: dict[str, TaskState], changed: Collection[str] | None
    ) -> None:
        """Decide each waiting task by its trigger rule and the branches taken upstream: queue
        it, skip it, or fail it for its upstream; in topological order, so a chain of skips
        settles in one pass. Only the tasks whose rows or upstream rows ``changed`` (and those
        after a task decided now) can have a new decision: the others are not looked at, so a
        look costs what changed, not the size of the run."""
        downstream = spec.downstream
        not_chosen = {
            d
            for n, t in run.tasks.items()
            if t.state is TaskState.SUCCESS and t.branch is not None
            for d in downstream[n]
            if d not in t.branch
        }
        lending = unselected(
            run.tasks, run.selection
        )  # a partial run's other tasks count as done for the tasks after them
        rows = _rows(states)
        dirty = set(spec.order) if changed is None else {task_of(n) for n in changed}
        todo = [(spec.position[n], n) for n in dirty | {d for n in dirty for d in downstream[n]}]
        heapq.heapify(todo)
        decided: set[str] = set()
        while todo:
            _, name = heapq.heappop(todo)
            if name in decided:
                continue
            decided.add(name)
            if all(states[row] is not TaskState.PENDING for row in rows[name]):
                continue  # decided already: nothing to settle
            task = spec.tasks[name]
            upstream = _upstream_states(task, rows, states, lending)
            decision = Decision.SKIP if name in not_chosen else decide(task.trigger_rule, upstream)
            if _expands(task, decision) and all(states[row] in _EXPANDABLE for row in rows[name]):
                run = self._expand(run, spec, task, states)  # a for_each: its instances, now its list is known
                rows = _rows(states)
            for row in rows[name]:
                if states[row] is not TaskState.PENDING:
                    continue
                if decision is Decision.SKIP:
                    why = "not chosen by branch" if name in not_chosen else "upstream skipped"
                    states[row] = self._set(run.id, row, TaskState.SKIPPED, TaskState.PENDING, detail=why)
                elif decision is Decision.UPSTREAM_FAILED:
                    states[row] = self._set(
                        run.id, row, TaskState.UPSTREAM_FAILED, TaskState.PENDING, error="an upstream task failed"
                    )
                elif decision is Decision.RUN and not _at_max_parallel(task, rows[name], states):
                    states[row] = self._queue(run, spec, row, TaskState.PENDING)
            if any(states[row] is not TaskState.PENDING for row in rows[name]):
                for d in downstream[name]:  # what comes after it may be decided in this same pass
                    heapq.heappush(todo, (spec.position[d], d))

    def _expand(self, run: RunRecord, spec: PipelineSpec, task: TaskSpec, states: dict[str, TaskState]) -> RunRecord:
        """Make a for_each task's instances from its list, the run as it is now: when it may first
        run, and again when a repair or a retry put every instance of it back to waiting (its list
        may have changed: ``expand_task`` makes, changes and removes instances to match it). An
        empty list skips it, a bad one fails it in one line naming the task and the list."""
        assert task.fanout is not None
        name, where = task.name, f"tasks.{task.name}.for_each"
        waiting = [n for n in states if task_of(n) == name and states[n] is TaskState.PENDING]
        try:
            from nbsched.templates import environment

            context = {
                "upstream": self._upstream_values(run, spec, task),
                # a repair's values, as its tries get them
                "params": {**spec.params, **task.params, **run.params, **(run.tasks[waiting[0]].params or {})},
                "logical_date": run.logical_date,
                "run_id": run.id,
                "pipeline": spec.name,
                "task": name,
            }
            env = environment()
            items = for_each_list(task.fanout, lambda source: env.render(source, context), where)
            values = [item_params(task.fanout, item, where) for item in items]
        except Exception as exc:  # noqa: BLE001 - the expression is the user's: any failure fails the task, in one line
            error = str(exc) if isinstance(exc, NbschedError) else f"{where}: {type(exc).__name__}: {exc}"
            for n in waiting:
                states[n] = self._set(
                    run.id,
                    n,
                    TaskState.FAILED,
                    TaskState.PENDING,
                    error=" ".join(error.split())[:500],
                    try_number=run.tasks[n].try_number + 1,
                )
            return run
        if not values and waiting == [name]:
            states[name] = self._set(run.id, name, TaskState.SKIPPED, TaskState.PENDING, detail="for_each: no items")
            return run
        self._runs.touch(run.id, name)
        self.store.expand_task(run.id, name, values, max_tries=task.max_tries, pool=task.pool)
        instances = self.store.get_run(run.id, tasks=[name]).tasks  # expanded here, or by another runner meanwhile
        others = {n: t for n, t in run.tasks.items() if task_of(n) != name}
        run = replace(run, tasks={**others, **instances})
        for n in [n for n in states if task_of(n) == name]:
            del states[n]
        states.update({n: t.state for n, t in instances.items()})
        log.info("task %s of run %s: %d instance(s)", name, run.id, len(values))
        return run

    def _end(self, run: RunRecord, states: dict[str, TaskState]) -> None:
        """End a run whose tasks have all finished: cancelled if one was, failed if one failed."""
        ended = set(states.values())
        final = (
            RunState.CANCELLED
            if TaskState.CANCELLED in ended
            else RunState.FAILED
            if ended.intersection(_FAILED)
            else RunState.SUCCESS
        )
        event = _RUN_EVENTS.get(final)
        notices = notices_for(self._spec(run).notify, event) if event else []
        if self.store.set_run_state(run.id, final, expect=[RunState.RUNNING], notices=notices):
            log.info("run %s of %s ended %s", run.id, run.pipeline, final)

    def _queue(self, run: RunRecord, spec: PipelineSpec, name: str, leaving: TaskState) -> TaskState:
        try:  # a template that cannot render fails the task now rather than in the kernel
            self._parameters(run, spec, name)
        except NbschedError as exc:
            return self._set(
                run.id, name, TaskState.FAILED, leaving, error=str(exc), try_number=run.tasks[name].try_number + 1
            )
        return self._set(
            run.id,
            name,
            TaskState.QUEUED,
            leaving,
            try_number=run.tasks[name].try_number + 1,
            output_path=str(self._try_notebook(run, name, run.tasks[name].try_number + 1)),
            error=None,
            failure=None,
            owner=None,
        )

    def _set(
        self, run_id: str, name: str, state: TaskState, leaving: TaskState, detail: str | None = None, **fields: Any
    ) -> TaskState:
        """A guarded transition; when another runner got there first, keep what it wrote."""
        self._runs.touch(run_id, name)
        if not self.store.set_task_state(run_id, name, state, expect=[leaving], **fields):
            return self.store.get_run(run_id, tasks=[name]).tasks[name].state
        self._notify(run_id, name, state, detail or fields.get("error"))
        return state

    # -- executing --------------------------------------------------------------------------------
    def _claim(self, only: list[str] | None) -> None:
        free = self.executor.workers - len(self._running)
        for claim in self.store.claim_tasks(self.id, free, run_ids=only):
            # the run, and of its tasks only this one and those it takes values from
            spec = self._spec(self.store.get_run(claim.run_id, tasks=()))
            task = spec.tasks[task_of(claim.task)]
            run = self.store.get_run(claim.run_id, tasks=[claim.task, *task.upstream])
            output_path = self._try_notebook(run, claim.task, claim.try_number)  # this try's alone
            if claim.pool_gone is not None:  # removed while this task waited: no slot will ever come
                error = f"pool '{claim.pool_gone}' does not exist (it was removed; create it again with: nbsched pool set {claim.pool_gone} SLOTS)"
                self._finish(
                    run.id, claim.task, claim.try_number, TaskState.FAILED, task, notebook=output_path, error=error
                )
                continue
            try:
                parameters = self._parameters(run, spec, claim.task, claim.try_number)
                notebook = self._notebook(spec, task)
            except NbschedError as exc:  # failed for good, with the task's own failure notifications
                self._finish(
                    run.id, claim.task, claim.try_number, TaskState.FAILED, task, notebook=output_path, error=str(exc)
                )
                continue
            request = TaskRequest(
                run_id=run.id,
                task=claim.task,
                try_number=claim.try_number,
                notebook=notebook,
                output_path=output_path,
                parameters=parameters,
                kernel=task.kernel,
                resources=task.resources,
                imports=self._kernels(run)[task.name][1],
            )
            now = self.clock.monotonic()
            deadline = now + task.timeout if task.timeout else None
            sla_at = (
                now + task.sla if task.sla and any(NotifyEvent.SLA_MISSED in r.on for r in task.reported_by) else None
            )
            self._running[(run.id, claim.task)] = _Running(
                self.executor.submit(request, self.events),
                claim.try_number,
                deadline,
                task.timeout,
                sla_at=sla_at,
                task=task,
            )
            self._notify(run.id, claim.task, TaskState.RUNNING, None)

    def _handle(self, event: Message) -> None:
        self.heartbeat.turned()
        if isinstance(event, Finished):
            self._on_finished(event)

    def _on_finished(self, event: Finished) -> None:
        running = self._running.pop((event.run_id, event.task), None)
        if running is None:
            return
        run = self.store.get_run(event.run_id, tasks=[event.task])
        spec = self._spec(run)
        task, outcome = spec.tasks[task_of(event.task)], event.outcome
        if outcome.stopped is StopReason.RUNNER_LOST:  # the task is no longer this runner's to record
            _dropped(run.id, event.task, event.try_number)
            return
        fields: dict[str, Any] = {
            "outputs": outcome.outputs,
            "warnings": outcome.warnings,
            "notebook": running.attempt.request.output_path,
        }
        if outcome.host is not None:
            fields["host"] = outcome.host
        if outcome.stopped is StopReason.CANCELLED:
            self._finish(run.id, event.task, event.try_number, TaskState.CANCELLED, error="run cancelled", **fields)
            return
        error = outcome.error or _branch_error(spec, event.task, outcome)
        if error is None:
            self._finish(
                run.id,
                event.task,
                event.try_number,
                TaskState.SUCCESS,
                task,
                error=None,
                branch=outcome.branch,
                **fields,
            )
            return
        fields.update(error=error, failure=outcome.failure)
        if event.try_number < run.tasks[event.task].max_tries:
            wait = task.retry_wait(event.try_number)
            self._finish(
                run.id,
                event.task,
                event.try_number,
                TaskState.UP_FOR_RETRY,
                task,
                next_try_at=self.clock.now() + timedelta(seconds=wait),
                **fields,
            )
        else:
            self._finish(run.id, event.task, event.try_number, TaskState.FAILED, task, **fields)

    def _finish(
        self,
        run_id: str,
        name: str,
        try_number: int,
        state: TaskState,
        task: TaskSpec | None = None,
        *,
        notebook: Path,
        **fields: Any,
    ) -> None:
        """Record a try's end, fenced; only then does its notebook become the task's."""
        event = _TASK_EVENTS.get(state)
        notices = notices_for(task.reported_by, event, task=name, try_number=try_number) if task and event else []
        published = partial(publish, notebook, name)
        if self.store.finish_task(
            run_id,
            name,
            owner=self.id,
            try_number=try_number,
            state=state,
            notices=notices,
            publish=published,
            **fields,
        ):
            self._notify(run_id, name, state, fields.get("error"))
        elif not (
            state is TaskState.CANCELLED
            and self.store.keep_cancelled_notebook(
                run_id, name, owner=self.id, try_number=try_number, publish=published
            )
        ):
            _dropped(run_id, name, try_number)

    def _record_cells(self) -> None:
        """Write which cell each running notebook is on, for progress displays: at most once
        per poll, and only for the notebooks that moved on, so a notebook of many quick cells
        costs the database no more than a slow one."""
        moved = []
        for (run_id, task), r in self._running.items():
            cell = r.attempt.cell()
            if cell is not None and cell != r.cell:
                r.cell = cell
                moved.append((run_id, task, r.try_number, cell))
        if moved:
            self.store.record_cells(self.id, moved)

    def _tries_past_sla(self, now: float) -> None:
        for (run_id, name), r in self._running.items():
            if r.sla_at is not None and now >= r.sla_at and r.task is not None:
                r.sla_at = None
                notices = notices_for(r.task.reported_by, NotifyEvent.SLA_MISSED, task=name, try_number=r.try_number)
                if self.store.add_try_notices(
                    run_id, name, owner=self.id, try_number=r.try_number, notices=notices
                ):  # not for a try taken from this runner while it was paused
                    log.info(
                        "task %s of run %s: try %d missed its sla of %s",
                        name,
                        run_id,
                        r.try_number,
                        duration(r.task.sla or 0),
                    )

    def _run_past_sla(self, run: RunRecord, spec: PipelineSpec) -> float | None:
        """Seconds until the run is past its sla; at it, sla_missed is written (once)."""
        if spec.sla is None or run.started_at is None or run.sla_missed_at is not None:
            return None
        if not any(NotifyEvent.SLA_MISSED in r.on for r in spec.notify):
            return None
        left = (run.started_at + timedelta(seconds=spec.sla) - self.clock.now()).total_seconds()
        if left > 0:
            return left
        if self.store.run_sla_missed(run.id, notices_for(spec.notify, NotifyEvent.SLA_MISSED)):
            log.info("run %s of %s missed its sla of %s", run.id, run.pipeline, duration(spec.sla))
        return None

    def _enforce_deadlines(self, now: float) -> None:
        for r in self._running.values():
            if r.deadline is not None and now >= r.deadline:
                r.deadline = None
                r.attempt.stop(StopReason.TIMED_OUT, f"timed out after {duration(r.timeout or 0)}")

    def _stop_revoked(self) -> None:
        """Stop tries the database no longer has running under this runner (run cancelled
        elsewhere, or this runner presumed dead and the try handed to another); after an outage,
        put back the tries it holds but never started."""
        outage_ended = self.store.patience.back_at != self._seen_back_at
        if not self._running and not outage_ended:
            return
        self._seen_back_at = self.store.patience.back_at
        still = self.store.owned_tasks_still_running(self.id)
        for (run_id, task), r in self._running.items():
            if (run_id, task, r.try_number) not in still and r.attempt.handle.stop_reason is None:
                state = self.store.get_run(run_id, tasks=[task]).tasks[task].state
                cancelled = state is TaskState.CANCELLED
                r.attempt.stop(StopReason.CANCELLED if cancelled else StopReason.RUNNER_LOST)
                # taken from this runner, which is here to see it: it was alive, paused past its lease
                if not cancelled and self.store.uncount_try(run_id, task, runner=self.id, try_number=r.try_number):
                    log.warning(
                        "task %s of run %s: try %d was taken from this runner while it was paused past its "
                        "lease; it does not count as a try",
                        task,
                        run_id,
                        r.try_number,
                    )
        mine = {(run_id, task, r.try_number) for (run_id, task), r in self._running.items()}
        for run_id, task, try_number in still - mine:  # claimed as the connection was lost: never started
            if self.store.release_claim(run_id, task, owner=self.id, try_number=try_number):
                log.info(
                    "task %s of run %s: try %d was claimed but never started; queued again", task, run_id, try_number
                )

    def _reap(self) -> None:
        """Take back the tries of runners that stopped heartbeating: retried or failed when their
        runner died; queued again, spending no retry, when its process is alive (paused, starved)."""
        for held in self.store.reap_dead_runners(self.lease, me=self.id):
            run = self.store.get_run(held.run_id, tasks=())
            task = self._spec(run).tasks[held.spec_task]
            runner = held.runner
            alive = runner is not None and process_alive(runner)
            lease = runner.lease if runner is not None and runner.lease else self.lease
            error = f"its runner {held.owner} stopped heartbeating (lease {duration(lease)})"
            if alive:
                error += " while its process lived (paused or starved): this try does not count"
            retry_at = self.clock.now() + timedelta(seconds=task.retry_wait(held.try_number))
            notices = {  # as the try's own end would have notified
                state: notices_for(task.notify, _TASK_EVENTS[state], task=held.task, try_number=held.try_number)
                for state in (TaskState.UP_FOR_RETRY, TaskState.FAILED)
            }
            state = self.store.take_back(held, error=error, retry_at=retry_at, runner_alive=alive, notices=notices)
            if state is not None:
                log.warning("task %s of run %s: %s; now %s", held.task, held.run_id, error, state)
                self._notify(held.run_id, held.task, state, error)

    # -- helpers ----------------------------------------------------------------------------------
    def _spec(self, run: RunRecord) -> PipelineSpec:
        key = (run.pipeline, run.pipeline_version)
        if key not in self._specs:
            self._specs[key] = self.spec_loader(run)
        return self._specs[key]

    def _kernels(self, run: RunRecord) -> dict[str, KernelKey]:
        """The kernel each of a run's tasks needs: its name, and what the notebooks of the
        run that use that kernel import (a fork server preloads them once for all of them);
        each notebook read once per pipeline version, not once per run."""
        key = (run.pipeline, run.pipeline_version)
        if key not in self._kernel_names:
            spec, names, notebooks = self._spec(run), {}, {}
            for n, t in spec.tasks.items():
                try:
                    notebooks[n] = self._notebook(spec, t)
                    names[n] = kernel_for(notebooks[n], t.kernel)
                except NbschedError:  # not read: its try fails when it is claimed
                    names[n] = t.kernel or "python3"
            imports = {
                kernel: run_imports(notebooks[n] for n in names if names[n] == kernel and n in notebooks)
                for kernel in set(names.values())
            }
            self._kernel_names[key] = {n: (kernel, imports[kernel]) for n, kernel in names.items()}
        return self._kernel_names[key]

    @staticmethod
    def _notebook(spec: PipelineSpec, task: TaskSpec) -> Path:
        """The notebook a try reads: for a pipeline with a root (registered through the server),
        resolved and checked inside it now, before any executor reads it, since a file may have
        become a symlink out of the root after it was registered. The executor gets the resolved
        path, so what was checked is what runs."""
        return task.notebook if spec.root is None else confined_notebook(task, spec.root)

    def _try_notebook(self, run: RunRecord, task: str, try_number: int) -> Path:
        return try_notebook(self.runs_dir / run.pipeline / run.id, task, try_number)

    def _parameters(self, run: RunRecord, spec: PipelineSpec, name: str, try_number: int = 1) -> dict[str, Any]:
        row = run.tasks[name]
        task = spec.tasks[row.spec_task]
        return task_parameters(
            spec,
            task,
            overrides={**run.params, **(row.params or {})},  # a repair's values, for its tasks
            run_id=run.id,
            logical_date=run.logical_date,
            try_number=try_number,
            run_dir=str(self.runs_dir / run.pipeline / run.id),
            upstream=self._upstream_values(run, spec, task),
            fired_by=run.fired_by,
            instance=row.instance_params,
            name=name,
        )

    @staticmethod
    def _upstream_values(run: RunRecord, spec: PipelineSpec, task: TaskSpec) -> dict[str, Any]:
        """What each direct upstream task recorded: for a mapped one, a list of its instances in
        order, each ``{"params", "outputs", "state"}`` (failed ones too, with empty outputs)."""
        lending = unselected(run.tasks, run.selection)
        values: dict[str, Any] = {}
        for up in task.upstream:
            if spec.tasks[up].fanout is not None:  # a lent instance succeeded in the run it is from
                values[up] = [
                    {
                        "params": dict(t.instance_params or {}),
                        "outputs": dict(t.outputs) if t.state is TaskState.SUCCESS or row in lending else {},
                        "state": TaskState.SUCCESS.value if row in lending else t.state.value,
                    }
                    for row, t in run.tasks.items()
                    if t.mapped_from == up and t.state is not TaskState.REMOVED
                ]
            elif up in run.tasks and (run.tasks[up].state is TaskState.SUCCESS or up in lending):  # lent: earlier run
                values[up] = run.tasks[up].outputs
        return values

    def _notify(self, run_id: str, name: str, state: TaskState, detail: str | None) -> None:
        if self.listener is not None:
            self.listener(run_id, name, state, detail)


def _rows(states: dict[str, TaskState]) -> dict[str, list[str]]:
    """Each spec task's rows: itself, or its instances in order."""
    rows: dict[str, list[str]] = {}
    for name in states:
        rows.setdefault(task_of(name), []).append(name)
    return rows


def _upstream_states(
    task: TaskSpec, rows: dict[str, list[str]], states: dict[str, TaskState], lending: set[str]
) -> list[TaskState]:
    """What a task's trigger rule counts: a mapped upstream task instance by instance (as
    Airflow's mapped tasks count), a lent row as a success; an instance removed from its list
    not at all, and a for_each whose every instance was (its list emptied) as skipped, as a
    for_each of an empty list is."""
    found: list[TaskState] = []
    for up in task.upstream:
        kept = [r for r in rows.get(up, []) if states[r] is not TaskState.REMOVED]
        if not kept and rows.get(up):
            found.append(TaskState.SKIPPED)
        found += [TaskState.SUCCESS if r in lending else states[r] for r in kept]
    return found


def _expands(task: TaskSpec, decision: Decision) -> bool:
    """A for_each whose list is recorded at run time, which may run now: time to expand it."""
    return task.fanout is not None and not task.fanout.static and decision is Decision.RUN


def _at_max_parallel(task: TaskSpec, rows: list[str], states: dict[str, TaskState]) -> bool:
    if task.fanout is None or task.fanout.max_parallel is None:
        return False
    busy = sum(states[r] in (TaskState.QUEUED, TaskState.RUNNING) for r in rows)
    return busy >= task.fanout.max_parallel


def _dropped(run_id: str, name: str, try_number: int) -> None:
    log.info("task %s of run %s: try %d was taken from this runner; its result is dropped", name, run_id, try_number)


def _branch_error(spec: PipelineSpec, name: str, outcome: TaskOutcome) -> str | None:
    if outcome.branch is None:
        return None
    if parse_instance(name) is not None:
        return f"nbsched.branch: {name} is an instance of a mapped task, which cannot choose branches"
    downstream = spec.downstream[name]
    unknown = [b for b in outcome.branch if b not in downstream]
    if unknown:
        return (
            f"nbsched.branch: '{unknown[0]}' is not a direct downstream task of '{name}' "
            f"(downstream: {', '.join(downstream) or 'none'})"
        )
    return None
