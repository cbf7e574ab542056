"""Where a task's executed notebooks are kept, and how one becomes the task's.

Each try writes its own file, ``<task>.try<N>.ipynb``, from its first save to its last, and no
one else ever writes, moves or removes it: a try whose runner was paused past its lease and wakes
up (SIGSTOP, a suspended machine) can only write its own file, never the notebook of the try that
took over. The task's notebook, ``<task>.ipynb``, is a second name for the file of the try the
database records as the task's: ``publish`` gives it that name (a hard link, made atomically),
called by the store inside the very transaction that records the try's end under its fence, so
the file and the database agree whichever runner wins. Linking, unlike renaming, is the same
when done twice, so a transaction retried after a lost connection publishes the same file again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
from pathlib import Path

log = logging.getLogger("nbsched.outputs")


def try_notebook(run_dir: Path, task: str, try_number: int) -> Path:
    """The file try ``try_number`` of ``task`` writes, and only it."""
    return run_dir / f"{task}.try{try_number}.ipynb"


def task_notebook(run_dir: Path, task: str) -> Path:
    """The task's notebook: its recorded try's, under the name people open."""
    return run_dir / f"{task}.ipynb"


def publish(notebook: Path, task: str) -> str | None:
    """Make ``<task>.ipynb`` beside ``notebook`` (a try's file) name that try's notebook, and
    return its path; a try that wrote no notebook leaves the task without one (None), rather
    than with an earlier try's that the database no longer describes. Never raises: a file that
    cannot be linked leaves the try's own path, which names the same notebook."""
    target = task_notebook(notebook.parent, task)
    temporary = notebook.with_name(f".{task}.{secrets.token_hex(4)}.tmp")
    try:
        if not notebook.is_file():
            target.unlink(missing_ok=True)
            return None
        try:
            os.link(notebook, temporary)
        except OSError:  # a file system without hard links: a copy, as atomically placed
            shutil.copyfile(notebook, temporary)
        os.replace(temporary, target)
        return str(target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        log.warning("%s: could not name it %s (%s); it stays under its own name", notebook, target.name, exc)
        return str(notebook) if notebook.is_file() else None
