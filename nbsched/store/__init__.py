"""Persistence of pipelines, runs and task runs (SQLAlchemy 2)."""

from nbsched.store.sql import PipelineRecord, RunRecord, SqlStore, TaskRunRecord, utcnow

__all__ = ["PipelineRecord", "RunRecord", "SqlStore", "TaskRunRecord", "utcnow"]
