"""nbsched inside Jupyter: a server extension with a REST API, and the scheduler and runner
running in the background of the server."""

from __future__ import annotations

from typing import Any


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from jupyter_ext.app import NbschedApp

    return [{"module": "jupyter_ext", "app": NbschedApp}]
