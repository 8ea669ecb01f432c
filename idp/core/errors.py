"""Errors of the identity provider; each carries its wire form (problem type, HTTP status)."""

from __future__ import annotations


class IdpError(Exception):
    """Base of identity-provider errors: `code` names the problem type, `status_code` its HTTP status."""

    code = "idp_error"
    title = "Identity provider error"
    status_code = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidIdentifier(IdpError):
    """A national identifier (FIN) or identity document is malformed."""

    code = "invalid_identifier"
    title = "Invalid identifier"
    status_code = 422


class PersonExists(IdpError):
    """A person with the same FIN or identity document is already registered."""

    code = "person_exists"
    title = "Person already registered"
    status_code = 409


class PersonNotFound(IdpError):
    """No person is registered under the given identifier."""

    code = "person_not_found"
    title = "Person not found"
    status_code = 404


class EntityExists(IdpError):
    """A legal entity with the same VÖEN is already registered."""

    code = "entity_exists"
    title = "Legal entity already registered"
    status_code = 409


class EntityNotFound(IdpError):
    """No legal entity is registered under the given VÖEN."""

    code = "entity_not_found"
    title = "Legal entity not found"
    status_code = 404


class InvalidMandate(IdpError):
    """A mandate cannot be granted or revoked as asked (unknown power, empty period, inactive party, revoked)."""

    code = "invalid_mandate"
    title = "Invalid mandate"
    status_code = 422


class MandateNotFound(IdpError):
    """No mandate has the given id."""

    code = "mandate_not_found"
    title = "Mandate not found"
    status_code = 404


class ImportRejected(IdpError):
    """A registry CSV file was refused whole: `problems` lists every bad row (line, column, reason); nothing of
    the file was written."""

    code = "import_rejected"
    title = "The file was not imported"
    status_code = 422

    def __init__(self, detail: str, problems: list[tuple[int, str | None, str]]) -> None:
        super().__init__(detail)
        self.problems = problems
        """(line number, column or None, reason), in file order."""


class OAuthError(Exception):
    """An OAuth 2.0 error response (RFC 6749 section 5.2): JSON with `error` and `error_description`.

    OAuth endpoints (token, introspection, revocation, ...) raise these; every other API answers RFC 9457.
    """

    error = "invalid_request"
    status_code = 400

    def __init__(self, description: str, *, persist: bool = False) -> None:
        super().__init__(description)
        self.description = description
        self.persist = persist
        """True when the refusal itself changed state that must be committed (a reused code revokes its
        tokens); every other OAuth error leaves the database as it was."""


class InvalidRequest(OAuthError):
    """RFC 6749 5.2: "The request is missing a required parameter, includes an unsupported parameter value
    (other than grant type), repeats a parameter, includes multiple credentials, utilizes more than one
    mechanism for authenticating the client, or is otherwise malformed."
    """

    error = "invalid_request"


class InvalidClient(OAuthError):
    """RFC 6749 5.2: "Client authentication failed (e.g., unknown client, no client authentication included,
    or unsupported authentication method)." Answered with 401 and a WWW-Authenticate challenge.
    """

    error = "invalid_client"
    status_code = 401


class InvalidGrant(OAuthError):
    """RFC 6749 5.2: "The provided authorization grant (e.g., authorization code, resource owner credentials)
    or refresh token is invalid, expired, revoked, does not match the redirection URI used in the
    authorization request, or was issued to another client."
    """

    error = "invalid_grant"


class UnauthorizedClient(OAuthError):
    """RFC 6749 5.2: "The authenticated client is not authorized to use this authorization grant type." """

    error = "unauthorized_client"


class UnsupportedGrantType(OAuthError):
    """RFC 6749 5.2: "The authorization grant type is not supported by the authorization server." """

    error = "unsupported_grant_type"


class InvalidScope(OAuthError):
    """RFC 6749 5.2: "The requested scope is invalid, unknown, malformed, or exceeds the scope granted by the
    resource owner." """

    error = "invalid_scope"


class InvalidClientMetadata(IdpError):
    """Client registration metadata is invalid (the error code of OpenID Connect Dynamic Client Registration 1.0
    section 3.3 and RFC 7591 section 3.2.2); the detail names the field."""

    code = "invalid_client_metadata"
    title = "Invalid client metadata"
    status_code = 422


class ClientNotFound(IdpError):
    """No client is registered under the given client_id."""

    code = "client_not_found"
    title = "Client not found"
    status_code = 404


class InvalidToken(OAuthError):
    """RFC 6750 section 3.1: "The access token provided is expired, revoked, malformed, or invalid for other
    reasons." Answered with 401 and a Bearer challenge."""

    error = "invalid_token"
    status_code = 401


class CardLoginError(IdpError):
    """A refused ID-card login (mutual TLS or the Web eID token). `code` is the machine code the pages translate
    (api/locales "card.error.<code>"); the detail is for logs and the technical details of a page.

    Raised only before anything a success would write; what the refusal itself wrote (a consumed Web eID nonce,
    the audit event) must be committed by the caller: `persist` (storage.direct.keeps_writes)."""

    persist = True
    code = "card_refused"
    title = "The ID card was not accepted"
    status_code = 400


class CertificateMissing(CardLoginError):
    """No client certificate came with the request (no TLS client certificate, no header from a trusted proxy)."""

    code = "certificate_missing"
    title = "No ID card certificate was presented"


class CertificateMalformed(CardLoginError):
    """The certificate is not a parseable X.509 certificate (RFC 5280 section 4.1)."""

    code = "certificate_malformed"
    title = "The ID card certificate cannot be read"


class CertificateExpired(CardLoginError):
    """RFC 5280 section 6.1.3 (a)(2): the validation time is after notAfter."""

    code = "certificate_expired"
    title = "The ID card certificate has expired"


class CertificateNotYetValid(CardLoginError):
    """RFC 5280 section 6.1.3 (a)(2): the validation time is before notBefore."""

    code = "certificate_not_yet_valid"
    title = "The ID card certificate is not valid yet"


class CertificateRevoked(CardLoginError):
    """RFC 6960 section 2.2 / RFC 5280 section 6.3: the issuer's OCSP responder or CRL says revoked."""

    code = "certificate_revoked"
    title = "The ID card certificate has been revoked"
    status_code = 403


class RevocationUnavailable(CardLoginError):
    """No OCSP response or CRL could be obtained (fail-closed unless ACAR_IDCARD_REVOCATION_SOFT_FAIL)."""

    code = "revocation_unavailable"
    title = "The ID card's status cannot be checked right now"
    status_code = 503


class CertificateUntrusted(CardLoginError):
    """RFC 5280 section 6.1: no certification path to a configured ID-card trust anchor (unknown CA)."""

    code = "certificate_untrusted"
    title = "The ID card certificate was not issued by a recognised authority"
    status_code = 403


class CertificateSelfSigned(CardLoginError):
    """A self-signed certificate that is no configured anchor: anyone can make one."""

    code = "certificate_self_signed"
    title = "The certificate is self-signed"
    status_code = 403


class CertificateWrongUsage(CardLoginError):
    """RFC 5280 sections 4.2.1.3 and 4.2.1.12, ETSI EN 319 412-2 section 4.3.2: an authentication certificate has
    keyUsage digitalSignature and extended key usage clientAuth (id-kp-clientAuth)."""

    code = "certificate_wrong_usage"
    title = "The certificate is not an authentication certificate"
    status_code = 403


class CertificatePolicyMissing(CardLoginError):
    """RFC 5280 section 4.2.1.4: none of the required certificate policies (ACAR_IDCARD_REQUIRED_POLICIES)."""

    code = "certificate_policy_missing"
    title = "The certificate was not issued under an accepted policy"
    status_code = 403


class CertificateIdentifierUnsupported(CardLoginError):
    """ETSI EN 319 412-1 section 5.1.3: the subject serialNumber is not a supported semantics identifier
    (PNOAZ-<FIN>, IDCxx-<number>, PASxx-<number>)."""

    code = "certificate_identifier_unsupported"
    title = "The certificate does not name a person Açar knows how to identify"
    status_code = 403


class CardHolderUnknown(CardLoginError):
    """The card's person is not registered and auto-provisioning (ACAR_IDCARD_AUTO_PROVISION) is off."""

    code = "card_holder_unknown"
    title = "No person is registered for this ID card"
    status_code = 403


class CardHolderInactive(CardLoginError):
    """The card's person is registered but suspended or deceased (idp.sql.persons.STATUSES): no login."""

    code = "card_holder_inactive"
    title = "This ID card's holder cannot sign in"
    status_code = 403


class ForwardedCertificateRefused(CardLoginError):
    """A client-certificate header came from an address that is not a trusted proxy (ACAR_TRUSTED_PROXIES): it
    is ignored and the attempt audited (anyone can send the header)."""

    code = "forwarded_certificate_refused"
    title = "The certificate header was not sent by a trusted proxy"
    status_code = 403


class WebEidTokenMalformed(CardLoginError):
    """The Web eID authentication token is not a "web-eid:1" token (its fields, algorithm, base64 values)."""

    code = "webeid_token_malformed"
    title = "The ID card's answer cannot be read"


class WebEidSignatureInvalid(CardLoginError):
    """The token's signature does not verify over hash(origin) || hash(nonce) with the certificate's key: a
    signature over another nonce or for another site's origin."""

    code = "webeid_signature_invalid"
    title = "The ID card's signature does not match this sign-in"
    status_code = 403


class WebEidChallengeInvalid(CardLoginError):
    """The nonce is unknown, already used, expired, or was issued for another sign-in request (single use)."""

    code = "webeid_challenge_invalid"
    title = "This ID card challenge has expired or was already used"
