"""A runner's heartbeat, in a thread of its own (as Airflow's and Celery's workers beat apart
from their work), and how a reaper tells a runner that died from one that was only paused.

The heartbeat vouches for the process, not for each turn of the runner's loop: a loop that stalls
(a machine at a load of 70, a log pipe nobody reads, a slow notebook file system) keeps its tries,
since its kernels go on and it records their ends once it turns again. It must not vouch for a
loop that never turns again, though: past ``stall_after`` without a turn (ten leases, at least
two minutes) the thread stops beating, says so once, and the others take the runner's tries back
after its lease; it beats again if the loop turns again. The process does not exit for it: a
Jupyter server runs its runner in a thread, and its users' kernels with it.

Writes are short transactions of their own (SQLite's write lock is held for one UPDATE; on
PostgreSQL the thread takes its own connection from the pool), and each waits for the database
at most one beat's interval: a beat that cannot be written is skipped, never queued behind the
loop's transactions, and the loop itself reports an outage.
"""

from __future__ import annotations

import logging
import os
import threading

from nbsched.clock import SYSTEM_CLOCK, Clock
from nbsched.errors import DatabaseError
from nbsched.store import SqlStore
from nbsched.store.liveness import HOST
from nbsched.store.records import RunnerRecord

log = logging.getLogger("nbsched.runner")

STALL_LEASES = 10  # a loop that has not turned for this many leases is presumed wedged ...
STALL_FLOOR = 120.0  # ... and for at least this many seconds
STOP_WAIT = 2.0  # seconds a stopping runner waits for a beat in flight


class Heartbeat:
    def __init__(
        self,
        store: SqlStore,
        runner_id: str,
        kind: str,
        lease: float,
        clock: Clock = SYSTEM_CLOCK,
        *,
        stall_after: float | None = None,
    ) -> None:
        self.store = store
        self.runner_id = runner_id
        self.kind = kind
        self.lease = lease
        self.clock = clock
        self.interval = lease / 4
        self.stall_after = stall_after or max(STALL_FLOOR, STALL_LEASES * lease)
        self._turned_at = clock.monotonic()
        self._silent = False  # stopped beating for a loop that does not turn
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat_until_stopped, name="nbsched-heartbeat", daemon=True)

    def start(self) -> None:
        """Register the runner (its first beat), then beat every quarter lease."""
        self.turned()
        self.store.register_runner(self.runner_id, self.kind, os.getpid(), self.lease)
        self._thread.start()

    def stop(self) -> None:
        """No beat after this one returns, but for one in flight, which a database that is away
        may hold up: not waited for long (the thread dies with the process)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=STOP_WAIT)

    def turned(self) -> None:
        """The loop turned: it is alive. Called by the loop's thread, cheaply, at every turn."""
        self._turned_at = self.clock.monotonic()

    def _beat_until_stopped(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()

    def beat(self) -> None:
        still = self.clock.monotonic() - self._turned_at
        if still > self.stall_after:
            if not self._silent:
                self._silent = True
                log.error(
                    "runner %s: its loop has not turned for %.0fs; no longer heartbeating, so other runners "
                    "take its tasks back after its lease",
                    self.runner_id,
                    still,
                )
            return
        if self._silent:
            self._silent = False
            log.warning("runner %s: its loop turns again; heartbeating again", self.runner_id)
        try:
            with self.store.patience.patient(self.interval):
                if not self.store.heartbeat(self.runner_id) and not self._stop.is_set():  # presumed dead: anew
                    log.warning("runner %s was presumed dead by another runner; re-registering", self.runner_id)
                    self.store.register_runner(self.runner_id, self.kind, os.getpid(), self.lease)
        except DatabaseError:
            pass  # away or busy past this beat: the next one tries again, and the loop reports an outage
        except Exception:  # a bug must not end the heartbeat silently, nor the runner's process
            log.exception("runner %s: heartbeat failed", self.runner_id)


def process_alive(runner: RunnerRecord) -> bool:
    """Whether a runner that stopped heartbeating still has its process: on this machine, the
    same process (not a later one given its pid), not a zombie. A paused (SIGSTOP, a suspended
    VM) or starved runner is alive: the tries taken from it spend no retry. The runners of the
    process asking are not vouched for by it: their heartbeats stopped with them."""
    import psutil

    if runner.host != HOST or runner.pid == os.getpid():
        return False
    try:
        process = psutil.Process(runner.pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        # it registered after it started; a process started later only reuses the pid
        return bool(process.create_time() <= runner.started_at.timestamp() + 1)
    except psutil.Error:
        return False
