"""/api/jobs: submit, list, show, logs and cancel jobs."""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path
from typing import Any

from flask import Response
from flask.views import MethodView
from flask_smorest import Blueprint

from overlay.launch import log_path
from overlay.logfmt import job_fields
from overlay.model import Job, JobSpec
from overlay.states import JobState
from overlay.store import jobs as store
from web.deps import deps
from web.schemas import (
    JobListQuerySchema,
    JobListSchema,
    JobLogsQuerySchema,
    JobSchema,
    JobSubmitSchema,
    JobWaitQuerySchema,
)
from web.views import job_view

blp = Blueprint("jobs", __name__, url_prefix="/api/jobs", description="Jobs")
log = logging.getLogger(__name__)


# How often a waiting request re-reads its job without being woken (a guard against a
# lost NOTIFY: the end wakes it at once).
RECHECK_S = 5.0


def new_job_id() -> str:
    return f"job-{uuid.uuid4().hex[:12]}"


@blp.route("")
class Jobs(MethodView):
    @blp.arguments(JobListQuerySchema, location="query")
    @blp.response(200, JobListSchema)
    def get(self, query: dict[str, Any]) -> dict[str, Any]:
        """List jobs, newest first, optionally only those in one state."""
        state = JobState(query["state"]) if "state" in query else None
        with deps().transaction() as s:
            jobs, total = store.list_jobs(s, state=state, limit=query["limit"], offset=query["offset"])
        return {"jobs": [job_view(j) for j in jobs], "total": total,
                "limit": query["limit"], "offset": query["offset"]}

    @blp.arguments(JobSubmitSchema)
    @blp.response(201, JobSchema)
    @blp.alt_response(409, description="a job with this job_id exists")
    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """Submit a job: stored as QUEUED first, then the scheduler is woken."""
        spec = JobSpec(
            job_id=body.pop("job_id", None) or new_job_id(),
            cmd=tuple(body.pop("cmd")),
            **body,
        )
        svc = deps()
        with svc.transaction() as s:
            job = store.insert_job(s, spec, now=svc.clock())
        log.info("job %s submitted: %d GPU(s)", job.job_id, spec.gpus,
                 extra=job_fields(job.job_id, None, state=job.state.value, gpus_wanted=spec.gpus))
        svc.dispatcher.schedule()
        return job_view(job)


@blp.route("/<job_id>")
class JobById(MethodView):
    @blp.arguments(JobWaitQuerySchema, location="query")
    @blp.response(200, JobSchema)
    def get(self, query: dict[str, float], job_id: str) -> dict[str, Any]:
        """One job: state, timestamps, node, GPUs, exit code, reason, attempt, request.

        With ``?wait=S`` the answer is held until the job has ended or S seconds pass.
        """
        svc = deps()
        if not query.get("wait"):
            return job_view(read_job(job_id))
        deadline = time.monotonic() + query["wait"]
        with svc.waiter.watch(job_id) as ended:
            while True:
                job = read_job(job_id)
                left = deadline - time.monotonic()
                if job.state.terminal or left <= 0:
                    return job_view(job)
                # Woken when the job ends; the periodic re-read only guards against a lost NOTIFY.
                ended.wait(min(left, RECHECK_S))
                ended.clear()



def read_job(job_id: str) -> Job:
    with deps().transaction() as s:
        return store.read_job(s, job_id)


# A follower asking from an offset gets at most this much per request, and asks again.
MAX_LOG_CHUNK = 4 * 1024 * 1024


@blp.route("/<job_id>/logs")
class JobLogs(MethodView):
    @blp.arguments(JobLogsQuerySchema, location="query")
    @blp.response(200, description="the job's output as text/plain")
    @blp.doc(responses={"200": {"description": "the job's output as text/plain",
                                 "content": {"text/plain": {"schema": {"type": "string"}}}}})
    def get(self, query: dict[str, int], job_id: str) -> Response:
        """The job's combined stdout and stderr (with ``?offset=N``, the bytes from N on)."""
        svc = deps()
        with svc.transaction() as s:
            tail = store.log_tail(s, job_id)
        path = log_path(svc.settings.log_dir, job_id)
        if "offset" in query:
            return Response(read_from(path, tail, query["offset"]), mimetype="text/plain")
        text = path.read_text(errors="replace") if path.is_file() else tail
        return Response(text, mimetype="text/plain")


def read_from(path: Path, tail: str, offset: int) -> bytes:
    """Up to MAX_LOG_CHUNK bytes of the log from ``offset`` (of the stored tail if no file)."""
    if not path.is_file():
        return tail.encode()[offset:offset + MAX_LOG_CHUNK]
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(MAX_LOG_CHUNK)


@blp.route("/<job_id>/cancel")
class JobCancel(MethodView):
    @blp.response(200, JobSchema)
    @blp.alt_response(409, description="the job has already ended")
    def post(self, job_id: str) -> dict[str, Any]:
        """Cancel a job; a running one's process group is killed by its agent."""
        svc = deps()
        with svc.transaction() as s:
            job = store.cancel(s, job_id, now=svc.clock())
        if job.node is not None and job.attempt:
            svc.dispatcher.cancel(job.node, job_id, job.attempt)
        log.info("job %s cancelled by user", job_id,
                 extra=job_fields(job_id, job.node, state=job.state.value, attempt=job.attempt))
        return job_view(job)
