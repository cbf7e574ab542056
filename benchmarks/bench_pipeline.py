"""nbsched against plain papermill on the same notebooks, measured in the same run.

The DAG is layered 1 -> 6 -> 6 -> 6 -> 1 (20 notebooks); each task depends on every
task of the layer before. Each notebook does a trivial amount of work, so the numbers
show what running notebooks costs, not what the notebooks compute.

    python benchmarks/bench_pipeline.py [--repeat 3] [--workers 2] [--layers 1,6,6,6,1]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shutil
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import papermill
from nbformat.v4 import new_code_cell, new_notebook

from nbsched.service import Config, Service

WORK = Path(__file__).resolve().parent / ".work"


def build(layers: list[int], folder: Path) -> tuple[Path, list[list[str]]]:
    """Write the notebooks and pipeline.yaml; return the spec path and the task names per layer."""
    folder.mkdir(parents=True)
    names: list[list[str]] = []
    lines = ["name: bench", "tasks:"]
    for depth, width in enumerate(layers):
        layer = [f"l{depth}_{i}" for i in range(width)]
        for name in layer:
            nb = new_notebook(cells=[
                new_code_cell("upstream = {}\nsize = 10000", metadata={"tags": ["parameters"]}),
                new_code_cell("total = sum(range(size))"),
                new_code_cell("print(total)"),
            ])
            nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
            nbformat.write(nb, str(folder / f"{name}.ipynb"))
            upstream = f", upstream: [{', '.join(names[-1])}]" if names else ""
            lines.append(f"  {name}: {{notebook: {name}.ipynb{upstream}}}")
        names.append(layer)
    spec = folder / "pipeline.yaml"
    spec.write_text("\n".join(lines) + "\n")
    return spec, names


def papermill_one(folder: Path, out: Path, name: str) -> None:
    out.mkdir(exist_ok=True)
    papermill.execute_notebook(str(folder / f"{name}.ipynb"), str(out / f"{name}.ipynb"),
                               parameters={"size": 10000}, progress_bar=False, kernel_name="python3")


def papermill_sequential(folder: Path, names: list[list[str]], out: Path) -> None:
    for layer in names:
        for name in layer:
            papermill_one(folder, out, name)


def papermill_threads(folder: Path, names: list[list[str]], out: Path, workers: int) -> None:
    with ThreadPoolExecutor(workers) as pool:
        for layer in names:
            list(pool.map(lambda n: papermill_one(folder, out, n), layer))


def nbsched_run(spec: Path, home: Path, workers: int) -> None:
    service = Service(Config.resolve(home=home, workers=workers))
    try:
        run = service.run_pipeline(spec)
    finally:
        service.close()
    if run.state.value != "success":
        raise SystemExit(f"nbsched run {run.id} ended {run.state.value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--layers", default="1,6,6,6,1")
    args = parser.parse_args()
    layers = [int(x) for x in args.layers.split(",")]
    logging.getLogger("papermill").setLevel(logging.ERROR)

    shutil.rmtree(WORK, ignore_errors=True)
    spec, names = build(layers, WORK / "notebooks")
    n = sum(layers)
    contenders = {
        "papermill, sequential": lambda i: papermill_sequential(spec.parent, names, WORK / f"pm{i}"),
        f"papermill, {args.workers} threads per layer":
            lambda i: papermill_threads(spec.parent, names, WORK / f"pmt{i}", args.workers),
        f"nbsched run, {args.workers} workers": lambda i: nbsched_run(spec, WORK / f"home{i}", args.workers),
    }
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for i in range(args.repeat):  # interleaved, so drift in the machine's load hits every contender
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn(i)
            times[name].append(time.perf_counter() - start)
            print(f"  round {i + 1}/{args.repeat}  {name}: {times[name][-1]:.2f}s", file=sys.stderr)

    base = statistics.median(times["papermill, sequential"])
    print(f"\n{n} notebooks, layers {'-'.join(map(str, layers))}; median of {args.repeat}; "
          f"{os.cpu_count()} cores, Python {platform.python_version()}, papermill {papermill.__version__}")
    print(f"{'contender':<34} {'median s':>9} {'min s':>7} {'max s':>7} {'per task s':>10} {'vs papermill seq':>17}")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"{name:<34} {med:>9.2f} {min(values):>7.2f} {max(values):>7.2f} {med / n:>10.3f} {med / base:>16.2f}x")
    shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
