"""The Alembic migrations build exactly the schema that models/tables.py declares, on
SQLite and on Postgres, and `db upgrade` can run again without changing anything."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, select

from models.db import make_engine
from models.migrate import upgrade
from models.tables import llms, metadata


def _diff(engine) -> list:
    with engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)


def test_sqlite_schema_matches_the_tables_and_upgrade_is_repeatable(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'm.sqlite'}")
    first = upgrade(engine)
    assert upgrade(engine) == first
    assert _diff(engine) == []
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(llms)) == first["models"]


@pytest.mark.services
def test_postgres_schema_matches_the_tables(stack) -> None:
    engine = make_engine(stack.database_url)  # migrated by the stack fixture
    assert _diff(engine) == []
    engine.dispose()
