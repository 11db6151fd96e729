"""`alembic upgrade head` builds exactly the schema the models describe, and downgrades cleanly."""

from __future__ import annotations

import uuid

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from overlay.store.session import ensure_database, migrate
from overlay.store.tables import Base
from tests.conftest import PG_SERVER, drop_database


@pytest.fixture
def empty_database():
    url = f"{PG_SERVER}/overlay_migration_{uuid.uuid4().hex[:8]}"
    ensure_database(url)
    yield url
    drop_database(url)


def test_upgrade_head_matches_the_models(empty_database):
    migrate(empty_database)
    engine = create_engine(empty_database)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == []


def test_downgrade_to_base_removes_every_table(empty_database):
    from alembic.config import Config

    from alembic import command
    from overlay.store.session import ROOT

    migrate(empty_database)
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "alembic"))
    cfg.set_main_option("sqlalchemy.url", empty_database)
    command.downgrade(cfg, "base")
    engine = create_engine(empty_database)
    assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    engine.dispose()


def test_ensure_database_creates_it_once(empty_database):
    assert ensure_database(empty_database) is False
