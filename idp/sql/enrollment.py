"""Enrollment: one-time activation codes that let a person register a passkey in their own browser.

A registration officer (or the `acar enroll-code` recovery command) issues a code bound to one person. The
person types it on the /enroll page: a correct code opens an enrollment (a short-lived, cookie-bound permission
to register one credential); the code is used up only when that registration succeeds.

Code format: "XXXX-XXXX-XXXX-XXXX-XXXX", 20 symbols of Crockford's base32 (digits and capitals without I, L, O,
U; https://www.crockford.com/base32.html), drawn by `secrets`: 20 x 5 = 100 random bits, all of them secret. Typed
case-insensitively; spaces and dashes are ignored and the look-alikes I, L and O read as 1, 1 and 0 (Crockford's
decoding rule).

No part of the code is public. The row is found by `code_lookup`, the first 64 bits of SHA-256 over the whole
normalized code, and the whole code is then checked against `secret_hash` (scrypt, n=2**14, r=8, p=1, a random
16-byte salt; RFC 7914). The lookup is a filter that leaks nothing about a live code: an attacker who does not
know a code cannot aim it at one, and a stored lookup matches 2**36 other codes, so a database dump still leaves
scrypt to brute-force.

Why guessing is infeasible (the arithmetic): with N live codes, a guess is right with probability N / 2**100, so
a guesser needs 2**100 / N guesses on average. Even a million live codes (N ~ 2**20, far more than the thousands
outstanding nationally) leave 2**80 expected guesses, above the 2**64 required; a guesser allowed a million
attempts per second for a code's whole 72-hour lifetime (~2**38 guesses) wins with probability ~2**-42. This
bound needs no per-code attempt counter, so there is none: a wrong guess names no code, counts against no code,
and so cannot lock a citizen's code (the per-code lockout of ACAR_ACTIVATION_CODE_MAX_ATTEMPTS, which any
stranger could trigger, is gone). Attempts are bounded per client by the rate limiter in front of the route.

No oracle (every refusal is one answer): an unknown, wrong, malformed, revoked, expired, used or elsewhere-open
code raises the same CodeInvalid with the same text, after the same work: one SHA-256, one indexed SELECT and
one scrypt (against `_DUMMY_HASH` when no row matches, so an unknown code costs what a known one does). The
reason a right code was refused is written to the audit trail (enrollment.code_refused) for the registration
office, never shown. One exception: a right, live code of a person who is not active (suspended or deceased) is
refused with PersonNotActive, which says so. Only the holder of the whole code can get that answer, a guesser never
(it comes after the scrypt matched), and it tells the holder what to do; suspending a person revokes their codes, so
this answers only a code that slipped through. Every step of an enrollment opened before the person stopped being
active is refused the same way (`require_active`), and nothing is written.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidKey
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from idp.core.authorize import token_hash
from idp.core.webauthn import PasskeyError, PasskeyService
from idp.sql.models import ActivationCode, Enrollment, Person
from idp.sql.passkeys_store import SqlPasskeyStore
from idp.sql.persons import PersonRecord, PersonService
from storage.audit import record_event
from storage.direct import SessionTransaction

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
"""Crockford's base32: digits and capitals without I, L, O and U (32 symbols, 5 bits each)."""
LOOK_ALIKES = str.maketrans({"I": "1", "L": "1", "O": "0"})
"""Crockford's decoding rule: what a person may type for the symbol it resembles."""
GROUPS = 5
GROUP_LENGTH = 4
CODE_LENGTH = GROUPS * GROUP_LENGTH
"""20 symbols: 100 bits (see the module docstring for why that is enough)."""
LOOKUP_HEX = 16
"""The lookup keeps 64 bits of SHA-256: unique among live codes (a clash between a million codes has odds of
about 2**-25, and issue draws again), yet matched by 2**36 codes each."""
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SCRYPT_LENGTH = 32
SALT_BYTES = 16
_DRAWS = 5
_DUMMY_HASH = "scrypt$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
"""Checked against when no row matches, so an unknown code costs the same scrypt as a known one."""
REFUSED = ("this activation code cannot be used: it is mistyped, expired, already used, replaced by a newer code or "
           "open in another browser; check what you typed, or ask a registration office for a new code")
"""The one answer to every refused code (module docstring: no oracle)."""


# --- errors ---------------------------------------------------------------------------------------------


class EnrollmentError(PasskeyError):
    code = "code_invalid"
    title = "Invalid activation code"


class CodeInvalid(EnrollmentError):
    """Any refused activation code: unknown, wrong, malformed, revoked, expired, used or open in another browser.
    One answer for all (REFUSED), so the answer tells a guesser nothing."""


class CodeUsed(EnrollmentError):
    """An open enrollment's code was used or revoked before its registration completed."""

    code = "code_used"
    title = "Activation code already used"


class PersonNotActive(EnrollmentError):
    """The code's person is suspended or deceased (idp.sql.persons.STATUSES): no passkey is registered for them.
    Suspending a person revokes their codes (PersonService.set_status); this catches a code that slipped through."""

    code = "person_inactive"
    title = "This account cannot be used"
    status_code = 403


NOT_ACTIVE = "the person of this activation code is not active (suspended or deceased): ask a registration office"


class EnrollmentRequired(EnrollmentError):
    code = "enrollment_required"
    title = "Enter your activation code first"
    status_code = 401


# --- records --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EnrollmentPolicy:
    code_lifetime: dt.timedelta
    """ACAR_ACTIVATION_CODE_LIFETIME_HOURS"""
    enrollment_lifetime: dt.timedelta
    """ACAR_ENROLLMENT_LIFETIME_SECONDS"""


@dataclass(frozen=True, slots=True)
class IssuedCode:
    """A new activation code: `code` is shown once and stored only as a hash."""

    code: str
    code_id: str
    """The row's id: random, not part of the code (audit events name it)."""
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
    person_active: bool = True
    """The person's registry status is active now; otherwise `require_active` refuses any step of the enrollment."""


def require_active(enrollment: EnrollmentRecord) -> EnrollmentRecord:
    """The enrollment, if its person is active; PersonNotActive otherwise (nothing written)."""
    if not enrollment.person_active:
        raise PersonNotActive(NOT_ACTIVE)
    return enrollment


@dataclass(frozen=True, slots=True)
class StartedEnrollment:
    cookie: str
    """The value of the enrollment cookie; the database keeps its SHA-256 only."""
    enrollment: EnrollmentRecord
    display_name: str


# --- codes ----------------------------------------------------------------------------------------------


def normalize_code(value: str) -> str:
    """Upper case without spaces and dashes, Crockford's look-alikes read as digits ("abcd efgh-..." ->
    "ABCDEFGH...", "I", "L" -> "1", "O" -> "0"). The result may still be no code (`is_code`)."""
    return "".join(c for c in value.upper() if c not in " -\t").translate(LOOK_ALIKES)


def is_code(value: str) -> bool:
    """A normalized value has the shape of an activation code."""
    return len(value) == CODE_LENGTH and all(c in ALPHABET for c in value)


def format_code(value: str) -> str:
    return "-".join(value[i:i + GROUP_LENGTH] for i in range(0, len(value), GROUP_LENGTH))


def code_lookup(value: str) -> str:
    """The row's lookup key for a normalized code: the first 64 bits of SHA-256, hex (module docstring)."""
    return hashlib.sha256(b"acar activation code\x00" + value.encode()).hexdigest()[:LOOKUP_HEX]


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

    Refusals are EnrollmentErrors (PasskeyErrors) raised after what they must record (the audit event of a right
    code refused): the caller commits on them."""

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
        can no longer complete). Audit enrollment.code_issued names the officer and the row's id, never the
        code."""
        now = self._clock().replace(microsecond=0)
        for _ in range(_DRAWS):
            value = _random(CODE_LENGTH)
            lookup = code_lookup(value)
            taken = (await self._session.execute(select(ActivationCode.id).where(ActivationCode.lookup == lookup))
                     ).first()
            if taken is None:
                break
        else:  # pragma: no cover - 64-bit lookups: a clash is ~2**-25 even with a million codes, five in a row never
            raise RuntimeError("no free activation code lookup")
        secret_hash = await asyncio.to_thread(hash_secret, value)
        revoked = await self._session.execute(update(ActivationCode).where(
            ActivationCode.person_id == person_id, ActivationCode.used_at.is_(None),
            ActivationCode.revoked_at.is_(None)).values(revoked_at=now))
        expires_at = now + self._policy.code_lifetime
        code_id = secrets.token_hex(8)
        self._session.add(ActivationCode(id=code_id, lookup=lookup, person_id=person_id, secret_hash=secret_hash,
                                         issued_by=issued_by[:200], created_at=now, expires_at=expires_at))
        await self._session.flush()
        self._audit("enrollment.code_issued", actor=issued_by[:200], subject=person_id, detail={
            "code_id": code_id, "expires_at": expires_at.isoformat(),
            "revoked_codes": int(revoked.rowcount or 0)})  # type: ignore[attr-defined]
        return IssuedCode(code=format_code(value), code_id=code_id, person_id=person_id, expires_at=expires_at)

    async def redeem(self, code: str) -> StartedEnrollment:
        """Check a typed code and open an enrollment for its person (for the /enroll page).

        Every refusal is CodeInvalid(REFUSED) after one scrypt (module docstring: no oracle). Nothing is written
        for a code that matches no row; a right code that is revoked, used, expired or open in another browser
        writes the audit event enrollment.code_refused with that reason. The code is used up only by `complete`,
        when the passkey registration succeeds."""
        now = self._clock()
        value = normalize_code(code)
        row = None
        if is_code(value):
            row = (await self._session.execute(
                select(ActivationCode).where(ActivationCode.lookup == code_lookup(value))
                .with_for_update().execution_options(populate_existing=True))).scalar_one_or_none()
        matches = await asyncio.to_thread(verify_secret, row.secret_hash if row is not None else _DUMMY_HASH, value)
        if row is None or not matches:
            raise CodeInvalid(REFUSED)
        reason = await self._refusal(row, now)
        if reason is not None:
            self._audit("enrollment.code_refused", actor="anonymous", subject=row.person_id,
                        detail={"code_id": row.id, "reason": reason})
            raise CodeInvalid(REFUSED)
        if await self._status(row.person_id) != "active":  # the holder of a right code learns why, nobody else
            self._audit("enrollment.code_refused", actor="anonymous", subject=row.person_id,
                        detail={"code_id": row.id, "reason": "person_inactive"})
            raise PersonNotActive(NOT_ACTIVE)
        cookie = secrets.token_urlsafe(32)
        record = EnrollmentRecord(id=token_hash(cookie), person_id=row.person_id, activation_code_id=row.id,
                                  csrf_token=secrets.token_urlsafe(24),
                                  expires_at=min(now + self._policy.enrollment_lifetime, row.expires_at))
        self._session.add(Enrollment(id=record.id, person_id=record.person_id, activation_code_id=row.id,
                                     csrf_token=record.csrf_token, created_at=now, expires_at=record.expires_at))
        await self._session.flush()
        self._audit("enrollment.started", actor=row.person_id, subject=row.id, detail={})
        name = await SqlPasskeyStore(SessionTransaction(self._session)).display_name(row.person_id)
        return StartedEnrollment(cookie=cookie, enrollment=record, display_name=name or "")

    async def _refusal(self, row: ActivationCode, now: dt.datetime) -> str | None:
        """Why a right code cannot open an enrollment now (for the audit trail only), or None."""
        if row.revoked_at is not None:
            return "revoked"
        if row.used_at is not None:
            return "used"
        if row.expires_at <= now:
            return "expired"
        live = (await self._session.execute(select(Enrollment.id).where(
            Enrollment.activation_code_id == row.id, Enrollment.completed_at.is_(None),
            Enrollment.expires_at > now))).first()
        return "open_elsewhere" if live is not None else None

    async def _status(self, person_id: str) -> str | None:
        return (await self._session.execute(select(Person.status).where(Person.id == person_id))).scalar_one_or_none()

    async def current(self, cookie: str | None) -> EnrollmentRecord | None:
        """The live enrollment the cookie names: not completed, not expired, its code neither used nor revoked; with
        whether its person is active (`require_active`)."""
        if not cookie or len(cookie) > 100:
            return None
        now = self._clock()
        found = (await self._session.execute(
            select(Enrollment, Person.status)
            .join(ActivationCode, ActivationCode.id == Enrollment.activation_code_id)
            .join(Person, Person.id == Enrollment.person_id).where(
                Enrollment.id == token_hash(cookie), Enrollment.completed_at.is_(None), Enrollment.expires_at > now,
                ActivationCode.used_at.is_(None), ActivationCode.revoked_at.is_(None)))).one_or_none()
        if found is None:
            return None
        row, status = found
        return EnrollmentRecord(id=row.id, person_id=row.person_id, activation_code_id=row.activation_code_id,
                                csrf_token=row.csrf_token, expires_at=row.expires_at,
                                person_active=status == "active")

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
