"""Environment variables for the kernels a Jupyter server starts, given through its kernel
manager: each start gets them in its ``env=`` (as jupyter-server's session manager passes a
kernel's own variables), and the server's ``os.environ`` stays as it is."""

from __future__ import annotations

import os
from typing import Any, Awaitable, Callable, Mapping

from jupyter_client.multikernelmanager import MultiKernelManager


class KernelEnvironment:
    """Adds ``variables`` to the environment of every kernel ``manager`` starts, until closed."""

    def __init__(self, manager: MultiKernelManager, variables: Mapping[str, str]) -> None:
        self.manager, self.variables = manager, dict(variables)
        start: Callable[..., Awaitable[str]] = manager.start_kernel  # type: ignore[assignment]  # async in a server

        async def start_kernel(*args: Any, **kwargs: Any) -> str:
            # without env= a kernel inherits the server's environment: that, plus ours
            kwargs["env"] = {**(kwargs.get("env") or os.environ), **self.variables}
            return await start(*args, **kwargs)

        manager.start_kernel = start_kernel  # type: ignore[method-assign, assignment]

    def close(self) -> None:
        """Kernels started from now on get the server's environment alone."""
        vars(self.manager).pop("start_kernel", None)
