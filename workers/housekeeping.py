"""Beat's housekeeping tick: fold the job counters, delete one batch of jobs past retention
and their log files. Called by the ``housekeeping`` task; tests call it directly with a ``now``."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from overlay.config import Settings
from overlay.gang import MAX_NODES
from overlay.launch import log_path
from overlay.retention import retention_cutoff
from overlay.store import counters
from overlay.store import retention as retention_store
from overlay.store.session import resolve_now

log = logging.getLogger(__name__)

HOUSEKEEPING_TASK = "overlay.housekeeping"
# Seconds between ticks: RETENTION_BATCH (1,000) jobs each, so a backlog of a million
# finished jobs drains in under three hours without one long transaction.
HOUSEKEEPING_INTERVAL_S = 10.0


@dataclass(frozen=True, kw_only=True)
class Swept:
    """What one tick did: the jobs it deleted and how many of their log files it removed."""

    deleted: tuple[str, ...]
    logs_removed: int


def housekeeping(sessions: sessionmaker[Session], settings: Settings, *,
                 now: datetime | None = None) -> Swept:
    """One tick: counters folded (own transaction), then at most RETENTION_BATCH expired jobs
    deleted and, once that is committed, their log files under LOG_DIR removed."""
    with sessions.begin() as s:
        counters.compact(s)
    with sessions.begin() as s:
        cutoff = retention_cutoff(now=resolve_now(s, now), retention_days=settings.retention_days)
        if cutoff is None:
            return Swept(deleted=(), logs_removed=0)
        deleted = retention_store.delete_finished_before(s, cutoff=cutoff, limit=settings.retention_batch)
    removed = sum(_remove_log(settings.log_dir, job_id) for job_id in deleted)
    if deleted:
        log.info("retention: deleted %d job(s) finished before %s, %d log file(s)",
                 len(deleted), cutoff.isoformat(), removed)
    return Swept(deleted=tuple(deleted), logs_removed=removed)


def _remove_log(log_dir: str, job_id: str) -> int:
    """Remove the job's log files (a gang job's parts' too) this host has; how many (another
    node's stay with that node)."""
    removed = 0
    for part in range(MAX_NODES):
        try:
            log_path(log_dir, job_id, part).unlink()
        except FileNotFoundError:
            continue
        removed += 1
    return removed
