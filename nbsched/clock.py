"""The one place that reads the wall clock; everything else takes time as a parameter."""

from __future__ import annotations

from datetime import datetime, timezone


def utcnow() -> datetime:
    return datetime.now(timezone.utc)
