"""`PasskeyStore` (idp.webauthn) on SQLAlchemy: one instance per request, flushing into the caller's unit of work."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Mapping
from typing import Any, cast

from sqlalchemy import Table, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url

from idp.models import ActivationCode, Enrollment, Person, WebAuthnChallenge, WebAuthnCredential, WebAuthnUser
from idp.webauthn import USER_HANDLE_BYTES, ChallengeRecord, CredentialRecord, Purpose, max_level_of
from storage.audit import record_event
from storage.base import utcnow
from storage.engine import dialect_insert

ACTIVATION_CODES_KEPT = dt.timedelta(days=30)
"""Expired activation codes (and their enrollments) are kept this long for support questions, then deleted."""


# The hot paths (login options and verification) use Core statements on the tables: about half the CPU of the
# ORM-enabled forms (no identity map, no session synchronisation), which matters at hundreds of logins per second.
CHALLENGES = cast("Table", WebAuthnChallenge.__table__)
CREDENTIALS = cast("Table", WebAuthnCredential.__table__)
USERS = cast("Table", WebAuthnUser.__table__)


def _challenge(row: Any) -> ChallengeRecord:
    purpose: Purpose = "register" if row.purpose == "register" else "authenticate"
    return ChallengeRecord(id=row.id, challenge=base64url_to_bytes(row.challenge), purpose=purpose,
                           user_verification=row.user_verification, expires_at=row.expires_at,
                           person_id=row.person_id, pending_id=row.pending_id, enrollment_id=row.enrollment_id)


def _credential(row: Any, handle: str | None = None) -> CredentialRecord:
    return CredentialRecord(
        id=row.id, person_id=row.person_id, public_key=row.public_key, sign_count=row.sign_count,
        transports=tuple(row.transports or ()), aaguid=row.aaguid, attestation_format=row.attestation_format,
        user_verified=row.user_verified, attested=row.attested, backup_eligible=row.backup_eligible,
        backed_up=row.backed_up, name=row.name, max_level=max_level_of(row.max_level), created_at=row.created_at,
        last_used_at=row.last_used_at, flagged_at=row.flagged_at, revoked_at=row.revoked_at,
        owner_handle=base64url_to_bytes(handle) if handle is not None else None)


class SqlPasskeyStore:
    def __init__(self, session: AsyncSession, *, request_id: str | None = None) -> None:
        self.session = session
        self._request_id = request_id

    async def user_handle(self, person_id: str, *, create: bool) -> bytes | None:
        handle = (await self.session.execute(select(WebAuthnUser.user_handle).where(
            WebAuthnUser.person_id == person_id))).scalar_one_or_none()
        if handle is None and create:
            await self.session.execute(dialect_insert(self.session)(WebAuthnUser).values(
                person_id=person_id, user_handle=bytes_to_base64url(secrets.token_bytes(USER_HANDLE_BYTES)),
                created_at=utcnow()).on_conflict_do_nothing(index_elements=["person_id"]))
            handle = (await self.session.execute(select(WebAuthnUser.user_handle).where(
                WebAuthnUser.person_id == person_id))).scalar_one()
        return base64url_to_bytes(handle) if handle is not None else None

    async def display_name(self, person_id: str) -> str | None:
        row = (await self.session.execute(select(Person.given_name, Person.family_name).where(
            Person.id == person_id))).one_or_none()
        return f"{row.given_name} {row.family_name}" if row is not None else None

    async def save_challenge(self, record: ChallengeRecord) -> None:
        await self.session.execute(insert(CHALLENGES).values(
            id=record.id, challenge=bytes_to_base64url(record.challenge), purpose=record.purpose,
            person_id=record.person_id, pending_id=record.pending_id, enrollment_id=record.enrollment_id,
            user_verification=record.user_verification, created_at=utcnow(), expires_at=record.expires_at))

    async def consume_challenge(self, challenge_id: str, now: dt.datetime) -> ChallengeRecord | None:
        c = CHALLENGES.c
        row = (await self.session.execute(
            update(CHALLENGES).where(c.id == challenge_id, c.used_at.is_(None)).values(used_at=now)
            .returning(c.id, c.challenge, c.purpose, c.user_verification, c.expires_at, c.person_id, c.pending_id,
                       c.enrollment_id))).one_or_none()
        return _challenge(row) if row is not None else None

    async def challenge_known(self, challenge_id: str) -> bool:
        return (await self.session.execute(select(WebAuthnChallenge.id).where(
            WebAuthnChallenge.id == challenge_id))).first() is not None

    async def credentials(self, person_id: str) -> list[CredentialRecord]:
        rows = (await self.session.execute(select(WebAuthnCredential).where(
            WebAuthnCredential.person_id == person_id, WebAuthnCredential.revoked_at.is_(None))
            .order_by(WebAuthnCredential.created_at))).scalars().all()
        return [_credential(r) for r in rows]

    async def get_credential(self, credential_id: str) -> CredentialRecord | None:
        row = (await self.session.execute(
            select(CREDENTIALS, USERS.c.user_handle).select_from(
                CREDENTIALS.outerjoin(USERS, USERS.c.person_id == CREDENTIALS.c.person_id))
            .where(CREDENTIALS.c.id == credential_id))).one_or_none()
        return _credential(row, row.user_handle) if row is not None else None

    async def add_credential(self, record: CredentialRecord) -> None:
        self.session.add(WebAuthnCredential(
            id=record.id, person_id=record.person_id, public_key=record.public_key, sign_count=record.sign_count,
            transports=list(record.transports), aaguid=record.aaguid, attestation_format=record.attestation_format,
            user_verified=record.user_verified, attested=record.attested, backup_eligible=record.backup_eligible,
            backed_up=record.backed_up, name=record.name, max_level=record.max_level, created_at=record.created_at))
        await self.session.flush()

    async def record_use(self, credential_id: str, *, expected_count: int, sign_count: int, backed_up: bool,
                         now: dt.datetime) -> bool:
        c = CREDENTIALS.c
        result = await self.session.execute(update(CREDENTIALS).where(
            c.id == credential_id, c.sign_count == expected_count, c.flagged_at.is_(None), c.revoked_at.is_(None),
        ).values(sign_count=sign_count, backed_up=backed_up, last_used_at=now))
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    async def flag_credential(self, credential_id: str, now: dt.datetime) -> bool:
        result = await self.session.execute(update(WebAuthnCredential).where(
            WebAuthnCredential.id == credential_id, WebAuthnCredential.flagged_at.is_(None)).values(flagged_at=now))
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    async def rename_credential(self, credential_id: str, name: str) -> bool:
        result = await self.session.execute(update(WebAuthnCredential).where(
            WebAuthnCredential.id == credential_id, WebAuthnCredential.revoked_at.is_(None)).values(name=name))
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    async def revoke_credential(self, credential_id: str, now: dt.datetime) -> bool:
        result = await self.session.execute(update(WebAuthnCredential).where(
            WebAuthnCredential.id == credential_id, WebAuthnCredential.revoked_at.is_(None)).values(revoked_at=now))
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    def audit(self, event_type: str, *, actor: str, subject: str | None = None,
              detail: Mapping[str, Any] | None = None) -> None:
        record_event(self.session, event_type, actor=actor, subject=subject,
                     detail=dict(detail) if detail is not None else None, request_id=self._request_id)


async def purge_passkey_rows(session: AsyncSession, now: dt.datetime) -> dict[str, int]:
    """Forget what can no longer be used: expired ceremony challenges, expired enrollments, and activation codes
    a month after they expired (removed credentials stay: their ids must never register again unnoticed)."""
    kept = now - ACTIVATION_CODES_KEPT
    counts = {}
    for name, statement in (
        ("webauthn_challenges", delete(WebAuthnChallenge).where(WebAuthnChallenge.expires_at <= now)),
        ("enrollments", delete(Enrollment).where(Enrollment.expires_at <= now)),
        ("activation_codes", delete(ActivationCode).where(ActivationCode.expires_at <= kept)),
    ):
        result = await session.execute(statement)
        counts[name] = int(result.rowcount or 0)  # type: ignore[attr-defined]
    return counts
