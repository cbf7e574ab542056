"""Run reports: the DAG and timeline pictures (pure, checked as XML), and the page of a real run
with its task reports, from the service and from the CLI."""

from __future__ import annotations

import os
import re
import time
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from conftest import nbsched, write_notebook, write_yaml

from nbsched.cli import cli
from nbsched.dag import layers as dag_layers
from nbsched.render import STATE_COLOURS
from nbsched.report import dag_svg, gantt_svg, run_report_html, tick_step

NS = {"s": "http://www.w3.org/2000/svg"}
T0 = datetime(2026, 11, 28, 6, 0, tzinfo=timezone.utc)

# a diamond with a link that skips a layer (extract -> report)
ORDER = ["extract", "clean", "by_region", "by_product", "report"]
UPSTREAM = {
    "clean": ["extract"],
    "by_region": ["clean"],
    "by_product": ["clean"],
    "report": ["by_region", "by_product", "extract"],
}


def boxes(svg: ET.Element) -> dict[str, ET.Element]:
    return {g.get("data-task"): g for g in svg.findall("s:g[@class='task']", NS)}


def box_xy(g: ET.Element) -> tuple[float, float]:
    rect = g.find("s:rect", NS)
    return float(rect.get("x")), float(rect.get("y"))


# -- the DAG ------------------------------------------------------------------------------------


def test_layers_are_the_longest_path_from_a_root():
    assert dag_layers(ORDER, UPSTREAM) == {"extract": 0, "clean": 1, "by_region": 2, "by_product": 2, "report": 3}
    assert dag_layers(["a", "b"], {}) == {"a": 0, "b": 0}


def test_dag_has_a_box_per_task_with_its_state_and_an_edge_per_link():
    states = {
        "extract": "success",
        "clean": "success",
        "by_region": "failed",
        "by_product": "running",
        "report": "upstream_failed",
    }
    svg = ET.fromstring(dag_svg(ORDER, UPSTREAM, states))
    found = boxes(svg)
    assert list(found) == ORDER
    assert {n: g.get("data-state") for n, g in found.items()} == states
    for name, g in found.items():
        assert g.find("s:rect", NS).get("fill") == STATE_COLOURS[states[name]]
        assert g.find("s:title", NS).text == f"{name}: {states[name]}"
        assert [t.text for t in g.findall("s:text", NS)] == [name, states[name]]

    links = {(u, t) for t, ups in UPSTREAM.items() for u in ups}
    edges = svg.findall("s:line[@class='edge']", NS)
    assert len(edges) == len(links) == 6
    assert {(e.get("data-from"), e.get("data-to")) for e in edges} == links
    arrows = svg.findall("s:polygon[@class='arrow']", NS)
    assert {(a.get("data-from"), a.get("data-to")) for a in arrows} == links
    # every link leaves its upstream box's right side and its arrowhead touches the downstream box's left side
    w = float(found["extract"].find("s:rect", NS).get("width"))
    routes = {(r.get("data-from"), r.get("data-to")): r for r in svg.findall("s:polyline[@class='route']", NS)}
    assert set(routes) == {("extract", "report")}  # the one link that skips layers
    for edge, arrow in zip(edges, arrows, strict=True):
        link = (edge.get("data-from"), edge.get("data-to"))
        start, end = found[link[0]], found[link[1]]
        first = routes[link].get("points").split()[0].split(",")[0] if link in routes else edge.get("x1")
        assert float(first) == pytest.approx(box_xy(start)[0] + w)
        tip = arrow.get("points").split()[0].split(",")
        assert float(tip[0]) == pytest.approx(box_xy(end)[0])
        assert float(edge.get("x2")) < float(tip[0])


def test_a_link_that_skips_layers_goes_around_the_boxes_between():
    svg = ET.fromstring(dag_svg(ORDER, UPSTREAM, {}))
    found = boxes(svg)
    [route] = svg.findall("s:polyline[@class='route']", NS)
    points = [tuple(map(float, p.split(","))) for p in route.get("points").split()]
    assert len(points) == 1 + 2 * 2  # from extract, then along its slot in clean's and by_*'s columns
    w, h = (float(found["extract"].find("s:rect", NS).get(k)) for k in ("width", "height"))
    for name in ("clean", "by_region", "by_product"):
        x, y = box_xy(found[name])
        crossing = [py for px, py in points if x <= px <= x + w]
        assert len(crossing) == 2 and crossing[0] == crossing[1], name  # straight through the column
        assert not y <= crossing[0] <= y + h, name  # above or below the box, not through it
    [edge] = [
        e
        for e in svg.findall("s:line[@class='edge']", NS)
        if e.get("data-to") == "report" and e.get("data-from") == "extract"
    ]
    assert (float(edge.get("x1")), float(edge.get("y1"))) == points[-1]


def test_dag_layers_go_left_to_right_and_share_a_column():
    svg = ET.fromstring(dag_svg(ORDER, UPSTREAM, {}))
    xy = {n: box_xy(g) for n, g in boxes(svg).items()}
    assert xy["extract"][0] < xy["clean"][0] < xy["by_region"][0] == xy["by_product"][0] < xy["report"][0]
    assert xy["by_region"][1] != xy["by_product"][1]  # one above the other
    width, height = float(svg.get("width")), float(svg.get("height"))
    assert svg.get("viewBox") == f"0 0 {svg.get('width')} {svg.get('height')}"
    assert all(0 <= x < width and 0 <= y < height for x, y in xy.values())
    # a task without state is pending, in light grey with dark text
    g = boxes(svg)["report"]
    assert g.get("data-state") == "pending" and g.find("s:rect", NS).get("fill") == STATE_COLOURS["pending"]
    assert g.find("s:text", NS).get("fill") == "#212121"


def test_dag_puts_a_task_near_its_upstream_tasks():
    # b0 feeds c1 only, b1 feeds c0 only: c0 should sit level with b1, not with b0
    order = ["a", "b0", "b1", "c0", "c1"]
    svg = ET.fromstring(dag_svg(order, {"b0": ["a"], "b1": ["a"], "c0": ["b1"], "c1": ["b0"]}, {}))
    y = {n: box_xy(g)[1] for n, g in boxes(svg).items()}
    assert y["c1"] == y["b0"] and y["c0"] == y["b1"]


def test_dag_escapes_names_and_shortens_long_ones():
    long = "a_" + "very_" * 20 + "long_name"
    svg_text = dag_svg(['x<&"y', long], {long: ['x<&"y']}, {'x<&"y': "success"})
    svg = ET.fromstring(svg_text)  # well-formed XML despite the name
    found = boxes(svg)
    assert set(found) == {'x<&"y', long}
    label = found[long].find("s:text", NS).text
    assert label.endswith("…") and len(label) < len(long)
    assert found[long].find("s:title", NS).text == f"{long}: pending"  # the whole name in the tooltip


def test_an_empty_dag_is_still_a_picture():
    svg = ET.fromstring(dag_svg([], {}, {}))
    assert boxes(svg) == {} and svg.get("class") == "nbsched-dag"


# -- the timeline -------------------------------------------------------------------------------


def bars(svg: ET.Element) -> dict[str, ET.Element]:
    return {r.get("data-task"): r for r in svg.iter("{http://www.w3.org/2000/svg}rect") if r.get("class") == "bar"}


def test_gantt_has_bars_for_started_tasks_only_with_widths_proportional_to_durations():
    s = timedelta(seconds=1)
    tasks = [
        ("extract", "success", T0, T0 + 2 * s),
        ("clean", "failed", T0 + 2 * s, T0 + 8 * s),
        ("side", "success", T0 + 2 * s, T0 + 5 * s),
        ("report", "upstream_failed", None, None),
        ("later", "pending", None, None),
    ]
    svg = ET.fromstring(gantt_svg(tasks))
    found = bars(svg)
    assert set(found) == {"extract", "clean", "side"}
    assert {n: r.get("data-state") for n, r in found.items()} == {
        "extract": "success",
        "clean": "failed",
        "side": "success",
    }
    assert found["clean"].get("fill") == STATE_COLOURS["failed"]
    width = {n: float(r.get("width")) for n, r in found.items()}
    x = {n: float(r.get("x")) for n, r in found.items()}
    assert width["clean"] / width["extract"] == pytest.approx(3, rel=0.01)
    assert width["side"] / width["extract"] == pytest.approx(1.5, rel=0.01)
    assert x["clean"] == x["side"] == pytest.approx(x["extract"] + width["extract"], abs=0.1)  # start at +2s
    assert [found[n].get("data-duration") for n in ("extract", "clean", "side")] == ["2.000", "6.000", "3.000"]
    # rows by start time, top to bottom
    y = {n: float(r.get("y")) for n, r in found.items()}
    assert y["extract"] < y["clean"] < y["side"]
    # a time axis in seconds: 0 to 8 s in steps of 2 s, the last tick at the end of the last bar
    labels = [
        t.text
        for t in svg.iter("{http://www.w3.org/2000/svg}text")
        if t.text and t.text[-1] == "s" and t.text[0].isdigit()
    ]
    assert labels == ["0s", "2s", "4s", "6s", "8s"]
    ticks = [
        float(line.get("x1")) for line in svg.iter("{http://www.w3.org/2000/svg}line") if line.get("class") == "tick"
    ]
    assert ticks[0] == pytest.approx(x["extract"])
    assert ticks[-1] == pytest.approx(x["clean"] + width["clean"], abs=0.1)


def test_gantt_draws_a_running_task_up_to_now():
    tasks = [("a", "success", T0, T0 + timedelta(seconds=4)), ("b", "running", T0 + timedelta(seconds=4), None)]
    found = bars(ET.fromstring(gantt_svg(tasks, now=T0 + timedelta(seconds=12))))
    assert found["b"].get("data-duration") == "8.000" and found["b"].get("data-state") == "running"
    assert float(found["b"].get("width")) == pytest.approx(2 * float(found["a"].get("width")), rel=0.01)
    without_now = bars(ET.fromstring(gantt_svg(tasks)))  # ends at the latest time it knows
    assert without_now["b"].get("data-duration") == "0.000"


def test_gantt_without_started_tasks():
    svg = ET.fromstring(gantt_svg([("a", "pending", None, None)]))
    assert bars(svg) == {} and "no task has started" in "".join(svg.itertext())


def test_axis_steps():
    assert tick_step(8) == 2 and tick_step(0.3) == 0.05 and tick_step(600) == 120 and tick_step(5000) == 900
    assert 3 <= 10 * 86400 / tick_step(10 * 86400) <= 6


# -- the page (pure) ----------------------------------------------------------------------------


class Page(HTMLParser):
    """What a reader sees: task rows with their state and links, params, and the two pictures."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.rows: dict[str, str] = {}
        self.links: dict[str, dict[str, str]] = {}
        self.params: dict[str, str] = {}
        self.title = ""
        self._row: str | None = None
        self._param: str | None = None
        self._link: str | None = None
        self._in_title = self._in_code = False
        self.feed(text)
        svgs = re.findall(r"<svg.*?</svg>", text, flags=re.S)
        self.dag, self.gantt = (ET.fromstring(s) for s in svgs)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "tr" and "data-task" in a:
            self._row = a["data-task"]
            self.rows[self._row] = a.get("data-state") or ""  # a comparison row has none; its task row follows
            self.links[self._row] = {}
        elif tag == "tr" and "data-param" in a:
            self._param = a["data-param"]
        elif tag == "a" and self._row is not None:
            self._link = a["href"]
        self._in_title |= tag == "title"
        self._in_code |= tag == "code"

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr":
            self._row = self._param = None
        self._in_title &= tag != "title"
        self._in_code &= tag != "code"
        if tag == "a":
            self._link = None

    def handle_data(self, data: str) -> None:
        if self._link is not None and self._row is not None:
            self.links[self._row][data] = self._link
        if self._in_title and not self.title:
            self.title = data
        if self._in_code and self._param is not None:
            self.params[self._param] = data


def test_page_escapes_everything_and_fetches_nothing():
    view = {
        "run_id": "r<1>",
        "pipeline": "p",
        "pipeline_version": 2,
        "state": "failed",
        "trigger": "schedule",
        "schedule_id": 3,
        "params": {"who": "<script>alert(1)</script>"},
        "logical_date": T0.isoformat(),
        "created_at": T0.isoformat(),
        "started_at": T0.isoformat(),
        "ended_at": (T0 + timedelta(seconds=75)).isoformat(),
        "error": "task 'a' failed",
        "tasks": {
            "a": {
                "state": "failed",
                "try_number": 2,
                "max_tries": 2,
                "error": "ValueError: <bad>",
                "outputs": {"k": "</pre>"},
                "started_at": T0.isoformat(),
                "ended_at": (T0 + timedelta(seconds=75)).isoformat(),
            }
        },
    }
    text = run_report_html(
        view,
        dag_svg(["a"], {}, {"a": "failed"}),
        gantt_svg([]),
        {"a": {"report": "a.html?x=1&y=2", "notebook": "a.ipynb"}},
    )
    assert "<script>" not in text and "&lt;script&gt;" in text and "ValueError: &lt;bad&gt;" in text
    assert "&lt;/pre&gt;" in text and "r&lt;1&gt;" in text
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text) and "@import" not in text
    page = Page(text)
    assert page.title == "p · run r<1> · failed"
    assert page.rows == {"a": "failed"} and page.links == {"a": {"report": "a.html?x=1&y=2", "notebook": "a.ipynb"}}
    assert page.params == {"who": '"<script>alert(1)</script>"'}
    assert "<dd>schedule 3</dd>" in text and "2/2" in text and "75.0s" in text and "2026-11-28 06:00:00 UTC" in text


SCRIPT = "<script>alert(1)</script>"


def test_a_script_in_a_task_name_an_error_or_a_parameter_is_text_in_the_report():
    name = f"t{SCRIPT}"
    ended = (T0 + timedelta(seconds=3)).isoformat()
    task = {
        "state": "failed",
        "try_number": 2,
        "max_tries": 2,
        "error": f"ValueError: {SCRIPT}",
        "outputs": {SCRIPT: SCRIPT},
        "started_at": T0.isoformat(),
        "ended_at": ended,
        "tries": [
            {
                "try_number": 1,
                "state": "up_for_retry",
                "host": SCRIPT,
                "error": SCRIPT,
                "started_at": T0.isoformat(),
                "ended_at": ended,
            }
        ],
    }
    view = {
        "run_id": "r1",
        "pipeline": "p",
        "pipeline_version": 1,
        "state": "failed",
        "trigger": SCRIPT,
        "schedule_id": None,
        "params": {SCRIPT: SCRIPT},
        "logical_date": T0.isoformat(),
        "created_at": T0.isoformat(),
        "started_at": T0.isoformat(),
        "ended_at": ended,
        "error": SCRIPT,
        "tasks": {name: task},
    }
    text = run_report_html(
        view,
        dag_svg([name], {}, {name: "failed"}),
        gantt_svg([(name, "failed", T0, T0 + timedelta(seconds=3))]),
        {name: {SCRIPT: f"{name}.html"}},
    )
    assert "<script" not in text.lower() and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    page = Page(text)  # and a reader sees the text as it was
    assert page.rows == {name: "failed"} and page.links == {name: {SCRIPT: f"{name}.html"}}
    assert page.params == {SCRIPT: f'"{SCRIPT}"'}
    assert set(boxes(page.dag)) == {name} and set(bars(page.gantt)) == {name}


# -- a project's own templates ------------------------------------------------------------------


def test_a_projects_templates_restyle_its_reports_and_are_seen_once_added(project, service):
    service.register(failing_pipeline(project))
    run_id = service.trigger("sales", {"region": "<west>"})
    packaged = service.run_report(run_id).read_text(encoding="utf-8")
    assert "data team" not in packaged

    own = service.config.home / "templates"
    own.mkdir(parents=True)
    (own / "run_report.html.j2").write_text(
        '{% extends "nbsched/run_report.html.j2" %}\n'
        "{% block style %}{{ super() }}h1 { color: #0d47a1; }{% endblock %}\n"
        "{% block footer %}<footer>by the data team, for {{ view.params.region }}</footer>{% endblock %}\n"
    )
    text = service.run_report(run_id).read_text(encoding="utf-8")  # this process rendered the packaged one
    assert "h1 { color: #0d47a1; }</style>" in text and "<footer>by the data team, for &lt;west&gt;</footer>" in text
    page = Page(text)  # the rest of the page as packaged
    assert page.title == f"sales · run {run_id} · queued" and set(page.rows) == {"extract", "clean", "publish"}

    # the pictures too, a whole file in place of the packaged one; an edit is seen at once
    (own / "dag.svg.j2").write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" class="nbsched-dag">'
        "{% for box in boxes %}<text>{{ box.name }}</text>{% endfor %}</svg>\n"
    )
    assert "<text>extract</text><text>clean</text>" in service.run_report(run_id).read_text(encoding="utf-8")
    (own / "dag.svg.j2").write_text('<svg xmlns="http://www.w3.org/2000/svg" class="nbsched-dag"></svg>\n')
    os.utime(own / "dag.svg.j2", (time.time() + 5, time.time() + 5))  # a later edit, whatever the clock's grain
    assert '<svg xmlns="http://www.w3.org/2000/svg" class="nbsched-dag"></svg>' in service.run_report(run_id).read_text(
        encoding="utf-8"
    )


# -- a real run ---------------------------------------------------------------------------------


def failing_pipeline(project: Path) -> Path:
    """extract (records rows) -> clean (raises) -> publish (so: upstream_failed)."""
    write_notebook(
        project / "extract.ipynb",
        "# extracting the rows\nimport nbsched\nnbsched.record('rows', 3)\nprint('extracted', region)",
        params="region = 'eu'\nupstream = {}",
    )
    write_notebook(project / "clean.ipynb", "raise ValueError('bad input data')")
    write_notebook(project / "publish.ipynb", "print('published')")
    return write_yaml(
        project / "pipeline.yaml",
        """
name: sales
params: {region: eu}
tasks:
  extract: extract.ipynb
  clean: {notebook: clean.ipynb, upstream: [extract]}
  publish: {notebook: publish.ipynb, upstream: [clean]}
""",
    )


@pytest.mark.kernel
def test_run_report_of_a_failed_run(project, service):
    run = service.run_pipeline(failing_pipeline(project), params={"region": "<north>"})
    assert run.state.value == "failed"

    index = service.run_report(run.id)
    folder = service.config.runs_dir / "sales" / run.id
    assert index == folder / "index.html"
    page = Page(index.read_text(encoding="utf-8"))
    states = {"extract": "success", "clean": "failed", "publish": "upstream_failed"}
    assert page.title == f"sales · run {run.id} · failed"
    assert page.rows == states
    assert {n: g.get("data-state") for n, g in boxes(page.dag).items()} == states
    assert {(e.get("data-from"), e.get("data-to")) for e in page.dag.findall("s:line[@class='edge']", NS)} == {
        ("extract", "clean"),
        ("clean", "publish"),
    }
    xy = {n: box_xy(g) for n, g in boxes(page.dag).items()}
    assert xy["extract"][0] < xy["clean"][0] < xy["publish"][0]
    timeline = bars(page.gantt)
    assert set(timeline) == {"extract", "clean"}  # publish never started
    assert float(timeline["clean"].get("x")) >= float(timeline["extract"].get("x"))
    assert page.params == {"region": '"<north>"'}
    text = index.read_text(encoding="utf-8")
    assert "ValueError: bad input data" in text and "{&#34;rows&#34;: 3}" in text

    # links to each task's report and notebook, relative, to files that exist; none for publish
    assert page.links == {
        "extract": {"report": "extract.html", "notebook": "extract.ipynb"},
        "clean": {"report": "clean.html", "notebook": "clean.ipynb"},
        "publish": {},
    }
    for links in page.links.values():
        for href in links.values():
            assert (folder / href).is_file(), href
    assert "extracting the rows" in (folder / "extract.html").read_text(encoding="utf-8")  # nbconvert, with code

    # without code: another index, linking the code-less reports
    nocode = service.run_report(run.id, hide_code=True)
    assert nocode == folder / "index.nocode.html" and index.exists()
    hidden = Page(nocode.read_text(encoding="utf-8"))
    assert hidden.links["clean"] == {"report": "clean.nocode.html", "notebook": "clean.ipynb"}
    report = (folder / "extract.nocode.html").read_text(encoding="utf-8")
    assert "extracted &lt;north&gt;" in report and "extracting the rows" not in report
    assert "bad input data" in (folder / "clean.nocode.html").read_text(encoding="utf-8")


@pytest.mark.kernel
def test_run_report_shows_what_the_earlier_tries_did(project, service):
    write_notebook(
        project / "flaky.ipynb",
        "raise ValueError(f'try {nbsched_try} failed')",
        params="nbsched_try = 0\nupstream = {}",
    )
    spec = write_yaml(project / "pipeline.yaml", "name: flaky\ntasks:\n  flaky: {notebook: flaky.ipynb, retries: 1}\n")
    run = service.run_pipeline(spec)
    text = service.run_report(run.id).read_text(encoding="utf-8")
    row = re.search(r'<tr data-task="flaky".*?</tr>', text, flags=re.S).group(0)
    final, earlier = row.split("earlier tries")
    assert "ValueError: try 2 failed" in final and "try 1 failed" not in final
    (first,) = re.findall(r'<li data-try="(\d+)">(.*?)</li>', earlier, flags=re.S)
    assert first[0] == "1" and "up_for_retry" in first[1] and "ValueError: try 1 failed" in first[1]


def test_report_of_a_queued_run_and_of_an_unknown_one(project, service):
    from nbsched.errors import NotFound

    service.register(failing_pipeline(project))
    run_id = service.trigger("sales")
    index = service.run_report(run_id)
    assert index == service.config.runs_dir / "sales" / run_id / "index.html"
    page = Page(index.read_text(encoding="utf-8"))
    assert set(page.rows.values()) == {"pending"} and bars(page.gantt) == {}
    assert all(links == {} for links in page.links.values())
    with pytest.raises(NotFound, match="nope"):
        service.run_report("nope")


@pytest.mark.kernel
def test_cli_report_prints_the_path_and_opens_it(project, service, monkeypatch):
    write_notebook(project / "one.ipynb", "x = 1")
    run = service.run_pipeline(project / "one.ipynb")
    assert run.state.value == "success"

    proc = nbsched("report", run.id, cwd=project)
    assert proc.returncode == 0, proc.stderr
    printed = proc.stdout.strip()
    assert printed == str(Path("nbsched-runs") / run.pipeline / run.id / "index.html")
    assert "one.html" in (project / printed).read_text(encoding="utf-8")
    assert (project / printed).with_name("one.html").is_file()

    proc = nbsched("report", "nope", cwd=project)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["Error: run 'nope' not found"]

    opened: list[Any] = []
    monkeypatch.setattr(click, "launch", lambda url, **kw: opened.append(url))
    result = CliRunner().invoke(cli, ["report", run.id, "--hide-code", "--open"])
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith("index.nocode.html")
    assert opened == [str(project / "nbsched-runs" / run.pipeline / run.id / "index.nocode.html")]


@pytest.mark.kernel
def test_run_with_report_writes_the_report_after_the_run(project):
    write_notebook(project / "one.ipynb", "print('hello from one')")
    proc = nbsched("run", "one.ipynb", "--report", cwd=project)
    assert proc.returncode == 0, proc.stderr
    printed = proc.stdout.strip().splitlines()[-1]
    assert printed.startswith("report:  nbsched-runs/one/") and printed.endswith("/index.html")
    index = project / printed.split()[-1]
    assert 'href="one.html"' in index.read_text(encoding="utf-8")
    assert "hello from one" in index.with_name("one.html").read_text(encoding="utf-8")


@pytest.mark.kernel
def test_a_mapped_tasks_instances_are_linked_not_converted(project, service):
    write_notebook(project / "one.ipynb", "import nbsched\nnbsched.record('square', item * item)", params="item = 0")
    write_notebook(project / "sum.ipynb", "x = 1")
    write_yaml(
        project / "pipeline.yaml",
        "name: many\ntasks:\n  one: {notebook: one.ipynb, for_each: [1, 2, 3, 4]}\n"
        "  total: {notebook: sum.ipynb, upstream: [one]}\n",
    )
    run = service.run_pipeline(project / "pipeline.yaml")
    assert run.state.value == "success"
    index = service.run_report(run.id)
    folder = index.parent
    page = Page(index.read_text(encoding="utf-8"))
    # each instance links its notebook (JupyterLab opens it; the server makes its report on request),
    # and no HTML report is made for it: 500 of them were 150 MB and minutes of nbconvert
    for i in range(4):
        assert page.links[f"one[{i}]"] == {"notebook": f"one%5B{i}%5D.ipynb"}
        assert (folder / f"one[{i}].ipynb").is_file() and not (folder / f"one[{i}].html").exists()
    assert page.links["total"] == {"report": "total.html", "notebook": "total.ipynb"}
    assert sorted(p.name for p in folder.glob("*.html")) == ["index.html", "total.html"]
    per_instance = index.stat().st_size / 4
    assert per_instance < 20_000, per_instance  # the page grows by a row or two per instance, not a notebook


def test_a_task_report_follows_its_notebook_to_the_try_that_ended_last(tmp_path):
    """A try's end makes its notebook the task's (``nbsched.outputs.publish``) when the database
    records it, which may be long after the notebook's last save: results written once a lost
    database is back. A report made meanwhile from the try before is newer than the notebook
    that replaces it, so a report judged fresh by being newer kept showing the try before."""
    from nbsched.outputs import publish
    from nbsched.reporting import task_html

    first, second = (write_notebook(tmp_path / f"t.try{n}.ipynb", f"print('try {n}')", params=None) for n in (1, 2))
    os.utime(second, (time.time() - 60, time.time() - 60))  # saved a minute before its end is recorded
    publish(first, "t")
    assert "try 1" in task_html(tmp_path / "t.ipynb").read_text()  # asked for while try 2 waits to be recorded
    publish(second, "t")
    assert "try 2" in task_html(tmp_path / "t.ipynb").read_text()
