"""GET /: the live fleet dashboard, a static page whose script reads /api/nodes and /api/jobs.

The files live in web/static/ and are served by Flask's own static route; no build step.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app

blp = Blueprint("dashboard", __name__)


@blp.get("/")
def index() -> Response:
    response = current_app.send_static_file("index.html")
    # The page is tiny and changes with each release; the data it shows is fetched live anyway.
    response.cache_control.no_cache = True
    return response
