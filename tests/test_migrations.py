"""The migrations build exactly the schema the tables declare, on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from gateway.infra.sql import schema
from gateway.infra.sql.tables import METADATA


def differences(url: str) -> list[object]:
    engine = create_engine(url)
    try:
        schema.upgrade(engine)
        with engine.connect() as conn:
            return list(compare_metadata(MigrationContext.configure(conn), METADATA))
    finally:
        engine.dispose()


def test_sqlite_migrations_match_the_tables(tmp_path: Path) -> None:
    assert differences(f"sqlite:///{tmp_path / 'm.db'}") == []


@pytest.mark.postgres
def test_postgresql_migrations_match_the_tables(pg_database: str) -> None:
    assert differences(pg_database) == []


def test_db_upgrade_command(home: Path) -> None:
    env = {**os.environ, "GATEWAY_HOME": str(home)}
    first = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "db", "upgrade"], env=env, capture_output=True, text=True
    )
    assert first.returncode == 0 and "→ " in first.stdout, first.stderr
    head = first.stdout.strip().rsplit("→ ", 1)[1]
    again = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "db", "upgrade"], env=env, capture_output=True, text=True
    )
    assert again.returncode == 0 and f"revision {head} → {head}" in again.stdout


@pytest.mark.postgres
def test_db_upgrade_on_a_database_named_on_the_command_line(home: Path, pg_database: str) -> None:
    env = {**os.environ, "GATEWAY_HOME": str(home)}
    plain = pg_database.replace("postgresql+psycopg://", "postgresql://")  # as an operator writes it

    def upgrade(url: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gateway.cli", "db", "upgrade", "--database", url],
            env=env,
            capture_output=True,
            text=True,
        )

    done = upgrade(plain)
    assert done.returncode == 0 and "revision (empty) → " in done.stdout, done.stderr
    engine = create_engine(pg_database)
    try:  # the schema landed on PostgreSQL, not in the home's SQLite file
        assert schema.current_revision(engine) == done.stdout.strip().rsplit("→ ", 1)[1]
    finally:
        engine.dispose()
    wrong = upgrade("mysql://root@127.0.0.1/test")
    assert wrong.returncode == 1 and wrong.stderr.count("\n") == 1
    assert "only sqlite:///FILE and postgresql://USER@HOST/DB are supported" in wrong.stderr
