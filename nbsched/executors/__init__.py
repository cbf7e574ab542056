"""Executors run task notebooks: ``local`` (threads on this machine)."""

from nbsched.executors.base import Executor, Finished, TaskAttempt
from nbsched.executors.local import LocalExecutor

__all__ = ["Executor", "Finished", "LocalExecutor", "TaskAttempt"]
