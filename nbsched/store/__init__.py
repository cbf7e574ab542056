"""Persistence of pipelines, schedules, runs and task runs (SQLAlchemy 2)."""

from __future__ import annotations

from nbsched.store.records import (
    ClaimedTask,
    PipelineRecord,
    RunRecord,
    ScheduleRecord,
    TaskRunRecord,
    TaskTryRecord,
    TaskVersion,
)
from nbsched.store.sql import SqlStore

__all__ = [
    "ClaimedTask",
    "PipelineRecord",
    "RunRecord",
    "ScheduleRecord",
    "SqlStore",
    "TaskRunRecord",
    "TaskTryRecord",
    "TaskVersion",
]
