"""GET / serves the dashboard page, its script and styles, and they ship in the package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STATIC = ("index.html", "dashboard.js", "dashboard.css")


def fetch(client, path: str):
    """The response, read and closed (static files are sent from an open file)."""
    response = client.get(path)
    response.get_data()
    response.close()
    return response


def test_the_root_serves_the_dashboard_page(client):
    page = fetch(client, "/")
    assert page.status_code == 200
    assert page.content_type.startswith("text/html")
    assert b'<script src="/static/dashboard.js"' in page.data
    assert b'id="nodes"' in page.data and b'id="jobs"' in page.data


def test_the_script_reads_the_api_it_is_served_by(client):
    script = fetch(client, "/static/dashboard.js")
    assert script.status_code == 200
    assert "javascript" in script.content_type
    assert b'getJson("/api/nodes")' in script.data and b"/api/jobs?state=" in script.data
    assert fetch(client, "/static/dashboard.css").status_code == 200


def test_the_dashboard_files_are_built_into_the_package(tmp_path):
    # As `pip install .` (the Dockerfile's) would build it, into a folder of the test's own
    subprocess.run(
        [sys.executable, "-c", "from setuptools import setup; setup()", "-q",
         "egg_info", "--egg-base", str(tmp_path), "build_py", "--build-lib", str(tmp_path / "lib")],
        cwd=ROOT, check=True, capture_output=True,
    )
    assert all((tmp_path / "lib/web/static" / name).is_file() for name in STATIC)
