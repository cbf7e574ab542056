"""The sample pipeline that `make demo` runs, end to end."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
from conftest import run_json

pytestmark = pytest.mark.kernel

SAMPLE = Path(__file__).resolve().parent.parent / "sample_notebooks"


@pytest.mark.slow
def test_sample_pipeline_runs_and_reports(project):
    shutil.copytree(SAMPLE, project / "sample")
    code, run = run_json("sample/pipeline.yaml", "-p", "n_rows=3000", "-p", "seed=3", cwd=project)

    assert code == 0, {n: t["error"] for n, t in run["tasks"].items()}
    tasks = run["tasks"]
    assert list(tasks) == ["generate", "clean", "by_region", "by_product", "report"]
    assert tasks["generate"]["outputs"]["rows"] >= 3000
    assert (
        tasks["clean"]["outputs"]["rows"] + tasks["clean"]["outputs"]["dropped"] == tasks["generate"]["outputs"]["rows"]
    )
    assert set(tasks["by_region"]["outputs"]["revenue_by_region"]) == {"eu", "us", "apac"}
    # the report notebook drew its chart
    report = nbformat.read(tasks["report"]["output_path"], as_version=4)
    images = [o for c in report.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert images
    # intermediate data went to the run's own folder, not next to the notebooks
    run_dir = Path(tasks["report"]["output_path"]).parent
    assert (run_dir / "data" / "raw.csv").exists()
    assert not (project / "sample" / "data").exists()
