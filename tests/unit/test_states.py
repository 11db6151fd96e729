"""The state machine: the legal moves of DESIGN.md, and nothing else."""

from __future__ import annotations

import itertools

import pytest

from overlay.errors import InvalidTransition
from overlay.states import TERMINAL, JobState, check_transition

LEGAL = {
    ("QUEUED", "PLACED"), ("QUEUED", "CANCELLED"), ("QUEUED", "FAILED"),
    ("PLACED", "RUNNING"), ("PLACED", "CANCELLED"), ("PLACED", "FAILED"), ("PLACED", "QUEUED"),
    ("RUNNING", "DONE"), ("RUNNING", "FAILED"), ("RUNNING", "CANCELLED"), ("RUNNING", "QUEUED"),
}


@pytest.mark.parametrize(("current", "target"), sorted(LEGAL))
def test_a_legal_transition_passes(current, target):
    check_transition("j", JobState(current), JobState(target))


@pytest.mark.parametrize(
    ("current", "target"),
    [(a.value, b.value) for a, b in itertools.product(JobState, JobState) if (a.value, b.value) not in LEGAL],
)
def test_every_other_transition_is_refused_naming_both_states(current, target):
    with pytest.raises(InvalidTransition) as caught:
        check_transition("j1", JobState(current), JobState(target))
    assert caught.value.message == f"job 'j1' cannot go from {current} to {target}"


def test_terminal_states_are_done_failed_cancelled():
    assert {s.value for s in TERMINAL} == {"DONE", "FAILED", "CANCELLED"}
    assert all(s.terminal for s in TERMINAL)
    assert not JobState.RUNNING.terminal
