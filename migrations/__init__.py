"""Alembic migrations: the only way Açar's schema is created or changed."""
