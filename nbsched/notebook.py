"""Execute one task's notebook with papermill, in a kernel of its own.

papermill injects the parameters and writes the output notebook (also when a cell
fails); nbsched plugs in as a papermill engine so that it chooses where the kernel
comes from and can stop it from another thread.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbsched._record import BRANCH_MIME, RECORD_MIME
from nbsched.failures import TaskFailure, cell_label, cell_numbers, code_line, first_line
from nbsched.kernels import FreshKernels, KernelHandle, KernelSource
from nbsched.params import BUILTINS
from nbsched.states import StopReason

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
    imports: tuple[str, ...] = ()  # what the notebooks of its run import: a fork server may preload them


@dataclass(kw_only=True)
class TaskOutcome:
    """What one try of a task produced. ``error`` is None on success; ``failure`` is the error
    as data when the notebook or its kernel failed (not when the runner stopped the try)."""

    error: str | None = None
    failure: TaskFailure | None = None
    stopped: StopReason | None = None  # why the runner stopped the try, if it did
    outputs: dict[str, Any] = field(default_factory=dict)
    branch: list[str] | None = None
    output_path: Path | None = None
    host: str | None = None  # where it ran, when not on the runner's machine (a Dask worker)
    warnings: list[str] = field(default_factory=list)  # papermill's, each once (see PapermillWarnings)

    @classmethod
    def failed(cls, failure: TaskFailure, **fields: Any) -> TaskOutcome:
        return cls(error=str(failure), failure=failure, **fields)

    @classmethod
    def stopped_by(cls, handle: KernelHandle, **fields: Any) -> TaskOutcome:
        """The outcome of a stopped try whose cell cannot be named: stopped while it waited for a
        worker, or on a worker that did not answer the stop."""
        assert handle.stop_reason is not None
        return cls(stopped=handle.stop_reason, error=handle.stop_message, **fields)

    def to_json(self) -> dict[str, Any]:
        """What crosses to the runner from elsewhere (a Dask worker), in plain data."""
        return {
            "error": self.error,
            "failure": self.failure.to_json() if self.failure else None,
            "stopped": self.stopped.value if self.stopped else None,
            "outputs": self.outputs,
            "branch": self.branch,
            "host": self.host,
            "warnings": self.warnings,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], **fields: Any) -> TaskOutcome:
        failure, stopped = data.get("failure"), data.get("stopped")
        return cls(
            error=data.get("error"),
            failure=TaskFailure.from_json(failure) if failure else None,
            stopped=StopReason(stopped) if stopped else None,
            outputs=data.get("outputs") or {},
            branch=data.get("branch"),
            host=data.get("host"),
            warnings=list(data.get("warnings") or []),
            **fields,
        )


def import_engine() -> None:
    """Import, in this thread, what executing a task imports. Worker threads starting at once
    would import papermill, nbclient and jupyter_client concurrently, and a first import of
    jupyter_client's circular modules in two threads can fail ("cannot import name
    'AsyncKernelManager' from partially initialized module": seen, under load)."""
    import jupyter_client.manager  # noqa: F401
    import jupyter_core.utils  # noqa: F401
    import papermill.clientwrap
    import papermill.engines  # noqa: F401
    import zmq.asyncio  # noqa: F401

    import nbsched.fork_server  # noqa: F401

    _register_engine()


def execute_task(request: TaskRequest, handle: KernelHandle, kernels: KernelSource | None = None) -> TaskOutcome:
    """Run the notebook; never raises for a notebook's own failure, it is in the outcome."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    _register_engine()
    request.output_path.parent.mkdir(parents=True, exist_ok=True)
    metadata = _metadata(request.notebook)
    kernel = request.kernel or _kernelspec_name(metadata) or "python3"
    outcome = TaskOutcome(output_path=request.output_path)
    found: list[str] = []
    try:
        with _WARNINGS.collect(found):
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
                nbsched_imports=request.imports,
            )
    except PapermillExecutionError as exc:
        ename, evalue = exc.ename, exc.evalue
        if ename == "CellExecutionError" and not evalue and handle.cell_error is not None:
            # no error output reached the notebook (the kernel could not show its traceback):
            # papermill names none, the kernel's reply does
            ename, evalue = handle.cell_error
        number = _number(handle, exc.cell_index)
        outcome = TaskOutcome.failed(
            TaskFailure(
                ename=ename,
                evalue=first_line(evalue),
                cell=number,
                source=code_line(exc.source),
                injected=number is None,
            ),
            output_path=request.output_path,
        )
    except Exception as exc:  # noqa: BLE001 - kernel died, was stopped, or never started
        if handle.stop_reason is not None:
            outcome.stopped = handle.stop_reason
            outcome.error = _stopped_message(handle)
            _mark_stopped_cell(request.output_path, handle, outcome.error)
        else:  # the kernel died in a cell (which one), or before any
            dead_in = None if handle.cell_index is None else _number(handle, handle.cell_index)
            outcome = TaskOutcome.failed(
                TaskFailure(
                    ename=type(exc).__name__,
                    evalue=first_line(str(exc)) or "kernel failed",
                    cell=dead_in,
                    source=code_line(handle.cell_source),
                    injected=handle.cell_index is not None and dead_in is None,
                ),
                output_path=request.output_path,
            )
    outcome.outputs, outcome.branch = read_recorded(request.output_path)
    outcome.warnings = _users_warnings(found, request.parameters)
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


def cell_progress(handle: KernelHandle) -> dict[str, Any] | None:
    """The cell a running notebook is on, ``{"index": 4, "count": 9, "source": "...", "injected":
    false}``: its number and the count of cells in the user's notebook (see ``cell_numbers``);
    ``index`` None and ``injected`` true while the parameters cell papermill injected runs."""
    if handle.cell_index is None:
        return None
    number = _number(handle, handle.cell_index)
    return {
        "index": number,
        "count": handle.cell_count,
        "source": code_line(handle.cell_source),
        "injected": number is None,
    }


def show_cell(handle: KernelHandle, cell: dict[str, Any]) -> None:
    """Put a cell reported from elsewhere (a Dask worker's ``cell_progress``) on ``handle``."""
    handle.cell_index, handle.cell_numbers = 0, [cell["index"]]
    handle.cell_count, handle.cell_source = cell["count"], cell["source"]


def _number(handle: KernelHandle, index: int) -> int | None:
    """The user's number of the output notebook's cell ``index``; None for the injected cell."""
    return handle.cell_numbers[index] if index < len(handle.cell_numbers) else index + 1


def _stopped_message(handle: KernelHandle) -> str:
    if handle.cell_index is None:
        return f"{handle.stop_message} (before the first cell)"
    return f"{handle.stop_message} ({cell_label(_number(handle, handle.cell_index), code_line(handle.cell_source))})"


def _mark_stopped_cell(path: Path, handle: KernelHandle, message: str) -> None:
    """Leave the reason in the output notebook, on the cell that was running."""
    import nbformat

    if handle.cell_index is None or not path.exists():
        return
    nb = nbformat.read(str(path), as_version=4)
    if handle.cell_index < len(nb.cells):
        cell = nb.cells[handle.cell_index]
        cell.setdefault("outputs", []).append(
            nbformat.v4.new_output(
                "error", ename="TaskStopped", evalue=message, traceback=[f"nbsched: task stopped: {message}"]
            )
        )
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
        papermill_log = logging.getLogger("papermill")
        papermill_log.addHandler(_WARNINGS)
        # a task's warnings are the task's, told with it (CLI, show, REST); papermill's INFO lines
        # (input, output, kernel) say what nbsched says already
        papermill_log.propagate = False


class PapermillWarnings(logging.Handler):
    """Collects the warnings papermill logs (``Passed unknown parameter: x``, ``Input notebook
    does not contain a cell with tag 'parameters'``...) while a thread executes a task's notebook,
    so they are kept with the task's try; several tasks run at once, each in a thread of its own.
    papermill used outside a task (by the user's own code) logs as it would without nbsched."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self._local = threading.local()

    @contextmanager
    def collect(self, found: list[str]) -> Iterator[None]:
        """Append to ``found`` each warning this thread's papermill logs meanwhile, once."""
        self._local.found = found
        try:
            yield
        finally:
            self._local.found = None

    def emit(self, record: logging.LogRecord) -> None:
        found = getattr(self._local, "found", None)
        if found is None:
            logging.getLogger().handle(record)
        elif (message := " ".join(record.getMessage().split())) not in found:
            found.append(message)


_WARNINGS = PapermillWarnings()
_NO_PARAMETERS_CELL = "Input notebook does not contain a cell with tag 'parameters'"


def _users_warnings(found: list[str], parameters: dict[str, Any]) -> list[str]:
    """The warnings about what the user gave: nbsched's built-ins (``nbsched_run_id``,
    ``upstream`` ...) reach every notebook and need not be declared, and a notebook without a
    parameters cell is worth a warning only when the user passed parameters (papermill, given
    none, injects nothing)."""
    given = set(parameters) - set(BUILTINS)
    unknown = "Passed unknown parameter: "
    return [
        w
        for w in found
        if not (w.startswith(unknown) and w[len(unknown) :] in BUILTINS) and (given or w != _NO_PARAMETERS_CELL)
    ]


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
        def execute_managed_notebook(
            cls,
            nb_man: Any,
            kernel_name: str,
            *,
            nbsched_handle: KernelHandle,
            nbsched_kernels: Any,
            nbsched_cwd: Path,
            nbsched_imports: tuple[str, ...] = (),
            log_output: bool = False,
            stdout_file: Any = None,
            stderr_file: Any = None,
            start_timeout: float = 60,
            execution_timeout: float | None = None,
            **kwargs: Any,
        ) -> Any:
            kwargs.pop("input_path", None)
            nbsched_handle.cell_numbers = cell_numbers(nb_man.nb.cells)
            nbsched_handle.cell_count = sum(n is not None for n in nbsched_handle.cell_numbers)
            with (
                _saves_at_most_every(nb_man, SAVE_EVERY),
                nbsched_kernels.kernel(kernel_name, nbsched_cwd, nbsched_imports) as kernel,
            ):
                nbsched_handle.attach(kernel.km)
                client = PapermillNotebookClient(
                    nb_man,
                    km=kernel.km,
                    kernel_name=kernel_name,
                    timeout=execution_timeout,
                    startup_timeout=start_timeout,
                    log=logger,
                    log_output=log_output,
                    stdout_file=stdout_file,
                    stderr_file=stderr_file,
                    iopub_timeout=OUTPUT_WAIT,
                    on_cell_start=nbsched_handle.cell_started,
                    on_cell_error=nbsched_handle.cell_failed,
                    **kwargs,
                )
                # nbclient's __init__ resets kc: given here, its own connect and 0.2 s wait are skipped
                client.kc, kernel.kc.allow_stdin = kernel.kc, False
                return client.execute()

    return NbschedEngine
