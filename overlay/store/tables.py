"""SQLAlchemy table models: jobs, job events, nodes, GPUs, GPU allocations, cluster state,
accounts, users and their tokens, and GPU usage."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from overlay.states import JobState

# Stored as the state's name in a VARCHAR(16) (no Postgres enum type, no CHECK): reads
# give a JobState, and a write of anything else fails before it reaches the database.
JOB_STATE = Enum(JobState, native_enum=False, create_constraint=False, length=16,
                 values_callable=lambda states: [s.value for s in states], validate_strings=True)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSONB, list[Any]: JSONB}


class JobRow(Base):
    __tablename__ = "jobs"
    # A filtered page is a walk down (status, enqueued_at); an unfiltered one down enqueued_at;
    # retention finds old finished jobs by finished_at. None of them reads the whole table.
    __table_args__ = (
        Index("ix_jobs_status_enqueued_at", "status", "enqueued_at"),
        Index("ix_jobs_enqueued_at", "enqueued_at"),
        Index("ix_jobs_finished_at", "finished_at"),
        # An array's tasks in index order (its pages), and its tasks by state (its counts,
        # the %N limit a pass checks).
        Index("ix_jobs_array_id_array_index", "array_id", "array_index", unique=True),
        Index("ix_jobs_array_id_status", "array_id", "status"),
    )

    job_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    # The column is `status` so `select job_id,status from jobs` reads naturally;
    # the attribute and the API field are `state`.
    state: Mapped[JobState] = mapped_column("status", JOB_STATE)
    cmd: Mapped[list[Any]]
    image: Mapped[str] = mapped_column(Text, default="")
    env: Mapped[dict[str, Any]] = mapped_column(default=dict)
    gpus: Mapped[int] = mapped_column(Integer, default=0)
    gpu_memory_mb: Mapped[int] = mapped_column(Integer, default=0)
    gpu_model: Mapped[str] = mapped_column(String(128), default="")
    node_selector: Mapped[dict[str, Any]] = mapped_column(default=dict)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    timeout_s: Mapped[int | None] = mapped_column(Integer)
    max_retries: Mapped[int] = mapped_column(Integer, default=0)
    memory_mb: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Who runs it (the column is not `user`: a reserved word in Postgres). Quotas and fair
    # share count by account; `borrowed`: placed on idle GPUs beyond the account's quota.
    user_name: Mapped[str] = mapped_column(String(128), default="default", server_default="default",
                                           index=True)
    account: Mapped[str] = mapped_column(String(128), default="default", server_default="default",
                                         index=True)
    borrowed: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    # `preemptible: false`: never preempted (and never borrows); `preemptions`: attempts of
    # it that were preempted (they do not use up max_retries).
    preemptible: Mapped[bool] = mapped_column(Boolean, default=True, server_default="true")
    preemptions: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The job the current attempt was preempted for, and when (NULL once placed again).
    preempted_by: Mapped[str | None] = mapped_column(String(128))
    preempted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # A gang job (overlay/gang.py): its node count, and its current attempt's rendezvous
    # (rank 0's address and port); `node` and `gpu_indices` are rank 0's, job_parts has all.
    nodes: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    master_addr: Mapped[str | None] = mapped_column(String(255))
    master_port: Mapped[int | None] = mapped_column(Integer)
    # A task of a job array: its array (arrays.array_id) and index; NULL for other jobs.
    array_id: Mapped[str | None] = mapped_column(String(128))
    array_index: Mapped[int | None] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    node: Mapped[str | None] = mapped_column(String(128))
    gpu_indices: Mapped[list[Any]] = mapped_column(default=list)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str | None] = mapped_column(Text)
    log_tail: Mapped[str] = mapped_column(Text, default="")
    enqueued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    placed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class JobPartRow(Base):
    """One part (rank) of a gang job's current attempt: its node, GPUs and how it ended.
    Placing the job again replaces its rows."""

    __tablename__ = "job_parts"
    __table_args__ = (Index("ix_job_parts_node", "node"),)

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.job_id", ondelete="CASCADE"), primary_key=True)
    part: Mapped[int] = mapped_column(Integer, primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer)
    node: Mapped[str] = mapped_column(String(128))
    gpu_indices: Mapped[list[Any]] = mapped_column(default=list)
    # PLACED, RUNNING, then how it ended (DONE, FAILED or CANCELLED).
    state: Mapped[str] = mapped_column(String(16))
    exit_code: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str | None] = mapped_column(Text)
    log_tail: Mapped[str] = mapped_column(Text, default="")
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class JobEventRow(Base):
    """Append-only: one row per state transition, with when and why."""

    __tablename__ = "job_events"
    __table_args__ = (Index("ix_job_events_job_id_id", "job_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.job_id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    node: Mapped[str | None] = mapped_column(String(128))
    gpu_indices: Mapped[list[Any]] = mapped_column(default=list)
    reason: Mapped[str | None] = mapped_column(Text)


class ArrayRow(Base):
    """A job array: its tasks are jobs ``<array_id>_<index>`` (jobs.array_id, array_index);
    ``max_running`` is the ``%N`` limit (NULL: none)."""

    __tablename__ = "arrays"

    array_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    expression: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(Integer)
    max_running: Mapped[int | None] = mapped_column(Integer)
    user_name: Mapped[str] = mapped_column(String(128))
    account: Mapped[str] = mapped_column(String(128))
    submitted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DependencyRow(Base):
    """Job ``job_id`` waits on ``target`` (a job id, or an array id: all its tasks) in the
    way ``kind`` says (overlay.dependencies.Kind). No foreign key to the target: it may be
    an array, and retention may remove it first."""

    __tablename__ = "job_dependencies"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.job_id", ondelete="CASCADE"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    target: Mapped[str] = mapped_column(String(128), primary_key=True, index=True)


class NodeRow(Base):
    __tablename__ = "nodes"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255), default="")
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # "online" or "offline" as reconcile last judged it; draining is a separate flag
    # so undrain restores whatever liveness says.
    state: Mapped[str] = mapped_column(String(16), default="online")
    draining: Mapped[bool] = mapped_column(Boolean, default=False)
    agent_health: Mapped[dict[str, Any]] = mapped_column(default=dict)
    registered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class GpuRow(Base):
    __tablename__ = "gpus"

    node: Mapped[str] = mapped_column(
        ForeignKey("nodes.name", ondelete="CASCADE"), primary_key=True
    )
    index: Mapped[int] = mapped_column(Integer, primary_key=True)
    uuid: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(255))
    memory_total_mb: Mapped[int] = mapped_column(Integer)
    memory_used_mb: Mapped[int] = mapped_column(Integer, default=0)
    memory_free_mb: Mapped[int] = mapped_column(Integer, default=0)
    utilization_gpu_pct: Mapped[int] = mapped_column(Integer, default=0)
    utilization_memory_pct: Mapped[int] = mapped_column(Integer, default=0)
    temperature_c: Mapped[int | None] = mapped_column(Integer)
    power_draw_w: Mapped[float | None] = mapped_column(Float)
    power_limit_w: Mapped[float | None] = mapped_column(Float)
    compute_capability: Mapped[str | None] = mapped_column(String(16))
    mig_mode: Mapped[str | None] = mapped_column(String(16))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class GpuAllocationRow(Base):
    """A GPU held by a job. The primary key makes double-booking a GPU impossible."""

    __tablename__ = "gpu_allocations"
    # No foreign key to gpus: a GPU that drops out of the heartbeat keeps its holder
    # recorded until the job ends.
    node: Mapped[str] = mapped_column(String(128), primary_key=True)
    gpu_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(
        ForeignKey("jobs.job_id", ondelete="CASCADE"), index=True
    )
    attempt: Mapped[int] = mapped_column(Integer)
    allocated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ClusterStateRow(Base):
    """Cluster-wide state changed at run time: the active policy, reconcile's last tick."""

    __tablename__ = "cluster_state"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[Any] = mapped_column(JSONB)


class JobCounterRow(Base):
    """Monitoring counters and gauges by name ("jobs:QUEUED", "entered:PLACED", "submitted",
    "placement_latency:0.5"), folded in from job_counter_deltas (overlay/store/counters.py)."""

    __tablename__ = "job_counters"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger, default=0)
    total: Mapped[float] = mapped_column(Float, default=0.0)


class JobCounterDeltaRow(Base):
    """Append-only changes to job_counters, written by triggers on jobs and job_events in the
    transaction that makes the change: inserts take no lock another writer waits on."""

    __tablename__ = "job_counter_deltas"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64))
    n: Mapped[int] = mapped_column(BigInteger)
    total: Mapped[float] = mapped_column(Float, default=0.0)


class AccountRow(Base):
    """A team: its fair-share ``share`` and its GPU quota (concurrent GPUs in all, and per GPU
    model keyed by a case-insensitive part of the GPU name); no quota: no limit."""

    __tablename__ = "accounts"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    share: Mapped[float] = mapped_column(Float, default=1.0)
    quota_gpus: Mapped[int | None] = mapped_column(Integer)
    quota_models: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class UserRow(Base):
    __tablename__ = "users"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    default_account: Mapped[str] = mapped_column(ForeignKey("accounts.name"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class MembershipRow(Base):
    """A user in an account; a coordinator sees the account's jobs."""

    __tablename__ = "account_members"

    user_name: Mapped[str] = mapped_column(ForeignKey("users.name", ondelete="CASCADE"), primary_key=True)
    account: Mapped[str] = mapped_column(ForeignKey("accounts.name", ondelete="CASCADE"), primary_key=True,
                                         index=True)
    coordinator: Mapped[bool] = mapped_column(Boolean, default=False)


class ApiTokenRow(Base):
    """A user's API token, stored only as the SHA-256 of the whole token; ``key`` is the
    token's public part, by which a request's token is found before its hash is compared."""

    __tablename__ = "api_tokens"

    key: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_name: Mapped[str] = mapped_column(ForeignKey("users.name", ondelete="CASCADE"), index=True)
    token_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AttemptUsageRow(Base):
    """Accounting: the GPU-seconds one attempt held on one node (GPUs × placement to
    release), written in the transaction that released its GPUs. No foreign key: usage outlives the job."""

    __tablename__ = "attempt_usage"
    __table_args__ = (Index("ix_attempt_usage_ended_at", "ended_at"),)

    job_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_name: Mapped[str] = mapped_column(String(128))
    account: Mapped[str] = mapped_column(String(128))
    # A gang job's attempt has a row per node (each part's GPUs are released on its own).
    node: Mapped[str] = mapped_column(String(128), primary_key=True)
    gpu_model: Mapped[str] = mapped_column(String(255))
    gpus: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    gpu_seconds: Mapped[float] = mapped_column(Float)


class UsageTotalRow(Base):
    """GPU-seconds of every ended attempt per account and user, kept with attempt_usage
    (the Prometheus counter reads this, not the attempts)."""

    __tablename__ = "usage_totals"

    account: Mapped[str] = mapped_column(String(128), primary_key=True)
    user_name: Mapped[str] = mapped_column(String(128), primary_key=True)
    gpu_seconds: Mapped[float] = mapped_column(Float, default=0.0)


class JobGpuUsageRow(Base):
    """GPU efficiency (overlay/efficiency.py): what the agent sampled of one GPU while the
    job held it, folded (sums, maxima, when it went below the idle threshold)."""

    __tablename__ = "job_gpu_usage"

    job_id: Mapped[str] = mapped_column(String(128), ForeignKey("jobs.job_id", ondelete="CASCADE"),
                                        primary_key=True)
    gpu_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    samples: Mapped[int] = mapped_column(Integer, default=0)
    util_sum: Mapped[float] = mapped_column(Float, default=0.0)
    util_max: Mapped[int] = mapped_column(Integer, default=0)
    memory_peak_mb: Mapped[int] = mapped_column(Integer, default=0)
    memory_total_mb: Mapped[int] = mapped_column(Integer, default=0)
    energy_j: Mapped[float] = mapped_column(Float, default=0.0)
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    idle_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    below_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class JobIdleRow(Base):
    """A job's idleness: since when all its GPUs have been idle (None: not idle now), and
    whether it was submitted idle_ok (exempt from the cancel policy)."""

    __tablename__ = "job_idle"

    job_id: Mapped[str] = mapped_column(String(128), ForeignKey("jobs.job_id", ondelete="CASCADE"),
                                        primary_key=True)
    idle_ok: Mapped[bool] = mapped_column(Boolean, default=False)
    idle_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
