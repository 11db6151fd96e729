"""What to do with a job whose attempt was lost: run it again, or fail it. Pure."""

from __future__ import annotations

from dataclasses import dataclass

from overlay.model import Job
from overlay.states import JobState

NODE_LOST = "node lost"
# The agent process running the attempt died and came back before its node was declared lost.
AGENT_RESTARTED = "agent restarted"


@dataclass(frozen=True, kw_only=True)
class RetryDecision:
    """Move the job to ``target`` (QUEUED to run again, FAILED to give up), saying why."""

    target: JobState
    reason: str


def decide_retry(job: Job, *, cause: str = NODE_LOST) -> RetryDecision:
    """A lost attempt is retried while the job has retries left: attempts that ended some
    other way than by preemption (preempted ones are not the job's fault) <= max_retries."""
    where = f" ({job.node})" if job.node else ""
    used = job.attempt - job.preemptions
    if used <= job.spec.max_retries:
        return RetryDecision(
            target=JobState.QUEUED,
            reason=f"{cause}{where}; retry {used} of {job.spec.max_retries}",
        )
    return RetryDecision(target=JobState.FAILED, reason=cause)
