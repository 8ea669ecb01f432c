"""Storage: the SQLAlchemy declarative base, engine and session factories. No domain knowledge."""

from storage.base import Base, utcnow
from storage.engine import create_engine, create_session_factory, dialect_insert, is_sqlite

__all__ = ["Base", "create_engine", "create_session_factory", "dialect_insert", "is_sqlite", "utcnow"]
