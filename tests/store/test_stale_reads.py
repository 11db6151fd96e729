"""No stale write: every read-modify-write of a job row works from the row as committed when
it took the lock, so a DONE is never overwritten and no GPU is freed under a running job.

Each test interleaves two transactions at a fixed point (a barrier, or a hook between
a read and the write that follows it), with no sleeps.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import text

from overlay.config import Settings
from overlay.errors import InvalidTransition
from overlay.states import JobState
from overlay.store import gangs, moves
from overlay.store import jobs as job_store
from tests.store.world import T0, Cluster, seconds
from workers import scheduler


def finish(cluster: Cluster, job_id: str, *, at, attempt: int = 1) -> Any:
    with cluster.sessions.begin() as s:
        return moves.finish(s, job_id, attempt=attempt, target=JobState.DONE, now=at, reason=None,
                                ending=job_store.Ending(exit_code=0, log_tail="bye\n"))


def lock_waiters(cluster: Cluster) -> int:
    """Backends of this database waiting for a lock now."""
    with cluster.sessions() as s:
        # A row-lock wait is on a transaction id, whose lock names no database: join the backend.
        return int(s.execute(text("select count(*) from pg_locks l join pg_stat_activity a on a.pid = l.pid "
                                  "where not l.granted and a.datname = current_database()")).scalar_one())


def while_holding_the_row(cluster: Cluster, hold: Callable[[Any], Any], then: Callable[[], Any]) -> tuple:
    """Run ``hold(session)`` (it locks the job's row) in a transaction; start ``then`` in
    another thread; commit only once ``then`` waits for the lock. Both results, in order."""
    results: dict[str, Any] = {}
    started = threading.Event()

    def second() -> None:
        started.set()
        try:
            results["then"] = then()
        except Exception as e:
            results["then"] = e

    with cluster.sessions.begin() as s:
        results["hold"] = hold(s)
        waiter = threading.Thread(target=second)
        waiter.start()
        assert started.wait(10)
        for _ in range(1000):  # until the other transaction is blocked on our row lock
            if lock_waiters(cluster) > 0:
                break
            threading.Event().wait(0.01)
        else:
            pytest.fail("the second transaction never waited for the row lock")
    waiter.join(30)
    assert not waiter.is_alive()
    return results["hold"], results["then"]


def test_reconcile_never_requeues_a_job_whose_agent_committed_done_after_reconcile_read_it(
    cluster, settings: Settings, monkeypatch
):
    # Given a job RUNNING on node-a, whose node has gone silent past the TTL
    cluster.node("node-a", gpus=1)
    cluster.node("node-b", gpus=1)
    cluster.running("j", on="node-a", gpus=(0,), max_retries=1)
    later = T0 + seconds(settings.node_ttl_s + 5)
    cluster.heartbeat("node-b", at=later)
    cluster.reconcile_has_been_ticking(until=later - seconds(1))
    # and reconcile has read the offline node's jobs when node-a's agent commits the job's end
    read = job_store.active_on_offline_nodes

    def read_then_agent_ends(session):
        jobs = read(session)
        assert [j.job_id for j in jobs] == ["j"]
        finish(cluster, "j", at=later)
        return jobs

    monkeypatch.setattr(job_store, "active_on_offline_nodes", read_then_agent_ends)
    # When reconcile goes on to retry what it read
    scheduler.reconcile(cluster.sessions, settings, now=later)
    # Then the job stays DONE: nothing was written over the agent's commit
    assert cluster.job("j").state is JobState.DONE
    assert [state for state, _, _ in cluster.events("j")] == ["QUEUED", "PLACED", "RUNNING", "DONE"]
    assert cluster.holders("node-a") == {}


def test_a_cancel_waiting_on_the_agents_end_sees_done_and_changes_nothing(cluster):
    # Given a running job whose agent is committing its end (holding the row lock)
    cluster.node("node-a", gpus=1)
    cluster.running("j", on="node-a", gpus=(0,))

    def agent_ends(s):
        return moves.finish(s, "j", attempt=1, target=JobState.DONE, now=T0 + seconds(5), reason=None,
                                ending=job_store.Ending(exit_code=0, log_tail=""))

    # When a cancel arrives meanwhile and waits for the lock
    ended, cancelled = while_holding_the_row(cluster, agent_ends,
                                             lambda: cluster.cancel("j", at=T0 + seconds(5)))
    # Then the cancel is refused (409 at the API) and the job stays DONE
    assert ended.state is JobState.DONE
    assert isinstance(cancelled, InvalidTransition), cancelled
    assert cluster.job("j").state is JobState.DONE
    assert [state for state, _, _ in cluster.events("j")] == ["QUEUED", "PLACED", "RUNNING", "DONE"]


def test_a_cancel_waiting_on_the_agents_start_keeps_the_gpus_of_the_process_that_now_runs(cluster):
    # Given a placed job whose agent is committing PLACED -> RUNNING (holding the row lock)
    cluster.node("node-a", gpus=1)
    cluster.submit("j", gpus=1)
    cluster.place("j", on="node-a", gpus=(0,))

    def agent_starts(s):
        return gangs.start(s, "j", attempt=1, part=0, node="node-a", now=T0 + seconds(1))

    # When a cancel, which had seen the job PLACED in an earlier read, waits for the lock
    def cancel_after_an_earlier_read():
        with cluster.sessions.begin() as s:
            # (the agent's RUNNING is not committed yet: this read sees PLACED; the session
            # keeps the row while `seen` lives, as a view that reads before it writes would)
            seen = job_store.get_job(s, "j")
            assert seen.state is JobState.PLACED
            return job_store.cancel(s, "j", now=T0 + seconds(1))

    started, cancelled = while_holding_the_row(cluster, agent_starts, cancel_after_an_earlier_read)
    # Then the job is CANCELLED, but its GPU stays held: its process runs until its agent kills it
    assert started.state is JobState.RUNNING
    assert not isinstance(cancelled, Exception), cancelled
    assert cluster.job("j").state is JobState.CANCELLED
    assert cluster.holders("node-a") == {0: ("j", 1)}


def test_an_admin_move_waiting_on_the_agents_end_sees_done_and_is_refused(cluster):
    # Given a running job whose agent is committing its end
    cluster.node("node-a", gpus=1)
    cluster.running("j", on="node-a", gpus=(0,))

    def agent_ends(s):
        return moves.finish(s, "j", attempt=1, target=JobState.DONE, now=T0 + seconds(5), reason=None,
                                ending=job_store.Ending(exit_code=0, log_tail=""))

    def admin_requeues():
        with cluster.sessions.begin() as s:
            seen = job_store.get_job(s, "j")  # read first, and kept, in the same session
            assert seen.state is JobState.RUNNING
            return job_store.transition(s, "j", JobState.QUEUED, now=T0 + seconds(5), reason="set by admin")

    # When an admin's QUEUED waits for the lock
    _, moved = while_holding_the_row(cluster, agent_ends, admin_requeues)
    # Then the move is refused and the job stays DONE
    assert isinstance(moved, InvalidTransition), moved
    assert cluster.job("j").state is JobState.DONE
