"""nbsched: run and schedule pipelines of Jupyter notebooks.

Inside a task notebook::

    import nbsched
    nbsched.record("rows", len(df))      # downstream tasks read upstream["this_task"]["rows"]
    nbsched.branch(["big_report"])       # only these direct downstream tasks run

From Python (a script, or a notebook of the project)::

    run = nbsched.run("pipeline.yaml", params={"region": "us"})   # here and now, to its end
    run.state, run.tasks["report"].outputs
    queued = nbsched.trigger("daily-sales")                       # for `nbsched serve` to execute

Both use the project's database as ``%nbsched`` does: ``NBSCHED_HOME`` / ``NBSCHED_DB_URL`` /
``NBSCHED_RUNS_DIR``, else the ``.nbsched/`` folder at or above the current one.

This module stays import-light: notebooks and the CLI import it, so heavy
modules (papermill, SQLAlchemy) load only when a function needs them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from nbsched._record import branch, record
from nbsched.errors import NbschedError

if TYPE_CHECKING:
    from pathlib import Path

    from nbsched.service import Service
    from nbsched.views import RunView

_T = TypeVar("_T")
__all__ = ["NbschedError", "__version__", "branch", "load_ipython_extension", "record", "run", "trigger"]
__version__ = "0.1.0"


def run(path: str | Path, params: Mapping[str, Any] | None = None, *, workers: int | None = None) -> RunView:
    """Run the pipeline of ``path`` (a pipeline.yaml, a folder holding one, or a notebook) here
    and now, with ``params`` overriding its parameters; returns the finished run."""
    return _with_service(lambda service: service.run_pipeline(path, params=params, workers=workers))


def trigger(pipeline: str, params: Mapping[str, Any] | None = None) -> RunView:
    """Queue a run of the registered ``pipeline`` for ``nbsched serve`` (or a Jupyter server with
    the extension) to execute; returns the queued run."""
    return _with_service(lambda service: service.get_run(service.trigger(pipeline, params)))


def load_ipython_extension(ipython: object) -> None:
    """``%load_ext nbsched``: the ``%nbsched`` and ``%%nbsched_pipeline`` magics."""
    from nbsched.magics import load_ipython_extension as load

    load(ipython)


def _with_service(call: Callable[[Service], _T]) -> _T:
    """``call`` with the project's service, closed after it."""
    from pathlib import Path

    from nbsched.config import Config
    from nbsched.service import Service

    service = Service(Config.discover(Path.cwd()))
    try:
        return call(service)
    finally:
        service.close()
