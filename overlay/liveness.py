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
