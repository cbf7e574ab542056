"""Execute one task's notebook with papermill, in a kernel of its own.

papermill injects the parameters and writes the output notebook (also when a cell
fails); nbsched plugs in as a papermill engine so that it chooses where the kernel
comes from and can stop it from another thread.
"""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from nbsched._record import BRANCH_MIME, RECORD_MIME
from nbsched.kernels import FreshKernels, KernelHandle
from nbsched.params import BUILTINS

ENGINE_NAME = "nbsched"
SAVE_EVERY = 1.0  # seconds between writes of a running notebook's output (progress for the curious)
# nbclient waits this long for a cell's output once the kernel has replied (its default, 4 s, and
# papermill's raise_on_iopub_timeout failed tasks whose tens of MB of output took longer to take
# in): only the task's timeout stops a task on time; a kernel that dies meanwhile is noticed
# within a second (nbclient polls it)
OUTPUT_WAIT = 10**9


@dataclass(frozen=True, kw_only=True)
class TaskRequest:
    run_id: str
    task: str
    try_number: int
    notebook: Path
    output_path: Path
    parameters: dict[str, Any]
    kernel: str | None = None
    resources: dict[str, float] = field(default_factory=dict)  # what the executor must find for it


@dataclass(kw_only=True)
class TaskOutcome:
    """What one try of a task produced. ``error`` is None on success."""

    error: str | None = None
    stopped: str | None = None  # "timeout" or "cancel" when the kernel was stopped on purpose
    outputs: dict[str, Any] = field(default_factory=dict)
    branch: list[str] | None = None
    output_path: Path | None = None
    host: str | None = None  # where it ran, when not on the runner's machine (a Dask worker)

    @property
    def ok(self) -> bool:
        return self.error is None and self.stopped is None


def import_engine() -> None:
    """Import, in this thread, what executing a task imports. Worker threads starting at once
    would import papermill, nbclient and jupyter_client concurrently, and a first import of
    jupyter_client's circular modules in two threads can fail ("cannot import name
    'AsyncKernelManager' from partially initialized module": seen, under load)."""
    import jupyter_client.manager  # noqa: F401
    import jupyter_core.utils  # noqa: F401
    import papermill.clientwrap  # noqa: F401
    import papermill.engines  # noqa: F401
    import zmq.asyncio  # noqa: F401

    import nbsched.fork_server  # noqa: F401

    _register_engine()


def execute_task(request: TaskRequest, handle: KernelHandle, kernels: Any = None) -> TaskOutcome:
    """Run the notebook; never raises for a notebook's own failure, it is in the outcome."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    _register_engine()
    request.output_path.parent.mkdir(parents=True, exist_ok=True)
    metadata = _metadata(request.notebook)
    kernel = request.kernel or _kernelspec_name(metadata) or "python3"
    outcome = TaskOutcome(output_path=request.output_path)
    try:
        papermill.execute_notebook(
            str(request.notebook),
            str(request.output_path),
            parameters=request.parameters,
            engine_name=ENGINE_NAME,
            kernel_name=kernel,
            language=None if _has_language(metadata) else kernel_language(kernel),
            progress_bar=False,
            nbsched_handle=handle,
            nbsched_kernels=kernels or FreshKernels(),
            nbsched_cwd=request.notebook.parent,
        )
    except PapermillExecutionError as exc:
        ename, evalue = exc.ename, exc.evalue
        if ename == "CellExecutionError" and not evalue and handle.cell_error is not None:
            # no error output reached the notebook (the kernel could not show its traceback):
            # papermill names none, the kernel's reply does
            ename, evalue = handle.cell_error
        outcome.error = f"{_error_line(ename, evalue)} ({_cell_label(exc.cell_index, exc.source)})"
    except Exception as exc:  # kernel died, was stopped, or never started
        if handle.stop_reason is not None:
            outcome.stopped = handle.stop_reason
            outcome.error = _stopped_message(handle)
            _mark_stopped_cell(request.output_path, handle, outcome.error)
        else:
            outcome.error = f"{type(exc).__name__}: {_first_line(str(exc)) or 'kernel failed'}"
            if handle.cell_index is not None:  # the kernel died in a cell: which one
                outcome.error += f" ({_cell_label(handle.cell_index, handle.cell_source)})"
    outcome.outputs, outcome.branch = read_recorded(request.output_path)
    return outcome


def read_recorded(path: Path) -> tuple[dict[str, Any], list[str] | None]:
    """The values a notebook recorded with ``nbsched.record`` and its last ``nbsched.branch``."""
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}, None
    outputs: dict[str, Any] = {}
    branch = None
    for cell in nb.get("cells", []):
        for out in cell.get("outputs", []) or []:
            data = out.get("data") or {}
            if RECORD_MIME in data:
                outputs[data[RECORD_MIME]["key"]] = data[RECORD_MIME]["value"]
            if BRANCH_MIME in data:
                branch = list(data[BRANCH_MIME]["tasks"])
    return outputs, branch


def _error_line(ename: str, evalue: str) -> str:
    """``ValueError: bad input``; an exception without a message (``MemoryError``) by its name."""
    value = _first_line(evalue)
    return f"{ename}: {value}" if value else ename


def _first_line(text: str) -> str:
    text = (text or "").strip()
    return text.splitlines()[0] if text else ""


def _cell_label(index: int, source: str) -> str:
    """``cell 4: import time; time.sleep(60)`` — the position as shown in the output notebook."""
    return f"cell {index + 1}: {_code_line(source)}"


def _code_line(source: str) -> str:
    code = "; ".join(line.strip() for line in (source or "").splitlines() if line.strip())
    return code[:77] + "..." if len(code) > 80 else code


def cell_progress(handle: KernelHandle) -> dict[str, Any] | None:
    """The cell a running notebook is on, ``{"index": 4, "count": 9, "source": "..."}``
    (1-based, counting every cell of the output notebook, as JupyterLab shows it)."""
    if handle.cell_index is None:
        return None
    return {"index": handle.cell_index + 1, "count": handle.cell_count, "source": _code_line(handle.cell_source)}


def show_cell(handle: KernelHandle, cell: dict[str, Any]) -> None:
    """Put a cell reported from elsewhere (a Dask worker's ``cell_progress``) on ``handle``."""
    handle.cell_index, handle.cell_count, handle.cell_source = cell["index"] - 1, cell["count"], cell["source"]


def _stopped_message(handle: KernelHandle) -> str:
    if handle.cell_index is None:
        return f"{handle.stop_reason} (before the first cell)"
    return f"{handle.stop_reason} ({_cell_label(handle.cell_index, handle.cell_source)})"


def _mark_stopped_cell(path: Path, handle: KernelHandle, message: str) -> None:
    """Leave the reason in the output notebook, on the cell that was running."""
    import nbformat

    if handle.cell_index is None or not path.exists():
        return
    nb = nbformat.read(str(path), as_version=4)
    if handle.cell_index < len(nb.cells):
        cell = nb.cells[handle.cell_index]
        cell.setdefault("outputs", []).append(nbformat.v4.new_output(
            "error", ename="TaskStopped", evalue=message, traceback=[f"nbsched: task stopped: {message}"]))
        nbformat.write(nb, str(path))


def kernel_for(notebook: Path, kernel: str | None = None) -> str:
    """The kernel a task's notebook runs in: the task's ``kernel``, else the notebook's own
    kernelspec, else ``python3``."""
    return kernel or _kernelspec_name(_metadata(notebook)) or "python3"


def kernel_language(kernel: str) -> str | None:
    """The language of a kernel (its kernelspec's), which papermill writes the parameters in
    when the notebook does not say (a notebook without ``kernelspec`` or ``language_info``)."""
    from jupyter_client.kernelspec import KernelSpecManager

    return KernelSpecManager().get_kernel_spec(kernel).language or None


def _metadata(path: Path) -> dict[str, Any]:
    from nbsched.bounds import json_depth_ok

    try:
        text = path.read_text(encoding="utf-8")
        if not json_depth_ok(text):  # json.loads would end in a RecursionError (the runner reads this)
            return {}
        metadata = json.loads(text)["metadata"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return metadata if isinstance(metadata, dict) else {}


def _kernelspec_name(metadata: dict[str, Any]) -> str | None:
    name = (metadata.get("kernelspec") or {}).get("name")
    return name if isinstance(name, str) and name else None


def _has_language(metadata: dict[str, Any]) -> bool:
    """Whether papermill finds the notebook's language in it (where it looks)."""
    return bool((metadata.get("language_info") or {}).get("name") or (metadata.get("kernelspec") or {}).get("language"))


def _register_engine() -> None:
    from papermill.engines import papermill_engines

    if ENGINE_NAME not in papermill_engines._engines:
        papermill_engines.register(ENGINE_NAME, _engine_class())
        logging.getLogger("papermill").addFilter(_builtins_need_no_declaring)


def _builtins_need_no_declaring(record: logging.LogRecord) -> bool:
    """papermill warns of each parameter a notebook does not declare; nbsched's built-ins
    (``nbsched_run_id``, ``upstream``, ...) reach every notebook and need not be declared."""
    message = record.getMessage()
    return not (message.startswith("Passed unknown parameter: ") and message.rpartition(": ")[2] in BUILTINS)


@contextmanager
def _saves_at_most_every(nb_man: Any, seconds: float) -> Iterator[None]:
    """papermill writes the output notebook when it starts, before and after every cell, and
    at the end: 11 writes for a notebook of 4 cells, a quarter of a small task's own cost. Inside
    the engine, a write happens only if the last is ``seconds`` old; the first (the output exists
    from the start) and the last (papermill's ``notebook_complete``, after the engine) always."""
    save = nb_man.save

    def throttled(**kwargs: Any) -> None:
        if (nb_man.now() - nb_man.last_save_time).total_seconds() >= seconds:
            save(**kwargs)

    nb_man.save = throttled
    try:
        yield
    finally:
        nb_man.save = save


def _engine_class() -> type:
    from papermill.clientwrap import PapermillNotebookClient
    from papermill.engines import Engine
    from papermill.log import logger

    class NbschedEngine(Engine):
        """papermill's nbclient engine, with the kernel taken from nbsched's kernel source."""

        @classmethod
        def execute_managed_notebook(cls, nb_man: Any, kernel_name: str, *, nbsched_handle: KernelHandle,
                                     nbsched_kernels: Any, nbsched_cwd: Path, log_output: bool = False,
                                     stdout_file: Any = None, stderr_file: Any = None,
                                     start_timeout: float = 60, execution_timeout: float | None = None,
                                     **kwargs: Any) -> Any:
            kwargs.pop("input_path", None)
            nbsched_handle.cell_count = len(nb_man.nb.cells)
            with _saves_at_most_every(nb_man, SAVE_EVERY), nbsched_kernels.kernel(kernel_name, nbsched_cwd) as kernel:
                nbsched_handle.attach(kernel.km)
                client = PapermillNotebookClient(
                    nb_man, km=kernel.km, kernel_name=kernel_name, timeout=execution_timeout,
                    startup_timeout=start_timeout, log=logger, log_output=log_output,
                    stdout_file=stdout_file, stderr_file=stderr_file, iopub_timeout=OUTPUT_WAIT,
                    on_cell_start=nbsched_handle.cell_started, on_cell_error=nbsched_handle.cell_failed,
                    **kwargs)
                # nbclient's __init__ resets kc: given here, its own connect and 0.2 s wait are skipped
                client.kc, kernel.kc.allow_stdin = kernel.kc, False
                return client.execute()

    return NbschedEngine
