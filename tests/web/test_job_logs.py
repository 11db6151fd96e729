"""GET /api/jobs/<id>/logs streams the log file: byte ranges, no symlinks, and whether the
supervisor's LOG_MAX_BYTES cap cut it."""

from __future__ import annotations

from overlay.launch import log_path, log_truncated_marker
from web import jobs as job_views


def submit_with_log(client, settings, job_id: str, data: bytes):
    client.post("/api/jobs", json={"job_id": job_id, "cmd": ["true"]})
    path = log_path(settings.log_dir, job_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_offset_and_limit_select_a_byte_range(client, settings):
    submit_with_log(client, settings, "j", b"0123456789")
    assert client.get("/api/jobs/j/logs?offset=2&limit=3").data == b"234"
    assert client.get("/api/jobs/j/logs?limit=4").data == b"0123"
    assert client.get("/api/jobs/j/logs?offset=8&limit=100").data == b"89"


def test_a_large_log_is_sent_in_pieces_not_read_whole(client, settings, monkeypatch):
    # Given a log of 10 pieces' worth
    monkeypatch.setattr(job_views, "STREAM_CHUNK", 1000)
    submit_with_log(client, settings, "big", b"y" * 10_000)
    # When it is read whole
    answer = client.get("/api/jobs/big/logs", buffered=False)
    pieces = list(answer.response)
    # Then it came in pieces of at most STREAM_CHUNK bytes, all of it
    assert len(pieces) == 10 and all(len(p) == 1000 for p in pieces)
    assert answer.headers["Content-Length"] == "10000"


def test_a_log_file_that_is_a_symlink_is_refused(client, settings, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("not for you")
    path = submit_with_log(client, settings, "sneaky", b"")
    path.unlink()
    path.symlink_to(secret)
    answer = client.get("/api/jobs/sneaky/logs")
    assert answer.status_code == 403
    assert "symbolic link" in answer.json["message"]
    assert b"not for you" not in answer.data


def test_a_log_cut_at_log_max_bytes_says_so(client, settings):
    submit_with_log(client, settings, "cut", b"x" * 100 + log_truncated_marker(100).encode())
    assert client.get("/api/jobs/cut/logs").headers["X-Log-Truncated"] == "true"
    submit_with_log(client, settings, "whole", b"all of it\n")
    assert client.get("/api/jobs/whole/logs").headers["X-Log-Truncated"] == "false"
