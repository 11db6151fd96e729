"""/api/efficiency: the idle jobs now and the efficiency report (like seff/jobstats); and
a job's ``efficiency`` and ``idle_since`` for /api/jobs/<id>."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy.orm import Session

from overlay.efficiency import Efficiency, line, report
from overlay.identity import Caller
from overlay.store import samples as store
from overlay.store.session import resolve_now
from web.auth import current_caller
from web.deps import deps
from web.efficiency_schemas import IdleJobListSchema, ReportQuerySchema, ReportSchema

blp = Blueprint("efficiency", __name__, url_prefix="/api/efficiency", description="GPU efficiency")


def shown(eff: Efficiency | None) -> dict[str, Any] | None:
    if eff is None:
        return None
    view = asdict(eff)
    view["memory_peak_mb"] = {str(k): v for k, v in eff.memory_peak_mb.items()}
    return {**view, "memory_peak_max_mb": eff.memory_peak_max_mb, "energy_kwh": round(eff.energy_kwh, 6),
            "line": line(eff)}


def with_efficiency(view: dict[str, Any]) -> dict[str, Any]:
    """A job's view with its ``efficiency`` (None before any sample) and ``idle_since``."""
    with deps().transaction() as s:
        eff = store.efficiency(s, view["job_id"], gpu_memory_mb_asked=view["request"]["gpu_memory_mb"])
        since = store.idle_since(s, view["job_id"])
    return {**view, "efficiency": shown(eff), "idle_since": since}


def idle_family(session: Session, now: datetime) -> GaugeMetricFamily:
    """``overlay_job_idle_seconds{job,user,account}``: how long each idle running job's GPUs
    have all been idle (only jobs marked idle appear)."""
    family = GaugeMetricFamily("overlay_job_idle_seconds",
                               "Seconds since all the GPUs of a running job went idle (jobs marked idle).",
                               labels=["job", "user", "account"])
    for j in store.idle_jobs(session):
        family.add_metric([j.job_id, j.user, j.account], (now - j.idle_since).total_seconds())
    return family


def allow_idle(session: Session, job_id: str) -> None:
    """The job was submitted ``idle_ok``: the idle policy marks it but never cancels it."""
    store.allow_idle(session, job_id)


def sees(caller: Caller, user: str, account: str) -> bool:
    """overlay.identity.may_see's rule: one's own jobs, a coordinated account's, all for an admin."""
    return caller.admin or user == caller.user or account in caller.coordinates


@blp.route("/idle")
class IdleJobs(MethodView):
    @blp.response(200, IdleJobListSchema)
    def get(self) -> dict[str, Any]:
        """The running jobs whose GPUs have all been idle for IDLE_AFTER_S, longest first."""
        svc, caller = deps(), current_caller()
        with svc.transaction() as s:
            now = resolve_now(s, svc.clock())
            jobs = store.idle_jobs(s)
        return {"jobs": [{**asdict(j), "idle_seconds": round((now - j.idle_since).total_seconds(), 3)}
                         for j in jobs if sees(caller, j.user, j.account)]}


@blp.route("/report")
class Report(MethodView):
    @blp.arguments(ReportQuerySchema, location="query")
    @blp.response(200, ReportSchema)
    def get(self, query: dict[str, Any]) -> dict[str, Any]:
        """Per user or account: GPU-hours, idle GPU-hours, mean utilization, and the jobs
        that asked for far more GPU memory than they used."""
        svc, caller = deps(), current_caller()
        with svc.transaction() as s:
            since = resolve_now(s, svc.clock()) - timedelta(seconds=query["since_s"])
            jobs = store.sampled_jobs(s, since=since, user=query.get("user"), account=query.get("account"))
        groups, over = report([j for j in jobs if sees(caller, j.user, j.account)], by=query["by"])
        return {"by": query["by"], "since": since, "groups": [asdict(g) for g in groups],
                "over_asked": [asdict(o) for o in over]}
