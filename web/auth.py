"""Who may call the API: a bearer token for /api/, the admin token for the admin routes.

With ``OVERLAY_API_TOKEN`` set, every request under ``/api/`` must carry
``Authorization: Bearer <token>`` (401 without it). With ``OVERLAY_ADMIN_TOKEN``
set, the routes that change the cluster rather than a job (``/api/admin/...``,
drain and undrain, switching the policy) need that token (403 with the user
token); the admin token is good for every other ``/api/`` route too. Without
tokens the API is open, and the API logs one warning at start saying so.

Users (overlay/store/accounts.py) each get tokens of their own from an admin: such a
token is that user, who sees only their own jobs (overlay/identity.py). Once any user
holds a live token, a request without one is refused. ``OVERLAY_API_TOKEN`` is
single-user mode: its holder is the implicit user ``default``.

Open in every case: ``/health`` and ``/ready`` (probes), ``/metrics`` (scrapers),
``/openapi.json`` and ``/docs`` (the spec holds no data), and the dashboard page
at ``/`` (a static page; the data it shows comes from ``/api/``).

Tokens are compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
import logging
import re
import time
from enum import Enum
from typing import Protocol

from flask import Flask, g, request
from flask_smorest import Api
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.datastructures import WWWAuthenticate
from werkzeug.exceptions import Forbidden, Unauthorized

from overlay.config import Settings
from overlay.identity import ADMIN, IMPLICIT, Caller
from overlay.store import accounts

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


class TokenStore(Protocol):
    """Where user tokens live (overlay/store/accounts.py behind ``StoredTokens``)."""

    def caller(self, token: str) -> Caller | None: ...

    def any_live(self) -> bool: ...


def authorize(settings: Settings, role: Role | None, token: str | None,
              tokens: TokenStore | None = None) -> Caller:
    """Who ``token`` is, for a route that needs ``role``: raise Unauthorized (401) or
    Forbidden (403) unless they may do its work.

    The admin token is an admin; ``OVERLAY_API_TOKEN`` is the implicit user ``default``
    (single-user mode); a user's token is that user (never an admin). A request without
    a token is refused once ``OVERLAY_API_TOKEN`` is set or some user holds a live token;
    else it is the implicit user, or an admin while ``OVERLAY_ADMIN_TOKEN`` is unset (the
    admin routes are open then anyway).
    """
    api_token, admin_token = settings.overlay_api_token, settings.overlay_admin_token
    if role is None:
        return IMPLICIT
    if matches(token, admin_token):
        return ADMIN
    if matches(token, api_token):
        if role is Role.ADMIN and admin_token:
            raise Forbidden("this route needs the admin token (OVERLAY_ADMIN_TOKEN)")
        return ADMIN if role is Role.ADMIN else IMPLICIT
    user = tokens.caller(token) if token and tokens is not None else None
    if user is not None:
        if role is Role.ADMIN:
            raise Forbidden("this route needs the admin token (OVERLAY_ADMIN_TOKEN)")
        return user
    closed = bool(api_token or admin_token) or (tokens is not None and tokens.any_live())
    if token and closed:
        raise _unauthorized(token, "")
    if role is Role.ADMIN and admin_token:
        raise _unauthorized(token, "this route needs the admin token: Authorization: Bearer <token>")
    if api_token or (tokens is not None and tokens.any_live()):
        raise _unauthorized(token, "the API needs a token: Authorization: Bearer <token>")
    return IMPLICIT if admin_token else ADMIN


# Whether any user holds a live token is re-read at most this often per process (the
# admin routes of this process clear it at once): it gates only requests without a token.
LIVE_TOKENS_TTL_S = 1.0


class StoredTokens:
    """User tokens in Postgres, through the app's sessions."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        self._live: tuple[float, bool] | None = None

    def caller(self, token: str) -> Caller | None:
        if accounts.token_key(token) is None:
            return None  # not one of ours: no query
        with self.sessions() as s:
            return accounts.caller_for_token(s, token)

    def any_live(self) -> bool:
        now = time.monotonic()
        if self._live is None or now - self._live[0] > LIVE_TOKENS_TTL_S:
            with self.sessions() as s:
                self._live = (now, accounts.any_live_token(s))
        return self._live[1]

    def changed(self) -> None:
        """A token was created or revoked here: read again on the next request."""
        self._live = None


def current_caller() -> Caller:
    """The caller of the request being served (set before its view runs)."""
    return g.get("caller", IMPLICIT)  # type: ignore[no-any-return]


def _unauthorized(token: str | None, message: str) -> Unauthorized:
    params: dict[str, str | None] = {"realm": "overlay"}
    if token:
        params["error"] = "invalid_token"
        message = "the token is not valid here (unknown, revoked or mistyped)"
    return Unauthorized(message, www_authenticate=WWWAuthenticate("bearer", params))


def register(app: Flask, api: Api, settings: Settings, sessions: sessionmaker[Session]) -> None:
    """Check every request before its view runs; describe the scheme in the OpenAPI spec."""

    tokens = StoredTokens(sessions)
    app.extensions["overlay_tokens"] = tokens

    @app.before_request
    def _check_token() -> None:
        g.caller = authorize(settings, required_role(request.path),
                             bearer_token(request.headers.get("Authorization")), tokens)

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
