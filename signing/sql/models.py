"""Tables of the signing service: agencies' requests, their documents, the durable jobs, the agencies' seals.

- `signing_requests`: one per POST /api/v1/signing-requests, seen only by the client that created it. Its id is
  the unguessable handle the agency polls (144 random bits); an Idempotency-Key is unique per client, and the
  digest of the body it first came with is kept, so a retry with another body is refused.
- `signing_documents`: the PDFs of a request, numbered from 1. The input is kept until it is signed (the signer's
  approval page shows it), the output until the retention (ACAR_SIGNING_RETENTION_HOURS) runs out; their SHA-256
  digests stay for good, as the audit trail does.
- `signing_jobs`: one per document to sign, claimed by any worker on any node (`SELECT ... FOR UPDATE SKIP
  LOCKED` on PostgreSQL) for a lease; a job whose worker died is taken again once its lease has run out. The
  output is written in the transaction that marks the job done, and only by the claim that still holds it
  (`leased_by`), so each document is signed exactly once in the delivered result.
- `signing_seals`: an agency client's electronic seal (ETSI EN 319 412-3 legal person: its VÖEN and name) and the
  key in the key store that seals for it.
- `signing_signer_keys`: a person's own signing key (ETSI EN 319 412-2 natural person, serialNumber PNOAZ-<FIN>),
  created on the person's first approved signature and reused while its certificate can sign.
- `signing_entities`: a legal entity's signing configuration (issue 16): whether its representatives sign with the
  entity's seal (ETSI EN 319 412-3, organizationIdentifier NTRAZ-<VÖEN>; its key here) or with their own signing
  certificate and a claimed role naming the entity (ETSI EN 319 122-1 signer-attributes-v2). The entity itself and
  its mandates are the registry's (idp); this table is signing's own.
- `signing_callbacks`: the completion callback of a request that named a callback URL, written in the transaction
  that moved the request to its final state, and sent by signing.core.callbacks until delivered or expired.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

import keys.models  # noqa: F401 - stored_keys, which signing_seals refers to
from storage.base import Base, UTCDateTime, utcnow


class SigningRequest(Base):
    __tablename__ = "signing_requests"
    __table_args__ = (UniqueConstraint("client_id", "idempotency_key", name="uq_signing_requests_idempotency"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64), index=True)
    mode: Mapped[str] = mapped_column(String(8))
    """seal (the agency's own seal) or sign (a person named by FIN)."""
    signer_fin: Mapped[str | None] = mapped_column(String(16))
    key_id: Mapped[str | None] = mapped_column(String(64))
    """The key that signs: the agency's seal key, fixed when the request is created."""
    reason: Mapped[str | None] = mapped_column(String(200))
    location: Mapped[str | None] = mapped_column(String(200))
    level: Mapped[str] = mapped_column(String(8))
    placement: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    callback_url: Mapped[str | None] = mapped_column(String(2000))
    state: Mapped[str] = mapped_column(String(16), index=True)
    failure_code: Mapped[str | None] = mapped_column(String(64))
    failure_detail: Mapped[str | None] = mapped_column(String(500))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    body_digest: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), index=True)
    """When it reached completed, failed, rejected or expired: the retention counts from here."""
    purged_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    """When its documents' contents were deleted (the retention ran out)."""
    entity_voen: Mapped[str | None] = mapped_column(String(10))
    """Sign mode on behalf of a legal entity: its VÖEN (signer_fin is its representative)."""
    entity_form: Mapped[str | None] = mapped_column(String(8))
    """seal or person: how it is signed, fixed at the approval from the entity's configuration."""
    mandate_id: Mapped[str | None] = mapped_column(String(36))
    """The mandate the approval was given under (checked again at signing time)."""


class SigningDocument(Base):
    __tablename__ = "signing_documents"

    request_id: Mapped[str] = mapped_column(ForeignKey("signing_requests.id", ondelete="CASCADE"), primary_key=True)
    n: Mapped[int] = mapped_column(Integer, primary_key=True)
    filename: Mapped[str] = mapped_column(String(255))
    pages: Mapped[int] = mapped_column(Integer)
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    findings: Mapped[list[str]] = mapped_column(JSON, default=list)
    """What the input policy reported about the input (active content it tolerated, a repair)."""
    content: Mapped[bytes | None] = mapped_column(LargeBinary)
    """The input PDF, until it is signed."""
    state: Mapped[str] = mapped_column(String(16))
    """pending, signed or failed."""
    signed: Mapped[bytes | None] = mapped_column(LargeBinary)
    signed_sha256: Mapped[str | None] = mapped_column(String(64))
    signed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class SigningJob(Base):
    __tablename__ = "signing_jobs"
    __table_args__ = (
        ForeignKeyConstraint(["request_id", "n"], ["signing_documents.request_id", "signing_documents.n"],
                             ondelete="CASCADE", name="fk_signing_jobs_document"),
        UniqueConstraint("request_id", "n", name="uq_signing_jobs_document"),
        Index("ix_signing_jobs_due", "state", "not_before"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(32))
    n: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    """queued, running, done or failed."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    not_before: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    leased_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    leased_by: Mapped[str | None] = mapped_column(String(64))
    """The claim holding the job: the worker's id and a fresh random part per claim."""
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AgencySeal(Base):
    __tablename__ = "signing_seals"

    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    voen: Mapped[str] = mapped_column(String(10))
    organization: Mapped[str] = mapped_column(String(64))
    key_id: Mapped[str | None] = mapped_column(ForeignKey("stored_keys.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class SigningEntity(Base):
    __tablename__ = "signing_entities"

    voen: Mapped[str] = mapped_column(String(10), primary_key=True)
    form: Mapped[str] = mapped_column(String(8))
    """seal (the entity's seal certificate) or person (the representative's own, with a claimed role)."""
    organization: Mapped[str] = mapped_column(String(64))
    """The organizationName of the seal certificate (and the entity named in a claimed role)."""
    key_id: Mapped[str | None] = mapped_column(ForeignKey("stored_keys.id"))
    """The seal key (seal form); None in person form."""
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class SignerKey(Base):
    __tablename__ = "signing_signer_keys"

    fin: Mapped[str] = mapped_column(String(16), primary_key=True)
    key_id: Mapped[str] = mapped_column(ForeignKey("stored_keys.id"))
    given_name: Mapped[str] = mapped_column(String(64))
    surname: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class SigningCallback(Base):
    """One completion callback (signing.core.callbacks): what happened to a request, sent as a signed JWT to the URL
    the agency gave. Pending while `state` is pending; claimed by moving `next_attempt_at` ahead by a lease."""

    __tablename__ = "signing_callbacks"
    __table_args__ = (Index("ix_signing_callbacks_due", "state", "next_attempt_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    """The callback's JWT id (jti): the agency drops a second delivery of the same id."""
    request_id: Mapped[str] = mapped_column(ForeignKey("signing_requests.id", ondelete="CASCADE"), unique=True)
    client_id: Mapped[str] = mapped_column(String(64))
    url: Mapped[str] = mapped_column(String(2000))
    claims: Mapped[dict[str, Any]] = mapped_column(JSON)
    """The event as it was when the request reached its final state: request id, state, documents, failure."""
    body: Mapped[str | None] = mapped_column(Text)
    """The compact JWS, once signed at the first attempt: exactly what every attempt sends."""
    state: Mapped[str] = mapped_column(String(16))
    """pending, delivered or expired."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    leased_by: Mapped[str | None] = mapped_column(String(64))
    """The claim that may record the current attempt's outcome."""
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
