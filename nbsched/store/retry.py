"""Riding out a lost or busy database: each store transaction is retried with backoff (tenacity),
as Airflow's ``run_with_db_retries`` and APScheduler's data stores do.

A transaction that failed because the database went away (a refused or cut connection, a server
starting up or shutting down), was busy (SQLite's write lock held past its busy timeout, a
PostgreSQL serialization failure or deadlock) or, for the patient, had a full disk, is run again,
from its start, after a wait that grows to 2 s. Daemons and foreground runs are patient (they wait
for as long as it takes, keeping their kernels running); one-off commands and REST requests wait
a bounded time and then raise ``DatabaseUnavailable``. Any other database error (a corrupted or
read-only file, a missing database, bad credentials) is a one-line ``DatabaseError`` at once.
Patient callers log one line when the database goes and one when it is back.

A database server that this process never reached, and nbsched never reached from this account
before (``reached.py``), is most likely a wrong URL: a caller that would wait a bounded time waits
``FIRST_CONTACT`` seconds at most (each connection too), and its error says so. Daemons still wait
for it (they may start before their database).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

import tenacity
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DatabaseError as SADatabaseError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from nbsched.clock import SYSTEM_CLOCK, Clock
from nbsched.errors import DatabaseError, DatabaseUnavailable
from nbsched.store.reached import ReachedServers, server_of

log = logging.getLogger("nbsched.store")

T = TypeVar("T")

OUTAGE, BUSY, FULL = "unreachable", "busy", "full"
# a PostgreSQL server that answered, but will not take us: no waiting makes that right
_REFUSED = ("does not exist", "authentication failed", "pg_hba.conf", "permission denied", "password")
FIRST_CONTACT = 3.0  # seconds a bounded caller waits for a database server never reached
_RETRY_SQLSTATES = {"40001": BUSY, "40P01": BUSY, "55P03": BUSY}  # serialization, deadlock, lock timeout


def kind_of(exc: BaseException, dialect: str) -> str | None:
    """OUTAGE, BUSY or FULL when waiting may help; None when it cannot."""
    if not isinstance(exc, DBAPIError):
        return None
    if exc.connection_invalidated:
        return OUTAGE
    if not isinstance(exc, (OperationalError, InterfaceError)):
        return None
    text = str(exc.orig).lower()
    if dialect == "sqlite":
        if "locked" in text or "busy" in text:
            return BUSY
        return FULL if "disk is full" in text else None
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if sqlstate in _RETRY_SQLSTATES:
        return _RETRY_SQLSTATES[sqlstate]
    return None if any(word in text for word in _REFUSED) else OUTAGE


def reason(exc: BaseException) -> str:
    """The driver's own message, on one line."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


class Patience:
    """How long this store's callers wait for a database that is down or busy: ``seconds`` by
    default, None (forever) inside ``patient()`` (per thread: a Jupyter server's daemon thread is
    patient, its request threads are not)."""

    def __init__(
        self,
        engine: Engine,
        seconds: float | None,
        clock: Clock = SYSTEM_CLOCK,
        *,
        prepare: Callable[[], None] | None = None,
        reached: ReachedServers | None = None,
    ) -> None:
        self.shown_url = engine.url.render_as_string(hide_password=True)
        self.clock = clock
        self.dialect = engine.dialect.name
        self.seconds = seconds
        # the database's schema is made current by the first call that reaches it
        self._prepare, self._preparing = prepare, threading.Lock()
        self._server, self._reached = server_of(engine.url), reached or ReachedServers(None)
        self._known = self._server is None  # reached by this process (a file always is)
        if not self._known and engine.dialect.name == "postgresql" and "connect_timeout" not in str(engine.url):
            event.listen(engine, "do_connect", self._bound_connect)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._down: tuple[str, float] | None = None  # (kind, since when: monotonic)
        self.back_at = float("-inf")  # when the database last came back (the clock's monotonic, as runners read it)

    @contextmanager
    def patient(
        self, seconds: float | None = None, *, while_waiting: Callable[[], None] | None = None
    ) -> Iterator[None]:
        """This thread's calls wait ``seconds`` (None: forever); ``while_waiting`` is called
        before each wait (a runner keeps its tasks' timeouts while the database is away)."""
        before = (getattr(self._local, "seconds", self.seconds), getattr(self._local, "while_waiting", None))
        self._local.seconds, self._local.while_waiting = seconds, while_waiting
        try:
            yield
        finally:
            self._local.seconds, self._local.while_waiting = before

    @property
    def waiting(self) -> float | None:
        return getattr(self._local, "seconds", self.seconds)

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` (one transaction), again while the database is down or busy."""
        seconds = self.waiting
        try:  # the usual case, without the retry machinery (it costs 0.1 ms a call)
            result = self._call(fn, *args, **kwargs)
        except DBAPIError as exc:
            if not self._ours(exc):
                raise
            if seconds is not None and not self._ever_reached():
                seconds = min(seconds, FIRST_CONTACT)
            if not self._worth_waiting(exc, seconds is None):
                raise self._error(exc, seconds) from None
        else:
            if self._down is not None:
                self._back(seconds is None)
            return result
        return self._retry(seconds, fn, *args, **kwargs)

    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._prepare is not None:
            with self._preparing:  # one thread at a time tries (one connection, not one wait)
                if self._prepare is not None:
                    self._prepare()
                    self._prepare = None
        if not self._known:
            self._known = True
            if self._server is not None:
                self._reached.add(self._server)
        return fn(*args, **kwargs)

    def _ever_reached(self) -> bool:
        return self._known or (self._server is not None and self._server in self._reached)

    def _bound_connect(self, dialect: Any, record: Any, cargs: Any, cparams: dict[str, Any]) -> None:
        """Until the server is known, a connection that does not answer gives up in FIRST_CONTACT."""
        if not self._ever_reached():
            cparams["connect_timeout"] = int(FIRST_CONTACT)

    def _retry(self, seconds: float | None, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        patient = seconds is None
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(lambda exc: self._worth_waiting(exc, patient)),
            stop=tenacity.stop_never if seconds is None else tenacity.stop_after_delay(seconds),
            wait=tenacity.wait_exponential_jitter(multiplier=0.05, max=2.0, jitter=0.2),
            before_sleep=lambda state: self._waiting(state, patient),
            sleep=self._sleep,
            reraise=True,
        )
        try:
            result: T = retrying(self._call, fn, *args, **kwargs)
        except DBAPIError as exc:
            if not self._ours(exc):
                raise
            raise self._error(exc, seconds) from None
        if self._down is not None:
            self._back(patient)
        return result

    @staticmethod
    def _ours(exc: DBAPIError) -> bool:
        """An error of the database's state, told as one line; integrity and programming errors
        are the caller's to handle (or a bug, with its traceback)."""
        return (
            exc.connection_invalidated
            or isinstance(exc, (OperationalError, InterfaceError))
            or type(exc) is SADatabaseError
        )

    def _sleep(self, seconds: float) -> None:
        hook = getattr(self._local, "while_waiting", None)
        if hook is not None:
            hook()
        time.sleep(seconds)

    def _worth_waiting(self, exc: BaseException, patient: bool) -> bool:
        kind = kind_of(exc, self.dialect)
        return kind in (OUTAGE, BUSY) or (kind == FULL and patient)

    def _waiting(self, state: tenacity.RetryCallState, patient: bool) -> None:
        exc = state.outcome.exception() if state.outcome else None
        if exc is None:
            return
        kind, waited = kind_of(exc, self.dialect), state.seconds_since_start or 0.0
        if kind is None or (kind == BUSY and waited < 10):
            return  # a busy SQLite file for a moment is normal: no line for it
        with self._lock:
            if self._down is not None:
                return
            self._down = (kind, self.clock.monotonic() - waited)
        level = logging.WARNING if patient else logging.INFO
        log.log(level, "database %s %s (%s); retrying", self.shown_url, kind, reason(exc))

    def _back(self, patient: bool) -> None:
        with self._lock:
            if self._down is None:
                return
            (kind, since), self._down = self._down, None
            self.back_at = self.clock.monotonic()
        what = "reachable again" if kind == OUTAGE else "writable again"
        log.log(
            logging.WARNING if patient else logging.INFO,
            "database %s %s after %.1fs",
            self.shown_url,
            what,
            self.back_at - since,
        )

    def _error(self, exc: BaseException, seconds: float | None) -> DatabaseError:
        kind = kind_of(exc, self.dialect)
        if kind in (OUTAGE, BUSY) and seconds is not None:
            hint = "other processes hold its write lock" if kind == BUSY else "is it running?"
            if kind == OUTAGE and not self._ever_reached():
                hint = "never reached from this account: is the URL right?"
            return DatabaseUnavailable(f"database {self.shown_url}: {kind} for {seconds:g}s ({reason(exc)}); {hint}")
        if kind == FULL:
            return DatabaseUnavailable(f"database {self.shown_url}: the disk is full ({reason(exc)})")
        return DatabaseError(f"database {self.shown_url}: {reason(exc)}{self._why(exc)}")

    def _why(self, exc: BaseException) -> str:
        """SQLite's "unable to open database file" of a file on a read-only disk, said plainly."""
        import os
        from pathlib import Path

        if self.dialect != "sqlite" or "unable to open" not in reason(exc) or "///" not in self.shown_url:
            return ""
        folder = Path(self.shown_url.split("///", 1)[1]).parent
        return f" (its folder {folder} is read-only)" if folder.is_dir() and not os.access(folder, os.W_OK) else ""


class _Patient(Protocol):
    patience: Patience


def retried(method: Callable[..., T]) -> Callable[..., T]:
    """A store method that is one transaction, run under the store's ``Patience``."""
    from functools import wraps

    @wraps(method)
    def call(self: _Patient, *args: Any, **kwargs: Any) -> T:
        return self.patience.run(method, self, *args, **kwargs)

    return call
