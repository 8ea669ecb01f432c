"""Tables of key custody and the PKI."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, ForeignKey, Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from storage.base import Base, UTCDateTime, utcnow


class StoredKey(Base):
    """Metadata of one private key, and for the software backend its envelope-encrypted material.

    software: `ciphertext` is the PKCS#8 DER sealed with AES-256-GCM under a per-key data key (DEK);
    `wrapped_dek` is the DEK sealed with AES-256-GCM under the master key identified by `master_key_id`.
    pkcs11: the key lives on the token, found by CKA_ID = `key id` and CKA_LABEL = `label`.
    """

    __tablename__ = "stored_keys"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    backend: Mapped[str] = mapped_column(String(16))
    key_type: Mapped[str] = mapped_column(String(16))
    purpose: Mapped[str] = mapped_column(String(32), index=True)
    label: Mapped[str] = mapped_column(String(128))
    public_key_der: Mapped[bytes] = mapped_column(LargeBinary)
    master_key_id: Mapped[str | None] = mapped_column(String(32))
    wrapped_dek: Mapped[bytes | None] = mapped_column(LargeBinary)
    ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    destroyed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class TokenKey(Base):
    """A token-signing key in its lifecycle: next -> current -> retired -> removed."""

    __tablename__ = "token_keys"

    kid: Mapped[str] = mapped_column(ForeignKey("stored_keys.id"), primary_key=True)
    alg: Mapped[str] = mapped_column(String(16), index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    activated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    retired_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    remove_after: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    removed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class CertificateAuthority(Base):
    """A CA of the built-in hierarchy (root, issuing), its certificate and its key in the key store."""

    __tablename__ = "certificate_authorities"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    parent: Mapped[str | None] = mapped_column(String(32))
    key_id: Mapped[str | None] = mapped_column(ForeignKey("stored_keys.id"))
    certificate_der: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class IssuedCertificate(Base):
    """A certificate issued by one of our CAs, with its revocation status (RFC 5280 section 5.3.1 reasons)."""

    __tablename__ = "certificates"
    __table_args__ = (UniqueConstraint("issuer_ca", "serial_hex", name="uq_certificates_issuer_serial"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    issuer_ca: Mapped[str] = mapped_column(String(32), index=True)
    serial_hex: Mapped[str] = mapped_column(String(42), index=True)
    profile: Mapped[str] = mapped_column(String(48))
    subject: Mapped[str] = mapped_column(String(1000))
    der: Mapped[bytes] = mapped_column(LargeBinary)
    not_before: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    not_after: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    key_id: Mapped[str | None] = mapped_column(ForeignKey("stored_keys.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    revocation_reason: Mapped[str | None] = mapped_column(String(32))


class CRLRecord(Base):
    """A CRL (RFC 5280 section 5) we signed, or one signed offline and imported; the newest per CA is served."""

    __tablename__ = "crls"
    __table_args__ = (UniqueConstraint("ca_name", "number", name="uq_crls_ca_number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ca_name: Mapped[str] = mapped_column(String(32), index=True)
    number: Mapped[int] = mapped_column(BigInteger)  # cRLNumber: offline ceremonies may count beyond 2^31
    this_update: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    next_update: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    der: Mapped[bytes] = mapped_column(LargeBinary)


class SerialBlock(Base):
    """A block of serial numbers reserved by one node (hi/lo allocation).

    The autoincrement id is the database sequence; each node reserves a block and hands out
    `id * BLOCK_SIZE + n`, so serials are unique across every node sharing the database.
    """

    __tablename__ = "serial_blocks"
    __table_args__ = ({"sqlite_autoincrement": True},)  # a block id is never reused on SQLite either

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    purpose: Mapped[str] = mapped_column(String(16))
    reserved_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
