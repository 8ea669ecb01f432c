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
