"""The outbox of notifications: written in the transaction of the state change that causes
them (``add_notices``), claimed by one sender at a time under a lease (a sender that dies
leaves its claims to expire), and marked sent, or given another attempt later, or failed."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from sqlalchemy import Update, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from nbsched.clock import Clock
from nbsched.notices import Notice
from nbsched.states import NoticeState, RunState, TaskState
from nbsched.store.liveness import try_of
from nbsched.store.locks import changed
from nbsched.store.models import NoticeRow, RunRow, TaskRunRow
from nbsched.store.records import NoticeRecord
from nbsched.store.retry import retried

MAX_ANSWER = 1000  # characters of a target's answer kept


class OutboxStore:
    """Mixin of ``SqlStore``: needs ``_session``, ``_write`` and ``clock``."""

    _session: sessionmaker[Session]
    _write: sessionmaker[Session]
    clock: Clock
    # called when this process writes notifications: its senders look now rather than at their
    # next poll (each is a quick wake-up: it must not block the writer)
    notice_listeners: list[Callable[[], None]]

    def _add_notices(
        self, s: Session, run_id: str | None, notices: Iterable[Notice], pipeline: str | None = None
    ) -> None:
        """Within the transaction of a state change: its notifications, due now."""
        now = self.clock.now()
        for n in notices:
            s.add(
                NoticeRow(
                    run_id=run_id,
                    pipeline=pipeline,
                    detail=n.detail,
                    task=n.task,
                    try_number=n.try_number,
                    event=n.event,
                    target=n.target,
                    attach_report=n.attach_report,
                    title=n.title,
                    body=n.body,
                    state=NoticeState.PENDING,
                    attempts=0,
                    next_attempt_at=now,
                    created_at=now,
                )
            )
            for listener in self.notice_listeners:
                listener()

    @retried
    def add_notices(self, run_id: str, notices: Iterable[Notice]) -> None:
        """Notifications of an event of a run that changes no state."""
        with self._write() as s, s.begin():
            self._add_notices(s, run_id, notices)

    @retried
    def add_try_notices(
        self, run_id: str, task: str, *, owner: str, try_number: int, notices: Iterable[Notice]
    ) -> bool:
        """Notifications of a running try's event that changes no state (past its sla), fenced as
        the try's other writes: a try taken from a paused runner sends nothing when it wakes."""
        with self._write() as s, s.begin():
            held = select(TaskRunRow.id).where(
                *try_of(run_id, task, owner, try_number), TaskRunRow.state == TaskState.RUNNING
            )
            if s.scalar(held.with_for_update()) is None:
                return False
            self._add_notices(s, run_id, notices)
            return True

    @retried
    def run_sla_missed(self, run_id: str, notices: Iterable[Notice]) -> bool:
        """Mark a running run as past its sla, with the notices that says so: once, whichever of
        several runners looking at it gets there first."""
        with self._write() as s, s.begin():
            marked = changed(
                s,
                update(RunRow)
                .where(RunRow.id == run_id, RunRow.state == RunState.RUNNING, RunRow.sla_missed_at.is_(None))
                .values(sla_missed_at=self.clock.now()),
            )
            if marked:
                self._add_notices(s, run_id, notices)
            return marked == 1

    @retried
    def claim_notices(
        self, sender: str, limit: int, lease: float, run_ids: Iterable[str] | None = None
    ) -> list[NoticeRecord]:
        """Atomically take up to ``limit`` notifications due now that no live claim holds
        (PostgreSQL: FOR UPDATE SKIP LOCKED; SQLite: the write lock of BEGIN IMMEDIATE), each for
        ``lease`` seconds; a sender renews each claim as it comes to it (``renew_notice``)."""
        now = self.clock.now()
        free = or_(NoticeRow.claimed_by.is_(None), NoticeRow.lease_until < now)
        q = (
            select(NoticeRow)
            .where(NoticeRow.state == NoticeState.PENDING, NoticeRow.next_attempt_at <= now, free)
            .order_by(NoticeRow.next_attempt_at, NoticeRow.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        if run_ids is not None:
            q = q.where(NoticeRow.run_id.in_(list(run_ids)))
        claimed: list[NoticeRecord] = []
        with self._write() as s, s.begin():
            for row in s.scalars(q).all():
                took = changed(
                    s,
                    update(NoticeRow)
                    .where(NoticeRow.id == row.id, NoticeRow.state == NoticeState.PENDING, free)
                    .values(claimed_by=sender, lease_until=now + timedelta(seconds=lease)),
                )
                if took:
                    claimed.append(_record(row))
        return claimed

    @retried
    def renew_notice(self, notice_id: int, sender: str, lease: float) -> bool:
        """Hold a claim for ``lease`` seconds more, as its delivery starts; False when the claim
        expired and another sender took it (then it sends it, not this one)."""
        until = self.clock.now() + timedelta(seconds=lease)
        with self._write() as s, s.begin():
            return changed(s, _held(notice_id, sender).values(lease_until=until)) == 1

    @retried
    def notice_sent(self, notice_id: int, sender: str, answer: str) -> bool:
        now = self.clock.now()
        with self._write() as s, s.begin():
            return (
                changed(
                    s,
                    _held(notice_id, sender).values(
                        state=NoticeState.SENT,
                        attempts=NoticeRow.attempts + 1,
                        answer=answer[:MAX_ANSWER],
                        sent_at=now,
                        claimed_by=None,
                        lease_until=None,
                    ),
                )
                == 1
            )

    @retried
    def notice_not_sent(self, notice_id: int, sender: str, answer: str, retry_at: datetime | None) -> bool:
        """A failed attempt: another at ``retry_at``, or (None) no more: failed."""
        with self._write() as s, s.begin():
            values = {
                "attempts": NoticeRow.attempts + 1,
                "answer": answer[:MAX_ANSWER],
                "claimed_by": None,
                "lease_until": None,
            }
            if retry_at is None:
                values["state"] = NoticeState.FAILED
            else:
                values["next_attempt_at"] = retry_at
            return changed(s, _held(notice_id, sender).values(**values)) == 1

    @retried
    def release_notices(self, sender: str, answer: str) -> int:
        """Give back every notification ``sender`` holds (it stops): due for the next sender now,
        not when the claims expire. One never tried says ``answer``."""
        with self._write() as s, s.begin():
            return changed(
                s,
                update(NoticeRow)
                .where(NoticeRow.claimed_by == sender, NoticeRow.state == NoticeState.PENDING)
                .values(claimed_by=None, lease_until=None, answer=func.coalesce(NoticeRow.answer, answer)),
            )

    @retried
    def list_notices(self, *, run_id: str | None = None, limit: int = 100) -> list[NoticeRecord]:
        """The newest notifications first (of one run, with ``run_id``), each with its pipeline
        (a run's, for the events of a run)."""
        q = (
            select(NoticeRow, RunRow.pipeline)
            .outerjoin(RunRow, RunRow.id == NoticeRow.run_id)
            .order_by(NoticeRow.created_at.desc(), NoticeRow.id.desc())
            .limit(limit)
        )
        if run_id is not None:
            q = q.where(NoticeRow.run_id == run_id)
        with self._session() as s:
            return [_record(row, pipeline) for row, pipeline in s.execute(q).all()]

    @retried
    def next_notice_at(self, run_ids: Iterable[str] | None = None) -> datetime | None:
        """When the next pending notification no sender holds is due (of ``run_ids``, when given)."""
        free = or_(NoticeRow.claimed_by.is_(None), NoticeRow.lease_until < self.clock.now())
        q = select(func.min(NoticeRow.next_attempt_at)).where(NoticeRow.state == NoticeState.PENDING, free)
        if run_ids is not None:
            q = q.where(NoticeRow.run_id.in_(list(run_ids)))
        with self._session() as s:
            return s.scalar(q)


def _held(notice_id: int, sender: str) -> Update:
    return update(NoticeRow).where(
        NoticeRow.id == notice_id, NoticeRow.claimed_by == sender, NoticeRow.state == NoticeState.PENDING
    )


def _record(row: NoticeRow, run_pipeline: str | None = None) -> NoticeRecord:
    return NoticeRecord(
        id=row.id,
        run_id=row.run_id,
        pipeline=row.pipeline or run_pipeline,
        detail=row.detail,
        task=row.task,
        try_number=row.try_number,
        event=row.event,
        target=row.target,
        attach_report=row.attach_report,
        title=row.title,
        body=row.body,
        state=row.state,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        answer=row.answer,
        created_at=row.created_at,
        sent_at=row.sent_at,
        claimed_by=row.claimed_by,
        lease_until=row.lease_until,
    )
