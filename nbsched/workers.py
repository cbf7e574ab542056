"""Which executor a name means, and how many workers it may run: checked where a setting is read
(``Config``, the server extension's traits), before anything starts."""

from __future__ import annotations

import resource

from nbsched.errors import ConfigError

# A worker is a kernel process running a task and, with the pool, one waiting (23-38 MiB each):
# 256 workers are 512 kernels, 12-19 GiB, more than one machine runs well; beyond, a Dask cluster.
MAX_WORKERS = 256
# open files of nbsched's own process for one worker: its task's client (5 ZeroMQ sockets and
# their mailboxes) and its waiting kernel's manager (a ZeroMQ context, the control socket):
# 23-25 measured, 32 allowed; and what the process needs besides (database, logs, imports)
FILES_PER_WORKER = 32
FILES_BESIDES = 128


def max_workers() -> tuple[int, str]:
    """The most workers, and why: as many as this process can hold open files for (its hard
    limit, ``ulimit -Hn``; the soft one is raised as far as needed), never more than
    ``MAX_WORKERS``. Beyond its open files, libzmq aborts the process (SIGABRT, "Too many open
    files (src/epoll.cpp:38)") when a kernel's socket cannot be made."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY or (hard - FILES_BESIDES) // FILES_PER_WORKER >= MAX_WORKERS:
        return MAX_WORKERS, "each runs a kernel and has one waiting; for more, use a Dask cluster"
    return (
        max(1, (hard - FILES_BESIDES) // FILES_PER_WORKER),
        f"this process may open {hard} files (ulimit -Hn), {FILES_PER_WORKER} a worker",
    )


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
