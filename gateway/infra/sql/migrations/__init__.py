"""Alembic migrations of the gateway's database (package data: env.py, versions/)."""
