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
