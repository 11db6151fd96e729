"""Placement policies: plain functions that pick one node among the candidates the fleet offers.

A policy gets ``Candidates`` (nodes bucketed by free fitting GPUs, names sorted in each
bucket) and returns a node name, or None to place nothing. Every bucket it sees fits the
job, so a policy only chooses; a benchmark compares policies by passing another function.
"""

from __future__ import annotations

from collections.abc import Callable

from overlay.errors import UnknownPolicy
from overlay.fleet import Candidates

Policy = Callable[[Candidates], str | None]


def first_fit(candidates: Candidates) -> str | None:
    """The first node by name that fits."""
    return min((names[0] for _, names in candidates.buckets), default=None)


def best_fit(candidates: Candidates) -> str | None:
    """The node with the fewest free fitting GPUs that still fits, keeping whole nodes free for big jobs."""
    return candidates.buckets[0][1][0] if candidates.buckets else None


def spread(candidates: Candidates) -> str | None:
    """The least-loaded node: the one with the most free fitting GPUs."""
    return candidates.buckets[-1][1][0] if candidates.buckets else None


POLICIES: dict[str, Policy] = {"first-fit": first_fit, "best-fit": best_fit, "spread": spread}
SUPPORTED: list[str] = list(POLICIES)
# The first docstring line of each policy; /api/policies shows them. Ties go to the first name.
DESCRIPTIONS: dict[str, str] = {
    name: (policy.__doc__ or "").splitlines()[0] + " Ties go to the first name."
    for name, policy in POLICIES.items()
}


def get_policy(name: str) -> Policy:
    """The policy called ``name``. Raises UnknownPolicy naming the supported ones."""
    try:
        return POLICIES[name]
    except KeyError:
        raise UnknownPolicy(name, SUPPORTED) from None
