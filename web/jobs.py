"""/api/jobs: submit, list, show, logs and cancel jobs."""

from __future__ import annotations

import errno
import logging
import os
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any, BinaryIO

from flask import Response
from flask.views import MethodView
from flask_smorest import Blueprint
from werkzeug.exceptions import Forbidden

from overlay import dependencies as dependency_rules
from overlay.errors import InvalidField
from overlay.identity import check_may_see, submit_account
from overlay.launch import LOG_TRUNCATED, log_path
from overlay.logfmt import job_fields
from overlay.model import Job, JobSpec
from overlay.states import JobState
from overlay.store import dependencies, gangs, sharing
from overlay.store import jobs as store
from overlay.store.session import resolve_now
from web import arrays
from web.auth import current_caller
from web.deps import deps
from web.efficiency import allow_idle, with_efficiency
from web.schemas import (
    JobEventSchema,
    JobListQuerySchema,
    JobListSchema,
    JobLogsQuerySchema,
    JobSchema,
    JobSubmitSchema,
    JobWaitQuerySchema,
)
from web.views import job_view, part_view

blp = Blueprint("jobs", __name__, url_prefix="/api/jobs", description="Jobs")
log = logging.getLogger(__name__)


# How often a waiting request re-reads its job without being woken (a guard against a
# lost NOTIFY: the end wakes it at once, and a lost LISTEN connection wakes every waiter).
# Long and spread (a random 50-100% of it each time): hundreds of waiters that arrived
# together and re-read in step would take every thread and connection from the submits.
RECHECK_S = 60.0


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
            jobs, total = store.list_jobs(s, state=state, limit=query["limit"], offset=query["offset"],
                                          owner=current_caller())
        return {"jobs": [job_view(j) for j in jobs], "total": total,
                "limit": query["limit"], "offset": query["offset"]}

    @blp.arguments(JobSubmitSchema)
    @blp.response(201, JobSchema)
    @blp.doc(responses={"201": {"description": "the job; for an array, the array and its counts",
                                "content": {"application/json": {"schema": {"anyOf": [
                                    {"$ref": "#/components/schemas/Job"},
                                    {"$ref": "#/components/schemas/Array"}]}}}}})
    @blp.alt_response(409, description="a job with this job_id exists")
    @blp.alt_response(422, description="a bad field, an unknown or cyclic dependency")
    def post(self, body: dict[str, Any]) -> Any:
        """Submit a job: stored as QUEUED first, then the scheduler is woken.

        It runs as the caller, under ``account`` (one of theirs: 403 otherwise) or their default.
        """
        caller = current_caller()
        expression = body.pop("array", None)
        idle_ok = body.pop("idle_ok", False)
        needs = dependency_rules.parse(body.pop("depends_on", None) or {})
        spec = JobSpec(
            job_id=body.pop("job_id", None) or new_job_id(),
            cmd=tuple(body.pop("cmd")),
            user=caller.user,
            account=submit_account(caller, body.pop("account", None)),
            **body,
        )
        if expression is not None:
            return arrays.submit(spec, expression, needs)
        svc = deps()
        with svc.transaction() as s:
            if needs:
                dependencies.check(s, {spec.job_id}, needs)
            job = store.insert_job(s, spec, now=svc.clock())
            if idle_ok:
                allow_idle(s, spec.job_id)
            dependencies.add(s, spec.job_id, needs)
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
            return with_parts(with_efficiency(shown(read_job(job_id))))
        deadline = time.monotonic() + query["wait"]
        with svc.waiter.watch(job_id) as ended:
            while True:
                job = read_job(job_id)
                left = deadline - time.monotonic()
                if job.state.terminal or left <= 0:
                    return with_parts(with_efficiency(shown(job)))
                # Woken when the job ends; the periodic re-read only guards against a lost NOTIFY.
                ended.wait(min(left, RECHECK_S * random.uniform(0.5, 1.0)))
                ended.clear()



@blp.route("/<job_id>/events")
class JobEvents(MethodView):
    @blp.response(200, JobEventSchema(many=True))
    def get(self, job_id: str) -> list[dict[str, Any]]:
        """The job's history, oldest first: each transition (and notes such as the jobs
        preempted for it) with when, which attempt, where and why."""
        read_job(job_id)  # the caller's, or 403
        with deps().transaction() as s:
            return [asdict(e) | {"gpus": list(e.gpus)} for e in store.history(s, job_id)]


def with_parts(view: dict[str, Any]) -> dict[str, Any]:
    """A gang job's view with its parts (None for a one-node job)."""
    if view["nodes"] <= 1:
        return {**view, "parts": None}
    with deps().transaction() as s:
        return {**view, "parts": [part_view(p) for p in gangs.parts(s, view["job_id"])]}


def read_job(job_id: str) -> Job:
    """The job, if the caller may see it: raise JobNotFound, NotAllowed (403)."""
    with deps().transaction() as s:
        job = store.read_job(s, job_id)
    check_may_see(current_caller(), job.spec)
    return job


def shown(job: Job) -> dict[str, Any]:
    """The job's view, with its multifactor priority now while it waits."""
    if job.state is not JobState.QUEUED:
        return job_view(job)
    svc = deps()
    with svc.transaction() as s:
        now = resolve_now(s, svc.clock())
        priority = sharing.priority_of(s, job, now=now, half_life_s=svc.settings.fairshare_half_life,
                                       weights=svc.settings.priority_weights)
    return job_view(job, priority=priority)


# A follower asking from an offset gets at most this much per request, and asks again.
MAX_LOG_CHUNK = 4 * 1024 * 1024
# The file is sent in pieces of this size: a large log is never read whole into memory.
STREAM_CHUNK = 64 * 1024


@blp.route("/<job_id>/logs")
class JobLogs(MethodView):
    @blp.arguments(JobLogsQuerySchema, location="query")
    @blp.response(200, description="the job's output as text/plain")
    @blp.doc(responses={"200": {"description": "the job's output as text/plain; header X-Log-Truncated "
                                               "says whether LOG_MAX_BYTES cut it",
                                 "content": {"text/plain": {"schema": {"type": "string"}}}}})
    def get(self, query: dict[str, int], job_id: str) -> Response:
        """The job's combined stdout and stderr, streamed (``?offset=&limit=`` in bytes; a gang
        job's part with ``?part=``, rank 0's by default)."""
        svc = deps()
        job = read_job(job_id)  # the caller's, or 403
        part = query.get("part", 0)
        if part >= job.spec.nodes:
            raise InvalidField("part", f"job {job_id} has {job.spec.nodes} part"
                                       f"{'' if job.spec.nodes == 1 else 's'}: 0..{job.spec.nodes - 1}")
        with svc.transaction() as s:
            tail = gangs.part_log_tail(s, job_id, part) if job.spec.nodes > 1 else store.log_tail(s, job_id)
        offset = query.get("offset", 0)
        limit = query.get("limit", MAX_LOG_CHUNK if "offset" in query else None)
        path = log_path(svc.settings.log_dir, job_id, part)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:  # no file (another node's, or removed): the stored tail
            data = tail.encode()[offset:None if limit is None else offset + limit]
            return Response(data, mimetype="text/plain", headers={"X-Log-Truncated": "false"})
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise Forbidden(f"the log file of {job_id} is a symbolic link; it is not followed") from e
            raise
        log_file = os.fdopen(fd, "rb")
        size = os.fstat(fd).st_size
        end = size if limit is None else min(size, offset + limit)
        headers = {"X-Log-Truncated": "true" if truncated(log_file, size) else "false",
                   "Content-Length": str(max(0, end - offset))}
        return Response(stream(log_file, offset, end), mimetype="text/plain", headers=headers)


def truncated(log_file: BinaryIO, size: int) -> bool:
    """Whether the log ends with the marker its supervisor writes when LOG_MAX_BYTES was hit."""
    log_file.seek(max(0, size - 512))
    return LOG_TRUNCATED.encode() in log_file.read(512)


def stream(log_file: BinaryIO, start: int, end: int) -> Iterator[bytes]:
    """The bytes [start, end) of the file, a piece at a time; the file is closed at the end."""
    with log_file:
        log_file.seek(start)
        left = end - start
        while left > 0:
            data = log_file.read(min(STREAM_CHUNK, left))
            if not data:
                return
            left -= len(data)
            yield data


@blp.route("/<job_id>/cancel")
class JobCancel(MethodView):
    @blp.response(200, JobSchema)
    @blp.alt_response(409, description="the job has already ended")
    def post(self, job_id: str) -> dict[str, Any]:
        """Cancel a job; a running one's process group is killed by its agent."""
        svc = deps()
        read_job(job_id)  # the caller's, or 403
        with svc.transaction() as s:
            job = store.cancel(s, job_id, now=svc.clock())
            # A gang job's parts that run, each on its node (rank 0's is the job's node).
            nodes = gangs.to_stop(s, job_id, attempt=job.attempt) if job.spec.nodes > 1 else [job.node]
        for node in nodes if job.attempt else []:
            if node is not None:
                svc.dispatcher.cancel(node, job_id, job.attempt)
        log.info("job %s cancelled by user", job_id,
                 extra=job_fields(job_id, job.node, state=job.state.value, attempt=job.attempt))
        return job_view(job)
