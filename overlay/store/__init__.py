"""Postgres storage: tables, sessions, and the job and node repositories.

This is the I/O edge of the core: rows become overlay.model values here and
nowhere else.
"""
