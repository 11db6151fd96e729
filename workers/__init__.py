"""Celery side of overlay: the app, the tasks, the agent's runner and HTTP endpoints."""
