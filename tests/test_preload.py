"""Kernels forked from a fork server that preloaded the data stack (numpy, pandas, matplotlib)
behave as kernels started the usual way: their own random numbers, the BLAS thread pools a
usual kernel has, figures in the output notebook, no module state from another task."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import write_notebook, write_yaml

from nbsched.service import Config, Service
from nbsched.states import RunState

pytestmark = pytest.mark.kernel

STACK = ("numpy", "pandas", "matplotlib.pyplot")

TASK = """import numpy as np, pandas as pd, matplotlib.pyplot as plt
from threadpoolctl import threadpool_info
import nbsched
nbsched.record("random", float(np.random.rand()))
nbsched.record("pools", sorted([p["internal_api"], p["num_threads"]] for p in threadpool_info()))
nbsched.record("max_rows", pd.get_option("display.max_rows"))
import gc
nbsched.record("frozen", gc.get_freeze_count())
pd.set_option("display.max_rows", 7)
plt.plot([1, 3, 2])
plt.show()"""


def _usual_pools() -> list[list[object]]:
    """The thread pools of a new Python that imports the stack, as a kernel started the usual way."""
    code = (
        f"import json, {', '.join(STACK)}\nfrom threadpoolctl import threadpool_info\n"
        "print(json.dumps(sorted([p['internal_api'], p['num_threads']] for p in threadpool_info())))"
    )
    return json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


@pytest.mark.parametrize("forked", [True, False], ids=["forked-with-the-stack-preloaded", "started-the-usual-way"])
def test_kernels_with_the_data_stack_preloaded_are_kernels_of_their_own(project: Path, forked: bool, caplog):
    for name in ("first", "second"):
        write_notebook(project / f"{name}.ipynb", TASK)
    spec = write_yaml(
        project / "pipeline.yaml",
        "name: stack\ntasks:\n  first: first.ipynb\n  second: {notebook: second.ipynb, upstream: [first]}\n",
    )
    service = Service(
        Config.resolve(project=project, workers=1, kernel_fork=forked, kernel_preload=STACK if forked else ())
    )
    try:
        run = service.run_pipeline(spec)
    finally:
        service.close()
    assert "fork server cannot start" not in caplog.text  # preloaded for real, not fallen back
    assert run.state is RunState.SUCCESS, {n: t.error for n, t in run.tasks.items()}
    first, second = (run.tasks[n].outputs for n in ("first", "second"))
    assert first["random"] != second["random"]  # numpy's global generator is not the server's copy
    usual = _usual_pools()
    assert usual and first["pools"] == second["pools"] == usual  # as many BLAS threads as a usual kernel
    assert first["max_rows"] == second["max_rows"] == 60  # the first task's pandas option stayed its own
    # what the server loaded is frozen out of the kernels' collections (their shared pages stay shared)
    assert (first["frozen"] > 10_000) is forked and (second["frozen"] > 10_000) is forked
    for task in run.tasks.values():  # the figure is in the notebook, as with %matplotlib inline
        nb = nbformat.read(task.output_path, as_version=4)
        assert any("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", [])), task.name


CHECK = "import sys\nimport nbsched\nnbsched.record('preloaded', sorted(m for m in ('pandas', 'helpers') if m in sys.modules))"


@pytest.mark.parametrize(("option", "preloaded"), [((), ["pandas"]), (("--kernel-preload", "none"), [])])
def test_what_the_notebooks_import_is_preloaded_by_default_and_their_own_modules_never(
    project: Path, option, preloaded
):
    from conftest import run_json

    (project / "helpers.py").write_text("import pathlib\npathlib.Path('imported-by').write_text('someone')\n")
    write_notebook(project / "nb.ipynb", CHECK, "import pandas as pd\nimport helpers")
    code, run = run_json("nb.ipynb", *option, cwd=project)
    assert code == 0, run
    # its first cell ran before its own imports: pandas was there already, helpers (its folder's) not
    assert run["tasks"]["nb"]["outputs"] == {"preloaded": preloaded}


def test_a_notebooks_imports_are_read_not_imported(tmp_path: Path, monkeypatch):
    from nbsched.imports import notebook_imports

    site = tmp_path / "site"
    (site / "sidefx").mkdir(parents=True)
    (site / "sidefx" / "__init__.py").write_text("raise SystemExit('imported')\n")
    (site / "sidefx" / "plots.py").write_text("raise SystemExit('imported')\n")
    monkeypatch.syspath_prepend(str(site))
    folder = tmp_path / "nbs"
    folder.mkdir()
    (folder / "local_helpers.py").write_text("x = 1\n")
    write_notebook(
        folder / "nb.ipynb",
        "%matplotlib inline\nimport os, sidefx\nfrom sidefx import plots\nfrom sidefx import name_in_it",
        "import local_helpers\nimport no_such_module\nfrom . import relative\ndef f():\n    import json",
        "!pip list\nimport json as j",
    )
    assert notebook_imports(folder / "nb.ipynb") == ("os", "sidefx", "sidefx.plots", "json")
    assert "sidefx" not in sys.modules
