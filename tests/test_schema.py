"""The schema is made current when a store opens a database, on SQLite and on the real PostgreSQL:
a new one, one made before migrations, one of a newer nbsched, several openers at once."""

from __future__ import annotations

import threading

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config as AlembicConfig
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from conftest import nbsched
from sqlalchemy import create_engine, text

from nbsched.errors import ConfigError
from nbsched.store import SqlStore
from nbsched.store.models import Base
from nbsched.store.schema import BASELINE, HEAD, MIGRATIONS


def _alembic(url: str) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))  # the ini syntax interpolates %
    return config


def _sql(url: str, *statements: str) -> list:
    engine = create_engine(url)
    with engine.begin() as conn:
        results = [
            conn.execute(text(s)).all() if s.lstrip().upper().startswith("SELECT") else conn.execute(text(s))
            for s in statements
        ]
    engine.dispose()
    return results


def _revision(url: str) -> str:
    return _sql(url, "SELECT version_num FROM alembic_version")[0][0][0]


def _differences(url: str) -> list:
    engine = create_engine(url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    engine.dispose()
    return diff


def test_head_is_the_newest_migration() -> None:
    assert ScriptDirectory.from_config(_alembic("sqlite://")).get_current_head() == HEAD


def test_a_new_database_matches_the_models(db_url: str) -> None:
    SqlStore(db_url).close()
    assert _revision(db_url) == HEAD and _differences(db_url) == []


def test_the_migrations_from_nothing_make_the_models_schema(db_url: str) -> None:
    command.upgrade(_alembic(db_url), HEAD)
    assert _differences(db_url) == []


def test_a_database_made_before_migrations_is_upgraded_and_keeps_its_runs(db_url: str) -> None:
    command.upgrade(_alembic(db_url), BASELINE)  # the tables nbsched 0.1 made ...
    _sql(
        db_url,
        "DROP TABLE alembic_version",  # ... which had no version table, and one finished run
        """INSERT INTO runs (id, pipeline, pipeline_version, params, logical_date, trigger, state, created_at)
            VALUES ('20261101T060000-abcdef', 'old', 1, '{"region": "eu"}', '2026-11-01 06:00:00',
                    'manual', 'success', '2026-11-01 06:00:00')""",
        """INSERT INTO task_runs (run_id, task, position, state, owner, try_number, max_tries, host, outputs,
                                   started_at, ended_at, updated_at)
            VALUES ('20261101T060000-abcdef', 'only', 0, 'success', 'r1', 1, 1, 'h1', '{"rows": 3}',
                    '2026-11-01 06:00:01', '2026-11-01 06:00:05', '2026-11-01 06:00:05')""",
    )
    store = SqlStore(db_url)
    try:
        run = store.get_run("20261101T060000-abcdef", with_tries=True)
        assert run.state.value == "success" and run.params == {"region": "eu"}
        assert run.tasks["only"].outputs == {"rows": 3} and run.tasks["only"].cell is None
        # the task's last try is kept as its first row of tries
        (only,) = run.tasks["only"].tries
        assert (only.try_number, only.state.value, only.runner, only.host) == (1, "success", "r1", "h1")
    finally:
        store.close()
    assert _revision(db_url) == HEAD and _differences(db_url) == []


def test_a_database_of_a_newer_nbsched_is_refused_in_one_line(db_url: str, tmp_path) -> None:
    SqlStore(db_url).close()
    _sql(db_url, "UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(ConfigError, match=r"revision 9999\) is newer than this nbsched knows .*upgrade nbsched"):
        SqlStore(db_url)
    proc = nbsched("--db", db_url, "runs", cwd=tmp_path)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "newer than this nbsched" in proc.stderr


def test_processes_opening_a_new_database_at_once_make_it_once(db_url: str) -> None:
    barrier, errors = threading.Barrier(4), []

    def open_it() -> None:
        barrier.wait()
        try:
            SqlStore(db_url).close()
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == [] and _sql(db_url, "SELECT count(*) FROM alembic_version")[0][0][0] == 1
