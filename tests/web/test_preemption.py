"""The API's side of preemption: ``preemptible`` at submit (a bad value is a 422 naming it),
a job's ``preemptions`` and ``preempted_by``, and its history at /api/jobs/<id>/events with
the preemption on both jobs."""

from __future__ import annotations

from dataclasses import replace

from overlay.model import Placement
from overlay.store import jobs as job_store
from overlay.store import preemption as preemption_store
from tests.store.world import T0, Cluster, seconds
from workers.scheduler import schedule_pass


def test_preemptible_is_taken_at_submit_and_shown(client):
    kept = {"job_id": "kept", "cmd": ["true"], "preemptible": False}
    assert client.post("/api/jobs", json=kept).status_code == 201
    assert client.post("/api/jobs", json={"job_id": "any", "cmd": ["true"]}).status_code == 201
    assert client.get("/api/jobs/kept").json["request"]["preemptible"] is False
    shown = client.get("/api/jobs/any").json
    assert (shown["request"]["preemptible"], shown["preemptions"], shown["preempted_by"]) == (True, 0, None)


def test_a_preemptible_that_is_not_a_boolean_is_refused_naming_the_field(client, count_rows):
    before = count_rows()
    answer = client.post("/api/jobs", json={"job_id": "x", "cmd": ["true"], "preemptible": "no"})
    assert answer.status_code == 422
    assert "preemptible" in answer.get_data(as_text=True)
    assert count_rows() == before


def test_a_preemption_shows_on_both_jobs_and_in_their_events(client, sessions, settings):
    # Given a 1-GPU node running "low", and "urgent" waiting with a priority 50 higher
    cluster = Cluster(sessions)
    cluster.node("n1", gpus=1)
    cluster.submit("low", gpus=1, at=T0)
    cluster.place("low", on="n1", gpus=(0,), at=T0)
    cluster.start("low", at=T0)
    cluster.submit("urgent", gpus=1, priority=50, at=T0 + seconds(1))
    # When a pass with preemption on runs
    result = schedule_pass(sessions, replace(settings, preemption="on"), now=T0 + seconds(2))
    assert [m.job_id for m in result.preempts] == ["low"]
    # Then the victim says who it was preempted for, and its history says when
    low = client.get("/api/jobs/low").json
    assert (low["state"], low["preemptions"], low["preempted_by"]) == ("QUEUED", 1, "urgent")
    history = client.get("/api/jobs/low/events").json
    assert [(e["from_state"], e["to_state"], e["reason"]) for e in history] == [
        (None, "QUEUED", "submitted"), ("QUEUED", "PLACED", None), ("PLACED", "RUNNING", None),
        ("RUNNING", "QUEUED", "preempted by urgent")]
    assert history[-1]["node"] == "n1" and history[-1]["gpus"] == [0]
    # And the waiting job's history has the note of whom it preempted
    assert client.get("/api/jobs/urgent/events").json[-1]["reason"] == "preempting low on n1"


def test_events_of_an_unknown_job_are_a_404(client):
    assert client.get("/api/jobs/nope/events").status_code == 404


def test_place_keeps_nothing_of_a_past_preemption(sessions):
    cluster = Cluster(sessions)
    cluster.node("n1", gpus=1)
    cluster.submit("j", gpus=1, at=T0)
    cluster.place("j", on="n1", gpus=(0,), at=T0)
    cluster.start("j", at=T0)
    with sessions.begin() as s:
        preemption_store.preempt(s, "j", attempt=1, by="other", now=T0 + seconds(1))
        job_store.release_gpus(s, "j", attempt=1, now=T0 + seconds(2))
    with sessions.begin() as s:
        again = job_store.place(s, "j", Placement(node="n1", gpus=(0,)), now=T0 + seconds(3))
    assert (again.attempt, again.preemptions, again.preempted_by) == (2, 1, None)
