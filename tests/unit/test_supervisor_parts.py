"""The job supervisor's parts that need no job: the log cap, the lease, the GPU device rules."""

from __future__ import annotations

import errno
import os

import pytest

from overlay.launch import LOG_TRUNCATED, log_truncated_marker
from workers.cgroups import NVIDIA_MAJOR, Limits, denied_devices
from workers.supervisor import Lease, LogWriter, write_atomically


def test_the_log_stops_at_the_cap_with_one_marker_and_drops_the_rest(tmp_path):
    path = tmp_path / "j.log"
    log = LogWriter(str(path), max_bytes=10, marker=log_truncated_marker(10))
    log.write(b"12345")
    log.write(b"6789abcdef")
    log.write(b"more and more")
    log.close()
    data = path.read_bytes()
    assert data.startswith(b"123456789a") and data.count(LOG_TRUNCATED.encode()) == 1
    assert b"more" not in data and log.truncated


def test_the_cap_counts_what_earlier_attempts_wrote(tmp_path):
    path = tmp_path / "j.log"
    path.write_bytes(b"x" * 8)
    log = LogWriter(str(path), max_bytes=10, marker="|cut|")
    log.write(b"abcdef")
    log.close()
    assert path.read_bytes() == b"x" * 8 + b"ab|cut|"


def test_no_cap_writes_everything(tmp_path):
    log = LogWriter(str(tmp_path / "j.log"), max_bytes=0, marker="|cut|")
    log.write(b"y" * 100_000)
    log.close()
    assert (tmp_path / "j.log").stat().st_size == 100_000 and not log.truncated


def test_a_log_path_that_is_a_symlink_is_not_followed(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("keep me")
    (tmp_path / "j.log").symlink_to(target)
    with pytest.raises(OSError) as raised:
        LogWriter(str(tmp_path / "j.log"), max_bytes=0, marker="")
    assert raised.value.errno == errno.ELOOP
    assert target.read_text() == "keep me"


def test_a_lease_lapses_only_after_fence_s_without_a_change_to_its_file(tmp_path):
    now = [100.0]
    lease_file = tmp_path / "lease"
    lease_file.touch()
    lease = Lease(lease_file, fence_s=10, clock=lambda: now[0])
    now[0] = 109.0
    assert not lease.lapsed()
    # Renewed (the file's mtime changes): the fence counts from the moment the change is seen
    os.utime(lease_file, ns=(1, 1))
    now[0] = 112.0
    assert not lease.lapsed()
    now[0] = 121.0
    assert not lease.lapsed()
    now[0] = 122.5
    assert lease.lapsed()


def test_a_missing_lease_file_is_never_a_renewal(tmp_path):
    now = [0.0]
    lease = Lease(tmp_path / "absent", fence_s=1, clock=lambda: now[0])
    now[0] = 2.0
    assert lease.lapsed()


def test_gpu_rules_deny_every_nvidia_gpu_minor_but_the_jobs_own(tmp_path):
    rules = denied_devices(Limits(gpus=(1, 3), device_dir=str(tmp_path)))
    assert f"c {NVIDIA_MAJOR}:0 rwm" in rules and f"c {NVIDIA_MAJOR}:2 rwm" in rules
    assert f"c {NVIDIA_MAJOR}:1 rwm" not in rules and f"c {NVIDIA_MAJOR}:3 rwm" not in rules
    # nvidiactl (255) and nvidia-modeset (254) stay open to every job
    assert f"c {NVIDIA_MAJOR}:254 rwm" not in rules and f"c {NVIDIA_MAJOR}:255 rwm" not in rules
    # a job without GPUs gets none; no GPU rules at all when asked for none
    assert f"c {NVIDIA_MAJOR}:0 rwm" in denied_devices(Limits(gpus=(), device_dir=str(tmp_path)))
    assert denied_devices(Limits(gpus=None)) == []


def test_the_outcome_is_written_whole_or_not_at_all(tmp_path):
    write_atomically(tmp_path / "outcome.json", b'{"exit_code": 0}')
    assert (tmp_path / "outcome.json").read_bytes() == b'{"exit_code": 0}'
    assert [p.name for p in tmp_path.iterdir()] == ["outcome.json"]
