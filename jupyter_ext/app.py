"""The ``nbsched`` server extension: configuration, wiring, and the background daemon.

It only configures and wires: the domain work is ``nbsched.service.Service``; the
scheduler and runner are the same ``Daemon`` that ``nbsched serve`` runs, in a worker
thread (``asyncio.to_thread``) so notebook execution never blocks the server's loop.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jupyter_server.extension.application import ExtensionApp
from traitlets import Bool, Float, Int, List, TraitError, Unicode, validate

from jupyter_ext.contract import Contract
from jupyter_ext.handlers import default_handlers
from jupyter_ext.kernel_env import KernelEnvironment
from nbsched.errors import DatabaseError

if TYPE_CHECKING:
    from nbsched.daemon import Daemon
    from nbsched.service import Service


START_WAIT = 3.0  # seconds the server's start waits for its database (then it starts without)


class NbschedApp(ExtensionApp):
    name = "nbsched"
    load_other_extensions = True

    db_url = Unicode(
        "", config=True, help="SQLAlchemy database URL; default: sqlite in .nbsched/ under the server's root_dir."
    )
    runs_dir = Unicode(
        "",
        config=True,
        help="Folder for output notebooks and reports; default: nbsched-runs under the server's "
        "root_dir (not hidden, so JupyterLab can open them).",
    )
    executor = Unicode(
        "local",
        config=True,
        help="Where tasks run: 'local' (kernels on this machine), 'dask' (a Dask LocalCluster "
        "started by the server) or 'dask://HOST:PORT' (an existing Dask cluster).",
    )
    workers = Int(0, config=True, help="Notebooks executed at once; 0: the number of cores.")
    kernel_pool = Bool(
        True, config=True, help="Local executor: start kernels ahead of need (each still used for one task)."
    )
    kernel_fork = Bool(
        True, config=True, help="Local executor: fork kernels from a process that has ipykernel imported."
    )
    kernel_preload = List(
        Unicode(),
        [],
        config=True,
        help="With kernel_fork: modules the fork server imports once for every kernel; what the run's notebooks "
        "import is added unless the list holds 'none'.",
    )
    scheduler_enabled = Bool(
        True, config=True, help="Fire schedules in this server (off: only execute runs queued by others)."
    )
    runner_enabled = Bool(
        True,
        config=True,
        help="Run the scheduler and runner in this server; off: only serve the API "
        "(an `nbsched serve` elsewhere executes the runs).",
    )
    notify_config = Unicode(
        "",
        config=True,
        help="The Apprise configuration file that defines the tags notify: rules name "
        "[default: NBSCHED_NOTIFY_CONFIG, else <root>/.nbsched/notify.yaml].",
    )
    public_url = Unicode(
        "",
        config=True,
        help="This server's URL as people open it, for the run report links in notifications "
        "[default: NBSCHED_PUBLIC_URL, else the report's file path].",
    )
    notify_allow = List(
        Unicode(),
        default_value=None,
        allow_none=True,
        config=True,
        help="What the notification URLs of a spec may reach: '*', schemes ('slack') or schemes and hosts "
        "('json://hooks.example.com', 'json://*.example.com'); loopback and link-local hosts only when listed "
        "themselves. Default: NBSCHED_NOTIFY_ALLOW, else none for specs registered over REST (the tags of the "
        "Apprise configuration file only) and every URL for those of the local command line.",
    )
    notify_timeout = Float(
        0.0,
        config=True,
        help="Seconds one notification's delivery may take, connect included (0: NBSCHED_NOTIFY_TIMEOUT, else 5).",
    )
    lease = Float(60.0, config=True, help="Seconds after which a silent runner is presumed dead.")
    poll = Float(1.0, config=True, help="Seconds between looks for changes made by other processes.")
    grace = Float(10.0, config=True, help="On shutdown, seconds running tasks may finish before being cancelled.")
    db_patience = Float(
        10.0,
        config=True,
        help="Seconds a REST request waits for a database that is down or busy before it answers "
        "503 (the background daemon waits until the database is back).",
    )

    # set by initialize_settings; None when a bad setting failed it (the server goes on without
    # the extension, and must still start and stop: SIGTERM left it running)
    service: Service | None = None
    daemon: Daemon | None = None
    _task: asyncio.Future[Any] | None = None
    _kernel_env: KernelEnvironment | None = None
    # a setting refused while the extension was linked leaves its default behind: the extension
    # then must not start with it (another database, say) as if nothing were wrong
    _linked = False
    root: Path  # the server's root folder: notebooks of pipelines registered through the API stay in it
    contract: Contract

    # Each check runs once every setting is in (traitlets holds cross-validation until the end of
    # loading a config), so workers is checked against the executor set beside it.
    @validate("executor")
    def _check_executor(self, proposal: Any) -> str:
        from nbsched.workers import check_workers, executor_address

        _refused(lambda: executor_address(proposal.value))
        if self.workers:
            _refused(lambda: check_workers(proposal.value, self.workers))
        return str(proposal.value)

    @validate("workers")
    def _check_workers(self, proposal: Any) -> int:
        from nbsched.workers import check_workers

        if proposal.value:  # 0: the executor's default
            _refused(lambda: check_workers(self.executor, proposal.value))
        return int(proposal.value)

    @validate("notify_allow")
    def _check_notify_allow(self, proposal: Any) -> list[str] | None:
        from nbsched.notify_policy import NotifyAllow

        if proposal.value is not None:
            _refused(lambda: NotifyAllow.parse(proposal.value, "notify_allow"))
        return proposal.value  # type: ignore[no-any-return]

    @validate("lease", "poll", "grace", "db_patience", "notify_timeout")
    def _check_seconds(self, proposal: Any) -> float:
        name, value = proposal.trait.name, proposal.value
        if not math.isfinite(value) or value < 0 or (value == 0 and name in ("lease", "poll")):
            bound = "> 0" if name in ("lease", "poll") else ">= 0"
            raise TraitError(f"NbschedApp.{name} {value!r}: expected a number of seconds {bound}")
        from nbsched.config import MAX_NOTIFY_TIMEOUT

        if name == "notify_timeout" and value > MAX_NOTIFY_TIMEOUT:
            raise TraitError(f"NbschedApp.notify_timeout {value!r}: at most {MAX_NOTIFY_TIMEOUT:g} seconds")
        return float(value)

    def _link_jupyter_server_extension(self, serverapp: Any) -> None:
        super()._link_jupyter_server_extension(serverapp)
        self._linked = True

    def initialize_settings(self) -> None:
        from nbsched import __version__
        from nbsched.config import Config, DaemonOptions
        from nbsched.service import Service

        if not self._linked:
            raise ValueError("NbschedApp: not started, its settings were refused (see above)")
        assert self.serverapp is not None  # linked
        self.root = Path(os.path.expanduser(self.serverapp.root_dir)).resolve()
        config = Config.resolve(
            project=self.root,
            db_url=self.db_url or None,
            runs_dir=self.runs_dir or None,
            workers=self.workers or None,
            executor=self.executor,
            kernel_pool=self.kernel_pool,
            kernel_fork=self.kernel_fork,
            kernel_preload=self.kernel_preload,
        )
        # a request waits this long for a database that is down, then answers 503; the daemon
        # thread waits as long as it takes
        notify_config = Path(os.path.expanduser(self.notify_config)) if self.notify_config else None
        config = replace(
            config,
            notify_config=notify_config,
            public_url=self.public_url or None,
            notify_allow=tuple(self.notify_allow) if self.notify_allow is not None else None,
            notify_allow_setting="NbschedApp.notify_allow",
            notify_timeout=self.notify_timeout or None,
        )
        self.service = Service(replace(config, db_patience=self.db_patience))
        self.contract = Contract.load(__version__)
        # magics and panels in the server's notebooks then use this server's database and
        # outputs, whatever they are configured to be
        self._kernel_env = KernelEnvironment(self.serverapp.kernel_manager, config.kernel_environment)
        try:  # open (and create) the database now: a bad URL is told at the start, in one line
            self.service.open_database(START_WAIT)
        except DatabaseError as exc:  # the server starts all the same: its daemon waits for the database
            self.log.warning("nbsched: %s; requests answer 503 until it is reachable", exc)
        self.daemon = (
            self.service.daemon(
                DaemonOptions(
                    workers=config.workers,
                    lease=self.lease,
                    poll=self.poll,
                    grace=self.grace,
                    scheduler=self.scheduler_enabled,
                )
            )
            if self.runner_enabled
            else None
        )
        # fires, run starts and ends go to the server's log
        nbsched_log = logging.getLogger("nbsched")
        nbsched_log.setLevel(logging.INFO)
        for handler in self.log.handlers:
            if handler not in nbsched_log.handlers:
                nbsched_log.addHandler(handler)
        self.log.info("nbsched: database %s, outputs in %s", config.db_url, config.runs_dir)

    def initialize_handlers(self) -> None:
        self.handlers.extend(default_handlers)

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        if self.daemon is not None and self._task is None:
            self._task = asyncio.ensure_future(asyncio.to_thread(self.daemon.serve))

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop_extension(self) -> None:
        if self._task is not None and self.daemon is not None:
            self.daemon.stop()
            await self._task
            self._task = None
        if self.service is not None:
            await asyncio.to_thread(self.service.close)
        if self._kernel_env is not None:
            self._kernel_env.close()


def _refused(check: Callable[[], object]) -> None:
    """``check()``, its ConfigError a TraitError naming the setting ("NbschedApp.workers 100000: ...")."""
    from nbsched.errors import ConfigError

    try:
        check()
    except ConfigError as exc:
        raise TraitError(f"NbschedApp.{exc}") from None
