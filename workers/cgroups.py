"""Containment of one job attempt: a cgroup (v2, else v1) holding every process the job
starts, with its memory limit and GPU device rules; the process group where neither is
writable. Standard library only: the job supervisor imports it (workers/supervisor.py).

``detect()`` says which kind this host gives; ``open_group()`` makes one attempt's group.
A group is joined by the job's first process itself, before it execs (``join()``, called
in the child), so nothing the job starts is ever outside it.
"""

from __future__ import annotations

import os
import re
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
V1_CONTROLLERS = ("freezer", "pids", "memory", "devices")
NVIDIA_MAJOR = 195
# Minors 0..253 are GPUs; 254 is nvidia-modeset and 255 nvidiactl, shared by every job.
NVIDIA_GPU_MINORS = range(254)
_GPU_NODE = re.compile(r"^nvidia(\d+)$")
KILL_TIMEOUT_S = 10.0


class ContainmentError(OSError):
    """The attempt's group could not be made or configured."""


def _own_path(controller: str) -> str:
    """This process's cgroup path in the v1 hierarchy ``controller`` ('' for v2: '0::')."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, names, path = line.split(":", 2)
        if (controller == "" and names == "") or controller in names.split(","):
            return path.lstrip("/")
    return ""


def _writable_dir(path: Path) -> bool:
    return path.is_dir() and os.access(path, os.W_OK)


def v2_root() -> Path | None:
    """The cgroup2 directory attempts are made under, if this host has a writable
    cgroup2 with the memory and pids controllers for it; else None."""
    for mount in (CGROUP_ROOT, CGROUP_ROOT / "unified"):
        if not (mount / "cgroup.controllers").is_file():
            continue
        parent = mount / _own_path("")
        try:
            controllers = set((parent / "cgroup.controllers").read_text().split())
        except OSError:
            continue
        if {"memory", "pids"} <= controllers and _writable_dir(parent):
            return parent
    return None


def v1_roots() -> dict[str, Path]:
    """The v1 hierarchies (of V1_CONTROLLERS) mounted and writable here, each at this
    process's own place in it."""
    roots = {}
    for name in V1_CONTROLLERS:
        mount = CGROUP_ROOT / name
        if not (mount / "cgroup.procs").is_file():
            continue
        parent = mount / _own_path(name)
        if _writable_dir(parent):
            roots[name] = parent
    return roots


def detect() -> str:
    """``cgroup2``, ``cgroup1`` (freezer or pids writable) or ``none``: what a job gets here."""
    if v2_root() is not None:
        return "cgroup2"
    roots = v1_roots()
    if "freezer" in roots or "pids" in roots:
        return "cgroup1"
    return "none"


@dataclass(frozen=True, kw_only=True)
class Limits:
    """What the group enforces: memory (MiB, 0 = none) and which GPU device nodes open."""

    memory_mb: int = 0
    gpus: tuple[int, ...] | None = None  # None: no device rules
    device_dir: str = "/dev"


def gpu_nodes(device_dir: str) -> dict[int, tuple[int, int]]:
    """The ``nvidiaN`` device nodes under ``device_dir``: GPU index -> (major, minor)."""
    found = {}
    try:
        entries = list(os.scandir(device_dir))
    except OSError:
        return {}
    for entry in entries:
        match = _GPU_NODE.match(entry.name)
        if match:
            try:
                rdev = entry.stat(follow_symlinks=False).st_rdev
            except OSError:
                continue
            found[int(match.group(1))] = (os.major(rdev), os.minor(rdev))
    return found


def denied_devices(limits: Limits) -> list[str]:
    """Device rules (``c major:minor rwm``) that shut the job out of every GPU but its own:
    all NVIDIA GPU minors but its own, and every other ``nvidiaN`` node of the device folder."""
    if limits.gpus is None:
        return []
    own = set(limits.gpus)
    nodes = gpu_nodes(limits.device_dir)
    keep = {nodes[i] for i in own if i in nodes} | {(NVIDIA_MAJOR, i) for i in own}
    deny = [(NVIDIA_MAJOR, m) for m in NVIDIA_GPU_MINORS if m not in own]
    deny += [dev for i, dev in sorted(nodes.items()) if i not in own and dev not in deny]
    return [f"c {major}:{minor} rwm" for major, minor in deny if (major, minor) not in keep]


@dataclass
class Group:
    """One attempt's containment. ``kind`` is what /api/nodes reports as ``containment``."""

    kind: str
    dirs: list[Path] = field(default_factory=list)
    memory_mb: int = 0

    def join(self) -> None:
        """Move the calling process into the group (called in the job's child, pre-exec)."""
        pid = str(os.getpid()).encode()
        for d in self.dirs:
            fd = os.open(d / "cgroup.procs", os.O_WRONLY)
            try:
                os.write(fd, pid)
            finally:
                os.close(fd)

    def members(self, leader: int) -> list[int]:
        """Pids in the group (for ``none``: the leader's process group)."""
        if self.kind == "none":
            return _group_members(leader)
        found: set[int] = set()
        for d in self.dirs:
            try:
                found |= {int(p) for p in (d / "cgroup.procs").read_text().split()}
            except OSError:
                continue
        return sorted(found)

    def signal_all(self, leader: int, sig: int) -> None:
        if self.kind == "none":
            try:
                os.killpg(leader, sig)
            except (ProcessLookupError, PermissionError):
                pass
            return
        for pid in self.members(leader):
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    def kill(self, leader: int, *, grace_s: float, reap: object = None) -> bool:
        """SIGTERM every member, SIGKILL what is left after ``grace_s``; True once no member
        is left. Frozen for the SIGKILL where a freezer exists, so no member forks away."""
        self.signal_all(leader, signal.SIGTERM)
        if self._empty_within(leader, grace_s, reap):
            return True
        deadline = time.monotonic() + KILL_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._kill_file():  # cgroup2 (Linux 5.14+): the kernel kills every member at once
                if self._empty_within(leader, 0.5, reap):
                    return True
                continue
            self._freeze(True)
            self.signal_all(leader, signal.SIGKILL)
            self._freeze(False)
            if self._empty_within(leader, 0.5, reap):
                return True
        return False

    def _empty_within(self, leader: int, seconds: float, reap: object) -> bool:
        deadline = time.monotonic() + seconds
        while True:
            if callable(reap):
                reap()  # a zombie leader is still a member until its parent reaps it
            if not [p for p in self.members(leader) if _alive(p)]:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)

    def _kill_file(self) -> bool:
        """SIGKILL every member through cgroup2's ``cgroup.kill``; whether the group has one."""
        done = False
        for d in self.dirs:
            if (d / "cgroup.kill").is_file():
                try:
                    _write(d / "cgroup.kill", "1")
                    done = True
                except OSError:
                    return False
        return done

    def _freeze(self, frozen: bool) -> None:
        for d in self.dirs:
            if (d / "freezer.state").is_file():
                _write(d / "freezer.state", "FROZEN" if frozen else "THAWED")
            elif (d / "cgroup.freeze").is_file():
                _write(d / "cgroup.freeze", "1" if frozen else "0")

    def oom_killed(self) -> bool:
        """Whether the kernel's OOM killer killed a member for the group's memory limit."""
        for d in self.dirs:
            for name, key in (("memory.oom_control", "oom_kill"), ("memory.events", "oom_kill")):
                path = d / name
                if path.is_file():
                    for line in path.read_text().splitlines():
                        k, _, v = line.partition(" ")
                        if k == key and int(v or 0) > 0:
                            return True
        return False

    def remove(self) -> None:
        for d in self.dirs:
            try:
                d.rmdir()
            except OSError:
                pass


def open_group(name: str, limits: Limits) -> Group:
    """Make the group ``name`` with ``limits`` (the kind ``detect()`` says); raise
    ContainmentError if a limit cannot be set."""
    root = v2_root()
    if root is not None:
        return _open_v2(root / "overlay" / name, limits)
    roots = v1_roots()
    if "freezer" in roots or "pids" in roots:
        return _open_v1(roots, name, limits)
    return Group(kind="none")


def _open_v2(path: Path, limits: Limits) -> Group:
    try:
        parent = path.parent
        parent.mkdir(exist_ok=True)
        # Controllers must be enabled in the parent's subtree_control for its children.
        _write(parent.parent / "cgroup.subtree_control", "+memory +pids", ignore=True)
        _write(parent / "cgroup.subtree_control", "+memory +pids", ignore=True)
        path.mkdir(exist_ok=True)
        if limits.memory_mb:
            _write(path / "memory.max", str(limits.memory_mb * 1024 * 1024))
            _write(path / "memory.swap.max", "0", ignore=True)
    except OSError as e:
        raise ContainmentError(f"cannot make cgroup {path}: {e}") from e
    return Group(kind="cgroup2", dirs=[path], memory_mb=limits.memory_mb)


def _open_v1(roots: dict[str, Path], name: str, limits: Limits) -> Group:
    dirs = []
    try:
        for controller, root in roots.items():
            if controller == "memory" and not limits.memory_mb:
                continue
            if controller == "devices" and limits.gpus is None:
                continue
            path = root / "overlay" / name
            path.mkdir(parents=True, exist_ok=True)
            dirs.append(path)
            if controller == "memory":
                limit = str(limits.memory_mb * 1024 * 1024)
                _write(path / "memory.limit_in_bytes", limit)
                _write(path / "memory.memsw.limit_in_bytes", limit, ignore=True)  # no swap either
            if controller == "devices":
                _write_each(path / "devices.deny", denied_devices(limits))
    except OSError as e:
        Group(kind="cgroup1", dirs=dirs).remove()
        raise ContainmentError(f"cannot set up cgroup {name}: {e}") from e
    if limits.memory_mb and "memory" not in roots:
        raise ContainmentError("memory_mb needs the memory cgroup controller, not writable here")
    return Group(kind="cgroup1", dirs=dirs, memory_mb=limits.memory_mb)


def _write(path: Path, value: str, *, ignore: bool = False) -> None:
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError:
        if not ignore:
            raise


def _write_each(path: Path, values: list[str]) -> None:
    """Write each value with a write() of its own on one open file: a cgroup v1 control
    file takes one rule per write, and ~250 device rules cost a third as much this way
    as opening the file for each."""
    if not values:
        return
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        for value in values:
            os.write(fd, value.encode())
    finally:
        os.close(fd)


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2:].split()


def _alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None and int(fields[2]) == pgid:
                members.append(int(entry.name))
    return members


def kill_leftover(name: str) -> None:
    """Kill every process left in group ``name`` (its supervisor died without ending it)."""
    root = v2_root()
    if root is not None:
        group = Group(kind="cgroup2", dirs=[root / "overlay" / name])
    else:
        group = Group(kind="cgroup1", dirs=[r / "overlay" / name for r in v1_roots().values()])
    group.dirs = [d for d in group.dirs if d.is_dir()]
    if group.dirs:
        group.kill(0, grace_s=1.0)
        group.remove()
