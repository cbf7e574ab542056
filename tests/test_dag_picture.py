"""The DAG picture the panel (and reports) show: pure SVG, checked as XML."""

from __future__ import annotations

import xml.etree.ElementTree as ET

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
