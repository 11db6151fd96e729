"""Who may call the API: a bearer token for /api/, the admin token for the admin routes.

With ``OVERLAY_API_TOKEN`` set, every request under ``/api/`` must carry
``Authorization: Bearer <token>`` (401 without it). With ``OVERLAY_ADMIN_TOKEN``
set, the routes that change the cluster rather than a job (``/api/admin/...``,
drain and undrain, switching the policy) need that token (403 with the user
token); the admin token is good for every other ``/api/`` route too. Without
tokens the API is open, and the API logs one warning at start saying so.

Open in every case: ``/health`` and ``/ready`` (probes), ``/metrics`` (scrapers),
``/openapi.json`` and ``/docs`` (the spec holds no data), and the dashboard page
at ``/`` (a static page; the data it shows comes from ``/api/``).

Tokens are compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
import logging
import re
from enum import Enum

from flask import Flask, request
from flask_smorest import Api
from werkzeug.datastructures import WWWAuthenticate
from werkzeug.exceptions import Forbidden, Unauthorized

from overlay.config import Settings

log = logging.getLogger(__name__)
ADMIN_PATHS = re.compile(r"^/api/(admin(/.*)?|nodes/[^/]+/(drain|undrain)|policies/active)/?$")


class Role(Enum):
    USER = "user"
    ADMIN = "admin"


def required_role(path: str) -> Role | None:
    """What a request for ``path`` needs: nothing, a user's token, or the admin token."""
    if ADMIN_PATHS.match(path):
        return Role.ADMIN
    if path == "/api" or path.startswith("/api/"):
        return Role.USER
    return None


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    scheme, _, token = (header or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def matches(given: str | None, expected: str) -> bool:
    """Constant-time comparison; an unset expected token matches nothing."""
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def authorize(settings: Settings, role: Role | None, token: str | None) -> None:
    """Raise Unauthorized (401) or Forbidden (403) unless ``token`` may do ``role``'s work."""
    api_token, admin_token = settings.overlay_api_token, settings.overlay_admin_token
    if role is None:
        return
    if role is Role.ADMIN and admin_token:
        if matches(token, admin_token):
            return
        if matches(token, api_token):
            raise Forbidden("this route needs the admin token (OVERLAY_ADMIN_TOKEN)")
        raise _unauthorized(token, "this route needs the admin token: Authorization: Bearer <token>")
    if not api_token or matches(token, api_token) or matches(token, admin_token):
        return
    raise _unauthorized(token, "the API needs a token: Authorization: Bearer <token>")


def _unauthorized(token: str | None, message: str) -> Unauthorized:
    params: dict[str, str | None] = {"realm": "overlay"}
    if token:
        params["error"] = "invalid_token"
        message = "the token is not valid here"
    return Unauthorized(message, www_authenticate=WWWAuthenticate("bearer", params))


def register(app: Flask, api: Api, settings: Settings) -> None:
    """Check every request before its view runs; describe the scheme in the OpenAPI spec."""

    @app.before_request
    def _check_token() -> None:
        authorize(settings, required_role(request.path), bearer_token(request.headers.get("Authorization")))

    if settings.overlay_api_token or settings.overlay_admin_token:
        api.spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
        api.spec.options["security"] = [{"bearer": []}]


def open_warning(settings: Settings) -> str | None:
    """The one line the API logs at start when a token is missing, or None."""
    if not settings.overlay_api_token and not settings.overlay_admin_token:
        return ("OVERLAY_API_TOKEN and OVERLAY_ADMIN_TOKEN are not set: the API is open to anyone "
                "who can reach it, admin routes included")
    if not settings.overlay_api_token:
        return "OVERLAY_API_TOKEN is not set: anyone who can reach the API can submit and read jobs"
    if not settings.overlay_admin_token:
        return "OVERLAY_ADMIN_TOKEN is not set: every API token holder can use the admin routes"
    return None


def warn_if_open(settings: Settings) -> None:
    """Log ``open_warning`` once (gunicorn's master calls this at start)."""
    warning = open_warning(settings)
    if warning:
        log.warning(warning)
