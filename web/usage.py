"""/api/usage and /api/share: GPU-hours per group and period (like sreport), and each
account's and user's share, usage and fair-share factor (like sshare)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint
from prometheus_client.core import CounterMetricFamily, Metric
from sqlalchemy.orm import Session

from overlay.fairshare import fairshare_factor, normalized_share, user_factor
from overlay.store import accounts, sharing
from overlay.store import usage as store
from overlay.store.session import resolve_now
from web.deps import deps
from web.schemas import ShareSchema, UsageQuerySchema, UsageSchema

blp = Blueprint("usage", __name__, url_prefix="/api", description="Accounting and fair share")


def utc(at: datetime | None) -> datetime | None:
    """``at`` in UTC (Postgres refuses offsets past ±15:59), clamped to the years Python has."""
    if at is None:
        return None
    try:
        return at.astimezone(UTC)
    except OverflowError:
        return (datetime.min if at.year == datetime.min.year else datetime.max).replace(tzinfo=UTC)


@blp.route("/usage")
class Usage(MethodView):
    @blp.arguments(UsageQuerySchema, location="query")
    @blp.response(200, UsageSchema)
    def get(self, query: dict[str, Any]) -> dict[str, Any]:
        """GPU-hours of ended attempts per account, user or GPU model, within ``since``..``until``."""
        since, until = utc(query.get("since")), utc(query.get("until"))
        with deps().transaction() as s:
            rows = store.report(s, group_by=query["group_by"], since=since, until=until)
        return {"group_by": query["group_by"], "since": since, "until": until,
                "rows": [{"group": r.group, "gpu_seconds": r.gpu_seconds, "gpu_hours": r.gpu_hours,
                          "attempts": r.attempts} for r in rows]}


@blp.route("/share")
class Share(MethodView):
    @blp.response(200, ShareSchema)
    def get(self) -> dict[str, Any]:
        """Per account and user: share, decayed usage and fair-share factor now."""
        svc = deps()
        half_life = svc.settings.fairshare_half_life
        with svc.transaction() as s:
            now = resolve_now(s, svc.clock())
            _, shares = accounts.quotas_and_shares(s)
            used = sharing.decayed_usage(s, now=now, half_life_s=half_life)
        total = used.total
        names = sorted(set(shares) | set(used.accounts))
        rows = []
        for name in names:
            users = sorted(u for a, u in used.users if a == name)
            rows.append({
                "account": name, "share": shares.get(name),
                "normalized_share": normalized_share(shares, name),
                "usage": used.accounts.get(name, 0.0),
                "normalized_usage": used.accounts.get(name, 0.0) / total if total > 0 else 0.0,
                "fairshare_factor": fairshare_factor(used, shares, account=name),
                "users": [{"user": u, "usage": used.users[name, u],
                           "user_factor": user_factor(used, account=name, user=u)} for u in users],
            })
        return {"at": now, "half_life_s": half_life, "accounts": rows}


def gpu_seconds_family(s: Session) -> Metric:
    """``overlay_gpu_seconds_total{account,user}``: GPU-seconds of every ended attempt, read
    from the running totals (one row per account and user, not the attempts)."""
    family = CounterMetricFamily("overlay_gpu_seconds", "GPU-seconds held by ended attempts "
                                 "(GPUs x placement to release), by account and user.",
                                 labels=["account", "user"])
    for account, user, seconds in store.totals(s):
        family.add_metric([account, user], seconds)
    return family
