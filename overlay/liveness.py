"""When may a silent node be declared dead? Pure; time is an argument.

Heartbeats and reconcile both come from Celery beat. If beat (or the reconciler)
was away, nodes were silent because nobody asked them: silence then proves
nothing until they have had a full TTL of heartbeats again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True, kw_only=True)
class ExpiryWindow:
    """``cutoff``: nodes last seen before it are dead (None: judge none now).
    ``paused_until``: keep judging none until then."""

    cutoff: datetime | None
    paused_until: datetime | None


def expiry_window(
    now: datetime,
    *,
    previous_tick: datetime | None,
    paused_until: datetime | None,
    ttl_s: float,
    tick_s: float,
) -> ExpiryWindow:
    """The cutoff for this reconcile tick, given when the previous tick ran."""
    gap_limit = timedelta(seconds=max(3 * tick_s, ttl_s / 2))
    if previous_tick is None or now - previous_tick > gap_limit:
        paused_until = now + timedelta(seconds=ttl_s)
    if paused_until is not None and now < paused_until:
        return ExpiryWindow(cutoff=None, paused_until=paused_until)
    return ExpiryWindow(cutoff=now - timedelta(seconds=ttl_s), paused_until=None)


def silence_cutoff(now: datetime, *, freshest_seen: datetime | None, ttl_s: float) -> datetime | None:
    """For placement and for showing nodes: nodes last seen before the returned time are
    dead; None judges none by silence.

    While some node has been heard from within the TTL, heartbeats are being asked
    for, so a node silent for longer is gone. When none has (beat, which asks for
    them, is away: a whole fleet does not die at once), silence proves nothing and
    nodes keep the state reconcile last gave them.
    """
    cutoff = now - timedelta(seconds=ttl_s)
    return cutoff if freshest_seen is not None and freshest_seen >= cutoff else None
