"""The OCSP responder's certificate-status lookups on the test database's units of work (SQLite or asyncpg)."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import text

from api.deps import Services
from keys.models import IssuedCertificate
from keys.status import IssuedCertificateStatus
from tests.conftest import TEST_DB

REVOKED_AT = dt.datetime(2026, 3, 4, 5, 6, 7, tzinfo=dt.UTC)


async def _rows(services: Services) -> None:
    now = dt.datetime.now(dt.UTC)
    async with services.sessions() as session, session.begin():
        for serial, revoked_at, reason in (("a1", None, None), ("b2", REVOKED_AT, "keyCompromise")):
            session.add(IssuedCertificate(issuer_ca="issuing", serial_hex=serial, profile="authentication",
                                          subject="CN=x", der=b"\x30\x00", not_before=now,
                                          not_after=now + dt.timedelta(days=1), revoked_at=revoked_at,
                                          revocation_reason=reason))
        session.add(IssuedCertificate(issuer_ca="root", serial_hex="c3", profile="issuing-ca", subject="CN=y",
                                      der=b"\x30\x00", not_before=now, not_after=now + dt.timedelta(days=1)))


async def test_lookup(services: Services) -> None:
    await _rows(services)
    source = IssuedCertificateStatus(services.direct)
    try:
        found = await source.lookup("issuing", ["a1", "b2", "c3", "ffff", "a1"])
        assert set(found) == {"a1", "b2"}  # c3 is the root's, ffff was never issued
        assert (found["a1"].revoked_at, found["a1"].reason) == (None, None)
        assert (found["b2"].revoked_at, found["b2"].reason) == (REVOKED_AT, "keyCompromise")
        assert found["b2"].revoked_at.tzinfo is not None
        assert await source.lookup("issuing", ["ffff"]) == {}
        assert set(await source.lookup("root", ["c3"])) == {"c3"}
    finally:
        await source.close()


@pytest.mark.postgresql
async def test_lookup_survives_dropped_connections(services: Services) -> None:
    """Server-side connection loss is a PostgreSQL matter: this runs in the PostgreSQL pass only. The units of
    work retry a connection found gone at their first statement once, on a fresh one (storage.direct)."""
    assert TEST_DB == "postgresql", "run with ACAR_TEST_DB=postgresql (make test deselects it on SQLite)"
    await _rows(services)
    source = IssuedCertificateStatus(services.direct)
    try:
        assert set(await source.lookup("issuing", ["a1"])) == {"a1"}  # the pool now holds a connection
        async with services.engine.connect() as connection:  # what a database restart does to it
            terminated = await connection.execute(text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name = ''"))
            assert any(row[0] for row in terminated)
        assert set(await source.lookup("issuing", ["a1"])) == {"a1"}
    finally:
        await source.close()
