"""Faults done for real to real processes: no crash of one process loses a job.

Each test starts gunicorn, the scheduler, beat and agents (fake GPUs: NVML is the one
thing replaced), then SIGKILLs one, restarts Postgres or stops beat, and checks what
Postgres and the API say afterwards (Redis faults and a scheduler killed mid-pass are in
test_faults_queue.py). The Stack runs with
HEARTBEAT_INTERVAL_S=1, RECONCILE_INTERVAL_S=1 and NODE_TTL_S=4, so every "within"
below is seconds. docs/reliability.md lists which promise each test proves.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time

import pytest
import requests
from sqlalchemy import text

from overlay.store.session import ensure_database, migrate
from tests.integration.harness import (
    TERMINAL,
    PrivatePostgres,
    Stack,
    alive,
    allocations,
    events,
    job,
    nodes,
    send_run_job,
    submit,
    wait_state,
    wait_until,
)

pytestmark = pytest.mark.slow
TTL_S, TICK_S, FENCE_S = 4, 1, 3


def test_a_sigkilled_agent_s_job_is_retried_elsewhere_or_failed_and_nothing_of_it_lingers(
    stack, sessions, redis_url, tmp_path
):
    # Given two jobs running on node-a: one may be retried once, one may not
    stack.start_cluster()
    pids = tmp_path / "pids"
    submit(stack, job_id="retried", gpus=1, max_retries=1, cmd=[
        "sh", "-c", f'echo "$OVERLAY_ATTEMPT $$" >> {pids}; [ "$OVERLAY_ATTEMPT" != 1 ] || exec sleep 120'])
    submit(stack, job_id="lost", gpus=1, cmd=["sh", "-c", f'echo "lost $$" >> {pids}; exec sleep 120'])
    for job_id in ("retried", "lost"):
        assert wait_state(stack, job_id, {"RUNNING"})["node"] == "node-a"
    wait_until(lambda: pids.exists() and len(pids.read_text().splitlines()) == 2, timeout=10,
               what="both jobs to start")
    orphans = [int(line.split()[1]) for line in pids.read_text().splitlines()]

    # When node-a's agent is SIGKILLed
    stack.kill("node-a")
    killed_at = time.monotonic()
    # (its jobs run under supervisors in sessions of their own: they outlive it, for now)
    assert all(alive(p) for p in orphans)

    # Then within FENCE_S (no lease renewal) their supervisors kill them, before reconcile
    # (after NODE_TTL_S) gives the jobs away: the retry never overlaps the first attempt
    wait_until(lambda: not any(alive(p) for p in orphans), timeout=FENCE_S + 3, what="the fenced jobs to die")
    assert job(stack, "retried")["attempt"] == 1
    # and within NODE_TTL_S and a reconcile tick or two, the retriable job runs again on node-b
    retried = wait_state(stack, "retried", {"DONE"}, timeout=TTL_S + 3 * TICK_S + 15)
    assert (retried["attempt"], retried["node"], retried["exit_code"]) == (2, "node-b", 0)
    assert ("QUEUED", 1, "node lost (node-a); retry 1 of 1") in events(sessions, "retried")
    # and the other one has FAILED, saying why
    lost = wait_state(stack, "lost", {"FAILED"}, timeout=5)
    assert (lost["reason"], lost["attempt"]) == ("node lost", 1)
    print(f"both settled {time.monotonic() - killed_at:.1f}s after the kill")
    # and node-a's GPUs are free
    assert allocations(sessions, "node-a") == []

    # When node-a's agent comes back, it reports the fenced attempts (too late to change
    # anything) and keeps no record of them
    stack.set_aside_log("node-a")
    stack.start_agent("node-a")
    state = stack.workdir / "state" / "node-a"
    wait_until(lambda: not list(state.iterdir()), timeout=15, what="node-a's attempts to be reported")
    assert "job retried: attempt 1 ended (exit -15, fenced" in stack.output("node-a")

    # And late run_job messages for the dead attempts change nothing
    before = {j: events(sessions, j) for j in ("retried", "lost")}
    for job_id in ("retried", "lost"):
        send_run_job(redis_url, "node-a", job_id, 1)
    wait_until(lambda: stack.output("node-a").count("ignoring run_job for attempt 1") == 2,
               timeout=15, what="node-a to ignore both late messages")
    assert {j: events(sessions, j) for j in ("retried", "lost")} == before
    assert job(stack, "retried")["state"] == "DONE" and job(stack, "lost")["state"] == "FAILED"
    # (each attempt started once: the two first ones together, in either order, then the retry)
    started = [line.split()[0] for line in pids.read_text().splitlines()]
    assert sorted(started[:2]) == ["1", "lost"] and started[2:] == ["2"], started


def test_an_agent_that_dies_and_comes_back_keeps_its_jobs_and_retries_only_those_without_a_supervisor(
    stack, sessions, tmp_path
):
    # Given two jobs running on node-a, and no beat: nobody would ever declare node-a dead
    # (a fence long enough for a Celery restart)
    stack.env.update(FENCE_S="20", NODE_TTL_S="30")
    stack.start_cluster(agents=("node-a",), beat=False)
    release, pids = tmp_path / "release", tmp_path / "pids"
    for job_id in ("kept", "unsupervised"):
        submit(stack, job_id=job_id, gpus=1, max_retries=1, cmd=[
            "sh", "-c", f'echo "{job_id} $OVERLAY_ATTEMPT $$" >> {pids}; '
                        f'while [ ! -e {release} ]; do sleep 0.2; done'])
        wait_state(stack, job_id, {"RUNNING"})
    wait_until(lambda: pids.exists() and len(pids.read_text().splitlines()) == 2, timeout=10,
               what="both jobs to start")
    # When its agent is SIGKILLed
    stack.kill("node-a")
    # (and one job's supervisor is lost with it, as if the agent had died before starting it)
    gone = stack.workdir / "state" / "node-a" / "unsupervised.1"
    supervisor = int((gone / "supervisor").read_text().split()[0])
    os.kill(supervisor, signal.SIGKILL)
    wait_until(lambda: not alive(supervisor), timeout=5, what="the supervisor to die")
    unsupervised_pid = next(int(line.split()[2]) for line in pids.read_text().splitlines()
                            if line.startswith("unsupervised"))
    os.kill(unsupervised_pid, signal.SIGKILL)
    shutil.rmtree(gone)
    # and restarted at once
    stack.set_aside_log("node-a")
    stack.start_agent("node-a")
    # Then the supervised job went on and ends DONE on its first attempt
    wait_until(lambda: "re-attached to 1 attempt(s)" in stack.output("node-a"), timeout=10,
               what="node-a to re-attach")
    # and the RUNNING job without a supervisor is retried, then runs
    requeued = wait_state(stack, "unsupervised", {"RUNNING"}, timeout=30)
    assert requeued["attempt"] == 2
    assert ("QUEUED", 1, "agent restarted (node-a); retry 1 of 1") in events(sessions, "unsupervised")
    release.touch()
    for job_id, attempt in (("kept", 1), ("unsupervised", 2)):
        done = wait_state(stack, job_id, TERMINAL, timeout=30)
        assert (done["state"], done["attempt"]) == ("DONE", attempt), done
    assert allocations(sessions, "node-a") == []


def test_every_submit_answered_201_across_api_sigkills_has_its_row_and_no_refused_one_has(
    stack, sessions
):
    # Given the API under load: 8 clients submitting, every 4th body invalid; a client
    # whose request breaks off retries the same job_id until it gets an answer
    stack.start_cluster(agents=(), beat=False)
    answers: dict[str, int] = {}  # job_id -> the final answer to its submit
    tried: set[str] = set()
    stop = threading.Event()

    def client(n: int) -> None:
        i = 0
        while not stop.is_set():
            job_id, i = f"c{n}-{i}", i + 1
            body = {"job_id": job_id, "cmd": ["true"] if i % 4 else []}
            tried.add(job_id)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    status = requests.post(f"{stack.api}/api/jobs", json=body, timeout=10).status_code
                except requests.RequestException:
                    time.sleep(0.05)  # no answer: it may or may not be stored; ask again
                    continue
                answers[job_id] = status
                if status < 500:
                    break
                time.sleep(0.05)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    try:
        # When the API's processes are SIGKILLed and started again, twice
        for _ in range(2):
            time.sleep(1.5)
            stack.kill("api")
            stack.set_aside_log("api")
            stack.start_api()
        time.sleep(1.5)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=90)

    # Then every submit got an answer in the end: 201, or 409 when an earlier try of
    # the same job_id had been stored before its connection broke, or 422 for a bad body
    assert set(answers) == tried and set(answers.values()) <= {201, 409, 422}, answers
    # and exactly the accepted ones have a row
    with sessions() as s:
        rows = set(s.scalars(text("select job_id from jobs")))
    accepted = {j for j, status in answers.items() if status in (201, 409)}
    assert len(accepted) > 50 and len(answers) > len(accepted)
    assert rows == accepted


def test_while_beat_is_down_and_after_it_is_back_healthy_nodes_stay_alive_and_jobs_run_on(
    stack, sessions
):
    """"Beat down for a minute", scaled to the Stack's 4 s TTL: down for 3 × NODE_TTL_S."""
    # Given a job running on node-a, which could be retried if node-a were thought dead
    stack.start_cluster()
    outage_s = 3 * TTL_S
    submit(stack, job_id="long", gpus=1, max_retries=1, cmd=["sleep", str(outage_s + 10)])
    assert wait_state(stack, "long", {"RUNNING"})["node"] == "node-a"

    # When beat is SIGKILLed: no heartbeats are asked for, no reconcile runs
    stack.kill("beat")
    time.sleep(outage_s)
    # Then meanwhile the nodes are still listed: without beat's heartbeats, each agent's
    # lease renewal (workers/supervision.py) still writes its last_seen, so none is silent
    silent = nodes(stack)
    assert set(silent) == {"node-a", "node-b"}
    assert max(n["last_seen_age_s"] for n in silent.values()) < TTL_S
    # and work can still be placed on them
    submit(stack, job_id="during", gpus=1, cmd=["true"])
    assert wait_state(stack, "during", TERMINAL)["state"] == "DONE"

    # When beat is back
    stack.set_aside_log("beat")
    stack.start_beat()
    wait_until(lambda: all(n["last_seen_age_s"] < 2 for n in nodes(stack).values()), timeout=15,
               what="heartbeats again")
    time.sleep(TTL_S + 2 * TICK_S)  # past the pause reconcile takes after a gap
    # Then no node was declared dead and the job was never retried: it ends DONE on attempt 1
    assert nodes(stack, "?include=offline").keys() == {"node-a", "node-b"}
    assert all(n["state"] == "online" for n in nodes(stack, "?include=offline").values())
    done = wait_state(stack, "long", TERMINAL, timeout=outage_s + 20)
    assert (done["state"], done["attempt"]) == ("DONE", 1)
    assert [state for state, _, _ in events(sessions, "long")] == ["QUEUED", "PLACED", "RUNNING", "DONE"]
    assert "is offline" not in stack.output("scheduler")


@pytest.fixture
def private_postgres():
    server = PrivatePostgres()
    server.start()
    yield server
    server.remove()


def test_while_postgres_restarts_ready_says_503_running_jobs_go_on_and_their_end_is_recorded(
    redis_url, tmp_path, private_postgres
):
    # Given a stack on a Postgres of its own, and a job running that ends during the outage
    # (an outage shorter than FENCE_S: a longer one fences the job, test_supervisor.py)
    database_url = f"{private_postgres.server}/overlay"
    ensure_database(database_url)
    migrate(database_url)
    stack = Stack(database_url=database_url, redis_url=redis_url, workdir=tmp_path,
                  NODE_TTL_S="30", FENCE_S="20")
    ended = tmp_path / "ended"
    try:
        stack.start_cluster(agents=("node-a",))
        submit(stack, job_id="through", gpus=1, cmd=["sh", "-c", f"sleep 3; echo bye; touch {ended}"])
        wait_state(stack, "through", {"RUNNING"})

        # When Postgres stops (immediate: as a crash would)
        private_postgres.stop()
        # Then /ready answers 503 naming Postgres, and the API's other answers are 503 too
        ready = wait_until(lambda: (r := requests.get(f"{stack.api}/ready", timeout=10)).status_code == 503
                           and r.json(), timeout=15, what="/ready to say 503")
        assert ready["postgres"]["ok"] is False and ready["redis"]["ok"] is True
        listing = requests.get(f"{stack.api}/api/jobs", timeout=10)
        assert listing.status_code == 503 and listing.json()["code"] == 503
        # and the job runs to its end meanwhile
        wait_until(ended.exists, timeout=15, what="the job to end")
        time.sleep(2)

        # When Postgres is back
        private_postgres.start()
        # Then the API is ready again by itself, and the job's end is recorded: DONE, attempt 1
        wait_until(lambda: requests.get(f"{stack.api}/ready", timeout=10).status_code == 200,
                   timeout=20, what="/ready to say 200 again")
        done = wait_state(stack, "through", TERMINAL, timeout=30)
        assert (done["state"], done["exit_code"], done["attempt"]) == ("DONE", 0, 1)
        assert "Postgres is away" in stack.output("node-a")
        # and new work runs
        submit(stack, job_id="after", cmd=["true"])
        assert wait_state(stack, "after", TERMINAL)["state"] == "DONE"
    finally:
        stack.stop_all()
        print(stack.all_output()[-20000:])
