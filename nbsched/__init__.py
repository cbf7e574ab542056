"""nbsched: run and schedule pipelines of Jupyter notebooks.

Inside a task notebook::

    import nbsched
    nbsched.record("rows", len(df))      # downstream tasks read upstream["this_task"]["rows"]
    nbsched.branch(["big_report"])       # only these direct downstream tasks run

This module stays import-light: notebooks and the CLI import it, so heavy
modules (papermill, SQLAlchemy) load only when a function needs them.
"""

from __future__ import annotations

from nbsched._record import branch, record
from nbsched.errors import NbschedError

__all__ = ["NbschedError", "branch", "load_ipython_extension", "record", "__version__"]
__version__ = "0.1.0"


def load_ipython_extension(ipython: object) -> None:
    """``%load_ext nbsched``: the ``%nbsched`` and ``%%nbsched_pipeline`` magics."""
    from nbsched.magics import load_ipython_extension as load

    load(ipython)
