"""gunicorn settings for the overlay API: bootstrap storage once, in the master."""

import os

bind = os.environ.get("API_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("API_WORKERS", "2"))
threads = int(os.environ.get("API_THREADS", "16"))
worker_class = "gthread"
accesslog = "-"
timeout = 60


def on_starting(server):
    import logging

    from overlay.config import Settings
    from web.bootstrap import bootstrap_storage

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    bootstrap_storage(Settings.from_env(os.environ))
