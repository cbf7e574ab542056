"""Where state and outputs live and how notebooks run: the one ``Config``, and the only place
nbsched reads its environment variables (``NBSCHED_HOME``, ``NBSCHED_DB_URL``,
``NBSCHED_RUNS_DIR``, ``NBSCHED_EXECUTOR``, ``NBSCHED_NOTIFY_CONFIG``, ``NBSCHED_PUBLIC_URL``,
``NBSCHED_NOTIFY_ALLOW``, ``NBSCHED_NOTIFY_TIMEOUT``, and ``XDG_CACHE_HOME`` for the user's cache)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nbsched.notify_policy import NotifyAllow

DEFAULT_HOME = ".nbsched"
DEFAULT_RUNS = "nbsched-runs"
_ENV = {
    "home": "NBSCHED_HOME",
    "db_url": "NBSCHED_DB_URL",
    "runs_dir": "NBSCHED_RUNS_DIR",
    "executor": "NBSCHED_EXECUTOR",
    "notify_config": "NBSCHED_NOTIFY_CONFIG",
    "public_url": "NBSCHED_PUBLIC_URL",
    "notify_allow": "NBSCHED_NOTIFY_ALLOW",
    "notify_timeout": "NBSCHED_NOTIFY_TIMEOUT",
}
MAX_NOTIFY_TIMEOUT = 600.0
NOTIFY_CONFIG = "notify.yaml"  # the Apprise configuration file in the nbsched folder


@dataclass(frozen=True, kw_only=True)
class Config:
    """Where state and outputs live and how much runs at once.

    Default layout of a project folder: the database in ``.nbsched/``, the executed notebooks and
    reports in ``nbsched-runs/``. The outputs are kept out of the hidden folder because Jupyter
    refuses to open hidden files (``ContentsManager.allow_hidden`` is off by default), and they are
    what people open. An explicit ``home`` keeps both in it (outputs in ``<home>/runs``).
    """

    home: Path
    db_url: str
    runs_dir: Path
    workers: int | None  # tries at once; None: the executor's own default (the cores, a cluster's threads)
    executor: str = "local"  # local, dask, dask://HOST:PORT
    kernel_pool: bool = True  # local kernels started ahead of need (each still used for one task)
    kernel_fork: bool = True  # local kernels forked from a process with ipykernel imported
    # modules that process imports too (with kernel_fork), and "auto" (what the run's notebooks
    # import, the default) or "none"
    kernel_preload: tuple[str, ...] = ()
    # seconds a command waits for a database that is down or busy before it gives up in one line
    # (None: forever, as `serve` does); daemons and foreground runs wait forever whatever this says
    db_patience: float | None = 60.0
    # notifications: the Apprise configuration file that defines their tags (None: the
    # NBSCHED_NOTIFY_CONFIG file, else <home>/notify.yaml), and the URL people open the run
    # reports at (a Jupyter server's; None: NBSCHED_PUBLIC_URL, else the report's file)
    notify_config: Path | None = None
    public_url: str | None = None
    # what a spec's own notification URLs may reach (None: NBSCHED_NOTIFY_ALLOW, else the default
    # of where the spec came from: everything from the local user, nothing over REST), and the
    # name of the setting, for refusals to name it
    notify_allow: tuple[str, ...] | None = None
    notify_allow_setting: str = "NBSCHED_NOTIFY_ALLOW"
    # seconds one delivery may take, connect included (None: NBSCHED_NOTIFY_TIMEOUT, else 5 s)
    notify_timeout: float | None = None

    def __post_init__(self) -> None:
        from nbsched.workers import check_workers, executor_address

        # a ConfigError names what is wrong, before anything starts
        executor_address(self.executor)
        if self.workers is not None:
            check_workers(self.executor, self.workers)

    def notify_policy(self, *, remote: bool) -> NotifyAllow:
        """What the notification URLs of a spec may reach: one sent over REST (``remote``), or
        the local user's."""
        from nbsched.notify_policy import NotifyAllow

        given = self.notify_allow
        setting = self.notify_allow_setting
        if given is None and (env := environment_setting("notify_allow")) is not None:
            given, setting = tuple(env.replace(",", " ").split()), _ENV["notify_allow"]
        if given is None:
            return NotifyAllow((), setting) if remote else NotifyAllow.everything()
        return NotifyAllow.parse(given, setting)

    @property
    def notify_seconds(self) -> float:
        """Seconds one notification's delivery may take."""
        from nbsched.errors import ConfigError
        from nbsched.targets import DEFAULT_TIMEOUT
        from nbsched.timefmt import parse_duration

        if self.notify_timeout is not None:
            return self.notify_timeout
        given = environment_setting("notify_timeout")
        if given is None:
            return DEFAULT_TIMEOUT
        try:
            seconds = float(given) if given.replace(".", "", 1).isdigit() else parse_duration(given)
        except ValueError as exc:
            raise ConfigError(f"{_ENV['notify_timeout']}: {exc}") from None
        if not 0 < seconds <= MAX_NOTIFY_TIMEOUT:
            raise ConfigError(f"{_ENV['notify_timeout']} {given!r}: expected more than 0 s, at most 10m")
        return seconds

    def with_workers(self, workers: int | None) -> Config:
        """This config with another worker count (checked), or itself for None."""
        return self if workers is None else replace(self, workers=workers)

    @property
    def kernels(self) -> dict[str, Any]:
        """How the local executor starts kernels (``make_executor``'s keywords)."""
        return {"pool": self.kernel_pool, "fork": self.kernel_fork, "preload": self.kernel_preload}

    @property
    def notify_file(self) -> Path:
        """The Apprise configuration file (it may not exist: then only URLs are targets)."""
        if self.notify_config is not None:
            return self.notify_config
        given = environment_setting("notify_config")
        return Path(given).absolute() if given else self.home / NOTIFY_CONFIG

    @property
    def reached_file(self) -> Path:
        """Where nbsched remembers the database servers it reached from this account (a server
        never reached that does not answer is a wrong URL, said at once: store/retry.py)."""
        cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        return Path(cache) / "nbsched" / "reached-databases"

    @property
    def report_url(self) -> str | None:
        """The public URL of the Jupyter server that serves the run reports, if known."""
        return self.public_url or environment_setting("public_url")

    @property
    def kernel_environment(self) -> dict[str, str]:
        """What a kernel's environment needs for ``discover`` in it to find this database and
        these outputs (a Jupyter server gives it to the kernels it starts)."""
        return {_ENV["db_url"]: self.db_url, _ENV["runs_dir"]: str(self.runs_dir)}

    @classmethod
    def resolve(
        cls,
        *,
        project: str | Path | None = None,
        home: str | Path | None = None,
        db_url: str | None = None,
        runs_dir: str | Path | None = None,
        workers: int | None = None,
        executor: str | None = None,
        kernel_pool: bool = True,
        kernel_fork: bool = True,
        kernel_preload: Iterable[str] = (),
    ) -> Config:
        folder = Path(project or ".").absolute()
        home_path = Path(home).absolute() if home else folder / DEFAULT_HOME
        default_runs = home_path / "runs" if home else folder / DEFAULT_RUNS
        return cls(
            home=home_path,
            db_url=db_url or f"sqlite:///{home_path / 'nbsched.db'}",
            runs_dir=Path(runs_dir).absolute() if runs_dir else default_runs,
            workers=workers or None,
            executor=executor or "local",
            kernel_pool=kernel_pool,
            kernel_fork=kernel_fork,
            kernel_preload=tuple(kernel_preload),
        )

    @classmethod
    def discover(cls, start: Path) -> Config:
        """For code running inside a project (a notebook's kernel): ``NBSCHED_HOME``,
        ``NBSCHED_DB_URL`` and ``NBSCHED_RUNS_DIR`` (a Jupyter server with the extension sets the
        last two for its kernels), else the project at or above ``start`` that has a ``.nbsched/``
        folder (a Jupyter server keeps one in its root), else ``start`` itself."""
        home = environment_setting("home")
        project = None if home else next((d for d in (start, *start.parents) if (d / DEFAULT_HOME).is_dir()), start)
        return cls.resolve(
            project=project, home=home, db_url=environment_setting("db_url"), runs_dir=environment_setting("runs_dir")
        )


def environment_setting(key: str) -> str | None:
    """The setting ``key`` (home, db_url, runs_dir, executor, ...) as this process's environment
    gives it; None when its variable is unset or empty."""
    return os.environ.get(_ENV[key]) or None


@dataclass(frozen=True, kw_only=True)
class DaemonOptions:
    """How a daemon (``nbsched serve``, the server extension's) runs: tries at once, the lease a
    runner holds on its tries, how often it looks for work others wrote, the grace a stop gives
    running tasks, and whether it fires schedules."""

    workers: int | None = None  # None: the executor's default
    lease: float = 60.0
    poll: float = 1.0
    grace: float = 30.0
    scheduler: bool = True
