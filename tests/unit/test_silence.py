"""When the API and placement take a node's silence for death: only while others are heard."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from overlay.liveness import silence_cutoff

NOW = datetime(2026, 1, 1, tzinfo=UTC)
TTL = 15


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def test_while_some_node_is_heard_a_node_silent_past_the_ttl_is_dead():
    assert silence_cutoff(NOW, freshest_seen=ago(1), ttl_s=TTL) == ago(TTL)


def test_when_no_node_is_heard_within_the_ttl_silence_proves_nothing():
    # beat (which asks for heartbeats) is away, not the whole fleet
    assert silence_cutoff(NOW, freshest_seen=ago(TTL + 1), ttl_s=TTL) is None


def test_no_node_at_all_judges_nothing():
    assert silence_cutoff(NOW, freshest_seen=None, ttl_s=TTL) is None


def test_a_heartbeat_exactly_a_ttl_old_still_counts_as_heard():
    assert silence_cutoff(NOW, freshest_seen=ago(TTL), ttl_s=TTL) == ago(TTL)
