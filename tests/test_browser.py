"""What a person sees: JupyterLab with the extension, a notebook showing the run-history panel,
driven in a real headless Chromium (Debian's, installed when missing) by Playwright.

The sample pipeline ran once before the server started, so the panel opens on a history. The test
clicks Run now, waits for the new run to reach success in the panel (the server's runner executes
it), opens a task's output notebook from its link, shows a report inline and opens the run report.
Screenshots go to ``tests/artifacts/`` (``make screenshots`` copies them into ``docs/``).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from conftest import nbsched, write_notebook
from nbformat.v4 import new_code_cell, new_notebook

pytestmark = [pytest.mark.browser, pytest.mark.serial]  # JupyterLab and Chromium want the machine

SAMPLE = Path(__file__).resolve().parent.parent / "sample_notebooks"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM = "/usr/bin/chromium"
# no outbound traffic from the browser (the machine has no internet, and the test needs none)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 90_000


def _ensure_chromium() -> str:
    """Debian's Chromium, installed with apt when missing (never Playwright's own download)."""
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    install = [*sudo, "apt-get", "install", "-y", "chromium"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(install, capture_output=True, env=env).returncode != 0:
        subprocess.run([*sudo, "apt-get", "update"], capture_output=True, env=env)
        proc = subprocess.run(install, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            pytest.fail(f"cannot install Debian's chromium for the browser test: {proc.stderr.strip()[-300:]}")
    return CHROMIUM


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as reply:
        return json.loads(reply.read())


class Lab:
    def __init__(self, root: Path, port: int, token: str, proc: subprocess.Popen[bytes]) -> None:
        self.root, self.port, self.token, self.proc = root, port, token, proc
        self.url = f"http://127.0.0.1:{port}"

    def api(self, *path: str) -> Any:
        return _get(f"{self.url}/{'/'.join(path)}?token={self.token}")


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    root = tmp_path / "project"
    shutil.copytree(SAMPLE, root / "sales")
    # a history to look at: one run made from the terminal before JupyterLab starts
    nbsched("run", "sales/pipeline.yaml", "-p", "n_rows=1000", cwd=root, check=True, timeout=300)
    nbsched("schedule", "add", "sales-demo", "--cron", "0 6 * * 1-5", "--tz", "Europe/Paris", cwd=root, check=True)
    write_notebook(root / "nap.ipynb", "import time", "time.sleep(120)")
    nb = new_notebook(
        cells=[
            new_code_cell("%load_ext nbsched"),
            # registered from the notebook's kernel, run by the server's runner
            new_code_cell("%%nbsched_pipeline nap\ntasks:\n  nap: {notebook: nap.ipynb}"),
            new_code_cell("%nbsched panel sales-demo"),
        ]
    )
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(root / "panel.ipynb"))

    settings = tmp_path / "lab-user-settings" / "@jupyterlab"
    for extension, values in {
        "apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},  # no pop-ups
        "notebook-extension/tracker": {"windowingMode": "none"},  # every cell rendered, scrolled to or not
    }.items():
        (settings / extension).parent.mkdir(parents=True, exist_ok=True)
        (settings / f"{extension}.jupyterlab-settings").write_text(json.dumps(values))
    port, token = _free_port(), secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NBSCHED_")}
    env.update(
        JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "lab-user-settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "lab-workspaces"),
        JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
    )
    log = (tmp_path / "lab.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--port={port}",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root}",
            "--LabApp.extension_manager=readonly",
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.expose_app_in_browser=True",
            "--NbschedApp.poll=0.2",
            "--NbschedApp.workers=2",
            *(["--allow-root"] if os.geteuid() == 0 else []),
        ],
        cwd=root,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = Lab(root, port, token, proc)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if server.api("nbsched", "api", "v1", "health")["runner"]:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"jupyter lab did not start: {(tmp_path / 'lab.log').read_text()[-2000:]}")
            time.sleep(0.2)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    executable = _ensure_chromium()
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def _local_only(route: Any) -> None:
    url = route.request.url
    if url.startswith(("http://127.0.0.1", "ws://127.0.0.1", "data:", "blob:")):
        route.continue_()
    else:
        route.abort()


def _run_all_cells_when_the_kernel_is_ready(page: Any) -> None:
    # On a fresh server the status shows "idle" before the kernel has started, and a
    # Run All then does nothing: wait for the session's kernel itself to be connected and idle.
    page.wait_for_function(
        """() => {
            const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
            const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
            return k && k.connectionStatus === 'connected' && k.status === 'idle';
        }""",
        timeout=TIMEOUT_MS,
    )
    page.evaluate("""async () => {
        const w = window.jupyterapp.shell.currentWidget;
        await w.context.ready; await w.sessionContext.ready;
        window.jupyterapp.shell.collapseLeft();  // the whole width for the panel
        await window.jupyterapp.commands.execute('notebook:run-all-cells');
    }""")


def _eventually(page: Any, read: Callable[[], Any], expected: Any) -> None:
    """What the server says, asked again until it is ``expected`` (the browser showed the change,
    its store may say it a moment later)."""
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while (value := read()) != expected and time.monotonic() < deadline:
        page.wait_for_timeout(200)  # not time.sleep: the routed requests would stall meanwhile
    assert value == expected


def test_the_panel_in_jupyterlab_runs_a_pipeline_and_shows_it(lab: Lab, browser: Any) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)  # every assertion on the page waits, up to this long
    ARTIFACTS.mkdir(exist_ok=True)
    first = lab.api("nbsched", "api", "v1", "runs")["runs"][0]
    assert first["state"] == "success"

    context = browser.new_context(viewport={"width": 1280, "height": 1100})
    context.route("**/*", _local_only)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(f"{lab.url}/lab/tree/panel.ipynb?token={lab.token}")
    _run_all_cells_when_the_kernel_is_ready(page)

    panel = page.locator(".nbsched-panel")
    runs = panel.locator("table.nbsched-runs tbody tr")
    expect(runs).to_have_count(1)
    expect(page.locator(".jp-InputPrompt").first).to_have_text("[1]:")
    expect(runs.first).to_have_attribute("data-run", first["run_id"])
    expect(runs.first.locator('[data-state="success"]')).to_have_count(1)
    # the run's DAG picture, its tasks coloured by state
    dag = panel.locator("svg.nbsched-dag")
    expect(dag.locator('[data-task="report"][data-state="success"]')).to_have_count(1)

    panel.locator("input[placeholder^='key=value']").fill("n_rows=3000, seed=11")
    panel.get_by_role("button", name="Run now").click()
    expect(runs).to_have_count(2)  # the new run, newest first
    newest = runs.first
    expect(newest).not_to_have_attribute("data-run", first["run_id"])
    expect(newest.locator('[data-state="success"]')).to_have_count(1)
    run_id = newest.get_attribute("data-run")
    run = lab.api("nbsched", "api", "v1", "runs", run_id)
    assert run["state"] == "success" and run["params"] == {"n_rows": 3000, "seed": 11}
    assert run["trigger"] == "manual"
    detail = panel.locator(".nbsched-detail")
    expect(detail.locator('svg.nbsched-dag [data-task="report"][data-state="success"]')).to_have_count(1)
    expect(panel.locator(".widget-label", has_text="5/5 done")).to_have_count(1)
    panel.screenshot(path=str(ARTIFACTS / "panel.png"))

    # the pipeline's schedule, paused from the panel
    panel.get_by_role("button", name="Pause schedules").click()
    expect(panel.get_by_role("button", name="Resume schedules")).to_be_visible()
    _eventually(
        page, lambda: [s["enabled"] for s in lab.api("nbsched", "api", "v1", "schedules")["schedules"]], [False]
    )

    # the report of a task, inline in the panel
    panel.locator("select").nth(2).select_option("report")
    panel.get_by_role("button", name="Show report").click()
    report_frame = page.frame_locator("iframe.nbsched-report")
    expect(report_frame.locator("img").first).to_be_visible()  # the report notebook's chart
    expect(report_frame.locator("body")).to_contain_text(re.compile("revenue", re.IGNORECASE))
    panel.screenshot(path=str(ARTIFACTS / "panel-report.png"))

    # a running run: its progress names the cell its notebook is on; then Cancel stops it
    panel.locator("select").first.select_option("nap")
    panel.locator("input[placeholder^='key=value']").fill("")
    panel.get_by_role("button", name="Run now").click()
    expect(panel.locator(".widget-label", has_text="running: nap (cell 4/4: time.sleep(120))")).to_have_count(1)
    expect(runs).to_have_count(1)
    expect(runs.first.locator('[data-state="running"]')).to_have_count(1)
    panel.screenshot(path=str(ARTIFACTS / "panel-running.png"))
    nap_run = runs.first.get_attribute("data-run")
    panel.get_by_role("button", name="Cancel").click()
    expect(runs.first.locator('[data-state="cancelled"]')).to_have_count(1)
    _eventually(page, lambda: lab.api("nbsched", "api", "v1", "runs", nap_run)["tasks"]["nap"]["state"], "cancelled")
    panel.locator("select").first.select_option("sales-demo")
    expect(runs).to_have_count(2)

    # the task's link opens its output notebook in JupyterLab
    with context.expect_page() as opened:
        detail.locator('tr[data-task="report"] a').click()
    notebook = opened.value
    notebook.set_default_timeout(TIMEOUT_MS)
    expect(notebook.locator(".jp-Notebook .jp-Cell").first).to_be_visible()
    expect(notebook.locator(".lm-TabBar-tab.jp-mod-current", has_text="report.ipynb")).to_have_count(1)
    expect(notebook.locator(".jp-Notebook")).to_contain_text("seed = 11", use_inner_text=True)  # its parameters
    notebook.close()

    # the run report page the REST API serves
    page.goto(f"{lab.url}/nbsched/api/v1/runs/{run_id}/report?token={lab.token}")
    expect(page.locator("svg.nbsched-gantt")).to_be_visible()
    expect(page.locator("svg.nbsched-dag [data-state='success']")).to_have_count(5)
    page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
    context.close()
