"""GPU efficiency: GPU samples folded per job and GPU, a job's summary, and the idle decision.

Pure: the agent's sampler (workers/sampling.py) reads the GPUs and stores the folds; the
API and the CLI show the summaries. Time is always an argument.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime

IDLE_POLICIES = ("warn", "cancel")
MIB_PER_GIB = 1024
J_PER_KWH = 3.6e6


@dataclass(frozen=True, kw_only=True)
class GpuSample:
    """One GPU's reading, held by ``job_id``, standing for the ``seconds`` since the last round.

    ``energy_j``: what NVML's energy counter says the GPU used in those seconds (None
    where the GPU has no counter: the power reading times the seconds stands for it).
    """

    job_id: str
    gpu_index: int
    util_pct: int
    memory_used_mb: int
    memory_total_mb: int
    power_w: float | None = None
    energy_j: float | None = None
    seconds: float

    @property
    def energy(self) -> float:
        if self.energy_j is not None:
            return self.energy_j
        return (self.power_w or 0.0) * self.seconds


@dataclass(frozen=True, kw_only=True)
class GpuUsage:
    """Everything sampled of one GPU while one job held it."""

    job_id: str
    gpu_index: int
    samples: int = 0
    util_sum: float = 0.0
    util_max: int = 0
    memory_peak_mb: int = 0
    memory_total_mb: int = 0
    energy_j: float = 0.0
    seconds: float = 0.0
    idle_seconds: float = 0.0
    # When the GPU last went below the idle threshold; None while it is busy.
    below_since: datetime | None = None


def fold(usage: GpuUsage | None, sample: GpuSample, *, now: datetime, idle_util_pct: float) -> GpuUsage:
    """``usage`` with ``sample`` (taken at ``now``) added."""
    if usage is None:
        usage = GpuUsage(job_id=sample.job_id, gpu_index=sample.gpu_index)
    below = sample.util_pct < idle_util_pct
    return replace(
        usage,
        samples=usage.samples + 1,
        util_sum=usage.util_sum + sample.util_pct,
        util_max=max(usage.util_max, sample.util_pct),
        memory_peak_mb=max(usage.memory_peak_mb, sample.memory_used_mb),
        memory_total_mb=sample.memory_total_mb or usage.memory_total_mb,
        energy_j=usage.energy_j + sample.energy,
        seconds=usage.seconds + sample.seconds,
        idle_seconds=usage.idle_seconds + (sample.seconds if below else 0.0),
        below_since=(usage.below_since or now) if below else None,
    )


@dataclass(frozen=True, kw_only=True)
class Efficiency:
    """A job's GPU efficiency over everything sampled of it."""

    samples: int
    util_mean_pct: float
    util_max_pct: int
    # Peak memory used per GPU index, and the GPU's total.
    memory_peak_mb: dict[int, int]
    memory_total_mb: int
    gpu_memory_mb_asked: int | None
    energy_j: float
    gpu_seconds: float
    idle_gpu_seconds: float

    @property
    def memory_peak_max_mb(self) -> int:
        return max(self.memory_peak_mb.values(), default=0)

    @property
    def energy_kwh(self) -> float:
        return self.energy_j / J_PER_KWH


def summarize(usages: Iterable[GpuUsage], *, gpu_memory_mb_asked: int | None = None) -> Efficiency | None:
    """The job's summary from its GPUs' folds; None when nothing was sampled.

    The mean weighs every sample alike (samples are GPU_SAMPLE_S apart).
    """
    rows = [u for u in usages if u.samples > 0]
    if not rows:
        return None
    samples = sum(u.samples for u in rows)
    return Efficiency(
        samples=samples,
        util_mean_pct=round(sum(u.util_sum for u in rows) / samples, 1),
        util_max_pct=max(u.util_max for u in rows),
        memory_peak_mb={u.gpu_index: u.memory_peak_mb for u in sorted(rows, key=lambda u: u.gpu_index)},
        memory_total_mb=max(u.memory_total_mb for u in rows),
        gpu_memory_mb_asked=gpu_memory_mb_asked,
        energy_j=round(sum(u.energy_j for u in rows), 3),
        gpu_seconds=round(sum(u.seconds for u in rows), 3),
        idle_gpu_seconds=round(sum(u.idle_seconds for u in rows), 3),
    )


def line(eff: Efficiency) -> str:
    """``GPU util 12% mean / 40% max · peak memory 9.1 of 80 GiB · 0.4 kWh``."""
    peak, total = eff.memory_peak_max_mb / MIB_PER_GIB, eff.memory_total_mb / MIB_PER_GIB
    asked = ""
    if eff.gpu_memory_mb_asked:
        asked = f" (asked {eff.gpu_memory_mb_asked / MIB_PER_GIB:.3g})"
    return (f"GPU util {eff.util_mean_pct:.0f}% mean / {eff.util_max_pct}% max · "
            f"peak memory {peak:.1f} of {total:.3g} GiB{asked} · {energy(eff.energy_j)}")


def energy(joules: float) -> str:
    """``0.4 kWh``; below 0.1 kWh in Wh (``1.1 Wh``), so a short job does not read 7.5e-05."""
    kwh = joules / J_PER_KWH
    return f"{kwh:.2g} kWh" if kwh >= 0.1 else f"{kwh * 1000:.2g} Wh"


def suggested_memory_mb(peak_mb: int) -> int:
    """A gpu_memory_mb that fits ``peak_mb`` with a quarter to spare, in whole GiB."""
    return max(1, math.ceil(peak_mb * 1.25 / MIB_PER_GIB)) * MIB_PER_GIB


def over_asked(asked_mb: int | None, peak_mb: int) -> int | None:
    """The gpu_memory_mb to suggest when a job asked for far more than it used (more than
    twice its peak and at least 4 GiB more); None when the ask was about right."""
    if not asked_mb:
        return None
    suggestion = suggested_memory_mb(peak_mb)
    if asked_mb >= 2 * max(peak_mb, 1) and asked_mb - peak_mb >= 4 * MIB_PER_GIB and suggestion < asked_mb:
        return suggestion
    return None


@dataclass(frozen=True, kw_only=True)
class IdlePolicy:
    """What happens to an idle job: ``warn`` only, or ``cancel`` after ``cancel_after_s``."""

    util_pct: float = 5.0
    after_s: float = 1800.0
    action: str = "warn"
    cancel_after_s: float = 7200.0


def policy_for(account: str, *, default: IdlePolicy, per_account: Mapping[str, str]) -> IdlePolicy:
    """The account's policy: IDLE_POLICY_ACCOUNTS's action for it, else the default."""
    action = per_account.get(account)
    return replace(default, action=action) if action in IDLE_POLICIES else default


@dataclass(frozen=True, kw_only=True)
class IdleDecision:
    """What to do about one running job's idleness now.

    ``action``: "none", "mark" (record ``idle_since``, an event, a log line), "clear"
    (busy again), or "cancel" (end it CANCELLED with ``reason``).
    """

    action: str
    idle_since: datetime | None = None
    reason: str = ""


def idle_since(below_since: Iterable[datetime | None]) -> datetime | None:
    """Since when all of a job's GPUs have been below the threshold; None if one is not."""
    times = list(below_since)
    if not times or any(t is None for t in times):
        return None
    return max(t for t in times if t is not None)


def decide_idle(*, below_since: Iterable[datetime | None], marked_since: datetime | None, now: datetime,
                policy: IdlePolicy, idle_ok: bool = False) -> IdleDecision:
    """The decision for a running job whose GPUs went below the threshold at ``below_since``
    and which was marked idle at ``marked_since`` (None: not marked)."""
    since = idle_since(below_since)
    idle_for = (now - since).total_seconds() if since is not None else 0.0
    if since is None or idle_for < policy.after_s:
        return IdleDecision(action="clear") if marked_since is not None else IdleDecision(action="none")
    if policy.action == "cancel" and not idle_ok and idle_for >= policy.cancel_after_s:
        return IdleDecision(action="cancel", idle_since=since,
                            reason=f"idle: GPUs below {policy.util_pct:g}% for {duration(idle_for)}")
    if marked_since is None:
        return IdleDecision(action="mark", idle_since=since,
                            reason=f"idle: GPUs below {policy.util_pct:g}% for {duration(idle_for)}")
    return IdleDecision(action="none", idle_since=since)


def duration(seconds: float) -> str:
    """``7200`` -> ``2h``, ``5400`` -> ``1h30m``, ``90`` -> ``1m30s``."""
    whole = int(seconds)
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    parts = [f"{h}h" if h else "", f"{m}m" if m else "", f"{s}s" if s and not h else ""]
    return "".join(parts) or "0s"


@dataclass(frozen=True, kw_only=True)
class JobUsage:
    """One sampled job, for the report: who ran it, what it asked, its GPUs' folds."""

    job_id: str
    user: str
    account: str
    gpu_memory_mb: int
    usages: tuple[GpuUsage, ...]


@dataclass(frozen=True, kw_only=True)
class GroupEfficiency:
    """One user's or account's line of the report."""

    group: str
    jobs: int
    gpu_hours: float
    idle_gpu_hours: float
    util_mean_pct: float
    energy_kwh: float


@dataclass(frozen=True, kw_only=True)
class OverAsked:
    """A job that asked for far more GPU memory than it used, and what to ask instead."""

    job_id: str
    user: str
    account: str
    gpu_memory_mb: int
    memory_peak_mb: int
    suggested_mb: int


def report(jobs: Iterable[JobUsage], *, by: str) -> tuple[list[GroupEfficiency], list[OverAsked]]:
    """Per ``by`` ("user" or "account"): GPU-hours, idle GPU-hours, mean utilization (weighed
    by GPU-seconds), energy; and the jobs that asked for far more memory than they used."""
    groups: dict[str, list[Efficiency]] = {}
    over: list[OverAsked] = []
    for job in jobs:
        eff = summarize(job.usages, gpu_memory_mb_asked=job.gpu_memory_mb or None)
        if eff is None:
            continue
        groups.setdefault(job.user if by == "user" else job.account, []).append(eff)
        suggestion = over_asked(job.gpu_memory_mb, eff.memory_peak_max_mb)
        if suggestion is not None:
            over.append(OverAsked(job_id=job.job_id, user=job.user, account=job.account,
                                  gpu_memory_mb=job.gpu_memory_mb, memory_peak_mb=eff.memory_peak_max_mb,
                                  suggested_mb=suggestion))
    return [_group(name, effs) for name, effs in sorted(groups.items())], over


def _group(name: str, effs: list[Efficiency]) -> GroupEfficiency:
    seconds = sum(e.gpu_seconds for e in effs)
    weighted = sum(e.util_mean_pct * e.gpu_seconds for e in effs)
    return GroupEfficiency(
        group=name, jobs=len(effs), gpu_hours=round(seconds / 3600, 4),
        idle_gpu_hours=round(sum(e.idle_gpu_seconds for e in effs) / 3600, 4),
        util_mean_pct=round(weighted / seconds, 1) if seconds > 0 else 0.0,
        energy_kwh=round(sum(e.energy_j for e in effs) / J_PER_KWH, 4),
    )
