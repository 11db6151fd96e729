"""The one place errors become HTTP: a table from error to status, one JSON shape."""

from __future__ import annotations

from typing import Any

from flask import Flask, jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.http import HTTP_STATUS_CODES

from overlay import errors

STATUS_FOR: dict[type[errors.OverlayError], int] = {
    errors.JobNotFound: 404,
    errors.TooManyWaiters: 429,
    errors.NodeNotFound: 404,
    errors.DuplicateJob: 409,
    errors.InvalidTransition: 409,
    errors.StaleAttempt: 409,
    errors.UnknownPolicy: 422,
    errors.InvalidField: 422,
    errors.AccountNotFound: 404,
    errors.UserNotFound: 404,
    errors.TokenNotFound: 404,
    errors.AlreadyExists: 409,
    errors.NotAllowed: 403,
    errors.NotAMember: 403,
    errors.ConfigError: 500,
    errors.StorageUnavailable: 503,
}


def body(status: int, message: str, errs: Any = None) -> dict[str, Any]:
    """Every error response: ``{"code", "status", "message", "errors"}``."""
    return {
        "code": status,
        "status": HTTP_STATUS_CODES.get(status, "Error"),
        "message": message,
        "errors": errs or {},
    }


LOCATIONS = frozenset({"json", "query", "form", "view_args", "_schema"})


def flatten(messages: Any, path: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """webargs' ``{"json": {"env": {"X": ["..."]}}}`` -> ``{"env.X": ["..."]}``."""
    if isinstance(messages, dict):
        out: dict[str, list[str]] = {}
        for key, value in messages.items():
            sub = path if key in LOCATIONS else (*path, str(key))
            for name, lines in flatten(value, sub).items():
                out.setdefault(name, []).extend(lines)
        return out
    lines = messages if isinstance(messages, list) else [messages]
    return {".".join(path) or "_body": [str(m) for m in lines]}


def http_error(e: HTTPException) -> ResponseReturnValue:
    status = e.code or 500
    data = getattr(e, "data", None) or {}
    fields = flatten(data["messages"]) if data.get("messages") else {}
    if fields:
        message = "; ".join(f"{name}: {' '.join(lines)}" for name, lines in fields.items())
    else:
        message = data.get("message") or e.description or ""
    # The headers the status itself needs: WWW-Authenticate with a 401, Allow with a 405.
    headers = [(k, v) for k, v in e.get_headers() if k in ("WWW-Authenticate", "Allow")]
    return jsonify(body(status, message, fields)), status, headers


def overlay_error(e: errors.OverlayError) -> ResponseReturnValue:
    status = next((s for cls, s in STATUS_FOR.items() if isinstance(e, cls)), 500)
    # A 429 says when to ask again (TooManyWaiters), as HTTP has it: Retry-After.
    headers = {"Retry-After": str(e.fields["retry_after_s"])} if "retry_after_s" in e.fields else {}
    return jsonify(body(status, e.message, {k: v for k, v in e.fields.items()})), status, headers


def storage_error(e: OperationalError) -> ResponseReturnValue:
    """Postgres did not answer where no view translated it (the token check before every
    view reads Postgres too): 503, as a view's StorageUnavailable, never a bare 500."""
    return overlay_error(errors.StorageUnavailable(f"Postgres did not answer: {e.orig}"))


def no_nul_in_path(endpoint: str | None, values: dict[str, Any] | None) -> None:
    """A path value with a NUL names no job or node (and Postgres cannot even compare
    it: a 500 before this): 404 before the view runs."""
    if values and any(isinstance(v, str) and "\x00" in v for v in values.values()):
        raise NotFound()


def register(app: Flask) -> None:
    app.url_value_preprocessor(no_nul_in_path)
    app.register_error_handler(HTTPException, http_error)
    app.register_error_handler(errors.OverlayError, overlay_error)
    app.register_error_handler(OperationalError, storage_error)
