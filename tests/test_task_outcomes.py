"""What a task's notebook does decides its outcome, nothing else: big outputs, memory errors,
notebooks without metadata. Real kernels, real notebooks."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from conftest import write_notebook, write_yaml

from nbsched.failures import TaskFailure
from nbsched.states import RunState, TaskState

pytestmark = pytest.mark.kernel


@pytest.mark.slow
@pytest.mark.serial  # 800 MB of output through eight kernels at once: the whole machine
def test_tasks_printing_tens_of_mb_at_once_wait_for_their_output_as_long_as_it_takes(project):
    """nbclient waits 4 s for a cell's output once the kernel has replied; with eight tasks each
    printing 2 x 50 MB at once, nbsched's process needs longer than that to take it all in (the
    task failed with "CellTimeoutError ... after 4 seconds" although its timeout was 2m)."""
    write_notebook(
        project / "loud.ipynb",
        "print('x' * (50 * 10**6))",
        "print('y' * (50 * 10**6))",
        "import nbsched\nnbsched.record('done', True)",
    )
    spec = write_yaml(
        project / "pipeline.yaml",
        "name: loud\ndefaults: {retries: 0, timeout: 2m}\ntasks:\n"
        + "".join(f"  t{i}: {{notebook: loud.ipynb}}\n" for i in range(8)),
    )
    from nbsched.service import Config, Service

    service = Service(Config.resolve(project=project, workers=8))
    try:
        run = service.run_pipeline(spec)
    finally:
        service.close()

    assert run.state is RunState.SUCCESS, {n: t.error for n, t in run.tasks.items() if t.error}
    nb = nbformat.read(run.tasks["t0"].output_path, as_version=4)
    printed = ["".join(o.text for o in c.outputs if o.output_type == "stream") for c in nb.cells[3:5]]
    assert [len(p) for p in printed] == [50 * 10**6 + 1] * 2  # every byte, and the newline


MEMORY_ERRORS = {
    "allocated": ["b = bytearray(10**15)"],
    # what the kernel replies is the same when the traceback itself cannot be shown (no error
    # output reaches the notebook; papermill then calls it "CellExecutionError" with no value)
    "traceback lost": ["get_ipython()._showtraceback = lambda *args, **kwargs: None", "b = bytearray(10**15)"],
}


@pytest.mark.parametrize("cells", MEMORY_ERRORS.values(), ids=MEMORY_ERRORS)
def test_a_notebook_out_of_memory_fails_with_memory_error_named(project, service, cells):
    write_notebook(project / "hungry.ipynb", "x = 1", *cells)
    spec = write_yaml(
        project / "pipeline.yaml", "name: hungry\ndefaults: {retries: 0}\ntasks:\n  hungry: {notebook: hungry.ipynb}\n"
    )
    run = service.run_pipeline(spec)

    task = run.tasks["hungry"]
    assert task.state is TaskState.FAILED
    assert task.error == f"MemoryError (cell {len(cells) + 3}: b = bytearray(10**15))"
    assert task.failure == TaskFailure(
        ename="MemoryError", evalue="", cell=len(cells) + 3, source="b = bytearray(10**15)"
    )


def test_a_notebook_that_raises_with_a_message_keeps_it(project, service):
    write_notebook(project / "bad.ipynb", "raise MemoryError('the cache is full')")
    spec = write_yaml(
        project / "pipeline.yaml", "name: bad\ndefaults: {retries: 0}\ntasks:\n  bad: {notebook: bad.ipynb}\n"
    )
    run = service.run_pipeline(spec)

    assert run.tasks["bad"].error == "MemoryError: the cache is full (cell 3: raise MemoryError('the cache is full'))"
    assert run.tasks["bad"].failure == TaskFailure(
        ename="MemoryError", evalue="the cache is full", cell=3, source="raise MemoryError('the cache is full')"
    )


def _bare_notebook(path: Path, *sources: str) -> Path:
    """A notebook with no kernelspec nor language_info, as some tools write them."""
    cells = [
        {"cell_type": "code", "source": s, "metadata": {}, "outputs": [], "execution_count": None} for s in sources
    ]
    path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 4}))
    return path


def test_a_notebook_without_kernel_metadata_or_cells_runs_in_python3(project, service):
    _bare_notebook(project / "bare.ipynb", "import nbsched, sys\nnbsched.record('python', sys.version_info[0])")
    _bare_notebook(project / "empty.ipynb")
    spec = write_yaml(
        project / "pipeline.yaml",
        """
name: bare
defaults: {retries: 0}
params: {size: 3}
tasks:
  bare: {notebook: bare.ipynb}
  empty: {notebook: empty.ipynb}
""",
    )
    assert service.validate(spec)
    run = service.run_pipeline(spec)

    assert run.state is RunState.SUCCESS, {n: t.error for n, t in run.tasks.items()}
    assert run.tasks["bare"].outputs == {"python": 3}
    injected = nbformat.read(run.tasks["empty"].output_path, as_version=4).cells[0]
    assert "size = 3" in injected.source  # parameters written in Python, the kernel's language


def test_a_notebook_whose_kernel_dies_names_the_cell(project, service):
    write_notebook(project / "dies.ipynb", "x = 1", "import os\nos._exit(3)", "y = 2")
    spec = write_yaml(
        project / "pipeline.yaml", "name: dies\ndefaults: {retries: 0}\ntasks:\n  dies: {notebook: dies.ipynb}\n"
    )
    run = service.run_pipeline(spec)

    assert run.tasks["dies"].error == "DeadKernelError: Kernel died (cell 4: import os; os._exit(3))"
    assert run.tasks["dies"].failure == TaskFailure(
        ename="DeadKernelError", evalue="Kernel died", cell=4, source="import os; os._exit(3)"
    )
