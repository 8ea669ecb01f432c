"""Certificate status for the OCSP responder (keys.ocsp) from the `certificates` table on PostgreSQL.

One indexed query per OCSP request, as fast as the driver allows: the connection comes from an SQLAlchemy
pool of its own (fixed size, no pre-ping: a round trip per checkout saved), and the query, compiled once
from the model (keys.status_query), runs on the asyncpg connection itself, with asyncpg's prepared-statement
cache; SQLAlchemy's result layer would double the cost of a lookup. When the database dropped the pooled
connections (a restart), the lookup fails once, the pool is replaced and the lookup retried on a fresh one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy.ext.asyncio import AsyncEngine

from keys.interfaces import CertificateStatus
from keys.status_query import CompiledStatusQuery


class PostgresCertificateStatus:
    """A CertificateStatusSource on an asyncpg engine (see module docstring); closes the engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        if engine.dialect.driver != "asyncpg":
            raise ValueError(f"PostgresCertificateStatus needs the asyncpg driver, not {engine.dialect.driver}")
        self._engine = engine
        self._query = CompiledStatusQuery.for_dialect(engine.dialect)

    async def _lookup(self, issuer: str, serials: Sequence[str]) -> dict[str, CertificateStatus]:
        found: dict[str, CertificateStatus] = {}
        async with self._engine.connect() as connection:
            driver = (await connection.get_raw_connection()).driver_connection
            if driver is None:  # an invalidated connection: counts as a dropped connection, retried once
                raise ConnectionError("the pooled connection has no driver connection")
            for serial in dict.fromkeys(serials):
                row = await driver.fetchrow(self._query.sql, *self._query.params(issuer, serial))
                if row is not None:
                    key, status = self._query.status(tuple(row))
                    found[key] = status
        return found

    async def lookup(self, issuer: str, serials: Sequence[str]) -> Mapping[str, CertificateStatus]:
        try:
            return await self._lookup(issuer, serials)
        except Exception:  # noqa: BLE001 - asyncpg's connection errors have no common base; retried once, then raised
            await self._engine.dispose()  # a fresh pool: connections the server dropped are not reused
            return await self._lookup(issuer, serials)

    async def close(self) -> None:
        await self._engine.dispose()
