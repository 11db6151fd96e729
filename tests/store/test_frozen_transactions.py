"""An agent frozen inside a transaction (SIGSTOP between a write and its commit) holds its
row locks only until Postgres ends its session (idle_in_transaction_session_timeout, set
to FENCE_S on an agent's engine): reconcile, waiting for its node's row, goes on then."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from overlay.store import agents
from overlay.store import nodes as node_store
from overlay.store.session import make_engine, make_sessionmaker
from tests.store.world import T0, seconds
from workers.runtime import Runtime


def test_a_frozen_agents_open_transaction_is_ended_and_reconcile_expires_its_node(cluster, database_url):
    # Given node-a, whose agent renews its lease and freezes before committing (an engine
    # as an agent's, FENCE_S of half a second)
    cluster.node("node-a", at=T0)
    engine = make_engine(database_url, idle_in_transaction_s=0.5)
    frozen = make_sessionmaker(engine)()
    try:
        assert agents.renew_lease(frozen, "node-a")  # the node's row is locked, not committed
        # When reconcile expires silent nodes (every node is silent by its cutoff)
        expired: list[list[str]] = []

        def reconcile() -> None:
            with cluster.sessions.begin() as s:
                expired.append(node_store.expire_nodes(s, cutoff=T0 + seconds(3600 * 24 * 3650)))

        waiting = threading.Thread(target=reconcile, daemon=True)
        waiting.start()
        waiting.join(timeout=30)
        # Then it waited only until Postgres ended the frozen session, and expired node-a
        assert not waiting.is_alive(), "reconcile still waits for the frozen agent's row lock"
        assert expired == [["node-a"]]
        # and the frozen agent's session is gone: its write was never committed
        with pytest.raises(OperationalError):
            frozen.execute(text("select 1"))
    finally:
        frozen.close()
        engine.dispose()


def test_an_agents_sessions_are_cut_off_after_fence_s_and_the_schedulers_are_not(settings):
    def timeout_of(rt: Runtime) -> str:
        with rt.sessions() as s:
            return str(s.execute(text("show idle_in_transaction_session_timeout")).scalar_one())

    agent = Runtime(replace(settings, node_name="node-a", fence_s=2.5))
    scheduler = Runtime(settings)
    try:
        assert timeout_of(agent) == "2500ms"
        assert timeout_of(scheduler) == "0"
    finally:
        for rt in (agent, scheduler):
            rt.sessions.kw["bind"].dispose()
