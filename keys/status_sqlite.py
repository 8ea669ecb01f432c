"""Certificate status for the OCSP responder (keys.ocsp) from the `certificates` table of an SQLite database.

The backend for SQLite (development and single-node deployments): the lookup runs on the standard library's
sqlite3 driver, synchronously, on the calling thread. An indexed read takes tens of microseconds and, in the
WAL mode the main engine sets (storage.engine), never waits for writers; going through aiosqlite instead
costs several thread hand-offs per query and halves the responder's throughput. The SQL and the decoding of
`revoked_at` come from the SQLAlchemy model, compiled once for the SQLite dialect (keys.status_query), so
both stay in step with the schema. The file is opened read-write but never created: a missing database is an
error (answered tryLater), not a new empty file.
"""

from __future__ import annotations

import sqlite3
import threading
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Final

from sqlalchemy.dialects.sqlite import pysqlite

from keys.interfaces import CertificateStatus
from keys.status_query import CompiledStatusQuery

BUSY_TIMEOUT_MS: Final = 1000
"""How long a lookup may wait on a locked database (WAL recovery, a checkpoint): it blocks the event loop."""


class SqliteCertificateStatus:
    """A CertificateStatusSource reading an SQLite file with sqlite3 (see module docstring). Thread-safe."""

    def __init__(self, path: str) -> None:
        if not path or path == ":memory:":
            raise ValueError("an SQLite status source needs a database file")
        self._path = path
        self._connection: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._query = CompiledStatusQuery.for_dialect(pysqlite.dialect())

    def _connect(self) -> sqlite3.Connection:
        uri = f"file:{urllib.parse.quote(self._path)}?mode=rw"
        connection = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
        connection.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        return connection

    async def lookup(self, issuer: str, serials: Sequence[str]) -> Mapping[str, CertificateStatus]:
        found: dict[str, CertificateStatus] = {}
        with self._lock:
            if self._connection is None:
                self._connection = self._connect()
            for serial in dict.fromkeys(serials):
                row = self._connection.execute(self._query.sql, self._query.params(issuer, serial)).fetchone()
                if row is not None:
                    key, status = self._query.status(row)
                    found[key] = status
        return found

    async def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None
