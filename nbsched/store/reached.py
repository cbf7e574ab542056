"""The database servers nbsched has reached from this account: whether a server that does not
answer now is away (an outage: wait for it, ``retry.py``) or was never there (a wrong URL: say so
at once). One line per server (``postgresql 127.0.0.1:5432``: no user, database or password),
newest last, in a file of the user's cache (``config.reached_file``).
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.engine import URL

KEEP = 200  # servers remembered; the oldest are forgotten past that


def server_of(url: URL) -> str | None:
    """The server a URL's database lives on; None for a file (SQLite), which is never away."""
    if url.get_backend_name() == "sqlite":
        return None
    host = url.host or str(url.query.get("host", "")) or "localhost"
    return f"{url.get_backend_name()} {host}:{url.port or ''}"


class ReachedServers:
    def __init__(self, path: Path | None) -> None:
        self.path = path

    def __contains__(self, server: str) -> bool:
        return server in self._lines()

    def add(self, server: str) -> None:
        """Remember ``server``; a file that cannot be written is left alone (the server then
        counts as never reached: a command gives up soon, which is the safe side)."""
        if self.path is None:
            return
        lines = self._lines()
        if server in lines:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if len(lines) < KEEP:
                with self.path.open("a", encoding="utf-8") as f:
                    f.write(server + "\n")
                return
            new = self.path.with_name(f"{self.path.name}.{os.getpid()}")
            new.write_text("\n".join([*lines[-KEEP // 2 :], server]) + "\n", encoding="utf-8")
            new.replace(self.path)
        except OSError:
            pass

    def _lines(self) -> list[str]:
        if self.path is None:
            return []
        try:
            return self.path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return []
