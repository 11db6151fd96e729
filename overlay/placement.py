"""Placement: which node and which GPU indices a job gets, or why it fits nowhere now.

Pure: ``place`` reads the fleet and decides; the caller applies the decision
(``fleet.allocate``, then the store). See ``overlay/fleet.py`` for how constraints match.
"""

from __future__ import annotations

from overlay.fleet import Fleet
from overlay.model import JobSpec, NoFit, Placement
from overlay.policies import Policy


def place(job: JobSpec, fleet: Fleet, *, policy: Policy) -> Placement | NoFit:
    """Place ``job`` on the node ``policy`` picks, on its lowest free fitting GPU indices.

    Returns NoFit with an actionable reason when no online node can take the job now.
    Raises ValueError when the policy names a node that is not one of its candidates.
    """
    found = fleet.candidates(job)
    if isinstance(found, NoFit):
        return found
    node = policy(found)
    if node is None:
        return fleet.explain(job)
    if not fleet.can_take(node, job):
        raise ValueError(f"policy chose {node!r}, which cannot take job {job.job_id!r}")
    return Placement(node=node, gpus=fleet.fitting_gpus(node, job))
