"""schemathesis against the OpenAPI document of a live `jupyter server` with the extension:
no 5xx, and every response conforms to the document."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, assume, given, settings
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import ignored_auth

pytestmark = pytest.mark.slow

TOKEN = "fuzz-token"
SAMPLE = Path(__file__).resolve().parent.parent / "sample_notebooks"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def live_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("root")
    shutil.copytree(SAMPLE, root / "sample_notebooks")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NBSCHED_")}
    log = open(root / "server.log", "wb")  # noqa: SIM115 - the server writes it until it ends
    # the scheduler stays off: fuzzed schedules must not start a storm of kernels
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter_server",
            "--no-browser",
            "--allow-root",
            "--ip=127.0.0.1",
            f"--port={port}",
            f"--IdentityProvider.token={TOKEN}",
            f"--ServerApp.root_dir={root}",
            "--NbschedApp.runner_enabled=False",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}/nbsched/api/v1"
    headers = {"Authorization": f"token {TOKEN}"}
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{base}/health", headers=headers, timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, (root / "server.log").read_text()
            time.sleep(0.3)
        made = requests.post(f"{base}/pipelines", json={"path": "sample_notebooks/pipeline.yaml"}, headers=headers)
        assert made.status_code == 201, made.text
        yield base, headers, root
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


# A request the document calls valid may still name a pipeline, file or cursor that is not
# there (404, or 422 for a spec whose notebook is missing or a cursor the API did not give out),
# but it is never malformed: a 400 for it means the document and the server disagree.
ACCEPTED = ["2xx", "403", "404", "409", "422"]


def _operations(live_server):
    base, headers, _ = live_server
    config = SchemathesisConfig.from_dict({"checks": {"positive_data_acceptance": {"expected-statuses": ACCEPTED}}})
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json", headers=headers, config=config)
    return [result.ok() for result in schema.get_all_operations()]


def _all_sent(query: dict | None) -> bool:
    """Whether every query parameter of a case is in the URL requests makes of it."""
    if not query:
        return True
    url = requests.Request("GET", "http://host/", params=query).prepare().url
    return set(query) <= set(parse_qs(urlsplit(url).query, keep_blank_values=True))


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
def test_every_operation_conforms_and_never_fails(live_server, mode):
    base, headers, root = live_server
    operations = _operations(live_server)
    assert len(operations) >= 20
    for operation in operations:
        # (schemathesis' own pytest loader does not work on pytest 9: one hypothesis test per operation here)
        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def check(case):
            # requests sends no key at all for some query values ([], {}, None, [[]], [None] ...),
            # so such an "invalid" extra parameter never reaches the server (seen: flaky ST201s)
            assume(_all_sent(case.query))
            # ignored_auth expects 401 where Jupyter answers 403 (test_server.py checks 403 on every route);
            # valid requests must be accepted (ACCEPTED), invalid ones refused (400, 404, 413, 422 ...)
            case.call_and_validate(base_url=base, headers=headers, excluded_checks=[ignored_auth])

        check()
    log = (root / "server.log").read_text()
    assert "Traceback" not in log, log[-3000:]
