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

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


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
