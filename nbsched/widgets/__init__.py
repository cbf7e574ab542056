"""ipywidgets for notebooks: the run-history panel (``%nbsched panel``)."""

from nbsched.widgets.panel import RunPanel

__all__ = ["RunPanel"]
