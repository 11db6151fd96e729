"""What Linux's /proc says about a process: alive or not, its group, session, start time, environment."""

from __future__ import annotations

from pathlib import Path

PROC = Path("/proc")


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat from field 3 (state) on; the command name may hold spaces."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2:].split()


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (a zombie holds no memory and no GPU)."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def group_of(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[2]) if fields else None


def session_of(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[3]) if fields else None


def start_time(pid: int) -> int | None:
    """When the process started, in clock ticks since boot (field 22 of stat)."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def environ_items(pid: int) -> set[bytes]:
    """The ``NAME=value`` items the process was started with (empty if unreadable)."""
    try:
        return set((PROC / str(pid) / "environ").read_bytes().split(b"\0"))
    except OSError:
        return set()


def pids() -> list[int]:
    return [int(e.name) for e in PROC.iterdir() if e.name.isdigit()]


def live_group_members(pgid: int) -> list[int]:
    """The processes of group ``pgid`` that are not zombies."""
    return [p for p in pids() if group_of(p) == pgid and alive(p)]
