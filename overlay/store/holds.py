"""What keeps queued jobs out of a pass before placement: dependencies not yet met (and
never to be met: those jobs are cancelled) and arrays at their %N limit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session

from overlay.arrays import ArrayGate, ArrayLoad, hold_back
from overlay.model import Job
from overlay.quota import Admit
from overlay.store import arrays, dependencies


@dataclass(frozen=True, kw_only=True)
class Holds:
    """The jobs a pass may place (``ready``), why the others wait, and the arrays' loads,
    which the pass's admission check keeps counting (``gate``)."""

    ready: list[Job]
    waiting: dict[str, str] = field(default_factory=dict)
    loads: dict[str, ArrayLoad] = field(default_factory=dict)

    def gate(self, admit: Admit) -> Admit:
        return ArrayGate(admit, self.loads) if self.loads else admit


def hold(session: Session, queued: Sequence[Job], *, now: datetime) -> Holds:
    """Judge ``queued``'s dependencies (cancelling jobs whose can never be met) and arrays'
    limits; jobs neither holds are ``ready``."""
    judged = dependencies.settle(session, now=now)
    out = set(judged.cancelled) | judged.waiting.keys()
    rest = [j for j in queued if j.job_id not in out]
    loads = arrays.loads(session, (j.spec for j in rest))
    limited = hold_back((j.spec for j in rest), loads)
    waiting = judged.waiting | limited
    return Holds(ready=[j for j in rest if j.job_id not in limited], waiting=waiting, loads=loads)
