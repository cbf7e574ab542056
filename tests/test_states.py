"""The transition tables and the words of the run model: pure, no store."""

from __future__ import annotations

import pytest

from nbsched.states import RUN, TASK, IllegalTransition, RunState, RunTrigger, ScheduleOrigin, StopReason, TaskState


def test_every_state_has_its_row_and_only_finished_ones_lead_nowhere_or_back_to_waiting():
    assert set(RUN.table) == set(RunState) and set(TASK.table) == set(TaskState)
    for state, to in TASK.table.items():
        if state.finished:
            assert to <= {TaskState.PENDING}, state  # only a retried run's tasks wait again
    for state, to in RUN.table.items():
        if state.finished:
            assert to <= {RunState.QUEUED}, state


def test_a_write_may_leave_the_states_the_table_leads_from():
    assert TASK.guard(TaskState.SUCCESS) == {TaskState.RUNNING}  # only a try that ran can succeed
    assert TASK.guard(TaskState.CANCELLED) == {s for s in TaskState if not s.finished}
    assert RUN.guard(RunState.RUNNING) == {RunState.QUEUED}
    assert TASK.guard(TaskState.QUEUED, [TaskState.PENDING]) == {TaskState.PENDING}
    assert TaskState.QUEUED in TASK.table[TaskState.UP_FOR_RETRY]
    assert TaskState.QUEUED not in TASK.table[TaskState.SKIPPED]


def test_a_transition_the_table_does_not_hold_is_a_named_error():
    with pytest.raises(IllegalTransition, match=r"^pending, skipped -> success: not a transition of TaskState$"):
        TASK.guard(TaskState.SUCCESS, [TaskState.PENDING, TaskState.SKIPPED, TaskState.RUNNING])
    with pytest.raises(IllegalTransition, match="running -> queued"):
        RUN.guard(RunState.QUEUED, [RunState.RUNNING])  # a running run is not repaired: it ends first


@pytest.mark.parametrize(
    "word",
    [RunState.SUCCESS, TaskState.UP_FOR_RETRY, StopReason.TIMED_OUT, RunTrigger.CATCHUP, ScheduleOrigin.CLI],
    ids=str,
)
def test_a_word_is_shown_and_compared_as_its_value(word):
    assert str(word) == f"{word}" == word.value == word
    assert f"{word:>20}" == f"{word.value:>20}"
