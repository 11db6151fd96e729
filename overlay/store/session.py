"""Engines and sessions, a liveness ping, creating the database when missing, and running migrations."""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from overlay.errors import StorageUnavailable

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]


def make_engine(url: str, *, pool_size: int = 5, idle_in_transaction_s: float | None = None) -> Engine:
    """An engine that notices dead connections (Postgres restarts) before using them.

    Its SQL parameters never reach a log line or an error message: they hold job env
    values, which may be secrets. With ``idle_in_transaction_s``, Postgres ends a session
    of it that sits that long inside a transaction (an agent uses FENCE_S): a process
    frozen between a write and its commit (SIGSTOP, a swap storm) would otherwise hold its
    row locks for as long as it is frozen, and stall whoever waits for them: a frozen agent
    holding its node's row stalled reconcile, and with it every pass.
    """
    engine = create_engine(
        url,
        hide_parameters=True,
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=pool_size * 2,
        connect_args={"connect_timeout": 3},
    )
    if idle_in_transaction_s:  # set on each new connection (an ``options`` in the URL stays the URL's)
        ms = max(1, round(idle_in_transaction_s * 1000))

        @event.listens_for(engine, "connect")
        def _cut_off_idle_transactions(dbapi_connection: Any, _record: Any) -> None:
            with dbapi_connection.cursor() as cursor:
                cursor.execute(f"SET idle_in_transaction_session_timeout = {ms}")
            dbapi_connection.commit()

    return engine


def db_now(session: Session) -> datetime:
    """Postgres's clock, now: the one clock every stored timestamp is read from.

    Agents, the API and the scheduler run on hosts whose clocks disagree; liveness,
    retries and latency figures compare timestamps written by all of them, so none
    of those timestamps may come from a host's own clock.
    """
    return session.connection().execute(CLOCK).scalar_one()  # type: ignore[no-any-return]


CLOCK = text("select clock_timestamp()")


def postgres_clock() -> datetime | None:
    """The clock callers pass when they have no time of their own to give: none, so that
    ``resolve_now`` takes Postgres's (tests pass a clock that gives fixed times)."""
    return None


def resolve_now(session: Session, now: datetime | None) -> datetime:
    """``now`` when a caller gives one (tests do), else Postgres's clock."""
    return now if now is not None else db_now(session)


def ping(session: Session) -> None:
    """Ask Postgres for one trivial answer; raises SQLAlchemy's error if it cannot give it."""
    session.execute(text("select 1"))


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


def ensure_database(url: str) -> bool:
    """Create the database named in ``url`` if it is missing; True if it was created.

    Raises StorageUnavailable when the server does not answer.
    """
    target = make_url(url)
    admin = create_engine(
        target.set(database="postgres"),
        isolation_level="AUTOCOMMIT",
        connect_args={"connect_timeout": 3},
    )
    try:
        with admin.connect() as conn:
            exists = conn.scalar(
                text("select 1 from pg_database where datname = :n"), {"n": target.database}
            )
            if exists:
                return False
            conn.execute(text(f'create database "{target.database}"'))
            log.info("created database %s", target.database)
            return True
    except OperationalError as e:
        raise StorageUnavailable(f"Postgres at {target.host}:{target.port} did not answer: {e.orig}") from e
    finally:
        admin.dispose()


def migrate(url: str, revision: str = "head") -> None:
    """Bring the schema to Alembic's head (or to ``revision``: benchmarks compare schemas)."""
    from alembic.config import Config

    from alembic import command

    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "alembic"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    # The calling process has set up its logging (LOG_FORMAT); alembic.ini's must not replace it.
    cfg.attributes["skip_logging"] = True
    command.upgrade(cfg, revision)
