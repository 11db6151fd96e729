"""Writes deploy/.env: the compose stack's secrets, generated once and kept.

Run by `make up`, `make logs` and `make down` with the host's Python (standard library
only): `python3 deploy/stack_env.py deploy/.env`. A file that exists keeps its values;
the keys it lacks (one written by an older overlay) are added. The file is the
operator's, mode 0600, kept out of git and out of the image (.gitignore, .dockerignore).
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Callable
from pathlib import Path


def token() -> str:
    """A random secret that needs no quoting in a URL, a shell or a .env line."""
    return secrets.token_urlsafe(32)


# What the stack needs, and how each is made. FLOWER_BASIC_AUTH is Flower's "user:password".
SECRETS: dict[str, Callable[[], str]] = {
    "OVERLAY_API_TOKEN": token,
    "OVERLAY_ADMIN_TOKEN": token,
    "POSTGRES_PASSWORD": token,
    "REDIS_PASSWORD": token,
    "FLOWER_BASIC_AUTH": lambda: f"overlay:{token()}",
}


def read_env(path: Path) -> dict[str, str]:
    """The KEY=value lines of a .env file (comments and blank lines skipped)."""
    if not path.exists():
        return {}
    pairs = (line.split("=", 1) for line in path.read_text().splitlines())
    return {kv[0].strip(): kv[1] for kv in pairs if len(kv) == 2 and not kv[0].lstrip().startswith("#")}


def missing_secrets(existing: dict[str, str]) -> dict[str, str]:
    """A fresh value for each secret the file does not have yet."""
    return {key: make() for key, make in SECRETS.items() if key not in existing}


def append_env(path: Path, values: dict[str, str]) -> None:
    """Add KEY=value lines to the file, creating it readable by its owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as out:
        out.writelines(f"{key}={value}\n" for key, value in values.items())


def main(argv: list[str]) -> int:
    path = Path(argv[1] if len(argv) > 1 else "deploy/.env")
    existing = read_env(path)
    added = missing_secrets(existing)
    if added:
        append_env(path, added)
        print(f"wrote random {', '.join(added)} to {path}")
    if existing and "POSTGRES_PASSWORD" in added:
        # The postgres image sets the password only when it creates its volume.
        print("note: a Postgres volume made before this keeps its old password; "
              "`make down` and `docker volume rm overlay_pgdata` (which deletes its jobs) to start afresh")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
