"""Cluster-wide state changed at run time (the active policy, reconcile's bookkeeping),
kept as keys and JSON values in the cluster_state table."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from overlay.store.tables import ClusterStateRow

ACTIVE_POLICY = "active_policy"
# The advisory lock that lets one scheduling pass run at a time across every scheduler.
SCHEDULER_LOCK = 0x6F766C79
RECONCILE = "reconcile"


def hold_scheduler_lock(session: Session) -> None:
    """Wait for, then hold until this transaction ends, the one scheduling pass's lock."""
    session.connection().execute(LOCK)


LOCK = select(func.pg_advisory_xact_lock(SCHEDULER_LOCK))


def active_policy(session: Session, *, default: str) -> str:
    value = get(session, ACTIVE_POLICY)
    return str(value) if value else default


def set_active_policy(session: Session, name: str) -> None:
    put(session, ACTIVE_POLICY, name)


def get(session: Session, key: str, *, lock: bool = False) -> Any:
    return session.connection().execute(GET_LOCKED if lock else GET, {"key": key}).scalar()


GET = select(ClusterStateRow.value).where(ClusterStateRow.key == bindparam("key"))
GET_LOCKED = GET.with_for_update()


def put(session: Session, key: str, value: Any) -> None:
    stmt = pg_insert(ClusterStateRow).values(key=key, value=value)
    session.execute(stmt.on_conflict_do_update(index_elements=[ClusterStateRow.key], set_={"value": value}))


def reconcile_state(session: Session) -> tuple[datetime | None, datetime | None]:
    """(previous reconcile tick, node expiry paused until), locked for this tick."""
    value = get(session, RECONCILE, lock=True) or {}
    return _time(value.get("tick")), _time(value.get("paused_until"))


def save_reconcile_state(session: Session, *, tick: datetime, paused_until: datetime | None) -> None:
    put(session, RECONCILE, {"tick": tick.isoformat(),
                             "paused_until": paused_until.isoformat() if paused_until else None})


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None
