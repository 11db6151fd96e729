"""The job state machine: the states, the legal transitions and the one check."""

from __future__ import annotations

import enum

from overlay.errors import InvalidTransition


class JobState(enum.StrEnum):
    QUEUED = "QUEUED"
    PLACED = "PLACED"
    RUNNING = "RUNNING"
    DONE = "DONE"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({JobState.DONE, JobState.FAILED, JobState.CANCELLED})

# PLACED/RUNNING -> QUEUED is a retry: the node was lost or the attempt went stale.
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.PLACED, JobState.FAILED, JobState.CANCELLED}),
    JobState.PLACED: frozenset(
        {JobState.RUNNING, JobState.QUEUED, JobState.FAILED, JobState.CANCELLED}
    ),
    JobState.RUNNING: frozenset(
        {JobState.DONE, JobState.FAILED, JobState.QUEUED, JobState.CANCELLED}
    ),
    JobState.DONE: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}


# Which of a job's timestamps (enqueued, placed, started, finished) entering a state sets.
TIMESTAMP_OF: dict[JobState, str] = {
    JobState.PLACED: "placed",
    JobState.RUNNING: "started",
    JobState.DONE: "finished",
    JobState.FAILED: "finished",
    JobState.CANCELLED: "finished",
}


def check_transition(job_id: str, current: JobState, target: JobState) -> None:
    """Return if ``current -> target`` is legal; raise InvalidTransition if not."""
    if target not in TRANSITIONS[current]:
        raise InvalidTransition(job_id=job_id, current=current.value, target=target.value)
