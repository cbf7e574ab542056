"""Sends the outbox's notifications through Apprise, in a thread of every process that runs
tasks (``nbsched serve``, the Jupyter server's daemon, a foreground ``nbsched run``).

Each notification is claimed by one sender under a lease (``store/outbox.py``), so two daemons
never both send it; one that cannot be delivered is tried again with backoff for a day, then
marked failed. Sending never blocks a run: it happens beside it, in its own thread, and each
delivery has a timeout (``targets.send``), so a claim needs a short lease only (renewed as its
delivery starts): one that dies leaves its claims for about a minute, and a sender that stops
gives its claims back at once, for the next to send.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from nbsched.clock import SYSTEM_CLOCK, Clock
from nbsched.errors import NbschedError
from nbsched.messages import DEFAULT_MISSED_BODY, DEFAULT_MISSED_TITLE, message_context, missed_context, render_message
from nbsched.notices import is_url
from nbsched.targets import DEFAULT_TIMEOUT, file_error, send, shown_target
from nbsched.views import RunView

if TYPE_CHECKING:
    from nbsched.store import SqlStore
    from nbsched.store.records import NoticeRecord

log = logging.getLogger("nbsched.notify")

BATCH = 20  # notifications claimed at once
MIN_TIMEOUT = 1.0  # seconds: a finishing sender starts no delivery with less time left
LEASE_MARGIN = 60.0  # seconds a claim holds past its delivery's timeout: its report, its writes, a short outage
GIVE_UP_AFTER = 24 * 3600.0  # a notification not delivered within a day is marked failed


def backoff(attempts: int) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones: 10 s, doubling, at most an hour."""
    return min(10.0 * 2.0 ** min(attempts - 1, 20), 3600.0)


@dataclass(frozen=True, kw_only=True)
class Delivery:
    """How notifications reach people: the Apprise configuration file that defines the tags,
    the public URL of the run reports (a Jupyter server's), and the report of a run as a file."""

    config_file: Path
    public_url: str | None = None
    report: Callable[[str], Path] | None = None  # run id -> its report page, written
    timeout: float = DEFAULT_TIMEOUT  # seconds one delivery may take
    # why a notification's URL may not be reached now (the operator's allow-list), None if it may
    refusal: Callable[[NoticeRecord], str | None] | None = None

    @property
    def lease(self) -> float:
        """Seconds a claim of one notification holds: its delivery and the writes around it."""
        return self.timeout + LEASE_MARGIN


class Sender:
    """Claims due notifications and sends them; ``start()`` does so in a thread of its own."""

    def __init__(
        self,
        store: SqlStore,
        delivery: Delivery,
        *,
        clock: Clock = SYSTEM_CLOCK,
        poll: float | None = 5.0,  # None: it sends when woken only (a daemon's loop wakes it)
        run_ids: list[str] | None = None,
    ) -> None:
        self.store = store
        self.delivery = delivery
        self.clock = clock
        self.poll = poll
        self.run_ids = run_ids  # a foreground run's sender sends its run's notifications only
        self.id = f"sender-{secrets.token_hex(6)}"
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._deadline: float | None = None  # finishing: by the monotonic clock, when it stops sending
        self._file_problem: str | None = None  # the configuration file's error, logged once
        self._reports: dict[str, Path] = {}  # of one batch: a run's report is written once for its notifications

    # -- the thread ----------------------------------------------------------------------------
    def start(self) -> Sender:
        self.store.notice_listeners.append(self.wake)
        self._thread = threading.Thread(target=self._loop, name="nbsched-sender", daemon=True)
        self._thread.start()
        return self

    def wake(self) -> None:
        """Look for new notifications now (a state change wrote some)."""
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop, waiting up to ``timeout`` for a delivery under way; the notifications it still
        holds are given back, for another sender to send now rather than when the claims expire."""
        if self.wake in self.store.notice_listeners:
            self.store.notice_listeners.remove(self.wake)
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._release(5.0 if self._deadline is None else max(0.5, self._deadline - self.clock.monotonic()))

    def finish(self, grace: float) -> None:
        """Send what is due for up to ``grace`` seconds, then stop (a foreground run's end): each
        delivery's timeout is cut to the time left; what is left, a daemon sends."""
        self._deadline = self.clock.monotonic() + grace
        self._wake.set()
        if self._thread is not None:
            self._thread.join(grace)
        self.stop(timeout=0)

    def _release(self, patience: float) -> None:
        from nbsched.errors import DatabaseUnavailable

        try:
            with self.store.patience.patient(patience):  # a database away: they wait for their claims to expire
                released = self.store.release_notices(self.id, "not sent yet: its sender stopped first")
        except DatabaseUnavailable as exc:
            log.warning("notifications held by %s: left until their claims expire: %s", self.id, exc)
            return
        if released:
            log.info("%d notification(s) not sent before %s stopped: left to another sender", released, self.id)

    def _loop(self) -> None:
        if self.poll is None:
            self._on_wake()
            return
        while not self._stop.is_set():
            try:
                with self.store.patient(while_waiting=self._stop_waiting):
                    wait = self._until_next()
                    if wait <= 0 and self.send_due(self.run_ids):  # claims write: only when something is due
                        wait = self._until_next()
                    elif wait <= 0:  # another sender holds what is due
                        wait = self.poll
                    if self._deadline is not None and (wait > 0 or self._out_of_time()):
                        return  # finishing: nothing more is due now, or no time is left for it
            except _Stopping:
                return
            except Exception as exc:  # noqa: BLE001 - a sender that stops would silence every pipeline
                log.warning("notifications: %s", exc)
                wait = self.poll
            self._wake.wait(wait)
            self._wake.clear()

    def _on_wake(self) -> None:
        """Without a poll of its own (a daemon's): sleep until woken, send what is due, again."""
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            try:
                with self.store.patient(while_waiting=self._stop_waiting):
                    while not self._stop.is_set() and self.send_due(self.run_ids):
                        pass
            except _Stopping:
                return
            except Exception as exc:  # noqa: BLE001 - a sender that stops would silence every pipeline
                log.warning("notifications: %s", exc)

    def _stop_waiting(self) -> None:
        if self._stop.is_set() or self._out_of_time():
            raise _Stopping

    def _out_of_time(self) -> bool:
        """Finishing, and too little time left for one more delivery."""
        return self._deadline is not None and self._deadline - self.clock.monotonic() < MIN_TIMEOUT

    def _timeout(self) -> float:
        """What one delivery may take now: its timeout, or the time left when finishing."""
        if self._deadline is None:
            return self.delivery.timeout
        return max(MIN_TIMEOUT, min(self.delivery.timeout, self._deadline - self.clock.monotonic()))

    def _until_next(self) -> float:
        due = self.store.next_notice_at(self.run_ids)
        if due is None or self.poll is None:
            return self.poll or 0.0
        return max(0.0, min(self.poll, (due - self.clock.now()).total_seconds()))

    def due(self) -> bool:
        """Whether a notification no sender holds is due now (one read)."""
        at = self.store.next_notice_at(self.run_ids)
        return at is not None and at <= self.clock.now()

    # -- one pass ------------------------------------------------------------------------------
    def send_due(self, run_ids: Iterable[str] | None = None) -> int:
        """Send what is due now (of ``run_ids``, when given); returns how many were tried. A
        claim is renewed as its delivery starts: one whose claim expired meanwhile (the ones
        before took long) another sender has taken, and sends."""
        claimed = self.store.claim_notices(self.id, BATCH, self.delivery.lease, run_ids)
        self._reports.clear()
        for i, notice in enumerate(claimed):
            if self._stop.is_set() or self._out_of_time():
                return i  # the rest are given back when it stops
            if self.store.renew_notice(notice.id, self.id, self.delivery.lease):
                self._send(notice)
        return len(claimed)

    def _report(self, run_id: str) -> Path:
        if run_id not in self._reports:
            assert self.delivery.report is not None
            self._reports[run_id] = self.delivery.report(run_id)
        return self._reports[run_id]

    def _send(self, notice: NoticeRecord) -> None:
        refused = self.delivery.refusal(notice) if self.delivery.refusal is not None else None
        if refused is not None:
            ok, answer = False, f"refused: {refused}"
        else:
            try:
                ok, answer = self.deliver(notice)
            except Exception as exc:  # noqa: BLE001 - a service or a report that breaks: noted, tried again
                ok, answer = False, f"{type(exc).__name__}: {exc}"
        answer = " ".join(answer.split()) or ("sent" if ok else "not sent")
        if ok:
            self.store.notice_sent(notice.id, self.id, answer)
            log.info(
                "notification %s (%s of run %s) sent to %s",
                notice.id,
                notice.event,
                notice.run_id,
                shown_target(notice.target),
            )
            return
        first, answer_shown = notice.created_at, answer
        retry_at = self.clock.now() + timedelta(seconds=backoff(notice.attempts + 1))
        give_up = refused is not None or retry_at - first > timedelta(seconds=GIVE_UP_AFTER)
        self.store.notice_not_sent(notice.id, self.id, answer, None if give_up else retry_at)
        if self._file_problem is not None:  # logged once already
            answer_shown = answer.replace(self._file_problem, "the configuration file's error (logged above)")
        log.warning(
            "notification %s (%s of run %s) to %s %s: %s",
            notice.id,
            notice.event,
            notice.run_id,
            shown_target(notice.target),
            "failed for good" if give_up else f"not sent, again at {retry_at:%H:%M:%S}",
            answer_shown,
        )

    def deliver(self, notice: NoticeRecord) -> tuple[bool, str]:
        """Render and send one notification; (delivered, what the services answered)."""
        file = self.delivery.config_file
        if not is_url(notice.target):
            self.tell_file_problem()
        if notice.run_id is None:  # an event without a run: a schedule's missed fires
            context = missed_context(notice.pipeline or "?", notice.detail or {})
            title, body = render_message(notice.title, notice.body, context, DEFAULT_MISSED_TITLE, DEFAULT_MISSED_BODY)
            return send(notice.target, title, body, file, timeout=self._timeout(), payload=notice.detail)
        run = RunView.of(self.store.get_run(notice.run_id, with_tries=True))
        report = self._report if self.delivery.report is not None else None
        link = report_url(run.id, replace(self.delivery, report=report))
        context = message_context(run, notice.event, notice.task or None, link, notice.try_number)
        title, body = render_message(notice.title, notice.body, context)
        attach = self._report(run.id) if notice.attach_report and report is not None else None
        return send(notice.target, title, body, file, timeout=self._timeout(), attach=attach, payload=run.to_json())

    def tell_file_problem(self) -> None:
        """The configuration file's error, logged once (and again once it changes): its tags
        wait, the URLs and the tags it still defines go on."""
        problem = file_error(self.delivery.config_file)
        if problem is not None and problem != self._file_problem:
            log.warning("notifications: %s (its tags that did not load wait until it is fixed)", problem)
        self._file_problem = problem


class _Stopping(Exception):
    pass


def report_url(run_id: str, delivery: Delivery) -> str:
    """The run's report: on the Jupyter server when its public URL is known, else its file."""
    if delivery.public_url:
        return f"{delivery.public_url.rstrip('/')}/nbsched/api/v1/runs/{run_id}/report"
    if delivery.report is not None:
        try:
            return str(delivery.report(run_id))
        except (NbschedError, OSError) as exc:
            return f"(no report: {exc})"
    return "(no report)"
