"""nbsched's public API from Python: run and trigger a pipeline, and a cheap ``import nbsched``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import nbsched as nbsched_command
from conftest import write_notebook

import nbsched
from nbsched.states import RunState


@pytest.mark.kernel
def test_run_and_trigger_a_pipeline_from_python(project):
    write_notebook(project / "hello.ipynb", "import nbsched\nnbsched.record('n', n)", params="n = 1\nupstream = {}")
    run = nbsched.run(project / "hello.ipynb", params={"n": 3})
    assert run.state is RunState.SUCCESS and run.tasks["hello"].outputs == {"n": 3}
    queued = nbsched.trigger("hello", params={"n": 4})
    assert queued.state is RunState.QUEUED and queued.params == {"n": 4} and queued.trigger == "manual"
    # the project's database, as the command line finds it
    shown = json.loads(nbsched_command("show", queued.id, "--json", cwd=project, check=True).stdout)
    assert shown == queued.to_json()


def test_import_nbsched_loads_nothing_heavy():
    heavy = ("sqlalchemy", "papermill", "nbformat", "jupyter_server", "yaml", "nbsched.service", "nbsched.views")
    code = f"import sys, nbsched; print([m for m in {heavy!r} if m in sys.modules])"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
    )
