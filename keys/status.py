"""Certificate status for the OCSP responder (keys.ocsp) and the TSA's own certificate check, from the
`certificates` table, on a reading unit of work (storage.direct): one indexed query per asked serial, compiled
once per dialect from the model, on asyncpg in production (a dropped connection is retried once on a fresh one,
the units' error policy) and on an ORM session's connection on SQLite.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy import bindparam, select

from keys.interfaces import CertificateStatus
from keys.models import IssuedCertificate
from storage.direct import DirectDatabase

STATUS_BY_SERIAL = select(
    IssuedCertificate.serial_hex, IssuedCertificate.revoked_at, IssuedCertificate.revocation_reason,
).where(IssuedCertificate.issuer_ca == bindparam("issuer"), IssuedCertificate.serial_hex == bindparam("serial"))
"""One certificate by issuer and serial: the unique index uq_certificates_issuer_serial answers it."""


class IssuedCertificateStatus:
    """A CertificateStatusSource on the database's units of work (see module docstring)."""

    def __init__(self, database: DirectDatabase) -> None:
        self._db = database

    async def lookup(self, issuer: str, serials: Sequence[str]) -> Mapping[str, CertificateStatus]:
        found: dict[str, CertificateStatus] = {}
        async with self._db.reading() as unit:
            for serial in dict.fromkeys(serials):
                row = await unit.one(STATUS_BY_SERIAL, issuer=issuer, serial=serial)
                if row is not None:
                    found[str(row[0])] = CertificateStatus(row[1], row[2])
        return found

    async def close(self) -> None:
        """Nothing of its own: the database is closed by its owner (api.deps.Services)."""
