"""Enrollment: one-time activation codes that let a person register a passkey in their own browser.

A registration officer (or the `acar enroll-code` recovery command) issues a code bound to one person. The
person types it on the /enroll page: a correct code opens an enrollment (a short-lived, cookie-bound permission
to register one credential); the code is used up only when that registration succeeds.

Code format: "XXXX-XXXX-XXXX-XXXX" over a 32-letter alphabet without 0, O, 1 and I. The first group is the
row's public id, the other three the secret (60 bits), stored as scrypt (n=2**14, r=8, p=1, random salt) and
guarded by an attempt limit, so the secret cannot be guessed online.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidKey
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from idp.core.authorize import token_hash
from idp.core.webauthn import PasskeyError, PasskeyService
from idp.sql.models import ActivationCode, Enrollment
from idp.sql.passkeys_store import SqlPasskeyStore
from idp.sql.persons import PersonRecord, PersonService
from storage.audit import record_event
from storage.direct import SessionTransaction

ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
"""Base32 without the look-alikes 0/O and 1/I."""
GROUPS = 4
GROUP_LENGTH = 4
CODE_LENGTH = GROUPS * GROUP_LENGTH
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SCRYPT_LENGTH = 32
SALT_BYTES = 16
_ID_TRIES = 50
_DUMMY_HASH = "scrypt$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
"""Checked against when the id is unknown, so a wrong id costs the same time as a wrong secret."""


# --- errors ---------------------------------------------------------------------------------------------


class EnrollmentError(PasskeyError):
    code = "code_invalid"
    title = "Invalid activation code"


class CodeInvalid(EnrollmentError):
    """The code is malformed, unknown or its secret is wrong (a wrong secret counts as an attempt)."""


class CodeLocked(EnrollmentError):
    code = "code_locked"
    title = "Activation code locked"
    status_code = 403


class CodeExpired(EnrollmentError):
    code = "code_expired"
    title = "Activation code expired"


class CodeUsed(EnrollmentError):
    code = "code_used"
    title = "Activation code already used"


class CodeRevoked(EnrollmentError):
    code = "code_revoked"
    title = "Activation code replaced"


class EnrollmentRequired(EnrollmentError):
    code = "enrollment_required"
    title = "Enter your activation code first"
    status_code = 401


LOCKED = ("this activation code is locked after too many wrong attempts; ask the registration office for a new "
          "code")


# --- records --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EnrollmentPolicy:
    code_lifetime: dt.timedelta
    """ACAR_ACTIVATION_CODE_LIFETIME_HOURS"""
    max_attempts: int
    """ACAR_ACTIVATION_CODE_MAX_ATTEMPTS"""
    enrollment_lifetime: dt.timedelta
    """ACAR_ENROLLMENT_LIFETIME_SECONDS"""


@dataclass(frozen=True, slots=True)
class IssuedCode:
    """A new activation code: `code` is shown once and stored only as a hash."""

    code: str
    code_id: str
    person_id: str
    expires_at: dt.datetime


@dataclass(frozen=True, slots=True)
class EnrollmentRecord:
    id: str
    """SHA-256 (hex) of the enrollment cookie value (idp.core.authorize.token_hash)."""
    person_id: str
    activation_code_id: str
    csrf_token: str
    expires_at: dt.datetime


@dataclass(frozen=True, slots=True)
class StartedEnrollment:
    cookie: str
    """The value of the enrollment cookie; the database keeps its SHA-256 only."""
    enrollment: EnrollmentRecord
    display_name: str


# --- codes ----------------------------------------------------------------------------------------------


def normalize_code(value: str) -> str:
    """Upper case without spaces and dashes ("abcd efgh-..." -> "ABCDEFGH...")."""
    return "".join(c for c in value.upper() if c not in " -\t")


def format_code(value: str) -> str:
    return "-".join(value[i:i + GROUP_LENGTH] for i in range(0, len(value), GROUP_LENGTH))


def _random(length: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def _scrypt(salt: bytes) -> Scrypt:
    return Scrypt(salt=salt, length=SCRYPT_LENGTH, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)


def hash_secret(secret: str) -> str:
    """"scrypt$<salt b64>$<hash b64>" (standard base64)."""
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(salt).derive(secret.encode())
    return f"scrypt${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_secret(stored: str, secret: str) -> bool:
    try:
        scheme, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        _scrypt(base64.b64decode(salt)).verify(secret.encode(), base64.b64decode(digest))
    except (ValueError, InvalidKey):
        return False
    return True


class EnrollmentService:
    """Activation codes and enrollments; flushes into the caller's unit of work, never commits.

    Refusals are EnrollmentErrors (PasskeyErrors) raised after what they must record (attempt count, lock, audit
    event): the caller commits on them."""

    def __init__(self, session: AsyncSession, policy: EnrollmentPolicy, *, clock: Callable[[], dt.datetime],
                 request_id: str | None = None) -> None:
        self._session = session
        self._policy = policy
        self._clock = clock
        self._request_id = request_id

    def _audit(self, event_type: str, *, actor: str, subject: str | None, detail: dict[str, object]) -> None:
        record_event(self._session, event_type, actor=actor, subject=subject, detail=detail,
                     request_id=self._request_id)

    async def issue(self, person_id: str, *, issued_by: str) -> IssuedCode:
        """A new code for the person; their earlier unused codes are revoked (and enrollments opened with them
        can no longer complete). Audit enrollment.code_issued names the officer, never the code."""
        now = self._clock().replace(microsecond=0)
        for _ in range(_ID_TRIES):
            code_id = _random(GROUP_LENGTH)
            if await self._session.get(ActivationCode, code_id) is None:
                break
        else:  # pragma: no cover - 2**20 ids; only a table nearly full of unexpired codes gets here
            raise RuntimeError("no free activation code id; purge expired codes")
        secret = _random(CODE_LENGTH - GROUP_LENGTH)
        secret_hash = await asyncio.to_thread(hash_secret, secret)
        revoked = await self._session.execute(update(ActivationCode).where(
            ActivationCode.person_id == person_id, ActivationCode.used_at.is_(None),
            ActivationCode.revoked_at.is_(None)).values(revoked_at=now))
        expires_at = now + self._policy.code_lifetime
        self._session.add(ActivationCode(id=code_id, person_id=person_id, secret_hash=secret_hash,
                                         issued_by=issued_by[:200], created_at=now, expires_at=expires_at,
                                         max_attempts=self._policy.max_attempts))
        await self._session.flush()
        self._audit("enrollment.code_issued", actor=issued_by[:200], subject=person_id, detail={
            "code_id": code_id, "expires_at": expires_at.isoformat(),
            "revoked_codes": int(revoked.rowcount or 0)})  # type: ignore[attr-defined]
        return IssuedCode(code=format_code(code_id + secret), code_id=code_id, person_id=person_id,
                          expires_at=expires_at)

    async def redeem(self, code: str) -> StartedEnrollment:
        """Check a typed code and open an enrollment for its person (for the /enroll page).

        Unknown or malformed: code_invalid, nothing written. Wrong secret: one more attempt (code_invalid), and at
        the limit the code locks (code_locked). With the right secret: code_revoked, code_used, code_expired, or
        code_used again when the code is already open in another browser. The code is used up only by
        `complete`, when the passkey registration succeeds."""
        now = self._clock()
        value = normalize_code(code)
        if len(value) != CODE_LENGTH or any(c not in ALPHABET for c in value):
            await asyncio.to_thread(verify_secret, _DUMMY_HASH, value)
            raise CodeInvalid("this is not a valid activation code; check what you typed")
        code_id, secret = value[:GROUP_LENGTH], value[GROUP_LENGTH:]
        row = (await self._session.execute(select(ActivationCode).where(ActivationCode.id == code_id)
                                           .with_for_update().execution_options(populate_existing=True))
               ).scalar_one_or_none()
        if row is None:
            await asyncio.to_thread(verify_secret, _DUMMY_HASH, secret)
            raise CodeInvalid("this is not a valid activation code; check what you typed")
        if row.locked_at is not None:
            raise CodeLocked(LOCKED)
        if not await asyncio.to_thread(verify_secret, row.secret_hash, secret):
            await self._wrong_secret(row, now)
        if row.revoked_at is not None:
            raise CodeRevoked("a newer activation code was issued for you; use that one")
        if row.used_at is not None:
            raise CodeUsed("this activation code was already used; ask the registration office for a new code")
        if row.expires_at <= now:
            raise CodeExpired("this activation code has expired; ask the registration office for a new code")
        live = (await self._session.execute(select(Enrollment.id).where(
            Enrollment.activation_code_id == code_id, Enrollment.completed_at.is_(None),
            Enrollment.expires_at > now))).first()
        if live is not None:
            raise CodeUsed("this activation code is being used in another browser; finish there, or wait "
                           f"{int(self._policy.enrollment_lifetime.total_seconds() // 60)} minutes and try again")
        cookie = secrets.token_urlsafe(32)
        record = EnrollmentRecord(id=token_hash(cookie), person_id=row.person_id, activation_code_id=code_id,
                                  csrf_token=secrets.token_urlsafe(24),
                                  expires_at=min(now + self._policy.enrollment_lifetime, row.expires_at))
        self._session.add(Enrollment(id=record.id, person_id=record.person_id, activation_code_id=code_id,
                                     csrf_token=record.csrf_token, created_at=now, expires_at=record.expires_at))
        await self._session.flush()
        self._audit("enrollment.started", actor=row.person_id, subject=code_id, detail={})
        name = await SqlPasskeyStore(SessionTransaction(self._session)).display_name(row.person_id)
        return StartedEnrollment(cookie=cookie, enrollment=record, display_name=name or "")

    async def _wrong_secret(self, row: ActivationCode, now: dt.datetime) -> None:
        """Count a wrong secret (atomically) and refuse; lock the code at its attempt limit."""
        attempts = (await self._session.execute(update(ActivationCode).where(
            ActivationCode.id == row.id, ActivationCode.locked_at.is_(None))
            .values(attempts=ActivationCode.attempts + 1).returning(ActivationCode.attempts))).scalar_one_or_none()
        if attempts is None:
            raise CodeLocked(LOCKED)
        if attempts >= row.max_attempts:
            await self._session.execute(update(ActivationCode).where(ActivationCode.id == row.id)
                                        .values(locked_at=now))
            self._audit("enrollment.code_locked", actor="anonymous", subject=row.person_id,
                        detail={"code_id": row.id, "attempts": attempts})
            raise CodeLocked(LOCKED)
        self._audit("enrollment.code_failed", actor="anonymous", subject=row.person_id,
                    detail={"code_id": row.id, "attempts": attempts})
        left = row.max_attempts - attempts
        raise CodeInvalid(f"this activation code is not right; {left} attempt{'s' if left != 1 else ''} left")

    async def current(self, cookie: str | None) -> EnrollmentRecord | None:
        """The live enrollment the cookie names: not completed, not expired, its code neither used nor revoked."""
        if not cookie or len(cookie) > 100:
            return None
        now = self._clock()
        row = (await self._session.execute(
            select(Enrollment).join(ActivationCode, ActivationCode.id == Enrollment.activation_code_id).where(
                Enrollment.id == token_hash(cookie), Enrollment.completed_at.is_(None), Enrollment.expires_at > now,
                ActivationCode.used_at.is_(None), ActivationCode.revoked_at.is_(None)))).scalar_one_or_none()
        if row is None:
            return None
        return EnrollmentRecord(id=row.id, person_id=row.person_id, activation_code_id=row.activation_code_id,
                                csrf_token=row.csrf_token, expires_at=row.expires_at)

    async def complete(self, enrollment: EnrollmentRecord, *, credential: str) -> None:
        """The enrollment registered its credential: use the code up (single use) and close the enrollment.
        Raises CodeUsed, writing nothing, when the code was used or revoked meanwhile."""
        now = self._clock()
        used = await self._session.execute(update(ActivationCode).where(
            ActivationCode.id == enrollment.activation_code_id, ActivationCode.used_at.is_(None),
            ActivationCode.revoked_at.is_(None)).values(used_at=now))
        if used.rowcount != 1:  # type: ignore[attr-defined]
            raise CodeUsed("this activation code was already used; ask the registration office for a new code")
        await self._session.execute(update(Enrollment).where(Enrollment.id == enrollment.id).values(completed_at=now))
        self._audit("enrollment.completed", actor=enrollment.person_id, subject=enrollment.activation_code_id,
                    detail={"credential": credential})


async def issue_for_fin(session: AsyncSession, policy: EnrollmentPolicy, passkeys: PasskeyService, *, fin: str,
                        issued_by: str, revoke_credentials: bool, clock: Callable[[], dt.datetime],
                        request_id: str | None = None) -> tuple[PersonRecord, IssuedCode, int]:
    """Issue a code for the person with this FIN (InvalidIdentifier, PersonNotFound otherwise); for recovery,
    optionally remove every credential they have first (each audited as webauthn.removed). Returns the person, the
    code and the number of credentials removed."""
    person = await PersonService(session).get_by_fin(fin)
    removed = 0
    if revoke_credentials:
        tx = SessionTransaction(session)
        removed = await passkeys.remove_all(SqlPasskeyStore(tx, request_id=request_id), person.id,
                                            actor=issued_by, reason="recovery: new activation code")
        await tx.flush()  # the removals' audit events, into the caller's transaction
    issued = await EnrollmentService(session, policy, clock=clock, request_id=request_id).issue(
        person.id, issued_by=issued_by)
    return person, issued, removed
