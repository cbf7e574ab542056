"""The facade every surface calls (CLI now; server, magics and widgets later).

Surfaces never touch the store, the runner or the executors directly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Mapping

from nbsched.dag import RunState
from nbsched.errors import SpecError
from nbsched.params import task_parameters
from nbsched.spec import PipelineSpec, load_pipeline, parse_pipeline
from nbsched.clock import utcnow
from nbsched.store import RunRecord, SqlStore

DEFAULT_HOME = ".nbsched"


@dataclass(frozen=True, kw_only=True)
class Config:
    """Where state and outputs live and how much runs at once. Defaults: ``./.nbsched/``."""

    home: Path
    db_url: str
    runs_dir: Path
    workers: int

    @classmethod
    def resolve(cls, *, home: str | Path | None = None, db_url: str | None = None,
                runs_dir: str | Path | None = None, workers: int | None = None) -> Config:
        home_path = Path(home or DEFAULT_HOME).absolute()
        return cls(
            home=home_path,
            db_url=db_url or f"sqlite:///{home_path / 'nbsched.db'}",
            runs_dir=Path(runs_dir).absolute() if runs_dir else home_path / "runs",
            workers=workers or os.cpu_count() or 1,
        )


class Service:
    def __init__(self, config: Config) -> None:
        self.config = config
        self._store: SqlStore | None = None

    @property
    def store(self) -> SqlStore:
        if self._store is None:
            self._store = SqlStore(self.config.db_url)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()

    # -- pipelines ------------------------------------------------------------------------
    def validate(self, path: str | Path, params: Mapping[str, Any] | None = None) -> PipelineSpec:
        """Load and check a spec, its notebooks and its parameter templates (a dry render)."""
        spec = load_pipeline(path)
        now = utcnow()
        try:
            for task in spec.tasks.values():
                task_parameters(spec, task, overrides=params or {}, run_id="validate", logical_date=now,
                                run_dir=str(self.config.runs_dir / spec.name / "validate"), upstream={})
        except SpecError as exc:
            raise SpecError(f"{path}: {exc}") from None
        return spec

    def spec_of(self, run: RunRecord) -> PipelineSpec:
        """The spec a run was created with (its pipeline version's snapshot)."""
        snap = self.store.get_pipeline(run.pipeline, run.pipeline_version).spec
        return parse_pipeline(snap["raw"], base_dir=Path(snap["base_dir"]), source=f"{run.pipeline} v{run.pipeline_version}")

    # -- runs -----------------------------------------------------------------------------
    def run_pipeline(self, path: str | Path, *, params: Mapping[str, Any] | None = None,
                     workers: int | None = None, logical_date: datetime | None = None,
                     listener: Callable[..., None] | None = None,
                     on_created: Callable[[str, PipelineSpec], None] | None = None) -> RunRecord:
        """Run a pipeline here and now, to its end (or Ctrl-C). Returns the finished run."""
        from nbsched.executors import LocalExecutor
        from nbsched.runner import Runner

        overrides = dict(params or {})
        spec = self.validate(path, overrides)  # a bad spec or override fails here, before a run exists
        now = utcnow()
        version = self.store.save_pipeline(
            spec.name, {"raw": spec.raw, "base_dir": str(spec.base_dir)},
            str(spec.source) if spec.source else None)
        executor = LocalExecutor(workers or self.config.workers)
        runner = Runner(self.store, executor, self.config.runs_dir, spec_loader=self.spec_of, listener=listener)
        try:
            with runner:
                run_id = self.store.create_run(
                    pipeline=spec.name, version=version, params=overrides, logical_date=logical_date or now,
                    trigger="manual", tasks={name: spec.tasks[name].max_tries for name in spec.order},
                    owner=runner.id)
                assert run_id is not None
                if on_created is not None:
                    on_created(run_id, spec)
                runner.run([run_id])
        finally:
            executor.shutdown()
        return self.store.get_run(run_id)

    def get_run(self, run_id: str) -> RunRecord:
        return self.store.get_run(run_id)

    def list_runs(self, *, pipeline: str | None = None, state: str | None = None,
                  limit: int = 20) -> list[RunRecord]:
        return self.store.list_runs(pipeline=pipeline, state=RunState(state) if state else None, limit=limit)


def run_view(run: RunRecord) -> dict[str, Any]:
    """The JSON shape of a run, shared by ``show --json``, ``run --json`` and the REST API."""
    return {
        "run_id": run.id,
        "pipeline": run.pipeline,
        "pipeline_version": run.pipeline_version,
        "state": run.state.value,
        "params": run.params,
        "logical_date": _iso(run.logical_date),
        "trigger": run.trigger,
        "error": run.error,
        "created_at": _iso(run.created_at),
        "started_at": _iso(run.started_at),
        "ended_at": _iso(run.ended_at),
        "tasks": {
            name: {
                "state": t.state.value,
                "try_number": t.try_number,
                "max_tries": t.max_tries,
                "error": t.error,
                "output_path": t.output_path,
                "outputs": t.outputs,
                "host": t.host,
                "started_at": _iso(t.started_at),
                "ended_at": _iso(t.ended_at),
            }
            for name, t in run.tasks.items()
        },
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
