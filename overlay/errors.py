"""The one error tree: every error overlay raises on purpose is an OverlayError."""

from __future__ import annotations

from collections.abc import Sequence


class OverlayError(Exception):
    """Root of overlay's errors; ``message`` is for a person, ``fields`` for a machine."""

    def __init__(self, message: str, **fields: object) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields


class ConfigError(OverlayError):
    """A setting from the environment is missing or malformed."""


class JobNotFound(OverlayError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id!r} does not exist", job_id=job_id)
        self.job_id = job_id


class NodeNotFound(OverlayError):
    def __init__(self, name: str) -> None:
        super().__init__(f"node {name!r} does not exist", node=name)
        self.name = name


class DuplicateJob(OverlayError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id!r} already exists", job_id=job_id)
        self.job_id = job_id


class InvalidTransition(OverlayError):
    def __init__(self, *, job_id: str, current: str, target: str) -> None:
        super().__init__(
            f"job {job_id!r} cannot go from {current} to {target}",
            job_id=job_id,
            current=current,
            target=target,
        )
        self.job_id, self.current, self.target = job_id, current, target


class UnknownPolicy(OverlayError):
    def __init__(self, name: str, supported: list[str]) -> None:
        super().__init__(
            f"unknown policy {name!r}; supported: {', '.join(supported)}",
            policy=name,
            supported=supported,
        )


class StorageUnavailable(OverlayError):
    """Postgres did not answer or refused the work."""


class GpuProbeError(OverlayError):
    """The GPU probe could not start (NVML missing in real mode) or failed to read."""


class StaleAttempt(OverlayError):
    """This attempt is no longer yours: a message or a late report speaks for an attempt
    the job has moved on from (retried, re-placed, started already, ended).

    The one convention for it: store functions raise this, callers catch it and do nothing.
    """

    def __init__(self, *, job_id: str, attempt: int, current: int, now: str = "") -> None:
        super().__init__(
            f"job {job_id!r} attempt {attempt} is stale ({now or f'current attempt {current}'})",
            job_id=job_id,
            attempt=attempt,
            current=current,
        )
        self.job_id, self.attempt, self.current = job_id, attempt, current


class GpuTaken(OverlayError):
    """Another job already holds one of the GPUs an allocation asked for."""

    def __init__(self, *, node: str, gpus: tuple[int, ...]) -> None:
        super().__init__(f"a GPU of {gpus} on {node} is already held", node=node, gpus=gpus)


class WorkloadError(OverlayError):
    """A workload file the simulator cannot replay; ``errors`` names each bad line (the first 20)."""

    MAX_SHOWN = 20

    def __init__(self, path: object, errors: Sequence[str]) -> None:
        shown = list(errors[: self.MAX_SHOWN])
        more = len(errors) - len(shown)
        super().__init__(
            f"{path}: " + "\n  ".join(["bad workload:", *shown]) + (f"\n  … and {more} more" if more else ""),
            path=str(path),
            errors=shown,
        )
