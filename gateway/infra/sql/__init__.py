"""SQLite and PostgreSQL: tables, migrations, the store, the operators' reads, notifications."""
