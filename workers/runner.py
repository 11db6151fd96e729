"""How an attempt ended (``Outcome``), the fake executor, and a log's tail. The job's
process itself runs under its supervisor (workers/supervisor.py)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)
TAIL_BYTES = 4096


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """How a job's process ended. ``reason`` is None for a clean exit 0."""

    exit_code: int | None
    reason: str | None
    cancelled: bool = False
    preempted: bool = False  # stopped by a preemption (its job was requeued as it began)


def tail(path: Path, limit: int = TAIL_BYTES) -> str:
    """The last ``limit`` bytes of a log, decoded leniently; '' if there is no log."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - limit))
            return f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def fake_run(argv: Sequence[str], *, log_path: Path, should_stop: Callable[[], str | None]) -> Outcome:
    """EXECUTOR=fake: sleep for the duration the command declares (its last number), run nothing."""
    seconds = next((float(a) for a in reversed(argv) if _is_number(a)), 0.0)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as out:
        out.write(f"overlay fake executor: would run {list(argv)!r}; sleeping {seconds}s\n")
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        stop = should_stop()
        if stop is not None:
            return Outcome(exit_code=None, reason=stop, cancelled=True)
        time.sleep(min(0.25, max(0.0, end - time.monotonic())))
    return Outcome(exit_code=0, reason=None)


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False
