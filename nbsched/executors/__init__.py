"""Executors run task notebooks: ``local`` (kernels on this machine) and ``dask`` (a Dask cluster)."""

from __future__ import annotations

from nbsched.errors import ConfigError
from nbsched.executors.base import Executor, Finished, TaskAttempt
from nbsched.executors.local import MAX_WORKERS, LocalExecutor, max_workers

__all__ = ["Executor", "Finished", "LocalExecutor", "TaskAttempt", "check_workers", "executor_address", "make_executor"]

KINDS = "local, dask (a Dask LocalCluster here), dask://HOST:PORT (an existing Dask cluster)"


def executor_address(name: str) -> tuple[str, str | None]:
    """``(kind, address)`` of an executor name, checked but not started: ``local``, ``dask``
    (a LocalCluster) or ``dask://HOST:PORT`` (``tcp://HOST:PORT`` for Dask's scheduler)."""
    if name in ("local", "dask"):
        return name, None
    scheme, sep, rest = name.partition("://")
    if sep and scheme in ("dask", "tcp", "tls") and rest:
        return "dask", f"{'tcp' if scheme == 'dask' else scheme}://{rest}"
    raise ConfigError(f"executor {name!r}: unknown (use {KINDS})")


def check_workers(executor: str, workers: int) -> None:
    """A worker count the executor can run (ConfigError otherwise): local kernels, as many as
    ``max_workers`` says; a Dask cluster started here, at most ``MAX_WORKERS`` processes; an
    existing Dask cluster bounds its own."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers {workers!r}: expected a whole number >= 1")
    kind, address = executor_address(executor)
    if kind == "local" and workers > (most := max_workers())[0]:
        raise ConfigError(f"workers {workers}: at most {most[0]} with local kernels ({most[1]})")
    if kind == "dask" and address is None and workers > MAX_WORKERS:
        raise ConfigError(
            f"workers {workers}: at most {MAX_WORKERS} Dask worker processes started here "
            "(for more, use an existing cluster: dask://HOST:PORT)"
        )


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
