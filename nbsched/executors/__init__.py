"""Executors run task notebooks: ``local`` (kernels on this machine) and ``dask`` (a Dask cluster)."""

from __future__ import annotations

from nbsched.executors.base import Executor, Finished, TaskAttempt
from nbsched.executors.local import LocalExecutor
from nbsched.workers import executor_address

__all__ = ["Executor", "Finished", "LocalExecutor", "TaskAttempt", "make_executor"]


def make_executor(
    name: str, workers: int | None = None, *, pool: bool = False, fork: bool = False, preload: tuple[str, ...] = ()
) -> Executor:
    """Start the executor ``name`` names; ``workers``: tries at once (default: the cores here, or
    the worker threads of an existing Dask cluster). How local kernels start: ``pool``, ahead of
    need; ``fork``, forked from a process that has ipykernel and ``preload`` imported (Dask
    workers fork theirs too, from a fork server each)."""
    kind, address = executor_address(name)
    if kind == "local":
        return LocalExecutor(workers, pool=pool, fork=fork, preload=preload)
    from nbsched.executors.dask import DaskExecutor

    return DaskExecutor(address, workers, fork=fork)
