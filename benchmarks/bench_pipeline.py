"""nbsched against plain papermill on the same notebooks, measured in the same run.

Layered DAGs, each task depending on every task of the layer before; each notebook does a
trivial amount of work, so the numbers show what running notebooks costs, not what they compute.
- 1 -> 6 -> 6 -> 6 -> 1 (20 notebooks; ``--dags`` adds others, e.g. 1,24,25,25,24,1):
  papermill sequential, a loop of 2 papermill threads (one layer at a time), and ``nbsched run``
  with fresh kernels (``--no-kernel-pool --no-kernel-fork``), with the pool only, with the fork
  server only, and with both (the default); the last also as the ``nbsched run`` command, in a
  process of its own (its imports, a new database, and its exit included).
- Kernel start: CPU of the kernel process from launch to ready, started the usual way and
  forked from nbsched's fork server.
- Process start: ``nbsched --help``, and the import time of ``nbsched run`` before its first
  notebook.
- ``--realistic``: notebooks that import numpy, pandas and matplotlib, group rows and draw a
  figure: papermill, nbsched with and without preloading the imports in its fork server, and
  Ploomber's ``Parallel`` executor (``ploomber build`` on a ``pipeline.yaml`` of Ploomber's own,
  the upstream in each notebook's parameters cell), installed by the bench into a venv of its own,
  ``benchmarks/.ploomber-venv`` (made on the first run; left out if it cannot be installed).
- ``--scale``: the scaling curve, nbsched alone on DAGs of 100, 300 and 1,000 notebooks in layers
  of 10 (each task after the 10 before): what a task costs as the run grows.
- ``--dask``: also the 40-notebook DAG on the Dask executor (a LocalCluster).

Columns: median, min and max of ``--repeat`` rounds (interleaved, so drift in the machine's load
hits every contender); the ratio of the median to sequential papermill; "task overhead", the
median over tasks of a task's wall time minus its cells' own execution time (papermill's
per-cell durations in the output notebook); "slot overhead", (wall x workers - all cells' time)
/ tasks: what each task costs beyond its cells, waiting and scheduling gaps included.

    python benchmarks/bench_pipeline.py [--repeat 5] [--workers 2] [--dags 1,6,6,6,1 1,24,25,25,24,1]
                                        [--realistic 1,3,4,4,4,3,1] [--scale 100,300,1000]
                                        [--scale-repeat 1] [--dask]
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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import papermill
from nbformat.v4 import new_code_cell, new_notebook

from nbsched.service import Config, Service

WORK = Path(__file__).resolve().parent / ".work"
PLOOMBER_VENV = Path(__file__).resolve().parent / ".ploomber-venv"
PLOOMBER_STAMP = "bench-installed"  # in the venv: written, with Ploomber's version, once the install finished
SEQUENTIAL = "papermill, sequential"


@dataclass
class Round:
    wall: float
    tasks: list[tuple[float, Path]] = field(default_factory=list)  # (task wall, output notebook)


# a realistic notebook: the data stack imported, 2,000 rows grouped, one figure drawn
REALISTIC = [
    "import numpy as np\nimport pandas as pd\nimport matplotlib.pyplot as plt",
    (
        "rng = np.random.default_rng(size)\n"
        "df = pd.DataFrame({'key': rng.integers(0, 20, 2000), 'value': rng.random(2000)})\n"
        "means = df.groupby('key')['value'].mean()\nmeans.head()"
    ),
    "fig, ax = plt.subplots(figsize=(4, 3))\nmeans.plot(ax=ax)\nplt.show()",
]


def build(layers: list[int], folder: Path, *, realistic: bool = False) -> tuple[Path, list[list[str]]]:
    """Write the notebooks and pipeline.yaml; return the spec path and the task names per layer.
    ``realistic``: each notebook imports numpy, pandas and matplotlib, groups rows, draws a figure."""
    folder.mkdir(parents=True)
    names: list[list[str]] = []
    lines = ["name: bench", "tasks:"]
    body = REALISTIC if realistic else ["total = sum(range(size))", "print(total)"]
    for depth, width in enumerate(layers):
        layer = [f"l{depth}_{i}" for i in range(width)]
        for name in layer:
            nb = new_notebook(
                cells=[
                    new_code_cell("upstream = {}\nsize = 10000", metadata={"tags": ["parameters"]}),
                    *(new_code_cell(code) for code in body),
                ]
            )
            nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
            nbformat.write(nb, str(folder / f"{name}.ipynb"))
            upstream = f", upstream: [{', '.join(names[-1])}]" if names else ""
            lines.append(f"  {name}: {{notebook: {name}.ipynb{upstream}}}")
        names.append(layer)
    spec = folder / "pipeline.yaml"
    spec.write_text("\n".join(lines) + "\n")
    return spec, names


def papermill_one(folder: Path, out: Path, name: str) -> tuple[float, Path]:
    out.mkdir(exist_ok=True)
    start = time.perf_counter()
    papermill.execute_notebook(
        str(folder / f"{name}.ipynb"),
        str(out / f"{name}.ipynb"),
        parameters={"size": 10000},
        progress_bar=False,
        kernel_name="python3",
    )
    return time.perf_counter() - start, out / f"{name}.ipynb"


def papermill_sequential(folder: Path, names: list[list[str]], out: Path) -> list[tuple[float, Path]]:
    return [papermill_one(folder, out, name) for layer in names for name in layer]


def papermill_threads(folder: Path, names: list[list[str]], out: Path, workers: int) -> list[tuple[float, Path]]:
    done: list[tuple[float, Path]] = []
    with ThreadPoolExecutor(workers) as pool:
        for layer in names:
            done.extend(pool.map(lambda n: papermill_one(folder, out, n), layer))
    return done


def ploomber_venv() -> Path | None:
    """A venv of Ploomber's own (``benchmarks/.ploomber-venv``), made once and kept while its stamp
    file says the install finished: Ploomber, the data stack and a ``python3`` kernelspec of the
    venv's Python under ``<venv>/share/jupyter``. None, and one line on stderr, if it fails."""
    import subprocess

    stamp = PLOOMBER_VENV / PLOOMBER_STAMP
    if stamp.exists():
        return PLOOMBER_VENV
    python = str(PLOOMBER_VENV / "bin" / "python")
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(PLOOMBER_VENV)],
        [python, "-m", "pip", "install", "--quiet", "ploomber", "numpy", "pandas", "matplotlib", "ipykernel"],
        [python, "-m", "ipykernel", "install", "--prefix", str(PLOOMBER_VENV), "--name", "python3"],
        [python, "-c", "import ploomber; print(ploomber.__version__)"],
    ]
    print(f"  installing Ploomber into {PLOOMBER_VENV}", file=sys.stderr)
    for step in steps:
        try:
            proc = subprocess.run(step, capture_output=True, text=True)
        except OSError as e:
            proc = subprocess.CompletedProcess(step, 1, "", str(e))
        if proc.returncode:
            last = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
            print(f"Ploomber left out: `{' '.join(step[1:4])} ...` failed: {last}", file=sys.stderr)
            return None
    stamp.write_text(proc.stdout)  # the version, for the table's title
    return PLOOMBER_VENV


def ploomber_parallel(folder: Path, names: list[list[str]], out: Path, workers: int) -> list[tuple[float, Path]]:
    """``ploomber build`` of the same DAG on ``Parallel(processes=workers)``, in the venv of
    :func:`ploomber_venv`. Ploomber reads a notebook's upstream from its parameters cell, so it runs
    copies of the notebooks (in ``<folder>-ploomber``) whose parameters cell lists the layer
    before; its kernels are the venv's own Python (its ``python3`` kernelspec, first on
    ``JUPYTER_PATH``). A task's wall time is papermill's ``start_time`` to ``end_time`` in the
    output notebook: kernel start to kernel shutdown, without Ploomber's own work around it (rendering
    the notebook, its pyflakes check, the product's metadata, the process pool's hand-offs)."""
    import json
    import subprocess

    venv = PLOOMBER_VENV
    sources = folder.with_name(f"{folder.name}-ploomber")
    if not sources.exists():
        sources.mkdir()
        for before, layer in zip([None, *names], names, strict=False):
            for name in layer:
                nb = nbformat.read(str(folder / f"{name}.ipynb"), as_version=4)
                params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
                params.source = f"upstream = {before!r}\nproduct = None\nsize = 10000"
                nbformat.write(nb, str(sources / f"{name}.ipynb"))
    out.mkdir(parents=True)
    spec = {
        "executor": {"dotted_path": "ploomber.executors.Parallel", "processes": workers},
        "tasks": [
            {"source": str(sources / f"{name}.ipynb"), "product": {"nb": str(out / f"{name}.ipynb")}}
            for layer in names
            for name in layer
        ],
    }
    (out / "pipeline.yaml").write_text(json.dumps(spec, indent=1))  # JSON is YAML
    env = {
        **os.environ,
        "JUPYTER_PATH": str(venv / "share" / "jupyter"),
        "PLOOMBER_STATS_ENABLED": "false",
        "PLOOMBER_VERSION_CHECK_DISABLED": "true",
    }
    proc = subprocess.run(
        [str(venv / "bin" / "ploomber"), "build", "--entry-point", str(out / "pipeline.yaml"), "--force"],
        capture_output=True,
        text=True,
        env=env,
        cwd=out,
    )
    if proc.returncode:
        tail = "\n".join((proc.stderr.strip() or proc.stdout.strip()).splitlines()[-15:])
        raise SystemExit(f"ploomber build exited {proc.returncode}:\n{tail}")
    tasks = []
    for path in (out / f"{name}.ipynb" for layer in names for name in layer):
        meta = json.loads(path.read_text())["metadata"]["papermill"]
        tasks.append((_time(meta["end_time"]) - _time(meta["start_time"]), path))
    return tasks


def nbsched_run(
    spec: Path, home: Path, workers: int, executor: str = "local", **kernels: Any
) -> list[tuple[float, Path]]:
    service = Service(Config.resolve(home=home, workers=workers, executor=executor, **kernels))
    try:
        run = service.run_pipeline(spec)
    finally:
        service.close()
    if run.state.value != "success":
        raise SystemExit(f"nbsched run {run.id} ended {run.state.value}")
    return [((t.ended_at - t.started_at).total_seconds(), Path(t.output_path)) for t in run.tasks.values()]


def nbsched_cli(spec: Path, home: Path, workers: int) -> list[tuple[float, Path]]:
    """``nbsched run`` as a user types it: a new process, its imports and database included."""
    import json
    import subprocess

    proc = subprocess.run(
        [sys.executable, "-m", "nbsched", "--home", str(home), "run", str(spec), "-w", str(workers), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    tasks = json.loads(proc.stdout)["tasks"].values()
    return [((_time(t["ended_at"]) - _time(t["started_at"])), Path(t["output_path"])) for t in tasks]


def _time(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text).timestamp()


def cells_time(path: Path) -> float:
    nb = nbformat.read(str(path), as_version=4)
    return sum(c.metadata.get("papermill", {}).get("duration") or 0.0 for c in nb.cells)


def measure(contenders: dict[str, Callable[[int], list[tuple[float, Path]]]], repeat: int) -> dict[str, list[Round]]:
    rounds: dict[str, list[Round]] = {name: [] for name in contenders}
    for i in range(repeat):
        for name, fn in contenders.items():
            start = time.perf_counter()
            tasks = fn(i)
            rounds[name].append(Round(time.perf_counter() - start, tasks))
            print(f"  round {i + 1}/{repeat}  {name}: {rounds[name][-1].wall:.2f}s", file=sys.stderr)
    return rounds


def overheads(results: list[Round], workers: int) -> tuple[float, float]:
    """The medians of the task overhead (a task's wall time minus its cells') over every task of
    every round, and of the slot overhead ((wall x workers - all cells' time) / tasks) over rounds."""
    task_over, slot_over = [], []
    for r in results:
        cells = [cells_time(path) for _, path in r.tasks]
        task_over.extend(wall - c for (wall, _), c in zip(r.tasks, cells, strict=True))
        slot_over.append((r.wall * workers - sum(cells)) / len(r.tasks))
    return statistics.median(task_over), statistics.median(slot_over)


def table(title: str, rounds: dict[str, list[Round]], workers: dict[str, int]) -> None:
    base = statistics.median(r.wall for r in rounds[SEQUENTIAL])
    print(f"\n{title}\n")
    print("| contender | median s | min s | max s | vs papermill seq | task overhead s | slot overhead s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, results in rounds.items():
        walls = [r.wall for r in results]
        med = statistics.median(walls)
        task_over, slot_over = overheads(results, workers[name])
        print(
            f"| {name} | {med:.2f} | {min(walls):.2f} | {max(walls):.2f} | {med / base:.2f}x "
            f"| {task_over:.3f} | {slot_over:.3f} |"
        )


def kernel_start_cpu(repeat: int) -> None:
    """CPU seconds of a kernel process from launch until it answers, the usual way and forked."""
    from bench_scheduler import cpu_seconds  # this folder is on sys.path when run as a script

    from nbsched.fork_server import ForkServer
    from nbsched.kernels import connect, start_kernel, stop_kernel

    def one(server: ForkServer | None) -> tuple[float, float]:
        start = time.perf_counter()
        kernel = connect(start_kernel("python3", WORK, server), 60)  # as nbsched does
        wall = time.perf_counter() - start
        cpu = cpu_seconds(kernel.km.provisioner.pid)
        kernel.kc.stop_channels()
        stop_kernel(kernel.km)
        return cpu, wall

    started = time.perf_counter()
    server = ForkServer()
    boot = time.perf_counter() - started
    try:
        usual = [one(None) for _ in range(repeat)]
        forked = [one(server) for _ in range(repeat)]
    finally:
        server.close()
    print(f"\nKernel start (python3, median of {repeat}; the fork server itself started in {boot:.2f}s)\n")
    print("| start | kernel CPU s | wall to ready s |")
    print("|---|---:|---:|")
    for name, values in (("usual (a new Python)", usual), ("forked by the fork server", forked)):
        print(
            f"| {name} | {statistics.median(c for c, _ in values):.3f} | {statistics.median(w for _, w in values):.3f} |"
        )


def process_start(repeat: int) -> None:
    """What a command costs before any notebook: ``nbsched --help``, and the imports of
    ``nbsched run`` up to its first notebook, with and without the CLI's skip of rfc3987_syntax."""
    import subprocess

    def wall(args: list[str]) -> float:
        start = time.perf_counter()
        subprocess.run(args, check=True, capture_output=True)
        return time.perf_counter() - start

    def imports(code: str) -> float:
        err = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", code], check=True, capture_output=True, text=True
        ).stderr
        return (
            sum(
                int(line.split("|")[1])
                for line in err.splitlines()
                if line.startswith("import time:")
                and line.split("|")[2].startswith(" ")
                and not line.split("|")[2].startswith("  ")
                and line.split("|")[1].strip().isdigit()
            )
            / 1e6
        )

    runner_path = "import nbsched.service, nbsched.runner, nbsched.notebook, papermill, nbformat"
    rows = [
        (
            "`nbsched --help`, wall",
            statistics.median(wall([sys.executable, "-m", "nbsched", "--help"]) for _ in range(repeat)),
        ),
        ("imports of `nbsched --help`", statistics.median(imports("import nbsched.cli") for _ in range(repeat))),
        (
            "imports of `nbsched run` (as the CLI does)",
            statistics.median(
                imports("from nbsched.cli import _without_slow_format_checks as f; f(); " + runner_path)
                for _ in range(repeat)
            ),
        ),
        ("the same imports, rfc3987_syntax allowed", statistics.median(imports(runner_path) for _ in range(repeat))),
    ]
    print(f"\nProcess start (median of {repeat}; imports summed from `python -X importtime`)\n")
    print("| measure | s |")
    print("|---|---:|")
    for name, value in rows:
        print(f"| {name} | {value:.3f} |")


def machine(repeat: int) -> str:
    import ipykernel
    import jupyter_client
    import nbclient

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return (
        f"{os.cpu_count()} cores ({cpu}), Linux {platform.release()}, Python {platform.python_version()}, "
        f"papermill {papermill.__version__}, nbclient {nbclient.__version__}, jupyter_client "
        f"{jupyter_client.__version__}, ipykernel {ipykernel.__version__}; median of {repeat}"
    )


def counts(text: str) -> list[int]:
    """``1,6,6,6,1``: positive whole numbers, comma-separated (an option's value)."""
    try:
        values = [int(x) for x in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give positive whole numbers separated by commas, e.g. 1,6,6,6,1")
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument(
        "--dags",
        nargs="*",
        type=counts,
        default=[[1, 6, 6, 6, 1]],
        help="trivial DAGs against papermill (e.g. also 1,24,25,25,24,1; the scaling curve covers larger ones)",
    )
    parser.add_argument(
        "--realistic",
        nargs="*",
        type=counts,
        default=[[1, 3, 4, 4, 4, 3, 1]],
        help="DAGs of notebooks that import numpy, pandas and matplotlib (none: leave them out)",
    )
    parser.add_argument(
        "--scale",
        nargs="*",
        type=counts,
        default=[[100, 300, 1000]],
        help="the scaling curve: DAGs of these many notebooks, layers of 10 (none: leave it out)",
    )
    parser.add_argument("--scale-repeat", type=int, default=1, help="rounds of the scaling curve")
    parser.add_argument("--dask", action="store_true", help="also the Dask executor on 1,8,10,10,8,3")
    args = parser.parse_args()
    logging.getLogger("papermill").setLevel(logging.ERROR)
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    w = args.workers
    print(f"Machine: {machine(args.repeat)}")
    kernel_start_cpu(max(args.repeat, 10))
    process_start(args.repeat)

    fresh = {"kernel_pool": False, "kernel_fork": False}
    for dag in args.dags:
        layers = dag
        n = sum(layers)
        spec, names = build(layers, WORK / f"notebooks{n}")
        contenders = {
            SEQUENTIAL: lambda i: papermill_sequential(spec.parent, names, WORK / f"pm{n}-{i}"),
            f"papermill, {w}-thread loop": lambda i: papermill_threads(spec.parent, names, WORK / f"pmt{n}-{i}", w),
            "nbsched, fresh kernels": lambda i: nbsched_run(spec, WORK / f"fresh{n}-{i}", w, **fresh),
            "nbsched, pool only": lambda i: nbsched_run(spec, WORK / f"pool{n}-{i}", w, kernel_fork=False),
            "nbsched, fork only": lambda i: nbsched_run(spec, WORK / f"fork{n}-{i}", w, kernel_pool=False),
            "nbsched, pool + fork (default)": lambda i: nbsched_run(spec, WORK / f"default{n}-{i}", w),
            "`nbsched run` command, default": lambda i: nbsched_cli(spec, WORK / f"cli{n}-{i}", w),
        }
        rounds = measure(contenders, args.repeat)
        workers = {name: 1 if name == SEQUENTIAL else w for name in contenders}
        table(f"{n} notebooks, layers {'-'.join(map(str, layers))}, {w} workers", rounds, workers)

    for dag in args.realistic:
        realistic_table(dag, w, args.repeat)
    for sizes in args.scale:
        scaling_table(sizes, w, args.scale_repeat)
    if args.dask:
        dask_table(w, args.repeat)
    shutil.rmtree(WORK, ignore_errors=True)


def realistic_table(layers: list[int], w: int, repeat: int) -> None:
    """Notebooks as users write them: the imports of the data stack dominate, and nbsched's fork
    server preloads them (``--kernel-preload auto``, the default) against importing them in
    every kernel (``none``); Ploomber's ``Parallel`` executor too, from a venv of its own
    (left out, with a line on stderr, if it cannot be installed)."""
    n = sum(layers)
    spec, names = build(layers, WORK / f"realistic{n}", realistic=True)
    contenders: dict[str, Callable[[int], list[tuple[float, Path]]]] = {
        SEQUENTIAL: lambda i: papermill_sequential(spec.parent, names, WORK / f"pm-real{n}-{i}"),
        f"papermill, {w}-thread loop": lambda i: papermill_threads(spec.parent, names, WORK / f"pmt-real{n}-{i}", w),
        "nbsched, preload none": lambda i: nbsched_run(spec, WORK / f"none-real{n}-{i}", w, kernel_preload=("none",)),
        "nbsched, default (preload auto)": lambda i: nbsched_run(spec, WORK / f"auto-real{n}-{i}", w),
    }
    title = f"{n} realistic notebooks (numpy, pandas, matplotlib), layers {'-'.join(map(str, layers))}, {w} workers"
    venv = ploomber_venv()
    if venv:
        contenders[f"Ploomber Parallel({w}), own venv"] = lambda i: ploomber_parallel(
            spec.parent, names, WORK / f"ploomber-real{n}-{i}", w
        )
        title += f"; Ploomber {(venv / PLOOMBER_STAMP).read_text().strip()}"
    rounds = measure(contenders, repeat)
    workers = {name: 1 if name == SEQUENTIAL else w for name in rounds}
    table(title, rounds, workers)


def scaling_table(sizes: list[int], w: int, repeat: int, width: int = 10) -> None:
    """What a task costs as the DAG grows: layers of ``width`` notebooks, each after every one of
    the layer before (so each task has the same number of upstream tasks at every size). The
    slot overhead per task, compared with the smallest DAG's, shows any cost that grows with the
    run's size (reading the whole run per task would make it grow linearly)."""
    rounds: dict[int, list[Round]] = {}
    warm, _ = build([width] * 2, WORK / "scale-warm")
    nbsched_run(warm, WORK / "scale-warm-home", w)  # imports and first kernels: not counted against the smallest
    for n in sizes:
        spec, _ = build([width] * (n // width), WORK / f"scale{n}")
        rounds[n] = measure({f"{n}": lambda i, n=n, spec=spec: nbsched_run(spec, WORK / f"scale{n}-{i}", w)}, repeat)[
            f"{n}"
        ]
    print(f"\nScaling: nbsched (default), layers of {width} notebooks, each after the {width} before, {w} workers\n")
    print("| notebooks | median s | tasks/s | task overhead s | slot overhead s | slot overhead vs smallest |")
    print("|---:|---:|---:|---:|---:|---:|")
    base = None
    for n, results in rounds.items():
        med = statistics.median(r.wall for r in results)
        task_over, slot = overheads(results, w)
        base = base or slot
        print(f"| {n:,} | {med:.2f} | {n / med:.1f} | {task_over:.3f} | {slot:.3f} | {slot / base:.2f}x |")


def dask_table(w: int, repeat: int) -> None:
    from distributed import LocalCluster

    layers = [1, 8, 10, 10, 8, 3]
    spec, names = build(layers, WORK / "notebooks-dask")
    started = time.perf_counter()
    with LocalCluster(
        n_workers=w, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=logging.ERROR
    ) as cluster:
        boot = time.perf_counter() - started
        rounds = measure(
            {
                SEQUENTIAL: lambda i: papermill_sequential(spec.parent, names, WORK / f"pm-dask-{i}"),
                "nbsched, local (default)": lambda i: nbsched_run(spec, WORK / f"local-dask-{i}", w),
                "nbsched, dask": lambda i: nbsched_run(spec, WORK / f"dask-{i}", w, cluster.scheduler_address),
            },
            repeat,
        )
    table(
        f"{sum(layers)} notebooks, layers {'-'.join(map(str, layers))}; Dask LocalCluster of {w} worker "
        f"processes (started once, in {boot:.1f}s)",
        rounds,
        {SEQUENTIAL: 1, "nbsched, local (default)": w, "nbsched, dask": w},
    )


if __name__ == "__main__":
    main()
