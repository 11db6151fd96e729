"""The Flask app factory: configuration in, app out."""

from __future__ import annotations

import logging
import os

from flask import Flask
from flask_smorest import Api

from overlay import __version__
from overlay.config import Settings
from overlay.store.session import make_engine, make_sessionmaker
from web import (
    accounts,
    admin,
    arrays,
    auth,
    dashboard,
    errors,
    health,
    jobs,
    metrics,
    nodes,
    policies,
    schemas,
    usage,
)
from web import efficiency as efficiency_views
from web import history as history_views
from web.deps import ApiDeps
from web.dispatch import Dispatcher
from web.waiter import JobWaiter

log = logging.getLogger(__name__)


def create_app(config: Settings | None = None, *, deps: ApiDeps | None = None) -> Flask:
    """Build the API. ``config`` defaults to the environment; ``deps`` to real ones."""
    settings = config or Settings.from_env(os.environ)
    app = Flask(__name__)
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        API_TITLE="overlay",
        API_VERSION=__version__,
        OPENAPI_VERSION="3.1.0",  # JSON Schema 2020-12: prefixItems, propertyNames
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="/docs",
        OPENAPI_SWAGGER_UI_URL="https://cdn.jsdelivr.net/npm/swagger-ui-dist/",
    )
    app.extensions["overlay"] = deps or ApiDeps(
        settings=settings,
        sessions=make_sessionmaker(make_engine(settings.database_url)),
        dispatcher=Dispatcher(settings.broker_url),
        waiter=JobWaiter(settings.database_url, max_waiters=settings.max_waiters),
    )
    api = Api(app)
    schemas.describe_rules(api)
    api.register_blueprint(efficiency_views.blp)
    api.register_blueprint(history_views.blp)
    auth.register(app, api, settings, app.extensions["overlay"].sessions)
    for blueprint in (jobs.blp, nodes.blp, policies.blp, admin.blp, accounts.blp, usage.blp, metrics.blp,
                      health.blp):
        api.register_blueprint(blueprint)
    api.register_blueprint(arrays.blp)  # job arrays (web/arrays.py)
    app.register_blueprint(dashboard.blp)
    errors.register(app)
    return app
