"""schemathesis against the OpenAPI document of a live `jupyter server` with the extension, on
SQLite and on PostgreSQL: no server error (``not_a_server_error``) on any route, every response
conforms to the document, every request the document calls valid is accepted (a 404 or 409 when
the server's state makes it so), every request it calls invalid is refused, and a body with an
unknown field is a 400 at every route.

``NBSCHED_FUZZ_EXAMPLES`` sets the examples per operation and mode (default 15, about a minute
for both databases); the run by hand the README tells of used 400 (about 22,000 requests).
"""

from __future__ import annotations

import collections
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import schemathesis
from conftest import PG_URL
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import ignored_auth

pytestmark = pytest.mark.slow

TOKEN = "fuzz-token"
SAMPLE = Path(__file__).resolve().parent.parent / "sample_notebooks"
EXAMPLES = int(os.environ.get("NBSCHED_FUZZ_EXAMPLES", "15"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def live_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("root")
    shutil.copytree(SAMPLE, root / "sample_notebooks")
    db: list[str] = []
    schema = None
    if request.param == "postgresql":  # a schema of its own in the machine's PostgreSQL (as pg_url)
        from sqlalchemy import create_engine, text

        schema = f"nbsched_fuzz_{secrets.token_hex(4)}"
        admin = create_engine(PG_URL)
        with admin.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema}"))
        db = [f"--NbschedApp.db_url={PG_URL}?options=-csearch_path%3D{schema}"]
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
            *db,
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
        # things that exist, for half the valid requests to name (the others name what is not there)
        run = requests.post(f"{base}/pipelines/sales-demo/runs", json={}, headers=headers).json()["run_id"]
        cancelled = requests.post(f"{base}/pipelines/sales-demo/runs", json={}, headers=headers).json()["run_id"]
        assert requests.post(f"{base}/runs/{cancelled}/cancel", headers=headers).status_code == 200
        schedule = requests.post(f"{base}/schedules", json={"pipeline": "sales-demo", "every": "1d"}, headers=headers)
        assert requests.put(f"{base}/pools/gpu", json={"slots": 1}, headers=headers).status_code == 201
        known = {"name": "sales-demo", "id": schedule.json()["id"], "run_id": [run, cancelled], "task": "report"}
        yield base, headers, root, known
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
        if schema is not None:
            with admin.begin() as conn:
                conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
            admin.dispose()


# A request the document calls valid may name a pipeline, schedule, run or file that is not
# there (404), conflict with a run's state (409), or mean something nbsched's core refuses
# (422: a cron expression, a time zone, a template, a spec's notebook that is missing: what no
# schema says); a 400 for it means the document and the server disagree.
ACCEPTED = ["2xx", "404", "409", "422"]
# ... and a 422 is one of those
# but "invalid" only for what the pipeline has: its tasks, its parameters' templates
MEANINGS = {"invalid_spec", "invalid_schedule", "invalid_cursor", "path_outside_root", "invalid"}


def _operations(base: str, headers: dict[str, str]) -> list[Any]:
    config = SchemathesisConfig.from_dict({"checks": {"positive_data_acceptance": {"expected-statuses": ACCEPTED}}})
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json", headers=headers, config=config)
    return [result.ok() for result in schema.get_all_operations()]


def _named(case: Any, known: dict[str, Any], pick: int) -> None:
    """``case`` naming the pipeline, schedule, run, task and pool that exist (still valid)."""
    for key in case.path_parameters or {}:
        value = known.get(key)
        case.path_parameters[key] = value[pick % len(value)] if isinstance(value, list) else value
    if case.path_parameters and "name" in case.path_parameters and "pools" in case.operation.path:
        case.path_parameters["name"] = "gpu"
    if isinstance(case.body, dict) and "pipeline" in case.body:
        case.body["pipeline"] = known["name"]


def _all_sent(query: dict[str, Any] | None) -> bool:
    """Whether every query parameter of a case is in the URL requests makes of it."""
    if not query:
        return True
    url = requests.Request("GET", "http://host/", params=query).prepare().url
    return set(query) <= set(parse_qs(urlsplit(url).query, keep_blank_values=True))


@pytest.mark.timeout(1800)  # a run by hand with many examples
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
def test_every_operation_conforms_and_never_fails(live_server, mode):
    base, headers, root, known = live_server
    operations = _operations(base, headers)
    assert len(operations) >= 25
    sent: collections.Counter[int] = collections.Counter()
    meanings: collections.Counter[str] = collections.Counter()
    for operation in operations:
        # (schemathesis' own pytest loader does not work on pytest 9: one hypothesis test per operation here)
        @given(case=operation.as_strategy(generation_mode=mode), pick=st.integers(0, 3))
        @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def check(case, pick):
            # requests sends no key at all for some query values ([], {}, None, [[]], [None] ...),
            # so such an "invalid" extra parameter never reaches the server (seen: flaky ST201s)
            assume(_all_sent(case.query))
            if mode is GenerationMode.POSITIVE and pick < 2:
                _named(case, known, pick)
            # every check, not_a_server_error first; ignored_auth expects 401 where Jupyter answers
            # 403 (test_server.py checks that every route refuses a request without the token)
            response = case.call_and_validate(base_url=base, headers=headers, excluded_checks=[ignored_auth])
            sent[response.status_code] += 1
            if mode is GenerationMode.POSITIVE and response.status_code == 422:
                code = response.json()["error"]
                meanings[code] += 1
                assert code in MEANINGS, (case.operation.label, case.body, response.text)

        check()
    print(
        f"\n{mode.name}: {sum(sent.values()):,} requests, statuses {dict(sorted(sent.items()))}, 422s {dict(meanings)}"
    )
    assert not any(status >= 500 for status in sent)
    log = (root / "server.log").read_text()
    assert "Traceback" not in log, log[log.find("Traceback") - 500 :][:4000]


def test_a_body_with_an_unknown_field_is_a_400_at_every_route(live_server):
    base, headers, _, _ = live_server
    document = requests.get(f"{base}/openapi.json", headers=headers).json()
    tried = 0
    for path, item in document["paths"].items():
        url = base + path.replace("{name}", "sales-demo").replace("{id}", "1").replace("{run_id}", "r1")
        url = url.replace("{task}", "report")
        for method in ("post", "put", "patch"):
            if method not in item:
                continue
            reply = requests.request(method, url, json={"no_such_field": 1}, headers=headers, timeout=30)
            assert reply.status_code == 400, (method, path, reply.text)
            assert reply.json()["message"].startswith("body.no_such_field: unknown field"), (method, path, reply.text)
            tried += 1
    assert tried >= 9
