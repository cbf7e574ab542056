"""Trigger rules, dependency order and the downstream map (nbsched.dag): pure, no I/O."""

from __future__ import annotations

import itertools

import pytest

from nbsched.dag import Decision, TriggerRule, decide, downstream_of, topological_order
from nbsched.errors import CycleError, SpecError
from nbsched.states import TaskState

S = TaskState.SUCCESS
F = TaskState.FAILED
UF = TaskState.UPSTREAM_FAILED
SK = TaskState.SKIPPED
C = TaskState.CANCELLED
P = TaskState.PENDING
Q = TaskState.QUEUED
R = TaskState.RUNNING
RT = TaskState.UP_FOR_RETRY

WAIT, RUN, SKIP, UPF = Decision.WAIT, Decision.RUN, Decision.SKIP, Decision.UPSTREAM_FAILED

# (rule, upstream states, expected decision), with Airflow's meaning of each rule.
TABLE = [
    # all_success (the default): run only when every upstream succeeded
    pytest.param("all_success", [S, S], RUN, id="all_success-all-succeeded"),
    pytest.param("all_success", [S, R], WAIT, id="all_success-one-running"),
    pytest.param("all_success", [S, Q, P], WAIT, id="all_success-queued-and-pending"),
    pytest.param("all_success", [S, RT], WAIT, id="all_success-up-for-retry-is-not-done"),
    pytest.param("all_success", [F, R], UPF, id="all_success-failure-decides-before-others-finish"),
    pytest.param("all_success", [UF, S], UPF, id="all_success-upstream-failed-propagates"),
    pytest.param("all_success", [S, SK], SKIP, id="all_success-skipped-upstream-skips"),
    pytest.param("all_success", [F, SK], UPF, id="all_success-failure-wins-over-skip"),
    pytest.param("all_success", [S, C], UPF, id="all_success-cancelled-upstream-never-waits-forever"),
    pytest.param("all_success", [], RUN, id="all_success-no-upstream"),
    # all_failed: run only when every upstream failed
    pytest.param("all_failed", [F, UF], RUN, id="all_failed-all-failed"),
    pytest.param("all_failed", [F, R], WAIT, id="all_failed-one-running"),
    pytest.param("all_failed", [F, S], SKIP, id="all_failed-one-succeeded"),
    pytest.param("all_failed", [F, SK], SKIP, id="all_failed-one-skipped"),
    pytest.param("all_failed", [S, R], SKIP, id="all_failed-success-decides-before-others-finish"),
    pytest.param("all_failed", [F, C], SKIP, id="all_failed-cancelled-is-not-a-failure"),
    pytest.param("all_failed", [], RUN, id="all_failed-no-upstream"),
    # all_done: run once every upstream finished, whatever the outcome
    pytest.param("all_done", [S, F, SK, UF], RUN, id="all_done-mixed-outcomes"),
    pytest.param("all_done", [F, R], WAIT, id="all_done-one-running"),
    pytest.param("all_done", [S, RT], WAIT, id="all_done-up-for-retry-is-not-done"),
    pytest.param("all_done", [SK, SK], RUN, id="all_done-all-skipped"),
    pytest.param("all_done", [], RUN, id="all_done-no-upstream"),
    # one_success: run as soon as one upstream succeeded
    pytest.param("one_success", [S, R], RUN, id="one_success-runs-without-waiting"),
    pytest.param("one_success", [F, R], WAIT, id="one_success-failed-and-running"),
    pytest.param("one_success", [F, UF], UPF, id="one_success-all-failed"),
    pytest.param("one_success", [F, SK], UPF, id="one_success-failed-and-skipped"),
    pytest.param("one_success", [SK, SK], SKIP, id="one_success-all-skipped"),
    pytest.param("one_success", [], RUN, id="one_success-no-upstream"),
    # one_failed: run as soon as one upstream failed
    pytest.param("one_failed", [F, R], RUN, id="one_failed-runs-without-waiting"),
    pytest.param("one_failed", [UF, S], RUN, id="one_failed-upstream-failed-counts"),
    pytest.param("one_failed", [S, R], WAIT, id="one_failed-success-and-running"),
    pytest.param("one_failed", [S, SK], SKIP, id="one_failed-nothing-failed"),
    pytest.param("one_failed", [S, C], SKIP, id="one_failed-cancelled-is-not-a-failure"),
    pytest.param("one_failed", [], RUN, id="one_failed-no-upstream"),
    # none_failed: run when all upstream succeeded or were skipped
    pytest.param("none_failed", [S, SK], RUN, id="none_failed-success-and-skipped"),
    pytest.param("none_failed", [SK, SK], RUN, id="none_failed-all-skipped-still-runs"),
    pytest.param("none_failed", [S, R], WAIT, id="none_failed-one-running"),
    pytest.param("none_failed", [F, R], UPF, id="none_failed-failure"),
    pytest.param("none_failed", [UF, S], UPF, id="none_failed-upstream-failed"),
    pytest.param("none_failed", [S, C], UPF, id="none_failed-cancelled-is-not-success"),
    pytest.param("none_failed", [], RUN, id="none_failed-no-upstream"),
    # none_failed_min_one_success: like none_failed, but all skipped means skip
    pytest.param("none_failed_min_one_success", [S, SK], RUN, id="nfmos-success-and-skipped"),
    pytest.param("none_failed_min_one_success", [SK, SK], SKIP, id="nfmos-all-skipped"),
    pytest.param("none_failed_min_one_success", [SK, R], WAIT, id="nfmos-skipped-and-running"),
    pytest.param("none_failed_min_one_success", [S, R], WAIT, id="nfmos-success-and-running"),
    pytest.param("none_failed_min_one_success", [F, S], UPF, id="nfmos-failure"),
    pytest.param("none_failed_min_one_success", [UF, SK], UPF, id="nfmos-upstream-failed"),
    pytest.param("none_failed_min_one_success", [S, C], UPF, id="nfmos-cancelled-is-not-success"),
    pytest.param("none_failed_min_one_success", [], RUN, id="nfmos-no-upstream"),
    # always: run whatever happened upstream, without waiting
    pytest.param("always", [F, UF], RUN, id="always-after-failures"),
    pytest.param("always", [R, P], RUN, id="always-does-not-wait"),
    pytest.param("always", [SK], RUN, id="always-after-skip"),
    pytest.param("always", [], RUN, id="always-no-upstream"),
]


@pytest.mark.parametrize(("rule", "states", "expected"), TABLE)
def test_decide(rule: str, states: list[TaskState], expected: Decision) -> None:
    assert decide(TriggerRule(rule), states) is expected


def test_the_table_covers_every_rule_and_every_outcome() -> None:
    rules = {p.values[0] for p in TABLE}
    outcomes = {p.values[2] for p in TABLE}
    assert rules == {r.value for r in TriggerRule}
    assert outcomes == set(Decision)


def test_decide_takes_any_iterable_of_states() -> None:
    assert decide(TriggerRule.ALL_SUCCESS, iter([S, S])) is RUN
    assert decide(TriggerRule.ALL_SUCCESS, (s for s in [S, R])) is WAIT


FINISHED = [S, F, UF, SK, C]


@pytest.mark.parametrize("rule", list(TriggerRule), ids=lambda r: r.value)
def test_never_waits_once_every_upstream_finished(rule: TriggerRule) -> None:
    """A task still waiting when nothing upstream can change would hang the run forever."""
    for n in (1, 2, 3):
        for states in itertools.product(FINISHED, repeat=n):
            assert decide(rule, states) is not WAIT, (rule.value, [s.value for s in states])


@pytest.mark.parametrize("rule", [r for r in TriggerRule if r is not TriggerRule.ALWAYS], ids=lambda r: r.value)
@pytest.mark.parametrize("unfinished", [P, Q, R, RT], ids=lambda s: s.value)
def test_waits_while_nothing_upstream_has_finished(rule: TriggerRule, unfinished: TaskState) -> None:
    assert decide(rule, [unfinished]) is WAIT
    assert decide(rule, [unfinished, P]) is WAIT


def test_finished_states() -> None:
    # removed: an instance a repair took out of its for_each list; trigger rules never count it
    assert {s for s in TaskState if s.finished} == {S, F, UF, SK, C, TaskState.REMOVED}


# -- topological order ------------------------------------------------------------------
def test_upstream_tasks_come_first_whatever_the_spec_order() -> None:
    assert topological_order({"report": ["clean"], "clean": ["extract"], "extract": []}) == [
        "extract",
        "clean",
        "report",
    ]


def test_independent_tasks_keep_spec_order() -> None:
    assert topological_order({"zeta": [], "alpha": [], "mid": []}) == ["zeta", "alpha", "mid"]


def test_ties_in_a_diamond_keep_spec_order() -> None:
    order = topological_order({"a": [], "c": ["a"], "b": ["a"], "d": ["b", "c"]})
    assert order == ["a", "c", "b", "d"]


def test_a_valid_order_respects_every_link() -> None:
    graph = {"e": ["b", "d"], "d": ["c"], "c": ["a"], "b": ["a"], "a": [], "f": []}
    order = topological_order(graph)
    assert sorted(order) == sorted(graph)
    for task, ups in graph.items():
        for up in ups:
            assert order.index(up) < order.index(task), (up, task, order)


def test_empty_graph() -> None:
    assert topological_order({}) == []


def test_cycle_message_shows_the_cycle_path() -> None:
    # b after a, c after b, a after c: a -> b -> c -> a
    with pytest.raises(CycleError) as exc:
        topological_order({"a": ["c"], "b": ["a"], "c": ["b"]})
    assert str(exc.value) == "cycle in upstream links: a -> b -> c -> a"


def test_cycle_message_names_only_the_tasks_in_the_cycle() -> None:
    with pytest.raises(CycleError) as exc:
        topological_order({"extract": [], "clean": ["extract", "report"], "report": ["clean"]})
    assert str(exc.value) == "cycle in upstream links: clean -> report -> clean"
    assert "extract" not in str(exc.value)


def test_a_task_upstream_of_itself_is_a_cycle() -> None:
    with pytest.raises(CycleError, match=r"x -> x$"):
        topological_order({"x": ["x"]})


def test_cycle_error_is_a_spec_error() -> None:
    # surfaces map SpecError to "bad input" (exit code 2, HTTP 4xx)
    with pytest.raises(SpecError):
        topological_order({"a": ["b"], "b": ["a"]})


# -- downstream map ---------------------------------------------------------------------
def test_downstream_of_inverts_the_upstream_links() -> None:
    down = downstream_of({"extract": [], "clean": ["extract"], "report": ["clean", "extract"], "audit": []})
    assert down == {"extract": ["clean", "report"], "clean": ["report"], "report": [], "audit": []}


def test_downstream_of_lists_every_task_even_leaves() -> None:
    assert downstream_of({"a": []}) == {"a": []}


def test_a_spec_written_in_dependency_order_keeps_its_order() -> None:
    assert topological_order({"a": [], "b": ["a"], "c": []}) == ["a", "b", "c"]
    assert topological_order({"load": ["clean"], "extract": [], "clean": ["extract"]}) == ["extract", "clean", "load"]
