"""Who is asking, and what they may do to a job: ownership decided on values, no I/O.

A ``Caller`` is what a request's token resolves to (web/auth.py): a user with their
accounts, the accounts they coordinate, or an admin. With no users configured every
request is the implicit user ``default`` of account ``default`` (one person's cluster).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from overlay.errors import NotAllowed, NotAMember
from overlay.model import JobSpec

DEFAULT = "default"  # the implicit user and account


@dataclass(frozen=True, kw_only=True)
class Caller:
    """A request's identity. ``admin`` sees and does everything."""

    user: str = DEFAULT
    default_account: str = DEFAULT
    accounts: frozenset[str] = field(default_factory=lambda: frozenset({DEFAULT}))
    coordinates: frozenset[str] = frozenset()  # accounts whose jobs this user sees
    admin: bool = False


IMPLICIT = Caller()
ADMIN = Caller(admin=True)


def may_see(caller: Caller, spec: JobSpec) -> bool:
    """Whether ``caller`` may read, follow and cancel the job ``spec`` describes: their own,
    their coordinated accounts', or any for an admin."""
    return caller.admin or spec.user == caller.user or spec.account in caller.coordinates


def check_may_see(caller: Caller, spec: JobSpec) -> None:
    """Raise NotAllowed unless ``may_see``."""
    if not may_see(caller, spec):
        raise NotAllowed(f"job {spec.job_id!r} belongs to user {spec.user!r}, not to {caller.user!r}",
                         job_id=spec.job_id)


def submit_account(caller: Caller, requested: str | None) -> str:
    """The account a job ``caller`` submits runs under: ``requested`` if given (one of the
    caller's, for anyone but an admin), else the caller's default. Raises NotAMember."""
    if not requested:
        return caller.default_account
    if caller.admin or requested in caller.accounts:
        return requested
    raise NotAMember(user=caller.user, account=requested, accounts=sorted(caller.accounts))
