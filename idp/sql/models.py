"""Tables of the identity provider: persons and their login sessions."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    LargeBinary,
    String,
    UniqueConstraint,
)
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
        CheckConstraint("status IN ('active', 'suspended', 'deceased')", name="status"),
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
    status: Mapped[str] = mapped_column(String(16), default="active", server_default="active")
    """active, suspended or deceased: only an active person can log in (idp.sql.registry.LOGIN_STATUSES)."""
    given_name_cyrillic: Mapped[str | None] = mapped_column(String(200))
    family_name_cyrillic: Mapped[str | None] = mapped_column(String(200))
    """The names in Cyrillic script, optional (older documents and registers carry them)."""


class LegalEntity(Base):
    """A legal person or individual entrepreneur, by its VÖEN (keys.identifiers.check_voen)."""

    __tablename__ = "legal_entities"
    __table_args__ = (
        CheckConstraint("status IN ('active', 'liquidated', 'suspended')", name="status"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=lambda: str(uuid.uuid4()))
    voen: Mapped[str] = mapped_column(String(10), unique=True)
    name: Mapped[str] = mapped_column(String(500))
    legal_form: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="active", server_default="active")
    director_person_id: Mapped[str | None] = mapped_column(ForeignKey("persons.id", ondelete="SET NULL"),
                                                           index=True)
    """The entity's director (set by an officer or a system administrator): grants and revokes its mandates from
    the account page while the entity is active. None: no director recorded."""
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Mandate(Base):
    """Person `person_id` may act for entity `entity_id` with `powers` from `valid_from` until `valid_to`
    (exclusive; None: until revoked), granted by an officer or by the entity's director, revocable."""

    __tablename__ = "mandates"
    __table_args__ = (
        CheckConstraint("granted_via IN ('officer', 'director')", name="granted_via"),
        CheckConstraint("valid_to IS NULL OR valid_to > valid_from", name="period"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=lambda: str(uuid.uuid4()))
    person_id: Mapped[str] = mapped_column(ForeignKey("persons.id", ondelete="CASCADE"), index=True)
    entity_id: Mapped[str] = mapped_column(ForeignKey("legal_entities.id", ondelete="CASCADE"), index=True)
    powers: Mapped[list[str]] = mapped_column(JSON, default=list)
    valid_from: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    valid_to: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    granted_by: Mapped[str] = mapped_column(String(200))
    granted_via: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    revoked_by: Mapped[str | None] = mapped_column(String(200))


class StaffRole(Base):
    """A staff role held by a person (issue 16). Every person is a citizen; these roles add powers:

    - `registration_officer`: registers persons, issues activation codes, manages entities and mandates;
    - `agency_admin`: manages the clients of its own agency (`agency_voen`) only;
    - `system_admin`: everything.

    `agency_voen` names the agency (by its VÖEN) for an agency administrator and is empty for the other roles.
    A role is held from `granted_at` until `revoked_at`; revoking keeps the row (the audit trail names it).
    """

    __tablename__ = "staff_roles"
    __table_args__ = (
        CheckConstraint("role IN ('registration_officer', 'agency_admin', 'system_admin')", name="role"),
        CheckConstraint("(role = 'agency_admin') = (agency_voen IS NOT NULL)", name="agency"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=lambda: str(uuid.uuid4()))
    person_id: Mapped[str] = mapped_column(ForeignKey("persons.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(32))
    agency_voen: Mapped[str | None] = mapped_column(String(10))
    granted_by: Mapped[str] = mapped_column(String(200))
    granted_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    revoked_by: Mapped[str | None] = mapped_column(String(200))


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
    sid: Mapped[str | None] = mapped_column(String(64), unique=True)
    """The public session id (OIDC Back-Channel Logout `sid`); `id` is the SHA-256 of the cookie value."""
    level: Mapped[str] = mapped_column(String(16), default="low", server_default="low")
    """The level of assurance reached: low, substantial or high (`acr` is its configured URI)."""


class SessionClient(Base):
    """A client that received tokens from a login session: whom back-channel logout must notify."""

    __tablename__ = "session_clients"

    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("oauth_clients.client_id", ondelete="CASCADE"),
                                           primary_key=True)
    sub: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class OAuthClient(Base):
    """A registered relying party or agency system (OIDC Core / RFC 6749 section 2)."""

    __tablename__ = "oauth_clients"
    __table_args__ = (
        CheckConstraint(
            "auth_method IN ('client_secret_basic', 'client_secret_post', 'private_key_jwt', 'none')",
            name="auth_method",
        ),
        CheckConstraint("subject_type IN ('pairwise', 'public')", name="subject_type"),
    )

    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    auth_method: Mapped[str] = mapped_column(String(32))
    secret_hash: Mapped[str | None] = mapped_column(String(128))
    redirect_uris: Mapped[list[str]] = mapped_column(JSON, default=list)
    post_logout_redirect_uris: Mapped[list[str]] = mapped_column(JSON, default=list)
    grant_types: Mapped[list[str]] = mapped_column(JSON, default=list)
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    subject_type: Mapped[str] = mapped_column(String(16), default="pairwise")
    sector_identifier: Mapped[str] = mapped_column(String(255))
    sector_identifier_uri: Mapped[str | None] = mapped_column(String(2000))
    jwks: Mapped[dict[str, object] | None] = mapped_column(JSON)
    jwks_uri: Mapped[str | None] = mapped_column(String(2000))
    backchannel_logout_uri: Mapped[str | None] = mapped_column(String(2000))
    id_token_alg: Mapped[str] = mapped_column(String(16), default="ES256")
    """id_token_signed_response_alg (OIDC Dynamic Registration 2): ES256, RS256 or EdDSA."""
    agency_voen: Mapped[str | None] = mapped_column(String(10), index=True)
    """The agency (by its VÖEN) that owns the client: its agency administrators manage it. Empty: only a system
    administrator manages it."""
    introspect_clients: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")
    """The other clients whose tokens this one may introspect (RFC 7662 section 4); its own always."""
    purpose: Mapped[str | None] = mapped_column(String(500))
    """What the agency says it uses citizens' data for, shown to them in their access record (issue 16). Empty:
    the page says no purpose was stated."""
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    disabled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class AccessRecord(Base):
    """One release of data about a person to a client (issue 16, the citizen's access record): an ID token and
    access token issued in a user flow (`token`: the ID token's person claims, the access token's scopes), a
    userinfo answer (`userinfo`: its claims, OIDC Core 5.3) or the introspection of the person's token
    (`introspection`: RFC 7662, the token's scopes). Written in the unit of work of the release itself (deferred to
    its COMMIT: no release without its record, no record of a release that rolled back). `purpose` is the client's
    stated purpose at the time (`OAuthClient.purpose`), kept as it was then."""

    __tablename__ = "access_records"
    __table_args__ = (
        CheckConstraint("kind IN ('token', 'userinfo', 'introspection')", name="kind"),
        Index("ix_access_records_person_time", "person_id", "occurred_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=lambda: str(uuid.uuid4()))
    person_id: Mapped[str] = mapped_column(ForeignKey("persons.id", ondelete="CASCADE"))
    client_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    claims: Mapped[list[str]] = mapped_column(JSON, default=list)
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    purpose: Mapped[str | None] = mapped_column(String(500))
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AuthorizationRequest(Base):
    """A validated authorization request waiting for the citizen to log in or consent (OIDC Core 3.1.2)."""

    __tablename__ = "authorization_requests"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("oauth_clients.client_id", ondelete="CASCADE"))
    params: Mapped[dict[str, object]] = mapped_column(JSON)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)


class Grant(Base):
    """What one authorization produced: the family of an authorization code, its access and refresh tokens.

    Revoking the grant revokes every token issued under it (code reuse, refresh-token reuse, RFC 7009).
    """

    __tablename__ = "grants"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("oauth_clients.client_id", ondelete="CASCADE"), index=True)
    person_id: Mapped[str] = mapped_column(ForeignKey("persons.id", ondelete="CASCADE"), index=True)
    session_sid: Mapped[str | None] = mapped_column(String(64), index=True)
    sub: Mapped[str] = mapped_column(String(128))
    scope: Mapped[str] = mapped_column(String(1000))
    claims: Mapped[dict[str, object] | None] = mapped_column(JSON)
    acr: Mapped[str] = mapped_column(String(100))
    amr: Mapped[list[str]] = mapped_column(JSON, default=list)
    auth_time: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    revoked_reason: Mapped[str | None] = mapped_column(String(200))
    represents: Mapped[dict[str, object] | None] = mapped_column(JSON)
    """Representation at login: the entity the person chose to act for in this authorization (the mandate's id,
    the entity's VÖEN and name, the powers: idp.core.interfaces.Representation.as_json); NULL as themselves."""


class AuthorizationCode(Base):
    """A single-use authorization code (RFC 6749 4.1.2), stored by its SHA-256 only."""

    __tablename__ = "authorization_codes"

    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    grant_id: Mapped[str] = mapped_column(ForeignKey("grants.id", ondelete="CASCADE"), index=True)
    client_id: Mapped[str] = mapped_column(String(64))
    redirect_uri: Mapped[str] = mapped_column(String(2000))
    nonce: Mapped[str] = mapped_column(String(500))
    code_challenge: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
    consumed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class RefreshToken(Base):
    """A refresh token, stored by its SHA-256; rotated on every use (RFC 9700 section 4.14.2)."""

    __tablename__ = "refresh_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    grant_id: Mapped[str] = mapped_column(ForeignKey("grants.id", ondelete="CASCADE"), index=True)
    client_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    successor: Mapped[str | None] = mapped_column(String(200))
    """Set when the token is used: the refresh token issued in its place, sealed under a key derived from this
    token's own value (idp.core.grants.seal_successor), so that a reuse within the grace window gets the same one."""


class Consent(Base):
    """What a person agreed to release to a client: remembered per client, revocable."""

    __tablename__ = "consents"
    __table_args__ = (UniqueConstraint("person_id", "client_id", name="uq_consents_person_client"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=lambda: str(uuid.uuid4()))
    person_id: Mapped[str] = mapped_column(ForeignKey("persons.id", ondelete="CASCADE"), index=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("oauth_clients.client_id", ondelete="CASCADE"))
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    claims: Mapped[list[str]] = mapped_column(JSON, default=list)
    granted_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ClientAssertionJti(Base):
    """`jti` of client assertions already used (RFC 7523 section 3, item 7): a replay is refused."""

    __tablename__ = "client_assertion_jtis"

    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    jti: Mapped[str] = mapped_column(String(255), primary_key=True)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)


class LogoutDelivery(Base):
    """A back-channel logout token still to be delivered (OIDC Back-Channel Logout 1.0 section 2.7).

    Durable: a client that is down gets its logout token on a later attempt, with backoff, until it answers
    2xx or `give_up_at` passes. The token is signed at each attempt (fresh iat/exp); sub and sid are kept.
    """

    __tablename__ = "logout_deliveries"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=lambda: str(uuid.uuid4()))
    client_id: Mapped[str] = mapped_column(ForeignKey("oauth_clients.client_id", ondelete="CASCADE"), index=True)
    uri: Mapped[str] = mapped_column(String(2000))
    sub: Mapped[str] = mapped_column(String(128))
    sid: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
    give_up_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(String(500))


class RevokedToken(Base):
    """A JWT revoked before its expiry, by its `jti` (RFC 7009 semantics for self-contained tokens).

    Rows are needed only until `expires_at`: after that the token fails on its own `exp`.
    """

    __tablename__ = "revoked_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    revoked_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
    reason: Mapped[str] = mapped_column(String(200))


class WebAuthnUser(Base):
    """The WebAuthn user handle of a person (WebAuthn Level 2 section 14.6.1: random, no personal data)."""

    __tablename__ = "webauthn_users"

    person_id: Mapped[str] = mapped_column(ForeignKey("persons.id", ondelete="CASCADE"), primary_key=True)
    user_handle: Mapped[str] = mapped_column(String(88), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class WebAuthnCredential(Base):
    """A passkey or security key registered by a person (WebAuthn Level 2 section 7.1, step 26)."""

    __tablename__ = "webauthn_credentials"

    id: Mapped[str] = mapped_column(String(1400), primary_key=True)
    """The credential id, base64url (at most 1023 bytes)."""
    person_id: Mapped[str] = mapped_column(ForeignKey("persons.id", ondelete="CASCADE"), index=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary)
    """COSE_Key of the credential public key."""
    sign_count: Mapped[int] = mapped_column(BigInteger, default=0)
    transports: Mapped[list[str]] = mapped_column(JSON, default=list)
    aaguid: Mapped[str] = mapped_column(String(36))
    attestation_format: Mapped[str] = mapped_column(String(32))
    user_verified: Mapped[bool] = mapped_column(default=False)
    """User verification was performed at registration."""
    attested: Mapped[bool] = mapped_column(default=False)
    """Its attestation chained to a trusted root at registration (idp.core.attestation)."""
    attestation_root: Mapped[str | None] = mapped_column(String(64))
    """SHA-256 (hex) of that root: level high needs it to be trusted still at each login (docs/assurance.md)."""
    backup_eligible: Mapped[bool] = mapped_column(default=False)
    backed_up: Mapped[bool] = mapped_column(default=False)
    name: Mapped[str] = mapped_column(String(100))
    max_level: Mapped[str] = mapped_column(String(16))
    """The highest level a login with this credential reaches: that of the identity proofing or login under which
    it was registered (an activation code from a registration office: high; an existing session: its level)."""
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    flagged_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    """Set when the signature counter went backwards (a possible clone): the credential no longer logs in."""
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class WebAuthnChallenge(Base):
    """A single-use ceremony challenge with a short lifetime (WebAuthn Level 2 section 13.4.3)."""

    __tablename__ = "webauthn_challenges"
    __table_args__ = (CheckConstraint("purpose IN ('register', 'authenticate')", name="purpose"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    challenge: Mapped[str] = mapped_column(String(128))
    purpose: Mapped[str] = mapped_column(String(16))
    person_id: Mapped[str | None] = mapped_column(ForeignKey("persons.id", ondelete="CASCADE"))
    pending_id: Mapped[str | None] = mapped_column(String(64))
    enrollment_id: Mapped[str | None] = mapped_column(String(64))
    user_verification: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class ActivationCode(Base):
    """A one-time enrollment code issued by a registration officer: bound to one person, stored hashed, expiring
    (idp.sql.enrollment). `lookup` (64 bits of SHA-256 over the whole code) finds the row; the whole code is then
    checked against `secret_hash` (scrypt). The `id` is random and no part of the code. There is no attempt
    counter: a wrong guess matches no row, so it can count against no code."""

    __tablename__ = "activation_codes"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    lookup: Mapped[str | None] = mapped_column(String(16), unique=True)
    """NULL only for codes issued before migration 0009 (revoked by it: their format had a public part)."""
    person_id: Mapped[str] = mapped_column(ForeignKey("persons.id", ondelete="CASCADE"), index=True)
    secret_hash: Mapped[str] = mapped_column(String(200))
    issued_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class Enrollment(Base):
    """A browser that proved an activation code and may now register a credential for its person."""

    __tablename__ = "enrollments"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    """SHA-256 of the enrollment cookie value."""
    person_id: Mapped[str] = mapped_column(ForeignKey("persons.id", ondelete="CASCADE"))
    activation_code_id: Mapped[str] = mapped_column(ForeignKey("activation_codes.id", ondelete="CASCADE"))
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
    completed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class WebEidChallenge(Base):
    """A Web eID authentication nonce (Web eID system architecture, "Authentication": the server issues a random
    challenge nonce of at least 256 bits, single use, short-lived), bound to the pending authorization request it was
    issued for. Stored by the SHA-256 of the nonce string only (idp.sql.card_login)."""

    __tablename__ = "webeid_challenges"

    nonce_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    """SHA-256 (hex) of the nonce string as issued (base64 of 32 random bytes)."""
    pending_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
