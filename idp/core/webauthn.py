"""Passkeys: the WebAuthn Level 2 registration and authentication ceremonies (W3C Web Authentication Level 2,
sections 7.1 and 7.2) on py_webauthn, and the level of assurance a passkey login reaches.

Registration asks for a discoverable credential (residentKey required, section 5.4.6) with user verification;
authentication is usernameless (allowCredentials empty, the credential names its user through userHandle), so
the same options serve a button and conditional mediation. Challenges are 32 random bytes kept server-side,
short-lived and single-use (section 13.4.3).

Levels (eIDAS, idp.core.loa; the mapping is argued in docs/assurance.md): a user-verified login with a device-bound
key (not backup eligible) whose attestation chains to a trusted root (idp.core.attestation) reaches high; a
user-verified login otherwise reaches substantial; without user verification, low. The attestation is checked at
registration (WebAuthn Level 2 section 7.1 steps 19-22) and its root re-checked against the trust in force at each
login, so a model later reported compromised in the FIDO Metadata Service drops to substantial. A credential never
reaches more than the level under which it was registered (`max_level`: an activation code from a registration office
is high, a session its own level).
amr values (RFC 8176): "hwk" for a device-bound key, "swk" for a synced one, plus "mfa" (possession and user
verification) or "user" (presence only).

Failures are `PasskeyError`s carrying a machine `code`. One rule makes them safe to commit: a PasskeyError is
raised only before anything a success writes; what the refusal itself wrote (the consumed challenge, a flagged
credential, the failure's audit event) is meant to be committed by the caller. This module knows no database:
storage is the `PasskeyStore` Protocol (idp.sql.passkeys_store implements it).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NoReturn, Protocol

from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import (
    base64url_to_bytes,
    bytes_to_base64url,
    options_to_json_dict,
    parse_attestation_object,
    parse_authentication_credential_json,
    parse_client_data_json,
    parse_registration_credential_json,
)
from webauthn.helpers.cose import COSEAlgorithmIdentifier
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    AttestationFormat,
    AuthenticationCredential,
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    CredentialDeviceType,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from idp.core import loa
from idp.core.attestation import AttestationTrust
from idp.core.errors import IdpError
from idp.core.interfaces import LEVELS, Level
from idp.core.loa import LoginMethod

Purpose = Literal["register", "authenticate"]
CHALLENGE_BYTES = 32
USER_HANDLE_BYTES = 32
MAX_NAME = 100
MAX_CREDENTIAL_ID = 1400
"""base64url of the longest credential id WebAuthn allows (1023 bytes)."""
SUPPORTED_ALGORITHMS: list[COSEAlgorithmIdentifier] = [
    COSEAlgorithmIdentifier.ECDSA_SHA_256,  # -7, what every passkey provider offers
    COSEAlgorithmIdentifier.EDDSA,  # -8
    COSEAlgorithmIdentifier.RSASSA_PKCS1_v1_5_SHA_256,  # -257, Windows Hello
]
"""pubKeyCredParams, in order of preference; a credential of any other algorithm is refused at registration."""
PASSKEY_METHOD = "passkey"


# --- errors ---------------------------------------------------------------------------------------------


class PasskeyError(IdpError):
    """A refused passkey or enrollment step. `code` is the machine code the pages translate.

    Raised only before anything a success would write; what the refusal itself wrote (a consumed challenge, a
    flagged credential, an attempt count, the audit event) must be committed by the caller: `persist` (the units
    of work's commit rule, storage.direct.keeps_writes)."""

    persist = True
    code = "invalid_request"
    title = "Invalid request"
    status_code = 400


class InvalidPasskeyRequest(PasskeyError):
    """The request is malformed: a missing or oversized field, a credential that is not WebAuthn JSON, or a
    ceremony used for another purpose, request or person than it was made for."""


class RequestExpired(PasskeyError):
    code = "request_expired"
    title = "The sign-in request has expired"


class ChallengeExpired(PasskeyError):
    """The ceremony is unknown or older than its lifetime (ACAR_WEBAUTHN_CHALLENGE_SECONDS)."""

    code = "challenge_expired"
    title = "The passkey ceremony has expired"


class ChallengeUsed(PasskeyError):
    """The ceremony's challenge was already presented once (single use, WebAuthn Level 2 section 13.4.3)."""

    code = "challenge_used"
    title = "The passkey ceremony was already used"


class UnknownCredential(PasskeyError):
    code = "unknown_credential"
    title = "Unknown passkey"


class CredentialRemoved(PasskeyError):
    code = "credential_removed"
    title = "This passkey was removed"


class CredentialFlagged(PasskeyError):
    """The credential's signature counter once went backwards: it may have been cloned (WebAuthn Level 2 section
    6.1.1) and never logs in again; its owner removes it and registers a new one."""

    code = "credential_flagged"
    title = "This passkey is blocked"
    status_code = 403


class CounterRegression(CredentialFlagged):
    """This assertion's signature counter did not increase: the login is refused and the credential flagged."""

    code = "counter_regression"


class WrongUser(PasskeyError):
    """The userHandle returned is missing or is not the credential owner's (WebAuthn Level 2 section 7.2, step 6)."""

    code = "wrong_user"
    title = "The passkey does not belong to this account"


class WrongOrigin(PasskeyError):
    """The ceremony comes from an origin the relying party is not configured for: WebAuthn Level 2 section 7.1
    step 9 and section 7.2 step 13 ("Verify that the value of C.origin matches the Relying Party's origin"); the
    passkey endpoints check the request's Origin header against the same list. Reloading cannot cure it: the page
    was opened at an address missing from the configured origins. `received` and `expected` are for the log."""

    code = "wrong_origin"
    title = "The page was opened at an address this service is not configured for"
    status_code = 403
    MAX_LOGGED = 200
    """A received origin is cut to this length before it is kept for the log."""

    def __init__(self, detail: str, *, received: str, expected: Sequence[str]) -> None:
        super().__init__(detail)
        self.received = received[:self.MAX_LOGGED]
        self.expected = tuple(expected)


class VerificationFailed(PasskeyError):
    """The response does not verify: signature, origin, RP ID hash, client data type or challenge, or the
    attestation statement."""

    code = "verification_failed"
    title = "The passkey response could not be verified"


class UserVerificationRequired(PasskeyError):
    code = "user_verification_required"
    title = "User verification is required"


class InsufficientLevel(PasskeyError):
    """The passkey was verified but cannot reach the level of assurance the service asked for (a synced passkey,
    an unattested one, or one registered under a lower level)."""

    code = "insufficient_level"
    title = "This passkey does not reach the required level of assurance"


class CredentialExists(PasskeyError):
    code = "credential_exists"
    title = "This passkey is already registered"
    status_code = 409


class PersonInactive(PasskeyError):
    """The passkey is sound, but its owner's registry status (suspended or deceased) does not allow a login or a
    signing approval (idp.sql.persons.STATUSES)."""

    code = "person_inactive"
    title = "This account cannot sign in"
    status_code = 403


class CredentialNotFound(PasskeyError):
    """Credential management: no such credential of this person (or it was removed)."""

    code = "credential_not_found"
    title = "No such passkey"
    status_code = 404


# --- records and storage --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChallengeRecord:
    id: str
    challenge: bytes
    purpose: Purpose
    user_verification: str
    expires_at: dt.datetime
    person_id: str | None = None
    pending_id: str | None = None
    enrollment_id: str | None = None


@dataclass(frozen=True, slots=True)
class CredentialRecord:
    id: str
    """base64url of the credential id."""
    person_id: str
    public_key: bytes
    sign_count: int
    transports: tuple[str, ...]
    aaguid: str
    attestation_format: str
    user_verified: bool
    attested: bool
    backup_eligible: bool
    backed_up: bool
    name: str
    max_level: Level
    created_at: dt.datetime
    last_used_at: dt.datetime | None = None
    flagged_at: dt.datetime | None = None
    revoked_at: dt.datetime | None = None
    owner_handle: bytes | None = None
    """The WebAuthn user handle of the owner (read with the credential, for the userHandle check)."""
    attestation_root: str | None = None
    """SHA-256 fingerprint of the trusted root the attestation chained to at registration (None: not attested)."""
    owner_status: str = "active"
    """The owner's registry status (read with the credential): only an active person's passkey logs in."""


class PasskeyStore(Protocol):
    """Storage of the ceremonies, in the caller's unit of work (methods flush; api/ commits)."""

    async def user_handle(self, person_id: str, *, create: bool) -> bytes | None: ...
    """The person's WebAuthn user handle; with `create`, a random one is made on first use."""
    async def display_name(self, person_id: str) -> str | None: ...
    async def save_challenge(self, record: ChallengeRecord) -> None: ...
    async def consume_challenge(self, challenge_id: str, now: dt.datetime) -> ChallengeRecord | None: ...
    """Mark the challenge used and return it; None when it is unknown or was used before (atomic)."""
    async def challenge_known(self, challenge_id: str) -> bool: ...
    async def credentials(self, person_id: str) -> list[CredentialRecord]: ...
    """The person's credentials that are not removed (flagged ones included), oldest first."""
    async def get_credential(self, credential_id: str) -> CredentialRecord | None: ...
    """The credential with its owner's user handle (`owner_handle`)."""
    async def add_credential(self, record: CredentialRecord) -> None: ...
    async def record_use(self, credential_id: str, *, expected_count: int, sign_count: int, backed_up: bool,
                         now: dt.datetime) -> bool: ...
    """Store a login's counter; False when the credential changed meanwhile (counter, flag, removal): atomic."""
    async def flag_credential(self, credential_id: str, now: dt.datetime) -> bool: ...
    async def rename_credential(self, credential_id: str, name: str) -> bool: ...
    async def revoke_credential(self, credential_id: str, now: dt.datetime) -> bool: ...
    async def audit(self, event_type: str, *, actor: str, subject: str | None = None,
                    detail: Mapping[str, Any] | None = None) -> None: ...


# --- policy and results ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RelyingParty:
    """The WebAuthn relying party (WebAuthn Level 2 section 5.1.2 RP ID; origins compared exactly)."""

    id: str
    name: str
    origins: tuple[str, ...]
    challenge_seconds: int
    attestation: AttestationTrust
    """The attestation roots and FIDO metadata in force (idp.core.attestation); refreshed by housekeeping."""


@dataclass(frozen=True, slots=True)
class Ceremony:
    """Options for navigator.credentials.create()/get() (`options`, the JSON py_webauthn gives) and the id that
    names its server-side challenge."""

    id: str
    options: dict[str, Any]


@dataclass(frozen=True, slots=True)
class PasskeyLogin:
    """A verified passkey login: who, with which credential, and the LoginMethod (level and amr) it counts as."""

    person_id: str
    credential_id: str
    method: LoginMethod
    user_verified: bool


@dataclass(frozen=True, slots=True)
class VerifiedRegistration:
    """A registration response that verified; nothing is stored until `PasskeyService.save`."""

    person_id: str
    credential_id: str
    public_key: bytes
    sign_count: int
    transports: tuple[str, ...]
    aaguid: str
    attestation_format: str
    user_verified: bool
    attested: bool
    backup_eligible: bool
    backed_up: bool
    name: str
    attestation_root: str | None = None


@dataclass(frozen=True, slots=True)
class PasskeyView:
    """A credential as its owner sees it."""

    id: str
    name: str
    level: Level
    synced: bool
    flagged: bool
    transports: tuple[str, ...]
    created_at: dt.datetime
    last_used_at: dt.datetime | None

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "level": self.level, "synced": self.synced, "flagged": self.flagged,
                "transports": list(self.transports), "created_at": self.created_at.isoformat(),
                "last_used_at": self.last_used_at.isoformat() if self.last_used_at else None}


def login_level(*, user_verified: bool, backup_eligible: bool, attested: bool, max_level: Level) -> Level:
    """The level a passkey login reaches (see the module docstring), capped at the credential's max_level.

    `attested`: the credential's attestation chains to a root trusted now. Without it, at most substantial:
    eIDAS Implementing Regulation (EU) 2015/1502 annex 2.2.1 (high) asks the authentication means to be
    designed to protect against duplication and tampering, which only a verified attestation of the model shows."""
    if not user_verified:
        level: Level = "low"
    elif not backup_eligible and attested:
        level = "high"
    else:
        level = "substantial"
    return level if loa.at_least(max_level, level) else max_level


def login_method(level: Level, *, user_verified: bool, backup_eligible: bool) -> LoginMethod:
    """The LoginMethod of a passkey login: its level and RFC 8176 amr values."""
    return LoginMethod(PASSKEY_METHOD, level, ("swk" if backup_eligible else "hwk", "mfa" if user_verified else "user"))


def normalize_name(name: str | None, today: dt.date) -> str:
    """A credential's display name: at most 100 printable characters. A blank one is the date (ISO 8601), words in
    no language: the pages name a passkey in the citizen's language before it gets here (api.passkey_names)."""
    if name is None or not name.strip():
        return today.isoformat()
    name = " ".join(name.split())
    if len(name) > MAX_NAME or not name.isprintable():
        raise InvalidPasskeyRequest(f"the passkey name must be at most {MAX_NAME} printable characters")
    return name


def audit_ref(credential_id: str) -> str:
    """How the audit trail names a credential (its id; a digest when longer than the subject column)."""
    if len(credential_id) <= 200:
        return credential_id
    return "sha256:" + hashlib.sha256(credential_id.encode()).hexdigest()


@dataclass(slots=True)
class _Attempt:
    """Who a failing ceremony concerned, for its audit event."""

    person_id: str | None = None
    credential_id: str | None = None


# --- the ceremonies -------------------------------------------------------------------------------------


class PasskeyService:
    def __init__(self, rp: RelyingParty, *, clock: Callable[[], dt.datetime]) -> None:
        self.rp = rp
        self._clock = clock

    # authentication (WebAuthn Level 2 section 7.2)

    async def authentication_options(self, store: PasskeyStore, *, pending_id: str,
                                     required_level: Level | None) -> Ceremony:
        """Usernameless options for the pending authorization request (also usable for conditional mediation):
        user verification is required when level high is asked for, preferred otherwise."""
        uv = UserVerificationRequirement.REQUIRED if required_level == "high" else UserVerificationRequirement.PREFERRED
        record = await self._new_challenge(store, "authenticate", uv, pending_id=pending_id)
        options = generate_authentication_options(
            rp_id=self.rp.id, challenge=record.challenge, timeout=self.rp.challenge_seconds * 1000,
            allow_credentials=[], user_verification=uv)
        return Ceremony(record.id, options_to_json_dict(options))

    async def bound_assertion_options(self, store: PasskeyStore, *, person_id: str, binding: str, challenge: bytes,
                                      required_level: Level | None) -> Ceremony:
        """Options for an assertion by `person_id` over a challenge the caller derived from what the assertion
        approves (a signing approval: signing.core.approval) instead of a random one, so that the authenticator's
        signature covers it. `binding` names what is approved (kept as the ceremony's pending_id, at most 64
        characters; never an authorization request's id, so a login cannot use the ceremony nor the other way
        round). allowCredentials lists the person's credentials that can still sign in; user verification is
        required at level high. The ceremony stays single-use and short-lived like a login's."""
        if not 16 <= len(challenge) <= 64 or not 0 < len(binding) <= 64:
            raise InvalidPasskeyRequest("a bound assertion needs a 16 to 64 byte challenge and a binding")
        uv = UserVerificationRequirement.REQUIRED if required_level == "high" else UserVerificationRequirement.PREFERRED
        record = await self._new_challenge(store, "authenticate", uv, person_id=person_id, pending_id=binding,
                                           challenge=challenge)
        usable = [c for c in await store.credentials(person_id) if c.flagged_at is None and c.revoked_at is None]
        options = generate_authentication_options(
            rp_id=self.rp.id, challenge=record.challenge, timeout=self.rp.challenge_seconds * 1000,
            allow_credentials=[PublicKeyCredentialDescriptor(id=base64url_to_bytes(c.id),
                                                             transports=_transports(c.transports)) for c in usable],
            user_verification=uv)
        return Ceremony(record.id, options_to_json_dict(options))

    async def verify_bound_assertion(self, store: PasskeyStore, *, ceremony_id: str, person_id: str, binding: str,
                                     credential: Mapping[str, Any], required_level: Level | None) -> PasskeyLogin:
        """Verify an assertion (AuthenticationResponseJSON) made for `bound_assertion_options`: every check of a
        login (signature over the stored challenge, origin, RP ID hash, counter, user verification and the level,
        the credential usable and its userHandle its owner's), plus the ceremony's binding and the credential
        belonging to `person_id` (WrongUser). Recorded as webauthn.assertion (or webauthn.assertion_failed with
        its code); the counter is stored as a login's is. The caller checks what the challenge was derived from."""
        attempt = _Attempt(person_id=person_id)
        try:
            verified = await self._authenticate(store, ceremony_id=ceremony_id, pending_id=binding,
                                                credential=credential, required_level=required_level,
                                                attempt=attempt, person_id=person_id)
        except PasskeyError as exc:
            await store.audit("webauthn.assertion_failed", actor=person_id,
                              subject=audit_ref(attempt.credential_id) if attempt.credential_id else None,
                              detail={"code": exc.code, "binding": binding})
            raise
        await store.audit("webauthn.assertion", actor=person_id, subject=audit_ref(verified.credential_id),
                          detail={"level": verified.method.level, "binding": binding})
        return verified

    async def verify_authentication(self, store: PasskeyStore, *, ceremony_id: str, pending_id: str,
                                    credential: Mapping[str, Any], required_level: Level | None) -> PasskeyLogin:
        """Verify an assertion (AuthenticationResponseJSON) for the pending request `pending_id`.

        The ceremony's challenge is consumed by this call whatever its outcome: a second attempt needs new
        options. On success the credential's counter, last use and backup state are stored and a
        webauthn.login event recorded. On refusal a PasskeyError is raised after recording webauthn.login_failed
        (detail: its code); a signature counter that did not increase also flags the credential for good
        (webauthn.counter_regression). Nothing else is written on refusal.
        """
        attempt = _Attempt()
        try:
            login = await self._authenticate(store, ceremony_id=ceremony_id, pending_id=pending_id,
                                            credential=credential, required_level=required_level, attempt=attempt)
        except PasskeyError as exc:
            await store.audit("webauthn.login_failed", actor=attempt.person_id or "anonymous",
                        subject=audit_ref(attempt.credential_id) if attempt.credential_id else None,
                        detail={"code": exc.code})
            raise
        await store.audit("webauthn.login", actor=login.person_id, subject=audit_ref(login.credential_id),
                    detail={"level": login.method.level, "amr": list(login.method.amr)})
        return login

    async def _authenticate(self, store: PasskeyStore, *, ceremony_id: str, pending_id: str,
                            credential: Mapping[str, Any], required_level: Level | None,
                            attempt: _Attempt, person_id: str | None = None) -> PasskeyLogin:
        record = await self._consume(store, ceremony_id, "authenticate")
        if record.pending_id != pending_id or record.person_id != person_id:
            raise InvalidPasskeyRequest("this passkey ceremony belongs to another sign-in request")
        parsed, stored = await self._credential_of(store, credential, attempt, identified=person_id)
        self._check_client_origin(parsed.response.client_data_json)
        try:
            verified = verify_authentication_response(
                credential=parsed, expected_challenge=record.challenge, expected_rp_id=self.rp.id,
                expected_origin=list(self.rp.origins), credential_public_key=stored.public_key,
                credential_current_sign_count=0,  # the counter is checked below, after the signature
                require_user_verification=False,  # checked below, with its own error code
            )
        except WebAuthnException as exc:
            raise VerificationFailed(f"the passkey response could not be verified: {exc}") from None
        now = self._clock()
        if (verified.new_sign_count > 0 or stored.sign_count > 0) and verified.new_sign_count <= stored.sign_count:
            await self._flag(store, stored, verified.new_sign_count, now)
        if record.user_verification == UserVerificationRequirement.REQUIRED and not verified.user_verified:
            raise UserVerificationRequired("this sign-in needs user verification (PIN or biometrics)")
        if stored.owner_status != "active":  # told only to the passkey's holder: after its signature verified
            raise PersonInactive(f"the account of this passkey's owner is {stored.owner_status}: it cannot sign in "
                                 "or approve; contact a registration office")
        backup_eligible = stored.backup_eligible or (
            verified.credential_device_type == CredentialDeviceType.MULTI_DEVICE)
        attested = self.rp.attestation.current().trusts(stored.aaguid, stored.attestation_root)
        level = login_level(user_verified=verified.user_verified, backup_eligible=backup_eligible,
                            attested=attested, max_level=stored.max_level)
        if not loa.at_least(level, required_level):
            if not verified.user_verified:
                raise UserVerificationRequired(f"level {required_level} needs user verification (PIN or biometrics)")
            raise InsufficientLevel(f"this passkey reaches level {level}; the service asks for {required_level}")
        if not await store.record_use(stored.id, expected_count=stored.sign_count,
                                      sign_count=verified.new_sign_count, backed_up=verified.credential_backed_up,
                                      now=now):
            # changed meanwhile: removed, flagged, or used (its counter moved on)
            current = _usable(await store.get_credential(stored.id))
            await self._flag(store, current, verified.new_sign_count, now)
        return PasskeyLogin(person_id=stored.person_id, credential_id=stored.id,
                            method=login_method(level, user_verified=verified.user_verified,
                                                backup_eligible=backup_eligible),
                            user_verified=verified.user_verified)

    def _check_client_origin(self, client_data_json: bytes) -> None:
        """WrongOrigin when clientDataJSON names an origin other than the relying party's (WebAuthn Level 2 section
        7.1 step 9, section 7.2 step 13), told apart from other verification failures so that it can be shown
        as what it is. Unreadable client data is left to py_webauthn's verification."""
        try:
            received = parse_client_data_json(client_data_json).origin
        except RecursionError:  # "[[[[...": json.loads past the recursion limit, and py_webauthn's verification with it
            raise VerificationFailed("the passkey response's clientDataJSON is JSON nested too deeply (RFC 8259 "
                                     "section 9)") from None
        except (WebAuthnException, ValueError, TypeError):
            return
        if received not in self.rp.origins:
            raise WrongOrigin(f"the passkey response comes from {received[:WrongOrigin.MAX_LOGGED]}, an origin this "
                              "service is not configured for", received=received, expected=self.rp.origins)

    async def _credential_of(self, store: PasskeyStore, credential: Mapping[str, Any], attempt: _Attempt,
                             identified: str | None = None) -> tuple[AuthenticationCredential, CredentialRecord]:
        """The assertion and its registered credential, which must be usable and owned by the userHandle's user
        (WebAuthn Level 2 section 7.2, steps 5 and 6). When the user was identified before the ceremony
        (`identified`, a bound assertion), the credential must be theirs and the userHandle, which an authenticator
        may then leave out, must name them when present."""
        try:
            parsed = parse_authentication_credential_json(dict(credential))
        except (WebAuthnException, ValueError, TypeError):
            raise InvalidPasskeyRequest("the credential is not a WebAuthn authentication response") from None
        credential_id = bytes_to_base64url(parsed.raw_id)
        if parsed.id != credential_id or len(credential_id) > MAX_CREDENTIAL_ID:
            raise InvalidPasskeyRequest("the credential id and rawId differ")
        attempt.credential_id = credential_id
        stored = await store.get_credential(credential_id)
        if stored is None:
            raise UnknownCredential("this passkey is not registered here; sign in another way or register it")
        attempt.person_id = stored.person_id
        _usable(stored)
        if identified is not None and stored.person_id != identified:
            raise WrongUser("this passkey belongs to someone else")
        handle, returned = stored.owner_handle, parsed.response.user_handle
        if returned is None and identified is not None:
            return parsed, stored
        if handle is None or returned is None or not secrets.compare_digest(returned, handle):
            raise WrongUser("the passkey's user handle does not match its owner")
        return parsed, stored

    async def _flag(self, store: PasskeyStore, stored: CredentialRecord, received: int, now: dt.datetime) -> NoReturn:
        """Flag a credential whose counter did not increase, and refuse the login (raises CounterRegression)."""
        await store.flag_credential(stored.id, now)
        await store.audit("webauthn.counter_regression", actor=stored.person_id, subject=audit_ref(stored.id),
                    detail={"stored": stored.sign_count, "received": received})
        raise CounterRegression("this passkey's signature counter went backwards, so it may have been copied; it is "
                                "blocked: remove it and register a new one")

    # registration (WebAuthn Level 2 section 7.1)

    async def registration_options(self, store: PasskeyStore, *, person_id: str,
                                   enrollment_id: str | None = None) -> Ceremony:
        """Creation options for a discoverable, user-verified credential of `person_id`; the person's current
        credentials are excluded. Attestation is "direct" when some model can be attested (trust roots or a FIDO
        metadata BLOB are in force), else "none" (WebAuthn Level 2 section 5.4.7)."""
        handle = await store.user_handle(person_id, create=True)
        assert handle is not None  # noqa: S101 - create=True always returns a handle
        display = await store.display_name(person_id) or "Açar"
        existing = await store.credentials(person_id)
        record = await self._new_challenge(store, "register", UserVerificationRequirement.REQUIRED,
                                           person_id=person_id, enrollment_id=enrollment_id)
        attestation = (AttestationConveyancePreference.DIRECT if self.rp.attestation.current().configured
                       else AttestationConveyancePreference.NONE)
        options = generate_registration_options(
            rp_id=self.rp.id, rp_name=self.rp.name, user_id=handle, user_name=display, user_display_name=display,
            challenge=record.challenge, timeout=self.rp.challenge_seconds * 1000, attestation=attestation,
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=ResidentKeyRequirement.REQUIRED, require_resident_key=True,
                user_verification=UserVerificationRequirement.REQUIRED),
            exclude_credentials=[PublicKeyCredentialDescriptor(id=base64url_to_bytes(c.id),
                                                               transports=_transports(c.transports))
                                 for c in existing],
            supported_pub_key_algs=SUPPORTED_ALGORITHMS,
        )
        return Ceremony(record.id, options_to_json_dict(options))

    async def verify_registration(self, store: PasskeyStore, *, ceremony_id: str, person_id: str,
                                  enrollment_id: str | None, credential: Mapping[str, Any],
                                  name: str | None = None) -> VerifiedRegistration:
        """Verify a registration response (RegistrationResponseJSON) of `person_id`; store nothing yet.

        The ceremony's challenge is consumed by this call whatever its outcome. Refusals are recorded as
        webauthn.registration_failed (detail: code) and raised as PasskeyErrors."""
        display_name = normalize_name(name, self._clock().date())
        try:
            return await self._verify_registration(store, ceremony_id=ceremony_id, person_id=person_id,
                                                   enrollment_id=enrollment_id, credential=credential,
                                                   name=display_name)
        except PasskeyError as exc:
            await store.audit("webauthn.registration_failed", actor=person_id, detail={"code": exc.code})
            raise

    async def _verify_registration(self, store: PasskeyStore, *, ceremony_id: str, person_id: str,
                                   enrollment_id: str | None, credential: Mapping[str, Any],
                                   name: str) -> VerifiedRegistration:
        record = await self._consume(store, ceremony_id, "register")
        if record.person_id != person_id or record.enrollment_id != enrollment_id:
            raise InvalidPasskeyRequest("this passkey ceremony was started for another registration")
        try:
            parsed = parse_registration_credential_json(dict(credential))
        except (WebAuthnException, ValueError, TypeError):
            raise InvalidPasskeyRequest("the credential is not a WebAuthn registration response") from None
        self._check_client_origin(parsed.response.client_data_json)
        try:
            verified = verify_registration_response(
                credential=parsed, expected_challenge=record.challenge, expected_rp_id=self.rp.id,
                expected_origin=list(self.rp.origins), require_user_presence=True,
                require_user_verification=False,  # checked below, with its own error code
                supported_pub_key_algs=SUPPORTED_ALGORITHMS,
            )
        except WebAuthnException as exc:
            raise VerificationFailed(f"the passkey registration could not be verified: {exc}") from None
        if not verified.user_verified:
            raise UserVerificationRequired("registering a passkey needs user verification (PIN or biometrics)")
        credential_id = bytes_to_base64url(verified.credential_id)
        if len(credential_id) > MAX_CREDENTIAL_ID:
            raise InvalidPasskeyRequest("the credential id is longer than WebAuthn allows")
        if await store.get_credential(credential_id) is not None:
            raise CredentialExists("this passkey is already registered")
        transports = tuple(t.value for t in parsed.response.transports or ())
        root = self._attestation_root(verified.fmt, verified.aaguid, verified.attestation_object)
        return VerifiedRegistration(
            person_id=person_id, credential_id=credential_id, public_key=verified.credential_public_key,
            sign_count=verified.sign_count, transports=transports, aaguid=verified.aaguid,
            attestation_format=_format_name(verified.fmt), user_verified=verified.user_verified,
            attested=root is not None, attestation_root=root,
            backup_eligible=verified.credential_device_type == CredentialDeviceType.MULTI_DEVICE,
            backed_up=verified.credential_backed_up, name=name)

    def _attestation_root(self, fmt: AttestationFormat, aaguid: str, attestation_object: bytes) -> str | None:
        """The trusted root (fingerprint) of a verified attestation statement's x5c chain, or None.

        verify_registration_response has already verified the statement's signature with the x5c leaf
        (WebAuthn Level 2 section 7.1 step 19); here the chain must validate to a root trusted for the AAGUID
        (step 21-22). Self attestation, "none" and unknown roots give None: such a credential is registered,
        at level substantial at most (not refused)."""
        trust = self.rp.attestation.current()
        if fmt == AttestationFormat.NONE or not trust.configured:
            return None
        x5c = parse_attestation_object(attestation_object).att_stmt.x5c
        return trust.attestation_root(aaguid, list(x5c or ()))

    async def save(self, store: PasskeyStore, verified: VerifiedRegistration, *, max_level: Level,
                   actor: str) -> PasskeyView:
        """Store a verified registration (webauthn.registered); `max_level` caps what it ever logs in at."""
        now = self._clock()
        record = CredentialRecord(
            id=verified.credential_id, person_id=verified.person_id, public_key=verified.public_key,
            sign_count=verified.sign_count, transports=verified.transports, aaguid=verified.aaguid,
            attestation_format=verified.attestation_format, user_verified=verified.user_verified,
            attested=verified.attested, backup_eligible=verified.backup_eligible, backed_up=verified.backed_up,
            name=verified.name, max_level=max_level, created_at=now, attestation_root=verified.attestation_root)
        await store.add_credential(record)
        view = self._view(record)
        await store.audit("webauthn.registered", actor=actor, subject=audit_ref(record.id), detail={
            "person": verified.person_id, "aaguid": verified.aaguid, "format": verified.attestation_format,
            "attested": verified.attested, "attestation_root": verified.attestation_root,
            "backup_eligible": verified.backup_eligible, "level": view.level})
        return view

    # the owner's credential management

    async def credentials(self, store: PasskeyStore, person_id: str) -> list[PasskeyView]:
        return [self._view(c) for c in await store.credentials(person_id)]

    async def rename(self, store: PasskeyStore, person_id: str, credential_id: str, name: str) -> PasskeyView:
        new_name = normalize_name(name, self._clock().date())
        stored = await self._owned(store, person_id, credential_id)
        await store.rename_credential(stored.id, new_name)
        await store.audit("webauthn.renamed", actor=person_id, subject=audit_ref(stored.id), detail={"name": new_name})
        return self._view(stored, name=new_name)

    async def remove(self, store: PasskeyStore, person_id: str, credential_id: str, *, actor: str | None = None,
                     reason: str = "removed by its owner") -> None:
        """Remove a credential for good: it never logs in again (webauthn.removed)."""
        stored = await self._owned(store, person_id, credential_id)
        await self._revoke(store, stored, actor=actor or person_id, reason=reason)

    async def remove_all(self, store: PasskeyStore, person_id: str, *, actor: str, reason: str) -> int:
        """Remove every credential of a person (recovery through a registration office)."""
        credentials = await store.credentials(person_id)
        for c in credentials:
            await self._revoke(store, c, actor=actor, reason=reason)
        return len(credentials)

    async def _revoke(self, store: PasskeyStore, stored: CredentialRecord, *, actor: str, reason: str) -> None:
        await store.revoke_credential(stored.id, self._clock())
        await store.audit("webauthn.removed", actor=actor, subject=audit_ref(stored.id),
                    detail={"person": stored.person_id, "reason": reason})

    async def _owned(self, store: PasskeyStore, person_id: str, credential_id: str) -> CredentialRecord:
        stored = await store.get_credential(credential_id) if len(credential_id) <= MAX_CREDENTIAL_ID else None
        if stored is None or stored.person_id != person_id or stored.revoked_at is not None:
            raise CredentialNotFound("you have no such passkey")
        return stored

    def _view(self, c: CredentialRecord, *, name: str | None = None) -> PasskeyView:
        attested = self.rp.attestation.current().trusts(c.aaguid, c.attestation_root)
        level = login_level(user_verified=c.user_verified, backup_eligible=c.backup_eligible, attested=attested,
                            max_level=c.max_level)
        return PasskeyView(id=c.id, name=name or c.name, level=level, synced=c.backup_eligible,
                           flagged=c.flagged_at is not None, transports=c.transports, created_at=c.created_at,
                           last_used_at=c.last_used_at)

    # challenges

    async def _new_challenge(self, store: PasskeyStore, purpose: Purpose, uv: UserVerificationRequirement, *,
                             person_id: str | None = None, pending_id: str | None = None,
                             enrollment_id: str | None = None, challenge: bytes | None = None) -> ChallengeRecord:
        record = ChallengeRecord(
            id=secrets.token_urlsafe(24), challenge=challenge or secrets.token_bytes(CHALLENGE_BYTES), purpose=purpose,
            user_verification=uv.value, expires_at=self._clock() + dt.timedelta(seconds=self.rp.challenge_seconds),
            person_id=person_id, pending_id=pending_id, enrollment_id=enrollment_id)
        await store.save_challenge(record)
        return record

    async def _consume(self, store: PasskeyStore, ceremony_id: str, purpose: Purpose) -> ChallengeRecord:
        """Mark the ceremony's challenge used (atomically) and return it, or raise why it cannot be used."""
        now = self._clock()
        record = await store.consume_challenge(ceremony_id, now) if 0 < len(ceremony_id) <= 64 else None
        if record is None:
            if len(ceremony_id) <= 64 and await store.challenge_known(ceremony_id):
                raise ChallengeUsed("this passkey ceremony was already used; start again")
            raise ChallengeExpired("this passkey ceremony has expired; start again")
        if record.purpose != purpose:
            raise InvalidPasskeyRequest("this passkey ceremony is for another purpose")
        if record.expires_at <= now:
            raise ChallengeExpired("this passkey ceremony has expired; start again")
        return record


def _usable(stored: CredentialRecord | None) -> CredentialRecord:
    """The credential, unless it was removed (or is gone) or flagged."""
    if stored is None or stored.revoked_at is not None:
        raise CredentialRemoved("this passkey was removed from your account")
    if stored.flagged_at is not None:
        raise CredentialFlagged("this passkey was blocked because it may have been copied; remove it and "
                                "register a new one")
    return stored


def _format_name(fmt: AttestationFormat | str) -> str:
    """py_webauthn passes the attestation format on as parsed (a str, or its enum)."""
    return fmt.value if isinstance(fmt, AttestationFormat) else str(fmt)


_TRANSPORTS = {t.value: t for t in AuthenticatorTransport}


def _transports(values: Sequence[str]) -> list[AuthenticatorTransport] | None:
    return [_TRANSPORTS[v] for v in values if v in _TRANSPORTS] or None


def max_level_of(value: object) -> Level:
    """A stored max_level (unknown values count as low: fail closed)."""
    return value if value in LEVELS else "low"
