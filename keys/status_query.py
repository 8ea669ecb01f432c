"""The one query of the OCSP responder's certificate-status backends, compiled once per SQL dialect.

The statement is built from the SQLAlchemy model, so the backends' raw driver calls (keys.status_postgres,
keys.status_sqlite) stay in step with the schema; `revoked_at` is decoded by the column type itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.engine import Dialect

from keys.interfaces import CertificateStatus
from keys.models import IssuedCertificate

STATUS_BY_SERIAL = select(
    IssuedCertificate.serial_hex, IssuedCertificate.revoked_at, IssuedCertificate.revocation_reason,
).where(IssuedCertificate.issuer_ca == bindparam("issuer"), IssuedCertificate.serial_hex == bindparam("serial"))
"""One certificate by issuer and serial: the unique index uq_certificates_issuer_serial answers it."""


@dataclass(frozen=True, slots=True)
class CompiledStatusQuery:
    """STATUS_BY_SERIAL as SQL text for one dialect's driver, with its parameter order and row decoding."""

    sql: str
    order: tuple[str, ...]
    decode_time: Callable[[Any], Any]

    @classmethod
    def for_dialect(cls, dialect: Dialect) -> CompiledStatusQuery:
        compiled = STATUS_BY_SERIAL.compile(dialect=dialect)
        column_type = IssuedCertificate.__table__.c.revoked_at.type
        processor = column_type.dialect_impl(dialect).result_processor(dialect, None)
        return cls(str(compiled), tuple(compiled.positiontup or ()), processor or (lambda value: value))

    def params(self, issuer: str, serial: str) -> list[str]:
        values = {"issuer": issuer, "serial": serial}
        return [values[name] for name in self.order]

    def status(self, row: Sequence[Any]) -> tuple[str, CertificateStatus]:
        serial, revoked_at, reason = row
        return str(serial), CertificateStatus(self.decode_time(revoked_at), reason)
