"""nbsched against plain papermill on the same notebooks, measured in the same run.

Two layered DAGs; each task depends on every task of the layer before. Each notebook does a
trivial amount of work, so the numbers show what running notebooks costs, not what the
notebooks compute.
- 1 -> 6 -> 6 -> 6 -> 1 (20 notebooks): papermill sequential and in threads, nbsched local.
- 1 -> 8 -> 10 -> 10 -> 8 -> 3 (40 notebooks): papermill sequential, nbsched on the local
  executor and on the Dask executor (a LocalCluster of the same number of worker processes,
  started once before the rounds, as an existing cluster would be).

    python benchmarks/bench_pipeline.py [--repeat 3] [--workers 2] [--layers 1,6,6,6,1]
                                        [--dask-layers 1,8,10,10,8,3]
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
from typing import Callable

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


def nbsched_run(spec: Path, home: Path, workers: int, executor: str = "local", kernel_pool: bool = False) -> None:
    service = Service(Config.resolve(home=home, workers=workers, executor=executor, kernel_pool=kernel_pool))
    try:
        run = service.run_pipeline(spec)
    finally:
        service.close()
    if run.state.value != "success":
        raise SystemExit(f"nbsched run {run.id} ended {run.state.value}")


def measure(contenders: dict[str, Callable[[int], None]], repeat: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for i in range(repeat):  # interleaved, so drift in the machine's load hits every contender
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn(i)
            times[name].append(time.perf_counter() - start)
            print(f"  round {i + 1}/{repeat}  {name}: {times[name][-1]:.2f}s", file=sys.stderr)
    return times


def table(title: str, times: dict[str, list[float]], n: int) -> None:
    base = statistics.median(times["papermill, sequential"])
    print(f"\n{title}")
    print(f"{'contender':<34} {'median s':>9} {'min s':>7} {'max s':>7} {'per task s':>10} {'vs papermill seq':>17}")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"{name:<34} {med:>9.2f} {min(values):>7.2f} {max(values):>7.2f} {med / n:>10.3f} {med / base:>16.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--layers", default="1,6,6,6,1")
    parser.add_argument("--dask-layers", default="1,8,10,10,8,3")
    args = parser.parse_args()
    logging.getLogger("papermill").setLevel(logging.ERROR)
    machine = (f"{os.cpu_count()} cores, Python {platform.python_version()}, papermill {papermill.__version__}; "
               f"median of {args.repeat}")
    shutil.rmtree(WORK, ignore_errors=True)
    w = args.workers

    layers = [int(x) for x in args.layers.split(",")]
    spec, names = build(layers, WORK / "notebooks")
    times = measure({
        "papermill, sequential": lambda i: papermill_sequential(spec.parent, names, WORK / f"pm{i}"),
        f"papermill, {w} threads per layer": lambda i: papermill_threads(spec.parent, names, WORK / f"pmt{i}", w),
        f"nbsched run, {w} workers": lambda i: nbsched_run(spec, WORK / f"home{i}", w),
        f"nbsched run, {w} workers, kernel pool": lambda i: nbsched_run(spec, WORK / f"pool{i}", w, kernel_pool=True),
    }, args.repeat)
    table(f"{sum(layers)} notebooks, layers {'-'.join(map(str, layers))}; {machine}", times, sum(layers))

    from distributed import LocalCluster

    layers = [int(x) for x in args.dask_layers.split(",")]
    spec, names = build(layers, WORK / "notebooks40")
    started = time.perf_counter()
    with LocalCluster(n_workers=w, threads_per_worker=1, processes=True, dashboard_address=":0",
                      silence_logs=logging.ERROR) as cluster:
        boot = time.perf_counter() - started
        times = measure({
            "papermill, sequential": lambda i: papermill_sequential(spec.parent, names, WORK / f"pm40-{i}"),
            f"nbsched run, local, {w} workers": lambda i: nbsched_run(spec, WORK / f"home40-{i}", w),
            f"nbsched run, dask, {w} workers": lambda i: nbsched_run(spec, WORK / f"dask40-{i}", w,
                                                                     cluster.scheduler_address),
        }, args.repeat)
    table(f"{sum(layers)} notebooks, layers {'-'.join(map(str, layers))}; {machine}; "
          f"Dask LocalCluster of {w} worker processes (started once, in {boot:.1f}s)", times, sum(layers))
    shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
