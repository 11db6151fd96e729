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


def dict_config(log_format: str, level: str | int) -> dict[str, Any]:
    """A dictConfig dictionary: the root logger at ``level`` writing ``log_format`` lines to stderr.

    Raises KeyError for a format that is not ``text`` or ``json`` (Settings refuses those first).
    """
    formatter = FORMATTERS[log_format]
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"overlay": {"()": f"{formatter.__module__}.{formatter.__qualname__}"}},
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": "overlay",
                        "stream": "ext://sys.stderr"},
        },
        "root": {"level": level.upper() if isinstance(level, str) else level, "handlers": ["console"]},
    }


def job_fields(job_id: str, node: str | None, **more: Any) -> dict[str, Any]:
    """The ``extra=`` of a log line about a job: its id and node always (node None before placement)."""
    return {"job_id": job_id, "node": node, **more}
