"""Alembic: one head, and `flask db upgrade` on an empty database yields exactly the models."""

from __future__ import annotations

import os
import uuid

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask_migrate import upgrade
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from cardbridge.extensions import db

MIGRATIONS = os.path.join(os.path.dirname(__file__), "..", "migrations")


def test_there_is_exactly_one_head():
    script = ScriptDirectory.from_config(_alembic_config())
    assert len(script.get_heads()) == 1, script.get_heads()


def _alembic_config() -> Config:
    cfg = Config(os.path.join(MIGRATIONS, "alembic.ini"))
    cfg.set_main_option("script_location", MIGRATIONS)
    return cfg


def _upgrade_and_diff(make_app, url: str) -> list:
    app = make_app(SQLALCHEMY_DATABASE_URI=url, create_schema=False)
    with app.app_context():
        upgrade(directory=MIGRATIONS)
        try:
            with db.engine.connect() as conn:
                context = MigrationContext.configure(conn, opts={"compare_type": True})
                return compare_metadata(context, db.metadata)
        finally:
            db.session.remove()
            db.engine.dispose()


def test_upgrade_on_empty_sqlite_matches_the_models(make_app, tmp_path):
    diff = _upgrade_and_diff(make_app, f"sqlite:///{tmp_path / 'migrated.db'}")
    assert diff == []


@pytest.mark.postgres
def test_upgrade_on_empty_postgresql_matches_the_models(make_app):
    base = make_url(os.environ["TEST_DATABASE_URL"])
    name = f"cardbridge_mig_{uuid.uuid4().hex[:8]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        diff = _upgrade_and_diff(make_app, base.set(database=name).render_as_string(False))
        assert diff == []
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
