"""One clock: agents whose host clocks are an hour off still get work while they heartbeat,
still die on time when they stop, and their jobs' timestamps are in order.

The agents run under Debian's ``faketime`` (libfaketime), one an hour ahead and one an
hour behind the API, the scheduler, beat and Postgres.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from datetime import datetime

import pytest

from tests.integration.harness import Stack, free_port, nodes, submit, wait_state, wait_until

pytestmark = pytest.mark.slow
SKEW = {"node-a": "+1h", "node-b": "-1h"}
TTL_S = 4


def start_skewed_agent(stack: Stack, node: str, skew: str) -> None:
    port = free_port()
    argv = ["faketime", "-f", skew, *stack.worker(node, f"assign:{node},overlay.heartbeat", concurrency=4)]
    stack.start(node, argv, NODE_NAME=node, AGENT_PORT=str(port), FAKE_GPUS="", NODE_LABELS=f"node={node}")
    stack.wait_agent(node, port)


@pytest.fixture
def skewed(stack: Stack) -> Stack:
    if shutil.which("faketime") is None:
        missing = "needs Debian's faketime on PATH (apt-get install faketime; .ci/run installs it)"
        pytest.fail(missing) if os.environ.get("CI") == "true" else pytest.skip(missing)
    stack.start_api()
    stack.start_scheduler()
    stack.start_beat()
    for node, skew in SKEW.items():
        start_skewed_agent(stack, node, skew)
    return stack


def test_agents_an_hour_ahead_and_behind_get_work_and_their_jobs_timestamps_are_in_order(skewed):
    # Given node-a an hour ahead and node-b an hour behind, both heartbeating
    # When one job is submitted for each node, twice the node TTL apart
    for node in SKEW:
        submit(skewed, job_id=f"first-{node}", cmd=["true"], gpus=1, node_selector={"node": node})
    first = {node: wait_state(skewed, f"first-{node}", {"DONE", "FAILED"}) for node in SKEW}
    time.sleep(2 * TTL_S)
    for node in SKEW:
        submit(skewed, job_id=f"later-{node}", cmd=["true"], gpus=1, node_selector={"node": node})
    later = {node: wait_state(skewed, f"later-{node}", {"DONE", "FAILED"}) for node in SKEW}
    # Then every job ran DONE on its node: both nodes stayed alive and placeable
    for job in [*first.values(), *later.values()]:
        assert job["state"] == "DONE", job
        # and its timestamps, all from one clock, are in order and close together
        t = {k: datetime.fromisoformat(v) for k, v in job["timestamps"].items()}
        assert t["enqueued"] <= t["placed"] <= t["started"] <= t["finished"], job
        assert (t["finished"] - t["enqueued"]).total_seconds() < 60, job
    assert {n: first[n]["node"] for n in SKEW} == {n: n for n in SKEW}
    # and /api/nodes shows both as seen moments ago, not an hour off
    for node, info in nodes(skewed).items():
        assert abs(info["last_seen_age_s"]) < TTL_S, (node, info["last_seen_age_s"])


def test_stopped_agents_with_skewed_clocks_go_offline_within_the_ttl(skewed):
    # Given both skewed agents alive
    assert set(nodes(skewed)) == set(SKEW)
    # When both are killed
    for node in SKEW:
        skewed.kill(node, signal.SIGKILL)
    stopped = time.monotonic()
    # Then both are offline within the TTL (and a reconcile tick or two)
    wait_until(lambda: not nodes(skewed), timeout=TTL_S + 3, what="both nodes to drop out of /api/nodes")
    offline = nodes(skewed, "?include=offline")
    wait_until(lambda: all(n["state"] == "offline" for n in nodes(skewed, "?include=offline").values()),
               timeout=TTL_S + 3, what="reconcile to mark both offline")
    assert set(offline) == set(SKEW)
    assert time.monotonic() - stopped < TTL_S + 6
