"""The one place that reads the clocks; everything else takes time as a parameter, or a ``Clock``."""

from __future__ import annotations

import time
from datetime import datetime, timezone


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Clock:
    """The two clocks a runner and its store read: the wall clock for the times the database
    keeps, and the monotonic one for deadlines, which no change of the wall clock moves. Tests
    pass one they move by hand (``tests/fakes.py``)."""

    def now(self) -> datetime:
        return utcnow()

    def monotonic(self) -> float:
        return time.monotonic()


SYSTEM_CLOCK = Clock()
