"""Log lines: one JSON object per line when LOG_FORMAT=json, job id and node as fields."""

from __future__ import annotations

import io
import json
import logging
import logging.config
import sys

import pytest

from overlay.config import Settings
from overlay.errors import ConfigError
from overlay.logfmt import JsonFormatter, TextFormatter, dict_config


def record(msg: str = "job %s placed", *args: object, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("workers.scheduler", logging.INFO, __file__, 1, msg, args or ("j1",), None)
    rec.__dict__.update(extra)
    return rec


def test_json_line_carries_the_message_and_the_extra_fields():
    line = JsonFormatter().format(record(job_id="j1", node="node-a", gpus=(0, 1), attempt=1))
    entry = json.loads(line)
    assert "\n" not in line
    assert entry["msg"] == "job j1 placed"
    assert (entry["level"], entry["logger"]) == ("INFO", "workers.scheduler")
    assert (entry["job_id"], entry["node"], entry["gpus"], entry["attempt"]) == ("j1", "node-a", [0, 1], 1)
    assert entry["ts"].endswith("+00:00")


def test_json_keeps_a_traceback_inside_the_one_line():
    rec = record()
    try:
        raise ValueError("boom")
    except ValueError:
        rec.exc_info = sys.exc_info()
    line = JsonFormatter().format(rec)
    assert "\n" not in line
    assert "ValueError: boom" in json.loads(line)["exc"]


def test_json_survives_values_json_cannot_encode():
    entry = json.loads(JsonFormatter().format(record(data={"when": object()})))
    assert "object object" in entry["data"]["when"]


def test_text_appends_simple_fields_and_leaves_blobs_out():
    line = TextFormatter().format(record(job_id="j1", node=None, gpus=[2, 3], data={"args": [1]}))
    assert line.endswith("job j1 placed [job_id=j1 node=- gpus=2,3]")
    assert "INFO workers.scheduler" in line
    assert "data" not in line


def test_text_without_extras_is_the_usual_line():
    assert TextFormatter().format(record()).endswith("INFO workers.scheduler: job j1 placed")


def test_dict_config_installs_json_lines_on_the_root_logger(monkeypatch):
    # Given a root logger configured for JSON at WARNING, writing to a buffer
    buffer = io.StringIO()
    monkeypatch.setattr("sys.stderr", buffer)
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    try:
        logging.config.dictConfig(dict_config("json", "warning"))
        # When an info and a warning with a job id are logged
        logging.getLogger("overlay.test").info("hidden")
        logging.getLogger("overlay.test").warning("job lost", extra={"job_id": "j9", "node": "node-b"})
    finally:
        root.handlers[:] = saved[1]
        root.setLevel(saved[0])
    # Then only the warning is written, as one JSON object
    lines = buffer.getvalue().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["job_id"] == "j9"


@pytest.mark.parametrize("env", [{"LOG_FORMAT": "xml"}, {"LOG_LEVEL": "chatty"}])
def test_bad_log_settings_are_config_errors(env):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    assert next(iter(env)) in caught.value.message


def test_log_settings_default_to_text_and_the_process_default_level():
    s = Settings.from_env({"LOG_FORMAT": "json", "LOG_LEVEL": "debug"})
    assert (s.log_format, s.log_level) == ("json", "debug")
    assert (Settings.from_env({}).log_format, Settings.from_env({}).log_level) == ("text", "")
