"""Stand-ins for the base images compose and the Dockerfile name, built from Debian packages.

Where Docker Hub cannot be reached (CI machines), `python:3.11-slim`, `postgres:16` and
`redis:7` are made here, in the test's private engine only: one `debootstrap` of
Debian bookworm with python3, PostgreSQL and Redis (cached as a tarball keyed by its
package list, so later runs skip it), `docker import`ed, then a small image per name
with an entrypoint that honours what compose gives the real image (POSTGRES_USER,
POSTGRES_PASSWORD, POSTGRES_DB, PGDATA; `redis-server` arguments).

The Python stand-in is where the host's way to the package index goes (its CA
certificates and pip settings), so the project's Dockerfile stays as it ships.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

SUITE = "bookworm"
PACKAGES = ["python3", "python3-venv", "ca-certificates", "postgresql-15", "redis-server"]
# Bump when the rootfs recipe below changes, so a cached tarball is not reused.
RECIPE = "1"
CACHE = Path(os.environ.get("OVERLAY_CI_CACHE", "/var/cache/overlay-ci"))
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
HERE = Path(__file__).resolve().parent

PYTHON_DOCKERFILE = """\
FROM {base}
# The host's CA bundle and pip settings: how this machine reaches the package index.
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY pip.conf /etc/pip.conf
ENV PATH=/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8
CMD ["python3"]
"""
POSTGRES_DOCKERFILE = """\
FROM {base}
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PGDATA=/var/lib/postgresql/data LANG=C.UTF-8
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["postgres"]
"""
REDIS_DOCKERFILE = """\
FROM {base}
COPY redis-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["redis-server"]
"""
# name -> (Dockerfile, files from tests/compose/ it copies), in the order they are built
STANDINS = {
    "python:3.11-slim": (PYTHON_DOCKERFILE, []),
    "postgres:16": (POSTGRES_DOCKERFILE, ["postgres-entrypoint.sh"]),
    "redis:7": (REDIS_DOCKERFILE, ["redis-entrypoint.sh"]),
}


def apt_mirror() -> str:
    """The Debian mirror the host's apt uses (its first deb.debian.org-like URI)."""
    for source in [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*")]:
        text = source.read_text() if source.is_file() else ""
        for line in text.splitlines():
            words = line.split()
            if words[:1] == ["URIs:"] and words[1].rstrip("/").endswith("/debian"):
                return words[1]
            if words[:1] == ["deb"] and SUITE in words and words[-2:-1] != ["security"]:
                uri = next((w for w in words[1:] if "://" in w), "")
                if uri.rstrip("/").endswith("/debian"):
                    return uri
    return "http://deb.debian.org/debian"


def rootfs_key(mirror: str) -> str:
    return hashlib.sha256(" ".join([SUITE, mirror, RECIPE, *PACKAGES]).encode()).hexdigest()[:16]


def rootfs_tarball(say: Callable[[str], None]) -> Path:
    """The debootstrapped rootfs as a tarball, from the cache or made now."""
    mirror = apt_mirror()
    tarball = CACHE / f"standin-{SUITE}-{rootfs_key(mirror)}.tar"
    if tarball.exists():
        say(f"stand-in rootfs from the cache: {tarball}")
        return tarball
    if not shutil.which("debootstrap"):
        raise RuntimeError("debootstrap is not installed (Debian package debootstrap); "
                           "it builds the stand-in base images when Docker Hub cannot be reached")
    say(f"debootstrap {SUITE} from {mirror} with {', '.join(PACKAGES)} (cached as {tarball})")
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        rootfs = Path(tmp) / "rootfs"
        subprocess.run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
                        SUITE, str(rootfs), mirror], check=True, capture_output=True)
        # A venv as the Python stand-in's `python` and `pip` (Debian's own pip refuses to
        # install into the system, which the real image's pip does); no cluster of its own
        # for Postgres (the entrypoint makes one in PGDATA).
        script = ("python3 -m venv /opt/python && pg_dropcluster 15 main; "
                  "apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin")
        subprocess.run(["chroot", str(rootfs), "sh", "-c", script], check=True, capture_output=True)
        partial = Path(tmp) / "rootfs.tar"
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(partial), "."], check=True)
        partial.rename(tarball)
    return tarball


def pip_conf() -> str:
    """The host's pip settings that work inside a container: its indexes over the network.

    Local paths (file:// indexes, find-links folders) are left out; the certificate is
    the CA bundle copied in next to it.
    """
    listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"],
                            capture_output=True, text=True).stdout
    lines = ["[global]", f"cert = {HOST_CA_BUNDLE}"]
    for entry in listed.splitlines():
        key, _, value = entry.partition("=")
        name, value = key.rsplit(".", 1)[-1], value.strip("'\"")
        if name in ("index-url", "extra-index-url", "trusted-host", "timeout", "default-timeout"):
            kept = [v for v in value.split() if not v.startswith("file:")]
            if kept:
                lines.append(f"{'timeout' if name == 'default-timeout' else name} = {' '.join(kept)}")
    return "\n".join(dict.fromkeys(lines)) + "\n"


def pull_or_none(name: str, env: dict[str, str]) -> bool:
    pulled = subprocess.run(["docker", "pull", "-q", name], env=env, capture_output=True, text=True)
    return pulled.returncode == 0


def build_standins(env: dict[str, str], say: Callable[[str], None]) -> list[str]:
    """Pull each base image, or build its stand-in; return the names made as stand-ins."""
    wanted = [name for name in STANDINS if not pull_or_none(name, env)]
    if not wanted:
        return []
    say(f"cannot pull {', '.join(wanted)} (no registry from here): building stand-ins from Debian "
        "packages in the test's own engine only")
    base = f"overlay-ci/standin-rootfs:{rootfs_key(apt_mirror())}"
    if subprocess.run(["docker", "image", "inspect", base], env=env, capture_output=True).returncode:
        subprocess.run(["docker", "import", str(rootfs_tarball(say)), base], env=env, check=True,
                       capture_output=True)
    with tempfile.TemporaryDirectory() as tmp:
        context = Path(tmp)
        shutil.copy(HOST_CA_BUNDLE, context / "ca-certificates.crt")
        (context / "pip.conf").write_text(pip_conf())
        for name in wanted:
            dockerfile, files = STANDINS[name]
            for file in files:
                shutil.copy(HERE / file, context / file)
                (context / file).chmod(0o755)
            subprocess.run(["docker", "build", "-q", "-t", name, "-f", "-", str(context)],
                           input=dockerfile.format(base=base), text=True, env=env, check=True,
                           capture_output=True)
            say(f"stand-in {name} built (Debian {SUITE}{' PostgreSQL 15' if 'postgres' in name else ''})")
    return wanted
