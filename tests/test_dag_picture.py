"""The DAG picture the panel (and reports) show: pure SVG, checked as XML; and the DAG's layers
as `validate` prints them."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from conftest import nbsched, write_notebook, write_yaml

from nbsched.report import dag_svg

NS = {"s": "http://www.w3.org/2000/svg"}


def test_every_task_is_a_box_coloured_by_state_with_an_edge_per_link():
    order = ["extract", "clean", "by_region", "by_product", "report"]
    upstream = {
        "clean": ["extract"],
        "by_region": ["clean"],
        "by_product": ["clean"],
        "report": ["by_region", "by_product"],
    }
    states = {"extract": "success", "clean": "success", "by_region": "failed", "by_product": "running"}
    svg = ET.fromstring(dag_svg(order, upstream, states))
    boxes = {g.get("data-task"): g for g in svg.findall("s:g[@class='task']", NS)}
    assert list(boxes) == order
    assert {n: g.get("data-state") for n, g in boxes.items()} == {**states, "report": "pending"}
    assert boxes["by_region"].find("s:rect", NS).get("fill") == "#c62828"
    edges = {(e.get("data-from"), e.get("data-to")) for e in svg.findall("s:line[@class='edge']", NS)}
    assert edges == {(u, t) for t, ups in upstream.items() for u in ups}
    x = {n: float(g.find("s:rect", NS).get("x")) for n, g in boxes.items()}
    assert x["extract"] < x["clean"] < x["by_region"] == x["by_product"] < x["report"]  # layers, left to right


def test_names_are_escaped():
    svg = dag_svg(["a<b"], {}, {"a<b": "success"})
    assert "a&lt;b" in svg and ET.fromstring(svg) is not None


@pytest.mark.parametrize(
    ("tasks", "drawn"),
    [
        (  # no task waits for another: one layer, never a chain
            "  a: nb.ipynb\n  b: nb.ipynb\n  c: nb.ipynb\n",
            ["3 task(s) in 1 layer(s)", "  layer 1: a, b, c"],
        ),
        (
            (
                "  top: nb.ipynb\n  left: {notebook: nb.ipynb, upstream: top}\n"
                "  right: {notebook: nb.ipynb, upstream: top}\n  bottom: {notebook: nb.ipynb, upstream: [left, right]}\n"
            ),
            [
                "4 task(s) in 3 layer(s)",
                "  layer 1: top",
                "  layer 2: left (after top), right (after top)",
                "  layer 3: bottom (after left, right)",
            ],
        ),
        (  # a fan-in, and a link that skips a layer
            (
                "  a: nb.ipynb\n  b: nb.ipynb\n  c: {notebook: nb.ipynb, upstream: a}\n"
                "  join: {notebook: nb.ipynb, upstream: [a, b, c]}\n"
            ),
            ["4 task(s) in 3 layer(s)", "  layer 1: a, b", "  layer 2: c (after a)", "  layer 3: join (after a, b, c)"],
        ),
        (
            (
                "  ls: nb.ipynb\n  train: {notebook: nb.ipynb, grid: {region: [eu, us, apac], model: [linear, tree]}}\n"
                '  each: {notebook: nb.ipynb, upstream: ls, for_each: "{{ upstream.ls.files }}"}\n'
                "  fixed: {notebook: nb.ipynb, for_each: [1, 2]}\n"
            ),
            [
                "4 task(s) in 2 layer(s)",
                "  layer 1: ls, train (grid: 6 instances), fixed (for_each: 2 items)",
                "  layer 2: each (for_each upstream.ls.files; after ls)",
            ],
        ),
    ],
    ids=["independent", "diamond", "fan-in", "mapped"],
)
def test_validate_draws_the_layers_of_the_dag(project, tasks, drawn):
    write_notebook(project / "nb.ipynb", "x = 1")
    write_yaml(project / "pipeline.yaml", f"name: drawn\ntasks:\n{tasks}")
    proc = nbsched("validate", "pipeline.yaml", cwd=project)
    assert proc.returncode == 0, proc.stderr
    first, *layers = proc.stdout.splitlines()
    assert first == f"pipeline.yaml: ok — pipeline 'drawn', {drawn[0]}" and layers == drawn[1:]
