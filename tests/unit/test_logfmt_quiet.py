"""A quiet stack: Celery's per-task lines, beat's sends and the access log show at DEBUG only."""

from __future__ import annotations

import io
import logging
import logging.config
from collections.abc import Iterator

import pytest

from overlay.logfmt import DEBUG_ONLY, dict_config

TASK_LINES = [
    ("celery.worker.strategy", "Task %(name)s[%(id)s] received"),
    ("celery.app.trace", "Task %(name)s[%(id)s] succeeded in %(runtime)ss: %(return_value)s"),
]
CONTEXT = {"name": "overlay.heartbeat", "id": "abc", "runtime": 0.01, "return_value": None}


@pytest.fixture
def configure(monkeypatch) -> Iterator:
    """``configure(level)`` installs dict_config("text", level) writing to a buffer it returns;
    the loggers it touches are put back afterwards."""
    names = ["", *DEBUG_ONLY, "workers.scheduler"]
    saved = {n: (logging.getLogger(n).level, list(logging.getLogger(n).handlers),
                 list(logging.getLogger(n).filters)) for n in names}

    def install(level: str | int) -> io.StringIO:
        buffer = io.StringIO()
        monkeypatch.setattr("sys.stderr", buffer)
        # dictConfig adds filters to a logger and never removes one: start from none, as a
        # fresh process does (another test's configuration may have left its own)
        for n in DEBUG_ONLY:
            logging.getLogger(n).filters[:] = []
        logging.config.dictConfig(dict_config("text", level))
        return buffer

    yield install
    for n, (level, handlers, filters) in saved.items():
        logger = logging.getLogger(n)
        logger.setLevel(level)
        logger.handlers[:] = handlers
        logger.filters[:] = filters


def log_a_beat_of_work() -> None:
    for name, fmt in TASK_LINES:
        logging.getLogger(name).info(fmt, CONTEXT, extra={"data": CONTEXT})
    logging.getLogger("celery.beat").info("Scheduler: Sending due task %s (%s)", "heartbeat",
                                          "overlay.heartbeat")
    logging.getLogger("gunicorn.access").info('127.0.0.1 - - "GET /health HTTP/1.1" 200 2')
    logging.getLogger("celery.beat").info("beat: Starting...")
    logging.getLogger("workers.scheduler").info("job j1 placed on node-a")
    logging.getLogger("celery.app.trace").error("Task overlay.run_job[x] raised unexpected: boom")


@pytest.mark.parametrize("level", ["INFO", "info", logging.INFO, "WARNING"])
def test_above_debug_the_per_task_lines_and_the_access_log_are_not_written(configure, level):
    # Given the stack's logging at INFO (or above)
    buffer = configure(level)
    # When a heartbeat's worth of Celery, beat and gunicorn lines, a job event and a task error are logged
    log_a_beat_of_work()
    out = buffer.getvalue()
    # Then neither the task lines, beat's sends nor the access log are written; the error always is
    assert "overlay.heartbeat[abc]" not in out
    assert "Sending due task" not in out
    assert "GET /health" not in out
    assert "raised unexpected: boom" in out
    # and start-up lines and job events are, unless the level hides INFO
    shown = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    assert ("beat: Starting..." in out) == (shown <= logging.INFO)
    assert ("job j1 placed" in out) == (shown <= logging.INFO)


@pytest.mark.parametrize("level", ["DEBUG", "debug", logging.DEBUG])
def test_at_debug_they_are_written_as_debug_lines(configure, level):
    buffer = configure(level)
    log_a_beat_of_work()
    lines = buffer.getvalue().splitlines()

    def line(text: str) -> str:
        return next(x for x in lines if text in x)

    assert " DEBUG celery.worker.strategy: Task overlay.heartbeat[abc] received" in line("received")
    assert " DEBUG celery.app.trace: Task overlay.heartbeat[abc] succeeded" in line("succeeded")
    assert " DEBUG celery.beat: Scheduler: Sending due task" in line("Sending due task")
    assert " DEBUG gunicorn.access:" in line("GET /health")
    assert " INFO celery.beat: beat: Starting..." in line("Starting")
    assert " ERROR celery.app.trace:" in line("boom")
