"""The audit trail: an append-only log of security-relevant events (issuance, login, revocation, ...).

Events carry who acted, on what, and a small JSON detail; never a token, secret or private key.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import JSON, String
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from storage.base import Base, UTCDateTime, utcnow


class AuditEvent(Base):
    __tablename__ = "audit_events"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=lambda: str(uuid.uuid4()))
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    event_type: Mapped[str] = mapped_column(String(64), index=True)
    actor: Mapped[str] = mapped_column(String(200))
    subject: Mapped[str | None] = mapped_column(String(200), index=True)
    request_id: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


def record_event(
    session: AsyncSession,
    event_type: str,
    *,
    actor: str,
    subject: str | None = None,
    detail: dict[str, Any] | None = None,
    request_id: str | None = None,
    clock: dt.datetime | None = None,
) -> AuditEvent:
    """Add an audit event to the caller's unit of work (it is written when the caller commits)."""
    event = AuditEvent(
        event_type=event_type,
        actor=actor,
        subject=subject,
        detail=detail or {},
        request_id=request_id,
        occurred_at=clock or utcnow(),
    )
    session.add(event)
    return event
