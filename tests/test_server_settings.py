"""The server extension's settings: a bad one is refused in one line naming it, and the
extension then stays out of the server; it never starts on the defaults instead."""

from __future__ import annotations

from typing import Any

import pytest
from traitlets import TraitError
from traitlets.config import Config

from jupyter_ext.app import NbschedApp


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("workers", 100000, "NbschedApp.workers 100000: at most "),
        ("workers", -1, "NbschedApp.workers -1: expected a whole number >= 1"),
        ("executor", "nope", "NbschedApp.executor 'nope': unknown (use local, dask"),
        ("db_patience", -1.0, "NbschedApp.db_patience -1.0: expected a number of seconds >= 0"),
        ("lease", 0.0, "NbschedApp.lease 0.0: expected a number of seconds > 0"),
        ("poll", float("nan"), "NbschedApp.poll nan: expected a number of seconds > 0"),
        ("grace", float("inf"), "NbschedApp.grace inf: expected a number of seconds >= 0"),
    ],
)
def test_a_bad_setting_is_refused_in_one_line(setting: str, value: Any, message: str) -> None:
    with pytest.raises(TraitError) as refused:
        NbschedApp(config=Config({"NbschedApp": {setting: value}}))
    assert str(refused.value).startswith(message) and "\n" not in str(refused.value), str(refused.value)


def test_workers_are_bounded_by_the_executor_set_beside_them() -> None:
    # an existing Dask cluster bounds its own workers; the order of the settings does not matter
    app = NbschedApp(config=Config({"NbschedApp": {"workers": 100000, "executor": "dask://127.0.0.1:8786"}}))
    assert (app.workers, app.executor) == (100000, "dask://127.0.0.1:8786")
    with pytest.raises(TraitError, match=r"^NbschedApp.workers 100000: at most"):
        app.executor = "local"


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return {"ServerApp": {"jpserver_extensions": {"jupyter_ext": True}}, "NbschedApp": {"workers": -1}}


async def test_a_server_with_a_bad_setting_goes_on_without_the_extension(jp_fetch, jp_serverapp, jp_root_dir):
    reply = await jp_fetch("nbsched", "api", "v1", "health", raise_error=False)
    assert reply.code == 404 and reply.headers["Content-Type"].startswith("text/html")  # no nbsched route
    (app,) = jp_serverapp.extension_manager.extension_apps["jupyter_ext"]
    assert app.service is None and app.daemon is None
    assert not (jp_root_dir / ".nbsched").exists()  # no database was made with the default settings
