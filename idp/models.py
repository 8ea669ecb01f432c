"""Tables of the identity provider: persons and their login sessions."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import JSON, CheckConstraint, Date, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from storage.base import Base, UTCDateTime, utcnow


class Person(Base):
    """A natural person: a citizen with a FIN, or a foreigner / stateless person with an identity document.

    Foreigners holding an Azerbaijani residence permit also have a FIN; those without one are identified by
    their document (type, issuing country, number).
    """

    __tablename__ = "persons"
    __table_args__ = (
        UniqueConstraint("document_country", "document_number", name="uq_persons_document"),
        CheckConstraint(
            "fin IS NOT NULL OR (document_number IS NOT NULL AND document_country IS NOT NULL)",
            name="identified",
        ),
        CheckConstraint("category IN ('citizen', 'foreigner', 'stateless')", name="category"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=lambda: str(uuid.uuid4()))
    fin: Mapped[str | None] = mapped_column(String(7), unique=True)
    category: Mapped[str] = mapped_column(String(16), default="citizen")
    document_type: Mapped[str | None] = mapped_column(String(32))
    document_country: Mapped[str | None] = mapped_column(String(3))
    document_number: Mapped[str | None] = mapped_column(String(32))
    given_name: Mapped[str] = mapped_column(String(200))
    family_name: Mapped[str] = mapped_column(String(200))
    birthdate: Mapped[dt.date | None] = mapped_column(Date)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class LoginSession(Base):
    """A server-side login session (single sign-on), referenced by an opaque cookie value."""

    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    person_id: Mapped[str] = mapped_column(ForeignKey("persons.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    auth_time: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
    acr: Mapped[str] = mapped_column(String(100))
    amr: Mapped[list[str]] = mapped_column(JSON, default=list)
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class RevokedToken(Base):
    """A JWT revoked before its expiry, by its `jti` (RFC 7009 semantics for self-contained tokens).

    Rows are needed only until `expires_at`: after that the token fails on its own `exp`.
    """

    __tablename__ = "revoked_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    revoked_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
    reason: Mapped[str] = mapped_column(String(200))
