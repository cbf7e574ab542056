"""The sample pipeline that `make demo` runs, end to end."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
from conftest import nbsched, run_json

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


def test_sample_grid_runs_six_forecasts_and_compares_them(project):
    shutil.copytree(SAMPLE, project / "sample")
    code, run = run_json("sample/forecast.yaml", "-p", "n_rows=1500", cwd=project)

    assert code == 0, {n: t["error"] for n, t in run["tasks"].items()}
    forecast = run["tasks"]["forecast"]
    assert forecast["state"] == "success" and len(forecast["instances"]) == 6
    assert [i["instance_params"] for i in forecast["instances"]] == [
        {"region": r, "window": w} for r in ("eu", "us", "apac") for w in (3, 7)
    ]
    # compare got the six as one list and picked a window per region from their scores
    maes = {
        (i["instance_params"]["region"], i["instance_params"]["window"]): i["outputs"]["mae"]
        for i in forecast["instances"]
    }
    best = {r: min((3, 7), key=lambda w: maes[(r, w)]) for r in ("eu", "us", "apac")}
    assert run["tasks"]["compare"]["outputs"] == {"best_window": best, "instances": 6}
    # the report compares them: a row per instance
    page = Path(project / nbsched("report", run["run_id"], cwd=project, check=True).stdout.strip()).read_text()
    table = page.split('<table class="comparison" data-task="forecast">')[1].split("</table>")[0]
    assert table.count("<tr data-task=") == 6 and '<th class="output">mae</th>' in table
