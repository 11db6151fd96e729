"""How a job is kept to its own GPUs' device nodes: the cgroup v1 devices controller where it
is writable, else the other GPUs' nodes masked in a mount namespace of the job's own, else
nothing. Standard library and workers.cgroups only: the job supervisor imports it.

Masking: in the job's first process, before it drops root and execs, ``mask()`` enters a
new mount namespace (``unshare(CLONE_NEWNS)``) whose mounts never reach the host's
(``--make-rslave /``: the host's shared mounts still reach it), and bind-mounts each other
``<DEVICE_DIR>/nvidiaN`` onto itself read-only and ``nodev``. The job still sees those
nodes (``ls``, ``stat``: same device numbers), but opening one fails with EACCES
(Permission denied), root or not: the kernel opens no device node reached through a
``nodev`` mount. The namespace and its mounts go away with the job's last process; the
host's mount table never shows them. A job running as root could unmount them again (as
it could ``mknod`` past a devices cgroup): set JOB_USER.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from collections.abc import Mapping

from workers import cgroups

SETTINGS = ("auto", "devices", "namespace", "none")

CLONE_NEWNS = 0x00020000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x1, 0x2, 0x4, 0x8
MS_REMOUNT, MS_BIND, MS_REC, MS_SLAVE = 0x20, 0x1000, 0x4000, 0x80000
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 0x400, 0x800, 0x200000
# A bind mount's remount must keep the flags it inherited (they are locked inside a user
# namespace, and EPERM would follow): statvfs's ST_* bit -> mount's MS_* bit.
_KEPT_FLAGS = {os.ST_NOSUID: MS_NOSUID, os.ST_NOEXEC: MS_NOEXEC, os.ST_NOATIME: MS_NOATIME,
               os.ST_NODIRATIME: MS_NODIRATIME, os.ST_RELATIME: MS_RELATIME}
# Loaded here, in the supervisor, so the job's child only calls it (no dlopen after fork).
_libc = ctypes.CDLL(None, use_errno=True)


def choose(setting: str, *, devices_cgroup: bool, namespace: bool) -> str | None:
    """The mechanism for ``setting`` (GPU_ISOLATION) given what this host can do:
    ``devices``, ``namespace`` or ``none``; None when the setting forces one the host lacks."""
    if setting == "auto":
        return "devices" if devices_cgroup else "namespace" if namespace else "none"
    if setting == "devices":
        return "devices" if devices_cgroup else None
    if setting == "namespace":
        return "namespace" if namespace else None
    return "none"


def devices_cgroup() -> bool:
    """Whether a job's group here is a v1 group with the devices controller writable (on a
    host with a writable cgroup2 the group is a v2 one, and v2 has no devices files)."""
    return cgroups.detect() == "cgroup1" and "devices" in cgroups.v1_roots()


def why_no_namespace(env: Mapping[str, str]) -> str | None:
    """Why a job here cannot get a mount namespace of its own (None: it can), found by
    trying it in a throwaway process (``python -m workers.gpu_isolation``, with ``env``)."""
    try:
        probe = subprocess.run([sys.executable, "-m", "workers.gpu_isolation"], env=dict(env),
                               cwd=os.getcwd(), stdin=subprocess.DEVNULL, capture_output=True,
                               text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        return f"cannot run the mount namespace probe: {e}"
    if probe.returncode == 0:
        return None
    said = probe.stderr.strip().splitlines()
    return said[-1] if said else f"the mount namespace probe exited {probe.returncode}"


def masked_nodes(device_dir: str, gpus: tuple[int, ...]) -> list[str]:
    """The ``nvidiaN`` nodes under ``device_dir`` of GPUs not in ``gpus``, to mask."""
    return [os.path.join(device_dir, f"nvidia{i}")
            for i in sorted(cgroups.gpu_nodes(device_dir)) if i not in gpus]


def private_mounts() -> None:
    """Put the calling process in a mount namespace of its own whose mounts never reach the
    host's (the host's shared mounts still reach it); raise OSError."""
    _call(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _call(_libc.mount(b"none", b"/", None, MS_REC | MS_SLAVE, None), "mount --make-rslave /")


def mask(paths: list[str]) -> None:
    """In a new mount namespace of the caller's, make each of ``paths`` impossible to open
    (bind-mounted onto itself read-only and ``nodev``); raise OSError naming the step."""
    private_mounts()
    for path in paths:
        target = os.fsencode(path)
        _call(_libc.mount(target, target, None, MS_BIND, None), f"bind-mount {path}")
        kept = os.statvfs(path).f_flag
        flags = MS_REMOUNT | MS_BIND | MS_NODEV | MS_RDONLY
        flags |= sum(ms for st, ms in _KEPT_FLAGS.items() if kept & st)
        _call(_libc.mount(None, target, None, flags, None), f"remount {path} nodev")


def _call(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


if __name__ == "__main__":  # the probe: can a process here get a mount namespace of its own?
    try:
        private_mounts()
    except OSError as e:
        sys.exit(f"{e.strerror} (mount namespaces need root or CAP_SYS_ADMIN)")
