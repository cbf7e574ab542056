"""A runner's heartbeat thread against the real store (SQLite, and the real PostgreSQL): it beats
while the loop turns or merely stalls, stops for a loop that stopped turning, starts again with
it, and registers the runner again after another runner presumed it dead."""

from __future__ import annotations

import logging
import time

from conftest import wait_for
from sqlalchemy import delete, select

from nbsched.heartbeat import Heartbeat
from nbsched.store import SqlStore
from nbsched.store.models import RunnerRow


def _beat_at(store: SqlStore) -> object:
    with store._session() as s:
        return s.scalar(select(RunnerRow.heartbeat_at).where(RunnerRow.id == "r"))


def _beats_for(store: SqlStore, seconds: float, heartbeat: Heartbeat | None = None) -> bool:
    """Whether the runner's heartbeat moved within ``seconds`` (the loop turning meanwhile, if given)."""
    first = _beat_at(store)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if heartbeat is not None:
            heartbeat.turned()
        time.sleep(0.05)
        if _beat_at(store) != first:
            return True
    return False


def test_a_heartbeat_stops_for_a_loop_that_stopped_turning_and_starts_again_with_it(db_url, caplog):
    store = SqlStore(db_url)
    heartbeat = Heartbeat(store, "r", "serve", lease=0.4, stall_after=1.0)  # beats every 0.1 s
    try:
        heartbeat.start()
        assert _beats_for(store, 5, heartbeat)
        with caplog.at_level(logging.WARNING, logger="nbsched.runner"):
            time.sleep(0.5)  # a stall shorter than the bound, but longer than the lease: still beating
            assert _beats_for(store, 0.4)
            wait_for(lambda: "its loop has not turned for" in caplog.text, 10, "the heartbeat to give up")
            assert not _beats_for(store, 1.0)  # silent: the others will take its tries back
            assert _beats_for(store, 5, heartbeat)  # the loop turns again, and so does the heartbeat
            assert "its loop turns again; heartbeating again" in caplog.text

            with store._write() as s, s.begin():  # another runner presumed it dead
                s.execute(delete(RunnerRow).where(RunnerRow.id == "r"))
            wait_for(lambda: (heartbeat.turned(), _beat_at(store))[1] is not None, 5, "it to register again")
            assert "runner r was presumed dead by another runner; re-registering" in caplog.text
        heartbeat.stop()
        assert not _beats_for(store, 0.5, heartbeat)  # stopped with its runner
    finally:
        heartbeat.stop()
        store.close()
