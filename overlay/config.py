"""Settings: every knob overlay has, parsed once from an environment mapping.

Pure: ``Settings.from_env(os.environ)`` is called by the processes' entry points,
which pass the result down.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from overlay.errors import ConfigError
from overlay.fairshare import Weights

GPU_METRICS_MODES = ("auto", "real", "fake")
EXECUTORS = ("subprocess", "fake")
SUPERVISOR_LAUNCHERS = ("fork", "exec")
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
GPU_ISOLATIONS = ("auto", "devices", "namespace", "none")


def parse_labels(text: str, *, setting: str = "NODE_LABELS") -> dict[str, str]:
    """``"zone=a,tier=prod"`` -> ``{"zone": "a", "tier": "prod"}``; raise ConfigError if malformed."""
    labels: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{setting}: {item!r} is not key=value", setting=setting)
        labels[key.strip()] = value.strip()
    return labels


@dataclass(frozen=True, kw_only=True)
class Settings:
    """overlay's configuration. Field ``foo_bar`` is read from ``FOO_BAR``."""

    database_url: str = "postgresql+psycopg2://postgres@127.0.0.1:5432/overlay"
    redis_url: str = "redis://127.0.0.1:6379/0"
    scheduler_policy: str = "first-fit"
    heartbeat_interval_s: float = 5.0
    reconcile_interval_s: float = 3.0
    node_ttl_s: float = 15.0
    node_name: str = ""
    node_labels: dict[str, str] = field(default_factory=dict)
    agent_port: int = 8001
    gpu_metrics_mode: str = "auto"
    fake_gpus: str = ""
    log_dir: str = "var/logs"
    # The node's attempts (workers/attempts.py): what each supervisor runs, its lease, its outcome.
    state_dir: str = "var/state"
    # A supervisor kills its job when the agent has not renewed its lease for this long;
    # an agent refuses to start unless it is below NODE_TTL_S.
    fence_s: float = 10.0
    # How an agent starts an attempt's supervisor: "fork" from its warm launcher process
    # (workers/launcher.py), "exec" as a new interpreter (python -m workers.supervisor).
    supervisor_launcher: str = "fork"
    # A job's log stops growing here (one marker line says so); 0: no cap.
    log_max_bytes: int = 1024 * 1024 * 1024
    # Finished jobs (and their events and log files) older than this many days are deleted
    # by beat's housekeeping, RETENTION_BATCH jobs per tick; 0 keeps them for ever.
    retention_days: float = 0.0
    retention_batch: int = 1000
    # gunicorn threads per API worker; a long-poll (?wait=) holds one, so at most
    # API_THREADS - API_RESERVED_THREADS of them wait at once in a worker (more get 429).
    api_threads: int = 320
    api_reserved_threads: int = 16
    # Where the GPUs' device nodes (nvidia0, nvidia1, ...) are; a job may open only its own.
    device_dir: str = "/dev"
    # How: the cgroup v1 devices controller (devices), the other GPUs' nodes masked in the
    # job's own mount namespace (namespace), neither (none), or the first the host allows (auto).
    gpu_isolation: str = "auto"
    executor: str = "subprocess"
    job_user: str = ""
    overlay_api_token: str = ""
    overlay_admin_token: str = ""
    max_body_bytes: int = 1024 * 1024
    log_format: str = "text"
    # Empty: each process's own default (INFO; a Celery worker's --loglevel).
    log_level: str = ""
    # Fair share (overlay/fairshare.py): usage halves every FAIRSHARE_HALF_LIFE seconds; the
    # queue's multifactor priority weighs the job's own priority, its age (full at
    # PRIORITY_MAX_AGE_S), its account's fair-share factor and its user's within the account.
    fairshare_half_life: float = 7 * 86400.0
    priority_weight_priority: float = 100.0
    priority_weight_age: float = 1000.0
    priority_weight_fairshare: float = 10000.0
    priority_weight_user: float = 100.0
    priority_max_age_s: float = 7 * 86400.0
    # Preemption (overlay/preemption.py), off by default as in Slurm and Kueue: with
    # PREEMPTION=on a waiting job may stop running jobs that are borrowed or at least
    # PREEMPT_PRIORITY_GAP lower in priority; they get SIGTERM and PREEMPT_GRACE_S seconds
    # to checkpoint, then the kill, and go back to the queue.
    preemption: str = "off"
    preempt_priority_gap: int = 10
    preempt_grace_s: float = 30.0
    # GPU efficiency (overlay/efficiency.py): each agent samples its GPUs every GPU_SAMPLE_S;
    # a running job whose GPUs all stay below IDLE_UTIL_PCT for IDLE_AFTER_S is idle, and
    # IDLE_POLICY (warn, or cancel after IDLE_CANCEL_AFTER_S) says what then happens;
    # IDLE_POLICY_ACCOUNTS ("acct=cancel,lab=warn") overrides it per account.
    gpu_sample_s: float = 5.0
    idle_util_pct: float = 5.0
    idle_after_s: float = 1800.0
    idle_policy: str = "warn"
    idle_cancel_after_s: float = 7200.0
    idle_policy_accounts: dict[str, str] = field(default_factory=dict)
    # Gang jobs (overlay/gang.py): the address this node's agent gives other nodes to reach
    # it (a gang's MASTER_ADDR when a rank 0 runs here; empty: the address this host reaches
    # the database from, else its hostname), and the ports a gang's MASTER_PORT is taken from.
    node_address: str = ""
    gang_port_min: int = 29500
    gang_port_max: int = 29999

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: Any) -> Settings:
        """Read every field from ``environ`` (unset keeps the default); raise ConfigError."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = environ.get(f.name.upper())
            if raw is None or raw == "":
                continue
            values[f.name] = _convert(f.name, f.type, raw)
        settings = cls(**values)
        settings = replace(settings, **overrides) if overrides else settings
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.retention_days < 0 or self.retention_batch < 1:
            raise ConfigError("RETENTION_DAYS must be >= 0 (0: keep for ever) and RETENTION_BATCH >= 1",
                              setting="RETENTION_DAYS")
        if not 0 < self.api_reserved_threads < self.api_threads:
            raise ConfigError("API_RESERVED_THREADS must be > 0 and below API_THREADS",
                              setting="API_RESERVED_THREADS")
        if not 0 < self.gang_port_min <= self.gang_port_max < 65536:
            raise ConfigError("GANG_PORT_MIN and GANG_PORT_MAX must be ports, the first not above the second",
                              setting="GANG_PORT_MIN")
        _one_of("GPU_METRICS_MODE", self.gpu_metrics_mode, GPU_METRICS_MODES)
        _one_of("EXECUTOR", self.executor, EXECUTORS)
        _one_of("SUPERVISOR_LAUNCHER", self.supervisor_launcher, SUPERVISOR_LAUNCHERS)
        _one_of("LOG_FORMAT", self.log_format, LOG_FORMATS)
        _one_of("GPU_ISOLATION", self.gpu_isolation, GPU_ISOLATIONS)
        _one_of("IDLE_POLICY", self.idle_policy, ("warn", "cancel"))
        _one_of("PREEMPTION", self.preemption, ("on", "off"))
        if self.preempt_priority_gap < 1 or self.preempt_grace_s < 0:
            raise ConfigError("PREEMPT_PRIORITY_GAP must be >= 1 and PREEMPT_GRACE_S >= 0",
                              setting="PREEMPT_PRIORITY_GAP")
        for action in self.idle_policy_accounts.values():
            _one_of("IDLE_POLICY_ACCOUNTS", action, ("warn", "cancel"))
        if self.log_level:
            _one_of("LOG_LEVEL", self.log_level.upper(), LOG_LEVELS)
        for name in ("heartbeat_interval_s", "reconcile_interval_s", "node_ttl_s", "fence_s",
                     "fairshare_half_life", "gpu_sample_s", "idle_after_s", "idle_cancel_after_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name.upper()} must be > 0", setting=name.upper())

    @property
    def broker_url(self) -> str:
        return self.redis_url

    @property
    def max_waiters(self) -> int:
        """Long-polls one API worker holds at once: the threads it does not keep for the rest."""
        return self.api_threads - self.api_reserved_threads

    @property
    def priority_weights(self) -> Weights:
        """The multifactor priority's weights, from the PRIORITY_* settings."""
        return Weights(priority=self.priority_weight_priority, age=self.priority_weight_age,
                       fairshare=self.priority_weight_fairshare, user=self.priority_weight_user,
                       max_age_s=self.priority_max_age_s)


def _one_of(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}={value!r}: expected one of {', '.join(allowed)}", setting=name)


def _convert(name: str, annotation: object, raw: str) -> Any:
    kind = str(annotation)
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError as e:
        raise ConfigError(f"{name.upper()}={raw!r} is not a number", setting=name.upper()) from e
    if kind.startswith("dict"):
        return parse_labels(raw, setting=name.upper())
    return raw
