"""Lists and a job's events read through indexes, whatever the history stored.

The plans are Postgres's own (EXPLAIN of the statements the store functions really send,
caught on the way out), on 20,000 jobs and 100,000 events loaded and ANALYZEd: with that
many rows and fresh statistics, a sequential scan costs the planner hundreds of times an
index walk for a 50-row page, so its choice does not flip between runs.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from bench.history import load
from overlay.states import JobState
from overlay.store import jobs as job_store
from overlay.store import stats
from overlay.store.session import make_sessionmaker
from overlay.store.tables import Base
from tests.store.world import T0

JOBS = 20_000


@pytest.fixture(scope="module")
def history(engine: Engine) -> Iterator[Engine]:
    """The history, loaded once for this module's tests (which only read it), emptied after."""
    with engine.begin() as conn:
        load(conn, jobs=JOBS, events_per_job=5, start=T0 - timedelta(days=3))
        conn.execute(text("ANALYZE jobs"))
        conn.execute(text("ANALYZE job_events"))
    yield engine
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"truncate {tables} cascade"))


@pytest.fixture
def sessions(history: Engine) -> sessionmaker[Session]:
    """Sessions on the loaded history (not emptied after each test, unlike the shared fixture)."""
    return make_sessionmaker(history)


@contextmanager
def statements(engine: Engine) -> Iterator[list[tuple[str, object]]]:
    """Every SQL statement (and its parameters) sent on ``engine`` inside the block."""
    sent: list[tuple[str, object]] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        sent.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", record)


def plan(engine: Engine, statement: str, parameters: object) -> str:
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute(f"EXPLAIN {statement}", parameters)
        return "\n".join(row[0] for row in cursor.fetchall())
    finally:
        raw.close()


def plans_of(engine: Engine, sessions: sessionmaker[Session], call, table: str) -> list[str]:
    """The plans of the statements ``call`` sends that read ``table``."""
    with statements(engine) as sent, sessions.begin() as s:
        call(s)
    reads = [(q, p) for q, p in sent if f"FROM {table}" in q and q.lstrip().upper().startswith("SELECT")]
    assert reads, f"no read of {table} was sent"
    return [plan(engine, q, p) for q, p in reads]


def uses_an_index(plan: str, *names: str) -> bool:
    """Whether the plan scans (Index, Index Only or Bitmap Index Scan) one of ``names``."""
    return any(re.search(rf"(Index Scan|Index Only Scan)( Backward)? using {name} "
                         rf"|Bitmap Index Scan on {name}\b", plan) for name in names)


@pytest.mark.parametrize("state", list(JobState))
def test_a_filtered_page_of_jobs_walks_the_state_index(history, sessions, state):
    # Given 20,000 jobs of which 1% are QUEUED and 90% DONE
    # When a page of one state is listed
    plans = plans_of(history, sessions, lambda s: job_store.list_jobs(s, state=state, limit=50, offset=0),
                     "jobs")
    # Then no statement reads the whole table: the page walks an index down from the newest
    # ((status, enqueued_at); for the state of most jobs, enqueued_at alone serves as well)
    assert all("Seq Scan" not in p for p in plans), plans
    assert all(uses_an_index(p, "ix_jobs_status_enqueued_at", "ix_jobs_enqueued_at") for p in plans), plans


def test_an_unfiltered_page_walks_the_enqueued_index(history, sessions):
    plans = plans_of(history, sessions, lambda s: job_store.list_jobs(s, state=None, limit=50, offset=0),
                     "jobs")
    assert all("Seq Scan" not in p for p in plans), plans
    assert all(uses_an_index(p, "ix_jobs_enqueued_at") for p in plans), plans


def test_a_jobs_events_are_read_through_the_job_id_index(history, sessions):
    plans = plans_of(history, sessions, lambda s: job_store.events(s, "hist-1234"), "job_events")
    assert all("Seq Scan" not in p for p in plans), plans
    assert all(uses_an_index(p, "ix_job_events_job_id_id") for p in plans), plans


def test_the_oldest_queued_job_is_the_first_entry_of_the_state_index(history, sessions):
    plans = plans_of(history, sessions, stats.oldest_queued_at, "jobs")
    assert all("Seq Scan" not in p for p in plans), plans
    assert all(uses_an_index(p, "ix_jobs_status_enqueued_at") for p in plans), plans


def test_the_list_total_is_the_counted_number_of_jobs(history, sessions):
    # The total comes from the counters, not from counting rows; it is still exact
    with sessions.begin() as s:
        for state in JobState:
            _, total = job_store.list_jobs(s, state=state, limit=1, offset=0)
            counted = s.scalar(text("select count(*) from jobs where status = :s"), {"s": state.value})
            assert total == counted
        assert job_store.list_jobs(s, state=None, limit=1, offset=0)[1] == JOBS
