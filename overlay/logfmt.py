"""How log lines look: text, or one JSON object per line, with ``extra=`` fields (job id, node) kept.

Pure: formatters and a ``logging.config.dictConfig`` dictionary. The processes'
entry points (gunicorn's config, the Celery workers' setup_logging hook) install them.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName",
}
SCALARS = (str, int, float, bool, type(None))


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a caller added with ``extra=``, in the order they were given."""
    return {k: v for k, v in vars(record).items() if k not in STANDARD_ATTRS and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, msg, pid, then every extra field."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": record.process,
        }
        for key, value in extra_fields(record).items():
            entry.setdefault(key, value)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # default=str: an odd extra (a datetime, a tuple of GPUs) must not lose the line.
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The usual one-line format, with simple extra fields appended as ``[key=value ...]``."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        # Structured blobs (Celery attaches its whole task context as `data`) stay out of text.
        fields = {k: v for k, v in extra_fields(record).items() if _simple(v)}
        if not fields:
            return line
        head, newline, rest = line.partition("\n")  # a traceback stays below the fields
        pairs = " ".join(f"{k}={_text(v)}" for k, v in fields.items())
        return f"{head} [{pairs}]{newline}{rest}"


def _simple(value: Any) -> bool:
    if isinstance(value, list | tuple):
        return all(isinstance(v, SCALARS) for v in value)
    return isinstance(value, SCALARS)


def _text(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    return "-" if value is None else str(value)


FORMATTERS: dict[str, type[logging.Formatter]] = {"text": TextFormatter, "json": JsonFormatter}

# INFO lines that bury what a person watching the stack wants (job events, errors, start-up):
# Celery's "Task overlay.heartbeat[...] received" / "... succeeded" for every task (several a
# second: heartbeats, reconciles), beat's "Sending due task" and gunicorn's access log. They are
# DEBUG lines: shown at LOG_LEVEL=DEBUG only. Their warnings and errors are shown as always.
# Logger name -> the messages it demotes ("" = all its INFO lines).
DEBUG_ONLY: dict[str, str] = {
    "celery.worker.strategy": "",
    "celery.app.trace": "",
    "celery.beat": "Scheduler: Sending due task",
    "gunicorn.access": "",
}


class ToDebug(logging.Filter):
    """Relabels a logger's INFO records (those whose message starts with ``prefix``) as DEBUG,
    and drops them unless ``show``. Records above INFO pass untouched."""

    def __init__(self, prefix: str = "", show: bool = False) -> None:
        super().__init__()
        self.prefix, self.show = prefix, show

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO or not str(record.msg).startswith(self.prefix):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return self.show


def level_number(level: str | int) -> int:
    """``"debug"``/``"DEBUG"``/``10`` -> 10 (an unknown name counts as INFO)."""
    if isinstance(level, int):
        return level
    number = logging.getLevelName(level.upper())
    return number if isinstance(number, int) else logging.INFO


def dict_config(log_format: str, level: str | int) -> dict[str, Any]:
    """A dictConfig dictionary: the root logger at ``level`` writing ``log_format`` lines to stderr,
    the DEBUG_ONLY lines shown only when ``level`` is DEBUG.

    Raises KeyError for a format that is not ``text`` or ``json`` (Settings refuses those first).
    """
    formatter = FORMATTERS[log_format]
    show = level_number(level) <= logging.DEBUG
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"overlay": {"()": f"{formatter.__module__}.{formatter.__qualname__}"}},
        "filters": {
            f"debug-only:{name}": {"()": f"{ToDebug.__module__}.{ToDebug.__qualname__}",
                                   "prefix": prefix, "show": show}
            for name, prefix in DEBUG_ONLY.items()
        },
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": "overlay",
                        "stream": "ext://sys.stderr"},
        },
        # A logger demoted whole is also set above INFO (unless DEBUG), so that its INFO
        # records are not even made: Celery asks once per task.
        "loggers": {
            name: {"filters": [f"debug-only:{name}"],
                   **({} if prefix else {"level": "DEBUG" if show else "WARNING"})}
            for name, prefix in DEBUG_ONLY.items()
        },
        "root": {"level": level.upper() if isinstance(level, str) else level, "handlers": ["console"]},
    }


def job_fields(job_id: str, node: str | None, **more: Any) -> dict[str, Any]:
    """The ``extra=`` of a log line about a job: its id and node always (node None before placement)."""
    return {"job_id": job_id, "node": node, **more}
