"""OpenID Connect provider: persons, sessions, grants, tokens and claims."""

from idp.errors import IdpError, InvalidIdentifier, PersonExists, PersonNotFound
from idp.persons import PersonRecord, PersonService, normalize_fin

__all__ = [
    "IdpError",
    "InvalidIdentifier",
    "PersonExists",
    "PersonNotFound",
    "PersonRecord",
    "PersonService",
    "normalize_fin",
]
