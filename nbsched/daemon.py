"""``nbsched serve``: the scheduler and a runner in one loop.

One thread, one wait: the loop sleeps on the runner's event queue until a task ends,
the next schedule is due, a retry or timeout is due, or ``poll`` seconds pass (to see
what other processes wrote). ``stop()`` ends it gracefully. (The runner's heartbeat beats from a
thread of its own, so a loop held up keeps its tries: ``nbsched.heartbeat``.)
"""

from __future__ import annotations

import logging
import time

from nbsched.clock import utcnow
from nbsched.config import DaemonOptions
from nbsched.errors import DatabaseUnavailable
from nbsched.runner import Runner
from nbsched.scheduler import Scheduler
from nbsched.sender import Sender
from nbsched.states import RunState, StopReason

log = logging.getLogger("nbsched.serve")

QUEUED_PAGE = 50
NOTICE_LOOK = 2.0  # seconds between the loop's looks for notifications due (its own process's wake the sender at once)
EXIT_OK = 0
EXIT_CANCELLED_TASKS = 3  # stopped on request, but tasks still running after the grace period were cancelled


class Daemon:
    def __init__(
        self, runner: Runner, scheduler: Scheduler | None, options: DaemonOptions, sender: Sender | None = None
    ) -> None:
        self.runner = runner
        self.scheduler = scheduler
        self.options = options
        self.sender = sender  # sends the outbox's notifications, in a thread of its own
        self._stopping = False

    def stop(self) -> None:
        """Stop firing and claiming, let running tasks finish (from another thread: the loop
        wakes at once). With the database away, wait for it the grace period, then stop without it."""
        self.request_stop()
        self.runner.wake()

    def request_stop(self) -> None:
        """``stop`` for a signal handler: it runs in the loop's own thread, between any two of its
        steps, so it takes no lock (waking the loop's queue did: a SIGTERM that came while the loop
        held that queue's lock waited for it forever); the loop sees it within a poll."""
        self._stopping = True
        self.runner.abandon_at = self.runner.clock.monotonic() + self.options.grace

    def wake(self) -> None:
        """Something changed in this process (a schedule, a queued run): look now."""
        if self.scheduler is not None:
            self.scheduler.invalidate()
        self.runner.wake()

    def serve(self) -> int:
        store = self.runner.store
        log.info(
            "serving: runner %s, %d worker(s), lease %gs, scheduler %s",
            self.runner.id,
            self.runner.executor.workers,
            self.options.lease,
            "on" if self.scheduler else "off",
        )
        if self.sender is not None:
            self.sender.start()
        try:
            # a daemon waits out a lost database: its calls retry until it is back (store/retry.py)
            with store.patient(self.runner.keep_time), self.runner:
                look_for_notices = 0.0
                while not self._stopping:
                    if self.scheduler is not None:
                        self.scheduler.fire_due(utcnow())
                    # the sender's thread sleeps until there is something to send: the loop looks
                    # (a thread of its own polling changed how the daemon's thread pools grew)
                    if self.sender is not None and time.monotonic() >= look_for_notices:
                        look_for_notices = time.monotonic() + NOTICE_LOOK
                        if self.sender.due():
                            self.sender.wake()
                    # every running run, and the oldest queued ones: a backlog is started a page at a time
                    # (the runs alone: the runner reads their tasks as they change)
                    active = store.list_runs(
                        states=[RunState.RUNNING], unowned=True, limit=None, oldest_first=True, tasks=False
                    ) + store.list_runs(
                        states=[RunState.QUEUED], unowned=True, limit=QUEUED_PAGE, oldest_first=True, tasks=False
                    )
                    wake = self.runner.step(active)
                    if self.scheduler is not None and (at := self.scheduler.next_fire_at()) is not None:
                        until = (at - utcnow()).total_seconds()
                        wake = until if wake is None else min(wake, until)
                    self.runner.wait(wake)
                return self._shutdown()
        except DatabaseUnavailable as exc:
            if not self._stopping:
                raise
            log.warning("stopped: %s", exc)
            return EXIT_CANCELLED_TASKS
        finally:
            if self.sender is not None:
                self.sender.stop()
            self.runner.executor.shutdown()  # its threads, or its Dask client and cluster

    def _shutdown(self) -> int:
        runner = self.runner
        runner.claiming = False
        deadline = time.monotonic() + self.options.grace
        if runner.busy:
            log.info("stopping: waiting up to %gs for %d running task(s)", self.options.grace, runner.busy)
        touched = runner.running_run_ids
        while runner.busy and time.monotonic() < deadline:
            runner.step(runner.store.list_runs(ids=runner.running_run_ids, limit=None, tasks=False))
            runner.wait(deadline - time.monotonic())
        runner.step(
            runner.store.list_runs(ids=touched, limit=None, tasks=False)
        )  # end the runs whose last task just ended
        if not runner.busy:
            log.info("stopped")
            return EXIT_OK
        for run_id in runner.running_run_ids:
            runner.cancel_run(run_id, "cancelled: nbsched serve stopped")
        runner.stop_all(StopReason.CANCELLED)
        runner.drain()
        log.warning("stopped; tasks still running after the grace period were cancelled")
        return EXIT_CANCELLED_TASKS
