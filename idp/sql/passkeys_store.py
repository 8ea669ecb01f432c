"""`PasskeyStore` (idp.core.webauthn) in SQL: one instance per request, on its unit of work (see idp.sql.store)."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Mapping
from typing import Any

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url

from idp.core.webauthn import USER_HANDLE_BYTES, ChallengeRecord, CredentialRecord, max_level_of
from idp.sql.models import ActivationCode, Enrollment, Person, WebAuthnChallenge, WebAuthnCredential, WebAuthnUser
from storage.audit import DeferredAudit
from storage.base import utcnow
from storage.direct import Transaction, insert_ignoring, table

ACTIVATION_CODES_KEPT = dt.timedelta(days=30)
"""Expired activation codes (and their enrollments) are kept this long for support questions, then deleted."""


CHALLENGES = table(WebAuthnChallenge)
CREDENTIALS = table(WebAuthnCredential)
USERS = table(WebAuthnUser)
_ch, _cr, _us, _persons = CHALLENGES.c, CREDENTIALS.c, USERS.c, table(Person).c

USER_HANDLE = select(_us.user_handle).where(_us.person_id == bindparam("person_id"))
ADD_USER = insert_ignoring(USERS, "person_id")
DISPLAY_NAME = select(_persons.given_name, _persons.family_name).where(_persons.id == bindparam("person_id"))
INSERT_CHALLENGE = insert(CHALLENGES)
CONSUME_CHALLENGE = update(CHALLENGES).where(_ch.id == bindparam("id"), _ch.used_at.is_(None)) \
    .values(used_at=bindparam("now")).returning(_ch.id, _ch.challenge, _ch.purpose, _ch.user_verification,
                                                _ch.expires_at, _ch.person_id, _ch.pending_id, _ch.enrollment_id)
CHALLENGE_KNOWN = select(_ch.id).where(_ch.id == bindparam("id"))
_CREDENTIAL_COLUMNS = (_cr.id, _cr.person_id, _cr.public_key, _cr.sign_count, _cr.transports, _cr.aaguid,
                       _cr.attestation_format, _cr.user_verified, _cr.attested, _cr.backup_eligible, _cr.backed_up,
                       _cr.name, _cr.max_level, _cr.created_at, _cr.last_used_at, _cr.flagged_at, _cr.revoked_at,
                       _cr.attestation_root)
CREDENTIALS_OF = select(*_CREDENTIAL_COLUMNS).where(_cr.person_id == bindparam("person_id"), _cr.revoked_at.is_(None)) \
    .order_by(_cr.created_at)
CREDENTIAL = select(*_CREDENTIAL_COLUMNS, _persons.status, _us.user_handle).select_from(
    CREDENTIALS.join(table(Person), _persons.id == _cr.person_id)
    .outerjoin(USERS, _us.person_id == _cr.person_id)).where(_cr.id == bindparam("id"))
INSERT_CREDENTIAL = insert(CREDENTIALS)
RECORD_USE = update(CREDENTIALS).where(
    _cr.id == bindparam("id"), _cr.sign_count == bindparam("expected_count"), _cr.flagged_at.is_(None),
    _cr.revoked_at.is_(None)).values(sign_count=bindparam("sign_count"), backed_up=bindparam("backed_up"),
                                     last_used_at=bindparam("now"))
FLAG = update(CREDENTIALS).where(_cr.id == bindparam("id"), _cr.flagged_at.is_(None)) \
    .values(flagged_at=bindparam("now"))
RENAME = update(CREDENTIALS).where(_cr.id == bindparam("id"), _cr.revoked_at.is_(None)).values(name=bindparam("name"))
REVOKE = update(CREDENTIALS).where(_cr.id == bindparam("id"), _cr.revoked_at.is_(None)) \
    .values(revoked_at=bindparam("now"))


def _challenge(row: tuple[Any, ...]) -> ChallengeRecord:
    id_, challenge, purpose, user_verification, expires_at, person_id, pending_id, enrollment_id = row
    return ChallengeRecord(id=id_, challenge=base64url_to_bytes(challenge),
                           purpose="register" if purpose == "register" else "authenticate",
                           user_verification=user_verification, expires_at=expires_at, person_id=person_id,
                           pending_id=pending_id, enrollment_id=enrollment_id)


def _credential(row: tuple[Any, ...], handle: str | None = None, owner_status: str = "active") -> CredentialRecord:
    (id_, person_id, public_key, sign_count, transports, aaguid, attestation_format, user_verified, attested,
     backup_eligible, backed_up, name, max_level, created_at, last_used_at, flagged_at, revoked_at,
     attestation_root) = row
    return CredentialRecord(
        id=id_, person_id=person_id, public_key=bytes(public_key), sign_count=sign_count,
        transports=tuple(transports or ()), aaguid=aaguid, attestation_format=attestation_format,
        user_verified=bool(user_verified), attested=bool(attested), backup_eligible=bool(backup_eligible),
        backed_up=bool(backed_up), name=name, max_level=max_level_of(max_level), created_at=created_at,
        last_used_at=last_used_at, flagged_at=flagged_at, revoked_at=revoked_at, attestation_root=attestation_root,
        owner_handle=base64url_to_bytes(handle) if handle is not None else None, owner_status=owner_status)


class SqlPasskeyStore:
    """`PasskeyStore` on one unit of work (a storage.direct Transaction or SessionTransaction, as idp.sql.store)."""

    def __init__(self, tx: Transaction, *, request_id: str | None = None) -> None:
        self.tx = tx
        self._audit = DeferredAudit(tx, request_id=request_id)

    async def user_handle(self, person_id: str, *, create: bool) -> bytes | None:
        row = await self.tx.one(USER_HANDLE, person_id=person_id)
        if row is None and create:
            await self.tx.execute(ADD_USER[self.tx.dialect_name], person_id=person_id, created_at=utcnow(),
                                  user_handle=bytes_to_base64url(secrets.token_bytes(USER_HANDLE_BYTES)))
            row = await self.tx.one(USER_HANDLE, person_id=person_id)
        return base64url_to_bytes(row[0]) if row is not None else None

    async def display_name(self, person_id: str) -> str | None:
        row = await self.tx.one(DISPLAY_NAME, person_id=person_id)
        return f"{row[0]} {row[1]}" if row is not None else None

    async def save_challenge(self, record: ChallengeRecord) -> None:
        """Deferred to the unit's COMMIT (storage.direct): the browser learns the ceremony only from the answer, sent
        after the commit. A unit that only saves the challenge (the login's options, after the pending request was
        read outside it) then costs one round trip on PostgreSQL, without BEGIN and COMMIT (Transaction.finish)."""
        self.tx.defer(  # by this store: its statements that read challenges write it first (Transaction.written_for)
            INSERT_CHALLENGE, by=self, id=record.id, challenge=bytes_to_base64url(record.challenge),
            purpose=record.purpose, person_id=record.person_id, pending_id=record.pending_id,
            enrollment_id=record.enrollment_id, user_verification=record.user_verification, created_at=utcnow(),
            expires_at=record.expires_at, used_at=None)

    async def consume_challenge(self, challenge_id: str, now: dt.datetime) -> ChallengeRecord | None:
        await self.tx.written_for(self)
        row = await self.tx.one(CONSUME_CHALLENGE, id=challenge_id, now=now)
        return _challenge(row) if row is not None else None

    async def challenge_known(self, challenge_id: str) -> bool:
        await self.tx.written_for(self)
        return await self.tx.one(CHALLENGE_KNOWN, id=challenge_id) is not None

    async def credentials(self, person_id: str) -> list[CredentialRecord]:
        return [_credential(row) for row in await self.tx.all(CREDENTIALS_OF, person_id=person_id)]

    async def get_credential(self, credential_id: str) -> CredentialRecord | None:
        row = await self.tx.one(CREDENTIAL, id=credential_id)
        return _credential(row[:-2], row[-1], row[-2]) if row is not None else None

    async def add_credential(self, record: CredentialRecord) -> None:
        await self.tx.execute(
            INSERT_CREDENTIAL, id=record.id, person_id=record.person_id, public_key=record.public_key,
            sign_count=record.sign_count, transports=list(record.transports), aaguid=record.aaguid,
            attestation_format=record.attestation_format, user_verified=record.user_verified,
            attested=record.attested, backup_eligible=record.backup_eligible, backed_up=record.backed_up,
            name=record.name, max_level=record.max_level, created_at=record.created_at, last_used_at=None,
            flagged_at=None, revoked_at=None, attestation_root=record.attestation_root)

    async def record_use(self, credential_id: str, *, expected_count: int, sign_count: int, backed_up: bool,
                         now: dt.datetime) -> bool:
        return await self.tx.execute(RECORD_USE, id=credential_id, expected_count=expected_count,
                                     sign_count=sign_count, backed_up=backed_up, now=now) == 1

    async def flag_credential(self, credential_id: str, now: dt.datetime) -> bool:
        return await self.tx.execute(FLAG, id=credential_id, now=now) == 1

    async def rename_credential(self, credential_id: str, name: str) -> bool:
        return await self.tx.execute(RENAME, id=credential_id, name=name) == 1

    async def revoke_credential(self, credential_id: str, now: dt.datetime) -> bool:
        return await self.tx.execute(REVOKE, id=credential_id, now=now) == 1

    async def audit(self, event_type: str, *, actor: str, subject: str | None = None,
                    detail: Mapping[str, Any] | None = None) -> None:
        await self._audit.record(event_type, actor=actor, subject=subject, detail=detail)


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
