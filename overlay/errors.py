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


class TooManyWaiters(OverlayError):
    """Every long-poll slot of this API process is taken (API_THREADS - API_RESERVED_THREADS):
    ask again after ``retry_after_s`` seconds, or without ``?wait=``."""

    def __init__(self, *, limit: int, retry_after_s: int) -> None:
        super().__init__(f"{limit} requests already wait on jobs in this API process; "
                         f"ask again in {retry_after_s} s", limit=limit, retry_after_s=retry_after_s)


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


class AccountNotFound(OverlayError):
    def __init__(self, name: str) -> None:
        super().__init__(f"account {name!r} does not exist", account=name)


class UserNotFound(OverlayError):
    def __init__(self, name: str) -> None:
        super().__init__(f"user {name!r} does not exist", user=name)


class TokenNotFound(OverlayError):
    def __init__(self, key: str) -> None:
        super().__init__(f"token {key!r} does not exist", token=key)


class AlreadyExists(OverlayError):
    """An account or user of this name exists already."""

    def __init__(self, kind: str, name: str) -> None:
        super().__init__(f"{kind} {name!r} already exists", **{kind: name})


class NotAllowed(OverlayError):
    """The caller may not do this to this job or account (not theirs)."""


class NotAMember(OverlayError):
    """A job submitted to an account its user does not belong to."""

    def __init__(self, *, user: str, account: str, accounts: Sequence[str]) -> None:
        super().__init__(f"user {user!r} is not in account {account!r} (theirs: {', '.join(accounts)})",
                         user=user, account=account, accounts=list(accounts))


class InvalidField(OverlayError):
    """A request field the server refuses for what it names, not its shape (an unknown or
    cyclic dependency, an array range that ends before it starts); ``errors`` names it."""

    def __init__(self, field: str, problem: str, **more: object) -> None:
        super().__init__(f"{field}: {problem}", **{field: [problem]}, **more)
