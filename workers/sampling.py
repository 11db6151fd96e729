"""The agent's GPU sampler: every GPU_SAMPLE_S it reads its GPUs, folds each reading into
the job holding the GPU (one write per round), and applies the idle policy."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from overlay.efficiency import GpuSample, GpuUsage, IdleDecision, IdlePolicy, decide_idle, fold, policy_for
from overlay.errors import OverlayError
from overlay.logfmt import job_fields
from overlay.model import ProbeReport
from overlay.states import JobState
from overlay.store import jobs as job_store
from overlay.store import samples as sample_store
from overlay.store.session import resolve_now
from workers import supervision
from workers.runtime import Runtime

log = logging.getLogger(__name__)


def parse_script(text: str) -> tuple[int, ...]:
    """OVERLAY_FAKE_UTIL ``"90,0"`` -> (90, 0); empty or malformed -> () (no script)."""
    try:
        return tuple(min(100, max(0, int(v))) for v in text.split(",") if v.strip())
    except ValueError:
        return ()


@dataclass(frozen=True, kw_only=True)
class Round:
    """What one round did: the folds it wrote and the idle decisions it took, by job."""

    folds: tuple[GpuUsage, ...] = ()
    decisions: Mapping[str, IdleDecision] | None = None


class Sampler:
    """One per agent process. ``clock`` is monotonic: the seconds a sample stands for."""

    def __init__(self, rt: Runtime, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.rt = rt
        self.clock = clock
        self._last: float | None = None
        # The energy counter (mJ) each GPU read last round, and the job then holding it.
        self._energy: dict[int, tuple[str, int]] = {}

    def round(self, *, now: datetime | None = None) -> Round:
        """Sample once; fold into the jobs RUNNING here; mark, clear or cancel idle jobs."""
        busy = self.rt.agent.busy_now()
        if not busy:
            self._last, self._energy = None, {}
            return Round()
        with self.rt.sessions.begin() as s:
            jobs = sample_store.running(s, set(busy.values()))
        self._script(jobs)
        report = self.rt.probe.sample(busy)
        samples = self._attribute(report, {i: j for i, j in busy.items() if j in jobs})
        with self.rt.sessions.begin() as s:
            now = resolve_now(s, now)
            current = sample_store.usages(s, jobs, lock=True)
            folds = tuple(fold(current.get((x.job_id, x.gpu_index)), x, now=now,
                               idle_util_pct=self.rt.settings.idle_util_pct) for x in samples)
            sample_store.save(s, folds, now=now)
            decisions = {job_id: self._decide(job, [f for f in folds if f.job_id == job_id], now=now)
                         for job_id, job in jobs.items()}
            cancelled = [jobs[j] for j, d in decisions.items() if d.action == "cancel"
                         and self._apply(s, jobs[j], d, now=now)]
            for job_id, decision in decisions.items():
                if decision.action in ("mark", "clear"):
                    self._apply(s, jobs[job_id], decision, now=now)
        for job in cancelled:  # after the commit, as the API's cancel does
            supervision.cancel(self.rt, job.job_id, job.attempt, decisions[job.job_id].reason)
        return Round(folds=folds, decisions=decisions)

    def _script(self, jobs: Mapping[str, sample_store.RunningJob]) -> None:
        """Fake GPUs read what a job's OVERLAY_FAKE_UTIL says (real ones ignore it)."""
        script = getattr(self.rt.probe, "script", None)
        if script is None:
            return
        for job in jobs.values():
            values = parse_script(job.fake_util)
            if values:
                script(job.job_id, values)

    def _attribute(self, report: ProbeReport, held: Mapping[int, str]) -> list[GpuSample]:
        """One sample per GPU held by a running job, standing for the time since the last round."""
        t = self.clock()
        sample_s = self.rt.settings.gpu_sample_s
        seconds = sample_s if self._last is None else min(max(t - self._last, 0.0), 3 * sample_s)
        self._last = t
        out: list[GpuSample] = []
        for gpu in report.gpus:
            job_id = held.get(gpu.index)
            if job_id is None:
                continue
            previous = self._energy.get(gpu.index)
            energy_j = None
            if gpu.energy_mj is not None:
                if previous is not None and previous[0] == job_id and gpu.energy_mj >= previous[1]:
                    energy_j = (gpu.energy_mj - previous[1]) / 1000
                self._energy[gpu.index] = (job_id, gpu.energy_mj)
            out.append(GpuSample(job_id=job_id, gpu_index=gpu.index, util_pct=gpu.utilization_gpu_pct,
                                 memory_used_mb=gpu.memory_used_mb, memory_total_mb=gpu.memory_total_mb,
                                 power_w=gpu.power_draw_w, energy_j=energy_j, seconds=seconds))
        return out

    def _decide(self, job: sample_store.RunningJob, folds: list[GpuUsage], *, now: datetime) -> IdleDecision:
        s = self.rt.settings
        default = IdlePolicy(util_pct=s.idle_util_pct, after_s=s.idle_after_s, action=s.idle_policy,
                             cancel_after_s=s.idle_cancel_after_s)
        if not folds:
            return IdleDecision(action="none")
        policy = policy_for(job.account, default=default, per_account=s.idle_policy_accounts)
        return decide_idle(below_since=[f.below_since for f in folds], marked_since=job.idle_since, now=now,
                           policy=policy, idle_ok=job.idle_ok)

    def _apply(self, s: Session, job: sample_store.RunningJob, decision: IdleDecision, *,
               now: datetime) -> bool:
        """Record one decision in the round's transaction; whether it was applied."""
        node = self.rt.settings.node_name
        fields = job_fields(job.job_id, node, attempt=job.attempt)
        if decision.action == "mark":
            sample_store.mark_idle(s, job.job_id, decision.idle_since, attempt=job.attempt, node=node,
                                   reason=decision.reason, now=now)
            log.warning("job %s: %s (user %s, account %s)", job.job_id, decision.reason, job.user,
                        job.account, extra=fields)
        elif decision.action == "clear":
            sample_store.mark_idle(s, job.job_id, None, attempt=job.attempt, node=node)
            log.info("job %s: GPUs busy again", job.job_id, extra=fields)
        elif decision.action == "cancel":
            try:
                job_store.transition(s, job.job_id, JobState.CANCELLED, now=now,
                                     reason=decision.reason, attempt=job.attempt, keep_gpus=True)
            except OverlayError as e:  # it ended or moved on meanwhile
                log.info("job %s: not cancelled for idleness: %s", job.job_id, e, extra=fields)
                return False
            log.warning("job %s cancelled: %s", job.job_id, decision.reason, extra=fields)
        return True


def start(rt: Runtime) -> threading.Thread:
    """Sample on a thread of its own, every GPU_SAMPLE_S, until the agent stops."""
    sampler = Sampler(rt)
    thread = threading.Thread(target=_loop, args=(rt, sampler), daemon=True, name="gpu-sampler")
    thread.start()
    return thread


def _loop(rt: Runtime, sampler: Sampler) -> None:
    last_error = ""
    while not rt.agent.stopping:
        started = time.monotonic()
        try:
            sampler.round()
            last_error = ""
        except Exception as e:  # Postgres away, NVML hiccup: the next round tries again
            if str(e) != last_error:
                log.warning("GPU sampling round failed: %s: %s", type(e).__name__, e)
            last_error = str(e)
        time.sleep(max(0.0, rt.settings.gpu_sample_s - (time.monotonic() - started)))
