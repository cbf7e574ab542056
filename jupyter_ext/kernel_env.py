"""Environment variables for the kernels a Jupyter server starts, given through its kernel
manager: each start gets them in its ``env=`` (as jupyter-server's session manager passes a
kernel's own variables), and the server's ``os.environ`` stays as it is."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from jupyter_client.multikernelmanager import MultiKernelManager


class KernelEnvironment:
    """Adds ``variables`` to the environment of every kernel ``manager`` starts, until closed."""

    def __init__(self, manager: MultiKernelManager, variables: Mapping[str, str]) -> None:
        self.manager, self.variables = manager, dict(variables)
        start: Callable[..., Awaitable[str]] = manager.start_kernel  # type: ignore[assignment]  # async in a server
        update = manager.update_env

        async def start_kernel(*args: Any, **kwargs: Any) -> str:
            # without env= a kernel inherits the server's environment: that, plus ours
            kwargs["env"] = {**(kwargs.get("env") or os.environ), **self.variables}
            return await start(*args, **kwargs)

        def update_env(*, kernel_id: str, env: dict[str, str]) -> None:
            # a session renamed hands its kernel the server's environment again (for its restarts)
            update(kernel_id=kernel_id, env={**env, **self.variables})

        manager.start_kernel = start_kernel  # type: ignore[method-assign, assignment]
        manager.update_env = update_env  # type: ignore[method-assign]

    def close(self) -> None:
        """Kernels started from now on get the server's environment alone."""
        for method in ("start_kernel", "update_env"):
            vars(self.manager).pop(method, None)
