"""The schema is made current when a store opens a database: new, older, or made before migrations."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config as AlembicConfig
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

from conftest import nbsched
from nbsched.errors import ConfigError
from nbsched.store import SqlStore
from nbsched.store.models import Base
from nbsched.store.schema import BASELINE, HEAD, MIGRATIONS


def _alembic(url: str) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url)
    return config


def _differences(url: str) -> list:
    engine = create_engine(url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    engine.dispose()
    return diff


def _revision(db: Path) -> str:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT version_num FROM alembic_version").fetchone()[0]


def test_head_is_the_newest_migration() -> None:
    assert ScriptDirectory.from_config(_alembic("sqlite://")).get_current_head() == HEAD


def test_a_new_database_and_a_migrated_one_both_match_the_models(tmp_path: Path) -> None:
    new = tmp_path / "new.db"
    SqlStore(f"sqlite:///{new}").close()
    assert _revision(new) == HEAD and _differences(f"sqlite:///{new}") == []

    migrated = tmp_path / "migrated.db"
    command.upgrade(_alembic(f"sqlite:///{migrated}"), HEAD)  # every migration, from nothing
    assert _differences(f"sqlite:///{migrated}") == []


def _database_before_migrations(db: Path) -> None:
    """The tables nbsched 0.1 made (no alembic_version), holding one finished run."""
    command.upgrade(_alembic(f"sqlite:///{db}"), BASELINE)
    with sqlite3.connect(db) as conn:
        conn.executescript("""
            DROP TABLE alembic_version;
            INSERT INTO runs (id, pipeline, pipeline_version, params, logical_date, trigger, state, created_at)
                VALUES ('20261101T060000-abcdef', 'old', 1, '{"region": "eu"}', '2026-11-01 06:00:00',
                        'manual', 'success', '2026-11-01 06:00:00');
            INSERT INTO task_runs (run_id, task, position, state, try_number, max_tries, outputs, updated_at)
                VALUES ('20261101T060000-abcdef', 'only', 0, 'success', 1, 1, '{"rows": 3}', '2026-11-01 06:00:05');
        """)


def test_a_database_made_before_migrations_is_upgraded_and_keeps_its_runs(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    _database_before_migrations(db)
    store = SqlStore(f"sqlite:///{db}")
    try:
        run = store.get_run("20261101T060000-abcdef")
        assert run.state.value == "success" and run.params == {"region": "eu"}
        assert run.tasks["only"].outputs == {"rows": 3} and run.tasks["only"].cell is None
    finally:
        store.close()
    assert _revision(db) == HEAD and _differences(f"sqlite:///{db}") == []


def test_a_database_of_a_newer_nbsched_is_refused_in_one_line(tmp_path: Path) -> None:
    db = tmp_path / "future.db"
    SqlStore(f"sqlite:///{db}").close()
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(ConfigError, match=r"revision 9999\) is newer than this nbsched knows .*upgrade nbsched"):
        SqlStore(f"sqlite:///{db}")
    proc = nbsched("--db", f"sqlite:///{db}", "runs", cwd=tmp_path)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "newer than this nbsched" in proc.stderr
