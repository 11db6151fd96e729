"""Gang jobs on real processes (API, scheduler, beat, two agents): a 2-node job's parts run
on node-a and node-b and meet through a TCP rendezvous at MASTER_ADDR:MASTER_PORT; one part
failing stops the other and fails the job as one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from click.testing import CliRunner

from cli.main import main
from tests.integration.harness import (
    GANG_RENDEZVOUS,
    TERMINAL,
    Stack,
    job,
    shared_stack,
    submit,
    wait_state,
    wait_until,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(database_url, tmp_path_factory) -> Iterator[Stack]:
    yield from shared_stack(database_url, tmp_path_factory.mktemp("gang-stack"))


def part_logs(stack: Stack, job_id: str, part: int) -> requests.Response:
    return requests.get(f"{stack.api}/api/jobs/{job_id}/logs", params={"part": part}, timeout=10)


def test_two_parts_on_two_nodes_meet_at_the_rendezvous_and_each_prints_the_others_rank(cluster):
    # Given a 2-node job of 1 GPU a node running the rendezvous script
    submit(cluster, job_id="gang-meet", nodes=2, gpus=1, timeout_s=120,
           cmd=["python3", "-c", GANG_RENDEZVOUS])
    # When it has run
    done = wait_state(cluster, "gang-meet", TERMINAL, timeout=120)
    # Then it is DONE as one, its parts on node-a and node-b, each with its GPU and exit code 0
    assert done["state"] == "DONE", done
    assert done["nodes"] == 2 and done["master_addr"] and done["master_port"]
    assert [(p["part"], p["node"], len(p["gpus"]), p["state"], p["exit_code"]) for p in done["parts"]] == [
        (0, "node-a", 1, "DONE", 0), (1, "node-b", 1, "DONE", 0)]
    # and each part's log shows it met the other, at the rendezvous the API shows
    master = f"master={done['master_addr']}:{done['master_port']}"
    zero, one = part_logs(cluster, "gang-meet", 0).text, part_logs(cluster, "gang-meet", 1).text
    assert "rank 0 of 2 nnodes=2 gpus_per_node=1 " + master in zero and "rank 0 met rank 1" in zero
    assert "rank 1 of 2 nnodes=2 gpus_per_node=1 " + master in one and "rank 1 met rank 0" in one
    assert "part 1 of 2 on node-b" in one
    # and a part the job does not have is a 422 naming the field
    bad = part_logs(cluster, "gang-meet", 2)
    assert bad.status_code == 422 and "part" in bad.json()["errors"]
    # and the CLI shows the parts and reads a part's log
    status = CliRunner().invoke(main, ["--api", cluster.api, "status", "gang-meet"])
    assert "part 1    node-b GPUs" in status.output and "DONE (exit 0)" in status.output, status.output
    shown = CliRunner().invoke(main, ["--api", cluster.api, "logs", "--part", "1", "gang-meet"])
    assert shown.exit_code == 0 and "rank 1 met rank 0" in shown.output, shown.output


def test_one_part_failing_stops_the_other_and_fails_the_job_as_one(cluster):
    # Given a 2-node job whose rank 1 fails at once while rank 0 would run for a minute
    script = 'if [ "$NODE_RANK" = 1 ]; then exit 3; fi; echo rank0 waiting; sleep 60'
    submit(cluster, job_id="gang-fail", nodes=2, gpus=1, cmd=["sh", "-c", script])
    # When rank 1 has failed
    failed = wait_state(cluster, "gang-fail", TERMINAL, timeout=60)
    # Then the job FAILED as one, saying which part
    assert (failed["state"], failed["exit_code"]) == ("FAILED", 3), failed
    assert failed["reason"].startswith("part 1 on node-b"), failed["reason"]
    # and rank 0 was stopped by its agent well before its minute, and its GPU freed
    stopped = wait_until(lambda: (j := job(cluster, "gang-fail"))["parts"][0]["state"] != "RUNNING" and j,
                         timeout=30, what="rank 0 to be stopped")
    assert [p["state"] for p in stopped["parts"]] == ["CANCELLED", "FAILED"]
    assert stopped["parts"][0]["reason"] == "job is FAILED"
    nodes = requests.get(f"{cluster.api}/api/nodes", timeout=10).json()["nodes"]
    holders = [g["job_id"] for n in nodes for g in n["gpus"]]
    assert "gang-fail" not in holders


def test_cancelling_a_running_gang_stops_every_part(cluster):
    # Given a 2-node job whose parts both run (each says so, then sleeps)
    submit(cluster, job_id="gang-cancel", nodes=2, gpus=1, cmd=["sh", "-c", "echo up; sleep 60"])
    wait_until(lambda: [p["state"] for p in job(cluster, "gang-cancel")["parts"]] == ["RUNNING", "RUNNING"],
               timeout=60, what="both parts to run")
    # When it is cancelled
    response = requests.post(f"{cluster.api}/api/jobs/gang-cancel/cancel", timeout=10)
    assert response.status_code == 200 and response.json()["state"] == "CANCELLED"
    # Then both parts are stopped by their agents, and no GPU stays held
    def ended() -> dict | None:
        shown = job(cluster, "gang-cancel")
        return shown if all(p["state"] == "CANCELLED" for p in shown["parts"]) else None

    stopped = wait_until(ended, timeout=30, what="both parts to be stopped")
    assert [p["reason"] for p in stopped["parts"]] == ["job is CANCELLED", "job is CANCELLED"]
    nodes = requests.get(f"{cluster.api}/api/nodes", timeout=10).json()["nodes"]
    assert "gang-cancel" not in [g["job_id"] for n in nodes for g in n["gpus"]]
