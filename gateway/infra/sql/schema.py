"""Schema changes go through Alembic migrations (``gateway/infra/sql/migrations``), applied at start and by
``gateway db upgrade``. On PostgreSQL an advisory lock serialises replicas that start together."""

from __future__ import annotations

from importlib import resources

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, Engine, text

from gateway.infra.sql.engine import driver_errors, make_engine

_LOCK = 0x6777_6462  # "gwdb": one advisory lock id for schema upgrades of this application


def alembic_config(conn: Connection) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(resources.files("gateway.infra.sql") / "migrations"))
    cfg.attributes["connection"] = conn
    return cfg


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine) -> str | None:
    """Bring the database to the newest revision; returns it. Safe to run from several replicas."""
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_lock(:id)"), {"id": _LOCK})
            conn.commit()
        try:
            command.upgrade(alembic_config(conn), "head")
            conn.commit()
        finally:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": _LOCK})
                conn.commit()
    return current_revision(engine)


def upgrade_database(url: str, synchronous: str = "FULL") -> tuple[str | None, str | None]:
    """``gateway db upgrade``: the revision before and after; a driver error becomes ``StoreError``."""
    engine = make_engine(url, synchronous)
    try:
        with driver_errors(f"cannot upgrade {url}", detail=True):
            before = current_revision(engine)
            return before, upgrade(engine)
    finally:
        engine.dispose()
