"""The runner's semantics without kernels: retries and backoff, branching, trigger rules,
fencing, reaping, max_active_runs, cancel and timeouts, each on a real SQLite store, with a
``FakeExecutor`` finishing tries as scripted and a ``FakeClock`` moved instead of slept."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from fakes import HANG, Fail, FakeClock, FakeExecutor, Succeed

from nbsched.failures import TaskFailure
from nbsched.notebook import TaskOutcome
from nbsched.runner import Runner
from nbsched.spec import PipelineSpec, parse_pipeline
from nbsched.states import RunState, RunTrigger, StopReason, TaskState
from nbsched.store import RunRecord, SqlStore

OPEN = [RunState.QUEUED, RunState.RUNNING]
BAD_INPUT = "ValueError: bad input (cell 4: raise ValueError('bad input'))"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(tmp_path: Path, clock: FakeClock) -> Iterator[SqlStore]:
    s = SqlStore(f"sqlite:///{tmp_path / 'nbsched.db'}", clock=clock)
    yield s
    s.close()


class Pipelines:
    """Specs by name (the runner's spec loader), and runs of them queued in the store."""

    def __init__(self, store: SqlStore, base_dir: Path) -> None:
        self.store = store
        self.base_dir = base_dir
        self.specs: dict[str, PipelineSpec] = {}

    def add(self, text: str) -> PipelineSpec:
        spec = parse_pipeline(yaml.safe_load(text), base_dir=self.base_dir)
        self.specs[spec.name] = spec
        return spec

    def load(self, run: RunRecord) -> PipelineSpec:
        return self.specs[run.pipeline]

    def queue(self, name: str, *, max_active_runs: int | None = None) -> str:
        spec = self.specs[name]
        run_id = self.store.create_run(
            pipeline=name,
            version=1,
            params={},
            logical_date=self.store.clock.now(),
            trigger=RunTrigger.MANUAL,
            max_active_runs=max_active_runs,
            tasks={t: spec.tasks[t].max_tries for t in spec.order},
        )
        assert run_id is not None
        return run_id


@pytest.fixture
def pipelines(store: SqlStore, tmp_path: Path) -> Pipelines:
    return Pipelines(store, tmp_path)


@pytest.fixture
def make_runner(
    store: SqlStore, pipelines: Pipelines, clock: FakeClock, tmp_path: Path
) -> Iterator[Callable[..., Runner]]:
    """Runners as ``nbsched serve`` runs them (registered, taking any unowned run), on the fake clock."""
    entered: list[Runner] = []

    def make(executor: FakeExecutor, **options: Any) -> Runner:
        runner = Runner(store, executor, tmp_path / "runs", spec_loader=pipelines.load, poll=0, clock=clock, **options)
        entered.append(runner.__enter__())
        return runner

    yield make
    for runner in entered:
        runner.__exit__(None, None, None)


def turn(runner: Runner) -> float | None:
    """One turn of the daemon's loop: a step over the open runs, then every event it brought."""
    wake = runner.step(runner.store.list_runs(states=OPEN, unowned=True, limit=None, oldest_first=True))
    runner.wait(0)
    return wake


def settle(runner: Runner, clock: FakeClock, turns: int = 50) -> None:
    """Turn until no run is open, moving the clock to whatever the runner waits for."""
    for _ in range(turns):
        wake = turn(runner)
        if not runner.store.list_runs(states=OPEN, limit=None):
            return
        if wake is not None and runner.events.empty():
            clock.advance(wake)
    raise AssertionError(f"runs still open after {turns} turns")


def test_a_failed_try_is_retried_after_its_delay_doubling_each_time(store, pipelines, make_runner, clock):
    pipelines.add("""
name: flaky
tasks:
  t: {notebook: t.ipynb, retries: 2, retry_delay: 10s, retry_exponential_backoff: true}
""")
    run_id = pipelines.queue("flaky")
    executor = FakeExecutor({"t": [Fail()]})
    runner = make_runner(executor)

    turn(runner)  # try 1 fails
    task = store.get_run(run_id).tasks["t"]
    assert task.state is TaskState.UP_FOR_RETRY and task.next_try_at == clock.now() + timedelta(seconds=10)
    clock.advance(9.9)
    assert turn(runner) == pytest.approx(0.1) and executor.tries("t") == [1]  # not due yet
    clock.advance(0.1)
    turn(runner)  # due: queued, claimed, fails again
    assert executor.tries("t") == [1, 2]
    assert store.get_run(run_id).tasks["t"].next_try_at == clock.now() + timedelta(seconds=20)  # twice the delay
    clock.advance(20)
    turn(runner)  # try 3 fails, the last
    turn(runner)  # the run ends

    run = store.get_run(run_id, with_tries=True)
    t = run.tasks["t"]
    assert run.state is RunState.FAILED and executor.tries("t") == [1, 2, 3]
    assert t.state is TaskState.FAILED and t.try_number == 3 and t.error == BAD_INPUT
    assert [(a.try_number, a.state, a.error) for a in t.tries] == [
        (1, TaskState.UP_FOR_RETRY, BAD_INPUT),
        (2, TaskState.UP_FOR_RETRY, BAD_INPUT),
        (3, TaskState.FAILED, BAD_INPUT),
    ]


def test_a_failure_is_stored_as_data_beside_its_line(store, pipelines, make_runner, clock):
    pipelines.add("name: one\ntasks:\n  t: {notebook: t.ipynb, retries: 1}\n")
    run_id = pipelines.queue("one")
    failure = TaskFailure(ename="MemoryError", evalue="", cell=7, source="b = bytearray(10**15)")
    settle(make_runner(FakeExecutor({"t": [Fail("MemoryError", "", 7, "b = bytearray(10**15)"), Succeed()]})), clock)

    t = store.get_run(run_id, with_tries=True).tasks["t"]
    assert t.state is TaskState.SUCCESS and t.error is None and t.failure is None  # the retry that worked
    first = t.tries[0]
    assert first.failure == failure and first.error == str(failure) == "MemoryError (cell 7: b = bytearray(10**15))"


@pytest.mark.parametrize(
    "outcome",
    [
        TaskOutcome.failed(
            TaskFailure(ename="KeyError", evalue="'x'", cell=3, source="d['x']"),
            outputs={"rows": 3},
            host="tcp://10.0.0.7:4242",
        ),
        TaskOutcome(stopped=StopReason.TIMED_OUT, error="timed out after 2m (cell 3: time.sleep(600))"),
        TaskOutcome(outputs={"rows": [1, 2]}, branch=["small"]),
    ],
    ids=["failed", "stopped", "succeeded"],
)
def test_an_outcome_sent_back_by_a_dask_worker_keeps_its_failure_and_stop_as_data(outcome):
    assert TaskOutcome.from_json(json.loads(json.dumps(outcome.to_json()))) == outcome


def test_a_retry_that_succeeds_ends_the_run_success_with_its_outputs(store, pipelines, make_runner, clock):
    pipelines.add("name: recovers\ndefaults: {retries: 1, retry_delay: 0s}\ntasks:\n  once: {notebook: o.ipynb}\n")
    run_id = pipelines.queue("recovers")
    settle(make_runner(FakeExecutor({"once": [Fail(), Succeed({"try": 2})]})), clock)

    run = store.get_run(run_id)
    assert run.state is RunState.SUCCESS
    assert run.tasks["once"].try_number == 2 and run.tasks["once"].outputs == {"try": 2}


def test_a_branch_skips_the_unchosen_path_and_its_descendants(store, pipelines, make_runner, clock):
    pipelines.add("""
name: branching
tasks:
  choose: {notebook: c.ipynb}
  small:  {notebook: s.ipynb, upstream: [choose]}
  big:    {notebook: b.ipynb, upstream: [choose]}
  big_report: {notebook: r.ipynb, upstream: [big]}
  join:   {notebook: j.ipynb, upstream: [small, big], trigger_rule: none_failed_min_one_success}
""")
    run_id = pipelines.queue("branching")
    executor = FakeExecutor({"choose": [Succeed(branch=["small"])]})
    settle(make_runner(executor), clock)

    run = store.get_run(run_id)
    assert {n: t.state for n, t in run.tasks.items()} == {
        "choose": TaskState.SUCCESS,
        "small": TaskState.SUCCESS,
        "big": TaskState.SKIPPED,
        "big_report": TaskState.SKIPPED,
        "join": TaskState.SUCCESS,
    }
    assert run.state is RunState.SUCCESS
    assert sorted(r.task for r in executor.requests) == ["choose", "join", "small"]


def test_a_branch_to_a_task_that_is_not_downstream_fails_the_task(store, pipelines, make_runner, clock):
    pipelines.add("name: bad\ntasks:\n  choose: {notebook: c.ipynb}\n  next: {notebook: n.ipynb, upstream: [choose]}\n")
    run_id = pipelines.queue("bad")
    settle(make_runner(FakeExecutor({"choose": [Succeed(branch=["nope"])]})), clock)

    run = store.get_run(run_id)
    assert run.tasks["choose"].state is TaskState.FAILED and run.tasks["choose"].failure is None
    assert "'nope' is not a direct downstream task of 'choose'" in (run.tasks["choose"].error or "")
    assert run.tasks["next"].state is TaskState.UPSTREAM_FAILED and run.state is RunState.FAILED


def test_trigger_rules_decide_what_runs_after_a_failure(store, pipelines, make_runner, clock):
    pipelines.add("""
name: failing
tasks:
  extract: {notebook: e.ipynb}
  clean:   {notebook: c.ipynb, upstream: [extract]}
  publish: {notebook: p.ipynb, upstream: [clean]}
  report:  {notebook: r.ipynb, upstream: [extract], trigger_rule: all_done}
  alert:   {notebook: a.ipynb, upstream: [extract], trigger_rule: one_failed}
  cheer:   {notebook: h.ipynb, upstream: [extract], trigger_rule: one_success}
  tidy:    {notebook: t.ipynb, upstream: [report, alert], trigger_rule: all_success}
""")
    run_id = pipelines.queue("failing")
    settle(make_runner(FakeExecutor({"extract": [Fail()]})), clock)

    run = store.get_run(run_id)
    assert {n: t.state for n, t in run.tasks.items()} == {
        "extract": TaskState.FAILED,
        "clean": TaskState.UPSTREAM_FAILED,
        "publish": TaskState.UPSTREAM_FAILED,
        "report": TaskState.SUCCESS,
        "alert": TaskState.SUCCESS,
        "cheer": TaskState.UPSTREAM_FAILED,
        "tidy": TaskState.SUCCESS,
    }
    assert run.tasks["clean"].error == "an upstream task failed"
    assert run.state is RunState.FAILED


def test_a_try_taken_from_a_paused_runner_cannot_write_its_result(
    store, pipelines, make_runner, clock, caplog, tmp_path
):
    pipelines.add("name: fenced\ntasks:\n  t: {notebook: t.ipynb, retries: 1}\n")
    run_id = pipelines.queue("fenced")
    paused_executor = FakeExecutor({"t": [HANG]})
    paused = make_runner(paused_executor)
    turn(paused)  # claims try 1, then stops turning (a long GC pause, a suspended laptop)
    clock.advance(61)  # past its lease
    other = make_runner(FakeExecutor())
    settle(other, clock)  # presumes it dead: try 1 failed, try 2 here succeeds

    with caplog.at_level(logging.INFO, logger="nbsched.runner"):
        paused_executor.release("t", Fail())  # the paused runner wakes with try 1's result
        paused.wait(0)
    run = store.get_run(run_id, with_tries=True)
    t = run.tasks["t"]
    assert run.state is RunState.SUCCESS and t.state is TaskState.SUCCESS and t.owner == other.id
    assert [(a.try_number, a.state, a.runner) for a in t.tries] == [
        (1, TaskState.UP_FOR_RETRY, paused.id),
        (2, TaskState.SUCCESS, other.id),
    ]
    assert "try 1 was taken from this runner; its result is dropped" in caplog.text
    assert paused.busy == 0
    # its notebook stays its own: the task's is the winning try's, as the database says
    folder = tmp_path / "runs" / "fenced" / run_id
    assert t.output_path == str(folder / "t.ipynb") and (folder / "t.ipynb").samefile(folder / "t.try2.ipynb")
    assert _parameters(folder / "t.try1.ipynb")["nbsched_try"] == 1


def test_a_dead_runners_tries_are_retried_and_bounded(store, pipelines, make_runner, clock):
    pipelines.add("""
name: reaped
tasks:
  again: {notebook: a.ipynb, retries: 1, retry_delay: 30s}
  last:  {notebook: l.ipynb}
""")
    run_id = pipelines.queue("reaped")
    dead = make_runner(FakeExecutor({"again": [HANG], "last": [HANG]}))
    turn(dead)
    clock.advance(61)

    survivor = make_runner(FakeExecutor({"again": [HANG]}))
    turn(survivor)  # presumes the other dead
    assert turn(survivor) == 30.0  # "again" waits its retry delay; "last" had no try left
    run = store.get_run(run_id)
    lost = f"its runner {dead.id} stopped heartbeating (lease 1m)"
    assert run.tasks["again"].state is TaskState.UP_FOR_RETRY and run.tasks["again"].error == lost
    assert run.tasks["last"].state is TaskState.FAILED and run.tasks["last"].error == lost
    clock.advance(30)
    turn(survivor)
    assert store.get_run(run_id).tasks["again"].owner == survivor.id

    clock.advance(61)  # the survivor dies too, on the last try: the task ends failed, not retried forever
    settle(make_runner(FakeExecutor()), clock)
    run = store.get_run(run_id)
    assert run.tasks["again"].state is TaskState.FAILED and run.tasks["again"].try_number == 2
    assert run.state is RunState.FAILED


def test_max_active_runs_keeps_later_runs_queued_and_other_pipelines_going(store, pipelines, make_runner, clock):
    pipelines.add("name: one_at_a_time\ntasks:\n  t: {notebook: t.ipynb}\n")
    pipelines.add("name: free\ntasks:\n  t: {notebook: t.ipynb}\n")
    first = pipelines.queue("one_at_a_time", max_active_runs=1)
    clock.advance(1)
    second = pipelines.queue("one_at_a_time", max_active_runs=1)
    free = pipelines.queue("free")
    executor = FakeExecutor({"t": [HANG]})
    runner = make_runner(executor)

    turn(runner)
    states = {r.id: r.state for r in store.list_runs(limit=None)}
    assert states == {first: RunState.RUNNING, second: RunState.QUEUED, free: RunState.RUNNING}
    executor.release("t", Succeed())  # the free pipeline's
    executor.release("t", Succeed())  # the first run's
    runner.wait(0)
    turn(runner)  # the first run ends (the second may come before it in this turn's list)
    turn(runner)
    assert store.get_run(first).state is RunState.SUCCESS
    assert store.get_run(second).state is RunState.RUNNING
    turn(runner)  # a run started after the runner saw it queued: its tasks are decided as any run's
    assert store.get_run(second).tasks["t"].state is TaskState.RUNNING


def test_cancel_stops_the_running_try_and_ends_every_unfinished_task(store, pipelines, make_runner, clock):
    pipelines.add("name: long\ntasks:\n  work: {notebook: w.ipynb}\n  after: {notebook: a.ipynb, upstream: [work]}\n")
    run_id = pipelines.queue("long")
    runner = make_runner(FakeExecutor({"work": [HANG]}))
    turn(runner)
    assert store.get_run(run_id).tasks["work"].state is TaskState.RUNNING

    assert store.cancel_run(run_id, "cancelled by user")  # from another process: the CLI, the REST API
    turn(runner)  # notices, stops the try

    run = store.get_run(run_id, with_tries=True)
    assert runner.busy == 0 and run.state is RunState.CANCELLED
    assert {n: (t.state, t.error) for n, t in run.tasks.items()} == {
        "work": (TaskState.CANCELLED, "cancelled by user"),
        "after": (TaskState.CANCELLED, "cancelled by user"),
    }
    assert [(a.state, a.error) for a in run.tasks["work"].tries] == [(TaskState.CANCELLED, "cancelled by user")]


def test_ctrl_c_in_a_foreground_run_cancels_its_runs(store, pipelines, clock, tmp_path):
    pipelines.add("name: fg\ntasks:\n  work: {notebook: w.ipynb}\n")
    run_id = pipelines.queue("fg")
    seen: list[tuple[str, TaskState]] = []

    def listener(run: str, task: str, state: TaskState, detail: str | None) -> None:
        seen.append((task, state))
        if state is TaskState.RUNNING:
            raise KeyboardInterrupt

    runner = Runner(
        store,
        FakeExecutor({"work": [HANG]}),
        tmp_path,
        spec_loader=pipelines.load,
        poll=0,
        clock=clock,
        listener=listener,
    )
    with runner:
        store.set_run_owner(run_id, runner.id)
        runner.run([run_id])

    run = store.get_run(run_id)
    assert run.state is RunState.CANCELLED and run.tasks["work"].state is TaskState.CANCELLED
    assert seen == [("work", TaskState.QUEUED), ("work", TaskState.RUNNING), ("work", TaskState.CANCELLED)]
    assert runner.busy == 0


def test_a_runner_that_fails_itself_ends_its_runs_cancelled_with_the_reason(store, pipelines, clock, tmp_path):
    pipelines.add("name: fg\ntasks:\n  work: {notebook: w.ipynb}\n")
    run_id = pipelines.queue("fg")

    def listener(run: str, task: str, state: TaskState, detail: str | None) -> None:
        if state is TaskState.RUNNING:
            raise RuntimeError("the progress bar broke")

    runner = Runner(
        store,
        FakeExecutor({"work": [HANG]}),
        tmp_path,
        spec_loader=pipelines.load,
        poll=0,
        clock=clock,
        listener=listener,
    )
    with runner, pytest.raises(RuntimeError, match="the progress bar broke"):
        store.set_run_owner(run_id, runner.id)
        runner.run([run_id])

    run = store.get_run(run_id)
    reason = "cancelled: the runner failed: RuntimeError: the progress bar broke"
    assert run.state is RunState.CANCELLED and run.error == reason
    assert run.tasks["work"].state is TaskState.CANCELLED and run.tasks["work"].error == reason


def test_a_try_past_its_timeout_is_stopped_and_fails_with_the_time_it_had(store, pipelines, make_runner, clock):
    pipelines.add("""
name: sleepy
tasks:
  nap:   {notebook: n.ipynb, timeout: 2m}
  after: {notebook: a.ipynb, upstream: [nap]}
""")
    run_id = pipelines.queue("sleepy")
    runner = make_runner(FakeExecutor({"nap": [HANG]}))
    turn(runner)
    assert turn(runner) == 120.0  # it wakes for the deadline
    clock.advance(119)
    turn(runner)
    assert store.get_run(run_id).tasks["nap"].state is TaskState.RUNNING
    clock.advance(1)
    settle(runner, clock)

    run = store.get_run(run_id)
    assert run.tasks["nap"].state is TaskState.FAILED and run.tasks["nap"].error == "timed out after 2m"
    assert run.tasks["after"].state is TaskState.UPSTREAM_FAILED and run.state is RunState.FAILED


def _parameters(notebook: Path) -> dict[str, Any]:
    """The parameters a try's notebook was executed with (papermill keeps them in its metadata)."""
    return dict(json.loads(notebook.read_text())["metadata"]["papermill"]["parameters"])


def test_a_try_taken_from_a_paused_runner_sends_no_sla_missed_when_it_wakes(store, pipelines, make_runner, clock):
    pipelines.add("""
name: late
tasks:
  t:
    notebook: t.ipynb
    retries: 1
    retry_delay: 0s
    sla: 90s
    notify: [{on: [sla_missed], to: ["json://127.0.0.1:9/hook"]}]
""")
    run_id = pipelines.queue("late")
    paused = make_runner(FakeExecutor({"t": [HANG]}))
    turn(paused)  # claims try 1, then stops turning
    clock.advance(61)
    turn(make_runner(FakeExecutor({"t": [HANG]})))  # takes try 1 back; try 2 runs there
    clock.advance(30)  # try 1 would now be past its sla, had it kept running
    turn(paused)  # it wakes: its try is gone

    assert [(n.event, n.try_number) for n in store.list_notices(run_id=run_id)] == []
    assert store.get_run(run_id).tasks["t"].try_number == 2


def test_a_try_taken_back_from_a_dead_runner_notifies_as_its_own_end_would(store, pipelines, make_runner, clock):
    pipelines.add("""
name: watched
tasks:
  t:
    notebook: t.ipynb
    retries: 1
    retry_delay: 0s
    notify: [{on: [retry, failure], to: ["json://127.0.0.1:9/hook"]}]
""")
    run_id = pipelines.queue("watched")
    for _ in range(2):  # each try's runner dies with it
        turn(make_runner(FakeExecutor({"t": [HANG]})))
        clock.advance(61)
    turn(make_runner(FakeExecutor()))

    notices = [(n.event.value, n.task, n.try_number) for n in reversed(store.list_notices(run_id=run_id))]
    assert notices == [("retry", "t", 1), ("failure", "t", 2)]
    assert store.get_run(run_id).tasks["t"].state is TaskState.FAILED


def test_a_stop_from_a_signal_handler_takes_no_lock_the_loop_may_hold(store, pipelines, clock, tmp_path):
    """``serve``'s SIGTERM handler runs in the loop's thread, wherever the loop is: inside its
    queue's ``get`` (holding the queue's lock) too. A handler that woke the queue waited for that
    lock forever: a daemon under load hung after 'received SIGTERM: stopping'."""
    import threading

    from nbsched.config import DaemonOptions
    from nbsched.daemon import Daemon

    runner = Runner(store, FakeExecutor(), tmp_path / "runs", spec_loader=pipelines.load, poll=0, clock=clock)
    daemon = Daemon(runner, None, DaemonOptions(grace=5))
    with runner.events.mutex:  # where the loop is when the signal comes
        asked = threading.Thread(target=daemon.request_stop, daemon=True)
        asked.start()
        asked.join(5)
        assert not asked.is_alive(), "the stop waited for the loop's own lock"
    assert daemon.serve() == 0  # and the loop, seeing it, stops at once
